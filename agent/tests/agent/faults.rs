//! A bad link: a TCP connection cut mid-round, a lossy and slow UDP path, a blackhole longer
//! than the idle timeout. The attempt fails as transient and the next one completes.

use std::time::Duration;

use crate::common::peer::{push_through_a_cut, udp_relay};
use crate::common::{assert_same_tree, check_ok, creds, ferry, noise, s, serve};

/// A connection cut mid-round fails with the transient exit code, leaves only verified files,
/// and the next round completes.
#[test]
fn a_cut_connection_is_transient_and_the_next_round_completes() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    // Incompressible, so the bytes really cross the relay.
    let noise = noise(24 << 20, 0x1234_5678_9abc_def0);
    std::fs::write(src.join("big.bin"), &noise).unwrap();
    std::fs::write(src.join("small.txt"), b"small").unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    // A TCP relay that forwards 2 MiB client->server, then cuts both directions.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let upstream = srv.addr;
    std::thread::spawn(move || {
        let (client, _) = relay.accept().unwrap();
        let server = std::net::TcpStream::connect(upstream).unwrap();
        let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (mut s_r, mut c_w) = (server.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut s_r, &mut c_w);
        });
        let mut left = 2u64 << 20;
        let mut buf = [0u8; 16 << 10];
        use std::io::{Read, Write};
        while left > 0 {
            let n = match c_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n.min(left as usize),
            };
            if s_w.write_all(&buf[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
        let _ = server.shutdown(std::net::Shutdown::Both);
    });
    let url = format!("ferry://127.0.0.1:{}/m", relay_addr.port());
    let out =
        ferry(&["push", s(&src), &url, "--identity", s(&c.join("source")), "--transport", "tcp"]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    // Whatever is in place is whole and verified; the big file never arrived whole.
    if let Ok(b) = std::fs::read(dst.join("big.bin")) {
        assert_eq!(b, noise);
    }
    if let Ok(b) = std::fs::read(dst.join("small.txt")) {
        assert_eq!(b, b"small");
    }
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&c.join("source")),
        "--transport",
        "tcp",
    ]));
    assert_same_tree(&src, &dst);
    // No temp file of the cut round survives the next one.
    let left: Vec<_> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".~ferry."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Through a lossy, slow UDP path a QUIC round still completes; a blackhole longer than the
/// idle timeout mid-round fails the attempt as transient, and the retry completes the round
/// without resending what the cut round had committed.
#[test]
fn quic_survives_loss_delay_and_a_blackhole_longer_than_the_idle_timeout() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("small/{i:03}")), noise(50_000, i + 1)).unwrap();
    }
    std::fs::write(src.join("zz-big.bin"), noise(8 << 20, 99)).unwrap();
    let (lossy, cut) = (t.path().join("lossy"), t.path().join("cut"));
    let srv = serve(
        &c.join("destination"),
        &[format!("lossy={}", s(&lossy)), format!("cut={}", s(&cut))],
    );
    let id = c.join("source");
    // 2% loss and 2 ms each way.
    let relay = udp_relay(srv.addr, 20, Duration::from_millis(2), None);
    let url = format!("ferry://127.0.0.1:{}/lossy", relay.addr.port());
    let out =
        ferry(&["push", s(&src), &url, "--identity", s(&id), "--transport", "quic", "--json"]);
    check_ok(&out);
    assert_same_tree(&src, &lossy);
    drop(relay);
    // Dark for 4 s after 4 MB from the client; the idle timeout is 1 s.
    let relay = udp_relay(srv.addr, 0, Duration::ZERO, Some((4 << 20, Duration::from_secs(4))));
    let url = format!("ferry://127.0.0.1:{}/cut", relay.addr.port());
    let r = push_through_a_cut(&src, &url, &id, &[]);
    assert_same_tree(&src, &cut);
    // The retried round sent only what the cut one had not committed.
    let total = 40 * 50_000 + (8u64 << 20);
    let literal = r["stats"]["literal_bytes"].as_u64().unwrap();
    assert!(literal < total, "the retry resent everything: {r}");
    eprintln!("after the cut the retry sent {literal} of {total} bytes");
}
