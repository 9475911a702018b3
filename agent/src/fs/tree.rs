//! Whole-tree walks for the state directory's needs: copy a tree as hard links or reflinks
//! (snapshots, restores, source images) and visit every entry (root hashes), fd-relative and
//! never following a symlink.

use std::io;
use std::path::Path;
use std::sync::Arc;

use ferry_core::{EntryKind, LocalEntry};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::fs::walk::{WalkOptions, Walker};
use crate::fs::{apply_meta, apply_meta_at, make_node, meta_of, Root};

/// Called with each entry of a walked tree (and the root it is beneath).
pub type Visit<'a> = dyn FnMut(&Root, &LocalEntry) -> io::Result<()> + 'a;

/// How whole trees are walked: everything, one filesystem, xattrs up to 64 KiB.
fn tree_walk() -> WalkOptions {
    WalkOptions {
        specials: true,
        one_file_system: true,
        max_xattr_value: 64 << 10,
        ..WalkOptions::default()
    }
}

/// Walks the tree at `src` in manifest order, everything included (one filesystem), calling
/// `visit` on each entry, and with `build = Some((dest, clone))` builds `dest` (which must not
/// exist) as an image of it: files hard-linked, or reflinked when `clone` (the tree's own hard
/// links stay hard links), directories, symlinks and special files recreated with their
/// metadata. Returns (entries, bytes of files). Everything is fd-relative and never follows a
/// symlink.
///
/// # Errors
/// The first I/O error, or any entry the walk could not read (never a silently shorter
/// tree); a partly built `dest` is left for the caller to remove.
pub fn walk_tree(
    src: &Path,
    build: Option<(&Path, bool)>,
    visit: Option<&mut Visit<'_>>,
) -> io::Result<(u64, u64)> {
    walk_tree_from(Root::open(src)?, build, visit)
}

/// [`walk_tree`] from an open root: one opened without following its own name
/// ([`Root::open_with`]) walks nothing a symlink planted in its place leads to.
///
/// # Errors
/// As [`walk_tree`].
pub fn walk_tree_from(
    src_root: Root,
    build: Option<(&Path, bool)>,
    mut visit: Option<&mut Visit<'_>>,
) -> io::Result<(u64, u64)> {
    let src_root = Arc::new(src_root);
    let (dst_root, clone) = match build {
        Some((dest, clone)) => {
            std::fs::create_dir(dest)?;
            (Some(Root::open(dest)?), clone)
        }
        None => (None, false),
    };
    let mut walker = Walker::new(src_root.clone(), tree_walk());
    let mut dirs = Vec::new();
    let (mut entries, mut bytes) = (0u64, 0u64);
    loop {
        let (batch, done) = walker.next_batch(1024)?;
        for l in batch {
            if let Some(visit) = visit.as_mut() {
                visit(&src_root, &l)?;
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
    if walker.errors > 0 {
        // A whole-tree walk (snapshot, verify, restore) that skipped anything would name a
        // tree that is not the one on disk: fail instead.
        return Err(io::Error::other(format!(
            "{} entries of {} could not be read: {}",
            walker.errors,
            src_root.path().display(),
            walker.skipped.first().map_or("", String::as_str)
        )));
    }
    let Some(dst_root) = dst_root else { return Ok((entries, bytes)) };
    // Directory metadata last and deepest first: adding entries changes a directory's mtime.
    for d in dirs.iter().rev() {
        let fd = dst_root.open_dir(Some(&d.path))?;
        apply_meta(&fd, &d.meta, &d.xattrs)?;
    }
    let st = rfs::fstat(src_root.fd())?;
    apply_meta(dst_root.fd(), &meta_of(&st), &[])?;
    rfs::syncfs(dst_root.fd())?;
    Ok((entries, bytes))
}
