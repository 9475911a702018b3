//! The kinds of snapshot (`ferry serve --snapshot KIND`) and the checks of what a filesystem
//! can do for them.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs as rfs;

/// How a snapshot is taken (`ferry serve --snapshot KIND`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Snapshotter {
    /// The snapshot store, keeping each new file as a hard link to its verified inode (on the
    /// module's filesystem): a round costs what it changed; safe because a round never
    /// modifies an inode in place.
    #[default]
    Hardlink,
    /// The snapshot store, keeping each new file as a reflinked copy (`FICLONE`): shares data
    /// blocks until either side changes, on filesystems that support it (btrfs, XFS with
    /// reflink, bcachefs...).
    Reflink,
    /// The earlier versions' snapshotter: a whole tree of hard links per snapshot, every
    /// directory recreated and every file linked each round. Kept for comparison
    /// (`ferry-bench snapcost`); hidden from `--help`.
    HardlinkTree,
    /// A read-only btrfs subvolume snapshot of the module (which must be a subvolume), with
    /// the `btrfs` tool.
    Btrfs,
    /// A command of the user's (for storage with its own snapshot tool), run with `sh -c` and
    /// `FERRY_ROUND`, `FERRY_ROOT`, `FERRY_SNAPSHOT_NAME`, `FERRY_ROOT_HASH` in its environment.
    Command(String),
    /// A Kubernetes VolumeSnapshot of the PersistentVolumeClaim holding the module, through
    /// the API (`csi.rs`).
    Csi(std::sync::Arc<super::csi::Csi>),
}

impl Snapshotter {
    /// The kind's name, as in records.
    pub fn name(&self) -> &'static str {
        match self {
            Snapshotter::Hardlink => "hardlink",
            Snapshotter::Reflink => "reflink",
            Snapshotter::HardlinkTree => "hardlink",
            Snapshotter::Btrfs => "btrfs",
            Snapshotter::Command(_) => "command",
            Snapshotter::Csi(_) => "csi",
        }
    }
}

/// The filesystem type (statfs `f_type`) of the directory `fd` holds.
// `f_type`'s width differs across architectures: the cast is a no-op only on some.
#[allow(clippy::unnecessary_cast)]
pub(super) fn fs_type(fd: &OwnedFd) -> io::Result<i64> {
    rfs::fstatfs(fd).map(|v| v.f_type as i64).map_err(io::Error::from)
}

/// Clones a small file into another in the directory `dir` (then removes both): whether
/// FICLONE works there. Both are created fd-relative, `O_EXCL | O_NOFOLLOW`, after removing
/// whatever has their names: a symlink planted there is removed, never written through.
pub(super) fn probe_reflink(dir: &OwnedFd) -> io::Result<()> {
    const NAMES: [&str; 2] = [".ferry-reflink-probe-a", ".ferry-reflink-probe-b"];
    let create = |name: &str| -> io::Result<std::fs::File> {
        match rfs::unlinkat(dir, name, rfs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let flags = rfs::OFlags::RDWR
            | rfs::OFlags::CREATE
            | rfs::OFlags::EXCL
            | rfs::OFlags::NOFOLLOW
            | rfs::OFlags::CLOEXEC;
        Ok(std::fs::File::from(rfs::openat(dir, name, flags, rfs::Mode::from_raw_mode(0o600))?))
    };
    let r = (|| {
        let mut src = create(NAMES[0])?;
        std::io::Write::write_all(&mut src, &[7u8; 4096])?;
        let dst = create(NAMES[1])?;
        rfs::ioctl_ficlone(&dst, &src).map_err(io::Error::from)
    })();
    for name in NAMES {
        let _ = rfs::unlinkat(dir, name, rfs::AtFlags::empty());
    }
    r
}
