//! Writing a [`TreeSpec`](super::TreeSpec) to disk, and the xattr and no-follow mtime setters
//! the tests also use on their own.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags, CWD};
use rustix::io::Errno;

use super::spec::{EntryKind, Mtime, TreeEntry, TreeSpec};
use super::XATTR_NAME;
use crate::tree::join;

/// Creates `spec` under the existing, empty directory `root`, and gives the
/// root [`TreeSpec::root_mtime`].
///
/// Ownership is applied only when running as root. Filesystems without
/// user xattrs get none.
pub fn materialize(root: &Path, spec: &TreeSpec) -> io::Result<()> {
    for e in &spec.entries {
        let path = join(root, &e.path);
        match &e.kind {
            EntryKind::Dir => fs::create_dir(&path)?,
            EntryKind::File(content) => content.write_to(&path)?,
            EntryKind::Symlink(target) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)?
            }
            EntryKind::HardLink(to) => fs::hard_link(join(root, to), &path)?,
        }
    }

    // Metadata after all content: creating a child or a hard link touches
    // the parent directory's mtime, and chown can clear mode bits.
    let as_root = rustix::process::geteuid().is_root();
    for e in &spec.entries {
        if matches!(e.kind, EntryKind::HardLink(_)) {
            continue;
        }
        let path = join(root, &e.path);
        if let (Some((uid, gid)), true) = (e.owner, as_root) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        }
        if !matches!(e.kind, EntryKind::Symlink(_)) {
            fs::set_permissions(&path, fs::Permissions::from_mode(e.mode))?;
        }
        if let Some(value) = &e.xattr {
            set_xattr(&path, value)?;
        }
    }

    for e in &spec.entries {
        if !matches!(e.kind, EntryKind::HardLink(_) | EntryKind::Dir) {
            set_mtime(&join(root, &e.path), e.mtime)?;
        }
    }
    // Deepest first, so setting a directory's mtime is never undone by work
    // inside it.
    let mut dirs: Vec<&TreeEntry> =
        spec.entries.iter().filter(|e| e.kind == EntryKind::Dir).collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.iter().filter(|&&b| b == b'/').count()));
    for e in dirs {
        set_mtime(&join(root, &e.path), e.mtime)?;
    }
    set_mtime(root, spec.root_mtime)
}

/// Sets [`XATTR_NAME`] on `path` (not following symlinks); a no-op on
/// filesystems without xattr support.
pub fn set_xattr(path: &Path, value: &[u8]) -> io::Result<()> {
    match rustix::fs::lsetxattr(path, XATTR_NAME, value, XattrFlags::empty()) {
        Err(e) if e == Errno::NOTSUP => Ok(()),
        r => Ok(r?),
    }
}

/// Sets the access and modification times of `path` without following a
/// symlink, so symlinks get their own mtime.
pub fn set_mtime(path: &Path, mtime: Mtime) -> io::Result<()> {
    let ts = Timespec { tv_sec: mtime.sec, tv_nsec: mtime.nsec.into() };
    let times = Timestamps { last_access: ts, last_modification: ts };
    Ok(rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?)
}
