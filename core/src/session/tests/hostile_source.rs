//! A peer speaking only a future version, and a hostile source: crafted messages fed to a
//! lone target session, which must refuse them and drop whatever it had staged.

use super::*;

fn assert_version_error(r: Result<(), SessionError>) {
    let e = r.expect_err("a future-only peer is refused");
    let text = e.to_string();
    match e {
        SessionError::Version { our_min, our_max, peer_min, peer_max } => {
            assert_eq!((our_min, our_max), (PROTOCOL_MIN, PROTOCOL_VERSION));
            assert_eq!((peer_min, peer_max), (99, 99));
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(text.contains(&format!("{PROTOCOL_MIN}..={PROTOCOL_VERSION}")), "{text}");
    assert!(text.contains("99..=99"), "{text}");
}

#[test]
fn a_peer_speaking_only_a_future_version_is_refused_by_both_sides() {
    let future = Message::Hello { min: 99, max: 99, features: 0 };

    let mut dst = TargetSession::new(SessionOptions::default());
    assert_version_error(dst.handle_message(future.clone()));
    let out: Vec<Message> = std::iter::from_fn(|| dst.poll_transmit()).collect();
    assert!(matches!(out.last(), Some(Message::Abort { .. })), "{out:?}");
    assert!(dst.is_finished() && !dst.succeeded());

    let mut src = SourceSession::new(SessionOptions::default());
    assert_version_error(src.handle_message(future));
    let out: Vec<Message> = std::iter::from_fn(|| src.poll_transmit()).collect();
    assert!(matches!(out.last(), Some(Message::Abort { .. })), "{out:?}");
    assert!(src.is_finished());
    assert!(src.poll_work().is_none(), "a failed source starts no work");
}

// ---------------------------------------------------------------------------------------------
// A hostile source
// ---------------------------------------------------------------------------------------------

/// A target session fed crafted messages directly, its work done by a [`DestFs`].
pub(super) struct LoneTarget {
    pub(super) dst: TargetSession,
    pub(super) fs: DestFs,
    limits: Limits,
    pub(super) asked: Vec<&'static str>,
    pub(super) sent: Vec<Message>,
}

impl LoneTarget {
    /// A target past the greeting, whose destination holds `local`.
    pub(super) fn new(opts: SessionOptions, local: MemTree) -> Self {
        let mut t = LoneTarget {
            dst: TargetSession::new(opts.clone()),
            fs: DestFs { tree: local, limits: opts.limits, ..DestFs::default() },
            limits: opts.limits,
            asked: Vec::new(),
            sent: Vec::new(),
        };
        t.feed(peer_hello()).expect("hello accepted");
        t
    }

    /// Delivers `m` as it would arrive off the wire.
    pub(super) fn feed(&mut self, m: Message) -> Result<(), SessionError> {
        let m = wire(&m, &self.limits).expect("crafted messages are representable");
        let r = self.dst.handle_message(m);
        self.sent.extend(std::iter::from_fn(|| self.dst.poll_transmit()));
        r
    }

    /// Performs the work the target asks for until it asks for no more.
    pub(super) fn settle(&mut self) -> Result<(), SessionError> {
        while let Some((id, w)) = self.dst.poll_work() {
            self.asked.push(target_work_name(&w).0);
            let o = self.fs.perform(w);
            let r = self.dst.handle_outcome(id, o);
            self.sent.extend(std::iter::from_fn(|| self.dst.poll_transmit()));
            r?;
        }
        Ok(())
    }

    fn wanted(&self, file: FileId) -> bool {
        self.sent.iter().any(|m| matches!(m, Message::Want { file: f, .. } if *f == file))
    }

    /// Feeds `m`, which must be refused as `want` describes, and checks the aftermath.
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
        assert!(self.dst.error().is_some());
        // The round is over: what is still asked (dropping temp files) runs, nothing commits.
        self.settle().expect("outcomes after an error are accepted");
        assert!(!self.asked.contains(&"Finish"), "{name}: asked to commit {:?}", self.asked);
        assert!(self.fs.staging.is_empty(), "{name}: a staged file was kept");
        // Further input is ignored, not acted on.
        self.feed(Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Literal,
            encoding: Encoding::Raw,
            data: vec![0],
        })
        .expect("a dead session ignores input");
        assert!(self.dst.poll_work().is_none());
        assert!(self.dst.is_finished() && !self.dst.succeeded());
    }
}

fn lone_target() -> LoneTarget {
    LoneTarget::new(SessionOptions::default(), MemTree::default())
}

