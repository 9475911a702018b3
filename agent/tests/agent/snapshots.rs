//! What each committed round leaves behind: snapshots (hard links, reflinks, btrfs, the
//! user's command), commit records and `verify`, restore and promote, retention, and point in
//! time images of the source.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{
    assert_same_tree, check_ok, copy_tree, creds, ferry, s, sample, serve, serve_with, Server,
    FERRY,
};

/// Snapshot `id` of module `m` as a directory to compare with: a store snapshot restored
/// into a new directory beside the state directory (each call a fresh copy), a directory
/// snapshot (btrfs, earlier versions) itself.
fn view(state: &Path, id: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = state.join("snapshots/m").join(id);
    if dir.is_dir() {
        return dir;
    }
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let to = state.with_file_name(format!("view-{id}-{n}"));
    let args = ["restore", "--state-dir", s(state), "--module", "m", "--snapshot", id];
    check_ok(&ferry(&[&args[..], &["--to", s(&to)]].concat()));
    to
}

fn snapshots(state: &Path, want: usize, count: usize) -> Vec<serde_json::Value> {
    // The server snapshots and applies retention before it tells the client the round is
    // done: right after a push, its snapshot is there (issue 10, defect 5's pattern).
    let out = ferry(&["snapshots", "list", "--state-dir", s(state), "--module", "m", "--json"]);
    check_ok(&out);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rounds: Vec<_> = v.iter().map(|r| r["round"].as_u64()).collect();
    assert_eq!(v.last().and_then(|r| r["round"].as_u64()), Some(want as u64), "{rounds:?}");
    assert_eq!(v.len(), count, "{rounds:?}");
    v
}

/// The server's work for a round (commit record, snapshot, retention) is done before the push
/// that ran it returns, also when the snapshot takes a while: `snapshots list` right after the
/// push lists the round. Before, the snapshot was taken after the client was told the round
/// was over, so a large tree's snapshot was still missing.
#[test]
fn a_push_returns_after_its_snapshot_exists() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    for d in 0..40 {
        std::fs::create_dir_all(src.join(format!("d{d:02}"))).unwrap();
        for f in 0..100 {
            std::fs::write(src.join(format!("d{d:02}/f{f:03}")), format!("{d} {f}")).unwrap();
        }
    }
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state), "--keep-last", "1"],
    );
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    for round in 1..=2 {
        check_ok(&ferry(&["push", s(&src), &url, "--identity", s(&c.join("source"))]));
        let list = snapshots(&state, round, 1);
        assert_eq!(list[0]["entries"].as_u64(), Some(40 * 101), "{list:?}");
    }
}

