//! [`Limits`]: every bound on what a peer can make us allocate, in one place, and the
//! per-round memory budget they add up to ([`Limits::round_budget`]).
//!
//! # The per-round memory budget
//! What a peer can make one side hold at once, with the defaults (`SessionOptions` windows:
//! 64 MiB of segment bytes, 8192 entries, 256 files; see [`RoundBudget`]; a target holds
//! all rows but the signatures, a source the signatures and its outgoing queue):
//!
//! | what | bounded by | worst case |
//! | --- | --- | --- |
//! | segment payloads queued at the target | its byte window (<= `max_window_bytes`), payload <= [`Limits::segment_payload_cap`] of its raw length | 1.5 x window + 4 KiB per file in flight |
//! | manifest entries waiting for the merge, directories and hard links kept to the end | `max_held_bytes` (each entry counted with its path and xattrs) | `max_held_bytes` |
//! | files in flight at the target (their entries) | `window_files` x (`max_entry_xattr_bytes` + path) | 256 x 260 KiB |
//! | signatures being received and indexed (source) | `max_signature_bytes` over all files in flight, counted as pieces arrive; one signature at most the header's validated size (`max_signature_blocks` x 20 B) and grown as its pieces arrive | 64 MiB of blocks, [`SIGNATURE_INDEX_FACTOR`] x that indexed; honest ones are KiBs to a few MiB |
//! | credit a source acts on | `max_window_bytes` / `max_window_entries` outstanding, more is a protocol error | 256 MiB read ahead |
//! | messages queued for the peer (driver, agent) | [`OUTGOING_QUEUE_BYTES`]: the driver stops producing when the writers are that far behind | 32 MiB + one message |
//! | a fine signature | `max_refine_bytes` of gaps / 128 B x 20 B, signed gap by gap | 40 MiB |

use serde::{Deserialize, Serialize};

/// Bounds checked before any allocation a peer's bytes drive.
///
/// Defaults suit a volume replica; both sides enforce their own limits on what they receive,
/// whatever the peer announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest encoded message (frame) accepted.
    pub max_frame: usize,
    /// Most entries in one manifest batch.
    pub max_batch_entries: usize,
    /// Most blocks in one file's signature.
    pub max_signature_blocks: u64,
    /// Largest delta for one segment, in bytes (a segment delta is at most its literal data
    /// plus framing).
    pub max_delta_segment: usize,
    /// Largest decompressed payload of one segment.
    pub max_segment_output: usize,
    /// Largest zstd window accepted, as a power of two (`windowLog`).
    pub max_zstd_window_log: u32,
    /// Most extended attributes per entry.
    pub max_xattrs: usize,
    /// Largest extended attribute value.
    pub max_xattr_value: usize,
    /// Largest symlink target.
    pub max_link_target: usize,
    /// Most gaps in one refinement request (second pass of a two-level delta).
    pub max_refine_gaps: usize,
    /// Most basis bytes one refinement may ask the destination to gather and sign.
    pub max_refine_bytes: u64,
    /// Most raw segment bytes a target may have granted and not had back (its byte window):
    /// a target never grants more, a source refuses credit that would let it read further
    /// ahead.
    pub max_window_bytes: u64,
    /// Most manifest entries a target may have granted ahead of its merge (as above).
    pub max_window_entries: u64,
    /// Most bytes of extended attributes (names and values) on one entry.
    pub max_entry_xattr_bytes: usize,
    /// The per-round budget of metadata a target holds: manifest entries waiting for the
    /// merge, directories (their metadata is set at the end of the round) and hard links
    /// (made at the end), each counted with its path and xattrs ([`held_size`]). A round
    /// beyond it fails with a clear error instead of growing.
    pub max_held_bytes: u64,
    /// The per-round budget of signatures a source holds: the blocks of every signature being
    /// received and of every index still searched, summed over the files in flight (a file
    /// gives its bytes back when its first pass or its sending ends). Indexed, a signature
    /// costs about [`SIGNATURE_INDEX_FACTOR`] times its bytes. A round beyond it fails with a
    /// limit error naming it; one signature larger than it fails before a byte of it arrives.
    pub max_signature_bytes: u64,
}

/// Resident bytes a source's indexed signature costs per signature byte received, at most:
/// per 20-byte block, fast_rsync's copy (20 B) and its hash index (a 33-byte entry in a table
/// 1.14 to 2.3 times fuller than needed: up to 75 B), plus the received blocks (20 B) while
/// the index is built. What [`Limits::max_signature_bytes`] adds to a source's memory is at
/// most this multiple of it.
pub const SIGNATURE_INDEX_FACTOR: u64 = 6;

