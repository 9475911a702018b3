//! Unit and property tests of the store, on real temp directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]
