//! Snapshots of directory trees and a strict comparison between two of them.
//!
//! A snapshot is keyed by the raw bytes of each entry's path relative to the
//! root (`b""` is the root itself, so its mode and mtime are compared too),
//! which keeps non-UTF-8 names exact and gives a stable sort order. Nothing
//! is ever followed through a symlink: a sync that copies what a link points
//! at instead of the link must show up as a difference.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// What kind of filesystem object an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// Sockets and device nodes, which Ferry is not expected to copy.
    Other,
}

/// Everything the comparer checks about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The entry's kind, from `lstat`.
    pub kind: Kind,
    /// BLAKE3 of the content; files only.
    pub hash: Option<blake3::Hash>,
    /// Length of a file's content or of a symlink's target; 0 otherwise,
    /// because a directory's size is a filesystem detail.
    pub size: u64,
    /// Permission bits, `st_mode & 0o7777`.
    pub mode: u32,
    /// Modification time in nanoseconds since the epoch, from `lstat`, so a
    /// symlink's own mtime rather than its target's.
    pub mtime_ns: i128,
    /// Owning user.
    pub uid: u32,
    /// Owning group.
    pub gid: u32,
    /// A symlink's target, as raw bytes.
    pub target: Option<Vec<u8>>,
    /// Extended attributes in the `user.` namespace, name to value.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// For a non-directory with more than one link: the smallest relative
    /// path in this tree that shares its inode. Naming the group by a path
    /// rather than by inode number lets two trees' groups be compared.
    pub link_group: Option<Vec<u8>>,
}

/// A whole tree: relative path bytes to [`Node`], root included as `b""`.
pub type Snapshot = BTreeMap<Vec<u8>, Node>;

/// Walks the tree under `root` without following symlinks.
///
/// `root` itself is resolved if it is a symlink, since that is the tree the
/// caller named; nothing below it is.
pub fn snapshot(root: &Path) -> io::Result<Snapshot> {
    let root = fs::canonicalize(root)?;
    let mut out = Snapshot::new();
    let mut inodes = Vec::new();
    let meta = fs::symlink_metadata(&root)?;
    walk(&root, Vec::new(), &meta, &mut out, &mut inodes)?;

    // Paths were visited in sorted order within each directory but not
    // globally, so take the minimum explicitly.
    let mut groups: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for (rel, id) in &inodes {
        groups
            .entry(*id)
            .and_modify(|min| {
                if rel < min {
                    min.clone_from(rel);
                }
            })
            .or_insert_with(|| rel.clone());
    }
    for (rel, id) in inodes {
        if let Some(node) = out.get_mut(&rel) {
            node.link_group = groups.get(&id).cloned();
        }
    }
    Ok(out)
}

fn walk(
    root: &Path,
    rel: Vec<u8>,
    meta: &Metadata,
    out: &mut Snapshot,
    inodes: &mut Vec<(Vec<u8>, (u64, u64))>,
) -> io::Result<()> {
    let path = join(root, &rel);
    let node = read_node(&path, meta)?;
    let kind = node.kind;
    if kind != Kind::Dir && meta.nlink() > 1 {
        inodes.push((rel.clone(), (meta.dev(), meta.ino())));
    }
    out.insert(rel.clone(), node);
    if kind != Kind::Dir {
        return Ok(());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(&path)? {
        names.push(entry?.file_name());
    }
    names.sort();
    for name in names {
        let mut child = rel.clone();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(name.as_bytes());
        let meta = fs::symlink_metadata(path.join(&name))?;
        walk(root, child, &meta, out, inodes)?;
    }
    Ok(())
}

fn read_node(path: &Path, meta: &Metadata) -> io::Result<Node> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Other
    };
    let hash = match kind {
        Kind::File => Some(hash_file(path)?),
        _ => None,
    };
    let target = match kind {
        Kind::Symlink => Some(fs::read_link(path)?.into_os_string().into_vec()),
        _ => None,
    };
    let size = match kind {
        Kind::File | Kind::Symlink => meta.size(),
        _ => 0,
    };
    Ok(Node {
        kind,
        hash,
        size,
        mode: meta.mode() & 0o7777,
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        uid: meta.uid(),
        gid: meta.gid(),
        target,
        xattrs: user_xattrs(path)?,
        link_group: None,
    })
}

fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    // NOFOLLOW: if the entry was swapped for a symlink since the lstat, fail
    // rather than hash whatever the link points at.
    let fd =
        rustix::fs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::from(fd))?;
    Ok(hasher.finalize())
}

