//! Unit and property tests of the store, on real temp directories: a live tree changed the
//! way Ferry changes it (new inodes renamed into place), each round's changeset derived from
//! the walk before and after, every snapshot materialized and compared with the live tree as
//! it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::{EntryKind, LocalEntry, RelPath, RootMeta, Xattr};
use proptest::prelude::*;
use rustix::fs::{self as rfs, Mode, OFlags};

use super::*;
use crate::fs::walk::{WalkOptions, Walker};
use crate::fs::Root;
use crate::state::commit::HashCache;

/// One node of a tree as a user would compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    size: u64,
    /// File content or symlink target.
    data: Vec<u8>,
    xattrs: Vec<Xattr>,
}

/// A tree as a map of path (`.` for the root) to item, and its hard-link groups.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    items: BTreeMap<Vec<u8>, Item>,
    links: BTreeSet<Vec<Vec<u8>>>,
}

fn model(dir: &Path) -> Model {
    let mut items = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    fn item(parent: &Path, name: &[u8], md: &std::fs::Metadata) -> Item {
        let ft = md.file_type();
        let path = parent.join(OsStr::from_bytes(name));
        let (kind, data) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_file() {
            ("file", std::fs::read(&path).unwrap())
        } else if ft.is_symlink() {
            ("symlink", std::fs::read_link(&path).unwrap().into_os_string().into_vec())
        } else {
            ("special", Vec::new())
        };
        let pfd = rfs::open(parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let xattrs = crate::fs::read_xattrs(&pfd, name, 1 << 16).unwrap();
        Item {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            size: if ft.is_file() { md.len() } else { 0 },
            data,
            xattrs,
        }
    }
    use std::os::unix::ffi::OsStringExt;
    let md = std::fs::symlink_metadata(dir).unwrap();
    let mut root = item(dir, b".", &md);
    root.xattrs = crate::fs::read_xattrs(
        &rfs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap(),
        b".",
        1 << 16,
    )
    .unwrap();
    items.insert(b".".to_vec(), root);
    let mut stack = vec![(dir.to_path_buf(), Vec::<u8>::new())];
    while let Some((abs, rel)) = stack.pop() {
        for ent in std::fs::read_dir(&abs).unwrap() {
            let ent = ent.unwrap();
            let name = ent.file_name().into_vec();
            let md = ent.metadata().unwrap();
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(&name);
            if md.is_dir() {
                stack.push((abs.join(OsStr::from_bytes(&name)), r.clone()));
            }
            if md.is_file() && md.nlink() > 1 {
                inodes.entry((md.dev(), md.ino())).or_default().push(r.clone());
            }
            items.insert(r, item(&abs, &name, &md));
        }
    }
    let links = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Model { items, links }
}

/// The diff of two models, as the store's diff should report it.
fn model_diff(a: &Model, b: &Model) -> Vec<(String, Change)> {
    let mut out = Vec::new();
    let show =
        |p: &[u8]| if p == b"." { ".".to_string() } else { RelPath::new(p).unwrap().display() };
    for (p, x) in &a.items {
        match b.items.get(p) {
            None => out.push((show(p), Change::Removed)),
            Some(y) if x.kind != y.kind || x.data != y.data => out.push((show(p), Change::Changed)),
            Some(y) if x != y => out.push((show(p), Change::Metadata)),
            Some(_) => {}
        }
    }
    for p in b.items.keys() {
        if !a.items.contains_key(p) {
            out.push((show(p), Change::Added));
        }
    }
    out.sort();
    out
}

/// The live tree's manifest as a destination's walk sees it, files with their blake3 (as
/// verified by a round), and its root's metadata.
fn manifest(live: &Path) -> (Vec<LocalEntry>, RootMeta) {
    let root = Arc::new(Root::open(live).unwrap());
    let opts = WalkOptions {
        specials: true,
        one_file_system: true,
        max_xattr_value: 64 << 10,
        ..WalkOptions::default()
    };
    let mut w = Walker::new(root.clone(), opts);
    let mut out = Vec::new();
    loop {
        let (batch, done) = w.next_batch(1024).unwrap();
        out.extend(batch);
        if done {
            break;
        }
    }
    assert_eq!(w.errors, 0, "{:?}", w.skipped);
    for l in &mut out {
        if l.entry.kind == EntryKind::File {
            let bytes =
                std::fs::read(live.join(OsStr::from_bytes(l.entry.path.as_bytes()))).unwrap();
            l.entry.hash = Some(*blake3::hash(&bytes).as_bytes());
        }
    }
    let st = rfs::fstat(root.fd()).unwrap();
    let xattrs = crate::fs::read_xattrs(root.fd(), b".", 64 << 10).unwrap();
    (out, RootMeta { meta: crate::fs::meta_of(&st), xattrs })
}

/// What changed between two manifests, as a round would report it.
fn changes(before: &(Vec<LocalEntry>, RootMeta), after: &(Vec<LocalEntry>, RootMeta)) -> ChangeSet {
    let old: HashMap<&RelPath, &LocalEntry> = before.0.iter().map(|l| (&l.entry.path, l)).collect();
    let new: HashMap<&RelPath, &LocalEntry> = after.0.iter().map(|l| (&l.entry.path, l)).collect();
    let mut c = ChangeSet::default();
    for l in &after.0 {
        if old.get(&l.entry.path).map(|o| &o.entry) != Some(&l.entry) {
            let key = (l.entry.kind == EntryKind::File).then_some((
                l.dev,
                l.ino,
                l.entry.size,
                l.entry.meta.mtime_ns,
            ));
            c.upserts.push((l.entry.clone(), key));
        }
    }
    for l in &before.0 {
        if !new.contains_key(&l.entry.path) {
            c.removed.push(l.entry.path.clone());
        }
    }
    if before.1 != after.1 {
        c.root = Some(after.1.clone());
    }
    c
}

struct Fixture {
    t: tempfile::TempDir,
    live: PathBuf,
    store: Store,
}

impl Fixture {
    fn new() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        std::fs::create_dir(&live).unwrap();
        let store = Store::open(&t.path().join("state"), "m").unwrap();
        Fixture { t, live, store }
    }

    fn state(&self) -> PathBuf {
        self.t.path().join("state/store/m")
    }

    fn root(&self) -> Root {
        Root::open(&self.live).unwrap()
    }

    fn record(&self, id: &str, round: u64, root: TreeHash, s: &BuildStats) {
        self.store
            .record(&StoreRecord {
                id: id.into(),
                round,
                time_unix: 1,
                root_hash: root.to_hex(),
                entries: s.entries,
                bytes: s.bytes,
                stats: Stats::default(),
                kind: String::new(),
            })
            .unwrap();
    }

    fn materialized(&self, id: &str, mode: Materialize) -> Model {
        let out = self.t.path().join(format!("out-{id}-{mode:?}"));
        let _ = std::fs::remove_dir_all(&out);
        self.store.materialize(id, None, &out, mode).unwrap();
        let m = model(&out);
        std::fs::remove_dir_all(&out).unwrap();
        m
    }

    fn path(&self, p: &str) -> PathBuf {
        self.live.join(p)
    }

    /// Writes `p` as Ferry does: a new inode renamed into place.
    fn write(&self, p: &str, data: &[u8]) {
        let tmp = self.path(".~ferry.tmp");
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, self.path(p)).unwrap();
    }

    /// How many files are under `dir` (the lock file aside).
    fn files_under(dir: &Path) -> usize {
        let mut n = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if e.file_name() != "lock" {
                    n += 1;
                }
            }
        }
        n
    }

    /// The files under the store (but its lock file).
    fn store_files(&self) -> BTreeSet<PathBuf> {
        fn walk(d: &Path, out: &mut BTreeSet<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                } else if e.file_name() != "lock" {
                    out.insert(e.path());
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.state(), &mut out);
        out
    }
}

