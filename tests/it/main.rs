//! Integration tests: the built `strata` binary against real directories.

mod compact;
mod crash;
mod errors;
mod lifecycle;
mod malicious;
mod modes;
mod repair;
mod roundtrip;
mod spec;
mod util;
