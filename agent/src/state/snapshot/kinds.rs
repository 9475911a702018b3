//! The kinds of snapshot (`ferry serve --snapshot KIND`) and the checks of what a filesystem
//! can do for them.

use std::io;
use std::path::Path;

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

/// The filesystem type (statfs `f_type`) of `p`.
// `f_type`'s width differs across architectures: the cast is a no-op only on some.
#[allow(clippy::unnecessary_cast)]
pub(super) fn fs_type(p: &Path) -> io::Result<i64> {
    rfs::statfs(p).map(|v| v.f_type as i64).map_err(io::Error::from)
}

/// Clones a small file into another in `dir` (then removes both): whether FICLONE works there.
pub(super) fn probe_reflink(dir: &Path) -> io::Result<()> {
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
