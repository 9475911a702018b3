//! Commit records and the tree root hash: what a committed round left in a module, durable
//! before its snapshot, and checkable later.
//!
//! The root hash is blake3 over the committed tree in walk (component) order: each entry as it
//! would appear in a manifest (path, kind, size, mode, owner, mtime, xattrs) with the blake3
//! of its content for regular files. It is computed by the destination over the tree it
//! committed. After a round with `--delete` and no excludes that tree is the source's
//! manifest, so the hash names it; otherwise it names what the destination holds (the
//! source's files plus whatever the round was told to leave alone).
//!
//! Content hashes come from a per-module cache keyed by (device, inode, size, mtime): files the
//! round wrote are entered as they are committed (their hash was verified end to end), files
//! it did not touch keep their entry, and anything else (first use of a state directory, a
//! file changed behind Ferry's back) is read and hashed. ctime is not in the key: every
//! hard-link snapshot changes every file's ctime (the link count), which would make the cache
//! useless; Ferry never modifies an inode in place, so a content change keeps the key only if
//! someone rewrites a destination file in place and restores its size and mtime, which
//! `ferry snapshots verify` (it reads everything, no cache) detects.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use ferry_core::{Entry, EntryKind, LocalEntry, Stats};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::write_state_file as write_atomic;
use crate::fs::Root;

pub use crate::fs::dest::ContentKey;

/// Content hashes by [`ContentKey`].
#[derive(Debug, Default)]
pub struct HashCache {
    map: HashMap<(u64, u64), (u64, i64, [u8; 32])>,
}

/// Largest hash cache file read back (about 18 million files).
const MAX_CACHE_FILE: u64 = 1 << 30;

impl HashCache {
    /// Loads the cache at `path`; a missing, oversized or unreadable one is empty (it is only
    /// a cache: everything it lacks is recomputed).
    pub fn load(path: &Path) -> HashCache {
        let bytes = match std::fs::metadata(path) {
            Ok(m) if m.len() <= MAX_CACHE_FILE => std::fs::read(path).unwrap_or_default(),
            _ => Vec::new(),
        };
        let list: Vec<(u64, u64, u64, i64, [u8; 32])> =
            postcard::from_bytes(&bytes).unwrap_or_default();
        HashCache { map: list.into_iter().map(|(d, i, s, m, h)| ((d, i), (s, m, h))).collect() }
    }

    /// Writes the cache to `path` atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let list: Vec<(u64, u64, u64, i64, [u8; 32])> =
            self.map.iter().map(|(&(d, i), &(s, m, h))| (d, i, s, m, h)).collect();
        let bytes = postcard::to_allocvec(&list).map_err(io::Error::other)?;
        write_atomic(path, &bytes)
    }

    /// The hash of `key`'s content, if known.
    pub fn get(&self, key: ContentKey) -> Option<[u8; 32]> {
        let (d, i, s, m) = key;
        self.map.get(&(d, i)).filter(|(s2, m2, _)| *s2 == s && *m2 == m).map(|(_, _, h)| *h)
    }

    /// Records `key`'s content hash.
    pub fn insert(&mut self, key: ContentKey, hash: [u8; 32]) {
        let (d, i, s, m) = key;
        self.map.insert((d, i), (s, m, hash));
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Accumulates a tree's root hash, entry by entry in walk order.
#[derive(Debug)]
pub struct TreeHasher {
    h: blake3::Hasher,
    /// Files whose content had to be read (not in the cache).
    pub hashed_files: u64,
    /// Bytes read for them.
    pub hashed_bytes: u64,
}

impl Default for TreeHasher {
    fn default() -> Self {
        TreeHasher {
            h: blake3::Hasher::new_derive_key("ferry tree root hash v1"),
            hashed_files: 0,
            hashed_bytes: 0,
        }
    }
}

impl TreeHasher {
    /// Adds `entry` (a regular file's with its content hash).
    pub fn add(&mut self, entry: &Entry, content: Option<[u8; 32]>) {
        let mut e = entry.clone();
        e.hash = content;
        let bytes = postcard::to_allocvec(&e).unwrap_or_default();
        self.h.update(&(bytes.len() as u64).to_le_bytes());
        self.h.update(&bytes);
    }

    /// Reads a regular file beneath `root` and returns its content hash (counted in
    /// `hashed_files`/`hashed_bytes`).
    ///
    /// # Errors
    /// I/O errors.
    pub fn read_content(
        &mut self,
        root: &Root,
        entry: &Entry,
        key: ContentKey,
    ) -> io::Result<[u8; 32]> {
        let h = hash_file(root, entry, key)?;
        self.hashed_files += 1;
        self.hashed_bytes += entry.size;
        Ok(h)
    }

    /// Adds one walked entry: a regular file's content hash comes from `cache` or is read
    /// beneath `root`, and is entered in `kept` (so the next cache holds only the tree's files).
    ///
    /// # Errors
    /// I/O errors reading a file the cache did not know.
    pub fn visit(
        &mut self,
        root: &Root,
        l: &LocalEntry,
        cache: &HashCache,
        kept: &mut HashCache,
    ) -> io::Result<()> {
        if l.entry.kind != EntryKind::File {
            self.add(&l.entry, None);
            return Ok(());
        }
        let key = (l.dev, l.ino, l.entry.size, l.entry.meta.mtime_ns);
        let h = match cache.get(key) {
            Some(h) => h,
            None => self.read_content(root, &l.entry, key)?,
        };
        kept.insert(key, h);
        self.add(&l.entry, Some(h));
        Ok(())
    }

    /// The root hash, hex.
    pub fn finish(&self) -> String {
        self.h.finalize().to_hex().to_string()
    }
}

/// blake3 of a file's content, read beneath `root` without following symlinks; refused when
/// the file is not the one walked or changes while it is read (something else writes into
/// the tree), so a cache never pairs a key with other content.
fn hash_file(root: &Root, entry: &Entry, key: ContentKey) -> io::Result<[u8; 32]> {
    let f = root.open_beneath(entry.path.as_bytes(), OFlags::RDONLY, Mode::empty())?;
    let changed = || io::Error::other(format!("{} changed while it was hashed", entry.path));
    let (h, _, at) = crate::fs::hash_unchanged(f).map_err(|e| match e.kind() {
        io::ErrorKind::Other => changed(),
        _ => e,
    })?;
    if at != key {
        return Err(changed());
    }
    Ok(h)
}

/// The durable record of a module's last committed round.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommitRecord {
    /// Round number in this module (1 for the first round committed with this state dir).
    pub round: u64,
    /// When it committed, seconds since the Unix epoch.
    pub time_unix: u64,
    /// Root hash of the committed tree (see the module docs).
    pub root_hash: String,
    /// Entries in the tree.
    pub entries: u64,
    /// Bytes of regular files.
    pub bytes: u64,
    /// The destination's account of the round.
    pub stats: Stats,
}

