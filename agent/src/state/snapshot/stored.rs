//! Snapshots kept in the content-addressed store ([`crate::state::store`]): how a round's
//! snapshot is built there (from the last one and what the round changed), retention over
//! store and legacy snapshots together, and the reading side (`list`, `verify`, `restore`,
//! `diff`, `ls`) for store records.

use std::collections::HashSet;
use std::path::Path;

use ferry_core::Stats;

use super::{SnapshotError, SnapshotRecord, Snapshots, Snapshotter};
use crate::fs::Root;
use crate::state::commit::{CommitLog, CommitRecord};
use crate::state::store::{
    BuildStats, ChangeSet, ObjectLink, Store, StoreError, StoreLock, StoreRecord, TreeHash,
    RECORD_KIND,
};

/// What a round hands its snapshot: the change list, or why there is none to trust.
pub type RoundChangeSet = Result<ChangeSet, String>;

/// How a snapshot's tree was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    /// From the previous snapshot's tree and the round's change list.
    Incremental,
    /// From a walk of the whole live tree.
    Full,
}

impl SnapshotRecord {
    /// Whether the snapshot lives in the store (not in a directory of its own).
    pub fn in_store(&self) -> bool {
        self.kind == RECORD_KIND
    }

    fn from_store(r: StoreRecord) -> SnapshotRecord {
        SnapshotRecord {
            id: r.id,
            round: r.round,
            time_unix: r.time_unix,
            entries: r.entries,
            bytes: r.bytes,
            stats: r.stats,
            root_hash: r.root_hash,
            kind: RECORD_KIND.to_string(),
            volume_snapshot: None,
        }
    }
}

