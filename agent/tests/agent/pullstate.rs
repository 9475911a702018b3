//! `ferry pull --state-dir`: the pulling destination keeps what `ferry serve` keeps for a
//! pushed module (commit records, snapshots of every kind, the resume journal, the signature
//! cache, retention, status and metrics), through the same state round (issue 15).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    assert_same_tree, check_ok, copy_tree, creds, ferry, http, noise, s, sample, serve, serve_with,
    FERRY,
};
use crate::snapshots::LoopBtrfs;

/// `ferry pull URL DST --identity ID --state-dir STATE --delete --json` with `extra` flags.
fn pull(url: &str, dst: &Path, c: &Path, state: &Path, extra: &[&str]) -> Output {
    let id = c.join("source");
    let mut args = vec!["pull", url, s(dst), "--identity", s(&id), "--state-dir", s(state)];
    args.extend(["--delete", "--json", "--transport", "tcp"]);
    args.extend(extra);
    ferry(&args)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: exit {:?}\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A pull that must succeed; its `--json` report.
fn pull_ok(url: &str, dst: &Path, c: &Path, state: &Path, extra: &[&str]) -> serde_json::Value {
    let out = pull(url, dst, c, state, extra);
    check_ok(&out);
    json(&out)
}

/// `ferry snapshots list` of `module`, oldest first.
fn snapshots(state: &Path, module: &str) -> Vec<serde_json::Value> {
    let out = ferry(&["snapshots", "list", "--state-dir", s(state), "--module", module, "--json"]);
    check_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Snapshot `id` of `module` as a directory: a btrfs snapshot itself, a store snapshot
/// restored into a fresh directory beside the state directory.
fn view(state: &Path, module: &str, id: &str) -> PathBuf {
    let dir = state.join("snapshots").join(module).join(id);
    if dir.is_dir() {
        return dir;
    }
    let to = state.with_file_name(format!("view-{module}-{id}"));
    let _ = std::fs::remove_dir_all(&to);
    let args = ["restore", "--state-dir", s(state), "--module", module, "--snapshot", id];
    check_ok(&ferry(&[&args[..], &["--to", s(&to)]].concat()));
    to
}

/// The report's commit: recorded, as round `round`, under the newest snapshot's id and root
/// hash (a pull's own commit, so the root hash is there). Returns the snapshot id.
fn assert_recorded(report: &serde_json::Value, state: &Path, module: &str, round: u64) -> String {
    let commit = &report["commit"];
    assert_eq!(commit["state"], "recorded", "{report}");
    assert_eq!(commit["round"].as_u64(), Some(round), "{report}");
    let list = snapshots(state, module);
    let newest = list.last().unwrap();
    assert_eq!(commit["snapshot"], newest["id"], "{list:?}");
    assert_eq!(commit["root_hash"], newest["root_hash"], "{list:?}");
    assert_eq!(commit["root_hash"].as_str().unwrap().len(), 64, "{report}");
    newest["id"].as_str().unwrap().to_string()
}

/// Three pulled rounds with changes in between (content, mode, a delete, an add, a removed
/// directory): after each, the newest snapshot restores to the source as it was at that
/// round, earlier ones stay as they were, `--keep-last 2` drops round 1, the JSON names the
/// round and snapshot, and `snapshots verify` reads the newest back. A dry run records
/// nothing.
#[test]
fn each_pulled_round_leaves_a_snapshot_of_that_round() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a"), b"version 1").unwrap();
    std::fs::write(src.join("d/b"), b"bbb").unwrap();
    std::os::unix::fs::symlink("a", src.join("l")).unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}:ro", s(&src))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let keep = |n: u32| {
        let r = t.path().join(format!("ref{n}"));
        copy_tree(&src, &r);
        r
    };
    let r1 = pull_ok(&url, &dst, &c, &state, &["--keep-last", "2"]);
    let ref1 = keep(1);
    let id1 = assert_recorded(&r1, &state, "m", 1);
    assert_same_tree(&ref1, &view(&state, "m", &id1));
    // Round 2: content, mode and type changes, a delete and an add.
    std::fs::write(src.join("a"), b"version 2, longer").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("d/b"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(src.join("l")).unwrap();
    std::fs::write(src.join("c"), b"new").unwrap();
    let r2 = pull_ok(&url, &dst, &c, &state, &["--keep-last", "2"]);
    let ref2 = keep(2);
    let id2 = assert_recorded(&r2, &state, "m", 2);
    assert_same_tree(&ref2, &view(&state, "m", &id2));
    assert_same_tree(&ref1, &view(&state, "m", &id1));
    // A dry run changes nothing and records nothing.
    std::fs::remove_dir_all(src.join("d")).unwrap();
    let dry = pull_ok(&url, &dst, &c, &state, &["--keep-last", "2", "--dry-run"]);
    assert_eq!(dry["commit"]["state"], "unrecorded", "{dry}");
    assert_eq!(snapshots(&state, "m").len(), 2);
    assert_same_tree(&ref2, &dst);
    // Round 3: the directory goes; retention drops round 1.
    let r3 = pull_ok(&url, &dst, &c, &state, &["--keep-last", "2"]);
    let id3 = assert_recorded(&r3, &state, "m", 3);
    let rounds: Vec<_> =
        snapshots(&state, "m").iter().map(|r| r["round"].as_u64().unwrap()).collect();
    assert_eq!(rounds, [2, 3]);
    assert_same_tree(&src, &view(&state, "m", &id3));
    assert_same_tree(&ref2, &view(&state, "m", &id2));
    assert_same_tree(&src, &dst);
    check_ok(&ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        &id3,
    ]));
    // The summary (without --json) says the round was recorded, by round and snapshot.
    std::fs::write(src.join("a"), b"version 4").unwrap();
    let out = ferry(&[
        "pull",
        &url,
        s(&dst),
        "--identity",
        s(&c.join("source")),
        "--state-dir",
        s(&state),
        "--no-progress",
    ]);
    check_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("recorded by the destination: round 4, snapshot "), "{said}");
}

