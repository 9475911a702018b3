//! The destination's signature cache: rsync signatures of the module's large files, kept
//! between rounds so a round does not re-read and re-hash a basis to sign it.
//!
//! Which signature to keep, and when: a basis is signed when the source's copy changed; the
//! destination's copy is then replaced (a new inode) by the same round, so caching the
//! signature of the file being *read* would never be used. What is cached is the signature of
//! the file being *written*: each rebuilt segment is signed while it is in memory (segments
//! are 8 MiB, and every block size is a power of two that divides it, so per-segment
//! signatures concatenate into the whole file's), with the block size the next round will ask
//! for if the file changes and keeps roughly its size ([`BlockSize::for_basis`]).
//!
//! Key and invalidation: (device, inode, size, mtime, ctime) and the block size. Every change
//! to a file, content or metadata, changes its ctime. So does Ferry's own bookkeeping: a
//! hard-link snapshot (the link count) and retention (unlinking old snapshots) both change
//! the ctime of live files. So the entries are stamped with the ctime they have once a round
//! is finished, snapshot and retention included ([`SignatureCache::finish`]), and the next
//! round first drops every entry whose file does not have exactly that identity any more
//! ([`SignatureCache::open`]). A change made *during* a round by something other than Ferry
//! is outside the model (the destination volume belongs to Ferry while a round runs: the same
//! assumption the basis mmap makes); even then a wrong signature costs bytes, not
//! correctness: a delta against blocks that do not match rebuilds a file whose blake3 does not
//! match, and that file is sent again whole.
//!
//! Everything read back is untrusted: the index is size-capped and must decode; a signature
//! must have exactly the length its block size and file size imply and the blake3 the index
//! recorded; anything else is a miss.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ferry_core::delta::{BlockSize, SignatureHeader};
use ferry_core::{Limits, RelPath};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::write_state_file as write_atomic;
use crate::fs::dest::SignatureStore;
use crate::fs::{ctime_ns, file_type, mtime_ns, Root};
use crate::lock;

pub use crate::fs::dest::{SIGNATURE_CACHE_MAX_BYTES, SIGNATURE_CACHE_MIN};

/// Largest index file read back (millions of entries).
const MAX_INDEX_FILE: u64 = 256 << 20;

/// A file's identity as the cache keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// mtime, ns.
    pub mtime_ns: i64,
    /// ctime, ns.
    pub ctime_ns: i64,
}

impl FileIdentity {
    /// The identity in a stat.
    pub fn of(st: &rfs::Stat) -> FileIdentity {
        FileIdentity {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: mtime_ns(st),
            ctime_ns: ctime_ns(st),
        }
    }

    /// Same file and content version, whatever the ctime says.
    fn same_version(&self, other: &FileIdentity) -> bool {
        (self.dev, self.ino, self.size, self.mtime_ns)
            == (other.dev, other.ino, other.size, other.mtime_ns)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    /// Where the file is beneath the module root (for re-stamping after the round).
    path: Vec<u8>,
    id: FileIdentity,
    block_size: u32,
    /// blake3 of the stored signature blocks.
    blocks_hash: [u8; 32],
}

/// What the cache did this round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheCounts {
    /// Signatures served from the cache (basis not read to sign it).
    pub hits: u64,
    /// Bytes of basis not read thanks to those hits.
    pub hit_bytes: u64,
    /// Signatures that had to be computed (no entry, or a stale one).
    pub misses: u64,
    /// Signatures of rebuilt files stored for the next round.
    pub stored: u64,
    /// Entries dropped because their file changed or went away.
    pub dropped: u64,
}

/// The signature cache of one module (`STATE/signatures/MODULE`).
#[derive(Debug)]
pub struct SignatureCache {
    dir: PathBuf,
    entries: Mutex<HashMap<(u64, u64), CacheEntry>>,
    hits: AtomicU64,
    hit_bytes: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    dropped: AtomicU64,
}

/// Stats `rel` beneath `root` without following symlinks.
fn stat_beneath(root: &Root, rel: &[u8]) -> io::Result<rfs::Stat> {
    let fd = root.open_beneath(rel, OFlags::PATH, Mode::empty())?;
    Ok(rfs::fstat(&fd)?)
}