/// A target that was sent one new file of `size` bytes and has asked for it.
pub(super) fn target_wanting(size: u64) -> LoneTarget {
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("f", size)])).expect("entry accepted");
    t.settle().expect("scan and plan");
    assert!(t.wanted(0), "{:?}", t.sent);
    t
}

fn literal(file: FileId, index: u64, data: Vec<u8>) -> Message {
    Message::Segment { file, index, payload: Payload::Literal, encoding: Encoding::Raw, data }
}

#[test]
fn target_refuses_unsorted_and_duplicate_entries() {
    lone_target().assert_refuses(
        Message::Entries(vec![file_entry("b", 1), file_entry("a", 1)]),
        |e| matches!(e, ProtocolError::Unsorted { path, previous } if path == "a" && previous == "b"),
    );
    lone_target()
        .assert_refuses(Message::Entries(vec![file_entry("a", 1), file_entry("a", 1)]), |e| {
            matches!(e, ProtocolError::Unsorted { .. })
        });
    // Order is kept across batches too.
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("m", 1)])).expect("first batch");
    t.assert_refuses(Message::Entries(vec![file_entry("c", 1)]), |e| {
        matches!(e, ProtocolError::Unsorted { .. })
    });
}

#[test]
fn target_refuses_entries_without_their_parent() {
    lone_target().assert_refuses(
        Message::Entries(vec![file_entry("x/y", 1)]),
        |e| matches!(e, ProtocolError::Orphan(p) if p == "x/y"),
    );
    // A parent that is a file is no parent.
    lone_target()
        .assert_refuses(Message::Entries(vec![file_entry("x", 1), file_entry("x/y", 1)]), |e| {
            matches!(e, ProtocolError::Orphan(_))
        });
    // Nor is a directory the manifest has left: `b/y` follows `a`'s subtree, not `b`.
    lone_target().assert_refuses(
        Message::Entries(vec![dir_entry("a"), file_entry("a/x", 1), file_entry("b/y", 1)]),
        |e| matches!(e, ProtocolError::Orphan(p) if p == "b/y"),
    );
}

#[test]
fn target_refuses_entries_beyond_its_credit() {
    let opts = SessionOptions { window_entries: 4, ..SessionOptions::default() };
    let five: Vec<Entry> = (0..5).map(|i| file_entry(&format!("f{i}"), 1)).collect();
    LoneTarget::new(opts.clone(), MemTree::default())
        .assert_refuses(Message::Entries(five.clone()), |e| matches!(e, ProtocolError::Credit(_)));
    // The credit is cumulative: 3 + 2 overruns a window of 4 while nothing has been merged
    // (the target's own scan has not run, so it cannot merge).
    let mut t = LoneTarget::new(opts, MemTree::default());
    t.feed(Message::Entries(five[..3].to_vec())).expect("within credit");
    t.assert_refuses(Message::Entries(five[3..].to_vec()), |e| {
        matches!(e, ProtocolError::Credit(_))
    });
}

#[test]
fn target_refuses_malformed_entries() {
    let link =
        |to: &str| Entry { kind: EntryKind::HardLink { to: path(to) }, ..file_entry("m", 0) };
    lone_target().assert_refuses(
        Message::Entries(vec![link("z")]),
        |e| matches!(e, ProtocolError::Invalid(why) if why.contains("forward")),
    );
    lone_target().assert_refuses(Message::Entries(vec![link("m")]), |e| {
        matches!(e, ProtocolError::Invalid(_))
    });
    for target in [&b""[..], b"a\0b"] {
        let e =
            Entry { kind: EntryKind::Symlink { target: target.to_vec() }, ..file_entry("s", 0) };
        lone_target()
            .assert_refuses(Message::Entries(vec![e]), |e| matches!(e, ProtocolError::Invalid(_)));
    }
    let long =
        Entry { kind: EntryKind::Symlink { target: vec![b'x'; 5000] }, ..file_entry("s", 0) };
    lone_target()
        .assert_refuses(Message::Entries(vec![long]), |e| matches!(e, ProtocolError::Limit(_)));
    // --checksum: the target compares by hash, so a file entry without one is useless.
    let opts = SessionOptions { checksum: true, ..SessionOptions::default() };
    LoneTarget::new(opts, MemTree::default())
        .assert_refuses(Message::Entries(vec![file_entry("f", 1)]), |e| {
            matches!(e, ProtocolError::Invalid(_))
        });
}

