//! Building a snapshot's tree: incrementally from the previous root and a round's changes,
//! or by walking and hashing the live tree.

use crate::fs::content_key;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::fd::OwnedFd;

use ferry_core::{Entry, EntryKind, RelPath, RootMeta};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::change::{ChangeSet, ContentKey};
use super::tree::{lossy, Node, Tree, TreeEntry, TreeHash, MAX_DEPTH};
use super::{errno, io_err, tmp_name, write_new, Area, BuildStats, ObjectLink, Store, StoreError};
use crate::fs::Root;
use crate::state::commit::HashCache;

/// Largest xattr value read from the live tree (as the whole-tree walks do).
const MAX_XATTR_VALUE: usize = 64 << 10;

impl Store {
    /// Builds the tree of `prev_root` with `changes` applied, reading only the trees on the
    /// changed paths and writing objects only for content the store lacks and trees only
    /// for directories on changed paths; new file content is taken from `live` (the
    /// module's root) by `link`. No change returns `prev_root` and writes nothing. Before
    /// it returns, everything the new root reaches is durable. The caller holds
    /// [`Store::lock`].
    ///
    /// # Errors
    /// [`StoreError::BadChange`] for a change whose parent is not a directory of the tree
    /// (or a hard link to something that is not a file); a damaged tree on a changed path;
    /// I/O errors.
    pub fn build_incremental(
        &self,
        prev_root: TreeHash,
        live: &Root,
        changes: &ChangeSet,
        link: ObjectLink,
    ) -> Result<(TreeHash, BuildStats), StoreError> {
        let label = format!("(tree {prev_root})");
        let root_tree = self.load_tree(prev_root, &label, ".")?;
        let mut inc = Incremental { w: Writer::new(self), live, link, label, dirs: HashMap::new() };
        inc.dirs.insert(Vec::new(), DirState::from(root_tree));
        let mut removed: Vec<&RelPath> = changes.removed.iter().collect();
        removed.sort();
        for p in removed {
            inc.remove(p)?;
        }
        let mut upserts: Vec<&(Entry, Option<ContentKey>)> = changes.upserts.iter().collect();
        upserts.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        let mut links = Vec::new();
        for (e, key) in upserts {
            match &e.kind {
                EntryKind::HardLink { to } => links.push((e, to)),
                _ => inc.upsert(e, *key)?,
            }
        }
        for (e, to) in links {
            inc.link(e, to)?;
        }
        if let Some(rm) = &changes.root {
            let root = inc.dirs.get_mut(&Vec::new()).ok_or_else(internal)?;
            if root.root.as_ref() != Some(rm) {
                root.root = Some(rm.clone());
                root.dirty = true;
            }
        }
        inc.finish(prev_root)
    }

    /// Builds the tree of `live` by walking it (everything, one filesystem, no symlink
    /// followed) and hashing every file whose (dev, ino, size, mtime) `cache` does not know.
    /// For the first round, after an upgrade, or when the store is damaged. Before it
    /// returns, everything the new root reaches is durable. The caller holds
    /// [`Store::lock`].
    ///
    /// # Errors
    /// Any entry of the live tree that cannot be read (never a silently smaller tree); I/O
    /// errors.
    pub fn build_full(
        &self,
        live: &Root,
        link: ObjectLink,
        cache: &HashCache,
    ) -> Result<(TreeHash, BuildStats), StoreError> {
        let st = rfs::fstat(live.fd()).map_err(errno(live.path().display().to_string()))?;
        let xattrs = crate::fs::read_xattrs(live.fd(), b".", MAX_XATTR_VALUE)
            .map_err(io_err(live.path().display().to_string()))?;
        let mut full = Full { w: Writer::new(self), live, link, cache, links: HashMap::new() };
        let (tree, (entries, bytes)) = full.dir(None, 0)?;
        let tree = Tree { root: Some(RootMeta { meta: crate::fs::meta_of(&st), xattrs }), ..tree };
        let h = full.w.put_tree(&tree)?;
        full.w.stats.entries = entries;
        full.w.stats.bytes = bytes;
        full.w.finish()?;
        Ok((h, full.w.stats))
    }
}

