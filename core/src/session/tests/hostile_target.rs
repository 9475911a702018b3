//! A hostile target: crafted messages fed to a lone source session, which must refuse them.

use super::*;

// A hostile target
// ---------------------------------------------------------------------------------------------

/// A source session fed crafted messages directly, its work done by a [`SourceFs`].
pub(super) struct LoneSource {
    pub(super) src: SourceSession,
    pub(super) fs: SourceFs,
    pub(super) limits: Limits,
    pub(super) sent: Vec<Message>,
}

impl LoneSource {
    /// A source past the greeting with ample credit; with `scan`, its whole manifest is out.
    pub(super) fn new(tree: MemTree, scan: bool) -> Self {
        Self::with_options(tree, scan, SessionOptions::default())
    }

    /// As [`LoneSource::new`], with `opts`.
    pub(super) fn with_options(tree: MemTree, scan: bool, opts: SessionOptions) -> Self {
        let mut s = LoneSource {
            src: SourceSession::new(opts.clone()),
            fs: SourceFs { tree, ..SourceFs::default() },
            limits: opts.limits,
            sent: Vec::new(),
        };
        s.feed(peer_hello()).expect("hello");
        s.feed(Message::Credit { entries: 1000, bytes: 64 << 20, decided: 0 }).expect("credit");
        if scan {
            s.settle();
            assert!(s.sent.iter().any(|m| message_name(m) == "EndOfManifest"), "{:?}", s.sent);
        }
        s
    }

    pub(super) fn feed(&mut self, m: Message) -> Result<(), SessionError> {
        let m = wire(&m, &self.limits).expect("crafted messages are representable");
        let r = self.src.handle_message(m);
        self.sent.extend(std::iter::from_fn(|| self.src.poll_transmit()).map(|m| summary(&m)));
        r
    }

    pub(super) fn settle(&mut self) {
        while let Some((id, w)) = self.src.poll_work() {
            let o = self.fs.perform(w);
            self.src.handle_outcome(id, o).expect("outcome accepted");
            self.sent.extend(std::iter::from_fn(|| self.src.poll_transmit()).map(|m| summary(&m)));
        }
    }

    pub(super) fn assert_refuses(mut self, m: Message, want: impl Fn(&ProtocolError) -> bool) {
        let name = message_name(&m);
        match self.feed(m) {
            Err(SessionError::Protocol(e)) => assert!(want(&e), "{name}: wrong error: {e:?}"),
            other => panic!("{name}: expected a protocol error, got {other:?}"),
        }
        assert!(
            matches!(self.sent.last(), Some(Message::Abort { .. })),
            "{name}: no Abort for the peer: {:?}",
            self.sent
        );
        assert!(self.src.error().is_some() && self.src.is_finished());
        assert!(self.src.poll_work().is_none(), "{name}: work after the error");
        self.feed(Message::Settled { file: 0 }).expect("a dead session ignores input");
    }
}

/// `d/` (id 0), `d/f` (id 1, 4 KiB), `g` (id 2, 10 bytes).
fn source_tree() -> MemTree {
    let mut t = MemTree::default();
    t.dir("d", meta(0o755, 1)).file("d/f", meta(0o644, 2), noise(4096, 3)).file(
        "g",
        meta(0o644, 3),
        text(10, "g"),
    );
    t
}

pub(super) fn header(block: u32, basis_len: u64) -> SignatureHeader {
    SignatureHeader::new(BlockSize::new(block).expect("valid block size"), basis_len)
}

#[test]
fn source_refuses_wants_for_what_it_did_not_list_as_a_file() {
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 99, basis: None }, |e| {
            matches!(e, ProtocolError::UnknownFile(99))
        });
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 0, basis: None }, |e| {
            matches!(e, ProtocolError::UnknownFile(0))
        });
    // Twice for a file already being sent.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 2, basis: None }).expect("first want");
    s.assert_refuses(Message::Want { file: 2, basis: None }, |e| {
        matches!(e, ProtocolError::UnknownFile(2))
    });
}

