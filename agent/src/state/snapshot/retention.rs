//! Which snapshots to keep (`--keep-last`, `--keep-hourly`, `--keep-daily`).

use std::collections::HashSet;

use super::SnapshotRecord;

/// Which snapshots to keep after a new one. A snapshot is kept when any rule keeps it; with
/// every rule at 0, all are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// The newest N.
    pub last: usize,
    /// The newest snapshot of each of the last N hours that have one (UTC).
    pub hourly: usize,
    /// The newest snapshot of each of the last N days that have one (UTC).
    pub daily: usize,
}

impl Retention {
    /// The ids of `records` (oldest first) to keep.
    pub fn keep(&self, records: &[SnapshotRecord]) -> HashSet<String> {
        if self.last == 0 && self.hourly == 0 && self.daily == 0 {
            return records.iter().map(|r| r.id.clone()).collect();
        }
        let mut keep: HashSet<String> =
            records.iter().rev().take(self.last).map(|r| r.id.clone()).collect();
        for (n, bucket) in [(self.hourly, 3600u64), (self.daily, 86_400)] {
            let mut seen = HashSet::new();
            for r in records.iter().rev() {
                if seen.len() >= n {
                    break;
                }
                // Newest first: the first snapshot met in a bucket is that bucket's newest.
                if seen.insert(r.time_unix / bucket) {
                    keep.insert(r.id.clone());
                }
            }
        }
        keep
    }
}