fn internal() -> StoreError {
    StoreError::BadChange { path: ".".into(), why: "internal inconsistency in the build".into() }
}

/// Splits a path's bytes into its parent's bytes (empty for the root) and its name.
fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&[], p),
    }
}

fn show(p: &[u8]) -> String {
    if p.is_empty() {
        ".".into()
    } else {
        lossy(p)
    }
}

/// Writes objects and trees, and remembers which directories to fsync.
struct Writer<'a> {
    store: &'a Store,
    stats: BuildStats,
    dirty: BTreeSet<(Area, String)>,
}

impl<'a> Writer<'a> {
    fn new(store: &'a Store) -> Self {
        Writer { store, stats: BuildStats::default(), dirty: BTreeSet::new() }
    }

    fn put_tree(&mut self, tree: &Tree) -> Result<TreeHash, StoreError> {
        let (bytes, h) = tree.encode().map_err(|e| StoreError::Io {
            what: self.store.at("trees"),
            source: io::Error::other(e),
        })?;
        if self.store.stat_obj(Area::Trees, &h.0)?.is_some() {
            return Ok(h);
        }
        let (sub, hex) = Store::obj_name(Area::Trees, &h.0);
        let dir = self.store.fan_dir(Area::Trees, &h.0, true)?.ok_or_else(internal)?;
        write_new(&dir, &hex, &bytes, true, &self.store.at(&format!("trees/{sub}/{hex}")))?;
        self.stats.trees_written += 1;
        self.stats.bytes_written += bytes.len() as u64;
        self.dirty.insert((Area::Trees, sub));
        Ok(h)
    }

    /// Stores the content of `name` in `src` (the live file at `path`): trusts `hash` when
    /// its object exists, or when the live inode is `key`; hashes the content otherwise.
    /// Returns the content hash and size.
    fn put_file(
        &mut self,
        src: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        hash: Option<[u8; 32]>,
        key: Option<ContentKey>,
        link: ObjectLink,
    ) -> Result<([u8; 32], u64), StoreError> {
        if let (Some(h), Some((_, _, size, _))) = (hash, key) {
            if self.store.stat_obj(Area::Objects, &h)?.is_some() {
                return Ok((h, size));
            }
        }
        let objects = &self.store.objects;
        let tmp = tmp_name();
        let live_what = || path.display();
        let staged = (|| -> Result<([u8; 32], u64, bool), StoreError> {
            // The live inode's (dev, ino, size, mtime) as staged: the link's own inode, or
            // the source of the copy.
            let live_key = match link {
                ObjectLink::Hardlink => {
                    rfs::linkat(src, name, objects, &tmp, AtFlags::empty())
                        .map_err(errno(format!("linking {} into the store", live_what())))?;
                    None
                }
                ObjectLink::Reflink => Some(copy_in(src, name, objects, &tmp, path)?),
            };
            let f = rfs::openat(
                objects,
                &tmp,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )
            .map_err(errno(format!("{}: not a regular file", live_what())))?;
            let st = rfs::fstat(&f).map_err(errno(live_what()))?;
            if crate::fs::file_type(&st) != FileType::RegularFile {
                return Err(StoreError::BadChange {
                    path: live_what(),
                    why: "not a regular file on the destination".into(),
                });
            }
            let staged_key = live_key.unwrap_or_else(|| content_key(&st));
            if let (Some(h), Some(k)) = (hash, key) {
                if k == staged_key {
                    return Ok((h, st.st_size as u64, false));
                }
            }
            let (h, size) = hash_fd(f, &live_what())?;
            self.stats.hashed_files += 1;
            self.stats.hashed_bytes += size;
            if let Some(want) = hash.filter(|w| *w != h) {
                tracing::warn!(
                    "{}: the live file is not the one the round committed (content {} \
                     instead of {}): stored by its true content",
                    live_what(),
                    super::tree::hex(&h),
                    super::tree::hex(&want)
                );
                self.stats.mismatched += 1;
            }
            Ok((h, size, true))
        })();
        let (h, size, _) = match staged {
            Ok(s) => s,
            Err(e) => {
                let _ = rfs::unlinkat(objects, &tmp, AtFlags::empty());
                return Err(e);
            }
        };
        let (sub, hex) = Store::obj_name(Area::Objects, &h);
        let placed = (|| {
            if self.store.stat_obj(Area::Objects, &h)?.is_some() {
                return Ok(false);
            }
            let dir = self.store.fan_dir(Area::Objects, &h, true)?.ok_or_else(internal)?;
            rfs::renameat(objects, &tmp, &dir, &hex)
                .map_err(errno(self.store.at(&format!("objects/{sub}/{hex}"))))?;
            Ok(true)
        })();
        match placed {
            Ok(true) => {
                self.stats.objects_written += 1;
                if link == ObjectLink::Reflink {
                    self.stats.bytes_written += size;
                }
                self.dirty.insert((Area::Objects, sub));
            }
            Ok(false) => {
                let _ = rfs::unlinkat(objects, &tmp, AtFlags::empty());
            }
            Err(e) => {
                let _ = rfs::unlinkat(objects, &tmp, AtFlags::empty());
                return Err(e);
            }
        }
        Ok((h, size))
    }

