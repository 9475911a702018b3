//! What a hostile peer can make `ferry serve` hold: crafted clients drive a real server and
//! its peak RSS (VmHWM in /proc/PID/status) must stay under the budget core/src/limits.rs
//! states. One server per pattern, since VmHWM is a peak over the process's life.

use std::time::{Duration, Instant};

use ferry_agent::net::{Direction, Response};
use ferry_core::delta::{BlockSize, SignatureHeader};
use ferry_core::entry::{Entry, EntryKind, Meta, Xattr};
use ferry_core::{Limits, Message};
use ferry_transport::frame::{read_message, read_value, write_message, write_value};
use ferry_transport::net::{Link, Server as Listener};
use ferry_transport::tls::Identity;

use crate::common::peer::{hostile_client, request};
use crate::common::{creds, noise, s, serve, Server, FERRY};

/// Peak resident set of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

async fn accepted(c: &std::path::Path, srv: &Server, dir: Direction) -> Link {
    let mut l = hostile_client(c, srv.addr).await;
    write_value(&mut l.writer, &request("m", dir)).await.unwrap();
    match read_value::<Response, _>(&mut l.reader).await.unwrap() {
        Response::Accepted { .. } => l,
        other => panic!("{other:?}"),
    }
}

fn hello() -> Message {
    Message::Hello {
        min: ferry_core::message::PROTOCOL_MIN,
        max: ferry_core::message::PROTOCOL_VERSION,
        features: 0,
    }
}

/// What the peer says until it aborts (its reason) or the link ends (`None`), read and
/// dropped, so only the measured side's holding counts.
async fn until_abort(mut reader: ferry_transport::net::LinkReader) -> Option<String> {
    let limits = Limits::default();
    loop {
        match read_message(&mut reader, &limits).await {
            Ok(Some(Message::Abort { reason })) => return Some(reason),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// 2000 directories with 4 xattrs of 60 KiB each: 480 MiB of metadata a receiver would hold to
/// the end of the round, 60 per message; stops early when the peer closes.
async fn send_xattr_heavy_dirs(writer: &mut ferry_transport::net::LinkWriter) {
    let meta = Meta { mode: 0o755, uid: 0, gid: 0, mtime_ns: 0 };
    let value = noise(60 << 10, 2);
    for batch in 0..34 {
        let dirs: Vec<Entry> = (0..60)
            .map(|i| Entry {
                path: ferry_core::RelPath::new(format!("d{batch:02}{i:02}")).unwrap(),
                kind: EntryKind::Dir,
                size: 0,
                meta,
                xattrs: (0..4)
                    .map(|k| Xattr {
                        name: format!("user.x{k}").into_bytes(),
                        value: value.clone(),
                    })
                    .collect(),
                hash: None,
            })
            .collect();
        if write_message(writer, &Message::Entries(dirs)).await.is_err() {
            break;
        }
    }
    use tokio::io::AsyncWriteExt;
    let _ = writer.flush().await;
}

/// Waits until the server's peak RSS has not grown for a while (or `max` is up).
fn settled_peak(pid: u32, max: Duration) -> u64 {
    let start = Instant::now();
    let (mut peak, mut since) = (peak_rss(pid), Instant::now());
    while start.elapsed() < max && since.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
        let p = peak_rss(pid);
        if p > peak {
            (peak, since) = (p, Instant::now());
        }
    }
    peak
}

const MIB: u64 = 1 << 20;

/// The budget a pull round may add to the server's resident memory: messages queued for the
/// peer (`OUTGOING_QUEUE_BYTES`), the work in flight (a few 8 MiB segments), and the
/// allocator's slack. Far under what the pattern made the server hold before (as much of the
/// tree as the client's credit allowed, read ahead).
const ROUND_BUDGET: u64 = 160 * MIB;

#[test]
fn a_pull_client_that_stops_reading_does_not_grow_the_server() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 48 incompressible files of 8 MiB (384 MiB): more than any credit allows ahead.
    let data = noise(8 << 20, 1);
    for i in 0..48 {
        std::fs::write(src.join(format!("f{i:02}")), &data).unwrap();
    }
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&src))]);
    let pid = srv.child.id();
    let base = peak_rss(pid);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let peak = rt.block_on(async {
        let mut l = accepted(&c, &srv, Direction::Pull).await;
        // As much credit as a target may grant, every file asked for whole, then silence:
        // nothing the server sends is read.
        let max = Limits::default().max_window_bytes;
        write_message(&mut l.writer, &hello()).await.unwrap();
        let credit = Message::Credit { entries: 1000, bytes: max, decided: 0 };
        write_message(&mut l.writer, &credit).await.unwrap();
        // The manifest first (Wants are only for listed files), then no more reading.
        let limits = Limits::default();
        loop {
            match ferry_transport::frame::read_message(&mut l.reader, &limits).await.unwrap() {
                Some(Message::EndOfManifest { .. }) => break,
                Some(Message::Abort { reason }) => panic!("{reason}"),
                Some(_) => {}
                None => panic!("closed"),
            }
        }
        for file in 0..48 {
            write_message(&mut l.writer, &Message::Want { file, basis: None }).await.unwrap();
        }
        use tokio::io::AsyncWriteExt;
        l.writer.flush().await.unwrap();
        let peak = tokio::task::spawn_blocking(move || settled_peak(pid, Duration::from_secs(12)))
            .await
            .unwrap();
        drop(l);
        peak
    });
    eprintln!(
        "pull, client not reading: server peak RSS {} MiB (base {} MiB)",
        peak >> 20,
        base >> 20
    );
    assert!(peak < base + ROUND_BUDGET, "peak {} MiB, base {} MiB", peak >> 20, base >> 20);
}