#[test]
fn target_refuses_a_manifest_that_does_not_add_up() {
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("a", 1), file_entry("b", 1)])).expect("entries");
    t.assert_refuses(Message::EndOfManifest { count: 3, root: None }, |e| {
        matches!(e, ProtocolError::Invalid(_))
    });
    let mut t = lone_target();
    t.feed(Message::EndOfManifest { count: 0, root: None }).expect("an empty manifest");
    t.assert_refuses(Message::Entries(vec![file_entry("a", 1)]), |e| {
        matches!(e, ProtocolError::Unexpected { .. })
    });
}

#[test]
fn target_refuses_a_batch_over_the_entry_limit() {
    let opts = SessionOptions {
        limits: Limits { max_batch_entries: 4, ..Limits::default() },
        ..SessionOptions::default()
    };
    let five: Vec<Entry> = (0..5).map(|i| file_entry(&format!("f{i}"), 1)).collect();
    LoneTarget::new(opts, MemTree::default()).assert_refuses(Message::Entries(five), |e| {
        matches!(e, ProtocolError::Limit(LimitExceeded { got: 5, limit: 4, .. }))
    });
}

#[test]
fn target_refuses_segments_for_files_it_did_not_ask_for() {
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("f", 10)])).expect("entry");
    t.settle().expect("plan");
    t.assert_refuses(literal(7, 0, vec![0; 10]), |e| matches!(e, ProtocolError::UnknownFile(7)));

    // Listed but unchanged, so never wanted.
    let mut local = MemTree::default();
    local.file("f", meta(0o644, 1), vec![0; 10]);
    let mut t = LoneTarget::new(SessionOptions::default(), local);
    t.feed(Message::Entries(vec![file_entry("f", 10)])).expect("entry");
    t.settle().expect("plan");
    assert!(!t.wanted(0));
    t.assert_refuses(literal(0, 0, vec![0; 10]), |e| matches!(e, ProtocolError::UnknownFile(0)));
}

#[test]
fn target_refuses_segments_out_of_order() {
    let three = 3 * SEGMENT_LEN as u64;
    target_wanting(three).assert_refuses(literal(0, 1, vec![1]), |e| {
        matches!(e, ProtocolError::SegmentOrder { file: 0, want: 0, got: 1 })
    });
    // A repeat.
    let mut t = target_wanting(three);
    t.feed(literal(0, 0, vec![1])).expect("first segment");
    t.assert_refuses(literal(0, 0, vec![1]), |e| {
        matches!(e, ProtocolError::SegmentOrder { want: 1, got: 0, .. })
    });
    // Past the end.
    let mut t = target_wanting(10);
    t.feed(literal(0, 0, vec![0; 10])).expect("the only segment");
    t.assert_refuses(literal(0, 1, vec![1]), |e| matches!(e, ProtocolError::SegmentOrder { .. }));
}

#[test]
fn target_refuses_a_file_end_that_disagrees_with_the_manifest() {
    let data = text(100, "f");
    let hash = *blake3::hash(&data).as_bytes();
    let mut t = target_wanting(100);
    t.feed(literal(0, 0, data.clone())).expect("segment");
    t.settle().expect("write");
    t.assert_refuses(Message::FileEnd { file: 0, size: 101, hash }, |e| {
        matches!(e, ProtocolError::SizeMismatch { file: 0, .. })
    });
    // The right size but segments missing.
    target_wanting(2 * SEGMENT_LEN as u64)
        .assert_refuses(Message::FileEnd { file: 0, size: 2 * SEGMENT_LEN as u64, hash }, |e| {
            matches!(e, ProtocolError::SizeMismatch { .. })
        });
}

#[test]
fn target_refuses_a_file_ended_or_failed_out_of_turn() {
    lone_target()
        .assert_refuses(Message::FileFailed { file: 4, reason: FileFailure::Vanished }, |e| {
            matches!(e, ProtocolError::UnknownFile(4))
        });
    let data = text(100, "f");
    let end = Message::FileEnd { file: 0, size: 100, hash: *blake3::hash(&data).as_bytes() };
    let mut t = target_wanting(100);
    t.feed(literal(0, 0, data)).expect("segment");
    t.feed(end.clone()).expect("end");
    t.assert_refuses(end, |e| matches!(e, ProtocolError::UnknownFile(0)));
    // Failing a file after ending it.
    let mut t = target_wanting(0);
    t.feed(Message::FileEnd { file: 0, size: 0, hash: *blake3::hash(b"").as_bytes() })
        .expect("end");
    t.assert_refuses(Message::FileFailed { file: 0, reason: FileFailure::Changed }, |e| {
        matches!(e, ProtocolError::UnknownFile(0))
    });
}

