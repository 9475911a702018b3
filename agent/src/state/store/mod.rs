//! The content-addressed snapshot store: a Merkle tree of directories whose per-round cost
//! follows the change.
//!
//! ```text
//!   STATE/store/MODULE/
//!     lock                       flock'd: builds, records and GC exclusive (Store::lock)
//!     objects/XX/<blake3 hex>    a hard link to a verified file inode (or a reflink copy)
//!     trees/XX/<blake3 hex>      one tree object per directory (tree.rs)
//!     snapshots/<ID>.json        StoreRecord: round, time, root tree hash, totals
//! ```
//!
//! An object is named by its content; its inode's metadata is never used (Ferry never
//! modifies a file in place, so sharing the live inode is safe; what each snapshot's names
//! carried is in the trees). A tree holds each entry's full metadata and its content hash or
//! child tree hash, so an unchanged subtree is reused by hash: a round that changes nothing
//! costs a record pointing at the same root, one that changes k files costs k objects plus
//! the trees on their paths ([`Store::build_incremental`]). A file changed behind Ferry's
//! back on the destination is not seen by an incremental build: that is what
//! [`Store::verify`] (it re-hashes everything) exists to find.
//!
//! # Durability and crashes
//! Objects and trees are written under a temp name, fsynced and renamed; a build fsyncs
//! every directory it added to before it returns, and a record is written (atomically) only
//! after that, so a record never names something not durable. [`Store::gc`] removes records
//! first (fsynced), then marks everything reachable from those left and sweeps the rest:
//! killed at any point, it has removed only what no remaining record reaches. Whatever a
//! crashed build wrote is unreachable and swept by a later GC; a build in progress holds
//! [`Store::lock`], which GC needs too.
//!
//! # Security
//! Everything under the state directory is reached by fd-relative `O_NOFOLLOW` calls from
//! directories opened beneath it without following symlinks: a symlink planted anywhere in
//! the store is an error, never followed. Every tree and record read is bounded and checked
//! ([`tree::MAX_TREE_BYTES`], [`tree::MAX_DEPTH`]); a damaged one is an error naming the
//! snapshot and path, never a panic.

mod build;
pub mod change;
mod read;
pub mod tree;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_core::{RelPath, Stats};
use rustix::fs::{self as rfs, AtFlags, FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};

pub use self::change::ChangeSet;
pub use self::read::{Change, DiffEntry, MaterializeStats, Verification};
pub use self::tree::{Node, Tree, TreeEntry, TreeHash};

