//! Repository operations beyond create/extract: check, delete, rename,
//! prune, compact.

pub mod borg;
pub mod check;
pub mod compact;
pub mod delete;
pub mod diff;
pub mod drill;
pub mod prune;
pub mod repair;
pub mod replicate;
pub mod restore_repo;
pub mod tar;
