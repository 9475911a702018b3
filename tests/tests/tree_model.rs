//! The comparer must see a faithful copy as equal and each kind of damage as
//! a difference; otherwise the sync tests prove nothing.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_tests::gen::{self, Content, EntryKind, Mtime, SparseWrite, TreeEntry, TreeSpec};
use ferry_tests::tree::{self, Kind};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tempfile::TempDir;

use crate::util;

fn entry(path: &[u8], kind: EntryKind, mode: u32, sec: i64) -> TreeEntry {
    TreeEntry {
        path: path.to_vec(),
        kind,
        mode,
        mtime: Mtime { sec, nsec: 123_456_789 },
        owner: None,
        xattr: None,
    }
}

fn random(seed: u64, len: u64) -> EntryKind {
    EntryKind::File(Content::Random { seed, len })
}

/// A small tree with one of everything the comparer has to model.
fn fixture() -> TreeSpec {
    let mut entries = vec![
        entry(b"d", EntryKind::Dir, 0o755, 1_500_000_000),
        entry(b"d/e", EntryKind::Dir, 0o700, 1_500_000_001),
        entry(b"d/e/f", random(1, 4096), 0o644, 1_500_000_002),
        entry(b"a", random(2, 1), 0o600, 1_500_000_003),
        entry(b"\xff\xfe", EntryKind::File(Content::Pattern { seed: 3, len: 200_000 }), 0o640, 0),
        entry(b"empty", random(4, 0), 0o755, 1_000_000_000),
        entry(b"d/link", EntryKind::HardLink(b"a".to_vec()), 0, 0),
        entry(b"dangling", EntryKind::Symlink(b"/nonexistent".to_vec()), 0o777, 1_400_000_000),
        entry(b"d/e/up", EntryKind::Symlink(b"../..".to_vec()), 0o777, 1_400_000_001),
        entry(b"abs", EntryKind::Symlink(b"/etc/passwd".to_vec()), 0o777, 1_400_000_002),
    ];
    entries.push(entry(
        b"sparse",
        EntryKind::File(Content::Sparse {
            len: 4 << 20,
            writes: vec![SparseWrite { offset: 1 << 20, len: 100, seed: 5 }],
        }),
        0o644,
        1_600_000_000,
    ));
    entries[2].xattr = Some(b"v1".to_vec());
    entries[3].owner = Some((1000, 1000));
    TreeSpec { entries, root_mtime: Mtime { sec: 1_234_567_890, nsec: 1 } }
}

/// A materialised tree `a` and its `cp -a` copy `b`.
struct Pair {
    tmp: TempDir,
    a: PathBuf,
    b: PathBuf,
}

impl Pair {
    fn new(spec: &TreeSpec) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::create_dir(&a).expect("mkdir a");
        gen::materialize(&a, spec).expect("materialize");
        cp_a(&a, &b);
        Self { tmp, a, b }
    }

    fn diff(&self) -> Vec<String> {
        tree::diff(&self.a, &self.b)
    }

    fn b(&self, rel: &[u8]) -> PathBuf {
        tree::join(&self.b, rel)
    }

    /// Gives `rel` in `b` the mtime it has in `a`, undoing the side effect
    /// of editing inside a directory.
    fn restore_mtime(&self, rel: &[u8]) {
        let meta = fs::symlink_metadata(tree::join(&self.a, rel)).expect("lstat");
        let mtime = Mtime { sec: meta.mtime(), nsec: meta.mtime_nsec() as u32 };
        gen::set_mtime(&self.b(rel), mtime).expect("set mtime");
    }
}

fn cp_a(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("run cp");
    assert!(status.success(), "cp -a failed: {status}");
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").expect("write probe");
    gen::set_xattr(&probe, b"x").expect("set xattr");
    let supported = !tree::user_xattrs(&probe).expect("read xattrs").is_empty();
    fs::remove_file(&probe).expect("remove probe");
    supported
}

/// Asserts exactly one difference, about `rel`, mentioning `what`.
#[track_caller]
fn assert_one(diffs: &[String], rel: &[u8], what: &str) {
    let path = tree::show(rel);
    assert!(
        diffs.len() == 1 && diffs[0].starts_with(&format!("{path}: {what}")),
        "expected one `{what}` difference at {path}, got {diffs:#?}"
    );
}

#[test]
fn cp_a_copy_is_the_same() {
    let pair = Pair::new(&fixture());
    tree::assert_same(&pair.a, &pair.b);
}

