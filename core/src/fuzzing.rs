//! Fuzz harness bodies, one per target in `fuzz/`, and the replay of the checked-in corpus.
//!
//! Each function takes arbitrary bytes and must never panic, whatever they are.

use crate::delta::{self, BlockSize, DeltaIndex, SignatureHeader};
use crate::limits::Limits;
use crate::message::{FrameReader, Message};
use crate::path::RelPath;

/// `RelPath` parsing: accepted paths obey every rule and round-trip.
pub fn rel_path(data: &[u8]) {
    if let Ok(p) = RelPath::new(data.to_vec()) {
        assert!(!p.as_bytes().starts_with(b"/"));
        assert!(p.components().all(|c| !c.is_empty() && c != b"." && c != b".."));
        assert!(!p.as_bytes().contains(&0));
        let enc = postcard::to_allocvec(&p).expect("encodes");
        assert_eq!(postcard::from_bytes::<RelPath>(&enc).expect("decodes"), p);
    }
}

/// Message and frame decoding: bytes in any split, no panic, bounded buffering.
pub fn frames(data: &[u8]) {
    let limits = Limits { max_frame: 1 << 16, ..Limits::default() };
    let _ = crate::message::decode(data, &limits);
    let mut r = FrameReader::new(limits);
    for piece in data.chunks(7) {
        r.feed(piece);
        while let Ok(Some(m)) = r.next_message() {
            let _: Message = m;
        }
    }
}

/// Signature parsing and delta: a peer-supplied signature (header + blocks) indexed and used
/// to diff data; the delta must rebuild the data when applied to a basis the signature
/// matches exactly, which is checked when the signature is the real one.
pub fn signature_delta(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let limits = Limits { max_signature_blocks: 1 << 12, ..Limits::default() };
    let bs = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let hash_size = data[2];
    let split = (usize::from(data[3]) * 16).min(data.len() - 4);
    let (sig_bytes, rest) = data[4..].split_at(split);
    if let Ok(block_size) = BlockSize::new(bs) {
        let header = SignatureHeader { block_size, hash_size, basis_len: sig_bytes.len() as u64 };
        if let Ok(index) = DeltaIndex::build(&header, sig_bytes, &limits) {
            let _ = index.diff(rest);
        }
        // The honest path: a real signature of `rest`, diffed against itself, rebuilds it.
        let header = SignatureHeader::new(block_size, rest.len() as u64);
        let blocks = delta::signature_blocks(rest, block_size);
        let index = DeltaIndex::build(&header, &blocks, &limits).expect("own signature is valid");
        let d = index.diff(sig_bytes).expect("diff of valid index");
        let mut out = Vec::new();
        delta::apply(rest, &d, &mut out, sig_bytes.len()).expect("own delta applies");
        assert_eq!(out, sig_bytes);
    }
}

/// Patch application: an arbitrary delta against a fixed basis, capped output.
pub fn patch(data: &[u8]) {
    let basis: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut out = Vec::new();
    let cap = 1 << 16;
    if delta::apply(&basis, data, &mut out, cap).is_ok() {
        assert!(out.len() <= cap);
        let c = delta::count(data);
        if let Some(c) = c {
            assert_eq!(c.literal + c.matched, out.len() as u64);
        }
    }
    let _ = crate::compress::decompress(data, cap, 20);
}

/// Segment rebuilding and encoding: an arbitrary payload (any kind, encoding and announced
/// length, with or without a basis) rebuilds to exactly its announced length or is refused;
/// the honest encodings of arbitrary bytes, literal and delta, rebuild to those bytes.
///
/// Input: kind selector, flags (bit 0 zstd, bit 1 no basis, high nibble zstd level), the
/// announced length (u16, little-endian), then the payload.
pub fn segment(data: &[u8]) {
    use crate::message::{Encoding, Payload};
    use crate::segment::{self, SegmentError};
    use std::sync::Arc;
    let [kind, flags, l0, l1, body @ ..] = data else { return };
    let limits = Limits::default();
    let basis: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let payload = match kind % 3 {
        0 => Payload::Literal,
        1 => Payload::Delta,
        _ => Payload::Kept,
    };
    let encoding = if flags & 1 == 0 { Encoding::Raw } else { Encoding::Zstd };
    let len = usize::from(u16::from_le_bytes([*l0, *l1]));
    let with_basis = (flags & 2 == 0).then_some(&basis[..]);
    match segment::rebuild(payload, encoding, body.to_vec(), len, with_basis, &limits) {
        Ok(r) => {
            assert_eq!(r.data.len(), len);
            assert!(r.matched <= len as u64);
            assert_ne!(payload, Payload::Kept);
        }
        Err(SegmentError::Encode(e)) => panic!("rebuilding never encodes: {e}"),
        Err(_) => {}
    }

    let level = i32::from(flags >> 4);
    let lit = segment::encode(&delta::SegmentHow::Literal, 0, body.to_vec(), level)
        .expect("a literal always encodes");
    let back = segment::rebuild(lit.payload, lit.encoding, lit.data, body.len(), None, &limits)
        .expect("own literal rebuilds");
    assert_eq!(back.data, body);

    let bs = BlockSize::new(delta::MIN_BLOCK).expect("MIN_BLOCK is valid");
    let header = SignatureHeader::new(bs, basis.len() as u64);
    let blocks = delta::signature_blocks(&basis, bs);
    let index = DeltaIndex::build(&header, &blocks, &limits).expect("own signature is valid");
    let how = delta::SegmentHow::Delta(Arc::new(index));
    let d = segment::encode(&how, 0, body.to_vec(), level).expect("a valid index diffs");
    let back = segment::rebuild(d.payload, d.encoding, d.data, body.len(), Some(&basis), &limits)
        .expect("own delta rebuilds");
    assert_eq!(back.data, body);
    assert_eq!(back.matched, d.counts.matched);
}

