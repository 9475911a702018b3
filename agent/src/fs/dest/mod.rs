//! The destination's side of the driver: performs [`TargetWork`] beneath the root.
//!
//! Rules kept here, each against a known class of replication bugs:
//! - every call is fd-relative beneath the root, no symlink followed ([`Root`]);
//! - content is rebuilt into a new temp file (`O_EXCL`, 0600) beside its final name, verified
//!   against the source's blake3, given its metadata, fsynced and only then renamed into place;
//! - an existing inode is never modified, not even its metadata: snapshots share inodes with
//!   the live tree, so a change always goes to a new inode that replaces the name;
//! - deletes never cross into another filesystem.

mod changes;
mod file;
mod memory;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ferry_core::delta::{self, BlockSize, SignatureHeader};
use ferry_core::entry::{Entry, EntryKind, LocalEntry, RootMeta};
use ferry_core::hash::{hash_segment, merge_segments, SegmentHash};
use ferry_core::message::{Encoding, FileId, Payload};
use ferry_core::session::{TargetOutcome, TargetWork, WorkCounts};
use ferry_core::{segment, Limits, RelPath};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use self::changes::ChangeLog;
pub use self::changes::RoundChanges;
use self::file::{copy_content, read_kept, temp_prefix, write_sparse};
pub use self::memory::{
    ContentKey, FreshHash, Partial, ResumeJournal, SignatureStore, SIGNATURE_CACHE_MAX_BYTES,
    SIGNATURE_CACHE_MIN,
};
use crate::fs::mmap::Basis;
use crate::fs::walk::{WalkOptions, Walker};
use crate::fs::{
    apply_meta, apply_meta_at, can_chown, file_type, make_node, meta_of, read_xattrs, remove_tree,
    Root,
};
use crate::lock;

use crate::fs::content_key;

/// Performs the target's work. A trait so tests can drive the destination directly, with
/// work a hostile peer could cause, and check nothing escapes the root.
pub trait Destination: Send + Sync {
    /// Does `work` and reports what happened.
    fn perform(&self, work: TargetWork) -> TargetOutcome;
}

struct Staging {
    dir: OwnedFd,
    tmp: Vec<u8>,
    file: File,
    /// blake3 chaining values of the segments written so far (merged at the end).
    segs: Vec<SegmentHash>,
    written: u64,
    /// The signature of the content written so far, for the signature cache.
    sig: Option<(BlockSize, Vec<u8>)>,
    /// A temp file of an interrupted round: it holds old bytes, so nothing may be skipped
    /// as a hole when writing into it.
    adopted: bool,
}

/// A verified file waiting for its commit: staging, the source's entry, content hash.
type Verified = (Staging, Entry, [u8; 32]);

/// A destination directory on the local filesystem.
pub struct LocalDestination {
    root: Arc<Root>,
    walker: Mutex<Walker>,
    limits: Limits,
    nonce: u64,
    bases: Mutex<HashMap<FileId, Arc<Basis>>>,
    staging: Mutex<HashMap<FileId, Staging>>,
    /// Verified files waiting for their batch's commit, with their final path.
    verified: Mutex<HashMap<FileId, Verified>>,
    /// Content hashes of the files committed, by inode, when asked for (`record_hashes`).
    fresh: Mutex<Option<Vec<FreshHash>>>,
    /// What the round changed, when asked for (`record_changes`).
    changes: Mutex<Option<ChangeLog>>,
    dirty: Mutex<HashSet<Option<RelPath>>>,
    temp_counter: AtomicU64,
    /// Signatures kept between rounds (`ferry serve --state-dir`).
    sigs: OnceLock<Arc<dyn SignatureStore>>,
    /// The resume journal (`ferry serve --state-dir`).
    journal: OnceLock<Arc<dyn ResumeJournal>>,
}

impl std::fmt::Debug for LocalDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDestination").field("root", &self.root.path()).finish()
    }
}

fn fatal(what: &str, path: &dyn std::fmt::Display, e: impl std::fmt::Display) -> TargetOutcome {
    TargetOutcome::Fatal(format!("{what} {path}: {e}"))
}

