//! Snapshots of a destination after each committed round: a complete point-in-time copy to
//! fail over to. Kinds (`--snapshot`) are in `kinds.rs`: hardlink and reflink trees built here,
//! btrfs subvolume snapshots, the user's command, or Kubernetes VolumeSnapshots (`csi.rs`).
//!
//! The `hardlink` snapshotter makes a tree of hard links on the same filesystem as the module:
//! directories are recreated (with their metadata), files are linked (metadata cost only),
//! symlinks and special files are recreated. It is safe only because a round never modifies
//! an inode in place (see [`crate::fs::dest`]): the live tree gets new inodes, the snapshot
//! keeps the old ones. A snapshot is built under a temporary name, described by a JSON record
//! beside it, and renamed into place when complete.
//!
//! ```text
//!   STATE/snapshots/MODULE/000001-20261121T015300Z/      the tree
//!   STATE/snapshots/MODULE/000001-20261121T015300Z.json  its record (round, time, stats)
//! ```

pub mod csi;
mod kinds;
mod retention;
mod stored;
mod verify;

use std::io;
use std::path::{Path, PathBuf};

use ferry_core::{LocalEntry, Stats};
use serde::{Deserialize, Serialize};

pub use self::kinds::Snapshotter;
use self::kinds::{fs_type, probe_reflink};
pub use self::retention::Retention;
pub use self::stored::{Built, RoundChangeSet};
pub use self::verify::Verification;
use crate::fs::dest::ContentKey;
use crate::fs::tree::walk_tree;
use crate::fs::Root;
use crate::state::commit::{CommitLog, CommitRecord, HashCache, TreeHasher};
use crate::state::write_state_file as write_atomic;
use rustix::fs::{self as rfs, Mode, OFlags};
use std::os::fd::OwnedFd;

/// The record of one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotRecord {
    /// Its id (also its directory name): round number and UTC time.
    pub id: String,
    /// The round it captures (1 for the first round into the module).
    pub round: u64,
    /// When the round committed, seconds since the Unix epoch.
    pub time_unix: u64,
    /// Entries in the snapshot.
    pub entries: u64,
    /// Bytes of regular files in it.
    pub bytes: u64,
    /// The destination's account of the round.
    pub stats: Stats,
    /// Root hash of the tree (see [`crate::state::commit`]); empty in records older than it.
    #[serde(default)]
    pub root_hash: String,
    /// How it was taken (`hardlink`, `reflink`, `btrfs`, `command`, `csi`); empty means
    /// hardlink.
    #[serde(default)]
    pub kind: String,
    /// With kind `csi`: the VolumeSnapshot, and where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<csi::VolumeSnapshotRef>,
}

impl SnapshotRecord {
    /// Whether the snapshot is a directory Ferry can read (all kinds but `command` and
    /// `csi`).
    pub fn has_tree(&self) -> bool {
        self.kind != "command" && self.kind != "csi"
    }

    /// What the source is told of the snapshot in the commit result: its id; for a CSI
    /// snapshot the VolumeSnapshot's name, and how it failed if it did (the round is
    /// committed either way).
    pub fn commit_name(&self) -> String {
        match &self.volume_snapshot {
            None => self.id.clone(),
            Some(v) if v.state == csi::CsiState::Ready => v.name.clone(),
            Some(v) => {
                let how = if v.failure.is_empty() { "pending" } else { v.failure.as_str() };
                let mut s = format!("{} (VolumeSnapshot failed: {how})", v.name);
                s.truncate(ferry_core::message::MAX_COMMIT_FIELD);
                s
            }
        }
    }
}

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The state directory is on another filesystem than the module (hard links cannot cross).
    #[error(
        "the state directory {state} is on another filesystem than module {module}: hard-link \
         snapshots need both on the same filesystem (put --state-dir on the volume)"
    )]
    CrossDevice {
        /// The state directory.
        state: PathBuf,
        /// The module's directory.
        module: PathBuf,
    },
    /// The snapshotter cannot work here.
    #[error("--snapshot {kind}: {why}")]
    Unsupported {
        /// The snapshotter.
        kind: &'static str,
        /// Why not.
        why: String,
    },
    /// A `--snapshot command` or `btrfs` command failed.
    #[error("the snapshot command failed: {0}")]
    Command(String),
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The snapshot store failed, or holds something damaged (the error names the snapshot
    /// and the path).
    #[error(transparent)]
    Store(#[from] crate::state::store::StoreError),
}

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let what = what.into();
    move |source| SnapshotError::Io { what, source }
}