/// A destination session fed arbitrary frames as if from a hostile source, its work answered
/// by a trivial driver: it may refuse, never panic.
pub fn target_session(data: &[u8]) {
    use crate::session::{TargetOutcome, TargetWork, WorkCounts};
    use crate::{SessionOptions, TargetSession};
    let limits = Limits { max_frame: 1 << 16, max_signature_blocks: 1 << 12, ..Limits::default() };
    let opts = SessionOptions { window_entries: 64, window_files: 4, limits, ..Default::default() };
    let mut t = TargetSession::new(opts);
    let _ = t.handle_message(Message::Hello {
        min: crate::message::PROTOCOL_MIN,
        max: crate::message::PROTOCOL_VERSION,
        features: 0,
    });
    let mut r = FrameReader::new(limits);
    r.feed(data);
    while let Ok(Some(m)) = r.next_message() {
        let _ = t.handle_message(m);
        while let Some((id, w)) = t.poll_work() {
            let o = match w {
                TargetWork::Scan { .. } => {
                    TargetOutcome::Scanned { entries: Vec::new(), done: true }
                }
                TargetWork::HashLocal { .. } => TargetOutcome::Hashed([0; 32]),
                TargetWork::Signature { .. } | TargetWork::FineSignature { .. } => {
                    TargetOutcome::Signed(None)
                }
                TargetWork::Write { len, .. } => {
                    let _ = len;
                    TargetOutcome::Written { matched: 0 }
                }
                TargetWork::Finish { .. } => TargetOutcome::Verified(WorkCounts::default()),
                TargetWork::Commit { .. } => TargetOutcome::Committed(WorkCounts::default()),
                _ => TargetOutcome::Done(WorkCounts::default()),
            };
            let _ = t.handle_outcome(id, o);
        }
        while t.poll_transmit().is_some() {}
        while t.poll_event().is_some() {}
    }
}

/// A source session fed arbitrary frames as if from a hostile destination, its work answered
/// by a trivial driver (a tree of three files): it may refuse, never panic.
pub fn source_session(data: &[u8]) {
    use crate::entry::{Entry, EntryKind, Meta};
    use crate::hash::SegmentHash;
    use crate::message::{Encoding, Payload};
    use crate::session::{SourceOutcome, SourceWork};
    use crate::{SessionOptions, SourceSession};
    let limits = Limits { max_frame: 1 << 16, max_signature_blocks: 1 << 12, ..Limits::default() };
    let mut s = SourceSession::new(SessionOptions { limits, ..Default::default() });
    let _ = s.handle_message(Message::Hello {
        min: crate::message::PROTOCOL_MIN,
        max: crate::message::PROTOCOL_VERSION,
        features: 0,
    });
    let meta = Meta { mode: 0o644, uid: 0, gid: 0, mtime_ns: 0 };
    let entry = |name: &str, size| Entry {
        path: RelPath::new(name).expect("valid"),
        kind: EntryKind::File,
        size,
        meta,
        xattrs: Vec::new(),
        hash: None,
    };
    let mut tree = Some(vec![entry("a", 10), entry("b", 5 << 20), entry("c", 0)]);
    let mut r = FrameReader::new(limits);
    r.feed(data);
    while let Ok(Some(m)) = r.next_message() {
        let _ = s.handle_message(m);
        while let Some((id, w)) = s.poll_work() {
            let o = match w {
                SourceWork::Scan { .. } => SourceOutcome::Scanned {
                    entries: tree.take().unwrap_or_default(),
                    done: true,
                    errors: Vec::new(),
                },
                SourceWork::Match { .. } => {
                    SourceOutcome::Matched { hash: SegmentHash([0; 32]), matches: Vec::new() }
                }
                SourceWork::Segment { len, .. } => SourceOutcome::Segment {
                    hash: SegmentHash([0; 32]),
                    data: vec![0; len.min(1 << 16)],
                    payload: Payload::Literal,
                    encoding: Encoding::Raw,
                    counts: delta::DeltaCounts::default(),
                },
            };
            let _ = s.handle_outcome(id, o);
        }
        while s.poll_transmit().is_some() {}
    }
}

/// The receiving side's policy: an arbitrary entry (postcard) through an arbitrary policy
/// (the first byte's bits); what comes out obeys the policy.
pub fn receive_policy(data: &[u8]) {
    crate::policy::fuzz_admit(data);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays every checked-in corpus file under `fuzz/corpus/<target>/` on stable.
    #[test]
    fn replay_fuzz_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        type Harness = fn(&[u8]);
        let targets: [(&str, Harness); 8] = [
            ("rel_path", super::rel_path),
            ("frames", super::frames),
            ("signature_delta", super::signature_delta),
            ("patch", super::patch),
            ("segment", super::segment),
            ("target_session", super::target_session),
            ("source_session", super::source_session),
            ("receive_policy", super::receive_policy),
        ];
        let mut replayed = 0;
        for (name, f) in targets {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
            for e in entries {
                let p = e.expect("dir entry").path();
                f(&std::fs::read(&p).expect("corpus file"));
                replayed += 1;
            }
        }
        assert!(replayed >= 8, "corpus too small: {replayed} inputs");
    }
}
