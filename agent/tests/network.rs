//! Two real agents on loopback: `ferry serve` in its own process, `ferry push`/`pull` in
//! another (or a client in this process for crafted traffic), over real QUIC and TCP sockets.

#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test, with its message.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ferry_agent::net::credentials as init;
use ferry_agent::net::{Direction, Request, Response};
use ferry_agent::round::RoundOptions;
use ferry_core::entry::{Entry, EntryKind, Meta};
use ferry_core::Message;
use ferry_transport::frame::{read_message, read_value, write_message, write_value};
use ferry_transport::net::connect_tcp;
use ferry_transport::tls::Identity;
use time::{Duration as TDuration, OffsetDateTime};

mod common;
use common::{creds, serve_with, Server, FERRY};

fn serve(identity: &Path, modules: &[String]) -> Server {
    serve_with(identity, modules, &[])
}

fn ferry(args: &[&str]) -> Output {
    Command::new(FERRY).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// rsync as an independent judge: nothing to transfer means the trees are the same.
fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("rsync")
        .args(["-aHAXnic", "--delete"])
        .arg(format!("{}/", a.display()))
        .arg(format!("{}/", b.display()))
        .output()
        .expect("rsync is installed (apt-get install rsync); the tests use it as a judge");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "trees differ");
}

fn sample(root: &Path) {
    std::fs::create_dir_all(root.join("db/wal")).unwrap();
    let big: Vec<u8> =
        (0..(9u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(root.join("db/data.bin"), &big).unwrap();
    for i in 0..50 {
        std::fs::write(root.join(format!("db/wal/{i:04}.log")), format!("entry {i}\n").repeat(100))
            .unwrap();
    }
    std::os::unix::fs::symlink("data.bin", root.join("db/current")).unwrap();
}

/// `len` incompressible bytes (xorshift from `seed`): zstd cannot shrink them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn check_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn push_and_pull_over_quic_tcp_and_rsh() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, a, b) = (t.path().join("src"), t.path().join("a"), t.path().join("b"));
    sample(&src);
    let srv = serve(&c.join("destination"), &[format!("a={}", s(&a)), format!("b={}", s(&b))]);
    let id = c.join("source");
    for (transport, module) in [("quic", "a"), ("tcp", "b")] {
        let url = format!("ferry://127.0.0.1:{}/{module}", srv.addr.port());
        let out = ferry(&[
            "push",
            s(&src),
            &url,
            "--identity",
            s(&id),
            "--transport",
            transport,
            "--json",
        ]);
        check_ok(&out);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = if transport == "quic" { "QUIC" } else { "TLS over TCP" };
        assert_eq!(r["transport"], want);
        // QUIC rounds spread files over data streams beside the control stream.
        assert_eq!(r["streams"], if transport == "quic" { 5 } else { 1 });
        assert_eq!(r["stats"]["files_new"], 51);
        assert_same_tree(&src, &t.path().join(module));
    }
    // An incremental push over `auto` moves only the change.
    let mut big = std::fs::read(src.join("db/data.bin")).unwrap();
    big[5_000_000..5_000_100].fill(7);
    std::fs::write(src.join("db/data.bin"), &big).unwrap();
    let url = format!("ferry://localhost:{}/a", srv.addr.port());
    let out = ferry(&["push", s(&src), &url, "--identity", s(&id), "--json"]);
    check_ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // `auto` measured both transports and used the one it names.
    let log = String::from_utf8_lossy(&out.stderr);
    let probe = log
        .lines()
        .find(|l| l.contains("transport auto: probed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        probe.contains("QUIC") && probe.contains("MB/s") && probe.contains("TLS over TCP"),
        "{probe}"
    );
    let used =
        if probe.ends_with("using QUIC for the next hour") { "QUIC" } else { "TLS over TCP" };
    assert_eq!(r["transport"], used, "{probe}");
    assert_eq!(r["stats"]["files_changed"], 1);
    assert!(r["stats"]["literal_bytes"].as_u64().unwrap() < 200_000, "{r}");
    assert_same_tree(&src, &a);
    // Pull both modules back.
    for transport in ["quic", "tcp"] {
        let dst = t.path().join(format!("pulled-{transport}"));
        let url = format!("ferry://127.0.0.1:{}/b", srv.addr.port());
        check_ok(&ferry(&["pull", &url, s(&dst), "--identity", s(&id), "--transport", transport]));
        assert_same_tree(&b, &dst);
    }
    // Over a remote shell: the "remote" is a local sh -c running `ferry serve --stdio`.
    let via_rsh = t.path().join("rsh");
    let rsh = format!("{FERRY} serve --stdio --module m={}", s(&via_rsh));
    check_ok(&ferry(&["push", s(&src), "ferry://remote/m", "--rsh", &rsh]));
    assert_same_tree(&src, &via_rsh);
    let back = t.path().join("rsh-back");
    check_ok(&ferry(&["pull", "ferry://remote/m", s(&back), "--rsh", &rsh]));
    assert_same_tree(&src, &back);
}

#[test]
fn module_modes_are_enforced() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, ro, wo) = (t.path().join("src"), t.path().join("ro"), t.path().join("wo"));
    sample(&src);
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("keep"), b"original").unwrap();
    let srv =
        serve(&c.join("destination"), &[format!("ro={}:ro", s(&ro)), format!("wo={}:wo", s(&wo))]);
    let id = c.join("source");
    let port = srv.addr.port();
    let out = ferry(&[
        "push",
        s(&src),
        &format!("ferry://127.0.0.1:{port}/ro"),
        "--identity",
        s(&id),
        "--delete",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 1);
    let out = ferry(&[
        "pull",
        &format!("ferry://127.0.0.1:{port}/wo"),
        s(&t.path().join("x")),
        "--identity",
        s(&id),
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("write-only"));
    let out =
        ferry(&["push", s(&src), &format!("ferry://127.0.0.1:{port}/nope"), "--identity", s(&id)]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no module named"));
}

/// Every refused credential fails the handshake, with exit code 3 and a message naming why,
/// and the server keeps serving.
#[test]
fn bad_credentials_are_refused_before_any_application_byte() {
    let t = tempfile::tempdir().unwrap();
    let good = creds(&t.path().join("good"));
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let dst = t.path().join("dst");
    let srv = serve(&good.join("destination"), &[format!("m={}", s(&dst))]);
    let now = OffsetDateTime::now_utc();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let expired =
        init::generate(&names, now - TDuration::days(30), now - TDuration::days(1)).unwrap();
    let future =
        init::generate(&names, now + TDuration::days(1), now + TDuration::days(30)).unwrap();
    let other = init::generate_for_days(&names, 30).unwrap();
    // A source certificate from the right CA but expired / not yet valid: reuse the good CA by
    // signing with it is not possible (its key is gone), so these pairs have their own CA;
    // trust them on the client side only through their own ca.pem.
    let cases = [
        ("expired", expired.source.clone(), "expired"),
        ("not-yet-valid", future.source.clone(), "valid"),
        ("other-ca", other.source.clone(), "certificate"),
    ];
    for (name, id, _) in &cases {
        init::write_identity(&t.path().join(name), id).unwrap();
    }
    for transport in ["quic", "tcp"] {
        for (name, _, _) in &cases {
            let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
            let out = ferry(&[
                "push",
                s(&src),
                &url,
                "--identity",
                s(&t.path().join(name)),
                "--transport",
                transport,
            ]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{name} over {transport}: {err}");
            assert!(err.contains("authentication failed"), "{name}: {err}");
        }
    }
    // A server whose certificate names another host than the one dialled.
    let named = t.path().join("named");
    let pair = init::generate_for_days(&["db.example".to_string()], 30).unwrap();
    init::write_identity(&named.join("destination"), &pair.destination).unwrap();
    init::write_identity(&named.join("source"), &pair.source).unwrap();
    let srv3 = serve(&named.join("destination"), &[format!("m={}", s(&dst))]);
    for transport in ["quic", "tcp"] {
        let url = format!("ferry://127.0.0.1:{}/m", srv3.addr.port());
        let out = ferry(&[
            "push",
            s(&src),
            &url,
            "--identity",
            s(&named.join("source")),
            "--transport",
            transport,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{transport}: {err}");
        assert!(err.contains("not valid for name"), "{transport}: {err}");
    }
    assert!(!dst.join("f").exists(), "nothing may be written for a refused peer");
    // Expired and not-yet-valid certificates on the server side are refused by the client.
    let exp_dir = t.path().join("exp-server");
    init::write_identity(&exp_dir.join("destination"), &expired.destination).unwrap();
    init::write_identity(&exp_dir.join("source"), &expired.source).unwrap();
    let srv2 = serve(&exp_dir.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv2.addr.port());
    let out = ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&exp_dir.join("source")),
        "--transport",
        "tcp",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.to_lowercase().contains("expired"), "{err}");
    // The first server is still serving good clients.
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    check_ok(&ferry(&["push", s(&src), &url, "--identity", s(&good.join("source"))]));
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"x");
}

/// A TLS client that presents no certificate gets no further than the handshake.
#[test]
fn a_client_without_a_certificate_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let ca = std::fs::read(c.join("source/ca.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"ferry/1".to_vec()];
        let sock = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls =
            tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, sock).await.unwrap();
        // TLS 1.3: the server's verdict on our (missing) certificate arrives with our first
        // read or write.
        let req = request("m", Direction::Push);
        let _ = write_value(&mut tls, &req).await;
        read_value::<Response, _>(&mut tls).await.unwrap_err()
    });
    let text = err.to_string();
    assert!(text.contains("CertificateRequired") || text.contains("certificate"), "{text}");
    assert!(!dst.exists() || std::fs::read_dir(&dst).unwrap().count() == 0);
}