impl LocalDestination {
    /// Starts keeping the content hash of every file committed (for what the state directory keeps:
    /// [`FreshHash`]).
    pub fn record_hashes(&self) {
        *lock(&self.fresh) = Some(Vec::new());
    }

    /// Starts recording what the round changes beneath the root ([`RoundChanges`]), for a
    /// snapshot that costs what changed.
    pub fn record_changes(&self) {
        *lock(&self.changes) = Some(ChangeLog::default());
    }

    /// What the round changed since [`LocalDestination::record_changes`] (empty when not
    /// recording); recording starts afresh.
    pub fn take_changes(&self) -> RoundChanges {
        lock(&self.changes).as_mut().map(|c| std::mem::take(c).finish()).unwrap_or_default()
    }

    fn note(&self, f: impl FnOnce(&mut ChangeLog)) {
        if let Some(log) = lock(&self.changes).as_mut() {
            f(log);
        }
    }

    /// After a round that failed (a cut link, a peer gone): puts in place the files that were
    /// whole and verified but still waiting for their batch's commit, so the next round does
    /// not send them again. Each is made durable before its rename, as in a normal commit, so
    /// every name still holds its previous or its new verified content. Returns how many.
    pub fn salvage(&self) -> usize {
        let ids: Vec<FileId> = lock(&self.verified).keys().copied().collect();
        if ids.is_empty() {
            return 0;
        }
        match self.commit(&ids) {
            TargetOutcome::Committed(_) => ids.len(),
            other => {
                tracing::warn!("keeping the verified files of the failed round: {other:?}");
                0
            }
        }
    }

    /// Uses `cache` for basis signatures and stores the signatures of the large files this
    /// round rebuilds in it (see [`SignatureStore`]). Set before the round starts.
    pub fn use_signature_cache(&self, cache: Arc<dyn SignatureStore>) {
        let _ = self.sigs.set(cache);
    }

    /// Journals the segments of large files as they are written and offers what an
    /// interrupted round left to the session (see [`ResumeJournal`]). Set before the round
    /// starts: the walk must spare the journal's partial files.
    pub fn use_journal(&self, journal: Arc<dyn ResumeJournal>) {
        lock(&self.walker).keep_temps(journal.temp_names());
        let _ = self.journal.set(journal);
    }

