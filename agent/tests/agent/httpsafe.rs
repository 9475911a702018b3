//! `--http` on an open network: the read-only endpoints stay open, `POST /trigger` needs its
//! token and is rate-limited, and idle or surplus connections cannot starve the agent of
//! descriptors or make it spin.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{check_ok, creds, ferry, http, http_with, s, serve, FERRY};

/// A child process killed when dropped, so a failed assertion leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ferry push ... --every 1h --http 127.0.0.1:0 EXTRA`; returns it and its HTTP address.
fn push_agent(src: &str, url: &str, id: &str, extra: &[&str]) -> (Killed, String) {
    let mut push = Command::new(FERRY)
        .args(["push", src, url, "--identity", id, "--every", "1h", "--transport", "tcp"])
        .args(["--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = push.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("status on http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let push = Killed(push);
    let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    (push, addr)
}

/// No token configured: POST /trigger is off (403) and starts nothing. With a token: none or
/// a wrong one is 401, the right one 202, and a second trigger right after is 429.
#[test]
fn trigger_needs_its_token_and_is_rate_limited() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id = c.join("source");
    let rounds = |addr: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&http(addr, "GET", "/status").1).unwrap();
        v["rounds_ok"].as_u64().unwrap_or(0) + v["rounds_failed"].as_u64().unwrap_or(0)
    };
    let wait_rounds = |addr: &str, n: u64| {
        let start = Instant::now();
        while rounds(addr) < n {
            assert!(start.elapsed() < Duration::from_secs(30), "round {n} never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Off unless configured.
    let (open, addr) = push_agent(s(&src), &url, s(&id), &[]);
    wait_rounds(&addr, 1);
    let (code, body) = http(&addr, "POST", "/trigger");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--http-token-file"), "{body}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rounds(&addr), 1, "an unauthenticated trigger ran a round");
    assert_eq!(http(&addr, "GET", "/healthz").0, 200, "read-only endpoints stay open");
    drop(open);
    // With a token.
    let token = t.path().join("token");
    std::fs::write(&token, "correct-horse-battery\n").unwrap();
    let (agent, addr) = push_agent(s(&src), &url, s(&id), &["--http-token-file", s(&token)]);
    wait_rounds(&addr, 1);
    assert_eq!(http(&addr, "POST", "/trigger").0, 401);
    let wrong = "Authorization: Bearer correct-horse-battery-staple\r\n";
    assert_eq!(http_with(&addr, "POST", "/trigger", wrong).0, 401);
    assert_eq!(http_with(&addr, "POST", "/trigger", "Authorization: Basic eDp5\r\n").0, 401);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rounds(&addr), 1, "a refused trigger ran a round");
    let right = "Authorization: Bearer correct-horse-battery\r\n";
    assert_eq!(http_with(&addr, "POST", "/trigger", right).0, 202);
    wait_rounds(&addr, 2);
    let (code, body) = http_with(&addr, "POST", "/trigger", right);
    assert_eq!(code, 429, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rounds(&addr), 2, "a rate-limited trigger ran a round");
    drop(agent);
    // An empty token file is refused at start-up.
    std::fs::write(&token, "\n").unwrap();
    let out = ferry(
        &["push", s(&src), &url, "--identity", s(&id), "--http", "127.0.0.1:0"]
            .into_iter()
            .chain(["--http-token-file", s(&token)])
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// CPU seconds (user + system) the process has used, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// 300 idle connections to `ferry serve --http` (with 256 descriptors) do not stop a push,
/// do not make the process spin, and are closed after the header timeout. (Before: the idle
/// connections took every descriptor, pushes failed, and the accept loop spun.)
#[test]
fn idle_http_connections_cannot_starve_pushes_or_spin() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"through the flood").unwrap();
    let http_addr =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut child = Killed(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {FERRY} serve --listen 127.0.0.1:0 --identity {} --module m={} --http {http_addr}",
            s(&c.join("destination")),
            s(&dst)
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let pid = child.0.id();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(&http_addr).unwrap());
    }
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("ferry://127.0.0.1:{port}/m");
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&c.join("source")),
        "--transport",
        "tcp",
        "--retries",
        "0",
    ]);
    let cpu0 = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_secs(pid) - cpu0;
    // Every idle connection is closed by the server: at once over the cap, else after the
    // header timeout (5 s).
    std::thread::sleep(Duration::from_secs(8).saturating_sub(opened.elapsed()));
    let mut still_open = 0;
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut b = [0u8; 1];
        if let Err(e) = conn.read(&mut b) {
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                still_open += 1;
            }
        }
    }
    drop(child);
    check_ok(&out);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"through the flood");
    assert!(spent < 0.5, "serve used {spent:.2} CPU seconds in 3 s with idle HTTP connections");
    assert_eq!(still_open, 0, "idle HTTP connections still open 8 s later");
}

/// Whether the server has closed `conn` (EOF or reset within 300 ms), not left it open.
fn closed(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut b = [0u8; 1];
    // A byte would be an error response sent on closing (a 408, say): closed all the same.
    match conn.read_exact(&mut b) {
        Ok(()) => true,
        Err(e) => {
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
    }
}

/// `--http-max-connections` and `--http-header-timeout` change the defaults (32, 5 s): with 2
/// and 2s, a third idle connection is closed at once and the first two within 3.5 s; a zero
/// timeout or limit, or the flags without `--http`, are usage errors.
#[test]
fn the_http_limits_are_flags() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    let http_addr =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let limits = ["--http-max-connections", "2", "--http-header-timeout", "2s"];
    let extra: Vec<&str> = ["--http", http_addr.as_str()].into_iter().chain(limits).collect();
    let _srv =
        crate::common::serve_with(&c.join("destination"), &[format!("m={}", s(&dst))], &extra);
    let opened = Instant::now();
    let mut first: Vec<TcpStream> =
        (0..2).map(|_| TcpStream::connect(&http_addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(&http_addr).unwrap();
    assert!(closed(&mut third), "a connection over --http-max-connections 2 was kept");
    for conn in &mut first {
        assert!(!closed(conn), "closed before --http-header-timeout 2s");
    }
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(opened.elapsed()));
    for conn in &mut first {
        assert!(closed(conn), "still open 3.5 s later with --http-header-timeout 2s");
    }
    assert_eq!(http(&http_addr, "GET", "/healthz").0, 200, "a slot is free again");
    let module = format!("m={}", s(&dst));
    let id = c.join("destination");
    for bad in [
        vec!["--http", "127.0.0.1:0", "--http-header-timeout", "0s"],
        vec!["--http", "127.0.0.1:0", "--http-max-connections", "0"],
        vec!["--trigger-interval", "1s"],
    ] {
        let args: Vec<&str> = ["serve", "--listen", "127.0.0.1:0", "--identity"]
            .into_iter()
            .chain([s(&id), "--module"])
            .chain([module.as_str()])
            .chain(bad.iter().copied())
            .collect();
        let out = ferry(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
