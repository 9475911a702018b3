//! One file's transfer: the target's `Resume` and `Want`, its signature, and the segments
//! sent in order until `FileEnd` or `FileFailed`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::manifest::FileInfo;
use super::refine::FirstPass;
use super::{SourceOutcome, SourceSession};
use crate::delta::{self, DeltaIndex, Match, Refined, SegmentHow, SignatureHeader};
use crate::hash::{merge_segments, segment_count, SegmentHash};
use crate::limits::LimitExceeded;
use crate::message::{FileFailure, FileId, Message, Payload};
use crate::segment::seg_len;
use crate::session::{ProtocolError, SessionError};

/// Where a file is in its transfer.
#[derive(Debug)]
pub(super) enum Mode {
    /// Receiving a signature: the coarse one, or the fine one once `first` holds the first
    /// pass of a two-level delta.
    Signature {
        header: SignatureHeader,
        blocks: Vec<u8>,
        want: usize,
        first: Option<Box<FirstPass>>,
    },
    /// First pass of a two-level delta in progress.
    Matching {
        coarse: Arc<DeltaIndex>,
        basis_len: u64,
        done: Vec<Option<(SegmentHash, Vec<Match>)>>,
        completed: u64,
    },
    /// `Refine` sent; waiting for the fine signature's header.
    AwaitFine(Box<FirstPass>),
    /// Sending segments; with a two-level delta, each segment's hash must equal the first
    /// pass's (else the file changed between the passes).
    Send { how: SegmentHow, expect: Option<Vec<SegmentHash>> },
}

/// One file the target asked for, from its `Want` until it is settled.
#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) info: FileInfo,
    pub(super) mode: Mode,
    pub(super) segments: u64,
    pub(super) issued: u64,
    pub(super) sent: u64,
    /// What the destination holds of this file from an interrupted round (`Resume`).
    pub(super) have: Vec<SegmentHash>,
    pub(super) hashes: Vec<SegmentHash>,
    pub(super) ready: BTreeMap<u64, SourceOutcome>,
    /// Set once FileEnd or FileFailed went out; later outcomes are dropped.
    pub(super) finished: bool,
    /// The target is done with the file; forget it once no work is outstanding.
    pub(super) settled: bool,
    pub(super) outstanding: usize,
    /// Signature bytes this file holds (received pieces, then their index) against
    /// `Limits::max_signature_bytes`, until its first pass or its sending is over.
    pub(super) signature: u64,
}

impl Transfer {
    /// Marks the file finished (FileEnd or FileFailed sent) and gives back the signature bytes
    /// it held: its index is no longer searched.
    pub(super) fn finish(&mut self, held: &mut u64) {
        self.finished = true;
        self.release_signature(held);
    }

    /// Gives back the signature bytes this file holds.
    pub(super) fn release_signature(&mut self, held: &mut u64) {
        *held -= self.signature;
        self.signature = 0;
    }
}

impl SourceSession {
    pub(super) fn on_resume(
        &mut self,
        file: FileId,
        have: Vec<[u8; 32]>,
    ) -> Result<(), SessionError> {
        let info = self.window.get(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if have.is_empty()
            || have.len() as u64 > segment_count(info.size)
            || self.resume.contains_key(&file)
        {
            return Err(ProtocolError::Unexpected { what: "Resume" }.into());
        }
        // Bounded: at most one per file of the window, each no longer than the file.
        self.resume.insert(file, have.into_iter().map(SegmentHash).collect());
        Ok(())
    }

    pub(super) fn on_want(
        &mut self,
        file: FileId,
        basis: Option<SignatureHeader>,
    ) -> Result<(), SessionError> {
        let info = if let Some(info) = self.window.remove(&file) {
            info
        } else {
            // A second request for a file already sent: its rebuilt copy failed verification.
            match self.transfers.remove(&file) {
                Some(t) if t.finished && !t.settled && t.outstanding == 0 && basis.is_none() => {
                    t.info
                }
                _ => return Err(ProtocolError::UnknownFile(file).into()),
            }
        };
        let mode = match basis {
            None => Mode::Send { how: SegmentHow::Literal, expect: None },
            Some(header) => {
                let want = header.validate(&self.opts.limits).map_err(ProtocolError::from)?;
                // One that could never fit ends the round before a byte of it arrives.
                check_signature_budget(want as u64, &self.opts.limits)?;
                Mode::Signature { header, blocks: Vec::new(), want, first: None }
            }
        };
        let sending = matches!(mode, Mode::Send { .. });
        let have = self.resume.remove(&file).unwrap_or_default();
        self.transfers.insert(
            file,
            Transfer {
                segments: segment_count(info.size),
                info,
                mode,
                issued: 0,
                sent: 0,
                have,
                hashes: Vec::new(),
                ready: BTreeMap::new(),
                finished: false,
                settled: false,
                outstanding: 0,
                signature: 0,
            },
        );
        if sending {
            self.start_sending(file);
        }
        Ok(())
    }

    pub(super) fn on_signature_piece(
        &mut self,
        file: FileId,
        piece: Vec<u8>,
        last: bool,
    ) -> Result<(), SessionError> {
        let t = self.transfers.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        let Mode::Signature { header, blocks, want, first } = &mut t.mode else {
            return Err(ProtocolError::Unexpected { what: "SignaturePiece" }.into());
        };
        if blocks.len() + piece.len() > *want {
            return Err(ProtocolError::SizeMismatch {
                file,
                what: format!("signature longer than the {want} bytes announced"),
            }
            .into());
        }
        // Grown as pieces arrive (never reserved in full from the header): a peer that
        // announces a maximal signature has to send it to make us hold it, and all the
        // signatures held at once (being received or indexed) stay within the round's budget.
        let got = piece.len() as u64;
        check_signature_budget(self.signature_held + got, &self.opts.limits)?;
        self.signature_held += got;
        t.signature += got;
        blocks.extend_from_slice(&piece);
        self.stats.signature_bytes += got;
        if !last {
            return Ok(());
        }
        let index =
            DeltaIndex::build(header, blocks, &self.opts.limits).map_err(ProtocolError::from)?;
        if let Some(first) = first.take() {
            let FirstPass { matches, hashes, gaps } = *first;
            let plan = Refined { matches, fine: Some((index, gaps)) };
            t.mode = Mode::Send { how: SegmentHow::Refined(Arc::new(plan)), expect: Some(hashes) };
        } else if t.info.size >= delta::TWO_LEVEL_MIN && header.basis_len >= delta::TWO_LEVEL_MIN {
            t.mode = Mode::Matching {
                coarse: Arc::new(index),
                basis_len: header.basis_len,
                done: (0..t.segments).map(|_| None).collect(),
                completed: 0,
            };
        } else {
            t.mode = Mode::Send { how: SegmentHow::Delta(Arc::new(index)), expect: None };
        }
        self.start_sending(file);
        Ok(())
    }

    fn start_sending(&mut self, file: FileId) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        if t.segments == 0 {
            t.finish(&mut self.signature_held);
            self.out.push_back(Message::FileEnd {
                file,
                size: 0,
                hash: *blake3::hash(b"").as_bytes(),
            });
        } else {
            self.ready.push_back(file);
        }
    }