#[test]
fn snapshot_records_every_attribute() {
    let spec = fixture();
    let pair = Pair::new(&spec);
    let snap = tree::snapshot(&pair.a).expect("snapshot");

    let root = &snap[&b""[..]];
    assert_eq!(root.kind, Kind::Dir);
    assert_eq!(root.mtime_ns, spec.root_mtime.as_nanos());

    let f = &snap[&b"d/e/f"[..]];
    let EntryKind::File(content) = &spec.entries[2].kind else { unreachable!() };
    assert_eq!(f.kind, Kind::File);
    assert_eq!(f.hash, Some(blake3::hash(&content.bytes())));
    assert_eq!((f.size, f.mode, f.mtime_ns), (4096, 0o644, spec.entries[2].mtime.as_nanos()));
    if xattrs_supported(pair.tmp.path()) {
        assert_eq!(f.xattrs.get(&b"user.ferry"[..]).map(Vec::as_slice), Some(&b"v1"[..]));
    }

    let dir = &snap[&b"d/e"[..]];
    assert_eq!((dir.kind, dir.mode, dir.size), (Kind::Dir, 0o700, 0));
    assert_eq!(dir.mtime_ns, spec.entries[1].mtime.as_nanos());

    // Symlinks: own mtime, raw target, nothing below them even when they
    // point at a directory inside the tree.
    let up = &snap[&b"d/e/up"[..]];
    assert_eq!(up.kind, Kind::Symlink);
    assert_eq!(up.target.as_deref(), Some(&b"../.."[..]));
    assert_eq!(up.mtime_ns, spec.entries[8].mtime.as_nanos());
    assert!(!snap.keys().any(|k| k.starts_with(b"d/e/up/")));

    let (a, link) = (&snap[&b"a"[..]], &snap[&b"d/link"[..]]);
    assert_eq!(a.link_group.as_deref(), Some(&b"a"[..]));
    assert_eq!(link.link_group, a.link_group);
    assert_eq!(snap[&b"empty"[..]].link_group, None);
    if is_root() {
        assert_eq!((a.uid, a.gid), (1000, 1000));
    }

    assert!(snap.contains_key(&b"\xff\xfe"[..]));
    assert_eq!(snap.len(), spec.entries.len() + 1);
}

#[test]
fn mode_change_is_reported() {
    let pair = Pair::new(&fixture());
    fs::set_permissions(pair.b(b"d/e/f"), fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_one(&pair.diff(), b"d/e/f", "mode 0644 != 0600");
}

#[test]
fn one_nanosecond_mtime_change_is_reported() {
    let pair = Pair::new(&fixture());
    gen::set_mtime(&pair.b(b"empty"), Mtime { sec: 1_000_000_000, nsec: 123_456_790 })
        .expect("touch");
    assert_one(&pair.diff(), b"empty", "mtime");
}

#[test]
fn symlink_mtime_change_is_reported() {
    let pair = Pair::new(&fixture());
    gen::set_mtime(&pair.b(b"dangling"), Mtime { sec: 7, nsec: 0 }).expect("touch");
    assert_one(&pair.diff(), b"dangling", "mtime");
}

#[test]
fn directory_mtime_change_is_reported() {
    let pair = Pair::new(&fixture());
    gen::set_mtime(&pair.b(b""), Mtime { sec: 7, nsec: 0 }).expect("touch");
    assert_one(&pair.diff(), b"", "mtime");
}

#[test]
fn symlink_target_change_is_reported() {
    let pair = Pair::new(&fixture());
    let link = pair.b(b"abs");
    fs::remove_file(&link).expect("rm");
    symlink("/etc/shadow", &link).expect("symlink");
    pair.restore_mtime(b"abs");
    pair.restore_mtime(b"");
    let diffs = pair.diff();
    // Targets of different lengths also differ in size; the target line is
    // the one that matters.
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("\"abs\": symlink target \"/etc/passwd\" != \"/etc/shadow\"")),
        "{diffs:#?}"
    );
}

#[test]
fn same_size_content_change_is_reported() {
    let pair = Pair::new(&fixture());
    let path = pair.b(b"d/e/f");
    let mut data = fs::read(&path).expect("read");
    data[100] ^= 1;
    fs::write(&path, data).expect("write");
    pair.restore_mtime(b"d/e/f");
    assert_one(&pair.diff(), b"d/e/f", "content");
}

