//! Authenticated peers that lie: bad frames, escaping paths, abused QUIC data streams. Each
//! ends the round; nothing outside the module changes; honest clients are still served.

use std::time::Duration;

use ferry_agent::net::{Direction, Response};
use ferry_core::entry::{Entry, EntryKind, Meta};
use ferry_core::Message;
use ferry_transport::frame::{read_message, read_value, write_message, write_value};
use ferry_transport::tls::Identity;

use crate::common::peer::{hostile_client, request};
use crate::common::{assert_same_tree, check_ok, creds, ferry, s, sample, serve};

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
