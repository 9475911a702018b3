//! The receiving side's own policy: fifos and device nodes only with its `--specials`,
//! setuid/setgid and file capabilities only with its `--keep-privileged`, whatever the peer
//! sends.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ferry_agent::net::{Direction, Response};
use ferry_core::entry::{Entry, EntryKind, Meta, Xattr};
use ferry_core::message::{Encoding, Payload};
use ferry_core::session::{SourceOutcome, SourceWork};
use ferry_core::{Message, SessionOptions, SourceSession, Stats};
use ferry_transport::frame::{read_message, read_value, write_message, write_value};

use crate::common::peer::{hostile_client, request};
use crate::common::{check_ok, creds, ferry, s, serve_with};

fn entry(path: &str, kind: EntryKind, size: u64, mode: u32, xattrs: Vec<Xattr>) -> Entry {
    Entry {
        path: ferry_core::RelPath::new(path).unwrap(),
        kind,
        size,
        meta: Meta { mode, uid: 0, gid: 0, mtime_ns: 1_600_000_000_000_000_000 },
        xattrs,
        hash: None,
    }
}

/// What a hostile source pushes: a block device 254,0 and a char device 1,3 mode 0666, a
/// fifo, a setuid-root file and a file with a capability xattr.
fn hostile_manifest() -> Vec<Entry> {
    let cap = Xattr {
        name: b"security.capability".to_vec(),
        value: vec![1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    };
    vec![
        entry(
            "blk",
            EntryKind::BlockDevice { rdev: rustix::fs::makedev(254, 0) },
            0,
            0o666,
            vec![],
        ),
        entry("cap", EntryKind::File, 5, 0o755, vec![cap]),
        entry("chr", EntryKind::CharDevice { rdev: rustix::fs::makedev(1, 3) }, 0, 0o666, vec![]),
        entry("fifo", EntryKind::Fifo, 0, 0o666, vec![]),
        entry("suid", EntryKind::File, 5, 0o6755, vec![]),
    ]
}

/// Pushes `hostile_manifest` into module `m` of the server at `addr` with a real
/// `SourceSession` (file contents: `hello`); returns the destination's `Done` stats.
fn hostile_push(c: &Path, addr: std::net::SocketAddr) -> Stats {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut link = hostile_client(c, addr).await;
        write_value(&mut link.writer, &request("m", Direction::Push)).await.unwrap();
        let resp: Response = read_value(&mut link.reader).await.unwrap();
        assert!(matches!(resp, Response::Accepted { .. }), "{resp:?}");
        let mut src = SourceSession::new(SessionOptions::default());
        let mut manifest = Some(hostile_manifest());
        let limits = ferry_core::Limits::default();
        loop {
            while let Some((id, w)) = src.poll_work() {
                let o = match w {
                    SourceWork::Scan { .. } => SourceOutcome::Scanned {
                        entries: manifest.take().unwrap_or_default(),
                        done: true,
                        errors: Vec::new(),
                    },
                    SourceWork::Segment { index, len, file_len, .. } => {
                        let data = b"hello"[..len].to_vec();
                        SourceOutcome::Segment {
                            hash: ferry_core::hash::hash_segment(index, &data, file_len),
                            data,
                            payload: Payload::Literal,
                            encoding: Encoding::Raw,
                            counts: Default::default(),
                        }
                    }
                    other => panic!("unexpected work {other:?}"),
                };
                src.handle_outcome(id, o).unwrap();
            }
            while let Some(m) = src.poll_transmit() {
                write_message(&mut link.writer, &m).await.unwrap();
            }
            use tokio::io::AsyncWriteExt;
            link.writer.flush().await.unwrap();
            let m = tokio::time::timeout(
                Duration::from_secs(20),
                read_message(&mut link.reader, &limits),
            )
            .await
            .expect("the server answers")
            .unwrap()
            .expect("the server does not hang up before Done");
            if let Message::Done { stats, .. } = &m {
                return *stats;
            }
            src.handle_message(m).unwrap();
        }
    })
}

fn kind_at(p: &Path) -> Option<std::fs::FileType> {
    std::fs::symlink_metadata(p).ok().map(|m| m.file_type())
}

