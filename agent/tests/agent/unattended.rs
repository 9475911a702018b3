//! A push that runs unattended: retries and what is fatal, the status file, `--http`
//! status/metrics/trigger, `--every`, pre- and post-round hooks.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_agent::net::credentials as init;

use crate::common::{
    assert_same_tree, check_ok, creds, ferry, http, http_with, s, sample, serve, serve_with, FERRY,
};

/// Transient failures are retried with backoff, fatal ones are not, and the status file says
/// what happened.
#[test]
fn transient_failures_are_retried_fatal_ones_fail_fast_and_status_is_written() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let status = t.path().join("status.json");
    // Nothing listens on this port: connection refused, a transient error.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ferry://127.0.0.1:{free}/m");
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&c.join("source")),
        "--transport",
        "tcp",
        "--retries",
        "2",
        "--retry-base",
        "20ms",
        "--status-file",
        s(&status),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("retry 1") && err.contains("retry 2") && !err.contains("retry 3"),
        "{err}"
    );
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(st["last_attempts"], 3);
    assert_eq!(st["rounds_failed"], 1);
    assert!(st["last_result"].as_str().unwrap().starts_with("error:"), "{st}");
    // A refused certificate is fatal: no retry even with retries left.
    let dst = t.path().join("dst");
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let other = t.path().join("other");
    let pair = init::generate_for_days(&["127.0.0.1".into()], 1).unwrap();
    init::write_identity(&other, &pair.source).unwrap();
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&other),
        "--retries",
        "5",
        "--retry-base",
        "20ms",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("retry"), "{err}");
    // Success: --once writes the status with the round's stats.
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&c.join("source")),
        "--once",
        "--status-file",
        s(&status),
    ]));
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(st["last_result"], "ok");
    assert_eq!(st["rounds_ok"], 1);
    assert_eq!(st["last_stats"]["files_new"], 1);
    // `auto` picked one of the two by measuring them.
    let used = st["last_transport"].as_str().unwrap();
    assert!(used == "QUIC" || used == "TLS over TCP", "{st}");
    let out = ferry(&["status", "--status-file", s(&status)]);
    check_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last round:    ok") && text.contains("1 new"), "{text}");
}

/// An unattended push on a long interval, watched and driven over --http: status with the
/// round's figures, probes, Prometheus metrics, and manual rounds from POST /trigger and
/// SIGUSR1; `ferry serve --http` reports the rounds it served and its latest snapshot.
#[test]
fn http_status_metrics_and_manual_triggers() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    sample(&src);
    // A free port for the server's endpoint (its log is not read here).
    let srv_http =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state), "--http", &srv_http],
    );
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let token_file = t.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let mut push = Command::new(FERRY)
        .args(["push", s(&src), &url, "--identity", s(&c.join("source")), "--every", "1h"])
        .args(["--http", "127.0.0.1:0", "--transport", "tcp"])
        .arg("--http-token-file")
        .arg(&token_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let push_pid = push.id();
    // The bound address is in the log; keep draining it so the agent never blocks on stderr.
    let (tx, rx) = std::sync::mpsc::channel();
    let err = push.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("status on http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let status = |want_ok: u64| -> serde_json::Value {
        for _ in 0..400 {
            let (code, body) = http(&addr, "GET", "/status");
            assert_eq!(code, 200);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["rounds_ok"] == want_ok && v["current"].is_null() {
                return v;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("round {want_ok} never finished");
    };
    let v = status(1);
    assert_eq!(v["last_result"], "ok");
    assert_eq!(v["last_stats"]["files_new"], 51);
    assert!(v["last_wire_bytes_sent"].as_u64().unwrap() > 1_000_000, "{v}");
    // The next scheduled round is an hour away.
    let next = v["next_run_unix"].as_f64().unwrap() - v["last_end_unix"].as_f64().unwrap();
    assert!((3500.0..3700.0).contains(&next), "{v}");
    assert_eq!(http(&addr, "GET", "/healthz").0, 200);
    assert_eq!(http(&addr, "GET", "/readyz").0, 200);
    // A manual round, then another from SIGUSR1.
    std::fs::write(src.join("db/new"), b"after the trigger").unwrap();
    let bearer = "Authorization: Bearer s3cret-token\r\n";
    assert_eq!(http_with(&addr, "POST", "/trigger", bearer).0, 202);
    let v = status(2);
    assert_eq!(v["last_stats"]["files_new"], 1, "{v}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(push_pid as i32).unwrap(),
        rustix::process::Signal::USR1,
    )
    .unwrap();
    let v = status(3);
    assert_eq!(v["last_stats"]["files_new"], 0, "{v}");
    assert_same_tree(&src, &dst);
    let (code, metrics) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    for want in [
        "ferry_rounds_total{result=\"ok\"} 3",
        "ferry_files_total{kind=\"new\"} 52",
        "ferry_round_duration_seconds_count 3",
        "ferry_out_of_sync_seconds ",
        "ferry_bytes_total{kind=\"literal\"}",
    ] {
        assert!(metrics.contains(want), "{want:?} not in\n{metrics}");
    }
    let _ = push.kill();
    let _ = push.wait();
    // The destination's agent: rounds served and the latest snapshot; no trigger there.
    let mut served = serde_json::Value::Null;
    for _ in 0..400 {
        served = serde_json::from_str(&http(&srv_http, "GET", "/status").1).unwrap();
        if served["rounds_ok"] == 3
            && served["latest_snapshot"].as_str().is_some_and(|id| id.starts_with("000003-"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(served["rounds_ok"], 3, "{served}");
    assert!(served["latest_snapshot"].as_str().unwrap().starts_with("000003-"), "{served}");
    assert_eq!(http(&srv_http, "POST", "/trigger").0, 409);
    assert!(http(&srv_http, "GET", "/metrics").1.contains("ferry_rounds_total{result=\"ok\"} 3"));
    drop(srv);
}

/// --pre-round and --post-round wrap every attempt (quiesce, then resume the application),
/// with the round's context in their environment; a failing --pre-round means no round.
#[test]
fn pre_and_post_round_hooks_wrap_each_attempt() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, log) = (t.path().join("src"), t.path().join("dst"), t.path().join("hooks.log"));
    sample(&src);
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let pre = format!(
        "echo \"pre $FERRY_DIRECTION $FERRY_ROUND $FERRY_ATTEMPT $FERRY_ROOT $FERRY_URL\" >> {}",
        s(&log)
    );
    let post = format!("echo \"post $FERRY_RESULT\" >> {}", s(&log));
    let id = c.join("source");
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&id),
        "--pre-round",
        &pre,
        "--post-round",
        &post,
    ]);
    check_ok(&out);
    assert_same_tree(&src, &dst);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, format!("pre push 1 1 {} {url}\npost ok\n", s(&src)), "{text}");
    // A failing quiesce: retried, then the round never runs and post-round is not called.
    std::fs::write(src.join("db/new"), b"never sent").unwrap();
    std::fs::remove_file(&log).unwrap();
    let failing = format!("echo attempt $FERRY_ATTEMPT >> {}; exit 3", s(&log));
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&id),
        "--pre-round",
        &failing,
        "--post-round",
        &post,
        "--retries",
        "1",
        "--retry-base",
        "10ms",
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pre-round command failed"));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "attempt 1\nattempt 2\n");
    assert!(!dst.join("db/new").exists());
}