    /// The root this destination writes beneath.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The content hashes recorded so far, by (device, inode, size, mtime).
    pub fn take_hashes(&self) -> Vec<FreshHash> {
        lock(&self.fresh).as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A destination rooted at `root`.
    pub fn new(root: Arc<Root>, walk: WalkOptions, limits: Limits) -> Self {
        let nonce = u64::from(std::process::id()) << 32
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let nonce = nonce & 0xffff_ffff_ffff;
        let walk = WalkOptions { remove_stale_temps: Some(temp_prefix(nonce)), ..walk };
        LocalDestination {
            walker: Mutex::new(Walker::new(root.clone(), walk)),
            root,
            limits,
            nonce,
            bases: Mutex::new(HashMap::new()),
            staging: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            fresh: Mutex::new(None),
            changes: Mutex::new(None),
            dirty: Mutex::new(HashSet::new()),
            temp_counter: AtomicU64::new(0),
            sigs: OnceLock::new(),
            journal: OnceLock::new(),
        }
    }

    /// Warnings from the walk (entries that could not be read).
    pub fn walk_warnings(&self) -> Vec<String> {
        let mut w = lock(&self.walker);
        let mut out = std::mem::take(&mut w.skipped);
        let removed = std::mem::take(&mut w.stale_temps_removed);
        if removed > 0 {
            out.push(format!(
                "removed {removed} temp file(s) left by an interrupted earlier round"
            ));
        }
        out
    }

    fn temp_name(&self) -> Vec<u8> {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let mut v = temp_prefix(self.nonce);
        v.extend_from_slice(n.to_string().as_bytes());
        v
    }

    fn create_temp(&self, dir: &OwnedFd) -> io::Result<(Vec<u8>, File)> {
        let tmp = self.temp_name();
        let fd = rfs::openat(
            dir,
            tmp.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        Ok((tmp, File::from(fd)))
    }

    fn staging_for(
        &self,
        path: &RelPath,
        sig: Option<(BlockSize, Vec<u8>)>,
    ) -> io::Result<Staging> {
        let dir = self.root.parent_of(path)?;
        let (tmp, file) = self.create_temp(&dir)?;
        Ok(Staging { dir, tmp, file, segs: Vec::new(), written: 0, sig, adopted: false })
    }

    fn mark_dirty(&self, path: &RelPath) {
        lock(&self.dirty).insert(path.parent());
    }

    /// Renames `tmp` over `name` in `dir`, first removing a directory tree in the way.
    fn replace(&self, dir: &OwnedFd, tmp: &[u8], path: &RelPath) -> io::Result<u64> {
        let name = path.file_name();
        let mut removed = 0;
        if let Ok(st) = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            if file_type(&st) == FileType::Directory {
                let (r, kept) = remove_tree(dir, name, &self.root.boundary())?;
                removed = r;
                self.note(|c| c.remove(path));
                if kept > 0 {
                    let _ = rfs::unlinkat(dir, tmp, AtFlags::empty());
                    return Err(io::Error::other(format!(
                        "{path} is a directory holding a mount point; not replaced"
                    )));
                }
            }
        }
        rfs::renameat(dir, tmp, dir, name)?;
        self.mark_dirty(path);
        Ok(removed)
    }

    fn signature(&self, file: FileId, path: &RelPath, bs: BlockSize) -> TargetOutcome {
        let opened =
            self.root.open_beneath(path.as_bytes(), OFlags::RDONLY, Mode::empty()).and_then(|fd| {
                let st = rfs::fstat(&fd)?;
                if file_type(&st) != FileType::RegularFile {
                    return Err(io::Error::other("not a regular file"));
                }
                Ok((Basis::open(&File::from(fd))?, st))
            });
        let Ok((basis, st)) = opened else {
            // The basis went away or is unreadable: the file comes whole instead.
            return TargetOutcome::Signed(None);
        };
        let header = SignatureHeader::new(bs, basis.bytes().len() as u64);
        if header.validate(&self.limits).is_err() {
            return TargetOutcome::Signed(None);
        }
        let cached = self
            .sigs
            .get()
            .filter(|_| st.st_size as u64 >= SIGNATURE_CACHE_MIN)
            .and_then(|c| c.lookup(&st, bs, &self.limits));
        let blocks = cached.unwrap_or_else(|| delta::signature_blocks(basis.bytes(), bs));
        lock(&self.bases).insert(file, Arc::new(basis));
        TargetOutcome::Signed(Some((header, blocks)))
    }

    fn fine_signature(&self, file: FileId, gaps: &[(u64, u64)], bs: BlockSize) -> TargetOutcome {
        let Some(basis) = lock(&self.bases).get(&file).cloned() else {
            return TargetOutcome::BadData(format!("file {file}: refinement without a basis"));
        };
        let map = match delta::GapMap::new(gaps, basis.bytes().len() as u64, &self.limits) {
            Ok(m) => m,
            Err(e) => return TargetOutcome::BadData(format!("file {file}: {e}")),
        };
        let header = SignatureHeader::new(bs, map.len());
        if header.validate(&self.limits).is_err() {
            return TargetOutcome::Signed(None);
        }
        // Signed gap by gap: no copy of up to `max_refine_bytes` of the basis.
        TargetOutcome::Signed(Some((header, map.sign(basis.bytes(), bs))))
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        file: FileId,
        path: &RelPath,
        index: u64,
        payload: Payload,
        encoding: Encoding,
        data: Vec<u8>,
        len: usize,
        file_len: u64,
        mtime_ns: i64,
    ) -> TargetOutcome {
        let taken = lock(&self.staging).remove(&file);
        let mut st = match (taken, index) {
            (Some(s), _) => s,
            (None, 0) => match self.staging_for(path, self.new_signature(file_len)) {
                Ok(s) => s,
                Err(e) => return fatal("creating temp file for", path, e),
            },
            (None, _) => {
                return TargetOutcome::BadData(format!("{path}: segment {index} without its file"))
            }
        };
        if st.written != index * ferry_core::SEGMENT_LEN as u64 {
            return TargetOutcome::BadData(format!("{path}: segment {index} out of order"));
        }
        let (out, matched) = if payload == Payload::Kept {
            // Held from an interrupted round: read it back. It is hashed below like any
            // segment, so a chunk that did not survive on disk fails the file's check (and the
            // file is sent again whole) instead of failing the round.
            (read_kept(&st.file, st.written, len), 0)
        } else {
            let basis = (payload == Payload::Delta)
                .then(|| lock(&self.bases).get(&file).cloned())
                .flatten();
            match segment::rebuild(
                payload,
                encoding,
                data,
                len,
                basis.as_ref().map(|b| b.bytes()),
                &self.limits,
            ) {
                Ok(r) => (r.data, r.matched),
                Err(e) => return TargetOutcome::BadData(format!("{path}: segment {index}: {e}")),
            }
        };
        let cv = hash_segment(index, &out, file_len);
        st.segs.push(cv);
        if let Some((bs, sig)) = &mut st.sig {
            // Segments are whole numbers of blocks (power-of-two blocks dividing SEGMENT_LEN),
            // so per-segment signatures concatenate into the file's.
            sig.extend_from_slice(&delta::signature_blocks(&out, *bs));
        }
        if payload != Payload::Kept {
            let written = if st.adopted {
                // Zero blocks must overwrite whatever the interrupted round left there.
                st.file.write_all_at(&out, st.written)
            } else {
                write_sparse(&st.file, &out, st.written)
            };
            if let Err(e) = written {
                let _ = rfs::unlinkat(&st.dir, st.tmp.as_slice(), AtFlags::empty());
                return fatal("writing", path, e);
            }
        }
        st.written += out.len() as u64;
        if let Some(j) = self.journal.get().filter(|_| file_len > ferry_core::SEGMENT_LEN as u64) {
            j.record(path, file_len, mtime_ns, &st.tmp, index, cv.0);
        }
        lock(&self.staging).insert(file, st);
        TargetOutcome::Written { matched }
    }

    fn finish(&self, file: FileId, entry: &Entry, hash: [u8; 32]) -> TargetOutcome {
        lock(&self.bases).remove(&file);
        let st = match lock(&self.staging).remove(&file) {
            Some(s) => s,
            None if entry.size == 0 => match self.staging_for(&entry.path, None) {
                Ok(s) => s,
                Err(e) => return fatal("creating temp file for", &entry.path, e),
            },
            None => {
                return TargetOutcome::BadData(format!("{}: finished without data", entry.path))
            }
        };
        let discard = |st: &Staging| {
            let _ = rfs::unlinkat(&st.dir, st.tmp.as_slice(), AtFlags::empty());
        };
        if st.written != entry.size || merge_segments(&st.segs, entry.size) != Some(hash) {
            discard(&st);
            return TargetOutcome::Mismatch;
        }
        let done = (|| -> io::Result<u64> {
            // Extends the file over a trailing hole.
            st.file.set_len(entry.size)?;
            apply_meta(&st.file, &entry.meta, &entry.xattrs)
        })();
        match done {
            Ok(skipped) => {
                lock(&self.verified).insert(file, (st, entry.clone(), hash));
                TargetOutcome::Verified(WorkCounts {
                    ownership_skipped: skipped,
                    ..WorkCounts::default()
                })
            }
            Err(e) => {
                discard(&st);
                fatal("setting metadata of", &entry.path, e)
            }
        }
    }

    /// Makes a batch of verified files durable, then renames each into place. Every rename
    /// happens after its file's data and metadata are on disk, so a crash leaves each name at
    /// its old or its new, verified content.
    fn commit(&self, files: &[FileId]) -> TargetOutcome {
        let batch: Vec<Verified> = {
            let mut v = lock(&self.verified);
            files.iter().filter_map(|id| v.remove(id)).collect()
        };
        let durable = if batch.len() <= 2 {
            batch.iter().try_for_each(|(st, _, _)| st.file.sync_all())
        } else {
            // One flush of the filesystem costs about one fsync and covers the whole batch.
            rfs::syncfs(self.root.fd()).map_err(io::Error::from)
        };
        if let Err(e) = durable {
            for (st, _, _) in &batch {
                let _ = rfs::unlinkat(&st.dir, st.tmp.as_slice(), AtFlags::empty());
            }
            return fatal("flushing to disk under", &self.root.path().display(), e);
        }
        let mut counts = WorkCounts::default();
        let mut fresh = lock(&self.fresh);
        for (i, (st, entry, hash)) in batch.iter().enumerate() {
            let path = &entry.path;
            match self.replace(&st.dir, &st.tmp, path) {
                Ok(d) => {
                    counts.deleted += d;
                    let stat = rfs::fstat(&st.file);
                    let key = stat.as_ref().ok().map(content_key);
                    if let (Some(list), Some(key)) = (fresh.as_mut(), key) {
                        list.push((key, *hash));
                    }
                    self.note(|c| match key {
                        Some(key) => {
                            c.upsert(Entry { hash: Some(*hash), ..entry.clone() }, Some(key))
                        }
                        None => c.incomplete(format!("{path}: cannot stat the file just written")),
                    });
                    if let Some(j) = self.journal.get().filter(|_| st.segs.len() > 1) {
                        j.done(path, &st.tmp);
                    }
                    if let (Some(cache), Some((bs, sig)), Ok(s)) = (self.sigs.get(), &st.sig, &stat)
                    {
                        if let Err(e) = cache.store(path, s, *bs, sig) {
                            tracing::warn!("signature cache: storing {path}: {e}");
                        }
                    }
                }
                Err(e) => {
                    for (st, _, _) in &batch[i..] {
                        let _ = rfs::unlinkat(&st.dir, st.tmp.as_slice(), AtFlags::empty());
                    }
                    return fatal("renaming into place", path, e);
                }
            }
        }
        TargetOutcome::Committed(counts)
    }

    /// Signature-cache state for a new temp file of `file_len` bytes: none for small files,
    /// and none for files whose signature would not fit the cap (it is held in memory while
    /// the file is written; such files are signed when needed, as without a cache).
    fn new_signature(&self, file_len: u64) -> Option<(BlockSize, Vec<u8>)> {
        let bs = BlockSize::for_basis(file_len, file_len);
        let fits = SignatureHeader::new(bs, file_len)
            .validate(&self.limits)
            .is_ok_and(|n| n <= SIGNATURE_CACHE_MAX_BYTES);
        self.sigs
            .get()
            .filter(|_| file_len >= SIGNATURE_CACHE_MIN && fits)
            .map(|_| (bs, Vec::new()))
    }

    /// Claims what an interrupted round left of this file (see [`ResumeJournal`]) as the
    /// file's temp file; returns the chaining values of the segments it holds.
    fn resume(&self, file: FileId, path: &RelPath, size: u64, mtime_ns: i64) -> Vec<[u8; 32]> {
        let Some(p) = self.journal.get().and_then(|j| j.take(path, size, mtime_ns)) else {
            return Vec::new();
        };
        let adopted = self.root.parent_of(path).and_then(|dir| {
            let fd = rfs::openat(
                &dir,
                p.temp.as_slice(),
                OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = rfs::fstat(&fd)?;
            if file_type(&st) != FileType::RegularFile || st.st_nlink != 1 {
                return Err(io::Error::other("not a plain temp file"));
            }
            Ok((dir, File::from(fd)))
        });
        match adopted {
            Ok((dir, file_handle)) => {
                let st = Staging {
                    dir,
                    tmp: p.temp,
                    file: file_handle,
                    segs: Vec::new(),
                    written: 0,
                    sig: self.new_signature(size),
                    adopted: true,
                };
                lock(&self.staging).insert(file, st);
                p.have
            }
            Err(_) => Vec::new(),
        }
    }

    fn discard(&self, file: FileId, keep_partial: bool) -> TargetOutcome {
        lock(&self.bases).remove(&file);
        let mut staged = lock(&self.staging).remove(&file);
        if keep_partial && self.journal.get().is_some() {
            // The round is failing: a journaled partial file stays for the next round (an
            // unjournaled one is removed as stale by the next walk).
            staged = None;
        }
        let verified = lock(&self.verified).remove(&file).map(|(st, _, _)| st);
        for st in staged.into_iter().chain(verified) {
            let _ = rfs::unlinkat(&st.dir, st.tmp.as_slice(), AtFlags::empty());
        }
        TargetOutcome::Done(WorkCounts::default())
    }

    fn retouch(&self, entry: &Entry) -> io::Result<WorkCounts> {
        let old = File::from(self.root.open_beneath(
            entry.path.as_bytes(),
            OFlags::RDONLY,
            Mode::empty(),
        )?);
        let dir = self.root.parent_of(&entry.path)?;
        let (tmp, new) = self.create_temp(&dir)?;
        let r = (|| -> io::Result<u64> {
            copy_content(&old, &new)?;
            let skipped = apply_meta(&new, &entry.meta, &entry.xattrs)?;
            new.sync_all()?;
            Ok(skipped)
        })();
        match r {
            Ok(skipped) => {
                self.replace(&dir, &tmp, &entry.path)?;
                let key = content_key(&rfs::fstat(&new)?);
                self.note(|c| c.upsert(entry.clone(), Some(key)));
                Ok(WorkCounts { ownership_skipped: skipped, ..WorkCounts::default() })
            }
            Err(e) => {
                let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
                Err(e)
            }
        }
    }

    fn make_dir(&self, entry: &Entry, replace: bool) -> io::Result<WorkCounts> {
        let dir = self.root.parent_of(&entry.path)?;
        let name = entry.path.file_name();
        let mut counts = WorkCounts { created: true, ..WorkCounts::default() };
        if replace {
            if let Ok(st) = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                if file_type(&st) != FileType::Directory {
                    // A file or symlink in the way: remove the name, never follow it.
                    rfs::unlinkat(&dir, name, AtFlags::empty())?;
                    self.note(|c| c.remove(&entry.path));
                    counts.deleted += 1;
                }
            }
        }
        match rfs::mkdirat(&dir, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                let st = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if file_type(&st) != FileType::Directory {
                    return Err(io::Error::other("exists and is not a directory"));
                }
                counts.created = false;
            }
            Err(e) => return Err(e.into()),
        }
        self.mark_dirty(&entry.path);
        if counts.created {
            self.note(|c| c.upsert(entry.clone(), None));
        }
        Ok(counts)
    }