    /// Makes everything written durable: the fan-out directories that gained names, then
    /// the top directories (new fan-out directories, temp names).
    fn finish(&mut self) -> Result<(), StoreError> {
        let mut tops = BTreeSet::new();
        for (area, sub) in std::mem::take(&mut self.dirty) {
            let what = self.store.at(&format!("{}/{sub}", area.name()));
            let dir = rfs::openat(
                self.store.area(area),
                &sub,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno(what.clone()))?;
            rfs::fsync(&dir).map_err(errno(what))?;
            tops.insert(area);
        }
        for area in tops {
            rfs::fsync(self.store.area(area)).map_err(errno(self.store.at(area.name())))?;
        }
        Ok(())
    }
}

/// (dev, ino, size, mtime ns) of a stat.
/// Clones (or, where the filesystem cannot, copies) `name` in `src` to a new `tmp` in
/// `objects`, fsynced; returns the source's key, refused when it changed meanwhile.
fn copy_in(
    src: &OwnedFd,
    name: &[u8],
    objects: &OwnedFd,
    tmp: &str,
    path: &RelPath,
) -> Result<ContentKey, StoreError> {
    let what = path.display();
    let from = rfs::openat(
        src,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(errno(what.clone()))?;
    let before = rfs::fstat(&from).map_err(errno(what.clone()))?;
    if crate::fs::file_type(&before) != FileType::RegularFile {
        return Err(StoreError::BadChange {
            path: what,
            why: "not a regular file on the destination".into(),
        });
    }
    let to = rfs::openat(
        objects,
        tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno(format!("{what}: copying into the store")))?;
    let mut from = std::fs::File::from(from);
    let mut to = std::fs::File::from(to);
    if rfs::ioctl_ficlone(&to, &from).is_err() {
        io::copy(&mut from, &mut to).map_err(io_err(format!("{what}: copying into the store")))?;
    }
    to.sync_all().map_err(io_err(format!("{what}: copying into the store")))?;
    let after = rfs::fstat(&from).map_err(errno(what.clone()))?;
    if content_key(&before) != content_key(&after) {
        return Err(StoreError::Io {
            what,
            source: io::Error::other("changed while it was copied into the store"),
        });
    }
    Ok(content_key(&before))
}

/// blake3 and length of an open file's content, refused when it changes while read.
pub(super) fn hash_fd(f: OwnedFd, what: &str) -> Result<([u8; 32], u64), StoreError> {
    crate::fs::hash_unchanged(f)
        .map(|(h, n, _)| (h, n))
        .map_err(|e| StoreError::Io { what: what.into(), source: e })
}

/// A directory of the tree being built incrementally.
#[derive(Debug, Default)]
struct DirState {
    root: Option<RootMeta>,
    entries: BTreeMap<Vec<u8>, TreeEntry>,
    dirty: bool,
}

impl From<Tree> for DirState {
    fn from(t: Tree) -> Self {
        DirState {
            root: t.root,
            entries: t.entries.into_iter().map(|e| (e.name.clone(), e)).collect(),
            dirty: false,
        }
    }
}

struct Incremental<'a> {
    w: Writer<'a>,
    live: &'a Root,
    link: ObjectLink,
    label: String,
    /// The directories loaded (on changed paths), by path; the root's is empty.
    dirs: HashMap<Vec<u8>, DirState>,
}