#[test]
fn source_refuses_a_signature_header_with_a_bad_hash_size() {
    let bad = SignatureHeader { hash_size: 17, ..header(1024, 4096) };
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 1, basis: Some(bad) }, |e| {
            matches!(e, ProtocolError::Delta(DeltaError::HashSize(17)))
        });
}

#[test]
fn source_refuses_a_signature_header_beyond_its_limits() {
    // 2^57 blocks of 64 bytes: validated before anything is allocated for it.
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 1, basis: Some(header(64, u64::MAX)) }, |e| {
            matches!(e, ProtocolError::Delta(DeltaError::Limit(_)))
        });
}

#[test]
fn source_refuses_a_signature_that_does_not_match_its_header() {
    // 4 blocks of 1024 → 80 bytes announced.
    let basis = Some(header(1024, 4096));
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis }).expect("want");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 81], last: false }, |e| {
        matches!(e, ProtocolError::SizeMismatch { file: 1, .. })
    });
    // Over the announced length only across pieces.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis }).expect("want");
    s.feed(Message::SignaturePiece { file: 1, blocks: vec![0; 60], last: false }).expect("piece");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 21], last: true }, |e| {
        matches!(e, ProtocolError::SizeMismatch { .. })
    });
    // Short.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis }).expect("want");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 40], last: true }, |e| {
        matches!(e, ProtocolError::Delta(DeltaError::SignatureLength { want: 80, got: 40 }))
    });
    // For a file wanted whole.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis: None }).expect("want");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 20], last: true }, |e| {
        matches!(e, ProtocolError::Unexpected { what: "SignaturePiece" })
    });
}

#[test]
fn source_refuses_settled_for_a_file_it_is_not_sending() {
    LoneSource::new(source_tree(), true).assert_refuses(Message::Settled { file: 2 }, |e| {
        matches!(e, ProtocolError::UnknownFile(2))
    });
    // Wanted, but its segments are still being read: not finished, so not settleable.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 2, basis: None }).expect("want");
    s.assert_refuses(Message::Settled { file: 2 }, |e| matches!(e, ProtocolError::UnknownFile(2)));
}

#[test]
fn source_refuses_an_early_done() {
    // Before the manifest is complete.
    LoneSource::new(source_tree(), false).assert_refuses(
        Message::Done {
            stats: crate::stats::Stats::default(),
            commit: crate::message::Commit::Unrecorded,
        },
        |e| matches!(e, ProtocolError::Unexpected { what: "early Done" }),
    );
    // With a file sent but not settled.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 2, basis: None }).expect("want");
    s.settle();
    assert!(s.sent.iter().any(|m| matches!(m, Message::FileEnd { file: 2, size: 10, .. })));
    s.assert_refuses(
        Message::Done {
            stats: crate::stats::Stats::default(),
            commit: crate::message::Commit::Unrecorded,
        },
        |e| matches!(e, ProtocolError::Unexpected { .. }),
    );
}

#[test]
fn source_keeps_the_commit_result_and_refuses_an_oversized_one() {
    use crate::message::{Commit, MAX_COMMIT_FIELD, MAX_COMMIT_REASON};
    let done = |commit: Commit| Message::Done { stats: crate::stats::Stats::default(), commit };
    let recorded = Commit::Recorded {
        round: 7,
        snapshot: "000007-20261129T203000Z".into(),
        root_hash: "ab".repeat(32),
    };
    // Nothing was wanted: the round may end as soon as the manifest is out.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(done(recorded.clone())).expect("a commit result within limits");
    assert_eq!(s.src.target_commit(), Some(&recorded));
    for oversized in [
        Commit::Recorded {
            round: 1,
            snapshot: "x".repeat(MAX_COMMIT_FIELD + 1),
            root_hash: "ab".into(),
        },
        Commit::Recorded {
            round: 1,
            snapshot: "x".into(),
            root_hash: "a".repeat(MAX_COMMIT_FIELD + 1),
        },
        Commit::Failed { reason: "r".repeat(MAX_COMMIT_REASON + 1) },
    ] {
        LoneSource::new(source_tree(), true).assert_refuses(done(oversized), |e| {
            matches!(e, ProtocolError::Unexpected { what: "oversized commit result" })
        });
    }
}

