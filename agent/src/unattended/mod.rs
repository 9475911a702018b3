//! Running without a person: schedules, retries, hooks, the status file and the HTTP endpoints.

pub mod http;
pub mod runner;
pub mod schedule;
pub mod status;
