//! What a destination keeps between rounds, under `--state-dir DIR`: on `ferry serve` for
//! the modules peers push into, on `ferry pull` for the module it pulls (named as the
//! server names it).
//!
//! [`ModuleState`] is the one owner of the state directory's layout and of a round's
//! lifecycle on the destination, whichever direction the round runs; everything else asks it.
//!
//! ```text
//!   DIR/commits/MODULE/{last.json, history.jsonl,   commit records (commit.rs)
//!                       hashes.bin, module.json}    content hash cache, where the data lives
//!   DIR/snapshots/MODULE/ID/, ID.json               snapshots and their records (snapshot/)
//!   DIR/journal/MODULE.jsonl                        resume journal (journal.rs)
//!   DIR/signatures/MODULE/{index.bin, blobs/}       signature cache (sigcache.rs)
//!   DIR/groups/GROUP/GEN.json                       consistency group generations (group.rs)
//! ```
//!
//! A round ([`StateRound`], the same for a push into `ferry serve` and a `ferry pull`): before
//! the walk the journal and the signature cache are attached to the destination (through the
//! [`crate::fs::dest`] seam); when the round's files are all committed, and before the
//! destination's last word leaves for the source, the journal is emptied, the commit record
//! written, the snapshot taken, retention applied and the signature cache stamped. A failed
//! round keeps the journal and stamps the cache.

pub mod commit;
pub mod group;
pub mod journal;
pub mod promote;
pub mod sigcache;
pub mod snapshot;
pub mod store;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use ferry_core::message::Commit;
use ferry_core::Stats;

use self::commit::{CommitLog, CommitRecord};
use self::journal::Journal;
use self::sigcache::{CacheCounts, SignatureCache};
use self::snapshot::{
    Retention, RoundChangeSet, SnapshotError, SnapshotRecord, Snapshots, Snapshotter,
};
use self::store::ChangeSet;
use crate::fs::dest::LocalDestination;

