//! A local user with write access to the state directory (or beside the data directory)
//! cannot turn Ferry against other files: planted symlinks in the state directory, a hostile
//! snapshot record id, a planted promote staging name, a doctored `module.json`.

use std::path::{Path, PathBuf};

use crate::common::{check_ok, creds, ferry, noise, s, serve_with, Server};

struct Rig {
    t: tempfile::TempDir,
    c: PathBuf,
    src: PathBuf,
    dst: PathBuf,
    state: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let t = tempfile::tempdir().unwrap();
        let c = creds(t.path());
        let (src, dst, state) =
            (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
        std::fs::create_dir_all(&src).unwrap();
        // Large enough for the signature cache (1 MiB and more).
        std::fs::write(src.join("big"), noise(2 << 20, 3)).unwrap();
        std::fs::write(src.join("small"), b"small").unwrap();
        Rig { t, c, src, dst, state }
    }

    fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--state-dir", s(&self.state)];
        args.extend(extra);
        serve_with(&self.c.join("destination"), &[format!("m={}", s(&self.dst))], &args)
    }

    fn push(&self, srv: &Server) {
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        let id = self.c.join("source");
        check_ok(&ferry(&["push", s(&self.src), &url, "--identity", s(&id), "--retries", "0"]));
    }

    /// A directory outside the state directory with one file in it.
    fn victim(&self) -> PathBuf {
        let v = self.t.path().join("victim");
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("precious"), b"precious").unwrap();
        v
    }
}

fn snapshot_ids(state: &Path) -> Vec<String> {
    let out = ferry(&["snapshots", "list", "--state-dir", s(state), "--module", "m", "--json"]);
    check_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// The signature cache's blob directory replaced by a symlink: the cache is not used, and the
/// symlink's target is not emptied. (Before: its files were removed as orphans.)
#[test]
fn a_symlinked_signature_blob_directory_is_not_followed() {
    let rig = Rig::new();
    let victim = rig.victim();
    std::fs::create_dir_all(rig.state.join("signatures/m")).unwrap();
    std::os::unix::fs::symlink(&victim, rig.state.join("signatures/m/blobs")).unwrap();
    let srv = rig.serve(&[]);
    rig.push(&srv);
    std::fs::write(rig.src.join("small"), b"changed").unwrap();
    rig.push(&srv);
    assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1, "files added to the victim");
    assert_eq!(std::fs::read(rig.dst.join("small")).unwrap(), b"changed");
}

/// The resume journal's temp name planted as a symlink to a file outside: the file is not
/// truncated. (Before: the journal's write went through the symlink.)
#[test]
fn a_symlinked_journal_temp_name_is_not_followed() {
    let rig = Rig::new();
    let victim = rig.victim().join("precious");
    std::fs::create_dir_all(rig.state.join("journal")).unwrap();
    for name in ["m.tmp", ".m.jsonl.tmp", "m.jsonl.tmp"] {
        std::os::unix::fs::symlink(&victim, rig.state.join("journal").join(name)).unwrap();
    }
    let srv = rig.serve(&[]);
    rig.push(&srv);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // The journal directory itself as a symlink: refused (no journal), the target untouched.
    drop(srv);
    std::fs::remove_dir_all(rig.state.join("journal")).unwrap();
    let elsewhere = rig.t.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, rig.state.join("journal")).unwrap();
    let srv = rig.serve(&[]);
    std::fs::write(rig.src.join("small"), b"again").unwrap();
    rig.push(&srv);
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "journal written through a symlink"
    );
}