impl SignatureCache {
    /// Opens the cache in `dir` (laid out by [`crate::state::ModuleState`]) and drops every
    /// entry whose file beneath `root` no longer has the identity it was stamped with. A
    /// missing or unreadable index is an empty cache (it is only a cache).
    pub fn open(dir: &Path, root: &Root) -> SignatureCache {
        let dir = dir.to_path_buf();
        let list: Vec<CacheEntry> = match std::fs::metadata(dir.join("index.bin")) {
            Ok(m) if m.len() <= MAX_INDEX_FILE => std::fs::read(dir.join("index.bin"))
                .ok()
                .and_then(|b| postcard::from_bytes(&b).ok())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut dropped = 0;
        let mut entries = HashMap::new();
        for e in list {
            let current = stat_beneath(root, &e.path).ok().map(|st| FileIdentity::of(&st));
            if current == Some(e.id) {
                entries.insert((e.id.dev, e.id.ino), e);
            } else {
                dropped += 1;
                let _ = std::fs::remove_file(blob_path(&dir, &e.id));
            }
        }
        SignatureCache {
            dir,
            entries: Mutex::new(entries),
            hits: AtomicU64::new(0),
            hit_bytes: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            dropped: AtomicU64::new(dropped),
        }
    }

    fn read_entry(&self, id: &FileIdentity, bs: BlockSize, limits: &Limits) -> Option<Vec<u8>> {
        let entry = lock(&self.entries).get(&(id.dev, id.ino)).cloned()?;
        if entry.id != *id || entry.block_size != bs.get() {
            return None;
        }
        let want = SignatureHeader::new(bs, id.size).validate(limits).ok()?;
        let mut blocks = Vec::new();
        File::open(blob_path(&self.dir, id))
            .ok()?
            .take(want as u64 + 1)
            .read_to_end(&mut blocks)
            .ok()?;
        if blocks.len() != want || *blake3::hash(&blocks).as_bytes() != entry.blocks_hash {
            return None;
        }
        Some(blocks)
    }

    /// Ends the round: stamps every entry whose file still is the version it signed with the
    /// file's ctime now (after the snapshot and retention, which change ctimes), drops the
    /// rest and their signature files, and writes the index. Returns what the cache did.
    ///
    /// # Errors
    /// I/O errors writing the index.
    pub fn finish(&self, root: &Root) -> io::Result<CacheCounts> {
        let mut entries = lock(&self.entries);
        let mut keep = Vec::with_capacity(entries.len());
        for (_, mut e) in entries.drain() {
            let now = stat_beneath(root, &e.path)
                .ok()
                .filter(|st| file_type(st) == FileType::RegularFile)
                .map(|st| FileIdentity::of(&st));
            match now {
                Some(now) if now.same_version(&e.id) => {
                    if now != e.id {
                        // Only the ctime moved (a snapshot, retention): the blob follows it.
                        let _ = std::fs::rename(
                            blob_path(&self.dir, &e.id),
                            blob_path(&self.dir, &now),
                        );
                    }
                    e.id = now;
                    keep.push(e);
                }
                _ => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    let _ = std::fs::remove_file(blob_path(&self.dir, &e.id));
                }
            }
        }
        std::fs::create_dir_all(&self.dir)?;
        write_atomic(
            &self.dir.join("index.bin"),
            &postcard::to_allocvec(&keep).map_err(io::Error::other)?,
        )?;
        self.remove_orphans(&keep);
        entries.extend(keep.into_iter().map(|e| ((e.id.dev, e.id.ino), e)));
        Ok(self.counts())
    }

