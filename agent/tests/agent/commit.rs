//! A pushed round ends when the destination has recorded it: `Done` carries the commit result
//! (round, snapshot id, root hash), `ferry push` shows it in its summary, `--json` and status
//! file, and a round the destination could not record is not a success (exit 6, retried).

use crate::common::{check_ok, json, s, sample, Pair};

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
