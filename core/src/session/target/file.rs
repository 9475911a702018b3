//! One file's transfer: signature, segments received and written in order, verification,
//! commit; a resend when verification fails once, a discard when the source gives up on it.

use std::collections::VecDeque;

use super::work::{TargetOutcome, TargetWork};
use super::{Pending, TargetSession, COMMIT_BATCH};
use crate::delta::{BlockSize, SignatureHeader, COARSE_MIN_BLOCK, TWO_LEVEL_MIN};
use crate::entry::Entry;
use crate::hash::segment_count;
use crate::limits::LimitExceeded;
use crate::message::{Encoding, FileFailure, FileId, Message, Payload};
use crate::segment::seg_len;
use crate::session::{ProtocolError, SessionError};

/// Signature bytes per `SignaturePiece` message.
const SIGNATURE_PIECE: usize = 1 << 20;

/// Where a file is in its transfer. The phases follow each other (not all are visited):
/// `Hashing` (`--checksum` deciding) or `Resuming` (asking the journal), then `Signing` (the
/// basis), `Receiving`, `Finishing` (verifying), `Verified`, `Committing`; or `Discarding`.
#[derive(Debug)]
pub(super) enum FileState {
    /// Hashing the local file to decide whether it changed (`--checksum`).
    Hashing,
    /// Asking the driver's journal whether it holds a part of the file.
    Resuming,
    /// Signing the local file as the basis of a delta.
    Signing,
    /// Asked for; segments arrive and are written in order.
    Receiving,
    /// Every segment written; the driver verifies the file.
    Finishing,
    /// Verified, waiting for its batch to be committed.
    Verified,
    /// In a commit batch at the driver.
    Committing,
    /// The source gave up on it; the driver drops its temp file.
    Discarding,
}

/// What the source's segments are rebuilt against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Basis {
    /// Nothing: the file is sent whole.
    Whole,
    /// The local file, signed; `len` is the basis length the signature described (whole
    /// blocks of `block`).
    Signed {
        /// Length of the basis.
        len: u64,
        /// The signature's block size.
        block: BlockSize,
    },
    /// As `Signed`, and the source has asked for a fine signature of its gaps, which it may
    /// do once per transfer.
    Refined {
        /// Length of the basis.
        len: u64,
    },
}

/// What a `Receiving` file is waiting on at the driver; one thing at a time, so segments are
/// written in order and none is written while the fine signature is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// Nothing: the next queued segment can go.
    Idle,
    /// A segment is being written; `kept` when it is one held from an interrupted round.
    Writing {
        /// The segment is `Kept` (counted as resumed bytes, not literal ones).
        kept: bool,
    },
    /// The fine signature (second pass of a two-level delta) is being computed.
    Refining,
}

/// A segment received and waiting for its turn to be written.
#[derive(Debug)]
pub(super) struct QueuedSegment {
    pub(super) index: u64,
    pub(super) payload: Payload,
    pub(super) encoding: Encoding,
    pub(super) data: Vec<u8>,
}

/// A file the target is deciding or transferring.
#[derive(Debug)]
pub(super) struct TFile {
    /// The source's entry.
    pub(super) entry: Entry,
    pub(super) state: FileState,
    /// The destination's regular file at this path, if any: basis and metadata to compare.
    pub(super) local: Option<Entry>,
    /// Segments in the file.
    pub(super) segments: u64,
    /// Index of the next segment expected from the source.
    next_rx: u64,
    /// Segments written.
    written: u64,
    queue: VecDeque<QueuedSegment>,
    busy: Busy,
    basis: Basis,
    /// The source's blake3 of the whole file, once its `FileEnd` has arrived.
    end: Option<[u8; 32]>,
    /// The source gave up on the file (`FileFailed`); it is discarded once nothing of it is
    /// at the driver. Independent of `busy`: a write may still be in flight.
    failed: bool,
    /// The file failed verification once and is being sent again, whole (a second failure
    /// gives it up). Survives the restart of the transfer.
    resent: bool,
    /// Segments the destination holds from an interrupted round (sent in `Resume`): the
    /// source may answer these with `Kept`.
    resumable: u64,
}