/// Largest snapshot record read.
const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Prefix of the store's temp files (swept by [`Store::gc`]).
const TMP_PREFIX: &str = ".tmp.";
/// The `kind` of a store record.
pub const RECORD_KIND: &str = "store";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named file or directory of the store (or of the live tree).
    #[error("{what}: {source}")]
    Io {
        /// The file or directory, and what was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Something the store holds is missing or not what its name says.
    #[error("snapshot {snapshot}: {path}: {what}")]
    Damaged {
        /// The snapshot (or, during a build, the tree) being read.
        snapshot: String,
        /// The path inside it (`.` for its root).
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A snapshot record cannot be read.
    #[error("snapshot record {file}: {why}")]
    BadRecord {
        /// The record's file.
        file: String,
        /// Why.
        why: String,
    },
    /// No snapshot has this id.
    #[error("no snapshot {0:?} in the store")]
    NotFound(String),
    /// A changeset that does not fit the tree it is applied to.
    #[error("change at {path}: {why}")]
    BadChange {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
    /// A name (module, snapshot id, path) that cannot be used.
    #[error("bad {what} {name:?}")]
    BadName {
        /// Which kind of name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A path the snapshot does not hold (or that is not a directory where one is needed).
    #[error("snapshot {snapshot}: {path}: {why}")]
    NoSuchPath {
        /// The snapshot.
        snapshot: String,
        /// The path asked for.
        path: String,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// Garbage collection refused to sweep, because what is reachable is not known.
    #[error("garbage collection refused: {0}")]
    GcRefused(Box<StoreError>),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

fn errno(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> StoreError {
    let what = what.into();
    move |e| StoreError::Io { what, source: e.into() }
}

/// How a build keeps a new file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectLink {
    /// A hard link to the live inode (no data copied).
    Hardlink,
    /// A `FICLONE` reflink of the live file, or a copy where the filesystem cannot clone.
    Reflink,
}

/// How [`Store::materialize`] recreates files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialize {
    /// Each file its own inode with its metadata: a reflink where the filesystem clones,
    /// else a copy.
    Copy,
    /// Hard links to the store's objects: no data copied, but the files share inodes with
    /// the store (changing one in place damages the store) and keep the object's metadata,
    /// not the snapshot's.
    Hardlink,
}

/// What a build did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Entries in the built tree.
    pub entries: u64,
    /// Bytes of regular files in it.
    pub bytes: u64,
    /// Objects added.
    pub objects_written: u64,
    /// Tree objects added.
    pub trees_written: u64,
    /// Bytes written to the store (tree objects, and copied file data in reflink mode).
    pub bytes_written: u64,
    /// Files whose content had to be read to learn its hash.
    pub hashed_files: u64,
    /// Bytes read for them.
    pub hashed_bytes: u64,
    /// Files whose live inode was not the one the changeset said (stored by true content).
    pub mismatched: u64,
}

/// The record of one snapshot in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreRecord {
    /// Its id (the record's file name without `.json`).
    pub id: String,
    /// The round it captures.
    pub round: u64,
    /// When the round committed, seconds since the Unix epoch.
    pub time_unix: u64,
    /// The root tree's hash, hex: the snapshot's root hash.
    pub root_hash: String,
    /// Entries in the snapshot.
    pub entries: u64,
    /// Bytes of regular files in it.
    pub bytes: u64,
    /// The destination's account of the round.
    pub stats: Stats,
    /// Always [`RECORD_KIND`].
    pub kind: String,
}

impl StoreRecord {
    /// The root tree's hash.
    ///
    /// # Errors
    /// [`StoreError::BadRecord`] when `root_hash` is not 64 hex digits.
    pub fn root(&self) -> Result<TreeHash, StoreError> {
        TreeHash::from_hex(&self.root_hash).ok_or_else(|| StoreError::BadRecord {
            file: format!("{}.json", self.id),
            why: format!("bad root hash {:?}", self.root_hash),
        })
    }
}

/// The store's records, and those that could not be read.
#[derive(Debug, Default)]
pub struct RecordList {
    /// Readable records, by round then id.
    pub records: Vec<StoreRecord>,
    /// One error per record file that could not be read, naming it.
    pub unreadable: Vec<StoreError>,
}

/// What [`Store::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Records removed (not kept).
    pub deleted: Vec<String>,
    /// Tree objects removed.
    pub trees_removed: u64,
    /// File objects removed.
    pub objects_removed: u64,
    /// Bytes of file objects whose last link was removed.
    pub bytes_freed: u64,
    /// Temp files of interrupted writes removed.
    pub temps_removed: u64,
}

/// The store's exclusive lock, held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _fd: OwnedFd,
}

/// One module's snapshot store (see the module docs).
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    dir: OwnedFd,
    objects: OwnedFd,
    trees: OwnedFd,
    snapshots: OwnedFd,
}

/// A set of tree or content hashes.
type Hashes = HashSet<[u8; 32]>;

/// Which kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Area {
    Objects,
    Trees,
}