#[test]
fn a_push_of_directories_with_large_xattrs_is_refused_within_the_budget() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let pid = srv.child.id();
    let base = peak_rss(pid);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (peak, aborted) = rt.block_on(async {
        let l = accepted(&c, &srv, Direction::Push).await;
        let (reader, mut writer) = (l.reader, l.writer);
        // Read (and keep) what the server says, so only the server's holding is measured.
        let reading = tokio::spawn(until_abort(reader));
        write_message(&mut writer, &hello()).await.unwrap();
        send_xattr_heavy_dirs(&mut writer).await;
        let aborted = tokio::time::timeout(Duration::from_secs(20), reading).await;
        let peak = peak_rss(pid);
        (peak, aborted.ok().and_then(|r| r.ok()).flatten())
    });
    eprintln!(
        "push, directories with xattrs: server peak RSS {} MiB (base {} MiB)",
        peak >> 20,
        base >> 20
    );
    let reason = aborted.expect("the server aborts the round");
    assert!(reason.contains("max_held_bytes"), "{reason}");
    // The held budget, plus a frame or two being decoded and the allocator's slack; before,
    // every directory's 240 KiB of xattrs was held (480 MiB).
    let budget = Limits::default().max_held_bytes + 96 * MIB;
    assert!(peak < base + budget, "peak {} MiB, base {} MiB", peak >> 20, base >> 20);
}

/// Files a hostile destination asks signatures for, each announced as a 1 GiB basis in 1 KiB
/// blocks (20 MiB of signature), sent 1 MiB a piece, one piece per file in turn: 160 MiB the
/// source would hold at once, and an index of 5-6 times that once the pieces end.
const SIGNED_FILES: u64 = 8;

/// Plays a hostile destination on `l` (after the greeting and credit): asks every listed file
/// with a maximal-ish signature and sends its pieces round-robin until the source gives up.
/// Returns the source's `Abort` reason, if one came.
async fn send_signatures(l: Link) -> Option<String> {
    let (mut reader, mut writer) = (l.reader, l.writer);
    let limits = Limits::default();
    let mut files = 0;
    loop {
        match read_message(&mut reader, &limits).await.ok()?? {
            Message::Entries(es) => {
                files += es.iter().filter(|e| e.kind == EntryKind::File).count()
            }
            Message::EndOfManifest { .. } => break,
            Message::Abort { reason } => return Some(reason),
            _ => {}
        }
    }
    assert_eq!(files as u64, SIGNED_FILES, "the tree is {SIGNED_FILES} files");
    let reading = tokio::spawn(async move {
        loop {
            match read_message(&mut reader, &limits).await {
                Ok(Some(Message::Abort { reason })) => return Some(reason),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    });
    let header = SignatureHeader::new(BlockSize::new(1024).unwrap(), 1 << 30);
    let piece = noise(1 << 20, 3);
    'send: {
        for file in 0..SIGNED_FILES {
            if write_message(&mut writer, &Message::Want { file, basis: Some(header) })
                .await
                .is_err()
            {
                break 'send;
            }
        }
        for i in 0..20 {
            for file in 0..SIGNED_FILES {
                let m = Message::SignaturePiece { file, blocks: piece.clone(), last: i == 19 };
                if write_message(&mut writer, &m).await.is_err() {
                    break 'send;
                }
            }
        }
    }
    use tokio::io::AsyncWriteExt;
    let _ = writer.flush().await;
    let reason = tokio::time::timeout(Duration::from_secs(20), reading).await;
    reason.ok().and_then(|r| r.ok()).flatten()
}

/// `SIGNED_FILES` small files in a fresh source tree.
fn signed_tree(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..SIGNED_FILES {
        std::fs::write(dir.join(format!("f{i}")), noise(4096, i)).unwrap();
    }
}

/// What a source may add to its resident memory: its signatures (indexed) and the messages
/// queued for the peer, as core/src/limits.rs states them (`RoundBudget::source_total`).
fn source_budget() -> u64 {
    let l = Limits::default();
    l.round_budget(64 * MIB, 256).source_total()
}

/// A pull client (the destination) that sends signatures for every file at once: the serving
/// source stops at `max_signature_bytes` and its peak RSS stays within the source's budget.
/// (Before: every signature was held and indexed, about 1 GB.)
#[test]
fn a_destination_sending_signatures_for_every_file_stays_within_the_sources_budget() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let src = t.path().join("src");
    signed_tree(&src);
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&src))]);
    let pid = srv.child.id();
    let base = peak_rss(pid);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reason = rt.block_on(async {
        let mut l = accepted(&c, &srv, Direction::Pull).await;
        write_message(&mut l.writer, &hello()).await.unwrap();
        let credit = Message::Credit { entries: 1000, bytes: 64 * MIB, decided: 0 };
        write_message(&mut l.writer, &credit).await.unwrap();
        send_signatures(l).await
    });
    let peak = settled_peak(pid, Duration::from_secs(5));
    eprintln!(
        "pull, signatures for every file: server peak RSS {} MiB (base {} MiB)",
        peak >> 20,
        base >> 20
    );
    let reason = reason.expect("the source aborts the round");
    assert!(reason.contains("max_signature_bytes"), "{reason}");
    assert!(peak < base + source_budget(), "peak {} MiB, base {} MiB", peak >> 20, base >> 20);
}