#[test]
fn a_commit_failure_is_cut_to_its_limit_at_a_character_boundary() {
    use crate::message::{Commit, MAX_COMMIT_REASON};
    let long = "é".repeat(MAX_COMMIT_REASON);
    let Commit::Failed { reason } = Commit::failed(&long) else { panic!("not a failure") };
    assert!(reason.len() <= MAX_COMMIT_REASON && reason.len() >= MAX_COMMIT_REASON - 1);
    assert!(Commit::failed(&long).within_limits());
    assert_eq!(Commit::failed("no space"), Commit::Failed { reason: "no space".into() });
}

#[test]
fn source_refuses_messages_only_a_source_sends() {
    LoneSource::new(source_tree(), true).assert_refuses(Message::Entries(Vec::new()), |e| {
        matches!(e, ProtocolError::Unexpected { what: "Entries" })
    });
}

/// A source offered the segments the destination kept from an interrupted round answers the
/// ones that hash the same with `Kept` and sends the others; its end hash covers the file.
#[test]
fn source_answers_resumed_segments_with_kept_and_sends_the_rest() {
    let content = noise(3 * SEGMENT_LEN + 10, 4);
    let len = content.len() as u64;
    let mut tree = MemTree::default();
    tree.file("big", meta(0o644, 1), content.clone());
    let mut s = LoneSource::new(tree, true);
    let cv =
        |i: usize| hash_segment(i as u64, &content[i * SEGMENT_LEN..(i + 1) * SEGMENT_LEN], len).0;
    // Segment 1 on the destination differs (a chunk that did not survive, say).
    s.feed(Message::Resume { file: 0, have: vec![cv(0), [7; 32], cv(2)] }).expect("resume");
    s.feed(Message::Want { file: 0, basis: None }).expect("want");
    s.settle();
    let segs: Vec<(u64, Payload)> = s
        .sent
        .iter()
        .filter_map(|m| match m {
            Message::Segment { index, payload, .. } => Some((*index, *payload)),
            _ => None,
        })
        .collect();
    let (k, l) = (Payload::Kept, Payload::Literal);
    assert_eq!(segs, [(0, k), (1, l), (2, k), (3, l)]);
    let end = s.sent.iter().find_map(|m| match m {
        Message::FileEnd { hash, .. } => Some(*hash),
        _ => None,
    });
    assert_eq!(end, Some(*blake3::hash(&content).as_bytes()));
    assert_eq!(s.src.stats().resumed_bytes, 2 * SEGMENT_LEN as u64);
}

#[test]
fn resume_offers_that_do_not_fit_are_protocol_errors() {
    let mut tree = MemTree::default();
    tree.file("big", meta(0o644, 1), noise(SEGMENT_LEN + 1, 4));
    // Longer than the file's two segments.
    LoneSource::new(tree.clone(), true)
        .assert_refuses(Message::Resume { file: 0, have: vec![[0; 32]; 3] }, |e| {
            matches!(e, ProtocolError::Unexpected { what: "Resume" })
        });
    // For a file that is not in the manifest.
    LoneSource::new(tree, true)
        .assert_refuses(Message::Resume { file: 9, have: vec![[0; 32]] }, |e| {
            matches!(e, ProtocolError::UnknownFile(9))
        });
    // A target sent `Kept` for a segment it never offered.
    target_wanting(SEGMENT_LEN as u64 * 2).assert_refuses(
        Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Kept,
            encoding: Encoding::Raw,
            data: Vec::new(),
        },
        |e| matches!(e, ProtocolError::Invalid(m) if m.contains("kept")),
    );
}