impl TFile {
    pub(super) fn new(entry: Entry, state: FileState, local: Option<Entry>) -> Self {
        TFile {
            segments: segment_count(entry.size),
            entry,
            state,
            local,
            next_rx: 0,
            written: 0,
            queue: VecDeque::new(),
            busy: Busy::Idle,
            basis: Basis::Whole,
            end: None,
            failed: false,
            resent: false,
            resumable: 0,
        }
    }

    /// Whether segments may come as deltas.
    fn has_basis(&self) -> bool {
        self.basis != Basis::Whole
    }

    /// Whether the file is waiting for the commit of its batch.
    pub(super) fn awaits_commit(&self) -> bool {
        matches!(self.state, FileState::Verified | FileState::Committing)
    }
}

impl TargetSession {
    pub(super) fn on_segment(
        &mut self,
        file: FileId,
        seg: QueuedSegment,
    ) -> Result<(), SessionError> {
        let limits = self.opts.limits;
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if !matches!(f.state, FileState::Receiving) || f.end.is_some() {
            return Err(ProtocolError::UnknownFile(file).into());
        }
        if seg.index != f.next_rx || seg.index >= f.segments {
            return Err(
                ProtocolError::SegmentOrder { file, want: f.next_rx, got: seg.index }.into()
            );
        }
        if seg.payload == Payload::Delta && !f.has_basis() {
            return Err(
                ProtocolError::Invalid(format!("file {file}: delta without a basis")).into()
            );
        }
        if seg.payload == Payload::Kept && seg.index >= f.resumable {
            return Err(ProtocolError::Invalid(format!(
                "file {file}: segment {} kept, but only {} were offered",
                seg.index, f.resumable
            ))
            .into());
        }
        let raw = seg_len(f.entry.size, seg.index);
        // The payload is what is held until the write, so it is bounded by the segment's
        // declared length, not by the largest segment: a 1-byte file carries a few bytes.
        let cap = limits.segment_payload_cap(seg.payload, raw);
        LimitExceeded::check("segment payload", seg.data.len() as u64, cap)
            .map_err(ProtocolError::from)?;
        if self.bytes_received + raw > self.bytes_granted {
            return Err(ProtocolError::Credit("segment bytes").into());
        }
        self.bytes_received += raw;
        f.next_rx += 1;
        self.stats.payload_bytes += seg.data.len() as u64;
        if f.failed {
            self.bytes_credit_owed += seg_len(f.entry.size, seg.index);
            return Ok(());
        }
        f.queue.push_back(seg);
        self.pump_file(file);
        Ok(())
    }

    fn send_signature(&mut self, file: FileId, blocks: Vec<u8>) {
        self.stats.signature_bytes += blocks.len() as u64;
        let mut pieces = blocks.chunks(SIGNATURE_PIECE).peekable();
        if pieces.peek().is_none() {
            self.out.push_back(Message::SignaturePiece { file, blocks: Vec::new(), last: true });
        }
        while let Some(p) = pieces.next() {
            let last = pieces.peek().is_none();
            self.out.push_back(Message::SignaturePiece { file, blocks: p.to_vec(), last });
        }
    }

    pub(super) fn on_refine(
        &mut self,
        file: FileId,
        gaps: Vec<(u64, u64)>,
    ) -> Result<(), SessionError> {
        let limits = self.opts.limits;
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        // Only before the first segment, and once: the fine signature changes the basis the
        // segments' deltas refer to.
        let ready = matches!(f.state, FileState::Receiving)
            && f.next_rx == 0
            && f.end.is_none()
            && !f.failed;
        let (true, Basis::Signed { len: basis_len, block }) = (ready, f.basis) else {
            return Err(ProtocolError::Unexpected { what: "Refine" }.into());
        };
        // No oracle: only what the honest two-level delta asks for is signed. Both the file
        // and its basis large enough for a two-level delta (so the basis was signed with
        // coarse blocks), and gaps made of whole coarse blocks (see `GapMap::for_refine`).
        let two_level = f.entry.size >= TWO_LEVEL_MIN
            && basis_len >= TWO_LEVEL_MIN
            && block.get() >= COARSE_MIN_BLOCK;
        if !two_level {
            return Err(ProtocolError::Invalid(format!(
                "file {file}: refinement of a {} byte file against a {basis_len} byte basis \
                 signed with {} byte blocks: no two-level delta there",
                f.entry.size,
                block.get()
            ))
            .into());
        }
        let map = crate::delta::GapMap::for_refine(&gaps, basis_len, block, &limits)
            .map_err(ProtocolError::from)?;
        f.basis = Basis::Refined { len: basis_len };
        f.busy = Busy::Refining;
        let block_size = BlockSize::fine_for_gaps(map.len(), gaps.len() as u64);
        self.push_work(Pending::File(file), TargetWork::FineSignature { file, gaps, block_size });
        Ok(())
    }

