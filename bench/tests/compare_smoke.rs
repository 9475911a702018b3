//! End to end: `ferry-bench compare --scale 0.05` (issue 5's CI size) produces its JSON, markdown report and
//! chart, with every run of every tool verified, `ferry push` to `ferry serve` over QUIC and
//! over TCP on loopback included. It checks outputs and tree equality, never timings.
//!
//! It needs the `ferry` binary of this workspace, built in the same profile as this test
//! (`cargo test --workspace` builds it; `cargo test -p ferry-bench` alone does not), and rsync.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `target/<profile>/ferry`, found from this test's own executable
/// (`target/<profile>/deps/compare_smoke-<hash>`), so it follows `CARGO_TARGET_DIR` and the
/// profile.
fn ferry_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let ferry = profile_dir.join("ferry");
    assert!(
        ferry.is_file(),
        "the ferry binary is missing at {}: build it first with `cargo build -p ferry-agent` \
         (`cargo test --workspace` builds it too), then run this test again",
        ferry.display()
    );
    ferry
}

#[test]
fn compare_produces_verified_json_and_report() {
    let ferry = ferry_binary();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (json, report, work) =
        (tmp.path().join("out.json"), tmp.path().join("BENCH.md"), tmp.path().join("work"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(["compare", "--scale", "0.05", "--reps", "1", "--ferry"])
        .arg(&ferry)
        .arg("--work")
        .arg(&work)
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("running ferry-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry-bench compare failed:\n{stderr}\n{stdout}");

    let v: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("valid JSON");
    assert_eq!(v["all_verified"], Value::Bool(true));
    let runs = v["runs"].as_array().expect("runs");
    let ran = |scenario: &str, tool: &str| {
        runs.iter().any(|r| r["scenario"] == scenario && r["tool"] == tool && r["verified"] == true)
    };
    for scenario in ["initial-mixed", "incremental", "nochange-many", "initial-many"] {
        for tool in ["ferry-sync", "ferry-push-quic", "ferry-push-tcp", "rsync", "rsync-daemon"] {
            assert!(ran(scenario, tool), "no verified run of {tool} in {scenario}");
        }
    }
    assert!(ran("initial-mixed", "cp") && ran("initial-many", "cp"));
    assert!(!ran("incremental", "cp"), "cp -a only copies into empty destinations");
    for r in runs {
        assert!(r["transfer"]["wire_sent"].is_u64() || r["tool"] == "cp", "wire bytes: {r}");
        assert!(r["client"]["max_rss_bytes"].as_u64().unwrap_or(0) > 0, "peak RSS: {r}");
        assert_eq!(r["client"]["exit_code"], 0);
    }
    for tool in ["rsync-daemon", "ferry-push-quic", "ferry-push-tcp"] {
        for r in runs.iter().filter(|r| r["tool"] == tool) {
            let server = &r["server"];
            assert!(server["max_rss_bytes"].as_u64().unwrap_or(0) > 0, "server side measured: {r}");
            assert!(server["wall_secs"].as_f64().unwrap_or(0.0) > 0.0, "server side measured: {r}");
        }
    }
    // A push into an empty destination sends every byte of every file.
    let push = runs
        .iter()
        .find(|r| r["tool"] == "ferry-push-quic" && r["scenario"] == "initial-mixed")
        .expect("push run");
    assert!(push["transfer"]["literal"].as_u64().unwrap_or(0) > 0, "literal bytes: {push}");
    assert!(push["transfer"]["payload"].is_u64(), "payload bytes: {push}");
    let tools = v["tools"].as_array().expect("tools");
    assert!(tools.iter().all(|t| t["available"] == true), "every tool ran: {tools:?}");

    let md = std::fs::read_to_string(&report).expect("report written");
    assert!(md.contains("| scenario | tool |") && md.contains("ferry sync"), "{md}");
    assert!(md.contains("](BENCH.svg)"), "chart linked: {md}");
    assert!(md.contains("| ferry push QUIC |") && md.contains("| ferry push TCP |"), "{md}");
    let svg = std::fs::read_to_string(tmp.path().join("BENCH.svg")).expect("chart written");
    assert!(
        svg.contains("<svg") && svg.contains("rsyncd") && svg.contains("quic"),
        "chart content"
    );
    assert!(stdout.contains("initial-mixed") && stdout.contains("goals of issue 5"), "{stdout}");
    // The goals take `ferry push` over QUIC as Ferry's figure.
    assert!(stdout.contains("incremental: ferry push QUIC /"), "{stdout}");
    // A successful run leaves nothing behind in the work directory.
    assert_eq!(std::fs::read_dir(&work).expect("work dir").count(), 0);
}
