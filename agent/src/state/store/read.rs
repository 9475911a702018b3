//! Reading snapshots: verify, materialize, diff and ls, each walking only what it needs.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use ferry_core::{Entry, Meta, RelPath, Xattr};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::build::hash_fd;
use super::tree::{lossy, Node, TreeEntry, TreeHash};
use super::{errno, io_err, Area, Materialize, Store, StoreError, StoreRecord};
use crate::fs::Root;

/// What [`Store::verify`] checked, all of it sound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// The snapshot.
    pub snapshot: String,
    /// The path verified (`.` for the whole snapshot).
    pub path: String,
    /// Tree objects read and re-hashed.
    pub trees: u64,
    /// Distinct file objects re-hashed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// How a path differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Only in the second.
    Added,
    /// Only in the first.
    Removed,
    /// In both, with other content or of another kind (a file's content, a symlink's
    /// target, a device number, file versus directory).
    Changed,
    /// In both with the same content, but other metadata (mode, owner, mtime, xattrs).
    Metadata,
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffEntry {
    /// The path (`None` for the root directory itself).
    pub path: Option<RelPath>,
    /// How it differs.
    pub change: Change,
}

impl DiffEntry {
    /// The path for display, `.` for the root.
    pub fn display(&self) -> String {
        self.path.as_ref().map_or_else(|| ".".into(), RelPath::display)
    }
}

/// What [`Store::materialize`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaterializeStats {
    /// Entries created.
    pub entries: u64,
    /// Bytes of files created.
    pub bytes: u64,
    /// Entries whose ownership could not be applied (not running as root).
    pub ownership_skipped: u64,
}

/// Where a path of a snapshot leads.
struct At {
    /// The entry (`None` for the root).
    entry: Option<TreeEntry>,
    /// Its tree, for a directory.
    tree: Option<TreeHash>,
}

pub(super) fn child_display(parent: &str, name: &[u8]) -> String {
    if parent == "." {
        lossy(name)
    } else {
        format!("{parent}/{}", lossy(name))
    }
}

fn join(parent: Option<&RelPath>, name: &[u8]) -> Result<RelPath, StoreError> {
    let shown = || child_display(&parent.map_or_else(|| ".".into(), RelPath::display), name);
    match parent {
        Some(p) => p.join(name),
        None => RelPath::from_component(name),
    }
    .map_err(|e| StoreError::Damaged {
        snapshot: String::new(),
        path: shown(),
        what: e.to_string(),
    })
}

fn show(p: Option<&RelPath>) -> String {
    p.map_or_else(|| ".".into(), RelPath::display)
}

/// What a diff compares as "content": files and hard links alike by content hash.
fn class(n: &Node) -> (u8, Option<[u8; 32]>, &[u8], u64) {
    match n {
        Node::File { content } | Node::HardLink { content, .. } => (0, Some(*content), &[], 0),
        Node::Dir { .. } => (1, None, &[], 0),
        Node::Symlink { target } => (2, None, target, 0),
        Node::Fifo => (3, None, &[], 0),
        Node::CharDevice { rdev } => (4, None, &[], *rdev),
        Node::BlockDevice { rdev } => (5, None, &[], *rdev),
    }
}

impl Store {
    fn parse_path(path: Option<&str>) -> Result<Option<RelPath>, StoreError> {
        let p = path.unwrap_or("").trim_matches('/');
        if p.is_empty() || p == "." {
            return Ok(None);
        }
        RelPath::new(p.as_bytes())
            .map(Some)
            .map_err(|_| StoreError::BadName { what: "path", name: p.into() })
    }

    fn locate(&self, rec: &StoreRecord, path: Option<&RelPath>) -> Result<At, StoreError> {
        let mut at = At { entry: None, tree: Some(rec.root()?) };
        let Some(path) = path else { return Ok(at) };
        let mut so_far: Option<RelPath> = None;
        for comp in path.components() {
            let Some(h) = at.tree else {
                return Err(StoreError::NoSuchPath {
                    snapshot: rec.id.clone(),
                    path: path.display(),
                    why: "a component is not a directory",
                });
            };
            let tree = self.load_tree(h, &rec.id, &show(so_far.as_ref()))?;
            let Some(e) = tree.get(comp).cloned() else {
                return Err(StoreError::NoSuchPath {
                    snapshot: rec.id.clone(),
                    path: path.display(),
                    why: "not in the snapshot",
                });
            };
            so_far = Some(join(so_far.as_ref(), comp)?);
            at.tree = match &e.node {
                Node::Dir { tree, .. } => Some(*tree),
                _ => None,
            };
            at.entry = Some(e);
        }
        Ok(at)
    }