/// After each round the destination holds a snapshot equal to the source as it was at that
/// round, unchanged by later rounds (hard links share inodes with the live tree, and rounds
/// never modify an inode in place); retention keeps the newest N.
#[test]
fn each_pushed_round_leaves_a_snapshot_of_that_round() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a"), b"version 1").unwrap();
    std::fs::write(src.join("d/b"), b"bbb").unwrap();
    std::os::unix::fs::symlink("a", src.join("l")).unwrap();
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state), "--keep-last", "2"],
    );
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let push = || {
        check_ok(&ferry(&["push", s(&src), &url, "--identity", s(&c.join("source")), "--delete"]))
    };
    let keep = |n: u32| {
        let r = t.path().join(format!("ref{n}"));
        copy_tree(&src, &r);
        r
    };
    push();
    let ref1 = keep(1);
    let s1 = snapshots(&state, 1, 1);
    let snap = |rec: &serde_json::Value| view(&state, rec["id"].as_str().unwrap());
    assert_same_tree(&ref1, &snap(&s1[0]));
    // Round 2: content, mode and type changes, a delete and an add.
    std::fs::write(src.join("a"), b"version 2, longer").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("d/b"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(src.join("l")).unwrap();
    std::fs::write(src.join("c"), b"new").unwrap();
    push();
    let ref2 = keep(2);
    let s2 = snapshots(&state, 2, 2);
    assert_same_tree(&ref1, &snap(&s2[0]));
    assert_same_tree(&ref2, &snap(&s2[1]));
    // Round 3: the directory goes; retention drops round 1.
    std::fs::remove_dir_all(src.join("d")).unwrap();
    push();
    let s3 = snapshots(&state, 3, 2);
    assert_eq!(s3.iter().map(|r| r["round"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert_same_tree(&ref2, &snap(&s3[0]));
    assert_same_tree(&src, &snap(&s3[1]));
    assert_same_tree(&src, &dst);
    // Restore round 2 elsewhere: a copy, so writing into it leaves the snapshot alone.
    let restored = t.path().join("restored");
    let id2 = s3[0]["id"].as_str().unwrap();
    let restore = [
        "restore",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id2,
        "--to",
        s(&restored),
    ];
    let out = ferry(&restore);
    check_ok(&out);
    // ext4 cannot clone: copies, checked against the store first.
    assert!(String::from_utf8_lossy(&out.stdout).contains("as reflinked or copied files"));
    assert_same_tree(&ref2, &restored);
    std::fs::write(restored.join("a"), b"the app wrote here").unwrap();
    assert_same_tree(&ref2, &snap(&s3[0]));
    // --hardlinks: instant, the snapshot's own inodes, with a warning; only into a new dir.
    let linked = t.path().join("linked");
    let mut hl = restore.to_vec();
    hl[8] = s(&linked);
    hl.push("--hardlinks");
    let out = ferry(&hl);
    check_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("as hard links"));
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("changes the snapshot too"), "{warned}");
    // Linked files share the stored inode, so they show the metadata it was stored with
    // (said in the warning); their content is the snapshot's.
    assert!(warned.contains("metadata of the first snapshot"), "{warned}");
    for f in ["a", "c", "d/b"] {
        assert_eq!(std::fs::read(ref2.join(f)).unwrap(), std::fs::read(linked.join(f)).unwrap());
    }
    {
        // Round 2's `a` is still the live one: the store keeps that very inode.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&linked.join("a")), ino(&dst.join("a")));
    }
    assert_eq!(ferry(&hl).status.code(), Some(2), "--hardlinks into an existing directory");
    // Delete it; an unknown id is a usage error.
    let del = ["snapshots", "delete", "--state-dir", s(&state), "--module", "m", "--snapshot", id2];
    check_ok(&ferry(&del));
    assert_eq!(ferry(&del).status.code(), Some(2));
    let left = snapshots(&state, 3, 1);
    assert_eq!(left.len(), 1);
}

/// Hard-link snapshots need the state directory on the module's filesystem: refuse at start.
#[test]
fn a_state_dir_on_another_filesystem_is_refused_at_start() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(t.path()).unwrap().dev()
    );
    let out = Command::new(FERRY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--identity",
            s(&c.join("destination")),
            "--state-dir",
            s(shm.path()),
        ])
        .args(["--module", &format!("m={}", s(&t.path().join("dst")))])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another filesystem"), "{err}");
}

/// A module `m` served with a state directory, and a sample source tree to push into it.
struct Rig {
    t: tempfile::TempDir,
    c: PathBuf,
    src: PathBuf,
    dst: PathBuf,
    state: PathBuf,
    srv: std::cell::RefCell<Option<Server>>,
    url: String,
}