/// The `user.` extended attributes of `path` (not followed if a symlink).
///
/// A filesystem without xattr support yields an empty map, so the same
/// tests run on tmpfs, overlayfs and friends.
pub fn user_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match list_xattrs(path) {
        Ok(names) => names,
        Err(e) if e == Errno::NOTSUP => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for name in names.split(|&b| b == 0) {
        if !name.starts_with(b"user.") {
            continue;
        }
        match get_xattr(path, name) {
            Ok(value) => {
                out.insert(name.to_vec(), value);
            }
            // Removed between listing and reading: it is simply not there.
            Err(e) if e == Errno::NODATA => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn list_xattrs(path: &Path) -> rustix::io::Result<Vec<u8>> {
    loop {
        let mut buf = vec![0; rustix::fs::llistxattr_query(path)?];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            // The list grew between sizing and reading; size it again.
            Err(e) if e == Errno::RANGE => continue,
            Err(e) => return Err(e),
        }
    }
}

fn get_xattr(path: &Path, name: &[u8]) -> rustix::io::Result<Vec<u8>> {
    loop {
        let mut buf = vec![0; rustix::fs::lgetxattr_query(path, name)?];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(e) if e == Errno::RANGE => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `root` joined with a relative path given as raw bytes (`b""` is `root`).
pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// Human-readable differences between the trees at `a` and `b`; empty means
/// they are equal in every way the comparer checks.
pub fn diff(a: &Path, b: &Path) -> Vec<String> {
    match (snapshot(a), snapshot(b)) {
        (Ok(sa), Ok(sb)) => diff_snapshots(&sa, &sb),
        (Err(e), _) => vec![format!("cannot snapshot {}: {e}", a.display())],
        (_, Err(e)) => vec![format!("cannot snapshot {}: {e}", b.display())],
    }
}

/// Like [`diff`], on snapshots already taken. Lines name the left side
/// first.
pub fn diff_snapshots(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, na) in a {
        match b.get(rel) {
            None => out.push(format!("{}: only on the left ({:?})", show(rel), na.kind)),
            Some(nb) => diff_node(rel, na, nb, &mut out),
        }
    }
    for (rel, nb) in b {
        if !a.contains_key(rel) {
            out.push(format!("{}: only on the right ({:?})", show(rel), nb.kind));
        }
    }
    out
}

fn diff_node(rel: &[u8], a: &Node, b: &Node, out: &mut Vec<String>) {
    let path = show(rel);
    if a.kind != b.kind {
        // Every other field would differ too; the kind says it all.
        out.push(format!("{path}: kind {:?} != {:?}", a.kind, b.kind));
        return;
    }
    if a.size != b.size {
        out.push(format!("{path}: size {} != {}", a.size, b.size));
    }
    if a.hash != b.hash {
        out.push(format!("{path}: content {} != {}", show_hash(a.hash), show_hash(b.hash)));
    }
    if a.target != b.target {
        out.push(format!(
            "{path}: symlink target {} != {}",
            show_opt(a.target.as_deref()),
            show_opt(b.target.as_deref())
        ));
    }
    if a.mode != b.mode {
        out.push(format!("{path}: mode {:04o} != {:04o}", a.mode, b.mode));
    }
    if a.mtime_ns != b.mtime_ns {
        out.push(format!(
            "{path}: mtime {} != {} ({} ns apart)",
            show_time(a.mtime_ns),
            show_time(b.mtime_ns),
            b.mtime_ns - a.mtime_ns
        ));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        out.push(format!("{path}: owner {}:{} != {}:{}", a.uid, a.gid, b.uid, b.gid));
    }
    if a.link_group != b.link_group {
        out.push(format!(
            "{path}: hard-link group {} != {}",
            show_opt(a.link_group.as_deref()),
            show_opt(b.link_group.as_deref())
        ));
    }
    for name in a.xattrs.keys().chain(b.xattrs.keys().filter(|k| !a.xattrs.contains_key(*k))) {
        let (va, vb) = (a.xattrs.get(name), b.xattrs.get(name));
        if va != vb {
            out.push(format!(
                "{path}: xattr {} {} != {}",
                show(name),
                show_opt(va.map(Vec::as_slice)),
                show_opt(vb.map(Vec::as_slice))
            ));
        }
    }
}

/// Panics, listing the differences, unless the trees at `a` and `b` are the
/// same.
#[track_caller]
pub fn assert_same(a: &Path, b: &Path) {
    let diffs = diff(a, b);
    if !diffs.is_empty() {
        panic!("{}", report(a, b, &diffs));
    }
}

/// Formats a non-empty [`diff`] result for a failure message, capped so a
/// wholesale failure stays readable.
pub fn report(a: &Path, b: &Path, diffs: &[String]) -> String {
    const MAX: usize = 60;
    let mut msg = format!(
        "trees differ in {} way(s)\n  left:  {}\n  right: {}\n",
        diffs.len(),
        a.display(),
        b.display()
    );
    for line in diffs.iter().take(MAX) {
        let _ = writeln!(msg, "  {line}");
    }
    if diffs.len() > MAX {
        let _ = writeln!(msg, "  ... and {} more", diffs.len() - MAX);
    }
    msg
}

/// Bytes actually allocated on disk for `path` (`st_blocks * 512`), to check
/// that holes in sparse files survive a copy.
///
/// # Panics
///
/// If `path` cannot be `lstat`ed; this is a test helper.
#[track_caller]
pub fn allocated_bytes(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(meta) => meta.blocks() * 512,
        Err(e) => panic!("lstat {}: {e}", path.display()),
    }
}

/// A relative path for messages: quoted, with non-UTF-8 bytes escaped.
pub fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        return "\".\"".to_owned();
    }
    match std::str::from_utf8(rel) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("b\"{}\"", rel.escape_ascii()),
    }
}

fn show_opt(v: Option<&[u8]>) -> String {
    v.map_or_else(|| "(none)".to_owned(), show)
}

fn show_hash(h: Option<blake3::Hash>) -> String {
    h.map_or_else(|| "(none)".to_owned(), |h| h.to_hex()[..16].to_owned())
}

fn show_time(ns: i128) -> String {
    format!("{}.{:09}", ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}
