//! What a network peer cannot do to the other side: hold a module with a silent connection
//! (TCP and stdio idle timeout), pass a refused certificate off as a network hiccup, or forge
//! log lines with the strings it sends.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::net::{Direction, Refusal, Response};
use ferry_core::Message;
use ferry_transport::frame::{read_value, write_message, write_value};
use ferry_transport::net::Server;
use ferry_transport::tls::Identity;
use time::{Duration as TDuration, OffsetDateTime};
use tokio::io::AsyncReadExt;

use crate::common::peer::{hostile_client, request};
use crate::common::{check_ok, creds, ferry, noise, s, serve_with, FERRY};

/// A client that authenticates over TLS/TCP, is granted a push, then says nothing: the
/// server's idle timeout ends the round and frees the module, and the next push succeeds.
/// (Before: only the request had a timeout; the module stayed busy for as long as the
/// connection stayed open.)
#[test]
fn a_silent_tcp_client_frees_its_module_after_the_idle_timeout() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"after the silent one").unwrap();
    let srv =
        serve_with(&c.join("destination"), &[format!("m={}", s(&dst))], &["--idle-timeout", "2"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut link = rt.block_on(async {
        let mut link = hostile_client(&c, srv.addr).await;
        write_value(&mut link.writer, &request("m", Direction::Push)).await.unwrap();
        let resp = read_value::<Response, _>(&mut link.reader).await.unwrap();
        assert!(matches!(resp, Response::Accepted { .. }), "{resp:?}");
        link
    });
    let started = Instant::now();
    // The server gives up on us: our link ends (its keep-alives are all we hear meanwhile).
    let closed = rt.block_on(async {
        let mut buf = vec![0u8; 1 << 16];
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match link.reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
    });
    assert!(closed.is_ok(), "the server kept the silent round open for 15 s");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id = c.join("source");
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&id),
        "--transport",
        "tcp",
        "--retries",
        "0",
    ]);
    check_ok(&out);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"after the silent one");
    drop(link);
}

/// `ferry serve --stdio` whose client sends its request and then nothing exits after the
/// idle timeout instead of holding the module forever.
#[test]
fn a_silent_stdio_client_ends_the_served_round() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    let mut child = Command::new(FERRY)
        .args(["serve", "--stdio", "--idle-timeout", "2", "--module"])
        .arg(format!("m={}", s(&dst)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let body = postcard::to_allocvec(&request("m", Direction::Push)).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
    stdin.write_all(&body).unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(stdin);
    assert!(status.is_some(), "serve --stdio still running 15 s after its client fell silent");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// A slow but honest round (paced well below its idle timeout's worth of bytes per frame)
/// lives on keep-alives: `--idle-timeout 1` on both sides, frames several seconds apart.
#[test]
fn a_slow_honest_tcp_round_is_kept_alive() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), noise(600 << 10, 7)).unwrap();
    let srv =
        serve_with(&c.join("destination"), &[format!("m={}", s(&dst))], &["--idle-timeout", "1"]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let started = Instant::now();
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&c.join("source")),
        "--transport",
        "tcp",
        "--idle-timeout",
        "1",
        "--bwlimit",
        "200K",
        "--retries",
        "0",
    ]);
    check_ok(&out);
    assert!(started.elapsed() > Duration::from_secs(2), "not paced: {:?}", started.elapsed());
    assert_eq!(std::fs::read(dst.join("big")).unwrap(), noise(600 << 10, 7));
}

/// A certificate the server refuses is an authentication failure, exit 3, on both
/// transports and every time: expired, from another CA, or made for servers only. (Before:
/// TLS 1.3 delivers the verdict after the client's handshake is done, and the client often
/// took the closed connection for a network failure: exit 6, retried.)
#[test]
fn a_refused_client_certificate_is_exit_3_every_time() {
    let t = tempfile::tempdir().unwrap();
    let good = creds(&t.path().join("good"));
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let dst = t.path().join("dst");
    let srv = serve_with(&good.join("destination"), &[format!("m={}", s(&dst))], &[]);
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let now = OffsetDateTime::now_utc();
    let expired = ferry_agent::net::credentials::generate(
        &names,
        now - TDuration::days(30),
        now - TDuration::days(1),
    )
    .unwrap();
    let other = ferry_agent::net::credentials::generate_for_days(&names, 30).unwrap();
    let expired_dir = t.path().join("expired");
    ferry_agent::net::credentials::write_identity(&expired_dir, &expired.source).unwrap();
    // The client trusts the good server (its CA), but presents a certificate the server
    // refuses.
    std::fs::copy(good.join("source/ca.pem"), expired_dir.join("ca.pem")).unwrap();
    let other_dir = t.path().join("other");
    ferry_agent::net::credentials::write_identity(&other_dir, &other.source).unwrap();
    std::fs::copy(good.join("source/ca.pem"), other_dir.join("ca.pem")).unwrap();
    // The destination's own identity: the right CA, but a certificate for servers only.
    let server_only = good.join("destination");
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    for transport in ["quic", "tcp"] {
        for (name, id) in
            [("expired", &expired_dir), ("other-ca", &other_dir), ("server-only", &server_only)]
        {
            for run in 0..5 {
                let out = ferry(&[
                    "push",
                    s(&src),
                    &url,
                    "--identity",
                    s(id),
                    "--transport",
                    transport,
                    "--retries",
                    "0",
                ]);
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(3), "{name} over {transport}, run {run}: {err}");
                assert!(err.contains("authentication failed"), "{name} over {transport}: {err}");
            }
        }
    }
    assert!(!dst.join("f").exists(), "nothing may be written for a refused peer");
}

/// A hostile server's refusal or abort reason with a newline cannot write a line of its own
/// into the client's log: peer strings are printed escaped.
#[test]
fn a_peer_reason_cannot_forge_log_lines() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let forged = "2026-01-01T00:00:00.000000Z ERROR forged";
    let reason = format!("no\n{forged}\r\n\u{1b}[2K{forged}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = Identity::load(&c.join("destination")).unwrap();
    let mut server = rt.block_on(Server::bind("127.0.0.1:0".parse().unwrap(), &id)).unwrap();
    let addr = server.local_addr();
    let r = reason.clone();
    // First connection: refused with the reason; second: accepted, then aborted with it.
    rt.spawn(async move {
        let mut n = 0;
        while let Some(Ok(mut link)) = server.accept().await {
            let _ = read_value::<ferry_agent::net::Request, _>(&mut link.reader).await;
            if n == 0 {
                let resp = Response::Refused {
                    code: Refusal::UnknownModule,
                    reason: r.clone(),
                    server_min: 3,
                    server_max: 3,
                };
                let _ = write_value(&mut link.writer, &resp).await;
            } else {
                let _ = write_value(&mut link.writer, &Response::Accepted { version: 3, lanes: 0 })
                    .await;
                let _ =
                    write_message(&mut link.writer, &Message::Abort { reason: r.clone() }).await;
                let _ = tokio::io::AsyncWriteExt::flush(&mut link.writer).await;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            link.finish().await;
        }
    });
    let url = format!("ferry://127.0.0.1:{}/m", addr.port());
    for case in ["refused", "aborted"] {
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
        assert!(!out.status.success(), "{case}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("forged"), "{case}: the reason is not shown at all: {err}");
        for line in err.lines() {
            assert!(!line.starts_with("2026-01-01"), "{case}: forged line in stderr:\n{err}");
            assert!(!line.contains('\u{1b}'), "{case}: raw escape sequence in stderr:\n{err}");
        }
    }
}
