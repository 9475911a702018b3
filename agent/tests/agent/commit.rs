//! A pushed round ends when the destination has recorded it: `Done` carries the commit result
//! (round, snapshot id, root hash), `ferry push` shows it in its summary, `--json` and status
//! file, and a round the destination could not record is not a success (exit 6, retried).

use crate::common::{check_ok, creds, ferry, json, s, sample, serve_with, Pair};

/// The race the issue names: a push followed at once by `snapshots list` lists that round,
/// and the push's JSON names the same round, snapshot and root hash as the destination's
/// record. The status file keeps it too.
#[test]
fn a_push_reports_the_round_snapshot_and_root_the_destination_recorded() {
    let p = Pair::start("", &["--keep-last", "5"], true, |src, _| sample(src));
    let status = p.t.path().join("status.json");
    for round in 1..=3u64 {
        std::fs::write(p.src.join("changing"), format!("round {round}")).unwrap();
        let out = p.push(&["--json", "--status-file", s(&status)]);
        check_ok(&out);
        let commit = json(&out)["commit"].clone();
        assert_eq!(commit["state"], "recorded", "{commit}");
        assert_eq!(commit["round"].as_u64(), Some(round), "{commit}");
        let list = p.snapshot_list();
        let last = list.last().expect("the round's snapshot is listed");
        assert_eq!(last["round"].as_u64(), Some(round), "{list:?}");
        assert_eq!(last["id"], commit["snapshot"], "{list:?} vs {commit}");
        assert_eq!(last["root_hash"], commit["root_hash"], "{list:?} vs {commit}");
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
        assert_eq!(st["last_commit"], commit, "status file: {st}");
    }
    // The summary says it in words.
    let out = p.push(&[]);
    check_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recorded by the destination: round 4, snapshot 000004-"), "{text}");
}

/// A destination that keeps no state directory records nothing, and says so: the push
/// succeeds (its files are durable in place) and its JSON says `unrecorded`.
#[test]
fn a_server_without_a_state_directory_says_the_round_is_unrecorded() {
    let p = Pair::start("", &[], false, |src, _| sample(src));
    let out = p.push(&["--json"]);
    check_ok(&out);
    assert_eq!(json(&out)["commit"]["state"], "unrecorded");
    let out = p.push(&[]);
    check_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not recorded: the destination keeps no state directory"), "{text}");
}

/// A round whose snapshot fails is not a success: the files arrived, but no point-in-time
/// copy covers them, so the push exits 6 (transient) after its retries, with the
/// destination's reason, and the status file counts a failed round.
#[test]
fn a_round_the_destination_could_not_record_exits_6_after_its_retries() {
    let tries = tempfile::NamedTempFile::new().unwrap();
    let command = format!("echo x >> {}; echo 'the array is full' >&2; exit 1", s(tries.path()));
    let p = Pair::start(
        "",
        &["--snapshot", "command", "--snapshot-command", &command],
        true,
        |src, _| sample(src),
    );
    let status = p.t.path().join("status.json");
    let out = p.push(&["--retries", "1", "--retry-base", "10ms", "--status-file", s(&status)]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the destination did not record the round"), "{err}");
    assert!(err.contains("snapshot command failed"), "{err}");
    // The first attempt and one retry each ran the snapshot command.
    assert_eq!(std::fs::read_to_string(tries.path()).unwrap().lines().count(), 2);
    // The files are in place all the same.
    crate::common::assert_same_tree(&p.src, &p.dst);
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(st["rounds_failed"].as_u64(), Some(1), "{st}");
    assert!(st["last_commit"].is_null(), "{st}");
}

/// A write-only module's pusher learns that its round was recorded, but not the root hash:
/// it covers the destination's whole tree, files the pusher never sent included.
#[test]
fn a_write_only_module_withholds_the_root_hash() {
    let p = Pair::start(":wo", &[], true, |src, dst| {
        sample(src);
        std::fs::create_dir_all(dst).unwrap();
        std::fs::write(dst.join("secret"), b"1234").unwrap();
    });
    let out = p.push(&["--json"]);
    check_ok(&out);
    let commit = json(&out)["commit"].clone();
    assert_eq!(commit["state"], "recorded", "{commit}");
    assert_eq!(commit["round"].as_u64(), Some(1), "{commit}");
    assert_eq!(commit["root_hash"], "", "{commit}");
    // The destination's own record has it.
    let list = p.snapshot_list();
    assert_eq!(list[0]["root_hash"].as_str().map(str::len), Some(64), "{list:?}");
    assert_eq!(list[0]["id"], commit["snapshot"]);
}

/// A `:wo-whole` module reveals nothing of what it holds: a changed file is sent whole (no
/// signature of the destination's copy, nothing matched against it), `--checksum` does not
/// compare blake3s, and the root hash is withheld as for `:wo`. The same push into `:wo`
/// matches most of the file against the destination's copy. A pull is refused.
#[test]
fn a_write_only_whole_module_signs_nothing_for_its_pushers() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, whole, wo) = (t.path().join("src"), t.path().join("whole"), t.path().join("wo"));
    std::fs::create_dir_all(&src).unwrap();
    let mut data = crate::common::noise(2 << 20, 9);
    // An older mtime than the source's: the same size and mtime would be "unchanged" (and
    // `:wo-whole` compares no checksums).
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for d in [&whole, &wo] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), &data).unwrap();
        std::fs::File::options().write(true).open(d.join("f")).unwrap().set_modified(old).unwrap();
    }
    data[1 << 20] ^= 1;
    std::fs::write(src.join("f"), &data).unwrap();
    let srv = serve_with(
        &c.join("destination"),
        &[format!("whole={}:wo-whole", s(&whole)), format!("wo={}:wo", s(&wo))],
        &[],
    );
    let push = |module: &str| {
        let url = format!("ferry://127.0.0.1:{}/{module}", srv.addr.port());
        let id = c.join("source");
        let out = ferry(&["push", s(&src), &url, "--identity", s(&id), "--checksum", "--json"]);
        check_ok(&out);
        json(&out)["stats"].clone()
    };
    let stats = push("whole");
    assert_eq!(stats["matched_bytes"], 0, "{stats}");
    assert_eq!(stats["signature_bytes"], 0, "{stats}");
    assert_eq!(stats["literal_bytes"], 2 << 20, "{stats}");
    assert_eq!(std::fs::read(whole.join("f")).unwrap(), data);
    let stats = push("wo");
    assert!(stats["matched_bytes"].as_u64().unwrap() > 1 << 20, "{stats}");
    let url = format!("ferry://127.0.0.1:{}/whole", srv.addr.port());
    let out = ferry(&["pull", &url, s(&t.path().join("p")), "--identity", s(&c.join("source"))]);
    assert!(!out.status.success(), "a :wo-whole module was pulled from");
}
