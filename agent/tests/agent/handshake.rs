//! Who may talk to whom: credentials (`ferry init`), certificates refused before any
//! application byte, protocol versions, module modes.

use std::sync::Arc;

use ferry_agent::net::credentials as init;
use ferry_agent::net::{Direction, Response};
use ferry_transport::frame::{read_value, write_value};
use time::{Duration as TDuration, OffsetDateTime};

use crate::common::peer::{hostile_client, request};
use crate::common::{check_ok, creds, ferry, s, sample, serve};

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
            use ferry_core::message::{PROTOCOL_MIN, PROTOCOL_VERSION};
            assert_eq!((server_min, server_max), (PROTOCOL_MIN, PROTOCOL_VERSION));
            let ours = format!("{PROTOCOL_MIN}..={PROTOCOL_VERSION}");
            assert!(reason.contains("99..=120") && reason.contains(&ours), "{reason}");
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
            use ferry_core::message::{PROTOCOL_MIN, PROTOCOL_VERSION};
            let ours = format!("{PROTOCOL_MIN}..={PROTOCOL_VERSION}");
            assert!(reason.contains("client 1..=1") && reason.contains(&ours), "{reason}");
        }
        other => panic!("{other:?}"),
    }
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
