//! The source's interface to its driver: the [`SourceWork`] it asks for and the
//! [`SourceOutcome`] it is answered with.

use std::sync::Arc;

use crate::delta::{DeltaCounts, DeltaIndex, Match, SegmentHow};
use crate::entry::Entry;
use crate::hash::SegmentHash;
use crate::message::{Encoding, FileFailure, FileId, Payload};
use crate::path::RelPath;

/// Work the source asks its driver to do.
#[derive(Debug)]
pub enum SourceWork {
    /// Walk on: return up to `max` more entries of the tree, in path order.
    Scan {
        /// Most entries to return.
        max: usize,
    },
    /// First pass of a two-level delta: read one segment, hash it, find its coarse matches
    /// ([`crate::delta::match_segment`]).
    Match {
        /// The file.
        file: FileId,
        /// Its path beneath the root.
        path: RelPath,
        /// Segment index.
        index: u64,
        /// Bytes in this segment.
        len: usize,
        /// Size of the whole file as scanned.
        file_len: u64,
        /// mtime as scanned.
        mtime_ns: i64,
        /// The coarse index of the destination's basis.
        coarse: Arc<DeltaIndex>,
        /// The destination holds a segment with this hash: when the read segment hashes the
        /// same, skip matching it.
        keep_if: Option<SegmentHash>,
    },
    /// Read one segment of a file, hash it, and encode it as literal data or as a delta.
    Segment {
        /// The file.
        file: FileId,
        /// Its path beneath the root.
        path: RelPath,
        /// Segment index; the segment covers `index * SEGMENT_LEN ..` for `len` bytes.
        index: u64,
        /// Bytes in this segment.
        len: usize,
        /// Size of the whole file as scanned; a different size means it changed.
        file_len: u64,
        /// mtime as scanned; a different mtime means it changed.
        mtime_ns: i64,
        /// Literal data, a delta against the destination's basis, or a two-level delta.
        how: SegmentHow,
        /// zstd level for the payload.
        compress_level: i32,
        /// The destination holds a segment with this hash (an interrupted round's, from its
        /// journal): when the read segment hashes the same, answer [`Payload::Kept`] with no
        /// data instead of encoding it.
        keep_if: Option<SegmentHash>,
    },
}

/// What the driver reports back for a [`SourceWork`].
#[derive(Debug)]
pub enum SourceOutcome {
    /// The next scan batch; `done` when the walk is finished.
    Scanned {
        /// Entries, in path order.
        entries: Vec<Entry>,
        /// Whether the walk is complete.
        done: bool,
        /// Errors the walk met reading the tree since the last batch (unreadable or vanished
        /// directories, out of fds, ...). The batch ends at the first one, so the target hears
        /// of it before any entry after the missing part.
        errors: Vec<String>,
    },
    /// A segment is ready.
    Segment {
        /// Its blake3 contribution.
        hash: SegmentHash,
        /// Literal data or delta, as `encoding` says.
        data: Vec<u8>,
        /// What `data` is.
        payload: Payload,
        /// How `data` is encoded.
        encoding: Encoding,
        /// Literal and matched bytes of this segment.
        counts: DeltaCounts,
    },
    /// The first pass over a segment is done.
    Matched {
        /// Its blake3 contribution.
        hash: SegmentHash,
        /// Coarse matches, with offsets in the new file.
        matches: Vec<Match>,
    },
    /// The file could not be read as scanned.
    SegmentFailed(FileFailure),
    /// A fatal local failure (the walk itself failed).
    Fatal(String),
}