impl Store {
    /// Opens (creating what is missing) the store of `module` under `state_dir`. Every
    /// directory below the state directory must be a real directory, not a symlink.
    ///
    /// # Errors
    /// [`StoreError::BadName`] for a module name that is not one path component; I/O errors
    /// (`ELOOP` for a symlink), naming the directory.
    pub fn open(state_dir: &Path, module: &str) -> Result<Store, StoreError> {
        if RelPath::from_component(module.as_bytes()).is_err() {
            return Err(StoreError::BadName { what: "module", name: module.into() });
        }
        // The state directory itself is the user's to choose (a symlink to it is fine).
        std::fs::create_dir_all(state_dir).map_err(io_err(state_dir.display().to_string()))?;
        let root =
            crate::fs::Root::open(state_dir).map_err(io_err(state_dir.display().to_string()))?;
        let path = state_dir.join("store").join(module);
        let top = subdir(root.fd(), "store", &state_dir.join("store"))?;
        let dir = subdir(&top, module, &path)?;
        Ok(Store {
            objects: subdir(&dir, "objects", &path.join("objects"))?,
            trees: subdir(&dir, "trees", &path.join("trees"))?,
            snapshots: subdir(&dir, "snapshots", &path.join("snapshots"))?,
            dir,
            path,
        })
    }