    fn damaged(snapshot: &str, path: &str, what: String) -> StoreError {
        StoreError::Damaged { snapshot: snapshot.into(), path: path.into(), what }
    }

    /// Walks snapshot `id` (or its subtree at `path`), re-hashing every tree and every
    /// distinct object, and stops at the first that is missing or not what its name says.
    ///
    /// # Errors
    /// [`StoreError::Damaged`] naming the snapshot, the path and what is wrong;
    /// [`StoreError::NotFound`], [`StoreError::BadRecord`], [`StoreError::NoSuchPath`].
    pub fn verify(&self, id: &str, path: Option<&str>) -> Result<Verification, StoreError> {
        let rec = self.find(id)?;
        let p = Self::parse_path(path)?;
        let at = self.locate(&rec, p.as_ref())?;
        let mut v = Verification {
            snapshot: rec.id.clone(),
            path: show(p.as_ref()),
            ..Verification::default()
        };
        let mut seen = HashSet::new();
        if let (Some(e), None) = (&at.entry, at.tree) {
            self.verify_object(&rec.id, &v.path.clone(), e, &mut seen, &mut v)?;
        }
        let Some(root) = at.tree else { return Ok(v) };
        let mut stack = vec![(v.path.clone(), root)];
        while let Some((path, h)) = stack.pop() {
            let tree = self.load_tree(h, &rec.id, &path)?;
            v.trees += 1;
            let mut subdirs = Vec::new();
            for e in &tree.entries {
                let child = child_display(&path, &e.name);
                match &e.node {
                    Node::Dir { tree, .. } => subdirs.push((child, *tree)),
                    _ => self.verify_object(&rec.id, &child, e, &mut seen, &mut v)?,
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(v)
    }

    fn verify_object(
        &self,
        snapshot: &str,
        path: &str,
        e: &TreeEntry,
        seen: &mut HashSet<[u8; 32]>,
        v: &mut Verification,
    ) -> Result<(), StoreError> {
        let Some(h) = e.node.content() else { return Ok(()) };
        if !seen.insert(h) {
            return Ok(());
        }
        let hex = super::tree::hex(&h);
        let (f, st) = self.open_obj(Area::Objects, &h).map_err(|err| {
            Self::damaged(
                snapshot,
                path,
                if err.kind() == io::ErrorKind::NotFound {
                    format!("object {hex} is missing from the store")
                } else {
                    format!("object {hex}: {err}")
                },
            )
        })?;
        if st.st_size as u64 != e.size {
            return Err(Self::damaged(
                snapshot,
                path,
                format!("object {hex} is {} bytes, the snapshot says {}", st.st_size, e.size),
            ));
        }
        let (got, n) = hash_fd(f.into(), path)
            .map_err(|err| Self::damaged(snapshot, path, err.to_string()))?;
        if got != h {
            return Err(Self::damaged(
                snapshot,
                path,
                format!(
                    "object {hex} holds other content (blake3 {}): damaged, or changed in place",
                    super::tree::hex(&got)
                ),
            ));
        }
        v.files += 1;
        v.bytes += n;
        Ok(())
    }

    /// Recreates snapshot `id` (or its directory at `path`) as `into`, which must not exist:
    /// directories, files, symlinks, special files and hard links with their metadata
    /// (ownership where this process may set it). With [`Materialize::Copy`] each file is a
    /// reflink of its object where the filesystem clones, else a copy; with
    /// [`Materialize::Hardlink`] files are links to the objects (see there).
    ///
    /// # Errors
    /// [`StoreError::NoSuchPath`] when `path` is not a directory of the snapshot; a missing
    /// or truncated object ([`StoreError::Damaged`]); I/O errors. A partly built `into` is
    /// left for the caller to remove.
    pub fn materialize(
        &self,
        id: &str,
        path: Option<&str>,
        into: &Path,
        mode: Materialize,
    ) -> Result<MaterializeStats, StoreError> {
        let rec = self.find(id)?;
        let p = Self::parse_path(path)?;
        let at = self.locate(&rec, p.as_ref())?;
        let Some(top) = at.tree else {
            return Err(StoreError::NoSuchPath {
                snapshot: rec.id.clone(),
                path: show(p.as_ref()),
                why: "not a directory (only directories are materialized)",
            });
        };
        let into_s = into.display().to_string();
        std::fs::create_dir(into).map_err(io_err(into_s.clone()))?;
        let dst = Root::open(into).map_err(io_err(into_s.clone()))?;
        let mut stats = MaterializeStats::default();
        let top_tree = self.load_tree(top, &rec.id, &show(p.as_ref()))?;
        let top_meta = match &at.entry {
            Some(e) => Some((e.meta, e.xattrs.clone())),
            None => top_tree.root.as_ref().map(|r| (r.meta, r.xattrs.clone())),
        };
        // (destination path, snapshot path, tree)
        let mut stack: Vec<(Option<RelPath>, Option<RelPath>, Option<TreeHash>)> =
            vec![(None, p.clone(), None)];
        let mut dirs: Vec<(RelPath, Meta, Vec<Xattr>)> = Vec::new();
        let mut links: Vec<(RelPath, TreeEntry)> = Vec::new();
        let mut first = Some(top_tree);
        while let Some((drel, srel, h)) = stack.pop() {
            let tree = match (first.take(), h) {
                (Some(t), _) => t,
                (None, Some(h)) => self.load_tree(h, &rec.id, &show(srel.as_ref()))?,
                (None, None) => continue,
            };
            let dfd = dst.open_dir(drel.as_ref()).map_err(io_err(into_s.clone()))?;
            let mut subdirs = Vec::new();
            for e in tree.entries {
                let dchild = join(drel.as_ref(), &e.name)?;
                let schild = join(srel.as_ref(), &e.name)?;
                let what = schild.display();
                stats.entries += 1;
                match &e.node {
                    Node::Dir { tree, .. } => {
                        rfs::mkdirat(&dfd, &e.name[..], Mode::from_raw_mode(0o700))
                            .map_err(errno(format!("{into_s}/{}", dchild.display())))?;
                        subdirs.push((dchild.clone(), schild, *tree));
                        dirs.push((dchild, e.meta, e.xattrs.clone()));
                    }
                    Node::File { .. } => {
                        self.put_out(&rec.id, &what, &dfd, &e, mode, &mut stats)?
                    }
                    Node::HardLink { .. } if mode == Materialize::Hardlink => {
                        self.put_out(&rec.id, &what, &dfd, &e, mode, &mut stats)?
                    }
                    Node::HardLink { .. } => links.push((dchild, e)),
                    _ => {
                        let entry = e.to_entry(dchild);
                        let fail = io_err(format!("{into_s}/{}", entry.path.display()));
                        crate::fs::make_node(&dfd, &e.name, &entry).map_err(fail)?;
                        stats.ownership_skipped += crate::fs::apply_meta_at(&dfd, &e.name, &entry)
                            .map_err(io_err(format!("{into_s}/{}", entry.path.display())))?;
                    }
                }
            }
            // Trees are read when their turn comes: the stack holds hashes, not trees.
            stack.extend(subdirs.into_iter().rev().map(|(d, s, h)| (Some(d), Some(s), Some(h))));
        }
        for (dchild, e) in links {
            let Node::HardLink { to, content } = &e.node else { continue };
            let what = format!("{into_s}/{}", dchild.display());
            // Link to `to` while it is inside what is materialized and still a file with
            // this content; otherwise the entry is a file of its own.
            let inside = match &p {
                None => Some(to.clone()),
                Some(base) if to.starts_with(base) && to != base => {
                    RelPath::new(&to.as_bytes()[base.as_bytes().len() + 1..]).ok()
                }
                Some(_) => None,
            };
            let target = match inside {
                Some(rel) => match self.locate(&rec, Some(to)) {
                    Ok(At { entry: Some(t), .. }) if matches!(&t.node, Node::File { content: c } if c == content) => {
                        Some(rel)
                    }
                    _ => None,
                },
                None => None,
            };
            let dparent = dst.parent_of(&dchild).map_err(io_err(what.clone()))?;
            match target {
                Some(rel) => {
                    let tparent = dst.parent_of(&rel).map_err(io_err(what.clone()))?;
                    rfs::linkat(
                        &tparent,
                        rel.file_name(),
                        &dparent,
                        dchild.file_name(),
                        AtFlags::empty(),
                    )
                    .map_err(errno(what))?;
                    stats.bytes += e.size;
                }
                None => {
                    let name = dchild.file_name().to_vec();
                    let spath = show(Some(&dchild));
                    self.put_out(
                        &rec.id,
                        &spath,
                        &dparent,
                        &TreeEntry { name, ..e.clone() },
                        mode,
                        &mut stats,
                    )?;
                }
            }
        }
        // Directory metadata last and deepest first: adding entries changes a directory's
        // mtime.
        for (d, meta, xattrs) in dirs.iter().rev() {
            let what = format!("{into_s}/{}", d.display());
            let fd = dst.open_dir(Some(d)).map_err(io_err(what.clone()))?;
            stats.ownership_skipped +=
                crate::fs::apply_meta(&fd, meta, xattrs).map_err(io_err(what))?;
        }
        if let Some((meta, xattrs)) = top_meta {
            stats.ownership_skipped +=
                crate::fs::apply_meta(dst.fd(), &meta, &xattrs).map_err(io_err(into_s.clone()))?;
        }
        rfs::syncfs(dst.fd()).map_err(errno(into_s))?;
        Ok(stats)
    }

    /// Creates file `e` in `dir` from its object.
    fn put_out(
        &self,
        snapshot: &str,
        path: &str,
        dir: &std::os::fd::OwnedFd,
        e: &TreeEntry,
        mode: Materialize,
        stats: &mut MaterializeStats,
    ) -> Result<(), StoreError> {
        let Some(h) = e.node.content() else { return Ok(()) };
        let hex = super::tree::hex(&h);
        let missing =
            |err: io::Error| Self::damaged(snapshot, path, format!("object {hex}: {err}"));
        let (mut f, st) = self.open_obj(Area::Objects, &h).map_err(missing)?;
        if st.st_size as u64 != e.size {
            return Err(Self::damaged(
                snapshot,
                path,
                format!("object {hex} is {} bytes, the snapshot says {}", st.st_size, e.size),
            ));
        }
        stats.bytes += e.size;
        if mode == Materialize::Hardlink {
            let (sub, _) = Store::obj_name(Area::Objects, &h);
            let fan = rfs::openat(
                &self.objects,
                &sub,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| missing(err.into()))?;
            return rfs::linkat(&fan, &hex, dir, &e.name[..], AtFlags::empty())
                .map_err(errno(path.to_string()));
        }
        let out = rfs::openat(
            dir,
            &e.name[..],
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno(path.to_string()))?;
        let mut out = std::fs::File::from(out);
        if rfs::ioctl_ficlone(&out, &f).is_err() {
            io::copy(&mut f, &mut out).map_err(io_err(path.to_string()))?;
        }
        stats.ownership_skipped +=
            crate::fs::apply_meta(&out, &e.meta, &e.xattrs).map_err(io_err(path.to_string()))?;
        Ok(())
    }

    /// The differences between snapshots `a` and `b`: descends only into subtrees whose
    /// hashes differ, so it takes time in proportion to the difference. Sorted by path (the
    /// root first). Hard links compare as the files they name.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::BadRecord`]; a damaged tree.
    pub fn diff(&self, a: &str, b: &str) -> Result<Vec<DiffEntry>, StoreError> {
        let (ra, rb) = (self.find(a)?, self.find(b)?);
        let mut out = Vec::new();
        let (ha, hb) = (ra.root()?, rb.root()?);
        if ha == hb {
            return Ok(out);
        }
        let mut stack: Vec<(Option<RelPath>, TreeHash, TreeHash)> = vec![(None, ha, hb)];
        while let Some((path, ha, hb)) = stack.pop() {
            let shown = show(path.as_ref());
            let ta = self.load_tree(ha, &ra.id, &shown)?;
            let tb = self.load_tree(hb, &rb.id, &shown)?;
            if path.is_none() && ta.root != tb.root {
                out.push(DiffEntry { path: None, change: Change::Metadata });
            }
            let (mut ia, mut ib) =
                (ta.entries.into_iter().peekable(), tb.entries.into_iter().peekable());
            loop {
                let ord = match (ia.peek(), ib.peek()) {
                    (None, None) => break,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => x.name.cmp(&y.name),
                };
                match ord {
                    std::cmp::Ordering::Less => {
                        let Some(x) = ia.next() else { break };
                        let p = join(path.as_ref(), &x.name)?;
                        self.all_beneath(&ra, p, &x, Change::Removed, &mut out)?;
                    }
                    std::cmp::Ordering::Greater => {
                        let Some(y) = ib.next() else { break };
                        let p = join(path.as_ref(), &y.name)?;
                        self.all_beneath(&rb, p, &y, Change::Added, &mut out)?;
                    }
                    std::cmp::Ordering::Equal => {
                        let (Some(x), Some(y)) = (ia.next(), ib.next()) else { break };
                        if x == y {
                            continue;
                        }
                        let p = join(path.as_ref(), &x.name)?;
                        let same_meta = x.meta == y.meta && x.xattrs == y.xattrs;
                        match (&x.node, &y.node) {
                            (Node::Dir { tree: t1, .. }, Node::Dir { tree: t2, .. }) => {
                                if !same_meta {
                                    out.push(DiffEntry {
                                        path: Some(p.clone()),
                                        change: Change::Metadata,
                                    });
                                }
                                if t1 != t2 {
                                    stack.push((Some(p), *t1, *t2));
                                }
                            }
                            (Node::Dir { tree, .. }, _) => {
                                out.push(DiffEntry {
                                    path: Some(p.clone()),
                                    change: Change::Changed,
                                });
                                self.descendants(&ra, &p, *tree, Change::Removed, &mut out)?;
                            }
                            (_, Node::Dir { tree, .. }) => {
                                out.push(DiffEntry {
                                    path: Some(p.clone()),
                                    change: Change::Changed,
                                });
                                self.descendants(&rb, &p, *tree, Change::Added, &mut out)?;
                            }
                            (n1, n2) => {
                                if class(n1) != class(n2) {
                                    out.push(DiffEntry { path: Some(p), change: Change::Changed });
                                } else if !same_meta || x.size != y.size {
                                    out.push(DiffEntry { path: Some(p), change: Change::Metadata });
                                }
                            }
                        }
                    }
                }
            }
        }
        out.sort_by(|x, y| x.path.cmp(&y.path));
        Ok(out)
    }

    /// `e` at `p`, and everything beneath it when it is a directory, as `change`.
    fn all_beneath(
        &self,
        rec: &StoreRecord,
        p: RelPath,
        e: &TreeEntry,
        change: Change,
        out: &mut Vec<DiffEntry>,
    ) -> Result<(), StoreError> {
        if let Node::Dir { tree, .. } = &e.node {
            self.descendants(rec, &p, *tree, change, out)?;
        }
        out.push(DiffEntry { path: Some(p), change });
        Ok(())
    }

    fn descendants(
        &self,
        rec: &StoreRecord,
        p: &RelPath,
        h: TreeHash,
        change: Change,
        out: &mut Vec<DiffEntry>,
    ) -> Result<(), StoreError> {
        let mut stack = vec![(p.clone(), h)];
        while let Some((p, h)) = stack.pop() {
            for e in self.load_tree(h, &rec.id, &p.display())?.entries {
                let c = join(Some(&p), &e.name)?;
                if let Node::Dir { tree, .. } = &e.node {
                    stack.push((c.clone(), *tree));
                }
                out.push(DiffEntry { path: Some(c), change });
            }
        }
        Ok(())
    }

    /// The entries of directory `path` of snapshot `id` (or the one entry, when `path` is
    /// not a directory), as manifest entries with full paths; files and hard links carry
    /// their content hash.
    ///
    /// # Errors
    /// [`StoreError::NoSuchPath`]; a damaged tree; [`StoreError::NotFound`].
    pub fn ls(&self, id: &str, path: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        let rec = self.find(id)?;
        let p = Self::parse_path(path)?;
        let at = self.locate(&rec, p.as_ref())?;
        match (at.tree, at.entry, p) {
            (Some(h), _, p) => {
                let tree = self.load_tree(h, &rec.id, &show(p.as_ref()))?;
                tree.entries.iter().map(|e| Ok(e.to_entry(join(p.as_ref(), &e.name)?))).collect()
            }
            (None, Some(e), Some(p)) => Ok(vec![e.to_entry(p)]),
            _ => Ok(Vec::new()),
        }
    }
}
