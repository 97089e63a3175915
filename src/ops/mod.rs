//! Repository operations beyond create/extract: check, delete, rename,
//! prune, compact.

pub mod check;
pub mod delete;
pub mod prune;
