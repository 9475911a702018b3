//! The snapshot store as a user meets it: `snapshots diff` and `ls` on pushed rounds, a round
//! that changes nothing costing no new tree, and a damaged or hostile store (truncated,
//! swapped or missing objects, trees and records; symlinks planted in it) giving an error that
//! names the snapshot and the path, never a panic, never a followed symlink.

use std::path::{Path, PathBuf};

use crate::common::{check_ok, ferry, s, Pair};

/// A served module with a state directory and a small tree (nested directories, a symlink)
/// to push, and the store operations these tests use.
struct Rig(Pair);

impl std::ops::Deref for Rig {
    type Target = Pair;
    fn deref(&self) -> &Pair {
        &self.0
    }
}

impl Rig {
    fn new() -> Rig {
        let p = Pair::with_state(&[]);
        std::fs::create_dir_all(p.src.join("docs/old")).unwrap();
        std::fs::write(p.src.join("docs/a.txt"), b"alpha").unwrap();
        std::fs::write(p.src.join("docs/old/b.txt"), b"bravo").unwrap();
        std::fs::write(p.src.join("top"), b"top").unwrap();
        std::os::unix::fs::symlink("docs/a.txt", p.src.join("link")).unwrap();
        Rig(p)
    }

    fn push(&self) {
        check_ok(&self.try_push());
    }

    fn try_push(&self) -> std::process::Output {
        self.0.push(&["--delete", "--retries", "0"])
    }

    fn ids(&self) -> Vec<String> {
        self.snapshot_list().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    }

    fn snap(&self, args: &[&str]) -> std::process::Output {
        self.snapshots(args)
    }

    fn verify(&self, id: &str) -> std::process::Output {
        self.snap(&["verify", "--snapshot", id])
    }

    fn store(&self) -> PathBuf {
        self.state.join("store/m")
    }
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every file under `dir`, recursively (no symlink followed).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// `diff` lists added, removed, changed and metadata-only paths between two rounds, as text and
/// JSON; `ls` browses a snapshot without restoring it; a round that changes nothing adds no
/// tree and no object.
#[test]
fn diff_and_ls_browse_snapshots_without_restoring() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::new();
    rig.push();
    let trees_before = files(&rig.store().join("trees")).len();
    let objects_before = files(&rig.store().join("objects")).len();
    rig.push(); // no change
    assert_eq!(
        files(&rig.store().join("trees")).len(),
        trees_before,
        "a no-change round wrote trees"
    );
    assert_eq!(files(&rig.store().join("objects")).len(), objects_before);
    std::fs::write(rig.src.join("docs/a.txt"), b"alpha, edited").unwrap();
    std::fs::set_permissions(rig.src.join("top"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_dir_all(rig.src.join("docs/old")).unwrap();
    std::fs::write(rig.src.join("new"), b"new").unwrap();
    rig.push();
    let ids = rig.ids();
    assert_eq!(ids.len(), 3);
    let root_of = |i: usize| {
        let out = rig.snap(&["list", "--json"]);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        v[i]["root_hash"].as_str().unwrap().to_string()
    };
    assert_eq!(root_of(0), root_of(1), "no change: the same root");

    let out = rig.snap(&["diff", &ids[1], &ids[2], "--json"]);
    check_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: Vec<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["change"].as_str().unwrap().into(), c["path"].as_str().unwrap().into()))
        .filter(|(_, p): &(String, String)| p != "." && p != "docs")
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    let want =
        [("changed", "docs/a.txt"), ("removed", "docs/old"), ("added", "new"), ("metadata", "top")];
    let want: Vec<(String, String)> =
        want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert!(want.iter().all(|w| got.contains(w)), "{got:?}");
    assert!(!got.iter().any(|(_, p)| p == "link"), "unchanged paths are not listed: {got:?}");
    let out = rig.snap(&["diff", &ids[0], &ids[1]]);
    check_ok(&out);
    assert!(out.stdout.is_empty(), "no difference: {}", text(&out));
    let out = rig.snap(&["diff", &ids[1], &ids[2]]);
    check_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed  docs/a.txt"), "{}", text(&out));

