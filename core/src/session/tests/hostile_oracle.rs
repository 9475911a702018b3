//! What a hostile source can learn of the destination's data (docs/ARCHITECTURE.md, "Threat
//! model", "What a peer can learn"): every message the target derives from its own bytes
//! covers whole blocks of at least the documented size, whatever the peer asks.

use super::hostile_source::LoneTarget;
use super::*;

/// A target whose destination holds `f` (`local` bytes, another mtime than the source's), and
/// that has been sent an entry of `size` bytes for it; the target signed its basis and wants
/// the file by delta. Returns the target and the `Want`'s header.
fn target_signing(local: Vec<u8>, size: u64) -> (LoneTarget, SignatureHeader) {
    let mut tree = MemTree::default();
    tree.file("f", meta(0o600, 2), local);
    let mut t = LoneTarget::new(SessionOptions::default(), tree);
    t.feed(Message::Entries(vec![file_entry("f", size)])).expect("entry accepted");
    t.settle().expect("scan, plan and sign");
    let header = t
        .sent
        .iter()
        .find_map(|m| match m {
            Message::Want { file: 0, basis: Some(h) } => Some(*h),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Want with a basis: {:?}", t.sent));
    (t, header)
}

fn signature_bytes(t: &LoneTarget) -> usize {
    t.sent
        .iter()
        .map(|m| match m {
            Message::SignaturePiece { blocks, .. } => blocks.len(),
            _ => 0,
        })
        .sum()
}

fn is_refine_error(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Delta(DeltaError::Refine { .. }) | ProtocolError::Invalid(_))
}

const MIB: u64 = 1 << 20;

#[test]
fn a_signature_never_holds_a_block_shorter_than_its_block_size() {
    // 1 KiB + 1 byte: blocks of 512, and a 1-byte last block, which would give that byte away.
    let (t, h) = target_signing(noise(1025, 1), 2000);
    assert_eq!(h.block_size.get(), 512);
    assert_eq!(h.basis_len, 1024, "the short tail is not signed");
    assert_eq!(signature_bytes(&t), 2 * delta::BLOCK_SIG_LEN);
    // The same for a coarse signature (two-level delta): the tail is sent as literal data.
    let (t, h) = target_signing(noise(5 * MIB as usize + 3, 1), 5 * MIB);
    let b = u64::from(h.block_size.get());
    assert_eq!(h.basis_len, 5 * MIB / b * b);
    assert_eq!(signature_bytes(&t) as u64, h.basis_len / b * delta::BLOCK_SIG_LEN as u64);
}

#[test]
fn a_short_file_is_never_refined() {
    // The attack of issue 11: a 4-byte gap of a small file signs 4 chosen bytes.
    let (t, _) = target_signing(noise(4096, 2), 4096);
    t.assert_refuses(Message::Refine { file: 0, gaps: vec![(100, 4)] }, is_refine_error);
    // Large basis, small new file: one-level, no refinement either.
    let (t, _) = target_signing(noise(5 * MIB as usize, 2), 64 << 10);
    t.assert_refuses(Message::Refine { file: 0, gaps: vec![(0, 8192)] }, is_refine_error);
}

#[test]
fn refinement_gaps_must_be_whole_coarse_blocks() {
    let (_, h) = target_signing(noise(5 * MIB as usize, 3), 5 * MIB);
    let b = u64::from(h.block_size.get());
    assert!(b >= u64::from(delta::COARSE_MIN_BLOCK), "{b}");
    for gaps in [
        vec![(0, 4)],             // four chosen bytes
        vec![(b + 1, b)],         // shifted by one byte
        vec![(0, b - 1)],         // one byte short of a block
        vec![(0, b), (2 * b, 1)], // one good gap and one byte
        vec![(4 * b, b + 128)],   // a block and a fine block
    ] {
        let (t, _) = target_signing(noise(5 * MIB as usize, 3), 5 * MIB);
        t.assert_refuses(Message::Refine { file: 0, gaps: gaps.clone() }, |e| {
            matches!(e, ProtocolError::Delta(DeltaError::Refine { .. }))
        });
    }
}

#[test]
fn an_honest_refinement_gets_whole_fine_blocks_of_its_gaps() {
    let (mut t, h) = target_signing(noise(5 * MIB as usize, 4), 5 * MIB);
    let b = u64::from(h.block_size.get());
    let gaps = vec![(b, b), (5 * b, 3 * b)];
    t.feed(Message::Refine { file: 0, gaps }).expect("whole blocks are accepted");
    let before = signature_bytes(&t);
    t.settle().expect("fine signature");
    let fine = t
        .sent
        .iter()
        .find_map(|m| match m {
            Message::FineSignature { file: 0, header } => Some(*header),
            _ => None,
        })
        .expect("a fine signature");
    let fb = u64::from(fine.block_size.get());
    assert!(fb >= u64::from(delta::FINE_MIN_BLOCK), "{fb}");
    assert_eq!(fine.basis_len, 4 * b);
    assert_eq!(fine.basis_len % fb, 0, "whole fine blocks only");
    let blocks = (signature_bytes(&t) - before) as u64;
    assert_eq!(blocks, fine.basis_len / fb * delta::BLOCK_SIG_LEN as u64);
}

#[test]
fn a_resume_offer_names_only_whole_segments_of_the_same_file() {
    // The target offers `Resume` only when its driver holds the first segments of a partial
    // file of the same path, size and mtime; it never offers more segments than the file has,
    // whatever the driver says.
    let mut tree = MemTree::default();
    tree.file("f", meta(0o600, 2), noise(100, 5));
    let opts = SessionOptions { resume: true, ..SessionOptions::default() };
    let mut t = LoneTarget::new(opts, tree);
    t.feed(Message::Entries(vec![file_entry("f", 2 * SEGMENT_LEN as u64)])).expect("entry");
    while let Some((id, w)) = t.dst.poll_work() {
        let o = match w {
            TargetWork::Resume { size, .. } => {
                assert_eq!(size, 2 * SEGMENT_LEN as u64);
                TargetOutcome::Resumable(vec![[7; 32]; 3])
            }
            w => t.fs.perform(w),
        };
        t.dst.handle_outcome(id, o).expect("outcome");
        t.sent.extend(std::iter::from_fn(|| t.dst.poll_transmit()));
    }
    assert!(!t.sent.iter().any(|m| matches!(m, Message::Resume { .. })), "{:?}", t.sent);
}

#[test]
fn done_reports_only_what_the_round_did() {
    // Stats count this round's work; nothing about files the source did not send (here: a
    // file the destination has and the source does not, without --delete).
    let mut tree = MemTree::default();
    tree.file("secret", meta(0o600, 2), noise(5000, 6));
    let mut t = LoneTarget::new(SessionOptions::default(), tree);
    t.feed(Message::EndOfManifest { count: 0, root: None }).expect("end");
    t.settle().expect("round");
    let stats = t
        .sent
        .iter()
        .find_map(|m| match m {
            Message::Done { stats, .. } => Some(*stats),
            _ => None,
        })
        .expect("Done");
    assert_eq!(stats, crate::stats::Stats::default(), "{stats:?}");
}

/// The ids of the files a target said were settled, in order.
fn settled(t: &LoneTarget) -> Vec<FileId> {
    t.sent
        .iter()
        .filter_map(|m| match m {
            Message::Settled { file } => Some(*file),
            _ => None,
        })
        .collect()
}

#[test]
fn settled_says_only_that_a_file_sent_was_written_or_given_up() {
    // The same `Settled{file}` whether the copy verified or was given up after its resend,
    // whether the destination held the file before or not; none for an unchanged file the
    // target never asked for. It carries the file's id and nothing derived from its bytes.
    let data = text(100, "f");
    let good = *blake3::hash(&data).as_bytes();
    let run = |local: Option<Vec<u8>>, hash: [u8; 32]| {
        let mut tree = MemTree::default();
        if let Some(l) = local {
            tree.file("f", meta(0o600, 2), l);
        }
        tree.file("same", meta(0o644, 1), text(50, "s"));
        let mut t = LoneTarget::new(SessionOptions::default(), tree);
        let entries = vec![file_entry("f", 100), file_entry("same", 50)];
        t.feed(Message::Entries(entries)).expect("entries");
        t.feed(Message::EndOfManifest { count: 2, root: None }).expect("end of manifest");
        t.settle().expect("scan and plan");
        let mut sends = 0;
        while sends < 3 && !settled(&t).contains(&0) {
            let wants =
                t.sent.iter().filter(|m| matches!(m, Message::Want { file: 0, .. })).count();
            assert_eq!(wants, sends + 1, "{:?}", t.sent);
            t.feed(Message::Segment {
                file: 0,
                index: 0,
                payload: Payload::Literal,
                encoding: Encoding::Raw,
                data: data.clone(),
            })
            .expect("segment");
            t.feed(Message::FileEnd { file: 0, size: 100, hash }).expect("file end");
            t.settle().expect("finish");
            sends += 1;
        }
        (settled(&t), sends)
    };
    for local in [None, Some(text(80, "old"))] {
        assert_eq!(run(local.clone(), good), (vec![0], 1), "verified, local {local:?}");
        assert_eq!(run(local.clone(), [7; 32]), (vec![0], 2), "given up, local {local:?}");
    }
}

#[test]
fn an_abort_names_what_the_peer_sent_never_the_destinations_data() {
    // A destination holding a file the source never listed: whatever error the source
    // provokes, the `Abort` it reads names its own paths, limits and errors, never that
    // file's name or a byte of its contents, nor of the basis it signed.
    let secret = "hidden-name";
    let content = String::from("TOPSECRET-").repeat(600);
    let mut cases: Vec<(&str, Vec<Message>)> = vec![
        ("unsorted", vec![Message::Entries(vec![file_entry("b", 1), file_entry("a", 1)])]),
        ("orphan", vec![Message::Entries(vec![file_entry("x/y", 1)])]),
        ("size lie", vec![Message::EndOfManifest { count: 9, root: None }]),
        ("unknown file", vec![Message::FileFailed { file: 7, reason: FileFailure::Vanished }]),
    ];
    cases.push((
        "short gap",
        vec![
            Message::Entries(vec![file_entry("f", 6000)]),
            Message::Refine { file: 0, gaps: vec![(100, 4)] },
        ],
    ));
    cases.push((
        "wrong size",
        vec![
            Message::Entries(vec![file_entry("f", 6000)]),
            Message::FileEnd { file: 0, size: 1, hash: [0; 32] },
        ],
    ));
    for (name, msgs) in cases {
        let mut tree = MemTree::default();
        tree.file(secret, meta(0o600, 2), content.clone().into_bytes());
        tree.file("f", meta(0o600, 2), content.clone().into_bytes());
        let mut t = LoneTarget::new(SessionOptions::default(), tree);
        let mut failed = false;
        for m in msgs {
            failed = t.feed(m).is_err() || t.settle().is_err();
            if failed {
                break;
            }
        }
        assert!(failed, "{name}: not refused: {:?}", t.sent);
        let reason = t
            .sent
            .iter()
            .find_map(|m| match m {
                Message::Abort { reason } => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no Abort: {:?}", t.sent));
        assert!(!reason.contains(secret), "{name}: {reason}");
        assert!(!reason.contains("TOPSECRET"), "{name}: {reason}");
        assert!(reason.len() < 1024, "{name}: {} bytes", reason.len());
    }
}

#[test]
fn a_whole_files_target_never_signs_or_hashes_what_it_holds() {
    // A `:wo-whole` module: a changed 5 MiB file is asked for whole, and with --checksum a
    // file of the same size is not hashed for comparison: no signature, no blake3 of the
    // destination's data, so nothing of it reaches the peer.
    let mut tree = MemTree::default();
    tree.file("f", meta(0o600, 2), noise(5 * MIB as usize, 7));
    tree.file("g", meta(0o600, 2), noise(5000, 8));
    let opts = SessionOptions { whole_files: true, checksum: true, ..SessionOptions::default() };
    let mut t = LoneTarget::new(opts, tree);
    // With --checksum the source lists each file's blake3.
    let hashed = |p, size| Entry { hash: Some([1; 32]), ..file_entry(p, size) };
    t.feed(Message::Entries(vec![hashed("f", 5 * MIB), hashed("g", 5000)])).expect("entries");
    t.settle().expect("plan");
    for file in [0, 1] {
        assert!(
            t.sent
                .iter()
                .any(|m| matches!(m, Message::Want { file: f, basis: None } if *f == file)),
            "file {file} not asked for whole: {:?}",
            t.sent
        );
    }
    assert_eq!(signature_bytes(&t), 0);
    assert!(!t.asked.iter().any(|w| ["Signature", "HashLocal"].contains(w)), "{:?}", t.asked);
}