impl Rig {
    fn new() -> Rig {
        let t = tempfile::tempdir().unwrap();
        let c = creds(t.path());
        let (src, dst, state) =
            (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
        sample(&src);
        let srv = serve_with(
            &c.join("destination"),
            &[format!("m={}", s(&dst))],
            &["--state-dir", s(&state)],
        );
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        Rig { t, c, src, dst, state, srv: std::cell::RefCell::new(Some(srv)), url }
    }

    /// Stops the server (as before a failover).
    fn stop(&self) {
        self.srv.borrow_mut().take();
    }

    fn push(&self) {
        check_ok(&ferry(&[
            "push",
            s(&self.src),
            &self.url,
            "--identity",
            s(&self.c.join("source")),
            "--delete",
        ]));
    }
}

/// Every committed round leaves a durable commit record whose root hash names the tree; the
/// snapshot carries it, `snapshots verify` re-reads the snapshot and agrees, and a snapshot
/// changed behind Ferry's back (same size, mtime restored) is caught.
#[test]
fn commits_record_a_root_hash_that_verify_checks() {
    let rig = Rig::new();
    let (src, state) = (rig.src.clone(), rig.state.clone());
    let push = || rig.push();
    push();
    let s1 = snapshots(&state, 1, 1);
    std::fs::write(src.join("new-file"), b"round two").unwrap();
    push();
    let s2 = snapshots(&state, 2, 2);
    // Round three changes nothing: same tree, same hash (the cache answers for every file).
    push();
    let s3 = snapshots(&state, 3, 3);
    let hash = |r: &serde_json::Value| r["root_hash"].as_str().unwrap().to_string();
    for r in [&s1[0], &s2[1], &s3[2]] {
        assert_eq!(hash(r).len(), 64, "{r}");
    }
    assert_ne!(hash(&s1[0]), hash(&s2[1]));
    assert_eq!(hash(&s2[1]), hash(&s3[2]));
    // The commit record is durable state beside the snapshots and agrees with them.
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("commits/m/last.json")).unwrap()).unwrap();
    assert_eq!(last["round"], 3);
    assert_eq!(last["root_hash"], s3[2]["root_hash"]);
    let history = std::fs::read_to_string(state.join("commits/m/history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 3);
    // verify re-reads every file (no cache) and agrees, for old and new snapshots.
    for r in [&s1[0], &s3[2]] {
        let id = r["id"].as_str().unwrap();
        let out = ferry(&[
            "snapshots",
            "verify",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            id,
            "--json",
        ]);
        check_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["verification"]["computed"], r["root_hash"], "{v}");
    }
    // Tamper with snapshot 1's copy of db/data.bin in the store: same size, mtime put back.
    let id1 = s1[0]["id"].as_str().unwrap();
    let victim = object_of(&state, id1, "db/data.bin");
    let meta = std::fs::metadata(&victim).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0xff;
    // A new file renamed over it, as an app would; the snapshot loses the original inode.
    let tmp = victim.with_extension("tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&tmp).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    std::fs::set_permissions(&tmp, meta.permissions()).unwrap();
    std::fs::rename(&tmp, &victim).unwrap();
    let out = ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id1,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("DOES NOT MATCH") && said.contains("db/data.bin"), "{said}");
}

/// The store's object holding `path` of snapshot `id` (from `snapshots ls --json`).
pub(crate) fn object_of(state: &Path, id: &str, path: &str) -> PathBuf {
    let out =
        ferry(&["snapshots", "ls", "--state-dir", s(state), "--module", "m", id, path, "--json"]);
    check_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hex = v[0]["blake3"].as_str().unwrap().to_string();
    state.join("store/m/objects").join(&hex[..2]).join(&hex)
}

/// Failover: `ferry promote` makes a snapshot the live data directory (a verified copy with
/// new inodes, swapped in atomically), keeps the replaced tree aside, and leaves the snapshot
/// intact even when the application then writes into the promoted tree.
#[test]
fn promote_makes_a_snapshot_the_live_tree() {
    use std::os::unix::fs::MetadataExt;
    let rig = Rig::new();
    let t = &rig.t;
    let (src, dst, state) = (rig.src.clone(), rig.dst.clone(), rig.state.clone());
    let push = || rig.push();
    push();
    let reference = t.path().join("ref1");
    copy_tree(&src, &reference);
    std::fs::write(src.join("db/later"), b"round two").unwrap();
    std::fs::remove_dir_all(src.join("db/wal")).unwrap();
    push();
    let list = snapshots(&state, 2, 2);
    rig.stop(); // failover: the destination's server is stopped first
    let id1 = list[0]["id"].as_str().unwrap();
    let out = ferry(&["promote", "--state-dir", s(&state), "--module", "m", "--snapshot", id1]);
    check_ok(&out);
    assert_same_tree(&reference, &dst);
    let (a, b) = (
        std::fs::metadata(dst.join("db/data.bin")).unwrap(),
        std::fs::metadata(object_of(&state, id1, "db/data.bin")).unwrap(),
    );
    assert_ne!(a.ino(), b.ino(), "the live tree must not share inodes with the snapshot");
    // The replaced tree (round two) is kept aside, named in the output.
    let text = String::from_utf8_lossy(&out.stdout);
    let aside = text.lines().find_map(|l| l.strip_prefix("the replaced tree is at ")).unwrap();
    let aside = PathBuf::from(aside.split(" (").next().unwrap());
    assert_same_tree(&src, &aside);
    // The application writes; the snapshot does not change.
    std::fs::write(dst.join("db/data.bin"), b"the app after failover").unwrap();
    let v = ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id1,
    ]);
    check_ok(&v);
    assert_same_tree(&reference, &view(&state, id1));
}

