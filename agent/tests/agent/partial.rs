//! A source that cannot read all of its tree makes a partial round: `--delete` is off for the
//! round, the summary and JSON say so, and the exit code is 23. Deep trees are walked with a
//! bounded number of fds, never silently cut short.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::{creds, ferry, http, s, serve_with, FERRY};

/// Makes `p` and everything under it belong to `nobody` (65534).
fn give_to_nobody(p: &Path) {
    let out = Command::new("chown").args(["-R", "65534:65534"]).arg(p).output().unwrap();
    assert!(out.status.success());
}

/// As `nobody`, a source directory made unreadable (mode 000, which root would read anyway)
/// is listed without its children. `sync --delete` keeps the destination's copy of them,
/// says the round is partial in the summary and JSON, and exits 23.
#[test]
fn a_source_read_error_turns_delete_off_and_makes_the_round_partial() {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    for d in [&src, &dst] {
        std::fs::create_dir_all(d.join("a")).unwrap();
        std::fs::create_dir_all(d.join("secret")).unwrap();
        std::fs::write(d.join("a/f"), b"f").unwrap();
        std::fs::write(d.join("secret/precious"), b"precious").unwrap();
    }
    // Only on the destination, after the unreadable directory: still not deleted (the
    // round deletes nothing once the source has failed to read something).
    std::fs::write(dst.join("zzz"), b"z").unwrap();
    give_to_nobody(t.path());
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let run = |json: bool| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", FERRY, "sync", "--delete"]);
        if json {
            cmd.arg("--json");
        }
        cmd.arg(&src).arg(&dst).output().unwrap()
    };
    let out = run(true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(23), "{err}");
    assert_eq!(std::fs::read(dst.join("secret/precious")).unwrap(), b"precious");
    assert!(dst.join("zzz").exists(), "--delete ran in a partial round");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["partial"], true, "{report}");
    assert!(report["stats"]["source_errors"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["stats"]["files_deleted"], 0, "{report}");
    // The first round copied the directory's mode 000; as nobody the destination could not
    // set its metadata again (a separate matter): give it back its mode for the text run.
    std::fs::set_permissions(dst.join("secret"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(false);
    assert_eq!(out.status.code(), Some(23), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PARTIAL"), "{text}");
}

/// A tree 1500 directories deep, synced with 256 fds: a complete copy (the walk keeps a
/// bounded number of directory fds), or a non-zero exit naming the limit; never exit 0 with
/// entries missing.
#[test]
fn a_deep_tree_with_few_fds_is_copied_whole_or_fails_loudly() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    let mut p = src.clone();
    let mut expected = 0u64;
    for i in 0..1500 {
        p.push("d");
        expected += 1;
        if i % 100 == 0 || i == 1499 {
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("f"), format!("{i}")).unwrap();
            expected += 1;
        }
    }
    std::fs::create_dir_all(&p).unwrap();
    for round in 0..2 {
        let out = Command::new("prlimit")
            .args(["--nofile=256:256", FERRY, "sync", "--delete", "--json", s(&src), s(&dst)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["stats"]["entries_scanned"], expected, "round {round}: {report}");
            assert_eq!(report["partial"], false, "round {round}");
            let deepest = dst.join(p.strip_prefix(&src).unwrap()).join("f");
            assert_eq!(std::fs::read(deepest).unwrap(), b"1499", "round {round}");
            let mut n = 0;
            count(&dst, &mut n);
            assert_eq!(n, expected, "round {round}: entries missing in the copy");
        } else {
            assert!(
                err.contains("Too many open files") || err.contains("limit"),
                "round {round}: failed without naming the limit: {err}"
            );
        }
    }
    let _ = ferry(&["--version"]);
}

/// `--delete` of a tree 1500 directories deep with 256 fds: removed whole, since the delete
/// holds a bounded number of fds as the walk does (before, one per level: EMFILE part way).
#[test]
fn a_deep_tree_is_deleted_with_few_fds() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("keep"), b"keep").unwrap();
    let mut p = dst.join("gone");
    for i in 0..1500 {
        p.push("d");
        if i % 100 == 0 || i == 1499 {
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("f"), format!("{i}")).unwrap();
        }
    }
    let out = Command::new("prlimit")
        .args(["--nofile=256:256", FERRY, "sync", "--delete", "--json", s(&src), s(&dst)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!dst.join("gone").exists(), "the deep tree is still there: {err}");
    assert_eq!(std::fs::read(dst.join("keep")).unwrap(), b"keep");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["partial"], false, "{report}");
    assert!(report["stats"]["files_deleted"].as_u64().unwrap() >= 1, "{report}");
}

fn count(dir: &Path, n: &mut u64) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        *n += 1;
        if e.file_type().unwrap().is_dir() {
            count(&e.path(), n);
        }
    }
}

/// A partial pushed round leaves the destination's files in place but no commit record and
/// no snapshot: no snapshot claims to be a complete copy of a tree the source could not read.
#[test]
fn a_partial_push_gets_no_snapshot() {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = creds(&t.path().join("creds"));
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(src.join("secret")).unwrap();
    std::fs::write(src.join("secret/precious"), b"precious").unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state)],
    );
    give_to_nobody(&src);
    give_to_nobody(&c.join("source"));
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", FERRY, "push"])
        .arg(&src)
        .args([&url, "--identity", s(&c.join("source"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(23), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dst.join("a")).unwrap(), b"a");
    let list = ferry(&["snapshots", "list", "--state-dir", s(&state), "--module", "m", "--json"]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap_or_default();
    assert!(v.is_empty(), "a partial round was snapshotted: {v:?}");
}

/// A partial round is shown as such, not as a success: `"last_result": "partial"` and
/// `rounds_partial` in the pushing agent's status file, and the same in the serving side's
/// `GET /status` (its readiness unchanged by it).
#[test]
fn a_partial_round_is_partial_in_the_status_file_and_on_http() {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = creds(&t.path().join("creds"));
    let (src, dst, run) = (t.path().join("src"), t.path().join("dst"), t.path().join("run"));
    std::fs::create_dir_all(src.join("secret")).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let http_addr =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let srv =
        serve_with(&c.join("destination"), &[format!("m={}", s(&dst))], &["--http", &http_addr]);
    give_to_nobody(&src);
    give_to_nobody(&run);
    give_to_nobody(&c.join("source"));
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let status_file = run.join("status.json");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", FERRY, "push"])
        .arg(&src)
        .args([&url, "--identity", s(&c.join("source")), "--status-file", s(&status_file)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(23), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    assert_eq!(v["last_result"], "partial", "{v}");
    assert_eq!((v["rounds_partial"].as_u64(), v["rounds_ok"].as_u64()), (Some(1), Some(0)), "{v}");
    assert!(v["last_success_unix"].is_null(), "a partial round counted as a success: {v}");
    let (code, body) = http(&http_addr, "GET", "/status");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_result"], "partial", "{v}");
    assert_eq!(v["rounds_partial"], 1, "{v}");
}
