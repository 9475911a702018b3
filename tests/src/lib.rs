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

/// A small, fast, seedable generator for file contents.
///
/// Contents are derived from seeds rather than stored so that a failing
/// proptest case prints as a few numbers instead of megabytes of bytes, and
/// so that materialising the same spec twice gives identical trees.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Starts a sequence from `seed`; equal seeds give equal sequences.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudorandom bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with pseudorandom bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// `len` pseudorandom bytes from a fresh generator seeded with `seed`.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        Self::new(seed).fill(&mut out);
        out
    }
}