    fn link(&self, entry: &Entry) -> io::Result<WorkCounts> {
        let dir = self.root.parent_of(&entry.path)?;
        let tmp = self.temp_name();
        make_node(&dir, &tmp, entry)?;
        let r = apply_meta_at(&dir, &tmp, entry);
        match r {
            Ok(skipped) => {
                let deleted = self.replace(&dir, &tmp, &entry.path)?;
                self.note(|c| c.upsert(entry.clone(), None));
                Ok(WorkCounts {
                    ownership_skipped: skipped,
                    deleted,
                    created: true,
                    ..WorkCounts::default()
                })
            }
            Err(e) => {
                let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
                Err(e)
            }
        }
    }

    fn hard_link(&self, path: &RelPath, to: &RelPath) -> Result<WorkCounts, TargetOutcome> {
        let io_err = |e: io::Error| fatal("hard-linking", path, e);
        // The file linked to may have failed this round (changed while read): then the link
        // waits for the next round instead of failing the whole round. A peer naming a
        // symlink or directory gets the same: nothing is linked.
        let skipped = WorkCounts { failed: 1, ..WorkCounts::default() };
        let Ok(to_dir) = self.root.parent_of(to) else { return Ok(skipped) };
        let Ok(to_st) = rfs::statat(&to_dir, to.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
            return Ok(skipped);
        };
        if file_type(&to_st) != FileType::RegularFile {
            return Ok(skipped);
        }
        let dir = self.root.parent_of(path).map_err(io_err)?;
        if let Ok(st) = rfs::statat(&dir, path.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            if st.st_ino == to_st.st_ino && st.st_dev == to_st.st_dev {
                return Ok(WorkCounts::default());
            }
        }
        let tmp = self.temp_name();
        rfs::linkat(&to_dir, to.file_name(), &dir, tmp.as_slice(), AtFlags::empty())
            .map_err(|e| io_err(e.into()))?;
        let deleted = self.replace(&dir, &tmp, path).map_err(io_err)?;
        self.note(|c| {
            // A hard link's entry as a manifest carries it: the linked file's metadata.
            let link = Entry {
                path: path.clone(),
                kind: EntryKind::HardLink { to: to.clone() },
                size: to_st.st_size as u64,
                meta: meta_of(&to_st),
                xattrs: Vec::new(),
                hash: None,
            };
            c.upsert(link, Some(content_key(&to_st)));
        });
        Ok(WorkCounts { deleted, created: true, ..WorkCounts::default() })
    }

