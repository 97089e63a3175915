//! strata: deduplicating, compressing, encrypting backup with an off-site tier.
//!
//! Layers (see ../docs/FORMAT.md and the architecture guide): `backend` (file
//! store) → `crypto`/`compress`/`chunker` → `repo` (packs, index, manifest,
//! locks) → `archive` (items, create, extract) → `cli`.

pub mod archive;
pub mod backend;
pub mod chunker;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod direct_io;
pub mod error;
pub mod id;
pub mod mount;
pub mod mountinfo;
pub mod node;
pub mod ops;
pub mod repo;
pub mod selftest;
pub mod sorted_ids;
pub mod web;

pub use error::{Error, Result};
// touch