/// Where a module's commit state lives under a state directory.
#[derive(Debug, Clone)]
pub struct CommitLog {
    dir: PathBuf,
}

impl CommitLog {
    /// The commit state kept in `dir` (laid out by [`crate::state::ModuleState`]; created on
    /// first write).
    pub fn at(dir: PathBuf) -> CommitLog {
        CommitLog { dir }
    }

    /// The last committed round, if any.
    pub fn last(&self) -> Option<CommitRecord> {
        let bytes = std::fs::read(self.dir.join("last.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Makes `rec` the last committed round, durably (written, fsynced, renamed, directory
    /// fsynced), and appends it to the history.
    ///
    /// # Errors
    /// I/O errors.
    pub fn record(&self, rec: &CommitRecord) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        write_atomic(&self.dir.join("last.json"), &serde_json::to_vec_pretty(rec)?)?;
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("history.jsonl"))?;
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        log.write_all(&line)
    }

    /// Remembers where the module's data directory is (for `ferry promote`).
    ///
    /// # Errors
    /// I/O errors.
    pub fn remember_module(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let abs = path.canonicalize()?;
        let v = serde_json::json!({ "path": abs });
        write_atomic(&self.dir.join("module.json"), &serde_json::to_vec_pretty(&v)?)
    }

    /// The module's data directory as `ferry serve` last saw it.
    pub fn module_path(&self) -> Option<PathBuf> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("module.json")).ok()?).ok()?;
        v["path"].as_str().map(PathBuf::from)
    }

    /// The content hash cache's file.
    pub fn cache_path(&self) -> PathBuf {
        self.dir.join("hashes.bin")
    }

    /// Loads the content hash cache.
    pub fn load_cache(&self) -> HashCache {
        HashCache::load(&self.cache_path())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cache_round_trips_and_misses_on_any_key_change() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c");
        let mut c = HashCache::default();
        c.insert((1, 2, 3, 4), [9; 32]);
        c.save(&p).unwrap();
        let c = HashCache::load(&p);
        assert_eq!(c.get((1, 2, 3, 4)), Some([9; 32]));
        for k in [(0, 2, 3, 4), (1, 0, 3, 4), (1, 2, 0, 4), (1, 2, 3, 0)] {
            assert_eq!(c.get(k), None, "{k:?}");
        }
        std::fs::write(&p, b"garbage").unwrap();
        assert!(HashCache::load(&p).is_empty());
    }
}
