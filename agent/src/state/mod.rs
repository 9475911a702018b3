//! What a destination keeps between rounds, under `ferry serve --state-dir DIR`.
//!
//! [`ModuleState`] is the one owner of the state directory's layout and of a pushed round's
//! lifecycle on the destination; everything else asks it.
//!
//! ```text
//!   DIR/commits/MODULE/{last.json, history.jsonl,   commit records (commit.rs)
//!                       hashes.bin, module.json}    content hash cache, where the data lives
//!   DIR/snapshots/MODULE/ID/, ID.json               snapshots and their records (snapshot/)
//!   DIR/journal/MODULE.jsonl                        resume journal (journal.rs)
//!   DIR/signatures/MODULE/{index.bin, blobs/}       signature cache (sigcache.rs)
//! ```
//!
//! A pushed round ([`PushRound`]): before the walk the journal and the signature cache are
//! attached to the destination (through the [`crate::fs::dest`] seam); when the round's files
//! are all committed, and before the destination's last word leaves for the source, the
//! journal is emptied, the commit record written, the snapshot taken, retention applied and
//! the signature cache stamped. A failed round keeps the journal and stamps the cache.

pub mod commit;
pub mod journal;
pub mod promote;
pub mod sigcache;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::Stats;

use self::commit::{CommitLog, CommitRecord};
use self::journal::Journal;
use self::sigcache::{CacheCounts, SignatureCache};
use self::snapshot::{Retention, SnapshotError, SnapshotRecord, Snapshots, Snapshotter};
use crate::fs::dest::LocalDestination;

/// How a server keeps state for its modules (`ferry serve --state-dir` and its companions).
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The state directory.
    pub dir: PathBuf,
    /// How snapshots are taken.
    pub snapshotter: Snapshotter,
    /// Which snapshots are kept.
    pub retention: Retention,
    /// Keep signatures of large files between rounds ([`sigcache`]).
    pub signature_cache: bool,
}

/// One module's part of a state directory: where each kind of state lives.
#[derive(Debug, Clone)]
pub struct ModuleState {
    dir: PathBuf,
    module: String,
}

