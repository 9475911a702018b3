//! The `ferry` agent: the command line, the driver that runs a round's sessions, and the
//! filesystem code that reads a source and safely rebuilds a destination.
//!
//! ```text
//!   main.rs (flags → config → run)
//!      │
//!   sync.rs ── driver.rs ── ferry-core sessions (sans-IO)
//!                 │  work
//!      ┌──────────┴──────────┐
//!   source.rs             target.rs (Destination trait)
//!   walk.rs               walk.rs, fs.rs (openat2 beneath the root), mmap.rs
//! ```
//!
//! All unsafe code of the workspace is the one audited `mmap` call in [`mmap`].
#![deny(unsafe_code)]

pub mod commit;
pub mod demo;
pub mod driver;
pub mod exclude;
pub mod fs;
pub mod init;
pub mod journal;
pub mod mmap;
pub mod remote;
pub mod schedule;
pub mod sigcache;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod sync;
pub mod synth;
pub mod target;
pub mod walk;

/// Locks `m`, taking the data even if another thread panicked while holding it: every mutex
/// here guards bookkeeping that stays consistent between statements, and a panic elsewhere
/// must not wedge a round's cleanup.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