impl Snapshots {
    /// The module's store, when one exists (nothing is created).
    ///
    /// # Errors
    /// When it exists but cannot be opened (a symlink planted in its path, say).
    pub fn existing_store(&self) -> Result<Option<Store>, SnapshotError> {
        let at = self.state.join("store").join(&self.module);
        match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Ok(Some(Store::open(&self.state, &self.module)?)),
        }
    }

    /// The store's snapshot records, as [`SnapshotRecord`]s; unreadable ones are logged and
    /// left out (each names its file).
    pub(super) fn store_records(&self) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        let Some(store) = self.existing_store()? else { return Ok(Vec::new()) };
        let list = store.records()?;
        for e in &list.unreadable {
            tracing::warn!("{e}: left out of the list (`ferry snapshots verify` cannot use it)");
        }
        Ok(list.records.into_iter().map(SnapshotRecord::from_store).collect())
    }

    /// Builds round `round`'s snapshot in the store and writes the commit record, then the
    /// snapshot's record, then applies `keep`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn take_stored(
        &self,
        module_path: &Path,
        stats: &Stats,
        keep: &super::Retention,
        commits: &CommitLog,
        fresh: &[(crate::fs::dest::ContentKey, [u8; 32])],
        changes: RoundChangeSet,
        how: &Snapshotter,
        (round, now, id): (u64, u64, String),
    ) -> Result<(CommitRecord, SnapshotRecord), SnapshotError> {
        let started = std::time::Instant::now();
        let store = Store::open(&self.state, &self.module)?;
        let lock = store.lock()?;
        let live = Root::open(module_path).map_err(super::io_err(format!(
            "opening module directory {}",
            module_path.display()
        )))?;
        let link =
            if *how == Snapshotter::Reflink { ObjectLink::Reflink } else { ObjectLink::Hardlink };
        let (root, built, bs) = self.build(&store, &live, commits, fresh, changes, link, round)?;
        test_pause();
        let root_hash = root.to_hex();
        let commit = CommitRecord {
            round,
            time_unix: now,
            root_hash: root_hash.clone(),
            entries: bs.entries,
            bytes: bs.bytes,
            stats: *stats,
        };
        commits.record(&commit).map_err(super::io_err("writing the commit record"))?;
        test_pause();
        let rec = StoreRecord {
            id: id.clone(),
            round,
            time_unix: now,
            root_hash,
            entries: bs.entries,
            bytes: bs.bytes,
            stats: *stats,
            kind: RECORD_KIND.to_string(),
        };
        store.record(&rec)?;
        tracing::info!(
            "snapshot {id}: {} build in {:.3}s ({} file objects and {} trees written, {} \
             files hashed)",
            if built == Built::Incremental { "incremental" } else { "full" },
            started.elapsed().as_secs_f64(),
            bs.objects_written,
            bs.trees_written,
            bs.hashed_files
        );
        // The snapshot is recorded: a failed retention leaves old snapshots for the next
        // round's, it does not fail this one.
        if let Err(e) = self.retain(&store, &lock, keep) {
            tracing::warn!("applying retention after snapshot {id}: {e}");
        }
        Ok((commit, SnapshotRecord::from_store(rec)))
    }

    /// The new root: incremental when the last store snapshot is the live tree's last
    /// committed state and the change list can be trusted, else from the whole tree.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        store: &Store,
        live: &Root,
        commits: &CommitLog,
        fresh: &[(crate::fs::dest::ContentKey, [u8; 32])],
        changes: RoundChangeSet,
        link: ObjectLink,
        round: u64,
    ) -> Result<(TreeHash, Built, BuildStats), SnapshotError> {
        let why_full = match (store.records()?.records.last(), commits.last(), changes) {
            (None, ..) => "the store holds no snapshot yet".to_string(),
            (_, _, Err(why)) => why,
            (Some(prev), Some(c), Ok(cs))
                if prev.round == c.round && prev.root_hash == c.root_hash =>
            {
                match prev.root().and_then(|root| store.build_incremental(root, live, &cs, link)) {
                    Ok((root, bs)) => return Ok((root, Built::Incremental, bs)),
                    Err(e) => {
                        format!("the incremental build from snapshot {} failed ({e})", prev.id)
                    }
                }
            }
            (Some(prev), last, Ok(_)) => format!(
                "the store's last snapshot {} is not of the last committed round {}",
                prev.id,
                last.map_or(0, |c| c.round)
            ),
        };
        tracing::info!("round {round}: building its snapshot from the whole tree: {why_full}");
        let mut cache = commits.load_cache();
        for (k, h) in fresh {
            cache.insert(*k, *h);
        }
        let (root, bs) = store.build_full(live, link, &cache)?;
        Ok((root, Built::Full, bs))
    }

    /// Applies `keep` to every snapshot, store and legacy alike: legacy directories are
    /// removed, store records dropped and what they alone reached swept (crash-safe, see
    /// [`Store::gc`]). Nothing is swept when every store record stays.
    fn retain(
        &self,
        store: &Store,
        lock: &StoreLock,
        keep: &super::Retention,
    ) -> Result<(), SnapshotError> {
        let all = self.list()?;
        let kept: HashSet<String> = self.retained(keep, &all);
        for old in all.iter().filter(|r| !kept.contains(&r.id) && !r.in_store()) {
            self.delete_legacy(&old.id)?;
        }
        if all.iter().any(|r| r.in_store() && !kept.contains(&r.id)) {
            let started = std::time::Instant::now();
            test_pause();
            let gc = store.gc(lock, |r| kept.contains(&r.id))?;
            tracing::info!(
                "retention: dropped {} snapshot(s), removed {} trees and {} file objects in {:.3}s",
                gc.deleted.len(),
                gc.trees_removed,
                gc.objects_removed,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Deletes store snapshot `id` and sweeps what only it reached.
    pub(super) fn delete_stored(&self, id: &str) -> Result<(), SnapshotError> {
        let store = self.existing_store()?.ok_or_else(|| StoreError::NotFound(id.into()))?;
        let lock = store.lock()?;
        store.find(id)?;
        store.gc(&lock, |r| r.id != id)?;
        Ok(())
    }
}

/// Test hook, in debug builds only (release builds ignore it): with
/// `FERRY_TEST_SNAPSHOT_PAUSE_MS=N` in its environment, the server sleeps N ms after a
/// snapshot's build, after its commit record and before retention's garbage collection, so
/// the crash tests land `kill -9` inside those steps often.
fn test_pause() {
    #[cfg(debug_assertions)]
    if let Some(ms) =
        std::env::var("FERRY_TEST_SNAPSHOT_PAUSE_MS").ok().and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000)));
    }
}
