//! Off-site nodes made from the Raspberry Pi image (pi-image/,
//! docs/pi-image.md): `strata node provision` on the central node writes a
//! new node's first-boot settings; `strata node firstboot` on the Pi
//! applies them once.

pub mod config;
pub mod drive;
pub mod firstboot;
pub mod keys;
pub mod provision;
