//! The two-level delta: coarse matches of the new file, the gaps of the basis no match uses,
//! and the fine pass that diffs the unmatched runs against those gaps.

use super::format::{count, encode, ops};
use super::{DeltaCounts, DeltaError, DeltaIndex, Op};
use crate::limits::{LimitExceeded, Limits};

/// Everything the second pass of a two-level delta needs.
///
/// The first pass diffs the new file against a coarse signature (large blocks: a small
/// signature) and keeps only the matches. The basis bytes no match uses — the gaps around each
/// change — are then signed again with small blocks, and the unmatched runs of the new file
/// are diffed against that fine signature. Copies from the fine basis are mapped back to the
/// real basis, so the destination applies one ordinary delta per segment.
#[derive(Debug)]
pub struct Refined {
    /// Coarse matches, sorted by offset in the new file, none crossing a segment boundary.
    pub matches: Vec<Match>,
    /// The fine index and the map from its offsets to the basis; `None` to send unmatched runs
    /// as literals.
    pub fine: Option<(DeltaIndex, GapMap)>,
}

impl Refined {
    /// How far the unmatched runs around the segment `offset..offset+len` reach into its
    /// neighbours, at most `cap` bytes each way: `(before, after)`.
    ///
    /// A run that crosses a segment boundary is diffed whole by both segments, each keeping its
    /// own part, so fine matches continue across the boundary instead of restarting on each
    /// side (which would cost about a fine block of literal per boundary).
    pub fn context(&self, offset: u64, len: u64, file_len: u64, cap: u64) -> (u64, u64) {
        let end = offset + len;
        let i = self.matches.partition_point(|m| m.new_offset < offset);
        let starts_matched = self.matches.get(i).is_some_and(|m| m.new_offset == offset);
        let before = if starts_matched {
            0
        } else {
            let prev_end =
                i.checked_sub(1).map_or(0, |k| self.matches[k].new_offset + self.matches[k].len);
            offset - prev_end.min(offset)
        };
        let j = self.matches.partition_point(|m| m.new_offset < end);
        let ends_matched = j > 0 && {
            let m = &self.matches[j - 1];
            m.new_offset + m.len == end
        };
        let after = if ends_matched {
            0
        } else {
            self.matches.get(j).map_or(file_len, |m| m.new_offset).max(end) - end
        };
        (before.min(cap), after.min(cap))
    }

