//! Integration tests: the built `strata` binary against real directories.

mod ansible;
mod arm;
mod compact;
mod crash;
mod daemon;
mod dumps;
mod errors;
mod lifecycle;
mod malicious;
mod metrics;
mod modes;
mod mount;
mod netns;
mod offsite;
mod pi_image;
mod recovery;
mod repair;
mod replicate;
mod roundtrip;
mod serve;
mod spec;
mod ssh;
mod sshd;
mod tiers;
mod util;
mod web;