/// A snapshot record whose id field is `../../../victim`, planted among the directory
/// snapshots and in the store: retention deletes by the record's file name (a valid id), never
/// by what the file says, and the store refuses a record whose id is not its name (its
/// garbage collection then sweeps nothing until it is gone). (Before: the victim was deleted.)
#[test]
fn a_hostile_snapshot_record_id_cannot_reach_outside() {
    let rig = Rig::new();
    let victim = rig.victim();
    let srv = rig.serve(&["--keep-last", "1"]);
    rig.push(&srv);
    let ids = snapshot_ids(&rig.state);
    let store = rig.state.join("store/m/snapshots");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join(format!("{}.json", ids[0]))).unwrap())
            .unwrap();
    let planted = "000000-20200101T000000Z";
    rec["id"] = "../../../victim".into();
    rec["round"] = 0.into();
    rec["time_unix"] = 1_577_836_800u64.into();
    let dir = rig.state.join("snapshots/m");
    std::fs::create_dir_all(dir.join(planted)).unwrap();
    let mut legacy = rec.clone();
    legacy["kind"] = "hardlink".into();
    std::fs::write(dir.join(format!("{planted}.json")), serde_json::to_vec(&legacy).unwrap())
        .unwrap();
    let in_store = store.join("000000-20200101T000001Z.json");
    std::fs::write(&in_store, serde_json::to_vec(&rec).unwrap()).unwrap();
    // A record named outside the grammar is ignored altogether.
    std::fs::write(dir.join("..x.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
    std::fs::write(rig.src.join("small"), b"round two").unwrap();
    rig.push(&srv);
    assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"precious");
    assert!(!dir.join(planted).exists(), "the planted directory snapshot was retired by name");
    let ids = snapshot_ids(&rig.state);
    assert!(!ids.iter().any(|i| i.contains('/') || i.starts_with("000000")), "{ids:?}");
    assert_eq!(ids.len(), 2, "the store swept nothing past a record it cannot read: {ids:?}");
    std::fs::remove_file(&in_store).unwrap();
    std::fs::write(rig.src.join("small"), b"round three").unwrap();
    rig.push(&srv);
    assert_eq!(snapshot_ids(&rig.state).len(), 1);
    // A hostile id on the command line is refused before any path is built.
    let out = ferry(&[
        "snapshots",
        "delete",
        "--state-dir",
        s(&rig.state),
        "--module",
        "m",
        "--snapshot",
        "../../../victim",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(victim.join("precious").exists());
}

/// `ferry promote` with its staging name planted as a symlink to another directory: promote
/// refuses, and neither the victim nor the data directory changes. (Before: the snapshot was
/// synced with --delete into the victim.)
#[test]
fn promote_does_not_follow_a_planted_staging_name() {
    let rig = Rig::new();
    let victim = rig.victim();
    let srv = rig.serve(&[]);
    rig.push(&srv);
    drop(srv);
    let id = snapshot_ids(&rig.state)[0].clone();
    let staging = rig.t.path().join(format!(".dst.ferry-promote-{id}"));
    std::os::unix::fs::symlink(&victim, &staging).unwrap();
    std::fs::write(rig.dst.join("app-wrote"), b"live").unwrap();
    let out = ferry(&["promote", "--state-dir", s(&rig.state), "--module", "m", "--snapshot", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "promote went through a planted staging symlink");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    assert_eq!(std::fs::read(rig.dst.join("app-wrote")).unwrap(), b"live");
    // Once the name is cleared, promote works.
    std::fs::remove_file(&staging).unwrap();
    let out = ferry(&["promote", "--state-dir", s(&rig.state), "--module", "m", "--snapshot", &id]);
    check_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("will be replaced"));
    assert!(!rig.dst.join("app-wrote").exists());
}

/// `module.json` doctored to lead through a symlink to another directory: promote refuses it
/// and says to pass --data; the directory the symlink leads to is untouched.
#[test]
fn promote_refuses_a_module_record_leading_through_a_symlink() {
    let rig = Rig::new();
    let victim = rig.victim();
    let srv = rig.serve(&[]);
    rig.push(&srv);
    drop(srv);
    let id = snapshot_ids(&rig.state)[0].clone();
    let link = rig.t.path().join("innocent");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let rec = serde_json::json!({ "path": link });
    std::fs::write(rig.state.join("commits/m/module.json"), rec.to_string()).unwrap();
    let out = ferry(&["promote", "--state-dir", s(&rig.state), "--module", "m", "--snapshot", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--data"), "{err}");
    assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"precious");
    assert!(link.is_symlink());
}

/// `serve --snapshot reflink` probes the state directory for reflinks with two scratch files;
/// planted there as symlinks to files outside, they are removed, never written through,
/// whether or not this filesystem has reflinks. (Before: the first target was overwritten
/// with the probe's 4 KiB, the second truncated.)
#[test]
fn a_symlinked_reflink_probe_is_not_followed() {
    let r = Rig::new();
    let dir = r.state.join("snapshots/m");
    std::fs::create_dir_all(&dir).unwrap();
    let victims = [r.t.path().join("victim-a"), r.t.path().join("victim-b")];
    for (v, name) in victims.iter().zip([".ferry-reflink-probe-a", ".ferry-reflink-probe-b"]) {
        std::fs::write(v, b"precious").unwrap();
        std::os::unix::fs::symlink(v, dir.join(name)).unwrap();
    }
    // It either serves (reflinks work here) or refuses at start-up; either way, briefly.
    let out = std::process::Command::new("timeout")
        .args(["3", crate::common::FERRY, "serve", "--listen", "127.0.0.1:0", "--identity"])
        .arg(r.c.join("destination"))
        .args(["--module", &format!("m={}", s(&r.dst)), "--state-dir", s(&r.state)])
        .args(["--snapshot", "reflink"])
        .output()
        .unwrap();
    for v in &victims {
        assert_eq!(
            std::fs::read(v).unwrap(),
            b"precious",
            "{} was written through a planted probe name ({})",
            v.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for name in [".ferry-reflink-probe-a", ".ferry-reflink-probe-b"] {
        assert!(std::fs::symlink_metadata(dir.join(name)).is_err(), "{name} left behind");
    }
}

/// A legacy snapshot whose tree is a symlink to a directory outside, with a record beside
/// it: it is not listed, and `snapshots verify` does not walk (read) what the symlink leads
/// to. (Before: it was listed, and verify hashed the victim's files.)
#[test]
fn a_symlinked_legacy_snapshot_tree_is_not_walked() {
    let r = Rig::new();
    let victim = r.victim();
    let dir = r.state.join("snapshots/m");
    std::fs::create_dir_all(&dir).unwrap();
    let id = "000001-20260101T000000Z";
    let rec = serde_json::json!({
        "id": id, "round": 1, "time_unix": 1_767_225_600u64, "entries": 1, "bytes": 8,
        "stats": serde_json::to_value(ferry_core::Stats::default()).unwrap(),
        "root_hash": "00".repeat(32), "kind": "hardlink-tree",
    });
    std::fs::write(dir.join(format!("{id}.json")), serde_json::to_vec(&rec).unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(id)).unwrap();
    assert!(!snapshot_ids(&r.state).contains(&id.to_string()), "a symlinked tree is listed");
    let out = ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&r.state),
        "--module",
        "m",
        "--snapshot",
        id,
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verified a symlinked tree: {text}");
    assert!(!text.contains("\"computed\""), "walked the victim: {text}");
}