    /// The delta rebuilding the segment `offset..offset+len` of the new file. `window` holds
    /// the new file from `window_offset`, covering the segment and any context around it
    /// (see [`Refined::context`]).
    ///
    /// # Errors
    /// Only if fast_rsync refuses the (already validated) fine index.
    pub fn encode_window(
        &self,
        window_offset: u64,
        window: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, DeltaError> {
        let (w0, w1) = (window_offset, window_offset + window.len() as u64);
        let (s0, s1) = (offset, offset + len);
        debug_assert!(w0 <= s0 && s1 <= w1);
        let mut ops = Vec::new();
        let mut lit = Vec::new();
        let mut at = w0;
        let first = self.matches.partition_point(|m| m.new_offset < w0);
        let inside = self.matches[first..].iter().take_while(|m| m.new_offset + m.len <= w1);
        for m in inside {
            if m.new_offset > at {
                self.unmatched(window, w0, at, m.new_offset, s0, s1, &mut ops, &mut lit)?;
            }
            if m.new_offset >= s0 && m.new_offset + m.len <= s1 {
                ops.push(Op::Copy { offset: m.basis_offset, len: m.len });
            }
            at = m.new_offset + m.len;
        }
        if at < w1 {
            self.unmatched(window, w0, at, w1, s0, s1, &mut ops, &mut lit)?;
        }
        Ok(encode(&ops, &lit))
    }

    /// Encodes the part `keep0..keep1` of the unmatched run `a..b` (file offsets; the run's
    /// bytes are in `window`, which starts at `w0`), diffing the whole run against the fine
    /// index.
    #[allow(clippy::too_many_arguments)]
    fn unmatched(
        &self,
        window: &[u8],
        w0: u64,
        a: u64,
        b: u64,
        keep0: u64,
        keep1: u64,
        ops: &mut Vec<Op>,
        lit: &mut Vec<u8>,
    ) -> Result<(), DeltaError> {
        let (k0, k1) = (a.max(keep0), b.min(keep1));
        if k0 >= k1 {
            return Ok(());
        }
        let run = &window[(a - w0) as usize..(b - w0) as usize];
        let Some((index, map)) = &self.fine else {
            ops.push(Op::Literal { len: k1 - k0 });
            lit.extend_from_slice(&window[(k0 - w0) as usize..(k1 - w0) as usize]);
            return Ok(());
        };
        let d = index.diff(run)?;
        let sub =
            self::ops(&d).ok_or_else(|| DeltaError::Engine("unparseable own delta".into()))?;
        let mut p = a;
        for op in sub {
            let len = match op {
                Op::Copy { len, .. } | Op::Literal { len } => len,
            };
            let (c0, c1) = (p.max(k0), (p + len).min(k1));
            if c0 < c1 {
                match op {
                    Op::Copy { offset, .. } => map.to_basis(offset + (c0 - p), c1 - c0, ops),
                    Op::Literal { .. } => {
                        ops.push(Op::Literal { len: c1 - c0 });
                        lit.extend_from_slice(&window[(c0 - w0) as usize..(c1 - w0) as usize]);
                    }
                }
            }
            p += len;
        }
        Ok(())
    }
}

/// [`encode_segment`](super::encode_segment) for a two-level delta given a window around the
/// segment (see [`Refined::context`]): `window` starts at `window_offset`, the segment is
/// `offset..offset+len`.
///
/// # Errors
/// Only if fast_rsync refuses the (already validated) fine index.
pub fn encode_refined(
    plan: &Refined,
    window_offset: u64,
    window: &[u8],
    offset: u64,
    len: u64,
) -> Result<(crate::message::Payload, Vec<u8>, DeltaCounts), DeltaError> {
    let d = plan.encode_window(window_offset, window, offset, len)?;
    let c = count(&d).unwrap_or(DeltaCounts { literal: len, matched: 0 });
    Ok((crate::message::Payload::Delta, d, c))
}

/// The first pass of a two-level delta over one segment: the coarse matches of `data`, which
/// starts at `offset` in the new file.
///
/// # Errors
/// Only if fast_rsync refuses the (already validated) index.
pub fn match_segment(
    index: &DeltaIndex,
    offset: u64,
    data: &[u8],
) -> Result<Vec<Match>, DeltaError> {
    let d = index.diff(data)?;
    matches(&d, offset).ok_or_else(|| DeltaError::Engine("unparseable own delta".into()))
}

/// Files at least this large (new and basis) use the two-level delta.
pub const TWO_LEVEL_MIN: u64 = 4 << 20;

/// A match found by the coarse pass: `len` bytes of the new file at `new_offset` equal the
/// basis at `basis_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Offset in the new file.
    pub new_offset: u64,
    /// Offset in the basis.
    pub basis_offset: u64,
    /// Length.
    pub len: u64,
}

/// The matches of a delta computed for new data starting at `new_offset`.
///
/// Returns `None` for a delta that does not parse.
pub fn matches(delta: &[u8], new_offset: u64) -> Option<Vec<Match>> {
    let mut at = new_offset;
    let mut out = Vec::new();
    for op in ops(delta)? {
        match op {
            Op::Copy { offset, len } => {
                out.push(Match { new_offset: at, basis_offset: offset, len });
                at += len;
            }
            Op::Literal { len } => at += len,
        }
    }
    Some(out)
}

/// The parts of a basis of `basis_len` bytes that no match uses, as sorted `(offset, len)`.
pub fn gaps(matches: &[Match], basis_len: u64) -> Vec<(u64, u64)> {
    let mut used: Vec<(u64, u64)> =
        matches.iter().map(|m| (m.basis_offset, m.basis_offset + m.len)).collect();
    used.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for (s, e) in used {
        if s > at {
            out.push((at, s - at));
        }
        at = at.max(e);
    }
    if at < basis_len {
        out.push((at, basis_len - at));
    }
    out
}

/// The gaps of a basis laid end to end: the "fine basis" the second pass signs and diffs
/// against, with the way back from its offsets to the real basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapMap {
    /// `(offset in the fine basis, offset in the basis, len)`, sorted.
    spans: Vec<(u64, u64, u64)>,
    total: u64,
}

