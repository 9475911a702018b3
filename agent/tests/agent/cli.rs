//! The `ferry` binary as a user runs it: flags, output, exit codes.

use std::path::Path;
use std::process::Output;

use crate::common::{assert_same_tree, ferry};

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("logs")).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha\n".repeat(1000)).unwrap();
    std::fs::write(root.join("logs/app.log"), b"line\n".repeat(5000)).unwrap();
    std::fs::write(root.join("logs/skip.tmp"), b"scratch").unwrap();
}

#[test]
fn json_stats_and_a_second_run_moves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src);
    let s = src.to_str().unwrap();
    let d = dst.to_str().unwrap();
    let first = json(&ferry(&["sync", s, d, "--json"]));
    assert_eq!(first["stats"]["files_new"], 3);
    assert_eq!(first["stats"]["literal_bytes"], 6000 + 25000 + 7);
    let second = json(&ferry(&["sync", s, d, "--json"]));
    assert_eq!(second["stats"]["files_unchanged"], 3);
    assert_eq!(second["stats"]["literal_bytes"], 0);
    assert_eq!(second["stats"]["payload_bytes"], 0);
}

#[test]
fn dry_run_itemizes_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("extra"), b"x").unwrap();
    let out =
        ferry(&["sync", src.to_str().unwrap(), dst.to_str().unwrap(), "--dry-run", "--delete"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("+new     file     a.txt"), "{text}");
    assert!(text.contains("-delete  file     extra"), "{text}");
    let mut names: Vec<_> =
        std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["extra"]);
}

#[test]
fn excluded_paths_are_neither_sent_nor_deleted() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("keep.tmp"), b"mine").unwrap();
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let r = json(&ferry(&["sync", s, d, "--delete", "--exclude", "*.tmp", "--json"]));
    assert_eq!(r["stats"]["files_new"], 2);
    assert!(!dst.join("logs/skip.tmp").exists());
    assert_eq!(std::fs::read(dst.join("keep.tmp")).unwrap(), b"mine");
}

#[test]
fn errors_explain_and_set_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope");
    let out = ferry(&["sync", missing.to_str().unwrap(), t.path().join("d").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open source directory"), "{err}");
    let out = ferry(&["sync", "--bogus-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ferry(&["sync", "a", "b", "--exclude", "a{b"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 10, defect 1: failures on this machine outside a round (writing credentials, reading a
/// status file) exit 7 as the README promises; they exited 2 (usage) before.
#[test]
fn local_failures_outside_a_round_exit_7() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = ferry(&["init", "--out", file.join("creds").to_str().unwrap(), "--name", "h"]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let missing = t.path().join("status.json");
    let out = ferry(&["status", "--status-file", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ferry(&["status", "--status-file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7), "not JSON: {}", String::from_utf8_lossy(&out.stderr));
    // A snapshot that does not exist is the user's mistake, not the machine's.
    let state = t.path().join("state");
    let out = ferry(&[
        "snapshots",
        "delete",
        "--state-dir",
        state.to_str().unwrap(),
        "--module",
        "m",
        "--snapshot",
        "000001-x",
    ]);
    assert_ne!(out.status.code(), Some(0));
}

/// README's first command: a sample tree, two agents on loopback, three pushed rounds, a
/// snapshot per round, the destination equal to the source.
#[test]
fn demo_runs_the_whole_job() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let out = ferry(&["demo", dir.to_str().unwrap(), "--files", "40", "--big-mib", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("== round 3: nothing changed"), "{text}");
    let snaps: Vec<_> = std::fs::read_dir(dir.join("state/store/data/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert_same_tree(&dir.join("source"), &dir.join("destination"));
}

/// In a container Ferry runs as PID 1, which ignores signals it has no handler for: `serve`
/// and `push --every` must stop on SIGTERM themselves, with exit code 143.
#[test]
fn sigterm_stops_serve_and_a_scheduled_push_with_143() {
    use std::time::{Duration, Instant};
    let t = tempfile::tempdir().unwrap();
    let c = crate::common::creds(t.path());
    let srv = crate::common::serve_with(
        &c.join("destination"),
        &[format!("m={}", crate::common::s(&t.path().join("dst")))],
        &[],
    );
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let mut push = std::process::Command::new(crate::common::FERRY)
        .args(["push", crate::common::s(&t.path().join("src")), &url, "--every", "1h"])
        .args(["--identity", crate::common::s(&c.join("source"))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for pid in [push.id(), srv.child.id()] {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }
    let started = Instant::now();
    let code = loop {
        if let Some(st) = push.try_wait().unwrap() {
            break st.code();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "push ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(143));
    let mut srv = srv;
    let started = Instant::now();
    let code = loop {
        if let Some(st) = srv.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(143));
}