impl Incremental<'_> {
    /// Loads the directory at `p` and those above it; `false` when a component is missing
    /// or not a directory.
    fn load(&mut self, p: &[u8]) -> Result<bool, StoreError> {
        if self.dirs.contains_key(p) {
            return Ok(true);
        }
        let ends = p.iter().enumerate().filter(|(_, &b)| b == b'/').map(|(i, _)| i);
        for (depth, end) in ends.chain(std::iter::once(p.len())).enumerate() {
            if depth > MAX_DEPTH {
                return Err(StoreError::BadChange { path: show(p), why: "too deep".into() });
            }
            let prefix = &p[..end];
            if !self.dirs.contains_key(prefix) {
                let (parent, name) = split(prefix);
                let Some(pd) = self.dirs.get(parent) else { return Err(internal()) };
                let Some(TreeEntry { node: Node::Dir { tree, .. }, .. }) = pd.entries.get(name)
                else {
                    return Ok(false);
                };
                let t = self.w.store.load_tree(*tree, &self.label, &show(prefix))?;
                self.dirs.insert(prefix.to_vec(), DirState::from(t));
            }
        }
        Ok(true)
    }

    fn mark_dirty(&mut self, dir: &[u8]) {
        if let Some(d) = self.dirs.get_mut(&Vec::new()) {
            d.dirty = true;
        }
        for (i, &b) in dir.iter().enumerate() {
            if b == b'/' {
                if let Some(d) = self.dirs.get_mut(&dir[..i]) {
                    d.dirty = true;
                }
            }
        }
        if let Some(d) = self.dirs.get_mut(dir) {
            d.dirty = true;
        }
    }

    fn drop_subtree(&mut self, p: &[u8]) {
        self.dirs.retain(|k, _| {
            !(k.as_slice() == p || (k.starts_with(p) && k.get(p.len()) == Some(&b'/')))
        });
    }

    fn remove(&mut self, p: &RelPath) -> Result<(), StoreError> {
        let (parent, name) = split(p.as_bytes());
        if !self.load(parent)? {
            return Ok(());
        }
        let Some(d) = self.dirs.get_mut(parent) else { return Err(internal()) };
        if let Some(old) = d.entries.remove(name) {
            if matches!(old.node, Node::Dir { .. }) {
                self.drop_subtree(p.as_bytes());
            }
            self.mark_dirty(parent);
        }
        Ok(())
    }

    fn parent_loaded(&mut self, p: &RelPath) -> Result<(), StoreError> {
        let (parent, _) = split(p.as_bytes());
        if self.load(parent)? {
            Ok(())
        } else {
            Err(StoreError::BadChange {
                path: p.display(),
                why: "its parent is not a directory of the tree".into(),
            })
        }
    }

    fn upsert(&mut self, e: &Entry, key: Option<ContentKey>) -> Result<(), StoreError> {
        self.parent_loaded(&e.path)?;
        let (parent, name) = split(e.path.as_bytes());
        let old = self.dirs.get(parent).and_then(|d| d.entries.get(name)).cloned();
        let mut size = e.size;
        let node = match &e.kind {
            EntryKind::Dir => match old.as_ref().map(|o| &o.node) {
                Some(n @ Node::Dir { .. }) => n.clone(),
                _ => {
                    self.drop_subtree(e.path.as_bytes());
                    self.dirs.insert(
                        e.path.as_bytes().to_vec(),
                        DirState { dirty: true, ..DirState::default() },
                    );
                    Node::Dir { tree: TreeHash([0; 32]), entries: 0, bytes: 0 }
                }
            },
            EntryKind::File => {
                let dir = self.live.parent_of(&e.path).map_err(io_err(e.path.display()))?;
                let (h, s) =
                    self.w.put_file(&dir, e.path.file_name(), &e.path, e.hash, key, self.link)?;
                size = s;
                Node::File { content: h }
            }
            EntryKind::Symlink { target } => Node::Symlink { target: target.clone() },
            EntryKind::Fifo => Node::Fifo,
            EntryKind::CharDevice { rdev } => Node::CharDevice { rdev: *rdev },
            EntryKind::BlockDevice { rdev } => Node::BlockDevice { rdev: *rdev },
            EntryKind::HardLink { .. } => return Err(internal()),
        };
        self.put(e, node, size, old)
    }

    fn link(&mut self, e: &Entry, to: &RelPath) -> Result<(), StoreError> {
        self.parent_loaded(&e.path)?;
        let (tp, tn) = split(to.as_bytes());
        // The manifest's hard-link entries carry no size: the target's is the link's.
        let target = if self.load(tp)? {
            self.dirs
                .get(tp)
                .and_then(|d| d.entries.get(tn))
                .and_then(|t| t.node.content().map(|c| (c, t.size)))
        } else {
            None
        };
        let Some((content, size)) = target else {
            return Err(StoreError::BadChange {
                path: e.path.display(),
                why: format!("a hard link to {}, which is not a file of the tree", to.display()),
            });
        };
        let (parent, name) = split(e.path.as_bytes());
        let old = self.dirs.get(parent).and_then(|d| d.entries.get(name)).cloned();
        self.put(e, Node::HardLink { to: to.clone(), content }, size, old)
    }

    fn put(
        &mut self,
        e: &Entry,
        node: Node,
        size: u64,
        old: Option<TreeEntry>,
    ) -> Result<(), StoreError> {
        let is_dir = matches!(node, Node::Dir { .. });
        let mut new = TreeEntry::from_entry(e, node);
        new.size = if new.node.content().is_some() { size } else { 0 };
        if let Some(o) = &old {
            if matches!(o.node, Node::Dir { .. }) && !is_dir {
                self.drop_subtree(e.path.as_bytes());
            }
        }
        if old.as_ref() != Some(&new) {
            let (parent, name) = split(e.path.as_bytes());
            let d = self.dirs.get_mut(parent).ok_or_else(internal)?;
            d.entries.insert(name.to_vec(), new);
            self.mark_dirty(parent);
        }
        Ok(())
    }

    fn finish(mut self, prev: TreeHash) -> Result<(TreeHash, BuildStats), StoreError> {
        let mut dirty: Vec<Vec<u8>> =
            self.dirs.iter().filter(|(_, d)| d.dirty).map(|(k, _)| k.clone()).collect();
        let depth =
            |k: &[u8]| if k.is_empty() { 0 } else { 1 + k.iter().filter(|&&b| b == b'/').count() };
        dirty.sort_by_key(|k| std::cmp::Reverse(depth(k)));
        let mut root = None;
        for k in dirty {
            let d = self.dirs.remove(&k).ok_or_else(internal)?;
            let tree = Tree { root: d.root, entries: d.entries.into_values().collect() };
            let (entries, bytes) = totals(&tree);
            let h = self.w.put_tree(&tree)?;
            if k.is_empty() {
                root = Some((h, entries, bytes));
                continue;
            }
            let (parent, name) = split(&k);
            let pd = self.dirs.get_mut(parent).ok_or_else(internal)?;
            match pd.entries.get_mut(name) {
                Some(TreeEntry { node: n @ Node::Dir { .. }, .. }) => {
                    *n = Node::Dir { tree: h, entries, bytes }
                }
                _ => return Err(internal()),
            }
        }
        let (h, entries, bytes) = match root {
            Some(r) => r,
            None => {
                let d = self.dirs.get(&Vec::new()).ok_or_else(internal)?;
                let (entries, bytes) = d
                    .entries
                    .values()
                    .map(TreeEntry::totals)
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                (prev, entries, bytes)
            }
        };
        self.w.stats.entries = entries;
        self.w.stats.bytes = bytes;
        self.w.finish()?;
        Ok((h, self.w.stats))
    }
}