fn request(module: &str, direction: Direction) -> Request {
    Request {
        version_min: ferry_core::message::PROTOCOL_MIN,
        version_max: ferry_core::message::PROTOCOL_VERSION,
        module: module.into(),
        direction,
        options: RoundOptions {
            delete: true,
            checksum: false,
            dry_run: false,
            excludes: vec![],
            compress_level: 3,
        },
        lanes: 0,
    }
}

/// Connects as a legitimate client (valid certificate) that will then misbehave.
async fn hostile_client(c: &Path, addr: SocketAddr) -> ferry_transport::net::Link {
    let id = Identity::load(&c.join("source")).unwrap();
    connect_tcp(addr, "localhost", &id, Duration::from_secs(5)).await.unwrap()
}

#[test]
fn unknown_protocol_version_is_named() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&t.path().join("dst")))]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resp = rt.block_on(async {
        let mut link = hostile_client(&c, srv.addr).await;
        let mut req = request("m", Direction::Push);
        req.version_min = 99;
        req.version_max = 120;
        write_value(&mut link.writer, &req).await.unwrap();
        read_value::<Response, _>(&mut link.reader).await.unwrap()
    });
    match resp {
        Response::Refused { reason, server_min, server_max, .. } => {
            assert_eq!((server_min, server_max), (3, 3));
            assert!(reason.contains("99..=120") && reason.contains("3..=3"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // An older client's request may have another shape (version 1 had no lanes); it still
    // gets the version error, because the range leads every request.
    let resp = rt.block_on(async {
        let mut link = hostile_client(&c, srv.addr).await;
        write_value(&mut link.writer, &(1u32, 1u32, "m".to_string())).await.unwrap();
        read_value::<Response, _>(&mut link.reader).await.unwrap()
    });
    match resp {
        Response::Refused { code, reason, .. } => {
            assert_eq!(code, ferry_agent::net::Refusal::Version);
            assert!(reason.contains("client 1..=1") && reason.contains("3..=3"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// An authenticated client that lies: bad frames, paths escaping the root, duplicates,
/// unrequested data. Each gets a protocol error; nothing outside the module changes.
#[test]
fn an_authenticated_but_hostile_client_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("keep"), b"keep").unwrap();
    std::fs::write(t.path().join("canary"), b"canary").unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let meta = Meta { mode: 0o644, uid: 0, gid: 0, mtime_ns: 0 };
    let entry = |p: &str, kind| Entry {
        path: ferry_core::RelPath::new(p).unwrap(),
        kind,
        size: 4,
        meta,
        xattrs: vec![],
        hash: None,
    };
    // Raw frames that are valid postcard for the framing but lie.
    let hello = Message::Hello { min: 2, max: 2, features: 0 };
    // (case, messages after Hello, raw bytes written after them)
    type Case = (&'static str, Vec<Message>, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        (
            "duplicate entries",
            vec![
                hello.clone(),
                Message::Entries(vec![entry("a", EntryKind::File), entry("a", EntryKind::File)]),
            ],
            None,
        ),
        (
            "unsorted entries",
            vec![
                hello.clone(),
                Message::Entries(vec![entry("b", EntryKind::File), entry("a", EntryKind::File)]),
            ],
            None,
        ),
        (
            "orphan entry",
            vec![hello.clone(), Message::Entries(vec![entry("x/y", EntryKind::File)])],
            None,
        ),
        (
            "unrequested data",
            vec![
                hello.clone(),
                Message::Segment {
                    file: 9,
                    index: 0,
                    payload: ferry_core::message::Payload::Literal,
                    encoding: ferry_core::message::Encoding::Raw,
                    data: vec![1; 4],
                },
            ],
            None,
        ),
        ("size lie", vec![hello.clone(), Message::EndOfManifest { count: 7, root: None }], None),
        // A path with `..` cannot even be expressed as a RelPath: write it as raw postcard.
        ("dotdot path", vec![hello.clone()], Some(dotdot_entries_frame())),
        ("oversized frame", vec![hello.clone()], Some((u32::MAX).to_le_bytes().to_vec())),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, msgs, raw) in cases {
        let aborted = rt.block_on(async {
            // The previous round may still be winding down on the server: Busy is transient.
            let mut link = None;
            for _ in 0..100 {
                let mut l = hostile_client(&c, srv.addr).await;
                write_value(&mut l.writer, &request("m", Direction::Push)).await.unwrap();
                match read_value::<Response, _>(&mut l.reader).await.unwrap() {
                    Response::Accepted { .. } => {
                        link = Some(l);
                        break;
                    }
                    Response::Refused { code: ferry_agent::net::Refusal::Busy, .. } => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
            let mut link = link.unwrap_or_else(|| panic!("{name}: module stayed busy"));
            for m in &msgs {
                write_message(&mut link.writer, m).await.unwrap();
            }
            if let Some(raw) = raw {
                use tokio::io::AsyncWriteExt;
                link.writer.write_all(&raw).await.unwrap();
            }
            use tokio::io::AsyncWriteExt;
            link.writer.flush().await.unwrap();
            // The server answers with its own messages and, on a violation, an Abort (or it
            // drops the connection when the framing itself is broken).
            let limits = ferry_core::Limits::default();
            loop {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    read_message(&mut link.reader, &limits),
                )
                .await
                {
                    Ok(Ok(Some(Message::Abort { reason }))) => return Some(reason),
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) | Ok(Err(_)) => return None,
                    Err(_) => panic!("{name}: the server neither aborted nor closed"),
                }
            }
        });
        let reason = aborted.unwrap_or_else(|| panic!("{name}: closed without an Abort"));
        assert!(reason.contains("protocol"), "{name}: {reason}");
        let mut names: Vec<_> =
            std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["keep"], "{name}");
        assert_eq!(std::fs::read(t.path().join("canary")).unwrap(), b"canary", "{name}");
    }
    // After all that, an honest client still gets served.
    let src = t.path().join("src");
    sample(&src);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    check_ok(&ferry(&["push", s(&src), &url, "--identity", s(&c.join("source")), "--delete"]));
    assert_same_tree(&src, &dst);
}

/// An `Entries` frame whose one entry has the path `../x`, encoded by hand (a `RelPath` can
/// never hold it).
fn dotdot_entries_frame() -> Vec<u8> {
    let honest = Message::Entries(vec![Entry {
        path: ferry_core::RelPath::new("aa/x").unwrap(),
        kind: EntryKind::File,
        size: 1,
        meta: Meta { mode: 0o644, uid: 0, gid: 0, mtime_ns: 0 },
        xattrs: vec![],
        hash: None,
    }]);
    let mut body = ferry_core::message::encode(&honest);
    // The path bytes "aa/x" follow their length byte 4; make them "../x".
    let at = body.windows(4).position(|w| w == b"aa/x").unwrap();
    body[at..at + 2].copy_from_slice(b"..");
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

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

#[test]
fn init_writes_private_keys_0600_and_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let out =
        ferry(&["init", "--out", s(t.path()), "--name", "dest.example", "--k8s-secret", "ns/pair"]);
    check_ok(&out);
    for side in ["destination", "source"] {
        let key = std::fs::metadata(t.path().join(side).join("key.pem")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        let y = std::fs::read_to_string(t.path().join(format!("{side}-secret.yaml"))).unwrap();
        assert!(
            y.contains(&format!("name: pair-{side}"))
                && y.contains("namespace: ns")
                && y.contains("key.pem: |"),
            "{y}"
        );
    }
    let out = ferry(&["init", "--out", s(t.path()), "--name", "x"]);
    assert!(!out.status.success(), "init must not overwrite existing credentials");
}

/// `--bwlimit` caps what the sender puts on the wire: a round cannot finish faster than its
/// bytes at the cap allow (a lower bound only: a slow machine cannot make this fail).
#[test]
fn bwlimit_paces_the_sender() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let noise = noise(3 << 20, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(src.join("noise.bin"), &noise).unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let start = std::time::Instant::now();
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&c.join("source")),
        "--bwlimit",
        "2M",
    ]));
    let took = start.elapsed();
    // 3 MiB at 2 MiB/s: at least 1.5 s once the pacing is right.
    assert!(took >= Duration::from_millis(1400), "3 MiB at 2 MiB/s took only {took:?}");
    assert_same_tree(&src, &dst);
}

/// `ferry bench --peer` measures a real link both ways, over each transport, and touches no
/// file of the module it names.
#[test]
fn bench_peer_measures_both_ways_and_touches_nothing() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("keep"), b"keep").unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    for transport in ["quic", "tcp"] {
        let out = ferry(&[
            "bench",
            "--peer",
            &url,
            "--identity",
            s(&c.join("source")),
            "--transport",
            transport,
            "--size-mib",
            "8",
            "--sync-mib",
            "6",
            "--json",
        ]);
        check_ok(&out);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["bytes"], 8 << 20);
        for k in ["rtt_ms", "upload_gbps", "download_gbps"] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{transport}: {k} in {r}");
        }
        // The synthetic round ran through the sessions: all its bytes crossed, the text files
        // compressed (so fewer bytes on the wire than in the tree, but more than the half
        // that is random).
        let sync = &r["sync"];
        assert_eq!(sync["bytes"], 6 << 20, "{r}");
        assert!(sync["files"].as_u64().unwrap() > 50, "{r}");
        let wire = sync["wire_bytes"].as_u64().unwrap();
        assert!(wire > 4 << 20 && wire < 6 << 20, "{r}");
        assert!(sync["secs"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Neither side leaves its scratch tree behind.
    for dir in [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        let pid = srv.child.id();
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let server_left = format!("ferry-bench-dst-{pid}-");
        assert!(
            !left.iter().any(|n| n.to_string_lossy().starts_with(&server_left)),
            "{}: {left:?}",
            dir.display()
        );
    }
    let out = ferry(&[
        "bench",
        "--peer",
        &format!("ferry://127.0.0.1:{}/nope", srv.addr.port()),
        "--identity",
        s(&c.join("source")),
        "--sync-mib",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let names: Vec<_> = std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["keep"]);
}

fn snapshots(state: &Path, want: usize, count: usize) -> Vec<serde_json::Value> {
    // The server snapshots after telling the client the round is done, then applies retention:
    // wait for both (bounded).
    for _ in 0..200 {
        let out = ferry(&["snapshots", "list", "--state-dir", s(state), "--module", "m", "--json"]);
        check_ok(&out);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        if v.last().and_then(|r| r["round"].as_u64()) == Some(want as u64) && v.len() == count {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("snapshot of round {want} (and {count} in all) never appeared");
}

/// After each round the destination holds a snapshot equal to the source as it was at that
/// round, unchanged by later rounds (hard links share inodes with the live tree, and rounds
/// never modify an inode in place); retention keeps the newest N.
#[test]
fn each_pushed_round_leaves_a_snapshot_of_that_round() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a"), b"version 1").unwrap();
    std::fs::write(src.join("d/b"), b"bbb").unwrap();
    std::os::unix::fs::symlink("a", src.join("l")).unwrap();
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state), "--keep-last", "2"],
    );
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let push = || {
        check_ok(&ferry(&["push", s(&src), &url, "--identity", s(&c.join("source")), "--delete"]))
    };
    let keep = |n: u32| {
        let r = t.path().join(format!("ref{n}"));
        let out = Command::new("rsync")
            .arg("-aHAX")
            .arg(format!("{}/", s(&src)))
            .arg(&r)
            .output()
            .unwrap();
        assert!(out.status.success());
        r
    };
    push();
    let ref1 = keep(1);
    let s1 = snapshots(&state, 1, 1);
    let snap =
        |rec: &serde_json::Value| state.join("snapshots/m").join(rec["id"].as_str().unwrap());
    assert_same_tree(&ref1, &snap(&s1[0]));
    // Round 2: content, mode and type changes, a delete and an add.
    std::fs::write(src.join("a"), b"version 2, longer").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("d/b"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(src.join("l")).unwrap();
    std::fs::write(src.join("c"), b"new").unwrap();
    push();
    let ref2 = keep(2);
    let s2 = snapshots(&state, 2, 2);
    assert_same_tree(&ref1, &snap(&s2[0]));
    assert_same_tree(&ref2, &snap(&s2[1]));
    // Round 3: the directory goes; retention drops round 1.
    std::fs::remove_dir_all(src.join("d")).unwrap();
    push();
    let s3 = snapshots(&state, 3, 2);
    assert_eq!(s3.iter().map(|r| r["round"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert_same_tree(&ref2, &snap(&s3[0]));
    assert_same_tree(&src, &snap(&s3[1]));
    assert_same_tree(&src, &dst);
    // Restore round 2 elsewhere: a copy, so writing into it leaves the snapshot alone.
    let restored = t.path().join("restored");
    let id2 = s3[0]["id"].as_str().unwrap();
    let restore = [
        "restore",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id2,
        "--to",
        s(&restored),
    ];
    let out = ferry(&restore);
    check_ok(&out);
    // ext4 cannot clone: a verified copy.
    assert!(String::from_utf8_lossy(&out.stdout).contains("as a verified copy"));
    assert_same_tree(&ref2, &restored);
    std::fs::write(restored.join("a"), b"the app wrote here").unwrap();
    assert_same_tree(&ref2, &snap(&s3[0]));
    // --hardlinks: instant, the snapshot's own inodes, with a warning; only into a new dir.
    let linked = t.path().join("linked");
    let mut hl = restore.to_vec();
    hl[8] = s(&linked);
    hl.push("--hardlinks");
    let out = ferry(&hl);
    check_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("as hard links"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("changes the snapshot too"));
    assert_same_tree(&ref2, &linked);
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&linked.join("a")), ino(&snap(&s3[0]).join("a")));
    }
    assert_eq!(ferry(&hl).status.code(), Some(2), "--hardlinks into an existing directory");
    // Delete it; an unknown id is a usage error.
    let del = ["snapshots", "delete", "--state-dir", s(&state), "--module", "m", "--snapshot", id2];
    check_ok(&ferry(&del));
    assert!(!snap(&s3[0]).exists());
    assert_eq!(ferry(&del).status.code(), Some(2));
    let left = snapshots(&state, 3, 1);
    assert_eq!(left.len(), 1);
}

/// Hard-link snapshots need the state directory on the module's filesystem: refuse at start.
#[test]
fn a_state_dir_on_another_filesystem_is_refused_at_start() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(t.path()).unwrap().dev()
    );
    let out = Command::new(FERRY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--identity",
            s(&c.join("destination")),
            "--state-dir",
            s(shm.path()),
        ])
        .args(["--module", &format!("m={}", s(&t.path().join("dst")))])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another filesystem"), "{err}");
}

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

