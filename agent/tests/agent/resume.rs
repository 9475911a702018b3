//! A large file cut part way resumes from the segments the destination journaled, after a
//! dark link or a killed and restarted destination.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::peer::{push_through_a_cut, udp_relay};
use crate::common::{assert_same_tree, check_ok, creds, ferry, noise, s, serve_with, FERRY};

/// A large file cut mid-way resumes from the destination's journal: the link goes dark for
/// longer than the idle timeout after 20 MB of a 40 MiB file; the retry is offered the
/// segments the destination wrote and verified, sends only the rest, and reports the bytes it
/// did not send again (`resumed_bytes`). The result is the source's tree, no temp file left.
#[test]
fn a_large_file_cut_mid_way_resumes_from_its_last_journaled_segment() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(&src).unwrap();
    let size = 40u64 << 20;
    std::fs::write(src.join("big.img"), noise(size as usize, 5)).unwrap();
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state)],
    );
    let relay = udp_relay(srv.addr, 0, Duration::ZERO, Some((20 << 20, Duration::from_secs(4))));
    let url = format!("ferry://127.0.0.1:{}/m", relay.addr.port());
    let r = push_through_a_cut(&src, &url, &c.join("source"), &["--compress-level", "0"]);
    assert_same_tree(&src, &dst);
    let resumed = r["stats"]["resumed_bytes"].as_u64().unwrap();
    let literal = r["stats"]["literal_bytes"].as_u64().unwrap();
    let segment = 8u64 << 20;
    assert!(resumed >= segment && resumed % segment == 0, "nothing resumed: {r}");
    assert_eq!(resumed + literal, size, "every byte either resumed or sent: {r}");
    eprintln!("after the cut the retry resumed {resumed} bytes and sent {literal} of {size}");
    let temps: Vec<_> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".~ferry."))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

/// A destination killed (-9) in the middle of a large file and restarted: the next round
/// resumes the file from the segments the dead server had journaled, instead of starting it
/// over. The kill happens once the journal shows two segments written (not after a delay).
#[test]
fn a_destination_killed_mid_file_resumes_it_after_restart() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(&src).unwrap();
    let size = 48u64 << 20;
    std::fs::write(src.join("db.img"), noise(size as usize, 8)).unwrap();
    let modules = [format!("m={}", s(&dst))];
    let extra = ["--state-dir", s(&state)];
    let mut srv = serve_with(&c.join("destination"), &modules, &extra);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id = c.join("source");
    // Paced so that the kill lands mid-file.
    let mut push = Command::new(FERRY)
        .args(["push", s(&src), &url, "--identity", s(&id), "--bwlimit", "16M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = state.join("journal/m.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read(&journal).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) < 2 {
        assert!(std::time::Instant::now() < deadline, "the journal never showed two segments");
        std::thread::sleep(Duration::from_millis(5));
    }
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    let _ = push.kill();
    let _ = push.wait();
    assert!(!dst.join("db.img").exists(), "the file was committed before the kill");
    // Restarted (on another port), the server resumes the file.
    let srv = serve_with(&c.join("destination"), &modules, &extra);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let out = ferry(&["push", s(&src), &url, "--identity", s(&id), "--json"]);
    check_ok(&out);
    assert_same_tree(&src, &dst);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resumed = r["stats"]["resumed_bytes"].as_u64().unwrap();
    assert!(resumed >= 2 * (8 << 20), "the file started over: {r}");
    assert_eq!(resumed + r["stats"]["literal_bytes"].as_u64().unwrap(), size, "{r}");
    let names: Vec<_> = std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["db.img"], "temp files left");
    assert_eq!(std::fs::read(&journal).unwrap(), b"", "the journal is emptied after a success");
}