    /// The store's directory, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the store's exclusive lock, waiting for it: builds, records, deletes and GC
    /// run under it, so `ferry snapshots delete` cannot race a serve round.
    ///
    /// # Errors
    /// I/O errors on the lock file (a symlink there is refused).
    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        self.lock_with(FlockOperation::LockExclusive)?.ok_or_else(|| StoreError::Io {
            what: self.at("lock"),
            source: io::Error::other("not locked"),
        })
    }

    /// [`Store::lock`] without waiting: `None` when someone else holds it.
    ///
    /// # Errors
    /// As [`Store::lock`].
    pub fn try_lock(&self) -> Result<Option<StoreLock>, StoreError> {
        self.lock_with(FlockOperation::NonBlockingLockExclusive)
    }

    fn lock_with(&self, op: FlockOperation) -> Result<Option<StoreLock>, StoreError> {
        let fd = rfs::openat(
            &self.dir,
            "lock",
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno(self.at("lock")))?;
        match rfs::flock(&fd, op) {
            Ok(()) => Ok(Some(StoreLock { _fd: fd })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(errno(self.at("lock"))(e)),
        }
    }

    /// Writes `rec` durably (temp file, fsync, rename, fsync of the directory), after
    /// checking its root tree is in the store. The caller holds [`Store::lock`], and built
    /// the tree with [`Store::build_incremental`] or [`Store::build_full`], which made it
    /// durable before returning.
    ///
    /// # Errors
    /// [`StoreError::BadName`] for an id that is not a plain file name; a missing root
    /// tree; I/O errors.
    pub fn record(&self, rec: &StoreRecord) -> Result<(), StoreError> {
        check_id(&rec.id)?;
        let root = rec.root()?;
        if self.stat_obj(Area::Trees, &root.0)?.is_none() {
            return Err(StoreError::Damaged {
                snapshot: rec.id.clone(),
                path: ".".into(),
                what: format!("root tree {root} is not in the store"),
            });
        }
        let mut rec = rec.clone();
        rec.kind = RECORD_KIND.into();
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| StoreError::BadRecord {
            file: format!("{}.json", rec.id),
            why: e.to_string(),
        })?;
        let name = format!("{}.json", rec.id);
        let what = self.at(&format!("snapshots/{name}"));
        write_new(&self.snapshots, &name, &bytes, true, &what)?;
        rfs::fsync(&self.snapshots).map_err(errno(self.at("snapshots")))
    }

    /// Every record, sorted by round then id; unreadable ones are listed apart, each error
    /// naming its file.
    ///
    /// # Errors
    /// When the snapshots directory cannot be listed.
    pub fn records(&self) -> Result<RecordList, StoreError> {
        let names = crate::fs::list_dir(&self.snapshots).map_err(io_err(self.at("snapshots")))?;
        let mut out = RecordList::default();
        for name in names {
            let Some(id) = name.strip_suffix(b".json") else { continue };
            if name.starts_with(b".") {
                continue;
            }
            match self.read_record(&String::from_utf8_lossy(id)) {
                Ok(r) => out.records.push(r),
                Err(e) => out.unreadable.push(e),
            }
        }
        out.records.sort_by(|a, b| (a.round, &a.id).cmp(&(b.round, &b.id)));
        Ok(out)
    }

    /// The record `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::BadRecord`] naming the file.
    pub fn find(&self, id: &str) -> Result<StoreRecord, StoreError> {
        check_id(id)?;
        self.read_record(id)
    }

    fn read_record(&self, id: &str) -> Result<StoreRecord, StoreError> {
        let file = self.at(&format!("snapshots/{id}.json"));
        let bad = |why: String| StoreError::BadRecord { file: file.clone(), why };
        let f = match rfs::openat(
            &self.snapshots,
            format!("{id}.json"),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(f) => f,
            Err(rustix::io::Errno::NOENT) => return Err(StoreError::NotFound(id.into())),
            Err(e) => return Err(bad(io::Error::from(e).to_string())),
        };
        let st = rfs::fstat(&f).map_err(|e| bad(e.to_string()))?;
        if crate::fs::file_type(&st) != rfs::FileType::RegularFile {
            return Err(bad("not a regular file".into()));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(f)
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(bad(format!("larger than {MAX_RECORD_BYTES} bytes")));
        }
        let rec: StoreRecord = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if rec.id != id || rec.kind != RECORD_KIND {
            return Err(bad(format!("names snapshot {:?} of kind {:?}", rec.id, rec.kind)));
        }
        rec.root().map_err(|_| bad(format!("bad root hash {:?}", rec.root_hash)))?;
        Ok(rec)
    }

    /// Removes the record `id` (its objects stay until [`Store::gc`]). The caller holds
    /// [`Store::lock`].
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; I/O errors.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        check_id(id)?;
        match rfs::unlinkat(&self.snapshots, format!("{id}.json"), AtFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => return Err(StoreError::NotFound(id.into())),
            Err(e) => return Err(errno(self.at(&format!("snapshots/{id}.json")))(e)),
        }
        rfs::fsync(&self.snapshots).map_err(errno(self.at("snapshots")))
    }

    /// Removes the records `keep` rejects, then everything no remaining record reaches
    /// (trees first, then objects) and the temp files of interrupted writes. Crash-safe:
    /// the removed records are durably gone before anything is swept, and only what the
    /// records left reach is kept, so a kill at any point never removes what a kept
    /// snapshot needs. Holding `_lock` keeps builds out (a build's new objects are
    /// unreachable until its record is written).
    ///
    /// # Errors
    /// [`StoreError::GcRefused`] (nothing swept) when a record or a reachable tree cannot be
    /// read: what it reaches is unknown. I/O errors.
    pub fn gc(
        &self,
        _lock: &StoreLock,
        keep: impl Fn(&StoreRecord) -> bool,
    ) -> Result<GcStats, StoreError> {
        let list = self.records()?;
        if let Some(e) = list.unreadable.into_iter().next() {
            return Err(StoreError::GcRefused(Box::new(e)));
        }
        let mut stats = GcStats::default();
        let mut kept = Vec::new();
        for rec in list.records {
            if keep(&rec) {
                kept.push(rec);
            } else {
                rfs::unlinkat(&self.snapshots, format!("{}.json", rec.id), AtFlags::empty())
                    .map_err(errno(self.at(&format!("snapshots/{}.json", rec.id))))?;
                stats.deleted.push(rec.id);
            }
        }
        rfs::fsync(&self.snapshots).map_err(errno(self.at("snapshots")))?;
        let (trees, objects) = self.mark(&kept).map_err(|e| StoreError::GcRefused(Box::new(e)))?;
        self.sweep(Area::Trees, &trees, &mut stats)?;
        self.sweep(Area::Objects, &objects, &mut stats)?;
        Ok(stats)
    }

    /// Every tree and object reachable from `records`.
    fn mark(&self, records: &[StoreRecord]) -> Result<(Hashes, Hashes), StoreError> {
        let mut trees = HashSet::new();
        let mut objects = HashSet::new();
        for rec in records {
            let mut stack = vec![(String::from("."), rec.root()?)];
            while let Some((path, h)) = stack.pop() {
                if !trees.insert(h.0) {
                    continue;
                }
                let tree = self.load_tree(h, &rec.id, &path)?;
                for e in tree.entries {
                    match e.node {
                        Node::Dir { tree, .. } => {
                            stack.push((read::child_display(&path, &e.name), tree))
                        }
                        n => {
                            if let Some(c) = n.content() {
                                objects.insert(c);
                            }
                        }
                    }
                }
            }
        }
        Ok((trees, objects))
    }

    fn sweep(
        &self,
        area: Area,
        keep: &HashSet<[u8; 32]>,
        stats: &mut GcStats,
    ) -> Result<(), StoreError> {
        let top = self.area(area);
        let names = crate::fs::list_dir(top).map_err(io_err(self.at(area.name())))?;
        for sub in names {
            let subname = format!("{}/{}", area.name(), tree::lossy(&sub));
            if sub.starts_with(TMP_PREFIX.as_bytes()) {
                rfs::unlinkat(top, &sub[..], AtFlags::empty()).map_err(errno(self.at(&subname)))?;
                stats.temps_removed += 1;
                continue;
            }
            if sub.len() != 2 {
                continue;
            }
            let dir = rfs::openat(
                top,
                &sub[..],
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno(self.at(&subname)))?;
            let mut removed = false;
            for name in crate::fs::list_dir(&dir).map_err(io_err(self.at(&subname)))? {
                let tmp = name.starts_with(TMP_PREFIX.as_bytes());
                let dead = tmp || tree::parse_hex(&name).is_some_and(|h| !keep.contains(&h));
                if !dead {
                    continue;
                }
                let what = format!("{subname}/{}", tree::lossy(&name));
                let st = rfs::statat(&dir, &name[..], AtFlags::SYMLINK_NOFOLLOW).ok();
                rfs::unlinkat(&dir, &name[..], AtFlags::empty()).map_err(errno(self.at(&what)))?;
                removed = true;
                if tmp {
                    stats.temps_removed += 1;
                } else if area == Area::Trees {
                    stats.trees_removed += 1;
                } else {
                    stats.objects_removed += 1;
                    if let Some(st) = st.filter(|s| s.st_nlink <= 1) {
                        stats.bytes_freed += st.st_size as u64;
                    }
                }
            }
            if removed {
                rfs::fsync(&dir).map_err(errno(self.at(&subname)))?;
            }
        }
        Ok(())
    }

    fn area(&self, a: Area) -> &OwnedFd {
        match a {
            Area::Objects => &self.objects,
            Area::Trees => &self.trees,
        }
    }

    /// `rel` under the store's directory, for messages.
    fn at(&self, rel: &str) -> String {
        self.path.join(rel).display().to_string()
    }

    fn obj_name(area: Area, h: &[u8; 32]) -> (String, String) {
        let hex = tree::hex(h);
        let sub = hex[..2].to_string();
        let _ = area;
        (sub, hex)
    }

    /// The fan-out directory of `h` in `area`, created when `create`.
    fn fan_dir(
        &self,
        area: Area,
        h: &[u8; 32],
        create: bool,
    ) -> Result<Option<OwnedFd>, StoreError> {
        let (sub, _) = Self::obj_name(area, h);
        let what = self.at(&format!("{}/{sub}", area.name()));
        if create {
            return crate::fs::make_dir_at(self.area(area), &sub)
                .map(Some)
                .map_err(|e| StoreError::Io { what: format!("{what} (a symlink?)"), source: e });
        }
        match rfs::openat(
            self.area(area),
            &sub,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(format!("{what} (a symlink?)"))(e)),
        }
    }

    /// lstat of the object `h` in `area`, `None` when missing.
    fn stat_obj(&self, area: Area, h: &[u8; 32]) -> Result<Option<rfs::Stat>, StoreError> {
        let Some(dir) = self.fan_dir(area, h, false)? else { return Ok(None) };
        let (sub, hex) = Self::obj_name(area, h);
        match rfs::statat(&dir, &hex, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if crate::fs::file_type(&st) == rfs::FileType::RegularFile => Ok(Some(st)),
            Ok(_) => Err(StoreError::Io {
                what: self.at(&format!("{}/{sub}/{hex}", area.name())),
                source: io::Error::other("not a regular file (a symlink?)"),
            }),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(self.at(&format!("{}/{sub}/{hex}", area.name())))(e)),
        }
    }

    /// Opens the object `h` in `area` for reading, without following a symlink.
    fn open_obj(&self, area: Area, h: &[u8; 32]) -> io::Result<(std::fs::File, rfs::Stat)> {
        let (sub, hex) = Self::obj_name(area, h);
        let dir = rfs::openat(
            self.area(area),
            &sub,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fd = rfs::openat(
            &dir,
            &hex,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&fd)?;
        if crate::fs::file_type(&st) != rfs::FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        Ok((std::fs::File::from(fd), st))
    }

    /// Reads and checks the tree `h` (for `snapshot` at `path`, in errors).
    fn load_tree(&self, h: TreeHash, snapshot: &str, path: &str) -> Result<Tree, StoreError> {
        let damaged = |what: String| StoreError::Damaged {
            snapshot: snapshot.into(),
            path: path.into(),
            what: format!("tree {h}: {what}"),
        };
        let (f, st) = self.open_obj(Area::Trees, &h.0).map_err(|e| {
            damaged(if e.kind() == io::ErrorKind::NotFound {
                "missing from the store".into()
            } else {
                e.to_string()
            })
        })?;
        if st.st_size as u64 > tree::MAX_TREE_BYTES {
            return Err(damaged(format!("larger than {} bytes", tree::MAX_TREE_BYTES)));
        }
        let mut bytes = Vec::new();
        f.take(tree::MAX_TREE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| damaged(e.to_string()))?;
        Tree::decode(&bytes, h).map_err(damaged)
    }
}