    pub(super) fn on_segment(
        &mut self,
        file: FileId,
        index: u64,
        len: u64,
        outcome: SourceOutcome,
    ) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        t.outstanding -= 1;
        if t.finished {
            self.bytes_reserved -= len;
            if t.settled && t.outstanding == 0 {
                self.transfers.remove(&file);
            }
            return;
        }
        if let SourceOutcome::SegmentFailed(reason) = outcome {
            t.finish(&mut self.signature_held);
            // Segments never sent give their credit back; sent ones are credited by the target.
            self.bytes_reserved -= len;
            self.out.push_back(Message::FileFailed { file, reason });
            self.stats.files_failed += 1;
            let ready: Vec<u64> = t.ready.keys().copied().collect();
            for i in ready {
                t.ready.remove(&i);
                self.bytes_reserved -= seg_len(t.info.size, i);
            }
            return;
        }
        t.ready.insert(index, outcome);
        let expect = match &t.mode {
            Mode::Send { expect, .. } => expect.as_deref(),
            _ => None,
        };
        while let Some(o) = t.ready.remove(&t.sent) {
            if let SourceOutcome::Segment { hash, data, payload, encoding, counts } = o {
                if expect.is_some_and(|e| e.get(t.sent as usize) != Some(&hash)) {
                    // Read differently than in the first pass: the file changed in between.
                    t.finish(&mut self.signature_held);
                    self.bytes_reserved -= seg_len(t.info.size, t.sent);
                    for i in std::mem::take(&mut t.ready).into_keys() {
                        self.bytes_reserved -= seg_len(t.info.size, i);
                    }
                    self.out.push_back(Message::FileFailed { file, reason: FileFailure::Changed });
                    self.stats.files_failed += 1;
                    return;
                }
                if payload == Payload::Kept {
                    self.stats.resumed_bytes += seg_len(t.info.size, t.sent);
                }
                self.stats.literal_bytes += counts.literal;
                self.stats.matched_bytes += counts.matched;
                self.stats.payload_bytes += data.len() as u64;
                t.hashes.push(hash);
                self.out.push_back(Message::Segment {
                    file,
                    index: t.sent,
                    payload,
                    encoding,
                    data,
                });
            }
            t.sent += 1;
        }
        if t.sent == t.segments {
            t.finish(&mut self.signature_held);
            let hash = merge_segments(&t.hashes, t.info.size).unwrap_or([0; 32]);
            self.out.push_back(Message::FileEnd { file, size: t.info.size, hash });
        }
    }
}

/// `Ok` while `held` signature bytes fit the round's budget.
///
/// # Errors
/// A limit error naming `max_signature_bytes`.
fn check_signature_budget(held: u64, limits: &crate::Limits) -> Result<(), ProtocolError> {
    LimitExceeded::check(
        "signature bytes held (max_signature_bytes)",
        held,
        limits.max_signature_bytes,
    )
    .map_err(ProtocolError::from)
}