fn content_only(m: &Model) -> BTreeMap<Vec<u8>, (&'static str, Vec<u8>)> {
    m.items.iter().map(|(p, i)| (p.clone(), (i.kind, i.data.clone()))).collect()
}

fn store_diff(s: &Store, a: &str, b: &str) -> Vec<(String, Change)> {
    let mut d: Vec<(String, Change)> =
        s.diff(a, b).unwrap().iter().map(|d| (d.display(), d.change)).collect();
    d.sort();
    d
}

#[test]
fn full_then_incremental_rounds_materialize_as_the_live_tree_was() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("d/e")).unwrap();
    f.write("d/e/f", b"deep");
    f.write("a", b"alpha");
    f.write("big", &vec![7u8; 10_000]);
    std::os::unix::fs::symlink("a", f.path("s")).unwrap();
    std::fs::hard_link(f.path("a"), f.path("a2")).unwrap();
    std::fs::create_dir(f.path("gone")).unwrap();
    f.write("gone/x", b"x");
    let m0 = manifest(&f.live);
    let want0 = model(&f.live);
    let (r0, s0) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    assert_eq!(s0.entries, m0.0.len() as u64);
    f.record("s0", 0, r0, &s0);
    assert_eq!(f.materialized("s0", Materialize::Copy), want0);

    // Edit, rename, type changes, a deleted subtree, metadata only, a new hard link.
    f.write("a", b"alpha two");
    std::fs::rename(f.path("big"), f.path("big-renamed")).unwrap();
    std::fs::remove_file(f.path("s")).unwrap();
    std::fs::create_dir(f.path("s")).unwrap();
    f.write("s/inner", b"inner");
    std::fs::remove_dir_all(f.path("d/e")).unwrap();
    f.write("d/e", b"now a file");
    std::fs::remove_dir_all(f.path("gone")).unwrap();
    std::os::unix::fs::symlink("nowhere", f.path("gone")).unwrap();
    std::fs::set_permissions(f.path("a2"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(f.path("d/e"), f.path("zz-link")).unwrap();
    let m1 = manifest(&f.live);
    let want1 = model(&f.live);
    let cs = changes(&m0, &m1);
    let (r1, s1) = f.store.build_incremental(r0, &f.root(), &cs, ObjectLink::Hardlink).unwrap();
    assert_ne!(r1, r0);
    assert_eq!(s1.entries, m1.0.len() as u64);
    f.record("s1", 1, r1, &s1);
    assert_eq!(f.materialized("s1", Materialize::Copy), want1);
    assert_eq!(f.materialized("s0", Materialize::Copy), want0, "an old snapshot is unchanged");
    // Hard-linked restores keep the objects' metadata: compare kinds and content only.
    assert_eq!(content_only(&f.materialized("s1", Materialize::Hardlink)), content_only(&want1));
    f.store.verify("s0", None).unwrap();
    f.store.verify("s1", None).unwrap();
    assert_eq!(store_diff(&f.store, "s0", "s1"), model_diff(&want0, &want1));
    assert_eq!(store_diff(&f.store, "s1", "s0"), model_diff(&want1, &want0));
    assert!(store_diff(&f.store, "s1", "s1").is_empty());
}

#[test]
fn a_round_without_change_writes_nothing_and_keeps_the_root() {
    let f = Fixture::new();
    std::fs::create_dir(f.path("d")).unwrap();
    f.write("d/x", b"x");
    f.write("y", b"y");
    let (r0, _) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    let before = f.store_files();
    let (r1, s1) = f
        .store
        .build_incremental(r0, &f.root(), &ChangeSet::default(), ObjectLink::Hardlink)
        .unwrap();
    assert_eq!(r1, r0);
    assert_eq!((s1.trees_written, s1.objects_written, s1.bytes_written), (0, 0, 0));
    assert_eq!((s1.entries, s1.bytes), (3, 2));
    // Upserts equal to what the tree holds change nothing either.
    let m = manifest(&f.live);
    let all = ChangeSet {
        upserts: m
            .0
            .iter()
            .map(|l| (l.entry.clone(), Some((l.dev, l.ino, l.entry.size, l.entry.meta.mtime_ns))))
            .collect(),
        removed: vec![RelPath::new("not-there").unwrap()],
        root: Some(m.1.clone()),
    };
    let (r2, s2) = f.store.build_incremental(r0, &f.root(), &all, ObjectLink::Hardlink).unwrap();
    assert_eq!(r2, r0);
    assert_eq!((s2.trees_written, s2.objects_written, s2.hashed_files), (0, 0, 0));
    assert_eq!(f.store_files(), before);
    // A full build of the same tree names the same root.
    let (r3, _) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    assert_eq!(r3, r0);
}

#[test]
fn a_live_file_that_is_not_the_committed_inode_is_stored_by_its_true_content() {
    let f = Fixture::new();
    let (r0, _) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    f.write("a", b"what is really there");
    let m = manifest(&f.live);
    let mut e = m.0[0].entry.clone();
    let claimed = *blake3::hash(b"what the round thought").as_bytes();
    e.hash = Some(claimed);
    for link in [ObjectLink::Hardlink, ObjectLink::Reflink] {
        let cs =
            ChangeSet { upserts: vec![(e.clone(), Some((1, 2, 3, 4)))], ..ChangeSet::default() };
        let (r1, s1) = f.store.build_incremental(r0, &f.root(), &cs, link).unwrap();
        assert_eq!(s1.mismatched, 1, "{link:?}");
        f.record("s1", 1, r1, &s1);
        f.store.verify("s1", None).unwrap();
        let ls = f.store.ls("s1", None).unwrap();
        assert_eq!(ls[0].hash, Some(*blake3::hash(b"what is really there").as_bytes()));
        f.store.delete("s1").unwrap();
    }
    // Without a hash the live file is hashed.
    let cs = ChangeSet {
        upserts: vec![(ferry_core::Entry { hash: None, ..e.clone() }, None)],
        ..ChangeSet::default()
    };
    let (_, s) = f.store.build_incremental(r0, &f.root(), &cs, ObjectLink::Hardlink).unwrap();
    assert_eq!((s.hashed_files, s.mismatched), (1, 0));
}

#[test]
fn changes_that_do_not_fit_the_tree_are_errors() {
    let f = Fixture::new();
    f.write("file", b"f");
    let (r0, _) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    let m = manifest(&f.live);
    let mut orphan = m.0[0].entry.clone();
    orphan.path = RelPath::new("missing-dir/x").unwrap();
    orphan.kind = EntryKind::Symlink { target: b"t".to_vec() };
    let cs = ChangeSet { upserts: vec![(orphan, None)], ..ChangeSet::default() };
    let err = f.store.build_incremental(r0, &f.root(), &cs, ObjectLink::Hardlink).unwrap_err();
    assert!(matches!(&err, StoreError::BadChange { path, .. } if path == "missing-dir/x"), "{err}");
    let mut link = m.0[0].entry.clone();
    link.path = RelPath::new("l").unwrap();
    link.kind = EntryKind::HardLink { to: RelPath::new("nope").unwrap() };
    let cs = ChangeSet { upserts: vec![(link, None)], ..ChangeSet::default() };
    let err = f.store.build_incremental(r0, &f.root(), &cs, ObjectLink::Hardlink).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn gc_keeps_what_kept_snapshots_reach_and_sweeps_the_rest() {
    let f = Fixture::new();
    f.write("keep", b"kept everywhere");
    f.write("old", b"only in s0");
    let m0 = manifest(&f.live);
    let (r0, s0) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    f.record("s0", 0, r0, &s0);
    std::fs::remove_file(f.path("old")).unwrap();
    std::fs::create_dir(f.path("dir")).unwrap();
    f.write("dir/new", b"new in s1");
    let m1 = manifest(&f.live);
    let want1 = model(&f.live);
    let (r1, s1) =
        f.store.build_incremental(r0, &f.root(), &changes(&m0, &m1), ObjectLink::Hardlink).unwrap();
    f.record("s1", 1, r1, &s1);
    // A build that crashed before its record: its objects and trees are unreachable.
    f.write("dir/crashed", b"never recorded");
    let m2 = manifest(&f.live);
    f.store.build_incremental(r1, &f.root(), &changes(&m1, &m2), ObjectLink::Hardlink).unwrap();
    std::fs::write(f.state().join("objects/.tmp.1.1"), b"stale temp").unwrap();

    let lock = f.store.lock().unwrap();
    assert!(f.store.try_lock().unwrap().is_none(), "the lock is exclusive");
    let g = f.store.gc(&lock, |r| r.id != "s0").unwrap();
    drop(lock);
    assert_eq!(g.deleted, vec!["s0".to_string()]);
    // s0's root tree and "old"; the crashed build's root and dir trees and "crashed".
    assert_eq!((g.objects_removed, g.trees_removed, g.temps_removed), (2, 3, 1));
    assert_eq!(f.store.records().unwrap().records.len(), 1);
    f.store.verify("s1", None).unwrap();
    assert_eq!(f.materialized("s1", Materialize::Copy), want1);
    let objects =
        f.store_files().iter().filter(|p| p.starts_with(f.state().join("objects"))).count();
    assert_eq!(objects, 2, "keep and dir/new");
    // Nothing left to sweep.
    let g = f.store.gc(&f.store.lock().unwrap(), |_| true).unwrap();
    assert_eq!((g.objects_removed, g.trees_removed, g.deleted.len()), (0, 0, 0));
}

#[test]
fn subtree_verify_ls_and_restore() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("a/b")).unwrap();
    f.write("a/b/c", b"c");
    f.write("a/top", b"top");
    let (r0, s0) =
        f.store.build_full(&f.root(), ObjectLink::Reflink, &HashCache::default()).unwrap();
    f.record("s0", 0, r0, &s0);
    let v = f.store.verify("s0", Some("a/b")).unwrap();
    assert_eq!((v.trees, v.files, v.path.as_str()), (1, 1, "a/b"));
    let v = f.store.verify("s0", Some("a/top")).unwrap();
    assert_eq!((v.trees, v.files), (0, 1));
    let names: Vec<String> =
        f.store.ls("s0", Some("a")).unwrap().iter().map(|e| e.path.display()).collect();
    assert_eq!(names, ["a/b", "a/top"]);
    assert!(matches!(f.store.ls("s0", Some("a/zz")), Err(StoreError::NoSuchPath { .. })));
    assert!(matches!(f.store.verify("nope", None), Err(StoreError::NotFound(_))));
    assert!(matches!(f.store.find("../x"), Err(StoreError::BadName { .. })));
    let out = f.t.path().join("sub");
    f.store.materialize("s0", Some("a"), &out, Materialize::Copy).unwrap();
    let want = model(&f.path("a"));
    assert_eq!(model(&out), want);
}

