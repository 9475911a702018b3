//! The first pass of a two-level delta: each segment's coarse matches, gathered into the
//! gaps of the basis the fine signature is asked for (or not, when refining would not pay).

use std::sync::Arc;

use super::file::Mode;
use super::{SourceOutcome, SourceSession};
use crate::delta::{self, GapMap, Match, Refined, SegmentHow, SignatureHeader};
use crate::hash::SegmentHash;
use crate::message::{FileId, Message};
use crate::session::{ProtocolError, SessionError};

/// The first pass of a two-level delta, kept while the fine signature is on its way.
#[derive(Debug)]
pub(super) struct FirstPass {
    pub(super) matches: Vec<Match>,
    pub(super) hashes: Vec<SegmentHash>,
    pub(super) gaps: GapMap,
}

/// Unmatched bytes after the coarse pass below which a fine pass is not worth its round trip.
const REFINE_MIN_LITERAL: u64 = 16 << 10;

impl SourceSession {
    pub(super) fn on_fine_signature(
        &mut self,
        file: FileId,
        header: SignatureHeader,
    ) -> Result<(), SessionError> {
        let t = self.transfers.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        let Mode::AwaitFine(first) = &t.mode else {
            return Err(ProtocolError::Unexpected { what: "FineSignature" }.into());
        };
        let want = header.validate(&self.opts.limits).map_err(ProtocolError::from)?;
        if header.basis_len != first.gaps.len() {
            return Err(ProtocolError::SizeMismatch {
                file,
                what: format!(
                    "fine signature covers {} bytes, the gaps {}",
                    header.basis_len,
                    first.gaps.len()
                ),
            }
            .into());
        }
        let Mode::AwaitFine(first) =
            std::mem::replace(&mut t.mode, Mode::Send { how: SegmentHow::Literal, expect: None })
        else {
            return Ok(());
        };
        t.mode = Mode::Signature { header, blocks: Vec::new(), want, first: Some(first) };
        Ok(())
    }

    /// The first pass is complete: ask for a fine signature of the gaps, or send at once when
    /// refining would not pay.
    fn finish_first_pass(&mut self, file: FileId) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        let Mode::Matching { basis_len, done, .. } = &mut t.mode else { return };
        let basis_len = *basis_len;
        let mut matches = Vec::new();
        let mut hashes = Vec::with_capacity(done.len());
        for (h, m) in done.drain(..).flatten() {
            hashes.push(h);
            matches.extend(m);
        }
        let matched: u64 = matches.iter().map(|m| m.len).sum();
        let literal = t.info.size.saturating_sub(matched);
        let gaps = delta::gaps(&matches, basis_len);
        let limits = &self.opts.limits;
        let gap_map = GapMap::new(&gaps, basis_len, limits).ok();
        // Refining costs a round trip and a fine signature of the gaps (~20 bytes per fine
        // block); it pays when there are enough unmatched bytes to shave.
        let refine = gap_map.filter(|g| literal >= REFINE_MIN_LITERAL && !g.is_empty());
        t.issued = 0;
        // The coarse index has done its work; a fine signature is counted as it arrives.
        t.release_signature(&mut self.signature_held);
        match refine {
            Some(map) => {
                self.out.push_back(Message::Refine { file, gaps });
                t.mode = Mode::AwaitFine(Box::new(FirstPass { matches, hashes, gaps: map }));
            }
            None => {
                let plan = Refined { matches, fine: None };
                t.mode =
                    Mode::Send { how: SegmentHow::Refined(Arc::new(plan)), expect: Some(hashes) };
                self.ready.push_back(file);
            }
        }
    }

    pub(super) fn on_matched(&mut self, file: FileId, index: u64, outcome: SourceOutcome) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        t.outstanding -= 1;
        if t.finished {
            if t.settled && t.outstanding == 0 {
                self.transfers.remove(&file);
            }
            return;
        }
        let Mode::Matching { done, completed, .. } = &mut t.mode else { return };
        match outcome {
            SourceOutcome::Matched { hash, matches } => {
                if let Some(slot) = done.get_mut(index as usize) {
                    *slot = Some((hash, matches));
                    *completed += 1;
                }
                if *completed == t.segments {
                    self.finish_first_pass(file);
                }
            }
            SourceOutcome::SegmentFailed(reason) => {
                t.finish(&mut self.signature_held);
                self.out.push_back(Message::FileFailed { file, reason });
                self.stats.files_failed += 1;
            }
            _ => {}
        }
    }
}