impl ModuleState {
    /// The state of `module` under the state directory `dir` (nothing is read or created).
    pub fn new(dir: &Path, module: &str) -> ModuleState {
        ModuleState { dir: dir.to_path_buf(), module: module.to_string() }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module's commit records.
    pub fn commits(&self) -> CommitLog {
        CommitLog::at(self.dir.join("commits").join(&self.module))
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots").join(&self.module)
    }

    /// The module's snapshots, for reading.
    pub fn snapshots(&self) -> Snapshots {
        Snapshots::at(self.snapshots_dir())
    }

    /// The module's snapshots, for taking new ones of `module_path` with `how`: checks the
    /// state directory can hold them, creating what is missing.
    ///
    /// # Errors
    /// [`SnapshotError`] saying why snapshots of this kind cannot work here.
    pub fn open_snapshots(
        &self,
        module_path: &Path,
        how: &Snapshotter,
    ) -> Result<Snapshots, SnapshotError> {
        Snapshots::open(self.snapshots_dir(), &self.dir, module_path, how)
    }

    /// The module's resume journal, with what earlier rounds left in it.
    ///
    /// # Errors
    /// I/O errors creating it.
    pub fn journal(&self) -> std::io::Result<Journal> {
        Journal::open(&self.dir.join("journal").join(format!("{}.jsonl", self.module)))
    }

    /// The module's signature cache, checked against the files beneath `root`.
    pub fn signature_cache(&self, root: &crate::fs::Root) -> SignatureCache {
        SignatureCache::open(&self.dir.join("signatures").join(&self.module), root)
    }

    /// Checks at start-up that snapshots can work for the module at `module_path`, and
    /// remembers where its data lives (for `ferry promote`).
    ///
    /// # Errors
    /// [`SnapshotError`].
    pub fn prepare(&self, module_path: &Path, how: &Snapshotter) -> Result<(), SnapshotError> {
        self.open_snapshots(module_path, how)?;
        self.commits().remember_module(module_path).map_err(|source| SnapshotError::Io {
            what: format!("recording module {:?}'s directory", self.module),
            source,
        })
    }

    /// Starts a pushed round into `dest` (the module at `module_path`): attaches the resume
    /// journal and, if configured, the signature cache. Blocking (reads the journal and stats
    /// cached files): call it off the async runtime.
    pub fn begin_push(
        &self,
        cfg: &StateConfig,
        module_path: &Path,
        dest: &Arc<LocalDestination>,
        dry_run: bool,
    ) -> PushRound {
        // The commit's tree hash reuses the hashes verified during the round.
        dest.record_hashes();
        let journal = if dry_run {
            None
        } else {
            match self.journal() {
                Ok(j) => Some(Arc::new(j)),
                Err(e) => {
                    tracing::warn!("module {:?}: no resume journal: {e}", self.module);
                    None
                }
            }
        };
        if let Some(j) = &journal {
            dest.use_journal(j.clone());
        }
        let sigs = (cfg.signature_cache && !dry_run).then(|| {
            let cache = Arc::new(self.signature_cache(dest.root()));
            dest.use_signature_cache(cache.clone());
            cache
        });
        PushRound {
            state: self.clone(),
            cfg: cfg.clone(),
            module_path: module_path.to_path_buf(),
            dest: dest.clone(),
            journal,
            sigs,
            dry_run,
        }
    }
}

/// A pushed round's use of the state directory (see the module docs).
pub struct PushRound {
    state: ModuleState,
    cfg: StateConfig,
    module_path: PathBuf,
    dest: Arc<LocalDestination>,
    journal: Option<Arc<Journal>>,
    sigs: Option<Arc<SignatureCache>>,
    dry_run: bool,
}

/// What the state directory did at the end of a round.
#[derive(Debug, Default)]
pub struct RoundEnd {
    /// The commit record and the snapshot, when the round committed and both were written.
    pub committed: Option<(CommitRecord, SnapshotRecord)>,
    /// Why the commit or the snapshot failed (the round's files are in place regardless).
    pub snapshot_error: Option<String>,
    /// What the signature cache did, when one was used and saved.
    pub cache: Option<CacheCounts>,
}

impl PushRound {
    /// Whether the round may offer the source what a cut round left (resume).
    pub fn resumes(&self) -> bool {
        self.journal.is_some()
    }

    /// Ends a round whose files are all committed, with the destination's `stats`: empties
    /// the journal, writes the commit record, takes the snapshot, applies retention, then
    /// stamps the signature cache (snapshots and retention change live files' ctimes).
    /// Blocking. The module's claim must still be held, so no other round changes the tree.
    pub fn committed(self, stats: &Stats) -> RoundEnd {
        let module = &self.state.module;
        if let Some(j) = &self.journal {
            match j.finish_ok(self.dest.root()) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("removed {n} partial file(s) no longer needed for resuming")
                }
                Err(e) => tracing::warn!("module {module:?}: emptying the resume journal: {e}"),
            }
        }
        let mut end = RoundEnd::default();
        if !self.dry_run {
            let fresh = self.dest.take_hashes();
            let how = &self.cfg.snapshotter;
            let taken = self.state.open_snapshots(&self.module_path, how).and_then(|s| {
                let commits = self.state.commits();
                s.take(&self.module_path, stats, &self.cfg.retention, &commits, &fresh, how)
            });
            match taken {
                Ok(c) => end.committed = Some(c),
                Err(e) => end.snapshot_error = Some(e.to_string()),
            }
        }
        end.cache = self.finish_signatures();
        end
    }

    /// Ends a round that failed: the journal keeps what was written for the next round; the
    /// signature cache is stamped and saved. Blocking.
    pub fn failed(self) -> RoundEnd {
        RoundEnd { cache: self.finish_signatures(), ..RoundEnd::default() }
    }

    fn finish_signatures(&self) -> Option<CacheCounts> {
        let cache = self.sigs.as_ref()?;
        match cache.finish(self.dest.root()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("module {:?}: saving the signature cache: {e}", self.state.module);
                None
            }
        }
    }
}
