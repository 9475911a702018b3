//! Snapshots of a destination after each committed round: a complete point-in-time copy to
//! fail over to.
//!
//! The `hardlink` snapshotter makes a tree of hard links on the same filesystem as the module:
//! directories are recreated (with their metadata), files are linked (metadata cost only),
//! symlinks and special files are recreated. It is safe only because a round never modifies
//! an inode in place (see `target.rs`): the live tree gets new inodes, the snapshot keeps the
//! old ones. A snapshot is built under a temporary name and renamed into place when complete,
//! then described by a JSON record beside it.
//!
//! ```text
//!   STATE/snapshots/MODULE/000001-20261121T015300Z/      the tree
//!   STATE/snapshots/MODULE/000001-20261121T015300Z.json  its record (round, time, stats)
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::{EntryKind, Stats};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::commit::{CommitLog, CommitRecord, ContentKey, HashCache, TreeHasher};
use crate::fs::{apply_meta, apply_meta_at, make_node, write_atomic, Root};
use crate::walk::{WalkOptions, Walker};

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
    /// Root hash of the tree (see [`crate::commit`]); empty in records older than it.
    #[serde(default)]
    pub root_hash: String,
    /// How it was taken (`hardlink`, `reflink`, `btrfs`, `command`); empty means hardlink.
    #[serde(default)]
    pub kind: String,
}

impl SnapshotRecord {
    /// Whether the snapshot is a directory Ferry can read (all kinds but `command`).
    pub fn has_tree(&self) -> bool {
        self.kind != "command"
    }
}

/// How a snapshot is taken (`ferry serve --snapshot KIND`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Snapshotter {
    /// A tree of hard links on the module's filesystem: metadata cost only; safe because a
    /// round never modifies an inode in place.
    #[default]
    Hardlink,
    /// A tree of reflinked copies (`FICLONE`): shares data blocks until either side changes,
    /// on filesystems that support it (btrfs, XFS with reflink, bcachefs...).
    Reflink,
    /// A read-only btrfs subvolume snapshot of the module (which must be a subvolume), with
    /// the `btrfs` tool.
    Btrfs,
    /// A command of the user's (for storage with its own snapshot tool), run with `sh -c` and
    /// `FERRY_ROUND`, `FERRY_ROOT`, `FERRY_SNAPSHOT_NAME`, `FERRY_ROOT_HASH` in its environment.
    Command(String),
}

impl Snapshotter {
    /// Parses `--snapshot KIND` (with `--snapshot-command CMD` for `command`).
    ///
    /// # Errors
    /// An unknown kind, or `command` without a command.
    pub fn parse(kind: &str, command: Option<&str>) -> Result<Snapshotter, String> {
        match (kind, command) {
            ("hardlink", None) => Ok(Snapshotter::Hardlink),
            ("reflink", None) => Ok(Snapshotter::Reflink),
            ("btrfs", None) => Ok(Snapshotter::Btrfs),
            ("command", Some(c)) => Ok(Snapshotter::Command(c.to_string())),
            ("command", None) => Err("--snapshot command needs --snapshot-command CMD".into()),
            (_, Some(_)) => Err("--snapshot-command goes with --snapshot command".into()),
            (k, None) => {
                Err(format!("--snapshot {k:?}: expected hardlink, reflink, btrfs or command"))
            }
        }
    }

    /// The kind's name, as in records.
    pub fn name(&self) -> &'static str {
        match self {
            Snapshotter::Hardlink => "hardlink",
            Snapshotter::Reflink => "reflink",
            Snapshotter::Btrfs => "btrfs",
            Snapshotter::Command(_) => "command",
        }
    }
}

/// How the source takes a point-in-time image of its tree before a round reads it
/// (`ferry push --source-snapshot KIND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSnapshot {
    /// A reflinked copy of the tree (FICLONE) in the image directory.
    Reflink,
    /// A read-only btrfs snapshot of the source (which must be a subvolume).
    Btrfs,
    /// The user's command, run with `FERRY_ROOT`; the last line it prints is the directory
    /// of the image to read.
    Command(String),
}