/// (entries, bytes) beneath a tree.
fn totals(t: &Tree) -> (u64, u64) {
    t.entries
        .iter()
        .map(TreeEntry::totals)
        .fold((0u64, 0u64), |a, b| (a.0.saturating_add(b.0), a.1.saturating_add(b.1)))
}

struct Full<'a> {
    w: Writer<'a>,
    live: &'a Root,
    link: ObjectLink,
    cache: &'a HashCache,
    /// Content of multiply-linked files seen, by (dev, ino): later names become hard links.
    links: HashMap<(u64, u64), (RelPath, [u8; 32])>,
}

impl Full<'_> {
    /// The tree of directory `p` (the root for `None`), its subdirectories first written.
    /// Holds one directory fd at a time, so any depth needs a bounded number of fds.
    fn dir(&mut self, p: Option<&RelPath>, depth: usize) -> Result<(Tree, (u64, u64)), StoreError> {
        let shown = p.map_or_else(|| ".".to_string(), RelPath::display);
        if depth > MAX_DEPTH {
            return Err(StoreError::Io { what: shown, source: io::Error::other("too deep") });
        }
        let fd = self.live.open_dir(p).map_err(io_err(shown.clone()))?;
        let names = crate::fs::list_dir(&fd).map_err(io_err(shown.clone()))?;
        let mut entries = Vec::with_capacity(names.len());
        let mut subdirs = Vec::new();
        for name in names {
            if name.starts_with(crate::fs::walk::TEMP_PREFIX) {
                continue;
            }
            let path = match p {
                Some(p) => p.join(&name),
                None => RelPath::from_component(&name),
            }
            .map_err(|e| StoreError::Io {
                what: format!("{shown}/{}", lossy(&name)),
                source: io::Error::other(e),
            })?;
            let what = path.display();
            let st = rfs::statat(&fd, &name[..], AtFlags::SYMLINK_NOFOLLOW)
                .map_err(errno(what.clone()))?;
            let ft = crate::fs::file_type(&st);
            if st.st_dev != self.live.dev() && ft == FileType::Directory {
                // One filesystem, as the whole-tree walks.
                continue;
            }
            // As the walk: a symlink's xattrs are not carried.
            let xattrs = if ft == FileType::Symlink {
                Vec::new()
            } else {
                crate::fs::read_xattrs(&fd, &name, MAX_XATTR_VALUE).map_err(io_err(what.clone()))?
            };
            let meta = crate::fs::meta_of(&st);
            let node = match ft {
                FileType::Directory => {
                    subdirs.push(entries.len());
                    Node::Dir { tree: TreeHash([0; 32]), entries: 0, bytes: 0 }
                }
                FileType::RegularFile => {
                    let id = (st.st_dev, st.st_ino);
                    match self.links.get(&id) {
                        Some((to, content)) => Node::HardLink { to: to.clone(), content: *content },
                        None => {
                            let key = content_key(&st);
                            let (h, _) = self.w.put_file(
                                &fd,
                                &name,
                                &path,
                                self.cache.get(key),
                                Some(key),
                                self.link,
                            )?;
                            if st.st_nlink > 1 {
                                self.links.insert(id, (path.clone(), h));
                            }
                            Node::File { content: h }
                        }
                    }
                }
                FileType::Symlink => Node::Symlink {
                    target: rfs::readlinkat(&fd, &name[..], Vec::new())
                        .map_err(errno(what.clone()))?
                        .into_bytes(),
                },
                FileType::Fifo => Node::Fifo,
                FileType::CharacterDevice => Node::CharDevice { rdev: st.st_rdev },
                FileType::BlockDevice => Node::BlockDevice { rdev: st.st_rdev },
                _ => continue,
            };
            let size = if node.content().is_some() { st.st_size as u64 } else { 0 };
            entries.push((path, TreeEntry { name, node, size, meta, xattrs }));
        }
        drop(fd);
        for i in subdirs {
            let path = entries[i].0.clone();
            let (t, (n, b)) = self.dir(Some(&path), depth + 1)?;
            let h = self.w.put_tree(&t)?;
            entries[i].1.node = Node::Dir { tree: h, entries: n, bytes: b };
        }
        let tree = Tree { root: None, entries: entries.into_iter().map(|(_, e)| e).collect() };
        let t = totals(&tree);
        Ok((tree, t))
    }
}
