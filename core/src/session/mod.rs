//! The round as two sans-IO state machines, [`SourceSession`] and [`TargetSession`].
//!
//! ```text
//!   driver (agent)                       driver (agent)
//!   ┌──────────────┐  Message (wire)   ┌──────────────┐
//!   │SourceSession │ ───────────────▶ │TargetSession │
//!   │              │ ◀─────────────── │              │
//!   └──┬───────▲───┘                   └──┬───────▲───┘
//!  poll_work  handle_outcome          poll_work  handle_outcome
//!      ▼       │                          ▼       │
//!   scan, read segments, diff,         scan, hash, sign, write,
//!   compress (rayon pool)              verify+rename, delete (rayon pool)
//! ```
//!
//! The sessions never touch a socket, a file or the clock. A driver feeds them the peer's
//! messages (`handle_message`) and the results of work they asked for (`handle_outcome`), and
//! drains what they produce (`poll_transmit`, `poll_work`). The same code runs every round:
//! `ferry sync` over an in-memory channel, and remote rounds over QUIC, TLS over TCP, or a
//! remote shell's stdio (the `ferry-transport` crate carries the messages; the sessions never
//! see which).
//!
//! # Flow control
//! The target grants credit: manifest entries it is ready to merge and raw segment bytes it is
//! ready to write. The source scans and reads only within that credit, and the target keeps a
//! bounded number of files in flight, so memory does not grow with the size of the tree.

mod source;
mod target;

pub use source::{SourceOutcome, SourceSession, SourceWork};
pub use target::{Action, Itemized, TargetOutcome, TargetSession, TargetWork, WorkCounts};

use crate::delta::DeltaError;
use crate::limits::{LimitExceeded, Limits};
use crate::message::FileId;
use crate::path::PathError;

/// Identifies one piece of work a session asked its driver to do.
pub type WorkId = u64;

/// Knobs of a round; both sides use the same struct, each reading the fields it needs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Remove destination entries the source does not have.
    pub delete: bool,
    /// Compare files by blake3 instead of size and mtime.
    pub checksum: bool,
    /// Plan only: itemize, write nothing.
    pub dry_run: bool,
    /// zstd level for literal data (0 disables compression).
    pub compress_level: i32,
    /// Most work items outstanding at the driver at once.
    pub max_inflight_work: usize,
    /// Most files the target has in flight (hashing, signing, receiving, committing).
    pub window_files: usize,
    /// Manifest entries the source may send ahead of the target's merge.
    pub window_entries: u64,
    /// Raw segment bytes the source may have in flight ahead of the target's writes.
    pub window_bytes: u64,
    /// Entries per scan batch.
    pub scan_batch: usize,
    /// Bounds on what the peer can make us allocate.
    pub limits: Limits,
    /// Target: ask the driver whether a large file cut mid-way by an earlier round can resume
    /// ([`TargetWork::Resume`]); the driver keeps a journal of the segments it wrote.
    pub resume: bool,
    /// Target: most bytes of regular files the source may list this round (`ferry bench
    /// --peer`'s synthetic round holds the client to the size it declared); `None`: no bound
    /// beyond the destination's free space.
    pub max_file_bytes: Option<u64>,
    /// Target: what it accepts from the source's manifest, whatever the source sends
    /// (specials, privileged bits, id maps).
    pub policy: crate::policy::ReceivePolicy,
    /// Target: never sign or hash an existing file for the peer: every changed file is asked
    /// for whole (`Want` without a basis) and `checksum` is not used to skip one, so the peer
    /// learns nothing of the destination's contents (a `:wo-whole` module).
    pub whole_files: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            delete: false,
            checksum: false,
            dry_run: false,
            compress_level: 3,
            max_inflight_work: 8,
            window_files: 256,
            window_entries: 8192,
            window_bytes: 64 << 20,
            scan_batch: 512,
            limits: Limits::default(),
            resume: false,
            max_file_bytes: None,
            policy: crate::policy::ReceivePolicy::default(),
            whole_files: false,
        }
    }
}

/// A violation of the protocol by the peer. The round is aborted; nothing unverified is kept.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A message that is not valid in the current state.
    #[error("unexpected {what} message")]
    Unexpected {
        /// Which message.
        what: &'static str,
    },
    /// A file id the receiver never offered or no longer expects.
    #[error("unknown or unexpected file id {0}")]
    UnknownFile(FileId),
    /// Manifest entries out of order or repeated.
    #[error("manifest not sorted: {path} after {previous}")]
    Unsorted {
        /// The offending path.
        path: String,
        /// The path before it.
        previous: String,
    },
    /// An entry whose parent directory is not the directory before it in the manifest.
    #[error("manifest entry {0} has no parent directory in the manifest")]
    Orphan(String),
    /// A segment other than the next one expected.
    #[error("file {file}: segment {got} arrived, {want} expected")]
    SegmentOrder {
        /// The file.
        file: FileId,
        /// Expected index.
        want: u64,
        /// Received index.
        got: u64,
    },
    /// The peer claimed sizes that do not add up.
    #[error("file {file}: {what}")]
    SizeMismatch {
        /// The file.
        file: FileId,
        /// What did not match.
        what: String,
    },
    /// More than the granted credit.
    #[error("peer exceeded its credit for {0}")]
    Credit(&'static str),
    /// A path from the peer was refused.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A size or count beyond our limits.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// A signature or delta was refused.
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// A field that is required in this mode is missing.
    #[error("{0}")]
    Invalid(String),
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol.
    #[error("protocol error from peer: {0}")]
    Protocol(#[from] ProtocolError),
    /// No protocol version both sides speak.
    #[error("protocol version mismatch: we speak {our_min}..={our_max}, peer speaks {peer_min}..={peer_max}")]
    Version {
        /// Our oldest.
        our_min: u32,
        /// Our newest.
        our_max: u32,
        /// Peer's oldest.
        peer_min: u32,
        /// Peer's newest.
        peer_max: u32,
    },
    /// The peer aborted the round.
    #[error("peer aborted the round: {0}")]
    PeerAborted(String),
    /// Local work failed in a way that ends the round (the driver's message says why).
    #[error("{0}")]
    Local(String),
}

fn check_hello(min: u32, max: u32) -> Result<(), SessionError> {
    use crate::message::{PROTOCOL_MIN, PROTOCOL_VERSION};
    if max < PROTOCOL_MIN || min > PROTOCOL_VERSION || min > max {
        return Err(SessionError::Version {
            our_min: PROTOCOL_MIN,
            our_max: PROTOCOL_VERSION,
            peer_min: min,
            peer_max: max,
        });
    }
    Ok(())
}

fn hello() -> crate::message::Message {
    crate::message::Message::Hello {
        min: crate::message::PROTOCOL_MIN,
        max: crate::message::PROTOCOL_VERSION,
        features: 0,
    }
}

#[cfg(test)]
mod tests;