/// A hostile client pushes devices, a fifo, a setuid-root file and a capability into
/// `ferry serve` without flags: none of the specials exist afterwards, the files arrive
/// without setuid/setgid or capability, and Done counts both. With `serve --specials
/// --keep-privileged`, the same push creates them (the policy is the server's choice).
#[test]
fn a_hostile_push_creates_no_devices_fifos_or_setuid_files() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    for (flags, allowed) in [(&[][..], false), (&["--specials", "--keep-privileged"][..], true)] {
        let dst = t.path().join(format!("dst-{allowed}"));
        std::fs::create_dir_all(&dst).unwrap();
        let srv = serve_with(&c.join("destination"), &[format!("m={}", s(&dst))], flags);
        let stats = hostile_push(&c, srv.addr);
        let suid = std::fs::metadata(dst.join("suid")).unwrap();
        assert_eq!(std::fs::read(dst.join("suid")).unwrap(), b"hello");
        let cap = xattr_names(&dst.join("cap"));
        let json = serde_json::to_value(stats).unwrap();
        if allowed {
            assert!(kind_at(&dst.join("fifo")).unwrap().is_fifo());
            assert!(kind_at(&dst.join("chr")).unwrap().is_char_device());
            assert!(kind_at(&dst.join("blk")).unwrap().is_block_device());
            assert_eq!(suid.mode() & 0o7777, 0o6755);
            assert_eq!(json["specials_refused"], 0, "{json}");
        } else {
            for name in ["blk", "chr", "fifo"] {
                assert_eq!(kind_at(&dst.join(name)), None, "{name} was created");
            }
            assert_eq!(suid.mode() & 0o7777, 0o755, "setuid/setgid kept");
            assert!(!cap.iter().any(|n| n == "security.capability"), "{cap:?}");
            assert_eq!(json["specials_refused"], 3, "{json}");
            assert_eq!(json["privileged_dropped"], 2, "{json}");
        }
        // The fifo's and devices' absence (or presence) is all there is: no temp names left.
        let names: Vec<String> = std::fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".~ferry")), "{names:?}");
    }
}

fn xattr_names(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(c.as_c_str(), &mut buf[..]).unwrap_or(0);
    buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into())
        .collect()
}

/// `ferry sync` from a source with a setuid-root file and a fifo: without flags neither is
/// reproduced; `--specials` brings the fifo but still not the setuid bit;
/// `--keep-privileged` brings the bit.
#[test]
fn sync_reproduces_setuid_and_fifos_only_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_bits_truncate(0o644),
        0,
    )
    .unwrap();
    for (i, flags) in
        [&[][..], &["--specials"][..], &["--specials", "--keep-privileged"][..]].iter().enumerate()
    {
        let dst = t.path().join(format!("dst{i}"));
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(flags);
        args.extend([s(&src), s(&dst)]);
        let out = ferry(&args);
        check_ok(&out);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mode = std::fs::metadata(dst.join("suid")).unwrap().mode() & 0o7777;
        let fifo = kind_at(&dst.join("fifo"));
        let keep = flags.contains(&"--keep-privileged");
        assert_eq!(mode, if keep { 0o4755 } else { 0o755 }, "{flags:?}");
        assert_eq!(fifo.is_some_and(|k| k.is_fifo()), flags.contains(&"--specials"), "{flags:?}");
        assert_eq!(report["stats"]["privileged_dropped"], u64::from(!keep), "{flags:?}: {report}");
    }
}

/// `--chown` and `--usermap`/`--groupmap` set what the receiving side records.
#[test]
fn received_ids_are_mapped_on_the_receiving_side() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    std::os::unix::fs::chown(src.join("a"), Some(1000), Some(1000)).unwrap();
    std::fs::write(src.join("b"), b"b").unwrap();
    std::os::unix::fs::chown(src.join("b"), Some(0), Some(0)).unwrap();
    let args = ["sync", "--usermap", "1000:2000", "--groupmap", "1000:3000", s(&src), s(&dst)];
    check_ok(&ferry(&args));
    let a = std::fs::metadata(dst.join("a")).unwrap();
    assert_eq!((a.uid(), a.gid()), (2000, 3000));
    let b = std::fs::metadata(dst.join("b")).unwrap();
    assert_eq!((b.uid(), b.gid()), (0, 0));
    let dst2 = t.path().join("dst2");
    check_ok(&ferry(&["sync", "--chown", "7:8", s(&src), s(&dst2)]));
    for n in ["a", "b"] {
        let m = std::fs::metadata(dst2.join(n)).unwrap();
        assert_eq!((m.uid(), m.gid()), (7, 8), "{n}");
    }
}

/// Owners and groups by name, looked up in the receiving side's /etc/passwd and /etc/group:
/// `--chown daemon:nogroup`, `--usermap 1000:nobody`; an unknown name is a usage error.
#[test]
fn received_ids_may_be_given_by_name() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    std::os::unix::fs::chown(src.join("a"), Some(1000), Some(1000)).unwrap();
    let args = ["sync", "--usermap", "1000:nobody", "--groupmap", "1000:daemon", s(&src), s(&dst)];
    check_ok(&ferry(&args));
    let a = std::fs::metadata(dst.join("a")).unwrap();
    assert_eq!((a.uid(), a.gid()), (65534, 1), "nobody, and group daemon");
    let dst2 = t.path().join("dst2");
    check_ok(&ferry(&["sync", "--chown", "daemon:nogroup", s(&src), s(&dst2)]));
    let a = std::fs::metadata(dst2.join("a")).unwrap();
    assert_eq!((a.uid(), a.gid()), (1, 65534), "user daemon, group nogroup");
    let out = ferry(&["sync", "--chown", "no-such-user-here:", s(&src), s(&dst2)]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named"));
}