    pub(super) fn on_file_end(
        &mut self,
        file: FileId,
        size: u64,
        hash: [u8; 32],
    ) -> Result<(), SessionError> {
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if !matches!(f.state, FileState::Receiving) || f.end.is_some() {
            return Err(ProtocolError::UnknownFile(file).into());
        }
        if size != f.entry.size || f.next_rx != f.segments {
            return Err(ProtocolError::SizeMismatch {
                file,
                what: format!(
                    "ended at {size} bytes / {} segments, manifest said {} bytes / {} segments",
                    f.next_rx, f.entry.size, f.segments
                ),
            }
            .into());
        }
        f.end = Some(hash);
        self.pump_file(file);
        Ok(())
    }

    pub(super) fn on_file_failed(
        &mut self,
        file: FileId,
        reason: FileFailure,
    ) -> Result<(), SessionError> {
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if !matches!(f.state, FileState::Receiving) || f.end.is_some() || f.failed {
            return Err(ProtocolError::UnknownFile(file).into());
        }
        // The reason is the source's to log; here the file is simply left as it was.
        let _ = reason;
        f.failed = true;
        self.failed_paths.insert(f.entry.path.clone());
        for s in f.queue.drain(..) {
            self.bytes_credit_owed += seg_len(f.entry.size, s.index);
        }
        self.stats.files_failed += 1;
        self.pump_file(file);
        Ok(())
    }

    /// Moves one file forward: next write, or finish, or discard.
    fn pump_file(&mut self, file: FileId) {
        let Some(f) = self.files.get_mut(&file) else { return };
        if f.busy != Busy::Idle || !matches!(f.state, FileState::Receiving) {
            return;
        }
        if f.failed {
            f.state = FileState::Discarding;
            let w = TargetWork::Discard { file, keep_partial: false };
            self.push_work(Pending::File(file), w);
            return;
        }
        if let Some(seg) = f.queue.pop_front() {
            f.busy = Busy::Writing { kept: seg.payload == Payload::Kept };
            let w = TargetWork::Write {
                file,
                path: f.entry.path.clone(),
                index: seg.index,
                payload: seg.payload,
                encoding: seg.encoding,
                data: seg.data,
                len: seg_len(f.entry.size, seg.index) as usize,
                file_len: f.entry.size,
                mtime_ns: f.entry.meta.mtime_ns,
            };
            self.push_work(Pending::File(file), w);
            return;
        }
        if let Some(hash) = f.end {
            if f.written == f.segments {
                f.state = FileState::Finishing;
                let w = TargetWork::Finish { file, entry: f.entry.clone(), hash };
                self.push_work(Pending::File(file), w);
            }
        }
    }

    pub(super) fn on_committed(&mut self, files: Vec<FileId>) {
        for file in files {
            if let Some(f) = self.files.remove(&file) {
                if f.resent {
                    self.stats.files_resent += 1;
                }
                self.out.push_back(Message::Settled { file });
            }
        }
    }

    /// Commits verified files in batches: one flush for many files instead of an fsync each.
    /// A batch goes when it is full, or when every file in flight is waiting on it (nothing
    /// else could make progress).
    pub(super) fn flush_commits(&mut self) {
        if self.commit_batch.is_empty() || self.opts.dry_run {
            return;
        }
        let waiting = self.files.values().filter(|f| f.awaits_commit()).count();
        // Half the window at most, so the other half keeps the pipeline busy meanwhile.
        let full = COMMIT_BATCH.min(self.opts.window_files / 2).max(1);
        if self.commit_batch.len() < full && waiting < self.files.len() {
            return;
        }
        let files = std::mem::take(&mut self.commit_batch);
        for id in &files {
            if let Some(f) = self.files.get_mut(id) {
                f.state = FileState::Committing;
            }
        }
        self.push_work(Pending::Commit(files.clone()), TargetWork::Commit { files });
    }

