//! [`Message`]: everything the two sides of a round say to each other, and its framing.
//!
//! One encoding for every transport: postcard (compact varints, serde), behind
//! [`encode`]/[`decode`] so the choice lives in one place. A frame is a little-endian `u32`
//! length followed by that many bytes of postcard; the length is checked against
//! [`Limits::max_frame`](crate::Limits) before a byte of the body is buffered.

use serde::{Deserialize, Serialize};

use crate::delta::SignatureHeader;
use crate::entry::{Entry, RootMeta};
use crate::limits::{LimitExceeded, Limits};
use crate::stats::Stats;

/// Protocol version this build speaks; `Hello` carries the supported range. 2: the
/// handshake negotiates data streams (`lanes`) and QUIC frames carry lane dependencies.
/// 3: a file cut mid-way resumes from the destination's journal (`Resume`, `Payload::Kept`).
/// 4: `Done`'s stats carry the receiving policy's counters and the source's read errors, and
/// the source reports read errors in the manifest stream (`SourceErrors`), so a partial round
/// deletes nothing and is known to be partial on both sides.
/// 5: `Done` carries the destination's commit result ([`Commit`]): a round ends when it is
/// recorded, not merely written.
/// 6: the agent's handshake may ask a server to record a consistency group's generation
/// (`Direction::Group`); rounds are as in 5.
pub const PROTOCOL_VERSION: u32 = 6;
/// Oldest protocol version this build accepts (4's `Done` has no commit result, so its source
/// could report a success its destination had not made durable; such a peer is refused at the
/// handshake with a version error).
pub const PROTOCOL_MIN: u32 = 5;

/// Longest snapshot id or root hash a [`Commit`] may carry, in bytes.
pub const MAX_COMMIT_FIELD: usize = 128;
/// Longest reason a [`Commit::Failed`] may carry, in bytes.
pub const MAX_COMMIT_REASON: usize = 1024;

/// What the destination recorded of a round, sent with [`Message::Done`]: only once the
/// commit record is durable and the snapshot exists does it say [`Commit::Recorded`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Commit {
    /// The destination keeps no record of rounds (no state directory, a dry run, a local
    /// sync): its files are durable in place, and nothing else was promised.
    #[default]
    Unrecorded,
    /// The round's commit record and snapshot are durable.
    Recorded {
        /// The round's number in the module.
        round: u64,
        /// The snapshot's id.
        snapshot: String,
        /// The committed tree's root hash, hex.
        root_hash: String,
    },
    /// The destination keeps records but could not record this round: its files are in
    /// place, but no snapshot covers them.
    Failed {
        /// Why, for a person.
        reason: String,
    },
}

impl Commit {
    /// Whether a peer's commit result is within the limits above (a longer one is a
    /// protocol violation, not something to print or store).
    pub fn within_limits(&self) -> bool {
        match self {
            Commit::Unrecorded => true,
            Commit::Recorded { snapshot, root_hash, .. } => {
                snapshot.len() <= MAX_COMMIT_FIELD && root_hash.len() <= MAX_COMMIT_FIELD
            }
            Commit::Failed { reason } => reason.len() <= MAX_COMMIT_REASON,
        }
    }

    /// A failure, its reason cut to [`MAX_COMMIT_REASON`] bytes at a character boundary.
    pub fn failed(reason: &str) -> Commit {
        let mut end = reason.len().min(MAX_COMMIT_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Commit::Failed { reason: reason[..end].to_string() }
    }
}

/// Index of a file entry in the source's manifest, in stream order.
pub type FileId = u64;

/// How a segment's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// The bytes as they are.
    Raw,
    /// One zstd frame.
    Zstd,
}

/// What a segment's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// The file's bytes for this segment.
    Literal,
    /// An rsync delta against the destination's basis that rebuilds this segment.
    Delta,
    /// Nothing: the destination already holds this segment from an interrupted round, and
    /// its blake3 chaining value (sent in `Resume`) equals the source's.
    Kept,
}