/// A btrfs filesystem on a loop device for the reflink and btrfs snapshotters (ext4 here has
/// neither). Needs root, loop devices and btrfs-progs (`.ci/run` installs it).
pub(crate) struct LoopBtrfs {
    pub(crate) mnt: PathBuf,
}

impl LoopBtrfs {
    pub(crate) fn new(dir: &Path) -> LoopBtrfs {
        let img = dir.join("btrfs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&img).unwrap().set_len(400 << 20).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (install btrfs-progs)"));
            assert!(
                out.status.success(),
                "{cmd:?}: {} (these tests need root, loop devices and btrfs-progs)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("mkfs.btrfs").arg("-q").arg(&img));
        run(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        LoopBtrfs { mnt }
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// `--snapshot reflink` on btrfs: snapshots are reflinked copies (own inodes, shared blocks)
/// of each round, unchanged by later rounds; on ext4 the server refuses to start, saying why.
/// `--snapshot btrfs`: a read-only subvolume snapshot per round, verified and deleted with
/// btrfs; a module that is not a subvolume is refused.
#[test]
fn reflink_and_btrfs_snapshotters() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    // ext4 (this tempdir) has no reflinks: refused at start, with the reason.
    let out = Command::new(FERRY)
        .args(["serve", "--listen", "127.0.0.1:0", "--snapshot", "reflink", "--identity"])
        .arg(c.join("destination"))
        .arg("--module")
        .arg(format!("m={}", s(&t.path().join("ext4-data"))))
        .arg("--state-dir")
        .arg(t.path().join("ext4-state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not support reflinks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fs = LoopBtrfs::new(t.path());
    let src = t.path().join("src");
    sample(&src);
    for kind in ["reflink", "btrfs"] {
        let data = fs.mnt.join(format!("{kind}-data"));
        let state = fs.mnt.join(format!("{kind}-state"));
        if kind == "btrfs" {
            // Not a subvolume yet: refused.
            std::fs::create_dir_all(&data).unwrap();
            let out = Command::new(FERRY)
                .args(["serve", "--listen", "127.0.0.1:0", "--snapshot", "btrfs", "--identity"])
                .arg(c.join("destination"))
                .arg("--module")
                .arg(format!("m={}", s(&data)))
                .arg("--state-dir")
                .arg(&state)
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("not a btrfs subvolume"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::remove_dir(&data).unwrap();
            check_ok(
                &Command::new("btrfs").args(["subvolume", "create"]).arg(&data).output().unwrap(),
            );
        }
        let srv = serve_with(
            &c.join("destination"),
            &[format!("m={}", s(&data))],
            &["--state-dir", s(&state), "--snapshot", kind],
        );
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        let push = || {
            check_ok(&ferry(&[
                "push",
                s(&src),
                &url,
                "--identity",
                s(&c.join("source")),
                "--delete",
            ]))
        };
        push();
        let first = snapshots(&state, 1, 1);
        let id1 = first[0]["id"].as_str().unwrap();
        assert_eq!(first[0]["kind"], if kind == "reflink" { "store" } else { kind });
        let snap1 = view(&state, id1);
        assert_same_tree(&src, &snap1);
        let kept = if kind == "reflink" {
            object_of(&state, id1, "db/data.bin")
        } else {
            snap1.join("db/data.bin")
        };
        let (live, snap) = (
            std::fs::metadata(data.join("db/data.bin")).unwrap(),
            std::fs::metadata(&kept).unwrap(),
        );
        assert_ne!(
            (live.dev(), live.ino()),
            (snap.dev(), snap.ino()),
            "{kind}: the snapshot shares the live inode"
        );
        if kind == "btrfs" {
            assert_eq!(std::fs::metadata(&snap1).unwrap().ino(), 256, "a subvolume");
            assert!(std::fs::write(snap1.join("x"), b"x").is_err(), "the snapshot is read-only");
        }
        let reference = t.path().join(format!("{kind}-ref1"));
        copy_tree(&src, &reference);
        std::fs::write(src.join("db/later"), kind).unwrap();
        push();
        let both = snapshots(&state, 2, 2);
        assert_same_tree(&reference, &view(&state, id1));
        // Restore on btrfs: reflinked copies (own inodes), read back against the root hash.
        let restored = fs.mnt.join(format!("{kind}-restored"));
        let out = ferry(&[
            "restore",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            first[0]["id"].as_str().unwrap(),
            "--to",
            s(&restored),
        ]);
        check_ok(&out);
        let said = String::from_utf8_lossy(&out.stdout);
        let how = if kind == "reflink" { "reflinked or copied files" } else { "reflinked copies" };
        assert!(said.contains(how), "{said}");
        assert_same_tree(&reference, &restored);
        assert_ne!(
            std::fs::metadata(restored.join("db/data.bin")).unwrap().ino(),
            std::fs::metadata(&kept).unwrap().ino()
        );
        std::fs::write(restored.join("db/data.bin"), b"the app wrote here").unwrap();
        assert_same_tree(&reference, &view(&state, id1));
        let id2 = both[1]["id"].as_str().unwrap();
        let v = ferry(&[
            "snapshots",
            "verify",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            id2,
        ]);
        check_ok(&v);
        let d = ferry(&[
            "snapshots",
            "delete",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            id2,
        ]);
        check_ok(&d);
        assert!(!state.join("snapshots/m").join(id2).exists());
        std::fs::remove_file(src.join("db/later")).unwrap();
        drop(srv);
    }
}

/// `--snapshot command`: the user's command runs after each commit with the round, the
/// module's root, the snapshot's name and the root hash; its record lists it; verify says it
/// cannot read it.
#[test]
fn command_snapshotter_runs_the_users_command() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state, store) = (
        t.path().join("src"),
        t.path().join("dst"),
        t.path().join("state"),
        t.path().join("store"),
    );
    sample(&src);
    std::fs::create_dir_all(&store).unwrap();
    let cmd = format!(
        "cp -a \"$FERRY_ROOT\" {store}/\"$FERRY_SNAPSHOT_NAME\" && echo \"$FERRY_ROUND $FERRY_ROOT_HASH\" > {store}/\"$FERRY_SNAPSHOT_NAME\".info",
        store = s(&store)
    );
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state), "--snapshot", "command", "--snapshot-command", &cmd],
    );
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    check_ok(&ferry(&["push", s(&src), &url, "--identity", s(&c.join("source")), "--delete"]));
    let list = snapshots(&state, 1, 1);
    let (id, hash) = (list[0]["id"].as_str().unwrap(), list[0]["root_hash"].as_str().unwrap());
    assert_eq!(list[0]["kind"], "command");
    assert_same_tree(&src, &store.join(id));
    assert_eq!(
        std::fs::read_to_string(store.join(format!("{id}.info"))).unwrap(),
        format!("1 {hash}\n")
    );
    let v = ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id,
    ]);
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("lives in your storage"),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
}