/// Bytes of messages the agent's driver lets queue for the peer (encoded, not yet written to
/// the link) before it stops producing more: a peer that stops reading holds at most this
/// much of our memory in queued messages (plus the transport's own send buffers).
pub const OUTGOING_QUEUE_BYTES: u64 = 32 << 20;

/// What a manifest entry costs the target to hold, counted against
/// [`Limits::max_held_bytes`]: its path, symlink target and xattrs, plus a fixed overhead.
pub fn held_size(e: &crate::entry::Entry) -> u64 {
    let link = match &e.kind {
        crate::entry::EntryKind::Symlink { target } => target.len(),
        crate::entry::EntryKind::HardLink { to } => to.as_bytes().len(),
        _ => 0,
    };
    let xattrs: usize = e.xattrs.iter().map(|x| x.name.len() + x.value.len() + 48).sum();
    (e.path.as_bytes().len() + link + xattrs + 160) as u64
}

/// The per-round worst case a set of [`Limits`] and windows allows, in bytes, by what holds
/// it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundBudget {
    /// Segment payloads queued at the target.
    pub segments: u64,
    /// Entries, directories and hard links held by the target.
    pub held: u64,
    /// Entries of the files in flight at the target.
    pub files: u64,
    /// Messages queued for the peer.
    pub outgoing: u64,
    /// Signatures held by a source (received and indexed), on the other side of the round.
    pub signatures: u64,
}

impl RoundBudget {
    /// What a target may hold: everything but the source's signatures.
    pub fn total(&self) -> u64 {
        self.segments + self.held + self.files + self.outgoing
    }

    /// What a source may hold: its signatures and the messages queued for the peer.
    pub fn source_total(&self) -> u64 {
        self.signatures + self.outgoing
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 16 << 20,
            max_batch_entries: 4096,
            // 1 TiB at the smallest block size we ever choose for big files.
            max_signature_blocks: 1 << 24,
            max_delta_segment: crate::SEGMENT_LEN + (1 << 16),
            max_segment_output: crate::SEGMENT_LEN,
            max_zstd_window_log: 24,
            max_xattrs: 256,
            max_xattr_value: 64 << 10,
            max_link_target: 4096,
            max_refine_gaps: 1 << 20,
            max_refine_bytes: 256 << 20,
            max_window_bytes: 256 << 20,
            max_window_entries: 1 << 16,
            max_entry_xattr_bytes: 256 << 10,
            max_held_bytes: 128 << 20,
            // Three million blocks: an honest target signs a file with at most 2^18 blocks up
            // to 256 GiB (`BlockSize::coarse_for_len`), so a dozen such files fit at once.
            max_signature_bytes: 64 << 20,
        }
    }
}

impl Limits {
    /// Largest payload accepted for a segment of `len` raw bytes: a literal (zstd or raw) no
    /// larger than zstd's worst-case expansion of it, a delta no larger than its literal data
    /// plus one copy op (17 bytes) per 64 bytes of output and framing; both within
    /// `max_delta_segment`. Payload bytes, not only rebuilt bytes, are what the target holds.
    pub fn segment_payload_cap(&self, payload: crate::message::Payload, len: u64) -> u64 {
        use crate::message::Payload;
        match payload {
            Payload::Literal => len + (len >> 7) + 1024,
            Payload::Delta => (len + len / 4 + 4096).min(self.max_delta_segment as u64),
            Payload::Kept => 0,
        }
    }

    /// The worst case one round may hold at a target with these limits and windows.
    pub fn round_budget(&self, window_bytes: u64, window_files: u64) -> RoundBudget {
        let window = window_bytes.min(self.max_window_bytes);
        RoundBudget {
            segments: window + window / 4 + window_files * 4096,
            held: self.max_held_bytes,
            files: window_files * (self.max_entry_xattr_bytes as u64 + 4096 + 160),
            outgoing: OUTGOING_QUEUE_BYTES + self.max_frame as u64,
            signatures: self.max_signature_bytes * SIGNATURE_INDEX_FACTOR,
        }
    }
}

/// A peer-driven size or count beyond its [`Limits`] bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} of {got} exceeds the limit of {limit}")]
pub struct LimitExceeded {
    /// What was being bounded.
    pub what: &'static str,
    /// The bound.
    pub limit: u64,
    /// What the peer asked for.
    pub got: u64,
}

impl LimitExceeded {
    /// `Ok` if `got <= limit`.
    ///
    /// # Errors
    /// [`LimitExceeded`] naming `what` otherwise.
    pub fn check(what: &'static str, got: u64, limit: u64) -> Result<(), LimitExceeded> {
        if got > limit {
            Err(LimitExceeded { what, limit, got })
        } else {
            Ok(())
        }
    }
}
