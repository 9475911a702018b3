//! What a hostile peer can make a session hold: credit beyond the target's window, payloads
//! larger than their segment, metadata held to the end of the round (core/src/limits.rs,
//! "The per-round memory budget").

use super::hostile_source::LoneTarget;
use super::hostile_target::header;
use super::*;
use crate::entry::Xattr;

fn source() -> LoneSource {
    let mut t = MemTree::default();
    t.file("f", meta(0o644, 1), noise(100, 1));
    LoneSource::new(t, true)
}

fn is_limit(what: &'static str) -> impl Fn(&ProtocolError) -> bool {
    move |e| matches!(e, ProtocolError::Limit(l) if l.what.contains(what))
}

#[test]
fn a_source_refuses_byte_credit_beyond_any_targets_window() {
    // A pull client that grants huge credit and stops reading made `serve` read its whole
    // tree into memory. The credit outstanding is capped at the largest window a target may
    // have.
    let max = Limits::default().max_window_bytes;
    let mut s = source();
    // The harness granted 64 MiB; up to the limit is fine.
    s.feed(Message::Credit { entries: 0, bytes: max - (64 << 20), decided: 0 }).expect("within");
    s.assert_refuses(
        Message::Credit { entries: 0, bytes: 1, decided: 0 },
        is_limit("outstanding byte credit"),
    );
    source().assert_refuses(
        Message::Credit { entries: 0, bytes: u64::MAX, decided: 0 },
        is_limit("outstanding byte credit"),
    );
}

#[test]
fn a_source_refuses_entry_credit_beyond_any_targets_window() {
    source().assert_refuses(
        Message::Credit { entries: u64::MAX / 2, bytes: 0, decided: 0 },
        is_limit("outstanding entry credit"),
    );
}

#[test]
fn a_target_never_grants_more_than_the_limit() {
    let opts =
        SessionOptions { window_bytes: 1 << 40, window_entries: 1 << 40, ..Default::default() };
    let mut t = TargetSession::new(opts);
    let l = Limits::default();
    let credit: Vec<Message> = std::iter::from_fn(|| t.poll_transmit()).collect();
    assert!(
        credit.iter().any(|m| matches!(m, Message::Credit { entries, bytes, .. }
            if *bytes == l.max_window_bytes && *entries == l.max_window_entries)),
        "{credit:?}"
    );
}

#[test]
fn a_target_refuses_a_payload_larger_than_its_segment() {
    // A 1-byte file carried an 8 MiB payload: payloads are held until written, so they are
    // bounded by the segment's declared length.
    let t = target_wanting(1);
    t.assert_refuses(
        Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Literal,
            encoding: Encoding::Zstd,
            data: vec![0; 8 << 20],
        },
        is_limit("segment payload"),
    );
    let cap = Limits::default().segment_payload_cap(Payload::Literal, 1) as usize;
    let mut t = target_wanting(1);
    t.feed(Message::Segment {
        file: 0,
        index: 0,
        payload: Payload::Literal,
        encoding: Encoding::Raw,
        data: vec![0; 1],
    })
    .expect("the honest payload");
    let t = target_wanting(1);
    t.assert_refuses(
        Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Literal,
            encoding: Encoding::Raw,
            data: vec![0; cap + 1],
        },
        is_limit("segment payload"),
    );
}

fn dir_with_xattrs(p: &str, n: usize, len: usize) -> Entry {
    let xattrs = (0..n)
        .map(|i| Xattr { name: format!("user.x{i:04}").into_bytes(), value: vec![7; len] })
        .collect();
    Entry { xattrs, ..dir_entry(p) }
}

#[test]
fn a_target_refuses_an_entry_with_more_xattr_bytes_than_the_limit() {
    // 200 values of 64 KiB: each within max_xattr_value, 12.5 MiB on one entry.
    LoneTarget::new(SessionOptions::default(), MemTree::default()).assert_refuses(
        Message::Entries(vec![dir_with_xattrs("d", 200, 64 << 10)]),
        is_limit("xattr bytes on one entry"),
    );
}

#[test]
fn a_target_refuses_metadata_beyond_its_round_budget() {
    // Directories are held to the end of the round (their metadata is set last): counted
    // against max_held_bytes, a clear error past it instead of growing.
    let limits = Limits { max_held_bytes: 1 << 20, ..Limits::default() };
    let opts = SessionOptions { limits, ..SessionOptions::default() };
    let mut t = LoneTarget::new(opts, MemTree::default());
    let batch = |k: usize| -> Vec<Entry> {
        (0..3).map(|i| dir_with_xattrs(&format!("d{k}{i}"), 4, 60 << 10)).collect()
    };
    t.feed(Message::Entries(batch(0))).expect("720 KiB held");
    t.settle().expect("merge");
    t.assert_refuses(Message::Entries(batch(1)), is_limit("held by the destination"));
}

#[test]
fn a_target_holds_the_source_to_the_declared_size_of_the_round() {
    // `ferry bench --peer` declared 1 byte and filled 2 GiB of /dev/shm.
    let opts = SessionOptions { max_file_bytes: Some(1), ..SessionOptions::default() };
    LoneTarget::new(opts, MemTree::default()).assert_refuses(
        Message::Entries(vec![file_entry("a", 1), file_entry("b", 1 << 31)]),
        is_limit("declared size"),
    );
}

/// Four files of 64 KiB (ids 0..=3), each signed by the peer with 64 blocks (1280 bytes), at
/// a source whose signature budget is 3000 bytes: two signatures fit at once, not three.
fn source_with_signature_budget() -> LoneSource {
    let mut t = MemTree::default();
    for i in 0..4 {
        t.file(&format!("f{i}"), meta(0o644, 1), noise(64 << 10, i));
    }
    let limits = Limits { max_signature_bytes: 3000, ..Limits::default() };
    LoneSource::with_options(t, true, SessionOptions { limits, ..SessionOptions::default() })
}

#[test]
fn a_source_holds_the_signatures_of_a_round_within_its_budget() {
    // One maximal signature made a source hold 1.7-2 GB, and nothing bounded how many files'
    // signatures it held at once. One larger than the whole budget ends the round at once...
    let sig = || Some(header(1024, 64 << 10));
    source_with_signature_budget().assert_refuses(
        Message::Want { file: 0, basis: Some(header(1024, 4 << 20)) },
        is_limit("max_signature_bytes"),
    );
    // ... and so does the piece that takes the signatures held together past it.
    let mut s = source_with_signature_budget();
    let piece = |file| Message::SignaturePiece { file, blocks: noise(1280, file), last: false };
    for file in 0..3 {
        s.feed(Message::Want { file, basis: sig() }).expect("a header within the budget");
    }
    s.feed(piece(0)).expect("within the budget");
    s.feed(piece(1)).expect("within the budget");
    s.assert_refuses(piece(2), is_limit("max_signature_bytes"));
}

#[test]
fn a_source_gives_back_the_signature_of_a_file_it_has_sent() {
    // Four signatures in a row, each held only while its file is sent: 5120 bytes in all
    // through a budget of 3000.
    let mut s = source_with_signature_budget();
    for file in 0..4 {
        s.feed(Message::Want { file, basis: Some(header(1024, 64 << 10)) }).expect("want");
        let blocks = noise(1280, 10 + file);
        s.feed(Message::SignaturePiece { file, blocks, last: true }).expect("within the budget");
        s.settle();
        assert!(
            s.sent.iter().any(|m| matches!(m, Message::FileEnd { file: f, .. } if *f == file)),
            "file {file} not sent: {:?}",
            s.sent
        );
    }
    assert!(s.src.error().is_none(), "{:?}", s.src.error());
}