#[test]
fn target_refuses_an_oversized_segment_before_queuing_it() {
    let cap = SEGMENT_LEN + (SEGMENT_LEN >> 7) + 1024;
    target_wanting(SEGMENT_LEN as u64).assert_refuses(literal(0, 0, vec![0; cap + 1]), |e| {
        matches!(e, ProtocolError::Limit(LimitExceeded { what: "segment payload", .. }))
    });
}

#[test]
fn target_refuses_messages_only_a_target_sends() {
    lone_target().assert_refuses(
        Message::SignaturePiece { file: 0, blocks: vec![0; 20], last: true },
        |e| matches!(e, ProtocolError::Unexpected { what: "SignaturePiece" }),
    );
    lone_target().assert_refuses(Message::Want { file: 0, basis: None }, |e| {
        matches!(e, ProtocolError::Unexpected { what: "Want" })
    });
}

#[test]
fn target_refuses_a_delta_it_offered_no_basis_for() {
    target_wanting(100).assert_refuses(
        Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Delta,
            encoding: Encoding::Raw,
            data: vec![0x72, 0x73, 0x02, 0x36, 0],
        },
        |e| matches!(e, ProtocolError::Invalid(_)),
    );
}

#[test]
fn target_refuses_a_segment_that_rebuilds_to_the_wrong_length() {
    // Accepted on arrival (the length is known only once decoded), refused by the write.
    let mut t = target_wanting(100);
    t.feed(literal(0, 0, vec![0; 99])).expect("queued");
    match t.settle() {
        Err(SessionError::Protocol(ProtocolError::Invalid(why))) => {
            assert!(why.contains("99"), "{why}")
        }
        other => panic!("expected bad data, got {other:?}"),
    }
    assert!(matches!(t.sent.last(), Some(Message::Abort { .. })));
    t.settle().expect("discards run");
    assert!(!t.asked.contains(&"Finish"));
    assert!(t.fs.staging.is_empty());
}

#[test]
fn target_refuses_segments_beyond_its_byte_credit() {
    // window_bytes is raised to 2 segments (16 MiB); the Writes are not performed, so no
    // credit comes back. The third 8 MiB segment is beyond what was granted.
    let opts = SessionOptions { window_bytes: 0, ..SessionOptions::default() };
    let mut t = LoneTarget::new(opts, MemTree::default());
    t.feed(Message::Entries(vec![file_entry("f", 5 * SEGMENT_LEN as u64)])).expect("entry");
    t.settle().expect("plan");
    assert!(t.wanted(0));
    t.feed(literal(0, 0, vec![1])).expect("within credit");
    t.feed(literal(0, 1, vec![1])).expect("within credit");
    t.assert_refuses(literal(0, 2, vec![1]), |e| matches!(e, ProtocolError::Credit(_)));
}

#[test]
fn target_has_no_pending_work_once_a_failed_round_drains() {
    // Its first scan is queued (not yet taken by the driver) when the peer misbehaves.
    let mut t = lone_target();
    assert!(t.dst.has_pending_work());
    let _ = t.feed(Message::Entries(vec![file_entry("b", 1), file_entry("a", 1)]));
    t.settle().expect("discards run");
    assert!(t.dst.poll_work().is_none(), "nothing is left for the driver to do");
    assert!(!t.dst.has_pending_work(), "target still reports pending work");
}

#[test]
fn source_has_no_pending_work_once_a_failed_round_drains() {
    // A scan is out at the driver when the peer misbehaves; its outcome comes back later.
    let mut s = LoneSource::new(sample_tree(false), false);
    let (id, _scan) = s.src.poll_work().expect("a scan");
    assert!(s.feed(Message::Settled { file: 3 }).is_err());
    s.src
        .handle_outcome(
            id,
            SourceOutcome::Scanned { entries: Vec::new(), done: true, errors: Vec::new() },
        )
        .expect("a late outcome is accepted");
    assert!(!s.src.has_pending_work(), "source still reports pending work");
}

#[test]
fn done_is_the_last_thing_the_target_says() {
    let src = sample_tree(false);
    let opts = SessionOptions { dry_run: true, ..SessionOptions::default() };
    let pair = round(src, MemTree::default(), opts);
    let tail = &pair.log.to_src[pair.log.to_src.len().saturating_sub(2)..];
    assert!(matches!(tail.last(), Some(Message::Done { .. })), "after Done: {tail:?}");
}