/// Why the source could not send a file this round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFailure {
    /// The file changed (size or mtime) while it was being read; it is retried next round.
    Changed,
    /// The file disappeared or stopped being a regular file.
    Vanished,
    /// Reading it failed; the message says why.
    Unreadable(String),
}

/// A message of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// First message both ways: the protocol versions spoken and optional features.
    Hello {
        /// Oldest version spoken.
        min: u32,
        /// Newest version spoken.
        max: u32,
        /// Feature bits (none defined yet; unknown bits are ignored).
        features: u64,
    },
    /// Source → target: the next manifest entries, in path order.
    Entries(Vec<Entry>),
    /// Source → target: the manifest is complete.
    EndOfManifest {
        /// Total number of entries sent.
        count: u64,
        /// Metadata of the source root, applied to the destination root at the end.
        root: Option<RootMeta>,
    },
    /// Target → source: more room for manifest entries and segment bytes.
    Credit {
        /// More manifest entries the source may send.
        entries: u64,
        /// More raw segment bytes the source may have in flight.
        bytes: u64,
        /// Every file id below this is decided: the target will not ask for it.
        decided: u64,
    },
    /// Target → source, just before `Want`: the destination holds the first `have.len()`
    /// segments of `file` from an interrupted round; each is named by its blake3 chaining
    /// value ([`crate::hash::hash_segment`]). The source answers every segment whose value
    /// matches with a `Kept` segment instead of its data.
    Resume {
        /// The file.
        file: FileId,
        /// Chaining values of the segments held, from segment 0.
        have: Vec<[u8; 32]>,
    },
    /// Target → source: send this file, whole or as a delta against the basis described.
    Want {
        /// The file.
        file: FileId,
        /// `Some` when signature pieces for the destination's basis follow.
        basis: Option<SignatureHeader>,
    },
    /// Source → target: the first pass of a two-level delta is done; sign these gaps of the
    /// basis (offset, length) with small blocks.
    Refine {
        /// The file.
        file: FileId,
        /// Sorted, disjoint basis ranges no coarse match used.
        gaps: Vec<(u64, u64)>,
    },
    /// Target → source: the fine signature of the gaps laid end to end; pieces follow.
    FineSignature {
        /// The file.
        file: FileId,
        /// Header of the fine signature (`basis_len` is the gaps' total length).
        header: SignatureHeader,
    },
    /// Target → source: a piece of the basis signature for `file`.
    SignaturePiece {
        /// The file.
        file: FileId,
        /// Serialized signature blocks.
        #[serde(with = "serde_bytes")]
        blocks: Vec<u8>,
        /// Whether this is the final piece.
        last: bool,
    },
    /// Source → target: one segment of a file, in order.
    Segment {
        /// The file.
        file: FileId,
        /// Segment index.
        index: u64,
        /// What the payload is.
        payload: Payload,
        /// How it is encoded.
        encoding: Encoding,
        /// The payload.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Source → target: all segments of `file` are sent; its size and blake3.
    FileEnd {
        /// The file.
        file: FileId,
        /// Its size.
        size: u64,
        /// blake3 of its whole content.
        hash: [u8; 32],
    },
    /// Source → target: `file` cannot be sent this round.
    FileFailed {
        /// The file.
        file: FileId,
        /// Why.
        reason: FileFailure,
    },
    /// Target → source: `file` is settled (in place, or given up for this round).
    Settled {
        /// The file.
        file: FileId,
    },
    /// Target → source: the round is complete; the destination's view of it.
    Done {
        /// What the destination did.
        stats: Stats,
        /// What it recorded of the round (filled in by the agent that keeps the records).
        commit: Commit,
    },
    /// Either way: the round is aborted.
    Abort {
        /// Why, for the peer's log.
        reason: String,
    },
    /// Source → target, in the manifest stream: the source could not read part of its tree
    /// (an unreadable or vanished directory, out of fds, ...), so entries are missing from the
    /// manifest. Sent right after the entries read before the error. The round is partial:
    /// the target deletes nothing from then on (rsync's "IO error encountered -- skipping file
    /// deletion") and counts the errors in `Stats::source_errors`.
    SourceErrors {
        /// Errors since the previous `SourceErrors` (at least 1).
        count: u64,
        /// The first of them, for the log (at most 1024 characters).
        first: String,
    },
}