/// A QUIC client that offers data streams and then abuses them: names a lane that does not
/// exist, or sends a control frame waiting for data it never sends. The server ends the round
/// with an error, the module is untouched, and a legitimate push still works afterwards.
#[test]
fn hostile_data_streams_end_the_round_and_change_nothing() {
    use tokio::io::AsyncWriteExt;
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("keep"), b"keep").unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let id = Identity::load(&c.join("source")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for case in ["lane out of range", "unsatisfiable dependency"] {
        rt.block_on(async {
            let mut link = None;
            for _ in 0..100 {
                let mut l = ferry_transport::net::connect_quic(
                    srv.addr,
                    "localhost",
                    &id,
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
                let mut req = request("m", Direction::Push);
                req.lanes = 4;
                write_value(&mut l.writer, &req).await.unwrap();
                match read_value::<Response, _>(&mut l.reader).await.unwrap() {
                    Response::Accepted { lanes, .. } => {
                        assert_eq!(lanes, 4, "{case}");
                        link = Some(l);
                        break;
                    }
                    Response::Refused { code: ferry_agent::net::Refusal::Busy, .. } => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("{case}: {other:?}"),
                }
            }
            let mut link = link.unwrap();
            let (conn, _) = link.quic.clone().unwrap();
            let names: [u8; 4] =
                if case == "lane out of range" { [1, 2, 3, 9] } else { [1, 2, 3, 4] };
            let mut streams = Vec::new();
            for n in names {
                let (mut send, recv) = conn.open_bi().await.unwrap();
                send.write_all(&[n]).await.unwrap();
                streams.push((send, recv));
            }
            if case == "unsatisfiable dependency" {
                // Hello on the control lane claiming 5 earlier messages on lane 1; then every
                // lane ends.
                let mut frame = 5u64.to_le_bytes().to_vec();
                frame.extend_from_slice(&[0; 24]);
                ferry_core::message::write_frame(
                    &Message::Hello { min: 2, max: 2, features: 0 },
                    &mut frame,
                );
                link.writer.write_all(&frame).await.unwrap();
                link.writer.shutdown().await.unwrap();
                for (send, _) in &mut streams {
                    send.finish().unwrap();
                }
            }
            // The server gives up on the round and closes the connection.
            let closed = tokio::time::timeout(Duration::from_secs(20), conn.closed()).await;
            assert!(closed.is_ok(), "{case}: the server kept the connection open");
        });
        let names: Vec<_> =
            std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("keep")], "{case}");
    }
    let src = t.path().join("src");
    sample(&src);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let out =
        ferry(&["push", s(&src), &url, "--identity", s(&c.join("source")), "--delete", "--json"]);
    check_ok(&out);
    assert_same_tree(&src, &dst);
}

