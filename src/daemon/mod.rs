//! The daemon: runs the configured jobs on their schedules, keeps their
//! history, and tells people when something fails or recovers.

pub mod schedule;
pub mod history;