/// Snapshots of one module under a state directory.
#[derive(Debug, Clone)]
pub struct Snapshots {
    /// Where legacy snapshot directories and their records are (`STATE/snapshots/MODULE`).
    dir: PathBuf,
    /// The state directory, where the store is.
    state: PathBuf,
    /// The module.
    module: String,
}

impl Snapshots {
    /// The snapshots kept in `dir` (laid out by [`crate::state::ModuleState`] under the state
    /// directory `state`); checks `dir` can hold snapshots of `module_path` of kind `how`,
    /// creating it if needed.
    ///
    /// # Errors
    /// [`SnapshotError::CrossDevice`], or I/O errors creating the directory.
    pub fn open(
        dir: PathBuf,
        state: &Path,
        module: &str,
        module_path: &Path,
        how: &Snapshotter,
    ) -> Result<Snapshots, SnapshotError> {
        // Looked at through fds only: the snapshots directory beneath the state directory
        // without following a symlink (anyone who can write the state directory could plant
        // one), the module through the fd a round opens it with.
        let dir_fd = Root::open(state)
            .and_then(|r| {
                r.open_beneath(
                    format!("snapshots/{module}").as_bytes(),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                )
            })
            .map_err(io_err(format!(
                "{}: not a plain directory beneath the state directory (a symlink?)",
                dir.display()
            )))?;
        let module_root = match Root::open(module_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(module_path)
                .and_then(|()| Root::open(module_path))
                .map_err(io_err(format!("creating {}", module_path.display())))?,
            r => r.map_err(io_err(format!("{}", module_path.display())))?,
        };
        let a = rfs::fstat(&dir_fd).map_err(|e| io_err(format!("{}", dir.display()))(e.into()))?;
        let b = rfs::fstat(module_root.fd())
            .map_err(|e| io_err(format!("{}", module_path.display()))(e.into()))?;
        // btrfs gives every subvolume its own st_dev and f_fsid, so "same filesystem" can only
        // be judged by type here; a state directory on another filesystem of the same type
        // fails at the first snapshot (FICLONE or btrfs say EXDEV).
        let module_type =
            fs_type(module_root.fd()).map_err(io_err(format!("{}", module_path.display())))?;
        let same_fs =
            fs_type(&dir_fd).map_err(io_err(format!("{}", dir.display())))? == module_type;
        let unsupported = |why: String| SnapshotError::Unsupported { kind: how.name(), why };
        match how {
            // Hard links cannot cross filesystems, nor btrfs subvolumes (each has its own dev).
            Snapshotter::Hardlink | Snapshotter::HardlinkTree if a.st_dev != b.st_dev => {
                return Err(SnapshotError::CrossDevice {
                    state: state.into(),
                    module: module_path.into(),
                });
            }
            Snapshotter::Reflink | Snapshotter::Btrfs if !same_fs => {
                return Err(unsupported(format!(
                    "the state directory {} is on another kind of filesystem than module {}",
                    state.display(),
                    module_path.display()
                )));
            }
            Snapshotter::Reflink => {
                probe_reflink(&dir_fd).map_err(|e| {
                    unsupported(format!(
                        "the filesystem of {} does not support reflinks (FICLONE: {e}); use \
                         --snapshot hardlink, or a filesystem with reflinks (btrfs, XFS with \
                         reflink=1)",
                        dir.display()
                    ))
                })?;
            }
            Snapshotter::Btrfs => {
                const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
                if module_type != BTRFS_SUPER_MAGIC {
                    return Err(unsupported(format!("{} is not on btrfs", module_path.display())));
                }
                // The root of a btrfs subvolume is always inode 256.
                if b.st_ino != 256 {
                    return Err(unsupported(format!(
                        "{} is not a btrfs subvolume (create it with `btrfs subvolume create`)",
                        module_path.display()
                    )));
                }
                let tool = std::process::Command::new("btrfs").arg("--version").output();
                if !tool.is_ok_and(|o| o.status.success()) {
                    return Err(unsupported(
                        "the `btrfs` tool is not installed (apt-get install btrfs-progs)".into(),
                    ));
                }
            }
            _ => {}
        }
        // Snapshots inside the data directory would be replicated into (and deleted from) it.
        let (cs, cm) = (state.canonicalize(), module_path.canonicalize());
        if let (Ok(cs), Ok(cm)) = (cs, cm) {
            if cs.starts_with(&cm) {
                return Err(SnapshotError::Io {
                    what: format!("--state-dir {} is inside module directory {}", state.display(), module_path.display()),
                    source: io::Error::other("the data directory must hold exactly the source's tree; put the state directory beside it"),
                });
            }
        }
        Ok(Snapshots { dir, state: state.to_path_buf(), module: module.to_string() })
    }