    pub(super) fn on_file_outcome(
        &mut self,
        file: FileId,
        outcome: TargetOutcome,
    ) -> Result<(), SessionError> {
        let Some(f) = self.files.get_mut(&file) else {
            return Err(SessionError::Local(format!("outcome for unknown file {file}")));
        };
        match (&f.state, outcome) {
            (FileState::Hashing, TargetOutcome::Hashed(local)) => {
                if f.entry.hash == Some(local) {
                    let f = self.files.remove(&file).expect("present: matched above");
                    self.undecided.remove(&file);
                    self.same_content(f.entry, f.local.as_ref());
                } else {
                    self.changed(file);
                }
            }
            (FileState::Resuming, TargetOutcome::Resumable(have)) => {
                // A driver may hold no more than the file has; anything longer is ignored.
                if !have.is_empty() && have.len() as u64 <= f.segments {
                    f.resumable = have.len() as u64;
                    self.out.push_back(Message::Resume { file, have });
                }
                let Some(f) = self.files.remove(&file) else { return Ok(()) };
                self.undecided.remove(&file);
                self.request(file, f);
            }
            (FileState::Signing, TargetOutcome::Signed(sig)) => {
                self.undecided.remove(&file);
                f.state = FileState::Receiving;
                // Whole blocks only: a short last block would give away the file's last bytes.
                match sig.and_then(|(header, blocks)| header.whole_blocks(blocks)) {
                    Some((header, blocks)) => {
                        f.basis = Basis::Signed { len: header.basis_len, block: header.block_size };
                        self.out.push_back(Message::Want { file, basis: Some(header) });
                        self.send_signature(file, blocks);
                    }
                    None => self.out.push_back(Message::Want { file, basis: None }),
                }
            }
            (FileState::Receiving, TargetOutcome::Signed(sig)) if f.busy == Busy::Refining => {
                f.busy = Busy::Idle;
                // The basis is held in memory, so signing its gaps cannot fail to find it; an
                // empty fine signature (everything literal) is still a valid answer.
                let (header, blocks) = sig.unwrap_or_else(|| {
                    let bs = BlockSize::new(crate::delta::MIN_BLOCK).expect("MIN_BLOCK is valid");
                    (SignatureHeader::new(bs, 0), Vec::new())
                });
                self.out.push_back(Message::FineSignature { file, header });
                self.send_signature(file, blocks);
                self.pump_file(file);
            }
            (FileState::Receiving, TargetOutcome::Written { matched }) => {
                let kept = f.busy == Busy::Writing { kept: true };
                f.busy = Busy::Idle;
                f.written += 1;
                let len = seg_len(f.entry.size, f.written - 1);
                self.bytes_credit_owed += len;
                if kept {
                    self.stats.resumed_bytes += len;
                } else {
                    self.stats.matched_bytes += matched;
                    self.stats.literal_bytes += len.saturating_sub(matched);
                }
                self.pump_file(file);
            }
            (FileState::Finishing, TargetOutcome::Verified(c)) => {
                self.stats.ownership_skipped += c.ownership_skipped;
                f.state = FileState::Verified;
                self.commit_batch.push(file);
            }
            (FileState::Finishing, TargetOutcome::Mismatch) if !f.resent => {
                // An MD4 collision or a file that changed under the reader: resend it whole.
                f.resent = true;
                f.basis = Basis::Whole;
                f.resumable = 0;
                f.state = FileState::Receiving;
                f.next_rx = 0;
                f.written = 0;
                f.end = None;
                self.out.push_back(Message::Want { file, basis: None });
            }
            (FileState::Finishing, TargetOutcome::Mismatch) => {
                if let Some(f) = self.files.remove(&file) {
                    self.failed_paths.insert(f.entry.path);
                }
                self.stats.files_failed += 1;
                self.out.push_back(Message::Settled { file });
            }
            (FileState::Discarding, TargetOutcome::Done(_)) => {
                self.files.remove(&file);
                self.out.push_back(Message::Settled { file });
            }
            (state, o) => {
                return Err(SessionError::Local(format!(
                    "file {file}: outcome {o:?} does not fit state {state:?}"
                )))
            }
        }
        Ok(())
    }
}