    fn delete(&self, entry: &LocalEntry) -> io::Result<WorkCounts> {
        let dir = self.root.parent_of(&entry.entry.path)?;
        let (deleted, kept) =
            remove_tree(&dir, entry.entry.path.file_name(), &self.root.boundary())?;
        if deleted > 0 {
            self.mark_dirty(&entry.entry.path);
            self.note(|c| c.remove(&entry.entry.path));
        }
        if kept > 0 {
            self.note(|c| {
                c.incomplete(format!("{}: mount points beneath it were kept", entry.entry.path))
            });
        }
        Ok(WorkCounts { deleted, mount_points_skipped: kept, ..WorkCounts::default() })
    }

    fn dir_meta(&self, entry: &Entry) -> io::Result<WorkCounts> {
        let fd = self.root.open_dir(Some(&entry.path))?;
        let changed = self.recording() && self.meta_differs(&fd, &entry.meta, &entry.xattrs)?;
        let skipped = apply_meta(&fd, &entry.meta, &entry.xattrs)?;
        if changed {
            self.note(|c| c.upsert(entry.clone(), None));
        }
        Ok(WorkCounts { ownership_skipped: skipped, ..WorkCounts::default() })
    }

    fn root_meta(&self, root: &RootMeta) -> io::Result<u64> {
        let fd = self.root.open_dir(None)?;
        let changed = self.recording() && self.meta_differs(&fd, &root.meta, &root.xattrs)?;
        let skipped = apply_meta(&fd, &root.meta, &root.xattrs)?;
        if changed {
            self.note(|c| c.root(root.clone()));
        }
        Ok(skipped)
    }

