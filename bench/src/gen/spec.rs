//! The sizes and counts of each kind of dataset, at full size and scaled.

use serde::{Deserialize, Serialize};

use super::scale_count;
use crate::Mutations;

/// Sizes and counts of a `mixed` tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixedSpec {
    /// Length of [`BIG_FILE`](super::BIG_FILE).
    pub big_len: u64,
    /// Number of small files.
    pub small_files: usize,
    /// Smallest small file, bytes.
    pub small_min: usize,
    /// Largest small file, bytes.
    pub small_max: usize,
    /// Number of (leaf) directories the small files are spread over.
    pub dirs: usize,
    /// Number of symlinks.
    pub symlinks: usize,
}

impl MixedSpec {
    /// The full-size tree of issue 5.
    pub const FULL: MixedSpec = MixedSpec {
        big_len: 1 << 30,
        small_files: 20_000,
        small_min: 1 << 10,
        small_max: 64 << 10,
        dirs: 200,
        symlinks: 8,
    };

    /// [`MixedSpec::FULL`] at `scale`; at least four symlinks at any scale, one of each kind.
    pub fn scaled(scale: f64) -> MixedSpec {
        let f = MixedSpec::FULL;
        MixedSpec {
            big_len: (f.big_len as f64 * scale).round() as u64,
            small_files: scale_count(f.small_files, scale),
            dirs: scale_count(f.dirs, scale),
            symlinks: scale_count(f.symlinks, scale).max(4),
            ..f
        }
    }
}

/// What `mutate` changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MutateSpec {
    /// Overwrites and inserts in [`BIG_FILE`](super::BIG_FILE).
    pub big: Mutations,
    /// Fraction of the small files edited (random files) or appended to (log files).
    pub small_changed_fraction: f64,
    /// Files added.
    pub added: usize,
    /// Files deleted.
    pub deleted: usize,
    /// Files renamed (moved to another directory).
    pub renamed: usize,
}

impl MutateSpec {
    /// The full-size round of issue 5.
    pub const FULL: MutateSpec = MutateSpec {
        big: Mutations::REFERENCE,
        small_changed_fraction: 0.01,
        added: 100,
        deleted: 100,
        renamed: 20,
    };

    /// [`MutateSpec::FULL`] at `scale` (the 1% of small files scales with the tree itself).
    pub fn scaled(scale: f64) -> MutateSpec {
        let f = MutateSpec::FULL;
        MutateSpec {
            big: Mutations {
                overwrites: scale_count(f.big.overwrites, scale),
                inserts: scale_count(f.big.inserts, scale),
                ..f.big
            },
            added: scale_count(f.added, scale),
            deleted: scale_count(f.deleted, scale),
            renamed: scale_count(f.renamed, scale),
            ..f
        }
    }
}

/// Sizes and counts of a `many` tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ManySpec {
    /// Number of files.
    pub files: usize,
    /// Smallest file, bytes.
    pub min: usize,
    /// Largest file, bytes.
    pub max: usize,
    /// Number of (leaf) directories.
    pub dirs: usize,
}

impl ManySpec {
    /// The full-size tree of issue 5.
    pub const FULL: ManySpec = ManySpec { files: 200_000, min: 100, max: 2 << 10, dirs: 2_000 };

    /// [`ManySpec::FULL`] at `scale`.
    pub fn scaled(scale: f64) -> ManySpec {
        let f = ManySpec::FULL;
        ManySpec { files: scale_count(f.files, scale), dirs: scale_count(f.dirs, scale), ..f }
    }
}