/// A module `m` served with a state directory, and a sample source tree to push into it.
struct Rig {
    t: tempfile::TempDir,
    c: PathBuf,
    src: PathBuf,
    dst: PathBuf,
    state: PathBuf,
    srv: std::cell::RefCell<Option<Server>>,
    url: String,
}

impl Rig {
    fn new() -> Rig {
        let t = tempfile::tempdir().unwrap();
        let c = creds(t.path());
        let (src, dst, state) =
            (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
        sample(&src);
        let srv = serve_with(
            &c.join("destination"),
            &[format!("m={}", s(&dst))],
            &["--state-dir", s(&state)],
        );
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        Rig { t, c, src, dst, state, srv: std::cell::RefCell::new(Some(srv)), url }
    }

    /// Stops the server (as before a failover).
    fn stop(&self) {
        self.srv.borrow_mut().take();
    }

    fn push(&self) {
        check_ok(&ferry(&[
            "push",
            s(&self.src),
            &self.url,
            "--identity",
            s(&self.c.join("source")),
            "--delete",
        ]));
    }
}

/// Every committed round leaves a durable commit record whose root hash names the tree; the
/// snapshot carries it, `snapshots verify` re-reads the snapshot and agrees, and a snapshot
/// changed behind Ferry's back (same size, mtime restored) is caught.
#[test]
fn commits_record_a_root_hash_that_verify_checks() {
    let rig = Rig::new();
    let (src, state) = (rig.src.clone(), rig.state.clone());
    let push = || rig.push();
    push();
    let s1 = snapshots(&state, 1, 1);
    std::fs::write(src.join("new-file"), b"round two").unwrap();
    push();
    let s2 = snapshots(&state, 2, 2);
    // Round three changes nothing: same tree, same hash (the cache answers for every file).
    push();
    let s3 = snapshots(&state, 3, 3);
    let hash = |r: &serde_json::Value| r["root_hash"].as_str().unwrap().to_string();
    for r in [&s1[0], &s2[1], &s3[2]] {
        assert_eq!(hash(r).len(), 64, "{r}");
    }
    assert_ne!(hash(&s1[0]), hash(&s2[1]));
    assert_eq!(hash(&s2[1]), hash(&s3[2]));
    // The commit record is durable state beside the snapshots and agrees with them.
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("commits/m/last.json")).unwrap()).unwrap();
    assert_eq!(last["round"], 3);
    assert_eq!(last["root_hash"], s3[2]["root_hash"]);
    let history = std::fs::read_to_string(state.join("commits/m/history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 3);
    // verify re-reads every file (no cache) and agrees, for old and new snapshots.
    for r in [&s1[0], &s3[2]] {
        let id = r["id"].as_str().unwrap();
        let out = ferry(&[
            "snapshots",
            "verify",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            id,
            "--json",
        ]);
        check_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["verification"]["computed"], r["root_hash"], "{v}");
    }
    // Tamper with snapshot 1: same size, mtime put back.
    let id1 = s1[0]["id"].as_str().unwrap();
    let victim = state.join("snapshots/m").join(id1).join("db/data.bin");
    let meta = std::fs::metadata(&victim).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0xff;
    // A new file renamed over it, as an app would; the snapshot loses the original inode.
    let tmp = victim.with_extension("tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&tmp).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    std::fs::set_permissions(&tmp, meta.permissions()).unwrap();
    std::fs::rename(&tmp, &victim).unwrap();
    let out = ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id1,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DOES NOT MATCH"));
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
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
    let mut push = Command::new(FERRY)
        .args(["push", s(&src), &url, "--identity", s(&c.join("source")), "--every", "1h"])
        .args(["--http", "127.0.0.1:0", "--transport", "tcp"])
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
    assert_eq!(http(&addr, "POST", "/trigger").0, 202);
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

/// Failover: `ferry promote` makes a snapshot the live data directory (a verified copy with
/// new inodes, swapped in atomically), keeps the replaced tree aside, and leaves the snapshot
/// intact even when the application then writes into the promoted tree.
#[test]
fn promote_makes_a_snapshot_the_live_tree() {
    use std::os::unix::fs::MetadataExt;
    let rig = Rig::new();
    let t = &rig.t;
    let (src, dst, state) = (rig.src.clone(), rig.dst.clone(), rig.state.clone());
    let push = || rig.push();
    push();
    let reference = t.path().join("ref1");
    check_ok(
        &Command::new("rsync")
            .arg("-aHAX")
            .arg(format!("{}/", s(&src)))
            .arg(&reference)
            .output()
            .unwrap(),
    );
    std::fs::write(src.join("db/later"), b"round two").unwrap();
    std::fs::remove_dir_all(src.join("db/wal")).unwrap();
    push();
    let list = snapshots(&state, 2, 2);
    rig.stop(); // failover: the destination's server is stopped first
    let id1 = list[0]["id"].as_str().unwrap();
    let out = ferry(&["promote", "--state-dir", s(&state), "--module", "m", "--snapshot", id1]);
    check_ok(&out);
    assert_same_tree(&reference, &dst);
    let snap1 = state.join("snapshots/m").join(id1);
    let (a, b) = (
        std::fs::metadata(dst.join("db/data.bin")).unwrap(),
        std::fs::metadata(snap1.join("db/data.bin")).unwrap(),
    );
    assert_ne!(a.ino(), b.ino(), "the live tree must not share inodes with the snapshot");
    // The replaced tree (round two) is kept aside, named in the output.
    let text = String::from_utf8_lossy(&out.stdout);
    let aside = text.lines().find_map(|l| l.strip_prefix("the replaced tree is at ")).unwrap();
    let aside = PathBuf::from(aside.split(" (").next().unwrap());
    assert_same_tree(&src, &aside);
    // The application writes; the snapshot does not change.
    std::fs::write(dst.join("db/data.bin"), b"the app after failover").unwrap();
    let v = ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id1,
    ]);
    check_ok(&v);
    assert_same_tree(&reference, &snap1);
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

/// A userspace UDP relay (this kernel has no netem) between one QUIC client and the server:
/// drops a share of the datagrams each way, delays them, and can blackhole everything for a
/// while once a number of client bytes have crossed (mid-round, whatever the timing).
struct UdpRelay {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn udp_relay(
    server: SocketAddr,
    drop_per_mille: u64,
    delay: Duration,
    blackhole: Option<(u64, Duration)>,
) -> UdpRelay {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;
    let front = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    let back = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    back.connect(server).unwrap();
    let addr = front.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let forwarded = Arc::new(AtomicU64::new(0));
    let dark_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
    // One direction: receive on `from`, hold for `delay`, send on `to`.
    let pump = |upstream: bool, seed: u64| {
        let (front, back, stop, client, forwarded, dark_until) = (
            front.clone(),
            back.clone(),
            stop.clone(),
            client.clone(),
            forwarded.clone(),
            dark_until.clone(),
        );
        std::thread::spawn(move || {
            let mut x = seed;
            let mut queue: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
            let mut buf = vec![0u8; 65536];
            let from = if upstream { &front } else { &back };
            while !stop.load(Ordering::Relaxed) {
                let wait = queue.front().map_or(Duration::from_millis(20), |(at, _)| {
                    at.saturating_duration_since(Instant::now()).max(Duration::from_micros(100))
                });
                from.set_read_timeout(Some(wait)).unwrap();
                if let Ok((n, peer)) = from.recv_from(&mut buf) {
                    if upstream {
                        *client.lock().unwrap() = Some(peer);
                        let total = forwarded.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                        if let Some((after, len)) = blackhole {
                            let mut d = dark_until.lock().unwrap();
                            if total >= after && d.is_none() {
                                *d = Some(Instant::now() + len);
                            }
                        }
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let dark = dark_until.lock().unwrap().is_some_and(|t| Instant::now() < t);
                    if !dark && x % 1000 >= drop_per_mille {
                        queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
                    }
                }
                while queue.front().is_some_and(|(at, _)| *at <= Instant::now()) {
                    let (_, d) = queue.pop_front().unwrap();
                    if upstream {
                        let _ = back.send(&d);
                    } else if let Some(c) = *client.lock().unwrap() {
                        let _ = front.send_to(&d, c);
                    }
                }
            }
        });
    };
    pump(true, 0x9E37_79B9_7F4A_7C15);
    pump(false, 0xD1B5_4A32_D192_ED03);
    UdpRelay { addr, stop }
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

/// A QUIC push through a relay that goes dark mid-round: a 1 s idle timeout and quick
/// retries. Checks that it succeeded after at least one retry; returns its `--json` report.
fn push_through_a_cut(src: &Path, url: &str, id: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["push", s(src), url, "--identity", s(id), "--transport", "quic"];
    args.extend(["--json", "--idle-timeout", "1", "--retries", "20", "--retry-base", "300ms"]);
    args.extend(extra);
    let out = ferry(&args);
    check_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retry 1"), "the cut attempt was not retried:\n{err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A btrfs filesystem on a loop device for the reflink and btrfs snapshotters (ext4 here has
/// neither). Needs root, loop devices and btrfs-progs (`.ci/run` installs it).
struct LoopBtrfs {
    mnt: PathBuf,
}

impl LoopBtrfs {
    fn new(dir: &Path) -> LoopBtrfs {
        let img = dir.join("btrfs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&img).unwrap().set_len(400 << 20).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (install btrfs-progs)"));
            assert!(
                out.status.success(),
                "{cmd:?}: {} (these tests need root, loop devices and btrfs-progs)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("mkfs.btrfs").arg("-q").arg(&img));
        run(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        LoopBtrfs { mnt }
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// `--snapshot reflink` on btrfs: snapshots are reflinked copies (own inodes, shared blocks)
/// of each round, unchanged by later rounds; on ext4 the server refuses to start, saying why.
/// `--snapshot btrfs`: a read-only subvolume snapshot per round, verified and deleted with
/// btrfs; a module that is not a subvolume is refused.
#[test]
fn reflink_and_btrfs_snapshotters() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    // ext4 (this tempdir) has no reflinks: refused at start, with the reason.
    let out = Command::new(FERRY)
        .args(["serve", "--listen", "127.0.0.1:0", "--snapshot", "reflink", "--identity"])
        .arg(c.join("destination"))
        .arg("--module")
        .arg(format!("m={}", s(&t.path().join("ext4-data"))))
        .arg("--state-dir")
        .arg(t.path().join("ext4-state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not support reflinks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fs = LoopBtrfs::new(t.path());
    let src = t.path().join("src");
    sample(&src);
    for kind in ["reflink", "btrfs"] {
        let data = fs.mnt.join(format!("{kind}-data"));
        let state = fs.mnt.join(format!("{kind}-state"));
        if kind == "btrfs" {
            // Not a subvolume yet: refused.
            std::fs::create_dir_all(&data).unwrap();
            let out = Command::new(FERRY)
                .args(["serve", "--listen", "127.0.0.1:0", "--snapshot", "btrfs", "--identity"])
                .arg(c.join("destination"))
                .arg("--module")
                .arg(format!("m={}", s(&data)))
                .arg("--state-dir")
                .arg(&state)
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("not a btrfs subvolume"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::remove_dir(&data).unwrap();
            check_ok(
                &Command::new("btrfs").args(["subvolume", "create"]).arg(&data).output().unwrap(),
            );
        }
        let srv = serve_with(
            &c.join("destination"),
            &[format!("m={}", s(&data))],
            &["--state-dir", s(&state), "--snapshot", kind],
        );
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        let push = || {
            check_ok(&ferry(&[
                "push",
                s(&src),
                &url,
                "--identity",
                s(&c.join("source")),
                "--delete",
            ]))
        };
        push();
        let first = snapshots(&state, 1, 1);
        assert_eq!(first[0]["kind"], kind);
        let snap1 = state.join("snapshots/m").join(first[0]["id"].as_str().unwrap());
        assert_same_tree(&src, &snap1);
        let (live, snap) = (
            std::fs::metadata(data.join("db/data.bin")).unwrap(),
            std::fs::metadata(snap1.join("db/data.bin")).unwrap(),
        );
        assert_ne!(
            (live.dev(), live.ino()),
            (snap.dev(), snap.ino()),
            "{kind}: the snapshot shares the live inode"
        );
        if kind == "btrfs" {
            assert_eq!(std::fs::metadata(&snap1).unwrap().ino(), 256, "a subvolume");
            assert!(std::fs::write(snap1.join("x"), b"x").is_err(), "the snapshot is read-only");
        }
        let reference = t.path().join(format!("{kind}-ref1"));
        check_ok(
            &Command::new("rsync")
                .arg("-aHAX")
                .arg(format!("{}/", s(&src)))
                .arg(&reference)
                .output()
                .unwrap(),
        );
        std::fs::write(src.join("db/later"), kind).unwrap();
        push();
        let both = snapshots(&state, 2, 2);
        assert_same_tree(&reference, &snap1);
        // Restore on btrfs: reflinked copies (own inodes), read back against the root hash.
        let restored = fs.mnt.join(format!("{kind}-restored"));
        let out = ferry(&[
            "restore",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            first[0]["id"].as_str().unwrap(),
            "--to",
            s(&restored),
        ]);
        check_ok(&out);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("as reflinked copies") && said.contains("as recorded"), "{said}");
        assert_same_tree(&reference, &restored);
        assert_ne!(
            std::fs::metadata(restored.join("db/data.bin")).unwrap().ino(),
            std::fs::metadata(snap1.join("db/data.bin")).unwrap().ino()
        );
        std::fs::write(restored.join("db/data.bin"), b"the app wrote here").unwrap();
        assert_same_tree(&reference, &snap1);
        let id2 = both[1]["id"].as_str().unwrap();
        let v = ferry(&[
            "snapshots",
            "verify",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            id2,
        ]);
        check_ok(&v);
        let d = ferry(&[
            "snapshots",
            "delete",
            "--state-dir",
            s(&state),
            "--module",
            "m",
            "--snapshot",
            id2,
        ]);
        check_ok(&d);
        assert!(!state.join("snapshots/m").join(id2).exists());
        std::fs::remove_file(src.join("db/later")).unwrap();
        drop(srv);
    }
}

/// `--snapshot command`: the user's command runs after each commit with the round, the
/// module's root, the snapshot's name and the root hash; its record lists it; verify says it
/// cannot read it.
#[test]
fn command_snapshotter_runs_the_users_command() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst, state, store) = (
        t.path().join("src"),
        t.path().join("dst"),
        t.path().join("state"),
        t.path().join("store"),
    );
    sample(&src);
    std::fs::create_dir_all(&store).unwrap();
    let cmd = format!(
        "cp -a \"$FERRY_ROOT\" {store}/\"$FERRY_SNAPSHOT_NAME\" && echo \"$FERRY_ROUND $FERRY_ROOT_HASH\" > {store}/\"$FERRY_SNAPSHOT_NAME\".info",
        store = s(&store)
    );
    let srv = serve_with(
        &c.join("destination"),
        &[format!("m={}", s(&dst))],
        &["--state-dir", s(&state), "--snapshot", "command", "--snapshot-command", &cmd],
    );
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    check_ok(&ferry(&["push", s(&src), &url, "--identity", s(&c.join("source")), "--delete"]));
    let list = snapshots(&state, 1, 1);
    let (id, hash) = (list[0]["id"].as_str().unwrap(), list[0]["root_hash"].as_str().unwrap());
    assert_eq!(list[0]["kind"], "command");
    assert_same_tree(&src, &store.join(id));
    assert_eq!(
        std::fs::read_to_string(store.join(format!("{id}.info"))).unwrap(),
        format!("1 {hash}\n")
    );
    let v = ferry(&[
        "snapshots",
        "verify",
        "--state-dir",
        s(&state),
        "--module",
        "m",
        "--snapshot",
        id,
    ]);
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("lives in your storage"),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
}

/// `push --source-snapshot`: the round reads a point-in-time image of the source, not the live
/// tree (reflink and btrfs on a loop-mounted btrfs; command with the user's own image), and the
/// images Ferry made are gone afterwards.
#[test]
fn push_reads_a_point_in_time_image_of_the_source() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let fs = LoopBtrfs::new(t.path());
    let dst = t.path().join("dst");
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let id = c.join("source");
    // Reflink: a plain directory on btrfs.
    let src = fs.mnt.join("src");
    sample(&src);
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&id),
        "--delete",
        "--source-snapshot",
        "reflink",
    ]));
    assert_same_tree(&src, &dst);
    // Btrfs: the source is a subvolume.
    let vol = fs.mnt.join("vol");
    check_ok(&Command::new("btrfs").args(["subvolume", "create"]).arg(&vol).output().unwrap());
    sample(&vol);
    std::fs::write(vol.join("only-in-vol"), b"subvolume").unwrap();
    check_ok(&ferry(&[
        "push",
        s(&vol),
        &url,
        "--identity",
        s(&id),
        "--delete",
        "--source-snapshot",
        "btrfs",
    ]));
    assert_same_tree(&vol, &dst);
    let left: Vec<_> = std::fs::read_dir(&fs.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ferry-source-image"))
        .collect();
    assert!(left.is_empty(), "images left behind: {left:?}");
    // Command: the user's image differs from the live tree, so the destination shows which
    // one was read.
    let img = t.path().join("img");
    let cmd = format!(
        "cp -a \"$FERRY_ROOT\" {i} && echo from-the-image > {i}/marker && echo {i}",
        i = s(&img)
    );
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&id),
        "--delete",
        "--source-snapshot",
        "command",
        "--source-snapshot-command",
        &cmd,
    ]));
    assert_eq!(std::fs::read_to_string(dst.join("marker")).unwrap(), "from-the-image\n");
    assert!(!src.join("marker").exists());
}

/// The destination keeps the signatures of the large files it writes: the next round that
/// finds such a file changed on the source signs its basis from the cache (counted in
/// /metrics), not by reading it, and the result is the same tree. A server run with
/// `--no-signature-cache` reads and signs every basis.
#[test]
fn the_signature_cache_answers_for_large_files_written_by_the_last_round() {
    for cached in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let c = creds(t.path());
        let (src, dst, state) =
            (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        let big = noise(6 << 20, 11);
        std::fs::write(src.join("d/big"), &big).unwrap();
        std::fs::write(src.join("mid"), noise(2 << 20, 12)).unwrap();
        std::fs::write(src.join("small"), b"below the cache's threshold").unwrap();
        let http_addr =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let mut extra = vec!["--state-dir", s(&state), "--http", &http_addr];
        if !cached {
            extra.push("--no-signature-cache");
        }
        let srv = serve_with(&c.join("destination"), &[format!("m={}", s(&dst))], &extra);
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        let push = || {
            check_ok(&ferry(&[
                "push",
                s(&src),
                &url,
                "--identity",
                s(&c.join("source")),
                "--delete",
                "--transport",
                "tcp",
            ]))
        };
        push();
        // Change a few bytes inside both large files, same sizes, new mtimes.
        let mut b2 = big.clone();
        b2[3 << 20..(3 << 20) + 100].fill(7);
        std::fs::write(src.join("d/big"), &b2).unwrap();
        let mut m2 = std::fs::read(src.join("mid")).unwrap();
        m2[1000] ^= 0xff;
        std::fs::write(src.join("mid"), &m2).unwrap();
        push();
        assert_same_tree(&src, &dst);
        // The server finishes its round (snapshot, cache) after the client has its answer:
        // wait for the counter to get there, then assert it is exactly that.
        let metric = |name: &str, want: u64| {
            let read = || -> u64 {
                let (_, body) = http(&http_addr, "GET", "/metrics");
                body.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .map_or(0, |v| v.parse().unwrap())
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while read() < want && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert_eq!(read(), want, "{name}");
        };
        if cached {
            metric("ferry_signature_cache_total{event=\"hit\"}", 2);
            metric("ferry_signature_cache_hit_bytes_total", (6 << 20) + (2 << 20));
            // Round one stored both, round two stored their new versions.
            metric("ferry_signature_cache_total{event=\"stored\"}", 4);
            // A third round after the second's change reads from the cache again.
            b2[100] ^= 1;
            std::fs::write(src.join("d/big"), &b2).unwrap();
            push();
            assert_same_tree(&src, &dst);
            metric("ferry_signature_cache_total{event=\"hit\"}", 3);
        } else {
            metric("ferry_signature_cache_total{event=\"miss\"}", 0);
            metric("ferry_signature_cache_total{event=\"hit\"}", 0);
            assert!(!state.join("signatures").exists());
        }
    }
}

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