    fn recording(&self) -> bool {
        lock(&self.changes).is_some()
    }

    /// Whether the directory open as `fd` holds other metadata than `meta` and `xattrs`, as
    /// far as this process can set it: ownership counts only where it can be set (else every
    /// directory would differ every round, and the change list would be the tree).
    fn meta_differs(
        &self,
        fd: &OwnedFd,
        meta: &ferry_core::entry::Meta,
        xattrs: &[ferry_core::entry::Xattr],
    ) -> io::Result<bool> {
        let now = meta_of(&rfs::fstat(fd)?);
        let owner = can_chown() && (now.uid, now.gid) != (meta.uid, meta.gid);
        if owner || now.mode != meta.mode || now.mtime_ns != meta.mtime_ns {
            return Ok(true);
        }
        Ok(read_xattrs(fd, b"", self.limits.max_xattr_value)? != xattrs)
    }

    fn sync_dirs(&self) -> io::Result<WorkCounts> {
        let dirs: Vec<Option<RelPath>> = lock(&self.dirty).drain().collect();
        for d in dirs {
            match self.root.open_dir(d.as_ref()) {
                Ok(fd) => rfs::fsync(&fd)?,
                // Removed later in the round (replaced by a file, or deleted): nothing to sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(WorkCounts::default())
    }

    fn hash_local(&self, path: &RelPath) -> io::Result<[u8; 32]> {
        let fd = self.root.open_beneath(path.as_bytes(), OFlags::RDONLY, Mode::empty())?;
        let f = File::from(fd);
        let basis = Basis::open(&f)?;
        let mut h = blake3::Hasher::new();
        h.update_rayon(basis.bytes());
        Ok(*h.finalize().as_bytes())
    }
}

impl Destination for LocalDestination {
    fn perform(&self, work: TargetWork) -> TargetOutcome {
        let io = |what: &str, path: &RelPath, r: io::Result<WorkCounts>| match r {
            Ok(c) => TargetOutcome::Done(c),
            Err(e) => fatal(what, path, e),
        };
        match work {
            TargetWork::Scan { max } => match lock(&self.walker).next_batch(max) {
                Ok((entries, done)) => TargetOutcome::Scanned { entries, done },
                Err(e) => fatal("scanning", &self.root.path().display(), e),
            },
            TargetWork::HashLocal { path, .. } => match self.hash_local(&path) {
                Ok(h) => TargetOutcome::Hashed(h),
                // Unreadable: a hash that matches nothing makes it a changed file.
                Err(_) => TargetOutcome::Hashed([0; 32]),
            },
            TargetWork::Signature { file, path, block_size } => {
                self.signature(file, &path, block_size)
            }
            TargetWork::Write {
                file,
                path,
                index,
                payload,
                encoding,
                data,
                len,
                file_len,
                mtime_ns,
            } => self.write(file, &path, index, payload, encoding, data, len, file_len, mtime_ns),
            TargetWork::Resume { file, path, size, mtime_ns } => {
                TargetOutcome::Resumable(self.resume(file, &path, size, mtime_ns))
            }
            TargetWork::Finish { file, entry, hash } => self.finish(file, &entry, hash),
            TargetWork::FineSignature { file, gaps, block_size } => {
                self.fine_signature(file, &gaps, block_size)
            }
            TargetWork::Commit { files } => self.commit(&files),
            TargetWork::Discard { file, keep_partial } => self.discard(file, keep_partial),
            TargetWork::Retouch { entry } => {
                io("updating metadata of", &entry.path, self.retouch(&entry))
            }
            TargetWork::MakeDir { entry, replace } => {
                io("creating directory", &entry.path, self.make_dir(&entry, replace))
            }
            TargetWork::Link { entry } => io("creating", &entry.path, self.link(&entry)),
            TargetWork::HardLink { path, to } => match self.hard_link(&path, &to) {
                Ok(c) => TargetOutcome::Done(c),
                Err(o) => o,
            },
            TargetWork::Delete { entry } => {
                let p = entry.entry.path.clone();
                io("deleting", &p, self.delete(&entry))
            }
            TargetWork::DirMeta { entry } => {
                io("setting metadata of", &entry.path, self.dir_meta(&entry))
            }
            TargetWork::RootMeta { root } => match self.root_meta(&root) {
                Ok(skipped) => TargetOutcome::Done(WorkCounts {
                    ownership_skipped: skipped,
                    ..WorkCounts::default()
                }),
                Err(e) => fatal("setting metadata of", &self.root.path().display(), e),
            },
            TargetWork::SyncDirs => match self.sync_dirs() {
                Ok(c) => TargetOutcome::Done(c),
                Err(e) => fatal("syncing directories under", &self.root.path().display(), e),
            },
        }
    }
}

impl Drop for LocalDestination {
    fn drop(&mut self) {
        // Whatever is still staged was never verified: it must not survive the round, except
        // as a journaled partial file for the next round to resume.
        let verified: Vec<Staging> =
            lock(&self.verified).drain().map(|(_, (st, _, _))| st).collect();
        let mut staged: Vec<Staging> = lock(&self.staging).drain().map(|(_, st)| st).collect();
        if self.journal.get().is_some() {
            staged.clear();
        }
        for st in staged.into_iter().chain(verified) {
            let _ = rfs::unlinkat(&st.dir, st.tmp.as_slice(), AtFlags::empty());
        }
    }
}