/// How a destination keeps state for its modules (`--state-dir` and its companions, the same
/// flags on `ferry serve` and `ferry pull`).
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

    /// The state directory as a [`crate::fs::Root`]: everything of the module's state is
    /// reached beneath it without following a symlink.
    ///
    /// # Errors
    /// When the state directory cannot be opened.
    pub fn root(&self) -> io::Result<crate::fs::Root> {
        crate::fs::Root::open(&self.dir)
    }

    /// Creates (if missing) and checks the state subdirectory `rel` (e.g. `journal`,
    /// `signatures/MODULE/blobs`): every component must be a real directory beneath the state
    /// directory. A symlink planted by someone with write access to the state directory would
    /// otherwise make Ferry empty, truncate or delete its target.
    ///
    /// # Errors
    /// `ELOOP` (with the path in the message) when a component is a symlink; I/O errors.
    pub fn subdir(&self, rel: &str) -> io::Result<PathBuf> {
        // The state directory itself is the user's to choose (a symlink to it is fine).
        std::fs::create_dir_all(&self.dir)?;
        let root = self.root()?;
        let mut at = String::new();
        let mut parent: Option<std::os::fd::OwnedFd> = None;
        for part in rel.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            let made = crate::fs::make_dir_at(parent.as_ref().unwrap_or(root.fd()), part)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{}: not a plain directory beneath the state directory (a symlink?): {e}",
                            self.dir.join(&at).display()
                        ),
                    )
                })?;
            parent = Some(made);
        }
        Ok(self.dir.join(rel))
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
        Snapshots::at(self.snapshots_dir(), &self.dir, &self.module)
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
        for rel in [format!("snapshots/{}", self.module), format!("commits/{}", self.module)] {
            self.subdir(&rel).map_err(|source| SnapshotError::Io {
                what: "the state directory".into(),
                source,
            })?;
        }
        Snapshots::open(self.snapshots_dir(), &self.dir, &self.module, module_path, how)
    }

    /// The module's resume journal, with what earlier rounds left in it.
    ///
    /// # Errors
    /// I/O errors creating it.
    pub fn journal(&self) -> std::io::Result<Journal> {
        Journal::open(&self.subdir("journal")?.join(format!("{}.jsonl", self.module)))
    }

    /// The module's signature cache, checked against the files beneath `root`.
    ///
    /// # Errors
    /// When its directories are not plain directories beneath the state directory.
    pub fn signature_cache(&self, root: &crate::fs::Root) -> io::Result<SignatureCache> {
        let dir = self.subdir(&format!("signatures/{}/blobs", self.module))?;
        Ok(SignatureCache::open(dir.parent().unwrap_or(&dir), root))
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

    /// Notes, durably, that the live tree is about to change in ways no snapshot has seen
    /// yet (a round starts, or `ferry promote` swaps the tree). Cleared once a round's
    /// snapshot is recorded. A round that finds it already set knows the live tree may hold
    /// changes outside its own change list (an earlier round failed after putting files in
    /// place, the server was killed, a promote replaced the tree), so its snapshot is built
    /// from the whole tree. Returns why the change list cannot be trusted, if it cannot.
    ///
    /// # Errors
    /// I/O errors writing the marker (the caller then builds from the whole tree too).
    pub fn open_round(&self) -> io::Result<Option<String>> {
        let dir = self.subdir(&format!("commits/{}", self.module))?;
        let marker = dir.join(ROUND_OPEN);
        let was_open = match rfs::statat(rfs::CWD, &marker, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => true,
            Err(rustix::io::Errno::NOENT) => false,
            Err(e) => return Err(e.into()),
        };
        if !was_open {
            write_state_file(
                &marker,
                b"a round or a promote changed the live tree since the last snapshot\n",
            )?;
        }
        Ok(was_open.then(|| {
            "an earlier round or a promote changed the live tree without a snapshot".to_string()
        }))
    }

    /// Whether a round or a promote may have changed the live tree since the last snapshot
    /// (the marker [`ModuleState::open_round`] sets).
    ///
    /// # Errors
    /// I/O errors other than its absence.
    pub fn round_is_open(&self) -> io::Result<bool> {
        let marker = self.dir.join("commits").join(&self.module).join(ROUND_OPEN);
        match rfs::statat(rfs::CWD, &marker, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Clears what [`ModuleState::open_round`] set: the newest snapshot is the live tree.
    fn close_round(&self) {
        let dir = self.dir.join("commits").join(&self.module);
        let r = rfs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| {
            rfs::unlinkat(&fd, ROUND_OPEN, AtFlags::empty())?;
            rfs::fsync(&fd)
        });
        match r {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            // Left in place: the next round builds from the whole tree, which is safe.
            Err(e) => tracing::warn!("module {:?}: clearing {ROUND_OPEN}: {e}", self.module),
        }
    }

    /// Claims the module's state for one round, without waiting: an exclusive `flock` of
    /// `commits/MODULE/round.lock`, held until the [`RoundClaim`] is dropped. `Ok(None)` when
    /// another process holds it (two processes recording rounds of one module would empty
    /// each other's journal and take snapshots from each other's half-known change lists).
    ///
    /// # Errors
    /// I/O errors creating or locking the file (a symlink there is not followed).
    pub fn try_claim(&self) -> io::Result<Option<RoundClaim>> {
        let dir = self.subdir(&format!("commits/{}", self.module))?;
        let dfd = rfs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fd = rfs::openat(
            &dfd,
            ROUND_LOCK,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        match rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(RoundClaim { _fd: fd })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a round into `dest` (the module's data at `module_path`; pushed into a server
    /// or pulled by a client): claims the module's state ([`ModuleState::try_claim`]),
    /// attaches the resume journal and, if configured, the signature cache. Blocking (reads
    /// the journal and stats cached files): call it off the async runtime.
    ///
    /// # Errors
    /// [`RoundBusy`] when another process is running a round of the module with this state
    /// directory.
    pub fn begin_round(
        &self,
        cfg: &StateConfig,
        module_path: &Path,
        dest: &Arc<LocalDestination>,
        dry_run: bool,
    ) -> Result<StateRound, RoundBusy> {
        let claim = if dry_run {
            None
        } else {
            match self.try_claim() {
                Ok(Some(c)) => Some(c),
                Ok(None) => return Err(RoundBusy { module: self.module.clone() }),
                // Not fatal, as a journal that cannot be opened is not: the commit at the end
                // fails if the state directory really cannot be written.
                Err(e) => {
                    tracing::warn!("module {:?}: cannot claim its state: {e}", self.module);
                    None
                }
            }
        };
        // The commit's tree hash reuses the hashes verified during the round; the snapshot
        // is built from what the round changed.
        dest.record_hashes();
        dest.record_changes();
        if let (Snapshotter::Csi(csi), false) = (&cfg.snapshotter, dry_run) {
            // Before this round changes anything: what an earlier run left pending.
            let unchanged = match self.round_is_open() {
                Ok(false) => self.commits().last().map(|c| c.round),
                _ => None,
            };
            csi.resume(&self.snapshots(), unchanged);
        }
        let untrusted = if dry_run {
            None
        } else {
            self.open_round().unwrap_or_else(|e| Some(format!("cannot mark the round open: {e}")))
        };
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
        let sigs = if cfg.signature_cache && !dry_run {
            match self.signature_cache(dest.root()) {
                Ok(c) => {
                    let cache = Arc::new(c);
                    dest.use_signature_cache(cache.clone());
                    Some(cache)
                }
                Err(e) => {
                    tracing::warn!("module {:?}: no signature cache: {e}", self.module);
                    None
                }
            }
        } else {
            None
        };
        Ok(StateRound {
            _claim: claim,
            state: self.clone(),
            cfg: cfg.clone(),
            module_path: module_path.to_path_buf(),
            dest: dest.clone(),
            journal,
            sigs,
            dry_run,
            untrusted,
        })
    }
}

/// Checks that `name` can name a module's state: it becomes a path component under the
/// state directory (`commits/NAME/`, `journal/NAME.jsonl`), so it is letters, digits, '-',
/// '_' and '.', and neither `.` nor `..`. A pull takes it from its URL, which only says
/// there is one name after the host.
///
/// # Errors
/// A message naming the module and what is wrong.
pub fn check_module_name(name: &str) -> Result<(), String> {
    let chars_ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !chars_ok || name == "." || name == ".." {
        return Err(format!(
            "module {name:?} cannot name its state under --state-dir: a module name is letters, \
             digits, '-', '_' or '.', and not . or .."
        ));
    }
    Ok(())
}

/// The marker [`ModuleState::open_round`] leaves in `commits/MODULE/`.
const ROUND_OPEN: &str = "round-open";

/// The lock file [`ModuleState::try_claim`] holds in `commits/MODULE/`.
const ROUND_LOCK: &str = "round.lock";

/// A process's claim on a module's state for one round (see [`ModuleState::try_claim`]);
/// released on drop.
#[derive(Debug)]
pub struct RoundClaim {
    _fd: rustix::fd::OwnedFd,
}

/// Another process is running a round of the module with the same state directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "module {module:?}: another process is running a round of it with this state directory; \
     retry later"
)]
pub struct RoundBusy {
    /// The module.
    pub module: String,
}

/// A round's use of the state directory on its destination (see the module docs).
pub struct StateRound {
    /// Held until the round has ended the state's way.
    _claim: Option<RoundClaim>,
    state: ModuleState,
    cfg: StateConfig,
    module_path: PathBuf,
    dest: Arc<LocalDestination>,
    journal: Option<Arc<Journal>>,
    sigs: Option<Arc<SignatureCache>>,
    dry_run: bool,
    /// Why this round's change list cannot be trusted, if it cannot.
    untrusted: Option<String>,
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

impl RoundEnd {
    /// Logs what the state directory did for `module`'s round; `took` is how long the end
    /// of the round (commit record, snapshot, retention, cache) took.
    pub fn log(&self, module: &str, took: std::time::Duration) {
        if let Some((commit, rec)) = &self.committed {
            tracing::info!(
                "module {module:?}: round {} committed (root {}), snapshot {} ({} entries, {} bytes) in {:.2} s",
                commit.round,
                &commit.root_hash[..16.min(commit.root_hash.len())],
                rec.id,
                rec.entries,
                rec.bytes,
                took.as_secs_f64()
            );
        }
        if let Some(e) = &self.snapshot_error {
            tracing::error!("module {module:?}: snapshot failed: {e}");
        }
        if let Some(c) = &self.cache {
            tracing::info!(
                "module {module:?}: signature cache: {} hits ({} bytes not re-read), {} misses, {} stored, {} dropped",
                c.hits, c.hit_bytes, c.misses, c.stored, c.dropped
            );
        }
    }

    /// What the source is told of the round in `Done`: recorded (round, snapshot, root hash),
    /// failed (why), or nothing recorded (a dry run).
    pub fn commit(&self) -> Commit {
        match (&self.committed, &self.snapshot_error) {
            (Some((c, s)), _) => Commit::Recorded {
                round: c.round,
                snapshot: s.commit_name(),
                root_hash: c.root_hash.clone(),
            },
            (None, Some(e)) => Commit::failed(e),
            (None, None) => Commit::Unrecorded,
        }
    }
}

impl StateRound {
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
        if stats.source_errors > 0 {
            // What was read is in place, but the tree is not the source's: no record or
            // snapshot may claim to be a complete copy of it.
            end.snapshot_error = Some(format!(
                "the source could not read {} part(s) of its tree: a partial round gets no \
                 commit record and no snapshot",
                stats.source_errors
            ));
        } else if !self.dry_run {
            let fresh = self.dest.take_hashes();
            let changes = self.change_set();
            let how = &self.cfg.snapshotter;
            let keep = &self.cfg.retention;
            let taken = self.state.open_snapshots(&self.module_path, how).and_then(|s| {
                let commits = self.state.commits();
                let t = s.take(&self.module_path, stats, keep, &commits, &fresh, changes, how);
                t.map(|c| (s, c))
            });
            match taken {
                Ok((snaps, (commit, rec))) => {
                    self.state.close_round();
                    // The live tree is the committed round's and recorded so (the marker is
                    // cleared): now the VolumeSnapshot, whose failure leaves the round
                    // committed.
                    let rec = match how {
                        Snapshotter::Csi(csi) => {
                            let (rec, err) = csi.finish(&snaps, &self.module_path, rec, keep);
                            end.snapshot_error = err.map(|e| e.to_string());
                            rec
                        }
                        _ => rec,
                    };
                    end.committed = Some((commit, rec));
                }
                Err(e) => end.snapshot_error = Some(e.to_string()),
            }
        }
        end.cache = self.finish_signatures();
        end
    }

    /// The round's change list for its snapshot, or why it cannot be trusted.
    fn change_set(&self) -> RoundChangeSet {
        let c = self.dest.take_changes();
        if let Some(why) = &self.untrusted {
            return Err(why.clone());
        }
        if let Some(why) = c.incomplete {
            return Err(format!("the round's change list is incomplete ({why})"));
        }
        Ok(ChangeSet { upserts: c.upserts, removed: c.removed, root: c.root })
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

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory)
/// without following a symlink: the directory is opened `O_NOFOLLOW`, and the temp file is
/// created `O_CREAT | O_EXCL | O_NOFOLLOW` after removing whatever has its name (`unlinkat`
/// removes a planted symlink itself, never its target). The state directory's files are
/// written only through this.
///
/// # Errors
/// I/O errors; `EEXIST` when something reappears under the temp name meanwhile.
pub(crate) fn write_state_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_state_file_with(path, bytes, true)
}

/// [`write_state_file`], without the fsyncs when `durable` is false (a cache entry lost in a
/// crash only costs a miss).
///
/// # Errors
/// As [`write_state_file`].
pub(crate) fn write_state_file_with(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!("{}: not a file path", path.display())));
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let dfd = rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".tmp");
    match rfs::unlinkat(&dfd, tmp.as_os_str(), AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rfs::openat(
        &dfd,
        tmp.as_os_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    rfs::renameat(&dfd, tmp.as_os_str(), &dfd, name)?;
    if durable {
        rfs::fsync(&dfd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_claim_on_a_module_state_at_a_time_and_a_planted_lock_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let ms = ModuleState::new(t.path(), "m");
        let first = ms.try_claim().unwrap();
        assert!(first.is_some());
        // flock conflicts between open file descriptions, in one process as in two.
        assert!(ms.try_claim().unwrap().is_none(), "a second claim while the first is held");
        assert!(ModuleState::new(t.path(), "other").try_claim().unwrap().is_some());
        drop(first);
        assert!(ms.try_claim().unwrap().is_some(), "released on drop");
        // A symlink planted as the lock file: not followed, its target neither created nor
        // touched.
        let victim = t.path().join("victim");
        let lock = t.path().join("commits/x").join(ROUND_LOCK);
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        assert!(ModuleState::new(t.path(), "x").try_claim().is_err());
        assert!(!victim.exists());
    }

    #[test]
    fn module_names_that_would_leave_the_state_directory_are_refused() {
        for ok in ["data", "db-wal", "a.b", "x_1", ".hidden"] {
            assert_eq!(check_module_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\n"] {
            assert!(check_module_name(bad).is_err(), "{bad:?}");
        }
    }
}