impl SourceSnapshot {
    /// Parses `--source-snapshot KIND` (with `--source-snapshot-command CMD` for `command`).
    ///
    /// # Errors
    /// An unknown kind, or `command` without a command.
    pub fn parse(kind: &str, command: Option<&str>) -> Result<SourceSnapshot, String> {
        match (kind, command) {
            ("reflink", None) => Ok(SourceSnapshot::Reflink),
            ("btrfs", None) => Ok(SourceSnapshot::Btrfs),
            ("command", Some(c)) => Ok(SourceSnapshot::Command(c.to_string())),
            ("command", None) => {
                Err("--source-snapshot command needs --source-snapshot-command CMD".into())
            }
            (_, Some(_)) => {
                Err("--source-snapshot-command goes with --source-snapshot command".into())
            }
            (k, None) => {
                Err(format!("--source-snapshot {k:?}: expected reflink, btrfs or command"))
            }
        }
    }

    /// Takes the image of `src` (in `dir` for reflink and btrfs); it is removed on drop.
    ///
    /// # Errors
    /// [`SnapshotError`], saying why the image could not be taken.
    pub fn take(&self, src: &Path, dir: &Path) -> Result<SourceImage, SnapshotError> {
        let name = format!(".ferry-source-image-{}", std::process::id());
        let path = dir.join(name);
        let run = |cmd: &mut std::process::Command| -> Result<String, SnapshotError> {
            match cmd.output() {
                Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
                Ok(o) => Err(SnapshotError::Command(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))),
                Err(e) => Err(SnapshotError::Command(format!("{cmd:?}: {e}"))),
            }
        };
        match self {
            SourceSnapshot::Reflink => {
                let _ = std::fs::remove_dir_all(&path);
                let image = SourceImage { path: path.clone(), btrfs: false, owned: true };
                walk_tree(src, Some((&path, true)), None).map_err(|e| {
                    SnapshotError::Unsupported {
                        kind: "reflink",
                        why: format!(
                        "cloning {} into {}: {e} (reflinks need btrfs or XFS with reflink=1, and \
                         --source-image-dir on the source's filesystem)",
                        src.display(),
                        path.display()
                    ),
                    }
                })?;
                Ok(image)
            }
            SourceSnapshot::Btrfs => {
                if path.exists() {
                    let _ = run(std::process::Command::new("btrfs")
                        .args(["subvolume", "delete"])
                        .arg(&path));
                }
                run(std::process::Command::new("btrfs")
                    .args(["subvolume", "snapshot", "-r"])
                    .arg(src)
                    .arg(&path))?;
                Ok(SourceImage { path, btrfs: true, owned: true })
            }
            SourceSnapshot::Command(cmd) => {
                let out = run(std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("FERRY_ROOT", src))?;
                let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                let path = PathBuf::from(last);
                if !path.is_dir() {
                    return Err(SnapshotError::Command(format!(
                        "{cmd:?} must print the image's directory on its last line; it printed {last:?}"
                    )));
                }
                Ok(SourceImage { path, btrfs: false, owned: false })
            }
        }
    }
}

/// A point-in-time image of the source, read instead of the live tree; removed on drop when
/// Ferry made it.
#[derive(Debug)]
pub struct SourceImage {
    /// Where to read.
    pub path: PathBuf,
    btrfs: bool,
    owned: bool,
}