#[test]
fn broken_hard_link_is_reported() {
    let pair = Pair::new(&fixture());
    // Replace the second name by an identical but separate file.
    let link = pair.b(b"d/link");
    let data = fs::read(&link).expect("read");
    fs::remove_file(&link).expect("rm");
    fs::write(&link, data).expect("write");
    fs::set_permissions(&link, fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::lchown(&link, Some(1000), Some(1000)).ok();
    pair.restore_mtime(b"d/link");
    pair.restore_mtime(b"d");
    let diffs = pair.diff();
    assert_eq!(diffs.len(), 2, "{diffs:#?}");
    assert!(diffs.iter().all(|d| d.contains("hard-link group \"a\" != (none)")), "{diffs:#?}");
}

#[test]
fn extra_hard_link_is_reported() {
    let pair = Pair::new(&fixture());
    // Same content, mode and mtime, but one inode instead of two: a copier
    // that links identical files would look like this.
    fs::remove_file(pair.b(b"empty")).expect("rm");
    fs::hard_link(pair.b(b"d/e/f"), pair.b(b"empty")).expect("link");
    pair.restore_mtime(b"");
    let diffs = pair.diff();
    assert!(diffs.iter().any(|d| d.starts_with("\"d/e/f\": hard-link group (none) != \"d/e/f\"")));
}

#[test]
fn xattr_change_is_reported() {
    let pair = Pair::new(&fixture());
    if !xattrs_supported(pair.tmp.path()) {
        eprintln!("skipping: no user xattrs on {}", pair.a.display());
        return;
    }
    gen::set_xattr(&pair.b(b"d/e/f"), b"v2").expect("set xattr");
    assert_one(&pair.diff(), b"d/e/f", "xattr \"user.ferry\" \"v1\" != \"v2\"");
    rustix::fs::lremovexattr(pair.b(b"d/e/f"), gen::XATTR_NAME).expect("remove xattr");
    assert_one(&pair.diff(), b"d/e/f", "xattr \"user.ferry\" \"v1\" != (none)");
}

#[test]
fn owner_change_is_reported() {
    if !is_root() {
        eprintln!("skipping: chown needs root");
        return;
    }
    let pair = Pair::new(&fixture());
    std::os::unix::fs::lchown(pair.b(b"dangling"), Some(4242), None).expect("lchown");
    assert_one(&pair.diff(), b"dangling", "owner 0:0 != 4242:0");
}

#[test]
fn kind_change_and_missing_and_extra_entries_are_reported() {
    let pair = Pair::new(&fixture());
    fs::remove_file(pair.b(b"empty")).expect("rm");
    fs::create_dir(pair.b(b"empty")).expect("mkdir");
    fs::remove_dir_all(pair.b(b"d/e")).expect("rm -r");
    fs::write(pair.b(b"\xfe"), b"new").expect("write");
    let diffs = pair.diff();
    let expect = |line: &str| assert!(diffs.iter().any(|d| d == line), "no {line:?} in {diffs:#?}");
    expect("\"empty\": kind File != Dir");
    expect("\"d/e/f\": only on the left (File)");
    expect("\"d/e/up\": only on the left (Symlink)");
    expect("b\"\\xfe\": only on the right (File)");
}

#[test]
fn materialized_sparse_file_has_holes() {
    let pair = Pair::new(&fixture());
    let path = tree::join(&pair.a, b"sparse");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 4 << 20);
    assert!(tree::allocated_bytes(&path) < 1 << 20, "{} allocated", tree::allocated_bytes(&path));
}

#[test]
fn mutations_skip_missing_targets_and_symlinked_parents() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tmp.path().join("outside");
    let root = tmp.path().join("root");
    fs::create_dir(&outside).expect("mkdir");
    fs::create_dir(&root).expect("mkdir");
    fs::write(outside.join("victim"), b"keep").expect("write");
    symlink(&outside, root.join("escape")).expect("symlink");

    let spec = TreeSpec {
        entries: vec![entry(b"escape/victim", random(0, 0), 0o644, 0)],
        root_mtime: Mtime { sec: 0, nsec: 0 },
    };
    // Aim a mutation at a path through the symlink, by way of the strategy,
    // so this also checks that generated mutations stay in the tree.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..200 {
        let m = gen::mutation(&spec).new_tree(&mut runner).expect("strategy").current();
        gen::apply(&root, &[m]).expect("apply");
    }
    assert_eq!(fs::read(outside.join("victim")).expect("read"), b"keep");
    assert!(fs::symlink_metadata(root.join("escape")).expect("lstat").file_type().is_symlink());
}

proptest! {
    #![proptest_config(util::config(8))]

    /// The generator is deterministic and the comparer agrees with `cp -a`
    /// on arbitrary trees, mutated or not.
    #[test]
    fn random_tree_equals_its_copy_and_its_twin((spec, mutations) in gen::tree_and_mutations()) {
        let pair = Pair::new(&spec);
        util::same(&pair.a, &pair.b, "cp -a copy")?;

        let twin = pair.tmp.path().join("twin");
        fs::create_dir(&twin)?;
        gen::materialize(&twin, &spec)?;
        util::same(&pair.a, &twin, "second materialisation")?;

        gen::apply(&pair.a, &mutations)?;
        let copy = pair.tmp.path().join("mutated-copy");
        cp_a(&pair.a, &copy);
        util::same(&pair.a, &copy, "cp -a copy after mutations")?;
    }
}