/// The same hostile destination as a server answering `ferry push`: the pushing client runs
/// the same driver and stops at the same limit, within the same budget, and says which.
#[test]
fn a_hostile_server_sending_signatures_stays_within_the_pushing_clients_budget() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let src = t.path().join("src");
    signed_tree(&src);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = Identity::load(&c.join("destination")).unwrap();
    let mut server = rt.block_on(Listener::bind("127.0.0.1:0".parse().unwrap(), &id)).unwrap();
    let port = server.local_addr().port();
    let hostile = rt.spawn(async move {
        let mut link = server.accept().await.unwrap().unwrap();
        read_value::<ferry_agent::net::Request, _>(&mut link.reader).await.unwrap();
        let accepted =
            Response::Accepted { version: ferry_core::message::PROTOCOL_VERSION, lanes: 0 };
        write_value(&mut link.writer, &accepted).await.unwrap();
        write_message(&mut link.writer, &hello()).await.unwrap();
        let credit = Message::Credit { entries: 1000, bytes: 64 * MIB, decided: 0 };
        write_message(&mut link.writer, &credit).await.unwrap();
        send_signatures(link).await
    });
    let url = format!("ferry://127.0.0.1:{port}/m");
    let id = c.join("source");
    let args =
        ["push", s(&src), &url, "--identity", s(&id), "--transport", "tcp", "--retries", "0"];
    let (out, peak) = run_measured(&args);
    let reason = rt.block_on(hostile).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("push to a hostile server: client peak RSS {} MiB", peak >> 20);
    assert_eq!(out.status.code(), Some(5), "a limit error: {err}");
    assert!(err.contains("max_signature_bytes"), "{err}");
    let reason = reason.expect("the client aborts the round");
    assert!(reason.contains("max_signature_bytes"), "{reason}");
    // The whole client, its own start-up included, against the source's budget.
    assert!(peak < source_budget(), "peak {} MiB", peak >> 20);
}

/// Runs `ferry ARGS` to its end, sampling its peak RSS (VmHWM only grows: the last reading
/// before it exits is its peak). Returns its output and that peak.
fn run_measured(args: &[&str]) -> (std::process::Output, u64) {
    let mut child = std::process::Command::new(FERRY)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            {
                peak = peak.max(kib << 10);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), peak)
}

/// A hostile server answering `ferry pull` (the client is the destination and runs the same
/// driver as `serve`) lists directories with 240 KiB of xattrs each: the pulling client
/// refuses the round at `max_held_bytes`, within the same budget as `serve`.
#[test]
fn a_hostile_server_answering_a_pull_is_held_to_the_budget() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = Identity::load(&c.join("destination")).unwrap();
    let mut server = rt.block_on(Listener::bind("127.0.0.1:0".parse().unwrap(), &id)).unwrap();
    let port = server.local_addr().port();
    let hostile = rt.spawn(async move {
        let link = server.accept().await.unwrap().unwrap();
        let (mut reader, mut writer) = (link.reader, link.writer);
        read_value::<ferry_agent::net::Request, _>(&mut reader).await.unwrap();
        let accepted =
            Response::Accepted { version: ferry_core::message::PROTOCOL_VERSION, lanes: 0 };
        write_value(&mut writer, &accepted).await.unwrap();
        let reading = tokio::spawn(until_abort(reader));
        write_message(&mut writer, &hello()).await.unwrap();
        send_xattr_heavy_dirs(&mut writer).await;
        tokio::time::timeout(Duration::from_secs(20), reading)
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
    });
    let url = format!("ferry://127.0.0.1:{port}/m");
    let id = c.join("source");
    let args =
        ["pull", &url, s(&dst), "--identity", s(&id), "--transport", "tcp", "--retries", "0"];
    let (out, peak) = run_measured(&args);
    let reason = rt.block_on(hostile).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("pull from a hostile server: client peak RSS {} MiB", peak >> 20);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("max_held_bytes"), "{err}");
    assert!(reason.is_some_and(|r| r.contains("max_held_bytes")), "the client aborts the round");
    // The held budget, plus frames being decoded, the process itself and the allocator's
    // slack; unbounded, the 480 MiB of xattrs were held.
    let budget = Limits::default().max_held_bytes + 160 * MIB;
    assert!(peak < budget, "peak {} MiB", peak >> 20);
}
