//! The `ferry` agent: the command line, the rounds it runs, and the filesystem code that reads
//! a source and safely rebuilds a destination. Each directory is one room of the house:
//!
//! ```text
//!   cli/         flags → validated config → commands; exit codes; what a person sees
//!    │      └──▶ chart/   the Helm chart built in, rendered by a Go-template engine
//!    │
//!   unattended/  schedule, retries, hooks, status file, HTTP (push/pull and serve)
//!    │
//!   many/        list files (push/pull --list, serve --modules-from), serve --modules-dir
//!    │
//!   net/         handshake, client, server, a round over a link, the link benchmark
//!    │      └──▶ state/   what a destination keeps between rounds: commit records, journal,
//!    │                    signature cache, snapshots (kinds, retention, verify, restore),
//!    │                    promote; ModuleState owns the layout and a round's lifecycle
//!    │             └──▶ k8s/  the Kubernetes API calls of `--snapshot csi` (VolumeSnapshots, Events)
//!   round/       RoundOptions (once), the driver of a round's two sessions, `ferry sync`
//!    │
//!   fs/          beneath-the-root access, walk, excludes, mmap, the source, the destination
//!                (dest/, which asks state only through the seam traits in dest/memory.rs), whole-tree
//!                copies, source images
//! ```
//!
//! Arrows point to what a room uses; `fs/` uses nothing above it. The sans-IO sessions live
//! in `ferry-core`, the sockets in `ferry-transport`.
//!
//! All unsafe code of the workspace is the one audited `mmap` call in [`fs::mmap`].
#![deny(unsafe_code)]

pub mod chart;
pub mod cli;
pub mod fs;
pub mod k8s;
pub mod many;
pub mod net;
pub mod round;
pub mod state;
pub mod unattended;

/// Locks `m`, taking the data even if another thread panicked while holding it: every mutex
/// here guards bookkeeping that stays consistent between statements, and a panic elsewhere
/// must not wedge a round's cleanup.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