impl Area {
    fn name(self) -> &'static str {
        match self {
            Area::Objects => "objects",
            Area::Trees => "trees",
        }
    }
}

/// Creates (if missing) and opens `name` in `parent` as a real directory.
fn subdir(parent: &OwnedFd, name: &str, path: &Path) -> Result<OwnedFd, StoreError> {
    crate::fs::make_dir_at(parent, name).map_err(|e| StoreError::Io {
        what: format!("{} (not a plain directory: a symlink?)", path.display()),
        source: e,
    })
}

/// A temp name unique in this process.
fn tmp_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{TMP_PREFIX}{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Writes `bytes` as `name` in `dir` through a temp file (created `O_EXCL | O_NOFOLLOW`),
/// fsynced when `durable`, then renamed over `name`.
fn write_new(
    dir: &OwnedFd,
    name: &str,
    bytes: &[u8],
    durable: bool,
    what: &str,
) -> Result<(), StoreError> {
    let tmp = tmp_name();
    let fd = rfs::openat(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno(what))?;
    let mut f = std::fs::File::from(fd);
    let written = f.write_all(bytes).and_then(|()| if durable { f.sync_all() } else { Ok(()) });
    if let Err(e) = written.and_then(|()| Ok(rfs::renameat(dir, &tmp, dir, name)?)) {
        let _ = rfs::unlinkat(dir, &tmp, AtFlags::empty());
        return Err(io_err(what)(e));
    }
    Ok(())
}

/// Snapshot ids are plain file names: 1 to 128 of `[A-Za-z0-9._-]`, not starting with `.`.
fn check_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName { what: "snapshot id", name: id.into() })
    }
}

#[cfg(test)]
mod tests;