/// `push --source-snapshot`: the round reads a point-in-time image of the source, not the live
/// tree (reflink and btrfs on a loop-mounted btrfs; command with the user's own image), and the
/// images Ferry made are gone afterwards.
#[test]
fn push_reads_a_point_in_time_image_of_the_source() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let fs = LoopBtrfs::new(t.path());
    let dst = t.path().join("dst");
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id = c.join("source");
    // Reflink: a plain directory on btrfs.
    let src = fs.mnt.join("src");
    sample(&src);
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&id),
        "--delete",
        "--source-snapshot",
        "reflink",
    ]));
    assert_same_tree(&src, &dst);
    // Btrfs: the source is a subvolume.
    let vol = fs.mnt.join("vol");
    check_ok(&Command::new("btrfs").args(["subvolume", "create"]).arg(&vol).output().unwrap());
    sample(&vol);
    std::fs::write(vol.join("only-in-vol"), b"subvolume").unwrap();
    check_ok(&ferry(&[
        "push",
        s(&vol),
        &url,
        "--identity",
        s(&id),
        "--delete",
        "--source-snapshot",
        "btrfs",
    ]));
    assert_same_tree(&vol, &dst);
    let left: Vec<_> = std::fs::read_dir(&fs.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ferry-source-image"))
        .collect();
    assert!(left.is_empty(), "images left behind: {left:?}");
    // Command: the user's image differs from the live tree, so the destination shows which
    // one was read.
    let img = t.path().join("img");
    let cmd = format!(
        "cp -a \"$FERRY_ROOT\" {i} && echo from-the-image > {i}/marker && echo {i}",
        i = s(&img)
    );
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&id),
        "--delete",
        "--source-snapshot",
        "command",
        "--source-snapshot-command",
        &cmd,
    ]));
    assert_eq!(std::fs::read_to_string(dst.join("marker")).unwrap(), "from-the-image\n");
    assert!(!src.join("marker").exists());
}
