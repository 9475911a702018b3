//! `--transport auto`: no bytes spent on probing, the handshake race past blocked UDP, and the
//! on-disk cache of measured rounds (hostile contents ignored, symlinks never followed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{check_ok, creds, noise, s, serve, FERRY};

/// A TCP relay to `to` on a port whose UDP side is bound and never read: QUIC sent there is
/// lost, as on a network that carries only TCP. Counts the bytes it forwards upstream.
struct TcpOnlyRelay {
    addr: SocketAddr,
    upstream_bytes: Arc<AtomicU64>,
    _udp: UdpSocket,
}

impl TcpOnlyRelay {
    fn start(to: SocketAddr) -> TcpOnlyRelay {
        let (tcp, udp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            if let Ok(udp) = UdpSocket::bind(tcp.local_addr().unwrap()) {
                break (tcp, udp);
            }
        };
        let addr = tcp.local_addr().unwrap();
        let upstream_bytes = Arc::new(AtomicU64::new(0));
        let count = upstream_bytes.clone();
        std::thread::spawn(move || {
            for client in tcp.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(to) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let count = count.clone();
                std::thread::spawn(move || pump(client, server, Some(&count)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        TcpOnlyRelay { addr, upstream_bytes, _udp: udp }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = count {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// `ferry ARGS` with its transport cache under `cache`.
fn ferry_cached(cache: &Path, args: &[&str]) -> Output {
    Command::new(FERRY).args(args).env("XDG_CACHE_HOME", cache).output().expect("ferry runs")
}

/// The `transport auto: ...` line of a push's log.
fn auto_line(out: &Output) -> String {
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find(|l| l.contains("transport auto:"))
        .unwrap_or_else(|| panic!("no transport auto line in {log}"))
        .to_string()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// With UDP blocked, a default push comes up over TCP after QUIC's short head start, not after
/// the connect timeout, and moves only the round's own bytes (the old probe sent 32 MiB). The
/// next push, another process, starts with TCP because the cache says QUIC went unanswered.
#[test]
fn udp_blocked_push_uses_tcp_at_once_without_probe_bytes() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, cache) = (t.path().join("src"), t.path().join("dst"), t.path().join("cache"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("noise.bin"), noise(4 << 20, 13)).unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let relay = TcpOnlyRelay::start(srv.addr);
    let url = format!("ferry://127.0.0.1:{}/m", relay.addr.port());
    let id = c.join("source");
    let push = || {
        let start = Instant::now();
        let out = ferry_cached(
            &cache,
            &["push", s(&src), &url, "--identity", s(&id), "--json", "--connect-timeout", "60"],
        );
        (out, start.elapsed())
    };
    let (out, took) = push();
    check_ok(&out);
    assert_eq!(json(&out)["transport"], "TLS over TCP");
    let line = auto_line(&out);
    assert!(line.contains("QUIC first (no round measured yet)"), "{line}");
    // Far below the 60 s connect timeout (and the 3 s QUIC got before).
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let up = relay.upstream_bytes.load(Ordering::Relaxed);
    assert!(up < (4 << 20) + (1 << 20), "{up} bytes upstream for a 4 MiB round");
    let file = std::fs::read_to_string(cache.join("ferry/transport.json")).unwrap();
    assert!(file.contains(&format!("127.0.0.1:{}", relay.addr.port())), "{file}");
    assert!(file.contains("quic_unanswered_at\":1"), "{file}");

    std::fs::write(src.join("more.bin"), noise(1 << 20, 14)).unwrap();
    let before = relay.upstream_bytes.load(Ordering::Relaxed);
    let (out, _) = push();
    check_ok(&out);
    let line = auto_line(&out);
    assert!(line.contains("TLS over TCP first (QUIC went unanswered"), "{line}");
    let up = relay.upstream_bytes.load(Ordering::Relaxed) - before;
    assert!(up < (2 << 20), "{up} bytes upstream for a 1 MiB change");
}

/// Big rounds feed the cache, the next process reads it; garbage, an oversized file and
/// symlinks (to the file or the directory) are ignored and never followed; an explicit
/// `--transport` leaves the cache alone.
#[test]
fn the_cache_is_used_and_never_trusted() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, cache) = (t.path().join("src"), t.path().join("dst"), t.path().join("cache"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(cache.join("ferry")).unwrap();
    let file = cache.join("ferry/transport.json");
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id = c.join("source");
    let mut seed = 0;
    let mut push = |cache: &Path, extra: &[&str]| {
        // 10 MiB of new incompressible bytes: enough for a round to count as a measurement.
        seed += 1;
        std::fs::write(src.join(format!("n{seed}.bin")), noise(10 << 20, seed)).unwrap();
        let mut args = vec!["push", s(&src), &url, "--identity", s(&id), "--json"];
        args.extend_from_slice(extra);
        let out = ferry_cached(cache, &args);
        check_ok(&out);
        out
    };

    // Garbage, and a file past the size limit: an empty cache, then replaced by a good one.
    for junk in [b"{\"servers\": [{\"server\": 1".to_vec(), vec![b' '; 1 << 20]] {
        std::fs::write(&file, &junk).unwrap();
        let out = push(&cache, &[]);
        assert!(auto_line(&out).contains("QUIC first (no round measured yet)"));
        assert_eq!(json(&out)["transport"], "QUIC");
    }
    let good = std::fs::read(&file).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    assert!(v["servers"][0]["quic"]["bytes_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    // The next process measures the other transport.
    let out = push(&cache, &[]);
    let line = auto_line(&out);
    assert!(line.contains("TLS over TCP first (QUIC measured"), "{line}");
    assert_eq!(json(&out)["transport"], "TLS over TCP");

    // A symlink in the file's place is not read (its target holds a valid cache) and is
    // replaced, not written through.
    let victim = t.path().join("victim.json");
    std::fs::write(&victim, &good).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    let out = push(&cache, &[]);
    assert!(auto_line(&out).contains("no round measured yet"), "{}", auto_line(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), good);
    assert!(std::fs::symlink_metadata(&file).unwrap().file_type().is_file());

    // A symlink in the directory's place: nothing is written where it points.
    let (cache2, elsewhere) = (t.path().join("cache2"), t.path().join("elsewhere"));
    std::fs::create_dir_all(&cache2).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache2.join("ferry")).unwrap();
    push(&cache2, &[]);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // An explicit transport neither reads nor writes the cache.
    let cache3 = t.path().join("cache3");
    for transport in ["quic", "tcp"] {
        let out = push(&cache3, &["--transport", transport]);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("transport auto:"));
    }
    assert!(!cache3.exists());
}