    /// Removes signature files no entry names (left by a crash between a store and the index).
    fn remove_orphans(&self, keep: &[CacheEntry]) {
        let named: std::collections::HashSet<PathBuf> =
            keep.iter().map(|e| blob_path(&self.dir, &e.id)).collect();
        let Ok(list) = std::fs::read_dir(self.dir.join("blobs")) else { return };
        for f in list.flatten() {
            if !named.contains(&f.path()) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }

    /// What the cache did since it was opened.
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            hit_bytes: self.hit_bytes.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl SignatureStore for SignatureCache {
    /// The signature blocks of the file `st` describes at `block_size`, if cached and intact.
    fn lookup(&self, st: &rfs::Stat, block_size: BlockSize, limits: &Limits) -> Option<Vec<u8>> {
        let id = FileIdentity::of(st);
        let found = self.read_entry(&id, block_size, limits);
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.hit_bytes.fetch_add(id.size, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Stores the signature of a file this round rebuilt and put in place at `path`; `st` is
    /// its stat after the rename. Its ctime is stamped when the round is finished.
    ///
    /// # Errors
    /// I/O errors writing the signature (the caller logs them: the round does not fail).
    fn store(
        &self,
        path: &RelPath,
        st: &rfs::Stat,
        block_size: BlockSize,
        blocks: &[u8],
    ) -> io::Result<()> {
        let id = FileIdentity::of(st);
        let blob = blob_path(&self.dir, &id);
        // Not fsynced: a signature lost in a crash fails its hash check and is a miss. The
        // blob directory was checked to be a plain directory when the cache was opened.
        super::write_state_file_with(&blob, blocks, false)?;
        let entry = CacheEntry {
            path: path.as_bytes().to_vec(),
            id,
            block_size: block_size.get(),
            blocks_hash: *blake3::hash(blocks).as_bytes(),
        };
        lock(&self.entries).insert((id.dev, id.ino), entry);
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A signature's file, named by the whole identity so a re-stamped entry never reads another
/// version's blocks.
fn blob_path(dir: &Path, id: &FileIdentity) -> PathBuf {
    dir.join("blobs").join(format!(
        "{:x}-{:x}-{:x}-{:x}-{:x}",
        id.dev, id.ino, id.size, id.mtime_ns, id.ctime_ns
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ferry_core::delta::signature_blocks;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Root) {
        let data = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let root = Root::open(data.path()).unwrap();
        (data, state, root)
    }

    fn stat(p: &Path) -> rfs::Stat {
        rfs::stat(p).unwrap()
    }

    #[test]
    fn hit_after_finish_and_reopen_miss_after_any_change() {
        let (data, state, root) = setup();
        let content: Vec<u8> = (0..(3u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let f = data.path().join("big");
        std::fs::write(&f, &content).unwrap();
        let bs = BlockSize::for_basis(content.len() as u64, content.len() as u64);
        let blocks = signature_blocks(&content, bs);
        let limits = Limits::default();

        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        c.store(&RelPath::new(b"big".to_vec()).unwrap(), &stat(&f), bs, &blocks).unwrap();
        // A hard link (what a snapshot does) changes the ctime; finish stamps the new one.
        std::fs::hard_link(&f, data.path().join("snap")).unwrap();
        assert_eq!(c.finish(&root).unwrap().stored, 1);

        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        assert_eq!(c.lookup(&stat(&f), bs, &limits), Some(blocks.clone()));
        let other = BlockSize::new(bs.get() / 2).unwrap();
        assert_eq!(c.lookup(&stat(&f), other, &limits), None, "another block size");
        assert_eq!(c.counts().hits, 1);
        assert_eq!(c.counts().hit_bytes, content.len() as u64);

        // A chmod between rounds changes only the ctime: the entry is dropped on open.
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        assert_eq!(c.lookup(&stat(&f), bs, &limits), None);
        assert_eq!(c.counts().dropped, 1);
        c.finish(&root).unwrap();
        assert_eq!(std::fs::read_dir(state.path().join("signatures/m/blobs")).unwrap().count(), 0);
    }

    #[test]
    fn damaged_signature_or_index_is_a_miss_not_an_error() {
        let (data, state, root) = setup();
        let content = vec![5u8; 2 << 20];
        let f = data.path().join("f");
        std::fs::write(&f, &content).unwrap();
        let bs = BlockSize::for_basis(content.len() as u64, content.len() as u64);
        let blocks = signature_blocks(&content, bs);
        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        c.store(&RelPath::new(b"f".to_vec()).unwrap(), &stat(&f), bs, &blocks).unwrap();
        c.finish(&root).unwrap();
        let blob = std::fs::read_dir(state.path().join("signatures/m/blobs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bad = blocks.clone();
        bad[7] ^= 1;
        std::fs::write(&blob, &bad).unwrap();
        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        assert_eq!(c.lookup(&stat(&f), bs, &Limits::default()), None, "flipped bit");
        std::fs::write(&blob, &blocks[..blocks.len() - 1]).unwrap();
        assert_eq!(c.lookup(&stat(&f), bs, &Limits::default()), None, "short");
        std::fs::write(state.path().join("signatures/m/index.bin"), b"\xff\xff\xff").unwrap();
        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        assert_eq!(c.lookup(&stat(&f), bs, &Limits::default()), None, "garbage index");
    }

    #[test]
    fn a_replaced_file_is_dropped_at_finish() {
        let (data, state, root) = setup();
        let f = data.path().join("f");
        std::fs::write(&f, vec![1u8; 2 << 20]).unwrap();
        let bs = BlockSize::for_len(2 << 20);
        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        c.store(&RelPath::new(b"f".to_vec()).unwrap(), &stat(&f), bs, &[0; 20]).unwrap();
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, vec![2u8; 2 << 20]).unwrap();
        let counts = c.finish(&root).unwrap();
        assert_eq!(counts.dropped, 1);
        let c = crate::state::ModuleState::new(state.path(), "m").signature_cache(&root).unwrap();
        assert_eq!(c.lookup(&stat(&f), bs, &Limits::default()), None);
    }
}