impl Message {
    /// The file this message is about, for messages that belong to one file's transfer (its
    /// request, signature, segments, end and settlement). A transport may carry those on a
    /// separate stream per file as long as each file's messages stay in order.
    pub fn file(&self) -> Option<FileId> {
        match self {
            Message::Want { file, .. }
            | Message::Resume { file, .. }
            | Message::Refine { file, .. }
            | Message::FineSignature { file, .. }
            | Message::SignaturePiece { file, .. }
            | Message::Segment { file, .. }
            | Message::FileEnd { file, .. }
            | Message::FileFailed { file, .. }
            | Message::Settled { file } => Some(*file),
            _ => None,
        }
    }

    /// Whether the receiver must have every per-file message sent before this one when it
    /// handles it: `Credit` (its `decided` prefix drops files not yet requested) and `Done`
    /// (every file must be settled first).
    pub fn is_barrier(&self) -> bool {
        matches!(self, Message::Credit { .. } | Message::Done { .. })
    }
}

/// Why bytes could not be decoded into a [`Message`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is longer than allowed.
    #[error(transparent)]
    TooLarge(#[from] LimitExceeded),
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes a message body (without frame header).
pub fn encode(msg: &Message) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    postcard::to_allocvec(msg).unwrap_or_default()
}

/// Decodes a message body, refusing one longer than `limits.max_frame`.
///
/// # Errors
/// [`DecodeError`] for oversized or malformed input.
pub fn decode(body: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    LimitExceeded::check("frame", body.len() as u64, limits.max_frame as u64)?;
    Ok(postcard::from_bytes(body)?)
}

/// Appends `msg` as one frame to `out`.
pub fn write_frame(msg: &Message, out: &mut Vec<u8>) {
    let body = encode(msg);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
}

/// A sans-IO frame decoder: feed bytes in, take messages out.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    limits: Limits,
}

impl FrameReader {
    /// A reader enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameReader { buf: Vec::new(), limits }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one is buffered.
    ///
    /// # Errors
    /// A frame header over the limit fails at once, before its body arrives.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        let Some(head) = self.buf.get(..4) else { return Ok(None) };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        LimitExceeded::check("frame", len as u64, self.limits.max_frame as u64)?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = decode(&self.buf[4..4 + len], &self.limits)?;
        self.buf.drain(..4 + len);
        Ok(Some(msg))
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let msgs = vec![
            Message::Hello { min: 1, max: 1, features: 0 },
            Message::Credit { entries: 10, bytes: 1 << 30, decided: 3 },
            Message::Segment {
                file: 7,
                index: 0,
                payload: Payload::Literal,
                encoding: Encoding::Raw,
                data: vec![1, 2, 3],
            },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            write_frame(m, &mut wire);
        }
        let mut r = FrameReader::new(Limits::default());
        let mut got = Vec::new();
        for b in wire.chunks(3) {
            r.feed(b);
            while let Some(m) = r.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn oversized_frame_fails_on_its_header() {
        let limits = Limits { max_frame: 1024, ..Limits::default() };
        let mut r = FrameReader::new(limits);
        r.feed(&2000u32.to_le_bytes());
        assert!(matches!(r.next_message(), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [&[0xffu8; 9][..], &[3, 0xff, 0xff, 0xff, 0xff, 0xff], &[]] {
            assert!(decode(bad, &Limits::default()).is_err());
        }
    }
}