impl GapMap {
    /// Validates `gaps` from a peer against a basis of `basis_len` bytes: sorted, disjoint,
    /// non-empty, inside the basis, within `limits`.
    ///
    /// # Errors
    /// [`DeltaError::Limit`] or [`DeltaError::Engine`] describing the first violation.
    pub fn new(gaps: &[(u64, u64)], basis_len: u64, limits: &Limits) -> Result<GapMap, DeltaError> {
        LimitExceeded::check("refinement gaps", gaps.len() as u64, limits.max_refine_gaps as u64)?;
        let mut spans = Vec::with_capacity(gaps.len());
        let mut total = 0u64;
        let mut prev_end = 0u64;
        for (i, &(off, len)) in gaps.iter().enumerate() {
            let end = off.checked_add(len).filter(|&e| e <= basis_len);
            let Some(end) = end.filter(|_| len > 0 && (i == 0 || off >= prev_end)) else {
                return Err(DeltaError::Engine(format!("refinement gap {i} is malformed")));
            };
            spans.push((total, off, len));
            total += len;
            prev_end = end;
        }
        LimitExceeded::check("refinement bytes", total, limits.max_refine_bytes)?;
        Ok(GapMap { spans, total })
    }

    /// Validates a peer's `Refine` against a basis of `basis_len` bytes signed with `coarse`
    /// blocks: everything [`GapMap::new`] checks, and every gap whole coarse blocks.
    ///
    /// That is exactly what the honest first pass produces: coarse matches are copies of
    /// whole coarse blocks (the signature holds whole blocks only, see
    /// [`SignatureHeader::whole_blocks`](super::SignatureHeader::whole_blocks)), so the
    /// ranges no match uses start and end on block boundaries. It is also what keeps the fine
    /// signature from being an oracle: each gap is at least one coarse block
    /// (>= [`COARSE_MIN_BLOCK`](super::COARSE_MIN_BLOCK)), the fine block size divides it, so
    /// every fine block signed is a whole block of at least
    /// [`FINE_MIN_BLOCK`](super::FINE_MIN_BLOCK) bytes of the basis, at an offset the
    /// peer cannot shift by less than a coarse block.
    ///
    /// # Errors
    /// As [`GapMap::new`], and [`DeltaError::Refine`] for a gap that is not whole blocks.
    pub fn for_refine(
        gaps: &[(u64, u64)],
        basis_len: u64,
        coarse: super::BlockSize,
        limits: &Limits,
    ) -> Result<GapMap, DeltaError> {
        let map = GapMap::new(gaps, basis_len, limits)?;
        let b = u64::from(coarse.get());
        for (gap, &(offset, len)) in gaps.iter().enumerate() {
            if offset % b != 0 || len % b != 0 {
                return Err(DeltaError::Refine { gap, offset, len, block: coarse.get() });
            }
        }
        Ok(map)
    }

    /// The signature of the fine basis with `bs` blocks, signed gap by gap without gathering
    /// the gaps into one buffer (up to `Limits::max_refine_bytes` of copies). Equal to
    /// signing [`GapMap::gather`] when every gap but the last is whole `bs` blocks, which
    /// [`GapMap::for_refine`] guarantees (a coarse block is a multiple of any fine block);
    /// otherwise it gathers.
    pub fn sign(&self, basis: &[u8], bs: super::BlockSize) -> Vec<u8> {
        let b = u64::from(bs.get());
        let n = self.spans.len();
        if self.spans.iter().take(n.saturating_sub(1)).any(|&(_, _, len)| len % b != 0) {
            return super::signature_blocks(&self.gather(basis), bs);
        }
        let mut out = Vec::new();
        for &(_, off, len) in &self.spans {
            out.extend(super::signature_blocks(&basis[off as usize..(off + len) as usize], bs));
        }
        out
    }

    /// Total bytes of the fine basis.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether there are no gaps.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The fine basis: the gap bytes of `basis` end to end.
    pub fn gather(&self, basis: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.total as usize);
        for &(_, off, len) in &self.spans {
            v.extend_from_slice(&basis[off as usize..(off + len) as usize]);
        }
        v
    }

    /// Maps a copy from the fine basis to copies from the real basis (split where it crosses
    /// from one gap into the next).
    pub fn to_basis(&self, offset: u64, len: u64, out: &mut Vec<Op>) {
        let mut at = offset;
        let end = offset + len;
        let mut i = self.spans.partition_point(|&(v, _, l)| v + l <= at);
        while at < end && i < self.spans.len() {
            let (v, b, l) = self.spans[i];
            let take = (v + l).min(end) - at;
            out.push(Op::Copy { offset: b + (at - v), len: take });
            at += take;
            i += 1;
        }
    }
}
