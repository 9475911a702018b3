//! Support code for Ferry's end-to-end tests.
//!
//! The integration tests in `tests/tests/` drive a whole sync against real
//! directories and then check the result with a comparer that knows nothing
//! about Ferry. Keeping the comparer independent matters: if it shared code
//! with the agent (its manifest walker, its metadata model), a bug in that
//! code would hide itself.
//!
//! - [`tree`] snapshots a directory tree without following symlinks and
//!   reports every difference between two trees: kind, content hash, size,
//!   permission bits, mtime (nanoseconds, symlinks included), ownership,
//!   symlink targets, `user.` xattrs and hard-link structure.
//! - [`gen`] holds proptest strategies for random trees and random edits to
//!   them, and writes both to disk.
//! - [`driver`] is the only place that calls into `ferry-agent`, so an API
//!   change there is a one-file fix here.
//!
//! Everything here is Unix-only, as Ferry is.

#![forbid(unsafe_code)]

pub mod driver;
pub mod gen;
pub mod tree;