    /// The snapshots of `module` under the state directory `state`, legacy ones in `dir`, for
    /// reading (no checks, nothing created).
    pub fn at(dir: PathBuf, state: &Path, module: &str) -> Snapshots {
        Snapshots { dir, state: state.to_path_buf(), module: module.to_string() }
    }

    /// Every snapshot's record, oldest first: those in the store and the legacy directories
    /// of earlier versions (and of `btrfs`, `command` and `hardlink-tree`).
    ///
    /// # Errors
    /// I/O errors reading the directories; unreadable records are skipped (store records
    /// with a warning naming them).
    pub fn list(&self) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        let mut out = self.store_records()?;
        let dir = match self.legacy_dir() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !out.is_empty() => None,
            r => Some(r.map_err(io_err(format!("reading {}", self.dir.display())))?),
        };
        let names = match &dir {
            Some(fd) => crate::fs::list_dir(fd)
                .map_err(io_err(format!("reading {}", self.dir.display())))?,
            None => Vec::new(),
        };
        for name in names {
            // The id is the record's file name, checked against the id grammar; the record's
            // own `id` field is never used to name a path (it could say `../../x`).
            let Some(id) = std::str::from_utf8(&name).ok().and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let Some(dir) = dir.as_ref().filter(|_| valid_id(id)) else { continue };
            // Read without following a symlink, and only a regular file of a bounded size.
            if let Some(mut r) = read_record(dir, &name) {
                if r.id != id {
                    tracing::warn!(
                        "snapshot record {}: its id field {:?} is not its name; using the name",
                        self.dir.join(format!("{id}.json")).display(),
                        r.id
                    );
                    r.id = id.to_string();
                }
                // A record counts only with its tree (see `take`), unless it has none.
                let tree = rfs::statat(dir, id, rfs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode).is_dir());
                if !r.has_tree() || tree {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a: &SnapshotRecord, b| a.round.cmp(&b.round).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The directory holding snapshot `id` (callers check `id` with [`valid_id`] or take it
    /// from [`Snapshots::list`]).
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The legacy snapshots' directory (`snapshots/MODULE`), opened beneath the state
    /// directory without following a symlink.
    fn legacy_dir(&self) -> io::Result<OwnedFd> {
        Root::open(&self.state)?.open_beneath(
            format!("snapshots/{}", self.module).as_bytes(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
    }

    /// Ends a committed round: computes the tree's root hash while building a hard-link
    /// snapshot under a temporary name, writes the durable commit record, and only then puts
    /// the snapshot in place; then applies `keep`. `fresh` are the
    /// content hashes of the files the round wrote (verified end to end), so only files new to
    /// the cache are read.
    ///
    /// # Errors
    /// [`SnapshotError`]; a failed snapshot leaves no directory under its final name, and a
    /// crash before the commit record leaves no record of the round.
    #[allow(clippy::too_many_arguments)]
    pub fn take(
        &self,
        module_path: &Path,
        stats: &Stats,
        keep: &Retention,
        commits: &CommitLog,
        fresh: &[(ContentKey, [u8; 32])],
        changes: RoundChangeSet,
        how: &Snapshotter,
    ) -> Result<(CommitRecord, SnapshotRecord), SnapshotError> {
        let last_snap = self.list()?.last().map_or(0, |r| r.round);
        let round = commits.last().map_or(0, |r| r.round).max(last_snap) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let when = utc(now, false);
        let id = format!("{round:06}-{when}");
        let tmp = self.dir.join(format!(".{id}.partial"));
        // A snapshot cut short by a crash never got its name: remove what it left (a partial
        // tree, or a record whose tree was never renamed into place).
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.starts_with('.') && n.ends_with(".partial") {
                    let _ = std::fs::remove_dir_all(e.path());
                } else if let Some(id) = n.strip_suffix(".json") {
                    let rec = self.legacy_dir().ok().and_then(|d| read_record(&d, n.as_bytes()));
                    if rec.is_none_or(|r| r.has_tree()) && !self.dir.join(id).is_dir() {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        if matches!(how, Snapshotter::Hardlink | Snapshotter::Reflink) {
            let named = (round, now, id);
            return self.take_stored(module_path, stats, keep, commits, fresh, changes, how, named);
        }
        let mut cache = commits.load_cache();
        for (k, h) in fresh {
            cache.insert(*k, *h);
        }
        let mut kept = HashCache::default();
        let mut hasher = TreeHasher::default();
        let build = match how {
            // (Hardlink and Reflink went to the store above.)
            Snapshotter::HardlinkTree | Snapshotter::Hardlink => Some((tmp.as_path(), false)),
            Snapshotter::Reflink => Some((tmp.as_path(), true)),
            // Taken after the commit record, by btrfs, the user's command or the API.
            Snapshotter::Btrfs | Snapshotter::Command(_) | Snapshotter::Csi(_) => None,
        };
        let mut visit = |root: &Root, l: &LocalEntry| hasher.visit(root, l, &cache, &mut kept);
        let (entries, bytes) = walk_tree(module_path, build, Some(&mut visit)).map_err(io_err(
            format!("snapshotting {} into {}", module_path.display(), tmp.display()),
        ))?;
        let root_hash = hasher.finish();
        let commit = CommitRecord {
            round,
            time_unix: now,
            root_hash: root_hash.clone(),
            entries,
            bytes,
            stats: *stats,
        };
        commits.record(&commit).map_err(io_err("writing the commit record"))?;
        // Only what is in the tree now: the cache stays as large as the module.
        if let Err(e) = kept.save(&commits.cache_path()) {
            tracing::warn!("saving the content hash cache: {e} (the next round re-reads files)");
        }
        if hasher.hashed_files > 0 {
            tracing::info!(
                "hashed {} files ({} bytes) the cache did not know",
                hasher.hashed_files,
                hasher.hashed_bytes
            );
        }
        // The record first, then the tree under its name: a crash between the two leaves a
        // record without a tree, which `list` ignores and the next snapshot removes, never a
        // tree nobody lists.
        let rec = SnapshotRecord {
            id: id.clone(),
            round,
            time_unix: now,
            entries,
            bytes,
            stats: *stats,
            root_hash,
            kind: how.name().to_string(),
            volume_snapshot: None,
        };
        let json = self.dir.join(format!("{id}.json"));
        let write_record = || {
            write_atomic(&json, &serde_json::to_vec_pretty(&rec).unwrap_or_default())
                .map_err(io_err(format!("writing {}", json.display())))
        };
        let fin = self.dir.join(&id);
        match how {
            Snapshotter::Hardlink | Snapshotter::Reflink | Snapshotter::HardlinkTree => {
                write_record()?;
                if let Err(e) = std::fs::rename(&tmp, &fin) {
                    let _ = std::fs::remove_file(&json);
                    return Err(io_err(format!("renaming {}", tmp.display()))(e));
                }
            }
            Snapshotter::Btrfs => {
                write_record()?;
                let out = std::process::Command::new("btrfs")
                    .args(["subvolume", "snapshot", "-r"])
                    .arg(module_path)
                    .arg(&fin)
                    .output();
                let failed = match out {
                    Ok(o) if o.status.success() => None,
                    Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                    Err(e) => Some(format!("running btrfs: {e}")),
                };
                if let Some(why) = failed {
                    let _ = std::fs::remove_file(&json);
                    return Err(SnapshotError::Command(why));
                }
            }
            Snapshotter::Command(cmd) => {
                // The user's storage holds it: the record follows its success.
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("FERRY_ROUND", round.to_string())
                    .env("FERRY_ROOT", module_path)
                    .env("FERRY_SNAPSHOT_NAME", &id)
                    .env("FERRY_ROOT_HASH", &rec.root_hash)
                    .status();
                match out {
                    Ok(st) if st.success() => write_record()?,
                    Ok(st) => return Err(SnapshotError::Command(format!("{cmd:?}: {st}"))),
                    Err(e) => return Err(SnapshotError::Command(format!("{cmd:?}: {e}"))),
                }
            }
            Snapshotter::Csi(c) => {
                // Named and recorded before it is created, so a restart finds it; the caller
                // creates it ([`csi::Csi::finish`]) and applies retention.
                let mut rec = rec;
                rec.volume_snapshot = Some(c.pending(&self.module, round));
                write_atomic(&json, &serde_json::to_vec_pretty(&rec).unwrap_or_default())
                    .map_err(io_err(format!("writing {}", json.display())))?;
                return Ok((commit, rec));
            }
        }
        let all = self.list()?;
        let kept = self.retained(keep, &all);
        for old in all.iter().filter(|r| !kept.contains(&r.id)) {
            self.delete(&old.id)?;
        }
        Ok((commit, rec))
    }

    /// The ids of `all` that retention keeps: what `keep`'s rules keep, and every snapshot a
    /// consistency group's generation names ([`crate::state::group`]); all of them when the
    /// groups cannot be read (a generation's member is never dropped by mistake).
    pub(super) fn retained(
        &self,
        keep: &Retention,
        all: &[SnapshotRecord],
    ) -> std::collections::HashSet<String> {
        let mut kept = keep.keep(all);
        match crate::state::group::Groups::at(&self.state).pinned(&self.module) {
            Ok(pinned) => kept.extend(pinned),
            Err(e) => {
                tracing::warn!("retention keeps every snapshot: reading the groups failed: {e}");
                kept.extend(all.iter().map(|r| r.id.clone()));
            }
        }
        kept
    }

    /// Deletes snapshot `id`: a store snapshot's record, then what only it reached; a legacy
    /// snapshot's record, then its tree (so a half-deleted tree is never listed).
    ///
    /// # Errors
    /// I/O errors; an id outside the grammar ([`valid_id`]).
    pub fn delete(&self, id: &str) -> Result<(), SnapshotError> {
        if valid_id(id) && self.store_records()?.iter().any(|r| r.id == id) {
            return self.delete_stored(id);
        }
        self.delete_legacy(id)
    }

    fn delete_legacy(&self, id: &str) -> Result<(), SnapshotError> {
        if !valid_id(id) {
            return Err(SnapshotError::Io {
                what: format!("deleting snapshot {id:?}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a snapshot id"),
            });
        }
        let json = self.dir.join(format!("{id}.json"));
        let kind = self
            .legacy_dir()
            .ok()
            .and_then(|d| read_record(&d, format!("{id}.json").as_bytes()))
            .map(|r| r.kind)
            .unwrap_or_default();
        let _ = std::fs::remove_file(&json);
        if kind == "btrfs" && self.dir.join(id).is_dir() {
            // A read-only subvolume: only btrfs can remove it.
            let out = std::process::Command::new("btrfs")
                .args(["subvolume", "delete"])
                .arg(self.dir.join(id))
                .output();
            return match out {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => {
                    Err(SnapshotError::Command(String::from_utf8_lossy(&o.stderr).trim().into()))
                }
                Err(e) => Err(SnapshotError::Command(format!("running btrfs: {e}"))),
            };
        }
        match std::fs::remove_dir_all(self.dir.join(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(format!("deleting snapshot {id}"))(e))
            }
            _ => Ok(()),
        }
    }
}

/// Largest snapshot record read: records are a few hundred bytes.
const MAX_RECORD: u64 = 1 << 20;

/// The snapshot record `name` in the directory `dir`: opened without following a symlink,
/// only a regular file of at most [`MAX_RECORD`] bytes; `None` for anything else or what does
/// not parse.
fn read_record(dir: &OwnedFd, name: &[u8]) -> Option<SnapshotRecord> {
    use std::io::Read;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty()).ok()?;
    let st = rfs::fstat(&fd).ok()?;
    if !rfs::FileType::from_raw_mode(st.st_mode).is_file() || st.st_size as u64 > MAX_RECORD {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).take(MAX_RECORD).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `secs` since the Unix epoch as UTC: `2026-11-21T01:53:00Z`, or `20261121T015300Z`
/// without `separators` (for names).
pub fn utc(secs: u64, separators: bool) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map(|t| {
            let (mo, d, h, mi, s) =
                (u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second());
            if separators {
                format!("{:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z", t.year())
            } else {
                format!("{:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z", t.year())
            }
        })
        .unwrap_or_else(|_| secs.to_string())
}

/// Whether `id` is a snapshot id as `take` names them: the round (6 or more digits), `-`, and
/// a UTC time `YYYYMMDDTHHMMSSZ`. Nothing else names a snapshot's files, so no id read from
/// the state directory can reach outside it.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    let Some(dash) = id.find('-') else { return false };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let time = &b[dash + 1..];
    (6..=20).contains(&dash)
        && digits(&b[..dash])
        && time.len() == 16
        && digits(&time[..8])
        && time[8] == b'T'
        && digits(&time[9..15])
        && time[15] == b'Z'
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use rustix::fs::{self as rfs, AtFlags, Mode};

    use super::*;

    fn rec(id: &str, time_unix: u64) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            round: 0,
            time_unix,
            entries: 0,
            bytes: 0,
            stats: Stats::default(),
            root_hash: String::new(),
            kind: String::new(),
            volume_snapshot: None,
        }
    }

    #[test]
    fn retention_keeps_the_newest_of_each_hour_and_day() {
        const H: u64 = 3600;
        const D: u64 = 86_400;
        // Oldest first: two days ago (two), yesterday (two in one hour), today (three hours).
        let all = vec![
            rec("a", 10 * D + H),
            rec("b", 10 * D + 5 * H),
            rec("c", 11 * D + 2 * H),
            rec("d", 11 * D + 2 * H + 60),
            rec("e", 12 * D),
            rec("f", 12 * D + H),
            rec("g", 12 * D + 2 * H + 10),
        ];
        let ids = |r: Retention| {
            let mut v: Vec<String> = r.keep(&all).into_iter().collect();
            v.sort();
            v.join("")
        };
        assert_eq!(ids(Retention::default()), "abcdefg", "no rule keeps all");
        assert_eq!(ids(Retention { last: 2, ..Retention::default() }), "fg");
        // Hours, newest first: g, f, e, then d (c shares d's hour and is older).
        assert_eq!(ids(Retention { hourly: 4, ..Retention::default() }), "defg");
        // Days: g (today), d (yesterday), b (the day before).
        assert_eq!(ids(Retention { daily: 3, ..Retention::default() }), "bdg");
        assert_eq!(ids(Retention { last: 1, hourly: 2, daily: 3 }), "bdfg");
        assert_eq!(ids(Retention { daily: 10, ..Retention::default() }), "bdg");
    }

    /// Special files and symlinks in a snapshot keep mode (past the umask), owner and mtime.
    #[test]
    fn special_files_keep_their_metadata() {
        let t = tempfile::tempdir().unwrap();
        let (module, state) = (t.path().join("m"), t.path().join("state"));
        std::fs::create_dir_all(&module).unwrap();
        let dir = rfs::open(&module, rustix::fs::OFlags::DIRECTORY, Mode::empty()).unwrap();
        rfs::mknodat(&dir, "fifo", rustix::fs::FileType::Fifo, Mode::from_bits_truncate(0o666), 0)
            .unwrap();
        rfs::chmodat(&dir, "fifo", Mode::from_bits_truncate(0o666), AtFlags::empty()).unwrap();
        std::os::unix::fs::symlink("fifo", module.join("link")).unwrap();
        if crate::fs::can_chown() {
            std::os::unix::fs::lchown(module.join("fifo"), Some(1234), Some(5678)).unwrap();
            std::os::unix::fs::lchown(module.join("link"), Some(4321), Some(8765)).unwrap();
        }
        let ms = crate::state::ModuleState::new(&state, "m");
        let snaps = ms.open_snapshots(&module, &Snapshotter::HardlinkTree).unwrap();
        let commits = ms.commits();
        let (_, rec) = snaps
            .take(
                &module,
                &Stats::default(),
                &Retention::default(),
                &commits,
                &[],
                Err("a test".into()),
                &Snapshotter::HardlinkTree,
            )
            .unwrap();
        for name in ["fifo", "link"] {
            let a = std::fs::symlink_metadata(module.join(name)).unwrap();
            let b = std::fs::symlink_metadata(snaps.path(&rec.id).join(name)).unwrap();
            assert_eq!((a.mode(), a.uid(), a.gid()), (b.mode(), b.uid(), b.gid()), "{name}");
            assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()), "{name}");
        }
    }

    #[test]
    fn a_record_is_read_only_from_a_regular_file_without_following_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let r = rec("000001-20260101T000000Z", 1);
        let bytes = serde_json::to_vec(&r).unwrap();
        std::fs::write(t.path().join("outside.json"), &bytes).unwrap();
        std::fs::write(t.path().join("plain.json"), &bytes).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside.json"), t.path().join("link.json"))
            .unwrap();
        rfs::mknodat(
            rfs::CWD,
            t.path().join("fifo.json"),
            rfs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let dir = rfs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(read_record(&dir, b"plain.json").map(|r| r.id), Some(r.id));
        assert!(read_record(&dir, b"link.json").is_none(), "followed a symlink");
        // A fifo would block a reader that opened it without O_NONBLOCK.
        assert!(read_record(&dir, b"fifo.json").is_none(), "read a fifo");
    }
}