    let out = rig.snap(&["ls", &ids[0], "docs"]);
    check_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("docs/a.txt") && said.contains("docs/old"), "{said}");
    let out = rig.snap(&["ls", &ids[2], "--json"]);
    check_ok(&out);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let link = v.iter().find(|e| e["path"] == "link").unwrap();
    assert_eq!(link["target"], "docs/a.txt");
    let top = v.iter().find(|e| e["path"] == "top").unwrap();
    assert_eq!(top["mode"], "0600");
    // Unknown snapshot or path: a usage error naming it.
    let out = rig.snap(&["ls", &ids[2], "docs/old"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("docs/old"), "{}", text(&out));
    let out = rig.snap(&["diff", &ids[0], "999999-20200101T000000Z"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // verify --path checks one subtree.
    let out = rig.snap(&["verify", "--snapshot", &ids[0], "--path", "docs/old"]);
    check_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact at docs/old"), "{}", text(&out));
}

/// A damaged store: each kind of damage is reported by `verify` with exit 1 or an error
/// naming the snapshot and the path; nothing panics; the next round still snapshots.
#[test]
fn a_damaged_store_names_the_snapshot_and_path() {
    let rig = Rig::new();
    rig.push();
    let id = rig.ids()[0].clone();
    let object = |name: &str| {
        let out = rig.snap(&["ls", &id, name, "--json"]);
        check_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let hex = v[0]["blake3"].as_str().unwrap().to_string();
        rig.store().join("objects").join(&hex[..2]).join(&hex)
    };
    let no_panic = |o: &std::process::Output| {
        assert!(!text(o).contains("panicked"), "{}", text(o));
    };

    // Truncated object.
    let a = object("docs/a.txt");
    let saved = std::fs::read(&a).unwrap();
    std::fs::remove_file(&a).unwrap();
    std::fs::write(&a, &saved[..2]).unwrap();
    let out = rig.verify(&id);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&id) && text(&out).contains("docs/a.txt"), "{}", text(&out));
    // Restore refuses to hand back a damaged tree, and leaves nothing.
    let to = rig.state.with_file_name("restored");
    let out = ferry(&[
        "restore",
        "--state-dir",
        s(&rig.state),
        "--module",
        "m",
        "--snapshot",
        &id,
        "--to",
        s(&to),
    ]);
    no_panic(&out);
    assert!(!out.status.success() && !to.exists(), "{}", text(&out));
    assert!(text(&out).contains("docs/a.txt"), "{}", text(&out));

    // Swapped: another object's bytes under this name.
    std::fs::remove_file(&a).unwrap();
    std::fs::copy(object("top"), &a).unwrap();
    let out = rig.verify(&id);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("docs/a.txt"), "{}", text(&out));

    // Missing object.
    std::fs::remove_file(&a).unwrap();
    let out = rig.verify(&id);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("docs/a.txt"), "{}", text(&out));

    // A symlink planted as the object, pointing outside: not followed.
    let outside = rig.state.with_file_name("outside");
    std::fs::write(&outside, b"alpha").unwrap();
    std::os::unix::fs::symlink(&outside, &a).unwrap();
    let out = rig.verify(&id);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "followed a planted symlink: {}", text(&out));
    std::fs::remove_file(&a).unwrap();
    std::fs::write(&a, &saved).unwrap();
    check_ok(&rig.verify(&id));

    // A damaged tree object: truncated.
    let trees = files(&rig.store().join("trees"));
    let victim = trees.iter().find(|p| std::fs::metadata(p).unwrap().len() > 8).unwrap().clone();
    let tree_bytes = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, &tree_bytes[..tree_bytes.len() / 2]).unwrap();
    let out = rig.verify(&id);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&id), "{}", text(&out));
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, &tree_bytes).unwrap();
    check_ok(&rig.verify(&id));

    // A garbled record: left out of the list with a warning naming its file, verify says
    // there is no such snapshot; nothing panics.
    let rec = rig.store().join("snapshots").join(format!("{id}.json"));
    let rec_bytes = std::fs::read(&rec).unwrap();
    std::fs::write(&rec, b"{ not json").unwrap();
    let out = rig.snap(&["list"]);
    no_panic(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&id), "{}", text(&out));
    let out = rig.verify(&id);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::write(&rec, &rec_bytes).unwrap();
    check_ok(&rig.verify(&id));

    // The next round still snapshots, and verifies.
    std::fs::write(rig.src.join("top"), b"changed").unwrap();
    rig.push();
    let ids = rig.ids();
    assert_eq!(ids.len(), 2);
    check_ok(&rig.verify(&ids[1]));
}

/// A symlink planted for a directory of the store (its `objects`, or the whole module's
/// store): the server's round does not write through it, the CLI refuses to read through it,
/// and the symlink's target is untouched.
#[test]
fn a_symlink_planted_in_the_store_is_not_followed() {
    let rig = Rig::new();
    rig.push();
    let id = rig.ids()[0].clone();
    let elsewhere = rig.state.with_file_name("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("precious"), b"precious").unwrap();
    let objects = rig.store().join("objects");
    let real = rig.store().join("objects.real");
    std::fs::rename(&objects, &real).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &objects).unwrap();
    let out = rig.verify(&id);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    assert!(text(&out).contains("objects"), "{}", text(&out));
    // A round: its snapshot fails, so the push fails (exit 6) naming the planted directory,
    // and nothing lands elsewhere.
    std::fs::write(rig.src.join("top"), b"round two").unwrap();
    let out = rig.try_push();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("the destination did not record the round"), "{}", text(&out));
    assert!(text(&out).contains("objects (not a plain directory"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1, "written through a symlink");
    assert_eq!(std::fs::read(elsewhere.join("precious")).unwrap(), b"precious");
    // Put back: the next round snapshots again, from the whole tree.
    std::fs::remove_file(&objects).unwrap();
    std::fs::rename(&real, &objects).unwrap();
    std::fs::write(rig.src.join("top"), b"round three").unwrap();
    rig.push();
    let ids = rig.ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    check_ok(&rig.verify(&ids[1]));
}