impl Drop for SourceImage {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if self.btrfs {
            let _ = std::process::Command::new("btrfs")
                .args(["subvolume", "delete"])
                .arg(&self.path)
                .output();
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

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
    pub fn keep(&self, records: &[SnapshotRecord]) -> std::collections::HashSet<String> {
        if self.last == 0 && self.hourly == 0 && self.daily == 0 {
            return records.iter().map(|r| r.id.clone()).collect();
        }
        let mut keep: std::collections::HashSet<String> =
            records.iter().rev().take(self.last).map(|r| r.id.clone()).collect();
        for (n, bucket) in [(self.hourly, 3600u64), (self.daily, 86_400)] {
            let mut seen = std::collections::HashSet::new();
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

/// The outcome of [`Snapshots::verify`].
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The snapshot.
    pub id: String,
    /// The hash its record holds.
    pub recorded: String,
    /// The hash of the tree as it is now, every file read.
    pub computed: String,
    /// Entries walked.
    pub entries: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl Verification {
    /// Whether the snapshot is intact.
    pub fn ok(&self) -> bool {
        !self.recorded.is_empty() && self.recorded == self.computed
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
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let what = what.into();
    move |source| SnapshotError::Io { what, source }
}

/// Snapshots of one module under a state directory.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    /// The snapshots of `module` under `state`; checks the state directory can hold hard-link
    /// snapshots of `module_path` (same filesystem), creating it if needed.
    ///
    /// # Errors
    /// [`SnapshotError::CrossDevice`], or I/O errors creating the directory.
    pub fn open(
        state: &Path,
        module: &str,
        module_path: &Path,
        how: &Snapshotter,
    ) -> Result<Snapshots, SnapshotError> {
        let dir = state.join("snapshots").join(module);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        std::fs::create_dir_all(module_path)
            .map_err(io_err(format!("creating {}", module_path.display())))?;
        use std::os::unix::fs::MetadataExt;
        let a = std::fs::metadata(&dir).map_err(io_err(format!("{}", dir.display())))?;
        let b =
            std::fs::metadata(module_path).map_err(io_err(format!("{}", module_path.display())))?;
        // btrfs gives every subvolume its own st_dev and f_fsid, so "same filesystem" can only
        // be judged by type here; a state directory on another filesystem of the same type
        // fails at the first snapshot (FICLONE or btrfs say EXDEV).
        let same_fs = fs_type(&dir).map_err(io_err(format!("{}", dir.display())))?
            == fs_type(module_path).map_err(io_err(format!("{}", module_path.display())))?;
        let unsupported = |why: String| SnapshotError::Unsupported { kind: how.name(), why };
        match how {
            // Hard links cannot cross filesystems, nor btrfs subvolumes (each has its own dev).
            Snapshotter::Hardlink if a.dev() != b.dev() => {
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
                probe_reflink(&dir).map_err(|e| {
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
                let t =
                    fs_type(module_path).map_err(io_err(format!("{}", module_path.display())))?;
                if t != BTRFS_SUPER_MAGIC {
                    return Err(unsupported(format!("{} is not on btrfs", module_path.display())));
                }
                // The root of a btrfs subvolume is always inode 256.
                if b.ino() != 256 {
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
        Ok(Snapshots { dir })
    }

    /// The snapshots of `module` under `state`, for reading (no checks, nothing created).
    pub fn at(state: &Path, module: &str) -> Snapshots {
        Snapshots { dir: state.join("snapshots").join(module) }
    }

    /// Every snapshot's record, oldest first.
    ///
    /// # Errors
    /// I/O errors reading the directory; unreadable records are skipped.
    pub fn list(&self) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.dir)
            .map_err(io_err(format!("reading {}", self.dir.display())))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Ok(r) = std::fs::read(&p)
                    .map_err(|_| ())
                    .and_then(|b| serde_json::from_slice::<SnapshotRecord>(&b).map_err(|_| ()))
                {
                    // A record counts only with its tree (see `take`), unless it has none.
                    if !r.has_tree() || p.with_extension("").is_dir() {
                        out.push(r);
                    }
                }
            }
        }
        out.sort_by(|a: &SnapshotRecord, b| a.round.cmp(&b.round).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The directory holding snapshot `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
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
    pub fn take(
        &self,
        module_path: &Path,
        stats: &Stats,
        keep: &Retention,
        commits: &CommitLog,
        fresh: &[(ContentKey, [u8; 32])],
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
                    let rec: Option<SnapshotRecord> =
                        std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice(&b).ok());
                    if rec.is_none_or(|r| r.has_tree()) && !self.dir.join(id).is_dir() {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let mut cache = commits.load_cache();
        for (k, h) in fresh {
            cache.insert(*k, *h);
        }
        let mut kept = HashCache::default();
        let mut hasher = TreeHasher::default();
        let build = match how {
            Snapshotter::Hardlink => Some((tmp.as_path(), false)),
            Snapshotter::Reflink => Some((tmp.as_path(), true)),
            // Taken after the commit record, by btrfs or the user's command.
            Snapshotter::Btrfs | Snapshotter::Command(_) => None,
        };
        let (entries, bytes) =
            walk_tree(module_path, build, Some((&mut hasher, &cache, &mut kept))).map_err(
                io_err(format!("snapshotting {} into {}", module_path.display(), tmp.display())),
            )?;
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
        };
        let json = self.dir.join(format!("{id}.json"));
        let write_record = || {
            write_atomic(&json, &serde_json::to_vec_pretty(&rec).unwrap_or_default())
                .map_err(io_err(format!("writing {}", json.display())))
        };
        let fin = self.dir.join(&id);
        match how {
            Snapshotter::Hardlink | Snapshotter::Reflink => {
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
        }
        let all = self.list()?;
        let kept = keep.keep(&all);
        for old in all.iter().filter(|r| !kept.contains(&r.id)) {
            self.delete(&old.id)?;
        }
        Ok((commit, rec))
    }

    /// Re-reads every file of snapshot `id` and compares the tree's root hash with the one
    /// recorded when it was taken.
    ///
    /// # Errors
    /// An unknown snapshot, or I/O errors walking it.
    pub fn verify(&self, id: &str) -> Result<Verification, SnapshotError> {
        let rec = self.tree_record(id)?;
        let path = self.path(id);
        read_back(rec, &path).map_err(io_err(format!("reading snapshot {}", path.display())))
    }

    /// The record of snapshot `id`, which must be a tree Ferry can read (not a
    /// `--snapshot-command` one).
    fn tree_record(&self, id: &str) -> Result<SnapshotRecord, SnapshotError> {
        let rec =
            self.list()?.into_iter().find(|r| r.id == id).ok_or_else(|| SnapshotError::Io {
                what: format!("snapshot {id}"),
                source: io::Error::from(io::ErrorKind::NotFound),
            })?;
        if !rec.has_tree() {
            return Err(SnapshotError::Unsupported {
                kind: "command",
                why: format!(
                    "snapshot {id} lives in your storage (taken by --snapshot-command); check it \
                     with that storage's tools against root hash {}",
                    rec.root_hash
                ),
            });
        }
        Ok(rec)
    }

    /// Restores snapshot `id` into `to`, which must not exist yet (it is built beside it and
    /// renamed into place without replacing anything), as a tree of reflinked
    /// copies (own inodes, shared blocks: cheap, and writing there never changes the
    /// snapshot) or, with `hardlinks`, of hard links to the snapshot's inodes (cheap on any
    /// filesystem, but writing there changes the snapshot too). The result is then read back
    /// whole and its root hash compared with the snapshot's record. Returns that check.
    ///
    /// # Errors
    /// [`SnapshotError::Unsupported`] when the filesystem cannot clone (nothing is left
    /// behind: copy instead), I/O errors otherwise.
    pub fn restore_linked(
        &self,
        id: &str,
        to: &Path,
        hardlinks: bool,
    ) -> Result<Verification, SnapshotError> {
        let rec = self.tree_record(id)?;
        let kind = if hardlinks { "hardlink" } else { "reflink" };
        let src = self.path(id);
        // Built under a name of our own beside `to`, checked, then renamed into place without
        // replacing anything: a failure only ever removes what this call made.
        let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let staged = to.with_file_name(format!(".{name}.ferry-restore-{}", std::process::id()));
        if let Err(e) = walk_tree(&src, Some((&staged, !hardlinks)), None) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                let _ = std::fs::remove_dir_all(&staged);
            }
            let how = if hardlinks { "linking" } else { "cloning" };
            let why = format!("{how} into {}: {e}", staged.display());
            return Err(SnapshotError::Unsupported { kind, why });
        }
        let v = match read_back(rec, &staged) {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(io_err(format!("reading back {}", staged.display()))(e));
            }
        };
        if !v.ok() {
            let _ = std::fs::remove_dir_all(&staged);
            return Ok(v);
        }
        let placed =
            rfs::renameat_with(rfs::CWD, &staged, rfs::CWD, to, rfs::RenameFlags::NOREPLACE);
        if let Err(e) = placed {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(io_err(format!("renaming the restored tree to {}", to.display()))(
                e.into(),
            ));
        }
        Ok(v)
    }

    /// Deletes snapshot `id` (record first, so a half-deleted tree is never listed).
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete(&self, id: &str) -> Result<(), SnapshotError> {
        let json = self.dir.join(format!("{id}.json"));
        let kind = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice::<SnapshotRecord>(&b).ok())
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

/// Swaps two directories atomically (`renameat2(RENAME_EXCHANGE)`): each name points at the
/// other's tree afterwards, and at no moment is either name missing.
///
/// # Errors
/// I/O errors (`EXDEV` across filesystems, `EINVAL` where the filesystem cannot exchange).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rfs::renameat_with(rfs::CWD, a, rfs::CWD, b, rfs::RenameFlags::EXCHANGE)
        .map_err(io::Error::from)
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

/// The filesystem type (statfs `f_type`) of `p`.
// `f_type`'s width differs across architectures: the cast is a no-op only on some.
#[allow(clippy::unnecessary_cast)]
fn fs_type(p: &Path) -> io::Result<i64> {
    rfs::statfs(p).map(|v| v.f_type as i64).map_err(io::Error::from)
}

/// Clones a small file into another in `dir` (then removes both): whether FICLONE works there.
fn probe_reflink(dir: &Path) -> io::Result<()> {
    let (a, b) = (dir.join(".ferry-reflink-probe-a"), dir.join(".ferry-reflink-probe-b"));
    let r = (|| {
        std::fs::write(&a, [7u8; 4096])?;
        let src = std::fs::File::open(&a)?;
        let dst = std::fs::File::create(&b)?;
        rfs::ioctl_ficlone(&dst, &src).map_err(io::Error::from)
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    r
}

/// How snapshots are walked: everything, one filesystem, xattrs up to 64 KiB.
fn snapshot_walk() -> WalkOptions {
    WalkOptions {
        specials: true,
        one_file_system: true,
        max_xattr_value: 64 << 10,
        ..WalkOptions::default()
    }
}

/// Reads every file of the tree at `path` (the same walk and hashing as a commit, with an empty
/// cache) and checks its root hash against `rec`'s.
fn read_back(rec: SnapshotRecord, path: &Path) -> io::Result<Verification> {
    let mut hasher = TreeHasher::default();
    let (entries, _) = walk_tree(
        path,
        None,
        Some((&mut hasher, &HashCache::default(), &mut HashCache::default())),
    )?;
    Ok(Verification {
        id: rec.id,
        recorded: rec.root_hash,
        computed: hasher.finish(),
        entries,
        bytes: hasher.hashed_bytes,
    })
}

/// Builds `dest` (which must not exist) as a hard-link image of `src`. Returns (entries,
/// bytes of files). Everything is fd-relative and never follows a symlink.
fn walk_tree(
    src: &Path,
    build: Option<(&Path, bool)>,
    mut hashing: Option<(&mut TreeHasher, &HashCache, &mut HashCache)>,
) -> io::Result<(u64, u64)> {
    let src_root = Arc::new(Root::open(src)?);
    let (dst_root, clone) = match build {
        Some((dest, clone)) => {
            std::fs::create_dir(dest)?;
            (Some(Root::open(dest)?), clone)
        }
        None => (None, false),
    };
    let mut walker = Walker::new(src_root.clone(), snapshot_walk());
    let mut dirs = Vec::new();
    let (mut entries, mut bytes) = (0u64, 0u64);
    loop {
        let (batch, done) = walker.next_batch(1024)?;
        for l in batch {
            if let Some((hasher, cache, kept)) = hashing.as_mut() {
                if l.entry.kind == EntryKind::File {
                    let key = (l.dev, l.ino, l.entry.size, l.entry.meta.mtime_ns);
                    let h = match cache.get(key) {
                        Some(h) => h,
                        None => hasher.read_content(&src_root, &l.entry, key)?,
                    };
                    // Only the tree's files: the next round's cache stays the module's size.
                    kept.insert(key, h);
                    hasher.add(&l.entry, Some(h));
                } else {
                    hasher.add(&l.entry, None);
                }
            }
            let e = l.entry;
            entries += 1;
            let Some(dst_root) = &dst_root else {
                bytes += if e.kind == EntryKind::File { e.size } else { 0 };
                continue;
            };
            let dparent = dst_root.parent_of(&e.path)?;
            let name = e.path.file_name();
            match &e.kind {
                EntryKind::Dir => {
                    rfs::mkdirat(&dparent, name, Mode::from_bits_truncate(0o700))?;
                    dirs.push(e);
                }
                EntryKind::File if clone => {
                    let src = std::fs::File::from(src_root.open_beneath(
                        e.path.as_bytes(),
                        OFlags::RDONLY,
                        Mode::empty(),
                    )?);
                    let dst = std::fs::File::from(rfs::openat(
                        &dparent,
                        name,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )?);
                    rfs::ioctl_ficlone(&dst, &src)?;
                    apply_meta(&dst, &e.meta, &e.xattrs)?;
                    bytes += e.size;
                }
                // Inside a reflink snapshot, the tree's own hard links stay hard links.
                EntryKind::HardLink { to } if clone => {
                    let tparent = dst_root.parent_of(to)?;
                    rfs::linkat(&tparent, to.file_name(), &dparent, name, AtFlags::empty())?;
                }
                EntryKind::File | EntryKind::HardLink { .. } => {
                    let sparent = src_root.parent_of(&e.path)?;
                    rfs::linkat(&sparent, name, &dparent, name, AtFlags::empty())?;
                    bytes += e.size;
                }
                _ => {
                    make_node(&dparent, name, &e)?;
                    apply_meta_at(&dparent, name, &e)?;
                }
            }
        }
        if done {
            break;
        }
    }
    let Some(dst_root) = dst_root else { return Ok((entries, bytes)) };
    // Directory metadata last and deepest first: adding entries changes a directory's mtime.
    for d in dirs.iter().rev() {
        let fd = dst_root.open_dir(Some(&d.path))?;
        apply_meta(&fd, &d.meta, &d.xattrs)?;
    }
    let st = rfs::fstat(src_root.fd())?;
    apply_meta(dst_root.fd(), &crate::fs::meta_of(&st), &[])?;
    rfs::syncfs(dst_root.fd())?;
    Ok((entries, bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

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
        let snaps = Snapshots::open(&state, "m", &module, &Snapshotter::Hardlink).unwrap();
        let commits = CommitLog::at(&state, "m");
        let (_, rec) = snaps
            .take(
                &module,
                &Stats::default(),
                &Retention::default(),
                &commits,
                &[],
                &Snapshotter::Hardlink,
            )
            .unwrap();
        for name in ["fifo", "link"] {
            let a = std::fs::symlink_metadata(module.join(name)).unwrap();
            let b = std::fs::symlink_metadata(snaps.path(&rec.id).join(name)).unwrap();
            assert_eq!((a.mode(), a.uid(), a.gid()), (b.mode(), b.uid(), b.gid()), "{name}");
            assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()), "{name}");
        }
    }
}