/// Paths the property test plays with: nested so that type changes hit subtrees.
const PATHS: &[&str] = &["a", "b", "a/x", "a/y", "b/x", "a/x/z", "c"];

/// One change to the live tree, as a round would make it.
#[derive(Debug, Clone)]
enum Op {
    Write { p: usize, seed: u8, len: usize },
    Mkdir { p: usize },
    Symlink { p: usize, t: u8 },
    Remove { p: usize },
    Chmod { p: usize, mode: u32 },
    Touch { p: usize, t: i64 },
    Link { from: usize, p: usize },
    Rename { from: usize, p: usize },
    Xattr { p: usize, v: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    prop_oneof![
        3 => (p.clone(), any::<u8>(), prop_oneof![0usize..64, 4000usize..6000])
            .prop_map(|(p, seed, len)| Op::Write { p, seed, len }),
        2 => p.clone().prop_map(|p| Op::Mkdir { p }),
        1 => (p.clone(), any::<u8>()).prop_map(|(p, t)| Op::Symlink { p, t }),
        2 => p.clone().prop_map(|p| Op::Remove { p }),
        1 => (p.clone(), prop::sample::select(vec![0o600u32, 0o644, 0o755, 0o700]))
            .prop_map(|(p, mode)| Op::Chmod { p, mode }),
        1 => (p.clone(), 1i64..1000).prop_map(|(p, t)| Op::Touch { p, t }),
        2 => (p.clone(), p.clone()).prop_map(|(from, p)| Op::Link { from, p }),
        2 => (p.clone(), p.clone()).prop_map(|(from, p)| Op::Rename { from, p }),
        1 => (p.clone(), any::<u8>()).prop_map(|(p, v)| Op::Xattr { p, v }),
    ]
}

impl Fixture {
    /// Removes whatever is at `p`.
    fn clear(&self, p: &str) {
        let path = self.path(p);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path).unwrap(),
            Ok(_) => std::fs::remove_file(&path).unwrap(),
            Err(_) => {}
        }
    }

    /// Makes `p`'s ancestors directories.
    fn parents(&self, p: &str) {
        let mut at = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(c);
            match std::fs::symlink_metadata(self.path(&at)) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    self.clear(&at);
                    std::fs::create_dir(self.path(&at)).unwrap();
                }
                Err(_) => std::fs::create_dir(self.path(&at)).unwrap(),
            }
        }
    }

    fn apply(&self, op: &Op) {
        let nested = |a: &str, b: &str| {
            a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
        };
        match *op {
            Op::Write { p, seed, len } => {
                let p = PATHS[p];
                if std::fs::symlink_metadata(self.path(p)).is_ok_and(|m| m.is_dir()) {
                    self.clear(p);
                }
                self.parents(p);
                let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add((i / 7) as u8)).collect();
                self.write(p, &data);
            }
            Op::Mkdir { p } => {
                let p = PATHS[p];
                if !std::fs::symlink_metadata(self.path(p)).is_ok_and(|m| m.is_dir()) {
                    self.clear(p);
                    self.parents(p);
                    std::fs::create_dir(self.path(p)).unwrap();
                }
            }
            Op::Symlink { p, t } => {
                let p = PATHS[p];
                self.clear(p);
                self.parents(p);
                std::os::unix::fs::symlink(format!("target-{t}"), self.path(p)).unwrap();
            }
            Op::Remove { p } => self.clear(PATHS[p]),
            Op::Chmod { p, mode } => {
                let path = self.path(PATHS[p]);
                if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_symlink()) {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                }
            }
            Op::Touch { p, t } => {
                let path = self.path(PATHS[p]);
                if std::fs::symlink_metadata(&path).is_ok() {
                    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
                    let ns = 1_600_000_000_000_000_000 + t * 1_000_000_007;
                    rfs::utimensat(
                        rfs::CWD,
                        &c,
                        &crate::fs::times(ns),
                        rfs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .unwrap();
                }
            }
            Op::Link { from, p } => {
                let (from, p) = (PATHS[from], PATHS[p]);
                if nested(from, p)
                    || !std::fs::symlink_metadata(self.path(from)).is_ok_and(|m| m.is_file())
                {
                    return;
                }
                self.clear(p);
                self.parents(p);
                std::fs::hard_link(self.path(from), self.path(p)).unwrap();
            }
            Op::Rename { from, p } => {
                let (from, p) = (PATHS[from], PATHS[p]);
                if nested(from, p) || std::fs::symlink_metadata(self.path(from)).is_err() {
                    return;
                }
                self.clear(p);
                self.parents(p);
                if std::fs::symlink_metadata(self.path(from)).is_ok() {
                    std::fs::rename(self.path(from), self.path(p)).unwrap();
                }
            }
            Op::Xattr { p, v } => {
                let path = self.path(PATHS[p]);
                if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_symlink()) {
                    let fd =
                        rfs::open(&path, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).unwrap();
                    rfs::fsetxattr(&fd, "user.ferry", &[v], rfs::XattrFlags::empty()).unwrap();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random rounds of edits, renames, type changes, deletes, metadata-only changes and hard
    /// links: every snapshot materializes as the live tree was at its round, the incremental
    /// root equals a full build's wherever the tree has no hard links (whose `to` may
    /// differ), and the store's diff of any two snapshots equals the diff of the trees.
    #[test]
    fn random_rounds_materialize_and_diff_like_the_trees(
        rounds in prop::collection::vec(prop::collection::vec(op(), 1..5), 1..6),
        reflink in any::<bool>(),
    ) {
        let f = Fixture::new();
        let link = if reflink { ObjectLink::Reflink } else { ObjectLink::Hardlink };
        f.apply(&Op::Write { p: 0, seed: 1, len: 10 });
        let mut prev = manifest(&f.live);
        let (mut root, s) = f.store.build_full(&f.root(), link, &HashCache::default()).unwrap();
        f.record("r0", 0, root, &s);
        let mut wants = vec![model(&f.live)];
        for (i, ops) in rounds.iter().enumerate() {
            for o in ops {
                f.apply(o);
            }
            let now = manifest(&f.live);
            let (r, s) = f.store.build_incremental(root, &f.root(), &changes(&prev, &now), link).unwrap();
            prop_assert_eq!(s.entries, now.0.len() as u64);
            let want = model(&f.live);
            if want.links.is_empty() {
                let (full, _) = f.store.build_full(&f.root(), link, &HashCache::default()).unwrap();
                prop_assert_eq!(full, r, "incremental and full roots differ after {:?}", ops);
            }
            f.record(&format!("r{}", i + 1), i as u64 + 1, r, &s);
            root = r;
            prev = now;
            wants.push(want);
        }
        for (i, want) in wants.iter().enumerate() {
            let id = format!("r{i}");
            f.store.verify(&id, None).unwrap();
            prop_assert_eq!(&f.materialized(&id, Materialize::Copy), want, "snapshot {}", id);
        }
        for (i, a) in wants.iter().enumerate() {
            for (j, b) in wants.iter().enumerate() {
                let got = store_diff(&f.store, &format!("r{i}"), &format!("r{j}"));
                prop_assert_eq!(got, model_diff(a, b), "diff r{} r{}", i, j);
            }
        }
        // Dropping all but the last keeps it whole.
        let last = format!("r{}", wants.len() - 1);
        f.store.gc(&f.store.lock().unwrap(), |r| r.id == last).unwrap();
        f.store.verify(&last, None).unwrap();
        prop_assert_eq!(&f.materialized(&last, Materialize::Copy), wants.last().unwrap());
    }
}

/// A store with one snapshot `s0` of `a`, `b` (same size) and `d/c`, objects copied (so
/// damaging them leaves the live tree alone), and the paths of its objects and trees.
fn hostile() -> (Fixture, BTreeMap<&'static str, PathBuf>) {
    let f = Fixture::new();
    f.write("a", b"content A");
    f.write("b", b"content B");
    std::fs::create_dir(f.path("d")).unwrap();
    f.write("d/c", b"in d");
    let (r, s) = f.store.build_full(&f.root(), ObjectLink::Reflink, &HashCache::default()).unwrap();
    f.record("s0", 0, r, &s);
    let obj = |data: &[u8]| {
        let h = super::tree::hex(blake3::hash(data).as_bytes());
        f.state().join(format!("objects/{}/{h}", &h[..2]))
    };
    let tree = |h: TreeHash| {
        let h = h.to_hex();
        f.state().join(format!("trees/{}/{h}", &h[..2]))
    };
    let ls = f.store.ls("s0", None).unwrap();
    let d = ls.iter().find(|e| e.path.as_bytes() == b"d").unwrap();
    assert!(d.hash.is_none());
    let t = f.store.load_tree(r, "s0", ".").unwrap();
    let Node::Dir { tree: dt, .. } = t.get(b"d").unwrap().node else { panic!("d is a dir") };
    let paths = BTreeMap::from([
        ("a", obj(b"content A")),
        ("b", obj(b"content B")),
        ("root", tree(r)),
        ("d", tree(dt)),
    ]);
    (f, paths)
}

fn damaged(r: Result<impl std::fmt::Debug, StoreError>, path: &str, what: &str) {
    match r {
        Err(StoreError::Damaged { snapshot, path: p, what: w }) => {
            assert_eq!((snapshot.as_str(), p.as_str()), ("s0", path), "{w}");
            assert!(w.contains(what), "{w:?} should say {what:?}");
        }
        other => panic!("expected damage at {path}, got {other:?}"),
    }
}

#[test]
fn damaged_objects_and_trees_are_named_by_snapshot_and_path() {
    // Truncated, swapped and missing objects.
    for (how, what) in
        [("truncate", "bytes, the snapshot says"), ("swap", "other content"), ("remove", "missing")]
    {
        let (f, p) = hostile();
        match how {
            "truncate" => std::fs::write(&p["a"], b"short").unwrap(),
            "swap" => std::fs::copy(&p["b"], &p["a"]).map(drop).unwrap(),
            _ => std::fs::remove_file(&p["a"]).unwrap(),
        }
        damaged(f.store.verify("s0", None), "a", what);
        f.store.verify("s0", Some("d")).unwrap();
        if how != "swap" {
            let out = f.t.path().join("out");
            damaged(f.store.materialize("s0", None, &out, Materialize::Copy), "a", "object");
        }
    }
    // Damaged, missing and oversized trees.
    for (tree, how, path, what) in [
        ("d", "truncate", "d", "tree"),
        ("d", "remove", "d", "missing"),
        ("root", "garbage", ".", "not a tree"),
        ("root", "huge", ".", "larger than"),
        ("d", "other", "d", "hashes to"),
    ] {
        let (f, p) = hostile();
        match how {
            "truncate" => {
                let b = std::fs::read(&p[tree]).unwrap();
                std::fs::write(&p[tree], &b[..b.len() - 3]).unwrap();
            }
            "remove" => std::fs::remove_file(&p[tree]).unwrap(),
            "garbage" => std::fs::write(&p[tree], b"garbage").unwrap(),
            "huge" => std::fs::File::create(&p[tree]).unwrap().set_len(300 << 20).unwrap(),
            _ => std::fs::copy(&p["root"], &p[tree]).map(drop).unwrap(),
        }
        damaged(f.store.verify("s0", None), path, what);
        damaged(
            f.store.diff("s0", "s0").map(|_| ()).and(f.store.ls("s0", Some("d/c"))),
            path,
            what,
        );
        let out = f.t.path().join("out");
        damaged(f.store.materialize("s0", None, &out, Materialize::Copy), path, what);
        // GC cannot know what the damaged tree reaches: it sweeps nothing.
        let before = f.store_files();
        let err = f.store.gc(&f.store.lock().unwrap(), |_| true).unwrap_err();
        assert!(matches!(err, StoreError::GcRefused(_)), "{err}");
        assert_eq!(f.store_files(), before);
    }
}

#[test]
fn unreadable_records_are_named_and_stop_gc() {
    let (f, _) = hostile();
    let snaps = f.state().join("snapshots");
    std::fs::write(snaps.join("bad.json"), b"{ not json").unwrap();
    std::fs::File::create(snaps.join("huge.json")).unwrap().set_len(2 << 20).unwrap();
    let mut other = f.store.find("s0").unwrap();
    other.id = "elsewhere".into();
    std::fs::write(snaps.join("renamed.json"), serde_json::to_vec(&other).unwrap()).unwrap();
    let list = f.store.records().unwrap();
    assert_eq!(list.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["s0"]);
    let bad: Vec<String> = list.unreadable.iter().map(ToString::to_string).collect();
    assert_eq!(bad.len(), 3, "{bad:?}");
    for name in ["bad.json", "huge.json", "renamed.json"] {
        assert!(bad.iter().any(|e| e.contains(name)), "{name} in {bad:?}");
    }
    assert!(matches!(f.store.find("bad"), Err(StoreError::BadRecord { .. })));
    let before = f.store_files();
    assert!(matches!(
        f.store.gc(&f.store.lock().unwrap(), |_| false),
        Err(StoreError::GcRefused(_))
    ));
    assert_eq!(f.store_files(), before, "nothing removed, not even the records");
}

#[test]
fn symlinks_planted_in_the_store_are_never_followed() {
    use std::os::unix::fs::symlink;
    // A planted symlink in place of an object, a fan-out directory, a tree, a record.
    for planted in ["object", "objects-fan", "tree", "trees-fan", "record"] {
        let (f, p) = hostile();
        let outside = f.t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let (victim, shown) = match planted {
            "object" => (p["a"].clone(), "a"),
            "objects-fan" => (p["a"].parent().unwrap().to_path_buf(), "a"),
            "tree" => (p["d"].clone(), "d"),
            "trees-fan" => (p["d"].parent().unwrap().to_path_buf(), "d"),
            _ => (f.state().join("snapshots/s0.json"), ""),
        };
        // The outside copy is what a follower would find: intact and valid.
        let copy = outside.join("copy");
        if victim.is_dir() {
            std::fs::rename(&victim, &copy).unwrap();
        } else {
            std::fs::copy(&victim, &copy).unwrap();
            std::fs::remove_file(&victim).unwrap();
        }
        symlink(&copy, &victim).unwrap();
        let v = f.store.verify("s0", None);
        if planted == "record" {
            assert!(matches!(v, Err(StoreError::BadRecord { .. })), "{v:?}");
            assert_eq!(f.store.records().unwrap().unreadable.len(), 1);
        } else if planted.ends_with("-fan") && shown == "a" {
            damaged(v, shown, "object");
        } else {
            damaged(v, shown, "");
        }
        // GC sweeps nothing it cannot account for and never reaches outside.
        let before: Vec<_> =
            std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().path()).collect();
        let _ = f.store.gc(&f.store.lock().unwrap(), |_| false);
        let after: Vec<_> =
            std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(before, after, "{planted}");
        assert!(std::fs::symlink_metadata(&copy).is_ok(), "{planted}: outside copy intact");
    }
    // A symlinked store directory or lock file is refused.
    for planted in ["store/m/objects", "store/m/trees", "store/m/snapshots", "store/m", "store"] {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let at = state.join(planted);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(&elsewhere, &at).unwrap();
        let err = Store::open(&state, "m").unwrap_err();
        assert!(err.to_string().contains(planted), "{planted}: {err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
    let (f, _) = hostile();
    symlink(f.t.path().join("lock-target"), f.state().join("lock")).unwrap();
    assert!(f.store.lock().is_err());
    assert!(!f.t.path().join("lock-target").exists());
    // GC removes a planted symlink under an unreachable name, not its target.
    let (f, _) = hostile();
    let target = f.t.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let fake = f.state().join(format!("objects/00/{}", "0".repeat(64)));
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    symlink(&target, &fake).unwrap();
    let g = f.store.gc(&f.store.lock().unwrap(), |_| true).unwrap();
    assert_eq!(g.objects_removed, 1);
    assert!(std::fs::symlink_metadata(&fake).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn bad_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    for m in ["", ".", "..", "a/b"] {
        assert!(matches!(Store::open(t.path(), m), Err(StoreError::BadName { .. })), "{m:?}");
    }
    let (f, _) = hostile();
    let mut rec = f.store.find("s0").unwrap();
    for id in ["", ".hidden", "a/b", "../x", "x y"] {
        rec.id = id.into();
        assert!(matches!(f.store.record(&rec), Err(StoreError::BadName { .. })), "{id:?}");
    }
    rec.id = "no-tree".into();
    rec.root_hash = "ab".repeat(32);
    assert!(matches!(f.store.record(&rec), Err(StoreError::Damaged { .. })));
    assert!(matches!(f.store.ls("s0", Some("a/../b")), Err(StoreError::BadName { .. })));
}

proptest! {
    /// Whatever bytes a tree file holds, decoding is an error or a tree, never a panic.
    #[test]
    fn tree_decode_never_panics(body in prop::collection::vec(any::<u8>(), 0..512), z in any::<bool>()) {
        let mut stored = b"FST1".to_vec();
        stored.push(u8::from(z));
        stored.extend(&body);
        let h = TreeHash(*blake3::hash(&body).as_bytes());
        let _ = Tree::decode(&stored, h);
        let _ = Tree::decode(&body, h);
    }
}

/// A smoke measurement, not the benchmark: 100 directories of 1,000 small files, then a
/// round without change and a round changing one file. Run with `--ignored --nocapture`.
#[test]
#[ignore = "a measurement: creates 100,000 files"]
fn measure_rounds_on_100k_files() {
    let f = Fixture::new();
    for d in 0..100 {
        std::fs::create_dir(f.path(&format!("d{d:03}"))).unwrap();
        for i in 0..1000 {
            std::fs::write(f.path(&format!("d{d:03}/f{i:04}")), format!("{d}-{i}")).unwrap();
        }
    }
    let t = std::time::Instant::now();
    let (r0, s0) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    println!(
        "build_full: {:?}, {} entries, {} trees, {} bytes of trees",
        t.elapsed(),
        s0.entries,
        s0.trees_written,
        s0.bytes_written
    );
    f.record("s0", 0, r0, &s0);
    let t = std::time::Instant::now();
    let (r1, s1) = f
        .store
        .build_incremental(r0, &f.root(), &ChangeSet::default(), ObjectLink::Hardlink)
        .unwrap();
    println!(
        "no change: {:?}, {} trees, {} objects, {} bytes written",
        t.elapsed(),
        s1.trees_written,
        s1.objects_written,
        s1.bytes_written
    );
    assert_eq!((r1, s1.bytes_written), (r0, 0));
    let t = std::time::Instant::now();
    f.record("s1", 1, r1, &s1);
    println!("record: {:?}", t.elapsed());
    let before = manifest(&f.live);
    f.write("d050/f0500", b"changed");
    let mut after = before.clone();
    let i = after.0.iter().position(|l| l.entry.path.as_bytes() == b"d050/f0500").unwrap();
    let fresh = manifest(&f.live);
    after.0[i] = fresh.0[i].clone();
    let d = after.0.iter().position(|l| l.entry.path.as_bytes() == b"d050").unwrap();
    after.0[d] = fresh.0[d].clone();
    let cs = changes(&before, &after);
    assert_eq!(cs.upserts.len(), 2);
    let t = std::time::Instant::now();
    let (r2, s2) = f.store.build_incremental(r1, &f.root(), &cs, ObjectLink::Hardlink).unwrap();
    println!(
        "one file: {:?}, {} trees, {} objects, {} bytes written",
        t.elapsed(),
        s2.trees_written,
        s2.objects_written,
        s2.bytes_written
    );
    f.record("s2", 2, r2, &s2);
    let t = std::time::Instant::now();
    let g = f.store.gc(&f.store.lock().unwrap(), |r| r.id != "s0").unwrap();
    println!(
        "gc dropping one snapshot: {:?}, {} objects, {} trees removed",
        t.elapsed(),
        g.objects_removed,
        g.trees_removed
    );
    let t = std::time::Instant::now();
    let v = f.store.verify("s2", None).unwrap();
    println!("verify: {:?}, {} trees, {} files", t.elapsed(), v.trees, v.files);
    let t = std::time::Instant::now();
    let diff = f.store.diff("s1", "s2").unwrap();
    println!("diff: {:?}, {} entries", t.elapsed(), diff.len());
}

/// Kills per crash test; `FERRY_STORE_KILLS` asks for more (the ignored long runs).
fn kills() -> u64 {
    std::env::var("FERRY_STORE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

/// Runs [`crash_child`] doing `what` in the fixture copy at `dir`, kills it with SIGKILL
/// after `delay`, and says whether it was still running then.
fn kill_child(what: &str, dir: &Path, delay: std::time::Duration) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "state::store::tests::crash_child", "--test-threads=1"])
        .env("FERRY_STORE_CRASH_CHILD", format!("{what}:{}", dir.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(status.success() || status.signal() == Some(9), "child failed: {status:?}");
    status.signal() == Some(9)
}

/// Rounds kept by the crash tests' GC.
fn kept(r: &StoreRecord) -> bool {
    r.round % 3 == 0
}

/// One round of the crash tests: `n` new files in a new directory and a removed one.
fn crash_round(f: &Fixture, round: u64, link: ObjectLink) -> TreeHash {
    let before = manifest(&f.live);
    let prev = f.store.records().unwrap().records.last().map(|r| r.root().unwrap());
    // A killed round may have left its directory: this round replaces it.
    let _ = std::fs::remove_dir_all(f.path(&format!("r{round}")));
    std::fs::create_dir(f.path(&format!("r{round}"))).unwrap();
    for i in 0..40 {
        f.write(&format!("r{round}/f{i}"), format!("round {round} file {i}").as_bytes());
    }
    if round >= 2 {
        let _ = std::fs::remove_dir_all(f.path(&format!("r{}", round - 2)));
    }
    let after = manifest(&f.live);
    let (r, s) = match prev {
        Some(p) => f.store.build_incremental(p, &f.root(), &changes(&before, &after), link),
        None => f.store.build_full(&f.root(), link, &HashCache::default()),
    }
    .unwrap();
    f.record(&format!("r{round:04}"), round, r, &s);
    r
}

/// The child side of the kill tests (does nothing unless run by them).
#[test]
#[ignore = "run as a child process by the kill tests"]
fn crash_child() {
    let Ok(spec) = std::env::var("FERRY_STORE_CRASH_CHILD") else { return };
    let (what, dir) = spec.split_once(':').unwrap();
    let dir = Path::new(dir);
    let f = Fixture {
        t: tempfile::tempdir().unwrap(),
        live: dir.join("live"),
        store: Store::open(&dir.join("state"), "m").unwrap(),
    };
    match what {
        "gc" => {
            f.store.gc(&f.store.lock().unwrap(), kept).unwrap();
        }
        _ => {
            let start = f.store.records().unwrap().records.len() as u64;
            for round in start..start + 1000 {
                let _lock = f.store.lock().unwrap();
                crash_round(&f, round, ObjectLink::Hardlink);
            }
        }
    }
}

/// After a kill: every snapshot left verifies, the kept ones are all there, and a GC and a
/// next round complete.
fn check_after_kill(dir: &Path, kept_ids: &[String]) {
    let f = Fixture {
        t: tempfile::tempdir().unwrap(),
        live: dir.join("live"),
        store: Store::open(&dir.join("state"), "m").unwrap(),
    };
    let list = f.store.records().unwrap();
    assert!(list.unreadable.is_empty(), "{:?}", list.unreadable);
    for id in kept_ids {
        assert!(list.records.iter().any(|r| &r.id == id), "kept snapshot {id} lost");
    }
    for r in &list.records {
        f.store.verify(&r.id, None).unwrap();
    }
    f.store.gc(&f.store.lock().unwrap(), kept).unwrap();
    let list = f.store.records().unwrap();
    for r in &list.records {
        f.store.verify(&r.id, None).unwrap();
    }
    // The live tree may be ahead of the last record (a round killed before its record, or
    // records GC removed): what changed since is unknown, so the next round builds in full,
    // and the one after incrementally again.
    let next = list.records.last().map_or(0, |r| r.round + 1);
    let (r, s) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    f.record(&format!("r{next:04}"), next, r, &s);
    f.store.verify(&format!("r{next:04}"), None).unwrap();
    let root = crash_round(&f, next + 1, ObjectLink::Hardlink);
    let (full, _) =
        f.store.build_full(&f.root(), ObjectLink::Hardlink, &HashCache::default()).unwrap();
    assert_eq!(root, full, "the next round converges on the live tree");
}

#[test]
fn kill_9_during_gc_never_removes_what_a_kept_snapshot_needs() {
    let f = Fixture::new();
    for round in 0..12 {
        crash_round(&f, round, ObjectLink::Reflink);
    }
    let kept_ids: Vec<String> = f
        .store
        .records()
        .unwrap()
        .records
        .iter()
        .filter(|r| kept(r))
        .map(|r| r.id.clone())
        .collect();
    // How many files the store holds before GC, and after a whole one.
    let all_files = Fixture::files_under(&f.state());
    let done_files = {
        let dir = f.t.path().join("done");
        std::fs::create_dir(&dir).unwrap();
        for part in ["live", "state"] {
            let from = f.t.path().join(part);
            assert!(std::process::Command::new("cp")
                .arg("-a")
                .arg(from)
                .arg(dir.join(part))
                .status()
                .unwrap()
                .success());
        }
        let s = Store::open(&dir.join("state"), "m").unwrap();
        s.gc(&s.lock().unwrap(), kept).unwrap();
        Fixture::files_under(&dir.join("state/store/m"))
    };
    assert!(done_files < all_files);
    let mut midway = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut cut = 0;
    for i in 0..kills() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let dir = f.t.path().join(format!("gc{i}"));
        std::fs::create_dir(&dir).unwrap();
        for part in ["live", "state"] {
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(f.t.path().join(part))
                .arg(dir.join(part))
                .status()
                .unwrap();
            assert!(st.success());
        }
        let delay = std::time::Duration::from_micros(seed % 40_000);
        cut += u64::from(kill_child("gc", &dir, delay));
        // Killed between its first removal and its last: some records or objects gone,
        // not all of what it would remove.
        let store = Store::open(&dir.join("state"), "m").unwrap();
        let records = store.records().unwrap().records.len();
        let files = Fixture::files_under(&dir.join("state/store/m"));
        if files < all_files && (records > kept_ids.len() || files > done_files) {
            midway += 1;
        }
        check_after_kill(&dir, &kept_ids);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!("{cut} of {} GC runs killed, {midway} of them midway", kills());
}

#[test]
fn kill_9_during_rounds_leaves_every_snapshot_whole() {
    let f = Fixture::new();
    crash_round(&f, 0, ObjectLink::Hardlink);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut cut = 0;
    for i in 0..kills() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let dir = f.t.path().join(format!("b{i}"));
        std::fs::create_dir(&dir).unwrap();
        // One copy of live and state together keeps the objects' links to live files.
        for part in ["live", "state"] {
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(f.t.path().join(part))
                .arg(dir.join(part))
                .status()
                .unwrap();
            assert!(st.success());
        }
        let delay = std::time::Duration::from_micros(seed % 60_000);
        cut += u64::from(kill_child("build", &dir, delay));
        check_after_kill(&dir, &[]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!("{cut} of {} round runs killed", kills());
}