/// The other snapshotters on a pulling destination: `reflink` and `btrfs` on a loop-mounted
/// btrfs, `command` with the user's own copy. Each round's snapshot equals the source at that
/// round after the next one changed the live tree.
#[test]
fn pulled_rounds_are_snapshotted_by_every_kind() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let src = t.path().join("src");
    sample(&src);
    let srv = serve(&c.join("destination"), &[format!("m={}:ro", s(&src))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let fs = LoopBtrfs::new(t.path());
    let store = t.path().join("user-store");
    std::fs::create_dir_all(&store).unwrap();
    let cmd = format!(
        "cp -a \"$FERRY_ROOT\" {store}/\"$FERRY_SNAPSHOT_NAME\" && echo \"$FERRY_ROUND $FERRY_ROOT_HASH\" > {store}/\"$FERRY_SNAPSHOT_NAME\".info",
        store = s(&store)
    );
    for kind in ["reflink", "btrfs", "command"] {
        let base = if kind == "command" { t.path().to_path_buf() } else { fs.mnt.clone() };
        let (dst, state) = (base.join(format!("{kind}-data")), base.join(format!("{kind}-state")));
        if kind == "btrfs" {
            check_ok(
                &Command::new("btrfs").args(["subvolume", "create"]).arg(&dst).output().unwrap(),
            );
        }
        let mut extra = vec!["--snapshot", kind];
        if kind == "command" {
            extra.extend(["--snapshot-command", &cmd]);
        }
        let r1 = pull_ok(&url, &dst, &c, &state, &extra);
        let id1 = assert_recorded(&r1, &state, "m", 1);
        let list = snapshots(&state, "m");
        assert_eq!(list[0]["kind"], if kind == "reflink" { "store" } else { kind }, "{list:?}");
        let reference = t.path().join(format!("{kind}-ref1"));
        copy_tree(&src, &reference);
        std::fs::write(src.join("db/later"), kind).unwrap();
        let r2 = pull_ok(&url, &dst, &c, &state, &extra);
        let id2 = assert_recorded(&r2, &state, "m", 2);
        if kind == "command" {
            assert_same_tree(&reference, &store.join(&id1));
            assert_same_tree(&src, &store.join(&id2));
            let hash = r2["commit"]["root_hash"].as_str().unwrap();
            let info = std::fs::read_to_string(store.join(format!("{id2}.info"))).unwrap();
            assert_eq!(info, format!("2 {hash}\n"));
        } else {
            assert_same_tree(&reference, &view(&state, "m", &id1));
            assert_same_tree(&src, &view(&state, "m", &id2));
        }
        std::fs::remove_file(src.join("db/later")).unwrap();
    }
}

/// A pull killed (-9) in the middle of a large file: the next pull resumes the file from the
/// segments the killed one journaled under the state directory, instead of starting it over,
/// and its snapshot is the source's tree. The kill happens once the journal shows two
/// segments written (not after a delay); the server paces the file so it lands mid-file.
/// While the first pull runs, a second one recording the same module is refused.
#[test]
fn a_pull_killed_mid_file_resumes_from_its_journal() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(&src).unwrap();
    let size = 48u64 << 20;
    std::fs::write(src.join("db.img"), noise(size as usize, 8)).unwrap();
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}:ro", s(&src))],
        &["--bwlimit", "8M", "--idle-timeout", "2"],
    );
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id = c.join("source");
    // Over TCP, so the server hears of the kill at once and frees the module.
    let mut puller = Command::new(FERRY)
        .args(["pull", &url, s(&dst), "--identity", s(&id), "--state-dir", s(&state)])
        .args(["--transport", "tcp", "--compress-level", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = state.join("journal/m.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read(&journal).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) < 2 {
        assert!(Instant::now() < deadline, "the journal never showed two segments");
        assert!(puller.try_wait().unwrap().is_none(), "the pull ended before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Meanwhile a second pull of the module into the same state directory (through another
    // server, so the first server's one-round-per-module rule is not what stops it) is
    // refused: one process records a module's rounds at a time. Transient: exit 6.
    let other = serve(&c.join("destination"), &[format!("m={}:ro", s(&src))]);
    let other_url = format!("ferry://127.0.0.1:{}/m", other.addr.port());
    let out = pull(&other_url, &t.path().join("dst2"), &c, &state, &["--retries", "0"]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process is running a round of it"), "{err}");
    assert!(puller.try_wait().unwrap().is_none(), "the first pull ended meanwhile");
    puller.kill().unwrap();
    puller.wait().unwrap();
    assert!(!dst.join("db.img").exists(), "the file was committed before the kill");
    assert!(snapshots(&state, "m").is_empty(), "a killed round was snapshotted");
    let r = pull_ok(
        &url,
        &dst,
        &c,
        &state,
        &["--compress-level", "0", "--retries", "20", "--retry-base", "200ms"],
    );
    assert_same_tree(&src, &dst);
    let resumed = r["stats"]["resumed_bytes"].as_u64().unwrap();
    assert!(resumed >= 2 * (8 << 20), "the file started over: {r}");
    assert_eq!(resumed + r["stats"]["literal_bytes"].as_u64().unwrap(), size, "{r}");
    let names: Vec<_> = std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["db.img"], "temp files left");
    assert_eq!(std::fs::read(&journal).unwrap(), b"", "the journal is emptied after a success");
    let id1 = assert_recorded(&r, &state, "m", 1);
    assert_same_tree(&src, &view(&state, "m", &id1));
}

/// The second pull of a large file that changed on the source signs its basis from the
/// signature cache the first pull stored (counted in the JSON: hits, bytes not re-read),
/// with the same tree as a result. `--no-signature-cache` keeps none and reports none.
#[test]
fn the_second_pull_of_a_large_file_signs_it_from_the_cache() {
    for cached in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let c = creds(t.path());
        let (src, dst, state) =
            (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        let big = noise(6 << 20, 11);
        std::fs::write(src.join("d/big"), &big).unwrap();
        std::fs::write(src.join("small"), b"below the cache's threshold").unwrap();
        let srv = serve(&c.join("destination"), &[format!("m={}:ro", s(&src))]);
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        let extra: &[&str] = if cached { &[] } else { &["--no-signature-cache"] };
        let r1 = pull_ok(&url, &dst, &c, &state, extra);
        let mut b2 = big.clone();
        b2[3 << 20..(3 << 20) + 100].fill(7);
        std::fs::write(src.join("d/big"), &b2).unwrap();
        let r2 = pull_ok(&url, &dst, &c, &state, extra);
        assert_same_tree(&src, &dst);
        assert_eq!(r2["stats"]["files_changed"].as_u64(), Some(1), "{r2}");
        if cached {
            assert_eq!(r1["signature_cache"]["stored"].as_u64(), Some(1), "{r1}");
            let cache = &r2["signature_cache"];
            assert_eq!(cache["hits"].as_u64(), Some(1), "{r2}");
            assert_eq!(cache["hit_bytes"].as_u64(), Some(6 << 20), "{r2}");
            assert_eq!(cache["misses"].as_u64(), Some(0), "{r2}");
            assert_eq!(cache["stored"].as_u64(), Some(1), "{r2}");
        } else {
            assert!(r2.get("signature_cache").is_none(), "{r2}");
            assert!(!state.join("signatures").exists());
        }
        assert_recorded(&r2, &state, "m", 2);
    }
}

/// A scheduled pull (`--every`, `--status-file`, `--http`) reports the last commit as a push
/// does: round, snapshot id and root hash in the status file and `/status`, the newest
/// snapshot, and the signature cache in `/metrics`. A second round (SIGUSR1) moves them on.
#[test]
fn a_scheduled_pull_reports_its_commits_in_status_and_metrics() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(&src).unwrap();
    let big = noise(2 << 20, 3);
    std::fs::write(src.join("big"), &big).unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}:ro", s(&src))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let http_addr =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let status = t.path().join("status.json");
    let mut agent = Command::new(FERRY)
        .args(["pull", &url, s(&dst), "--identity", s(&c.join("source"))])
        .args(["--state-dir", s(&state), "--every", "1h", "--transport", "tcp"])
        .args(["--status-file", s(&status), "--http", &http_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_rounds = |n: u64| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st: Option<serde_json::Value> =
                std::fs::read(&status).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(st) = st.filter(|st| st["rounds_ok"].as_u64() == Some(n)) {
                return st;
            }
            assert!(Instant::now() < deadline, "round {n} never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let metric = |name: &str| -> u64 {
        let (_, body) = http(&http_addr, "GET", "/metrics");
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse().unwrap())
    };
    let check = |st: &serde_json::Value, round: u64| {
        let list = snapshots(&state, "m");
        let newest = list.last().unwrap();
        let commit = &st["last_commit"];
        assert_eq!(commit["state"], "recorded", "{st}");
        assert_eq!(commit["round"].as_u64(), Some(round), "{st}");
        assert_eq!(commit["snapshot"], newest["id"], "{st}");
        assert_eq!(commit["root_hash"], newest["root_hash"], "{st}");
        let (code, body) = http(&http_addr, "GET", "/status");
        assert_eq!(code, 200);
        let live: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(live["last_commit"], *commit, "{live}");
        assert_eq!(live["latest_snapshot"], newest["id"], "{live}");
    };
    check(&wait_rounds(1), 1);
    assert_eq!(metric("ferry_signature_cache_total{event=\"stored\"}"), 1);
    assert_eq!(metric("ferry_signature_cache_total{event=\"hit\"}"), 0);
    let mut b2 = big;
    b2[1000] ^= 0xff;
    std::fs::write(src.join("big"), &b2).unwrap();
    let usr1 = Command::new("kill").args(["-USR1", &agent.id().to_string()]).status().unwrap();
    assert!(usr1.success());
    check(&wait_rounds(2), 2);
    assert_eq!(metric("ferry_signature_cache_total{event=\"hit\"}"), 1);
    assert_eq!(metric("ferry_signature_cache_hit_bytes_total"), 2 << 20);
    assert_same_tree(&src, &dst);
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A partial pulled round (the server, running as `nobody`, cannot read a directory of its
/// module) keeps the files it got but gets no commit record and no snapshot: exit 23, the
/// JSON says why. The next complete round is recorded, and its snapshot is the whole tree.
#[test]
fn a_partial_pull_gets_no_snapshot() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = creds(&t.path().join("creds"));
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(src.join("secret")).unwrap();
    std::fs::write(src.join("secret/precious"), b"precious").unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    for p in [&src, &c.join("destination")] {
        let out = Command::new("chown").args(["-R", "65534:65534"]).arg(p).output().unwrap();
        assert!(out.status.success());
    }
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", FERRY, "serve"])
        .args(["--listen", "127.0.0.1:0", "--identity", s(&c.join("destination"))])
        .arg("--module")
        .arg(format!("m={}:ro", s(&src)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let srv = crate::common::Server {
        addr: line.trim().strip_prefix("listening on ").unwrap().parse().unwrap(),
        child,
    };
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let out = pull(&url, &dst, &c, &state, &[]);
    assert_eq!(out.status.code(), Some(23), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json(&out);
    assert_eq!(r["partial"], true, "{r}");
    assert_eq!(r["commit"]["state"], "failed", "{r}");
    assert!(r["commit"]["reason"].as_str().unwrap().contains("partial round"), "{r}");
    assert_eq!(std::fs::read(dst.join("a")).unwrap(), b"a");
    assert!(snapshots(&state, "m").is_empty(), "a partial round was snapshotted");
    assert!(!state.join("commits/m/last.json").exists(), "a partial round has a commit record");
    // Readable again: the next round is complete, recorded as round 1, and its snapshot is
    // the whole tree (built from the tree, not from this round's change list alone).
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = pull_ok(&url, &dst, &c, &state, &[]);
    let id = assert_recorded(&r, &state, "m", 1);
    assert_same_tree(&src, &dst);
    assert_same_tree(&src, &view(&state, "m", &id));
}

/// A pull whose round cannot be recorded (the snapshot command fails) is not a success: it is
/// retried, then exits 6, with the files in place and no commit in the status. A module name
/// that would leave the state directory is refused before anything moves.
#[test]
fn a_pull_that_cannot_record_its_round_exits_6() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    sample(&src);
    let srv = serve(&c.join("destination"), &[format!("m={}:ro", s(&src))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let tries = t.path().join("tries");
    let fail = format!("echo x >> {}; echo 'the array is full' >&2; exit 1", s(&tries));
    let status = t.path().join("status.json");
    let out = pull(
        &url,
        &dst,
        &c,
        &state,
        &[
            "--snapshot",
            "command",
            "--snapshot-command",
            &fail,
            "--retries",
            "1",
            "--retry-base",
            "10ms",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the destination did not record the round"), "{err}");
    assert!(err.contains("snapshot command failed"), "{err}");
    assert_eq!(std::fs::read_to_string(&tries).unwrap().lines().count(), 2, "one retry");
    assert_same_tree(&src, &dst);
    let out = pull(
        &url,
        &dst,
        &c,
        &state,
        &[
            "--snapshot",
            "command",
            "--snapshot-command",
            &fail,
            "--retries",
            "0",
            "--status-file",
            s(&status),
        ],
    );
    assert_eq!(out.status.code(), Some(6));
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(st["rounds_failed"].as_u64(), Some(1), "{st}");
    assert!(st["last_commit"].is_null(), "{st}");
    let bad = format!("ferry://127.0.0.1:{}/..", srv.addr.port());
    let out = pull(&bad, &t.path().join("elsewhere"), &c, &state, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot name its state"));
    assert!(!t.path().join("elsewhere").exists());
}

/// `ferry pull --list` with `--state-dir`: each module keeps its own state (records,
/// snapshots, journal) under its own name.
#[test]
fn pull_list_keeps_each_modules_state_apart() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (a, b) = (t.path().join("src-a"), t.path().join("src-b"));
    for (dir, tag) in [(&a, "a"), (&b, "b")] {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), tag.repeat(3000)).unwrap();
    }
    let srv =
        serve(&c.join("destination"), &[format!("a={}:ro", s(&a)), format!("b={}:ro", s(&b))]);
    let state = t.path().join("state");
    let (da, db) = (t.path().join("dst a"), t.path().join("dst-b"));
    let list = t.path().join("list");
    std::fs::write(&list, format!("a {}\nb {}\n", s(&da), s(&db))).unwrap();
    let server = format!("ferry://127.0.0.1:{}", srv.addr.port());
    let out = ferry(&[
        "pull",
        "--list",
        s(&list),
        &server,
        "--identity",
        s(&c.join("source")),
        "--state-dir",
        s(&state),
        "--json",
    ]);
    check_ok(&out);
    let doc = json(&out);
    for (i, (module, src, dst)) in [("a", &a, &da), ("b", &b, &db)].into_iter().enumerate() {
        let report = &doc["modules"][i]["report"];
        let id = assert_recorded(report, &state, module, 1);
        assert_same_tree(src, dst);
        assert_same_tree(src, &view(&state, module, &id));
        assert!(state.join(format!("commits/{module}/last.json")).exists());
    }
}

/// Failover on a pulling destination: `ferry promote` finds the data directory the pull
/// recorded (no `--data`) and makes an earlier snapshot the live tree; the next pull brings it
/// back to the source and its snapshot equals the source, the earlier one unchanged.
#[test]
fn promote_finds_the_directory_a_pull_recorded() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    sample(&src);
    let srv = serve(&c.join("destination"), &[format!("m={}:ro", s(&src))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id1 = assert_recorded(&pull_ok(&url, &dst, &c, &state, &[]), &state, "m", 1);
    let reference = t.path().join("ref1");
    copy_tree(&src, &reference);
    std::fs::write(src.join("db/later"), b"round two").unwrap();
    std::fs::remove_dir_all(src.join("db/wal")).unwrap();
    assert_recorded(&pull_ok(&url, &dst, &c, &state, &[]), &state, "m", 2);
    let out = ferry(&["promote", "--state-dir", s(&state), "--module", "m", "--snapshot", &id1]);
    check_ok(&out);
    assert_same_tree(&reference, &dst);
    let id3 = assert_recorded(&pull_ok(&url, &dst, &c, &state, &[]), &state, "m", 3);
    assert_same_tree(&src, &dst);
    assert_same_tree(&src, &view(&state, "m", &id3));
    assert_same_tree(&reference, &view(&state, "m", &id1));
}
