//! What every kind draws from the seed: one stream per purpose and index, mtimes, the
//! directory layout, and the set of files a [`Plan`] describes.

use std::fs::FileTimes;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_core::rng::SplitMix64;

// Seed derivation: one independent stream per purpose and per index.
pub(super) const TAG_BIG: u64 = 1;
pub(super) const TAG_SMALL: u64 = 2;
pub(super) const TAG_LINK: u64 = 3;
pub(super) const TAG_MANY: u64 = 4;
pub(super) const TAG_MUTATE: u64 = 5;
pub(super) const TAG_TIME: u64 = 6;
pub(super) const TAG_ADD: u64 = 7;
pub(super) const TAG_EDIT: u64 = 8;

pub(super) fn sub_seed(seed: u64, tag: u64, index: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ tag.wrapping_mul(0xA076_1D64_78BD_642F));
    let a = r.next_u64();
    SplitMix64::new(a ^ index.wrapping_mul(0xE703_7ED1_A0B4_28DB)).next_u64()
}

/// The seed of the big file's content and of its edits: with the same `seed`, `mixed` writes
/// `random_bytes(len, big_seed(seed))` and `mutate` turns it into
/// `Workload::generate(len, m, big_seed(seed)).new`.
pub fn big_seed(seed: u64) -> u64 {
    sub_seed(seed, TAG_BIG, 0)
}

/// Seconds since the epoch of the first generated mtime: 2024-01-01T00:00:00Z plus a seeded
/// offset within that year.
pub(super) fn base_secs(seed: u64) -> u64 {
    1_704_067_200 + SplitMix64::new(sub_seed(seed, TAG_TIME, 0)).below(365 * 86_400)
}

/// mtimes of a later round (`mutate`): 400 days after the base, so they are never equal to an
/// original mtime.
pub(super) fn later_secs(seed: u64) -> u64 {
    base_secs(seed) + 400 * 86_400
}

/// `base + index` seconds with seeded nanoseconds, so a copy has to keep full precision.
pub(super) fn file_time(base: u64, index: usize, rng: &mut SplitMix64) -> SystemTime {
    UNIX_EPOCH + Duration::new(base + index as u64, rng.below(1_000_000_000) as u32)
}

pub(super) fn times(t: SystemTime) -> FileTimes {
    FileTimes::new().set_accessed(t).set_modified(t)
}

/// Leaf directories `dNNN/sNNN`, about sqrt(n) of each level.
pub fn dir_layout(n: usize) -> Vec<String> {
    let fan = ((n as f64).sqrt().ceil() as usize).max(1);
    (0..n).map(|i| format!("d{:03}/s{:03}", i / fan, i % fan)).collect()
}

/// One file to write.
#[derive(Debug, Clone)]
pub(super) struct FileSpec {
    pub(super) dir: String,
    pub(super) name: String,
    pub(super) len: usize,
    pub(super) text: bool,
    pub(super) seed: u64,
    pub(super) mtime: SystemTime,
}

impl FileSpec {
    pub(super) fn rel(&self) -> PathBuf {
        Path::new(&self.dir).join(&self.name)
    }
}

/// How to draw a set of files.
pub(super) struct Plan<'a> {
    pub(super) count: usize,
    pub(super) min: usize,
    pub(super) max: usize,
    pub(super) dirs: &'a [String],
    pub(super) seed: u64,
    pub(super) tag: u64,
    pub(super) base_secs: u64,
    pub(super) name: fn(usize, bool) -> String,
}

impl Plan<'_> {
    pub(super) fn files(&self) -> Vec<FileSpec> {
        (0..self.count)
            .map(|i| {
                let mut rng = SplitMix64::new(sub_seed(self.seed, self.tag, i as u64));
                let dir = self.dirs[rng.below(self.dirs.len() as u64) as usize].clone();
                // Half random, half text, interleaved so every directory gets both.
                let text = i % 2 == 1;
                let len = self.min + rng.below((self.max - self.min + 1) as u64) as usize;
                FileSpec {
                    dir,
                    name: (self.name)(i, text),
                    len,
                    text,
                    seed: rng.next_u64(),
                    mtime: file_time(self.base_secs, i, &mut rng),
                }
            })
            .collect()
    }
}
