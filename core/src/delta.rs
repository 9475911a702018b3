//! Signatures, deltas and patches over `fast_rsync`, with every parameter validated first.
//!
//! `fast_rsync` panics on a zero block size or a hash size over 16 and trusts a signature's
//! framing; nothing from a peer reaches it before [`BlockSize`] and [`SignatureHeader`] have
//! accepted it. Its strong hash is MD4, so its output is never trusted on its own: the caller
//! checks the blake3 of every rebuilt file (see [`crate::hash`]).
//!
//! Parallelism: signature blocks are independent, so a basis is cut at block-aligned points and
//! signed on all cores; a new file is cut into segments that are diffed independently against
//! one shared, read-only [`DeltaIndex`] of the whole basis.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::limits::{LimitExceeded, Limits};

/// Strong-hash bytes per block in every signature Ferry sends (the whole MD4).
pub const HASH_SIZE: u8 = 16;
/// Weak-checksum bytes per block.
const CRC_SIZE: usize = 4;
/// Serialized bytes per signature block.
pub const BLOCK_SIG_LEN: usize = CRC_SIZE + HASH_SIZE as usize;
const MD4_MAGIC: u32 = 0x7273_0136;
/// Smallest block size accepted from a peer.
pub const MIN_BLOCK: u32 = 64;
/// Largest block size accepted from a peer.
pub const MAX_BLOCK: u32 = 1 << 20;

/// A validated signature block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockSize(u32);

/// Why delta parameters or data were refused.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Block size outside `MIN_BLOCK..=MAX_BLOCK` (0 included: fast_rsync would panic).
    #[error("block size {0} is outside {MIN_BLOCK}..={MAX_BLOCK}")]
    BlockSize(u32),
    /// Strong hash size other than 16.
    #[error("signature hash size {0} is not {HASH_SIZE}")]
    HashSize(u8),
    /// The signature is larger than allowed or inconsistent with the basis length.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The signature's bytes do not match its header.
    #[error("signature is {got} bytes, header implies {want}")]
    SignatureLength {
        /// Bytes the header implies.
        want: u64,
        /// Bytes received.
        got: u64,
    },
    /// fast_rsync refused the signature or the delta.
    #[error("delta engine: {0}")]
    Engine(String),
    /// Applying a delta failed (out-of-range copy, output past the announced size, bad op).
    #[error("patch refused: {0}")]
    Apply(#[from] fast_rsync::ApplyError),
}

impl BlockSize {
    /// Validates a block size.
    ///
    /// # Errors
    /// [`DeltaError::BlockSize`] outside `MIN_BLOCK..=MAX_BLOCK`.
    pub fn new(size: u32) -> Result<Self, DeltaError> {
        if (MIN_BLOCK..=MAX_BLOCK).contains(&size) {
            Ok(BlockSize(size))
        } else {
            Err(DeltaError::BlockSize(size))
        }
    }

    /// The block size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The block size used for a basis of `len` bytes.
    ///
    /// Small blocks cost signature bytes (20 per block), large blocks cost literal bytes (a
    /// change resends about a block around it). For `c` scattered changes the total
    /// `20 * len / B + c * B` is least at `B = sqrt(20 * len / c)`. rsync uses `sqrt(len)`,
    /// which assumes `c` = 20 for every file; measured on 1 GiB with 210 scattered changes it
    /// sends 2.5x the optimum. We assume changes grow with the file (one per ~4 MiB, at least 8),
    /// which lands within a few percent of the optimum on that workload and on small files.
    pub fn for_len(len: u64) -> BlockSize {
        let changes = (len >> 22).max(8);
        let ideal = ((BLOCK_SIG_LEN as u64 * len / changes) as f64).sqrt() as u64;
        // Power of two: keeps segment boundaries block-aligned and the choice stable as a file
        // grows a little between rounds.
        let b = ideal.max(1).next_power_of_two().clamp(512, 64 << 10);
        BlockSize(b as u32)
    }
}

impl BlockSize {
    /// The block size the destination signs a basis of `basis_len` bytes with when the new
    /// file is `new_len` bytes: coarse when both are large enough for a two-level delta. The
    /// signature cache signs rebuilt files with `for_basis(len, len)`, the size the next round
    /// asks for when the file changes but keeps roughly its size.
    pub fn for_basis(basis_len: u64, new_len: u64) -> BlockSize {
        if basis_len >= TWO_LEVEL_MIN && new_len >= TWO_LEVEL_MIN {
            BlockSize::coarse_for_len(basis_len)
        } else {
            BlockSize::for_len(basis_len)
        }
    }

    /// Block size of the coarse pass of a two-level delta: large, because the fine pass
    /// recovers the precision, so the first signature stays small (about 20 bytes per
    /// `2 * sqrt(len)` bytes of basis).
    pub fn coarse_for_len(len: u64) -> BlockSize {
        let b = ((len as f64).sqrt() as u64 * 2).max(1).next_power_of_two();
        BlockSize(b.clamp(4 << 10, 128 << 10) as u32)
    }

    /// Block size of the fine pass over `gap_bytes` of basis in `gaps` pieces: the same
    /// signature-vs-literal balance as [`BlockSize::for_len`], with one change per gap.
    pub fn fine_for_gaps(gap_bytes: u64, gaps: u64) -> BlockSize {
        let ideal = ((BLOCK_SIG_LEN as u64 * gap_bytes / gaps.max(1)) as f64).sqrt() as u64;
        // Nearest power of two (not next): the cost curve is flat near the optimum, and
        // rounding down keeps the literal cost of each change low.
        let up = ideal.max(1).next_power_of_two();
        let b = if up - ideal > ideal - up / 2 { up / 2 } else { up };
        BlockSize(b.clamp(128, 4096) as u32)
    }
}

impl<'de> Deserialize<'de> for BlockSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BlockSize::new(u32::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// What a signature covers, sent ahead of its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureHeader {
    /// Block size.
    pub block_size: BlockSize,
    /// Strong hash bytes per block; always [`HASH_SIZE`].
    pub hash_size: u8,
    /// Length of the basis file the signature describes.
    pub basis_len: u64,
}

impl SignatureHeader {
    /// A header for a basis of `basis_len` bytes signed with `block_size`.
    pub fn new(block_size: BlockSize, basis_len: u64) -> Self {
        SignatureHeader { block_size, hash_size: HASH_SIZE, basis_len }
    }

    /// Number of blocks the signature holds.
    pub fn block_count(&self) -> u64 {
        self.basis_len.div_ceil(u64::from(self.block_size.get()))
    }

    /// Serialized length of the blocks, checked against `limits` before anything is allocated.
    ///
    /// # Errors
    /// [`DeltaError::HashSize`] or [`DeltaError::Limit`].
    pub fn validate(&self, limits: &Limits) -> Result<usize, DeltaError> {
        if self.hash_size != HASH_SIZE {
            return Err(DeltaError::HashSize(self.hash_size));
        }
        let blocks = self.block_count();
        LimitExceeded::check("signature block count", blocks, limits.max_signature_blocks)?;
        Ok(blocks as usize * BLOCK_SIG_LEN)
    }
}

/// Computes the signature blocks of `basis` (without header), in parallel.
pub fn signature_blocks(basis: &[u8], block_size: BlockSize) -> Vec<u8> {
    let bs = block_size.get() as usize;
    // Block-aligned pieces sign independently; concatenated they equal the one-pass signature.
    let piece = bs * (((4 << 20) / bs).max(1));
    let options = fast_rsync::SignatureOptions {
        block_size: block_size.get(),
        crypto_hash_size: u32::from(HASH_SIZE),
    };
    let parts: Vec<Vec<u8>> = basis
        .par_chunks(piece.max(1))
        .map(|c| fast_rsync::Signature::calculate(c, options).into_serialized())
        .collect();
    let mut out = Vec::with_capacity(basis.len().div_ceil(bs) * BLOCK_SIG_LEN);
    for p in parts {
        out.extend_from_slice(&p[12..]);
    }
    out
}

self_cell::self_cell!(
    /// A peer's signature, indexed for delta search; shared read-only by all segment diffs.
    pub struct DeltaIndex {
        owner: fast_rsync::Signature,
        #[covariant]
        dependent: IndexedSig,
    }
);

type IndexedSig<'a> = fast_rsync::IndexedSignature<'a>;

impl DeltaIndex {
    /// Builds an index from a validated header and its blocks.
    ///
    /// # Errors
    /// When the blocks do not match the header or exceed `limits`.
    pub fn build(
        header: &SignatureHeader,
        blocks: &[u8],
        limits: &Limits,
    ) -> Result<DeltaIndex, DeltaError> {
        let want = header.validate(limits)?;
        if blocks.len() != want {
            return Err(DeltaError::SignatureLength {
                want: want as u64,
                got: blocks.len() as u64,
            });
        }
        let mut raw = Vec::with_capacity(12 + blocks.len());
        raw.extend_from_slice(&MD4_MAGIC.to_be_bytes());
        raw.extend_from_slice(&header.block_size.get().to_be_bytes());
        raw.extend_from_slice(&u32::from(header.hash_size).to_be_bytes());
        raw.extend_from_slice(blocks);
        let sig = fast_rsync::Signature::deserialize(raw)
            .map_err(|e| DeltaError::Engine(e.to_string()))?;
        Ok(DeltaIndex::new(sig, |s| s.index()))
    }

    /// Computes the delta that rebuilds `data` from the basis this index describes.
    ///
    /// # Errors
    /// Only if fast_rsync rejects the (already validated) signature.
    pub fn diff(&self, data: &[u8]) -> Result<Vec<u8>, DeltaError> {
        let mut out = Vec::with_capacity(data.len() / 64 + 64);
        fast_rsync::diff(self.borrow_dependent(), data, &mut out)
            .map_err(|e| DeltaError::Engine(e.to_string()))?;
        Ok(out)
    }
}

impl std::fmt::Debug for DeltaIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The index itself is large and opaque; its size is what a log needs.
        f.debug_struct("DeltaIndex")
            .field("signature_bytes", &self.borrow_owner().serialized().len())
            .finish()
    }
}

/// How a segment is encoded for the wire.
#[derive(Debug, Clone)]
pub enum SegmentHow {
    /// The bytes themselves.
    Literal,
    /// A one-pass delta against the destination's basis.
    Delta(std::sync::Arc<DeltaIndex>),
    /// The second pass of a two-level delta: coarse matches, and the fine index of the gaps.
    Refined(std::sync::Arc<Refined>),
}

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

/// Encodes one segment as the wire carries it: its payload kind, raw (uncompressed) bytes,
/// and literal/matched counts.
///
/// # Errors
/// Only if fast_rsync refuses an (already validated) index.
pub fn encode_segment(
    how: &SegmentHow,
    offset: u64,
    data: Vec<u8>,
) -> Result<(crate::message::Payload, Vec<u8>, DeltaCounts), DeltaError> {
    use crate::message::Payload;
    let all_literal = DeltaCounts { literal: data.len() as u64, matched: 0 };
    let d = match how {
        SegmentHow::Literal => return Ok((Payload::Literal, data, all_literal)),
        SegmentHow::Delta(index) => index.diff(&data)?,
        SegmentHow::Refined(plan) => {
            plan.encode_window(offset, &data, offset, data.len() as u64)?
        }
    };
    let c = count(&d).unwrap_or(all_literal);
    Ok((Payload::Delta, d, c))
}

/// [`encode_segment`] for a two-level delta given a window around the segment (see
/// [`Refined::context`]): `window` starts at `window_offset`, the segment is
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

/// Literal and matched byte counts of a delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaCounts {
    /// Bytes carried in the delta itself.
    pub literal: u64,
    /// Bytes copied from the basis.
    pub matched: u64,
}

/// Applies one segment's `delta` to `basis`, appending to `out`, refusing more than `limit`
/// bytes of output.
///
/// # Errors
/// [`DeltaError::Apply`] for any malformed, out-of-range or over-long delta.
pub fn apply(
    basis: &[u8],
    delta: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), DeltaError> {
    fast_rsync::apply_limited(basis, delta, out, limit)?;
    Ok(())
}

/// One instruction of a delta: copy from the basis, or take bytes from the new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `len` bytes from the basis at `offset`.
    Copy {
        /// Offset in the basis.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// `len` literal bytes (carried in the delta).
    Literal {
        /// Length.
        len: u64,
    },
}

/// Parses a well-formed delta into its instructions (literal bytes are skipped over).
///
/// Returns `None` for a delta that does not parse.
pub fn ops(delta: &[u8]) -> Option<Vec<Op>> {
    let mut out = Vec::new();
    let mut rest = delta.strip_prefix(&DELTA_MAGIC.to_be_bytes())?;
    loop {
        let (&op, tail) = rest.split_first()?;
        rest = tail;
        match op {
            0 => return rest.is_empty().then_some(out),
            1..=0x40 => {
                let n = usize::from(op);
                rest = rest.get(n..)?;
                out.push(Op::Literal { len: n as u64 });
            }
            0x41..=0x44 => {
                let w = 1usize << (op - 0x41);
                let n = be(rest.get(..w)?);
                rest = rest.get(w..)?;
                rest = rest.get(usize::try_from(n).ok()?..)?;
                out.push(Op::Literal { len: n });
            }
            0x45..=0x54 => {
                let k = op - 0x45;
                let (ow, lw) = (1usize << (k / 4), 1usize << (k % 4));
                let offset = be(rest.get(..ow)?);
                let len = be(rest.get(ow..ow + lw)?);
                rest = rest.get(ow + lw..)?;
                out.push(Op::Copy { offset, len });
            }
            _ => return None,
        }
    }
}

/// Counts literal and matched bytes of a well-formed delta (as produced by [`DeltaIndex::diff`]).
///
/// Returns `None` for a delta that does not parse.
pub fn count(delta: &[u8]) -> Option<DeltaCounts> {
    let mut c = DeltaCounts::default();
    for op in ops(delta)? {
        match op {
            Op::Copy { len, .. } => c.matched += len,
            Op::Literal { len } => c.literal += len,
        }
    }
    Some(c)
}

const DELTA_MAGIC: u32 = 0x7273_0236;

/// Builds a delta (in the format [`apply`] reads) from instructions; `data` holds the literal
/// bytes, consumed in order by the `Literal` ops. Adjacent copies that continue each other are
/// merged.
///
/// # Panics
/// If the literal ops ask for more bytes than `data` holds (a caller bug, not peer input).
pub fn encode(ops: &[Op], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&DELTA_MAGIC.to_be_bytes());
    let mut pos = 0usize;
    let mut pending: Option<(u64, u64)> = None;
    let flush = |out: &mut Vec<u8>, p: &mut Option<(u64, u64)>| {
        if let Some((offset, len)) = p.take() {
            let (oc, ob) = width(offset);
            let (lc, lb) = width(len);
            out.push(0x45 + oc * 4 + lc);
            out.extend_from_slice(&offset.to_be_bytes()[8 - ob..]);
            out.extend_from_slice(&len.to_be_bytes()[8 - lb..]);
        }
    };
    for op in ops {
        match *op {
            Op::Copy { len: 0, .. } | Op::Literal { len: 0 } => {}
            Op::Copy { offset, len } => match &mut pending {
                Some((o, l)) if *o + *l == offset => *l += len,
                _ => {
                    flush(&mut out, &mut pending);
                    pending = Some((offset, len));
                }
            },
            Op::Literal { len } => {
                flush(&mut out, &mut pending);
                let n = len as usize;
                if n <= 64 {
                    out.push(n as u8);
                } else {
                    let (c, b) = width(len);
                    out.push(0x41 + c);
                    out.extend_from_slice(&len.to_be_bytes()[8 - b..]);
                }
                out.extend_from_slice(&data[pos..pos + n]);
                pos += n;
            }
        }
    }
    flush(&mut out, &mut pending);
    out.push(0);
    out
}

/// The size class (0..=3) and byte width of an integer in the delta format.
fn width(v: u64) -> (u8, usize) {
    if v <= u64::from(u8::MAX) {
        (0, 1)
    } else if v <= u64::from(u16::MAX) {
        (1, 2)
    } else if v <= u64::from(u32::MAX) {
        (2, 4)
    } else {
        (3, 8)
    }
}

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

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        crate::rng::SplitMix64::bytes(seed, n)
    }

    #[test]
    fn block_size_zero_and_absurd_are_refused() {
        assert!(matches!(BlockSize::new(0), Err(DeltaError::BlockSize(0))));
        assert!(BlockSize::new(MAX_BLOCK + 1).is_err());
        let bytes = postcard::to_allocvec(&0u32).unwrap();
        assert!(postcard::from_bytes::<BlockSize>(&bytes).is_err());
    }

    #[test]
    fn hash_size_and_block_count_are_checked_before_allocation() {
        let limits = Limits::default();
        let mut h = SignatureHeader::new(BlockSize::new(64).unwrap(), u64::MAX);
        assert!(matches!(h.validate(&limits), Err(DeltaError::Limit(_))));
        h.basis_len = 1000;
        h.hash_size = 17;
        assert!(matches!(h.validate(&limits), Err(DeltaError::HashSize(17))));
        h.hash_size = HASH_SIZE;
        assert!(matches!(
            DeltaIndex::build(&h, &[0; 7], &limits),
            Err(DeltaError::SignatureLength { .. })
        ));
    }

    #[test]
    fn parallel_signature_equals_one_pass() {
        let data = noise(9 << 20 | 123, 7);
        let bs = BlockSize::new(2048).unwrap();
        let one = fast_rsync::Signature::calculate(
            &data,
            fast_rsync::SignatureOptions { block_size: 2048, crypto_hash_size: 16 },
        );
        assert_eq!(&one.serialized()[12..], &signature_blocks(&data, bs)[..]);
    }

    #[test]
    fn delta_round_trip_and_counts() {
        let base = noise(300_000, 1);
        let mut new = base.clone();
        new.splice(1000..1000, b"inserted!".iter().copied());
        new[200_000..200_100].copy_from_slice(&[7; 100]);
        let bs = BlockSize::new(1024).unwrap();
        let h = SignatureHeader::new(bs, base.len() as u64);
        let idx = DeltaIndex::build(&h, &signature_blocks(&base, bs), &Limits::default()).unwrap();
        let d = idx.diff(&new).unwrap();
        let c = count(&d).unwrap();
        assert_eq!(c.literal + c.matched, new.len() as u64);
        assert!(c.literal < 5000, "{c:?}");
        let mut out = Vec::new();
        apply(&base, &d, &mut out, new.len()).unwrap();
        assert_eq!(out, new);
        // One byte short of the announced size is refused.
        assert!(apply(&base, &d, &mut Vec::new(), new.len() - 1).is_err());
        // A copy beyond the basis is refused.
        assert!(apply(&base[..1000], &d, &mut Vec::new(), new.len()).is_err());
    }

    #[test]
    fn encode_round_trips_through_apply() {
        let base = noise(10_000, 3);
        let lit = b"fresh bytes".repeat(20);
        let ops = [
            Op::Copy { offset: 100, len: 50 },
            Op::Copy { offset: 150, len: 50 },
            Op::Literal { len: 11 },
            Op::Copy { offset: 9_000, len: 1_000 },
            Op::Literal { len: 209 },
        ];
        let d = encode(&ops, &lit);
        let mut out = Vec::new();
        apply(&base, &d, &mut out, 1_320).unwrap();
        let mut want = base[100..200].to_vec();
        want.extend_from_slice(&lit[..11]);
        want.extend_from_slice(&base[9_000..10_000]);
        want.extend_from_slice(&lit[11..220]);
        assert_eq!(out, want);
        assert_eq!(count(&d), Some(DeltaCounts { literal: 220, matched: 1_100 }));
        // The two adjacent copies were merged into one.
        assert_eq!(ops_of(&d).len(), 4);
    }

    fn ops_of(d: &[u8]) -> Vec<Op> {
        ops(d).unwrap()
    }

    #[test]
    fn gaps_and_gap_map() {
        let m = [
            Match { new_offset: 0, basis_offset: 100, len: 100 },
            Match { new_offset: 100, basis_offset: 500, len: 100 },
            Match { new_offset: 300, basis_offset: 150, len: 100 },
        ];
        let g = gaps(&m, 1000);
        assert_eq!(g, vec![(0, 100), (250, 250), (600, 400)]);
        let map = GapMap::new(&g, 1000, &Limits::default()).unwrap();
        assert_eq!(map.len(), 750);
        let mut out = Vec::new();
        map.to_basis(50, 100, &mut out);
        assert_eq!(out, vec![Op::Copy { offset: 50, len: 50 }, Op::Copy { offset: 250, len: 50 }]);
        let basis = noise(1000, 9);
        let fine = map.gather(&basis);
        assert_eq!(&fine[..100], &basis[..100]);
        assert_eq!(&fine[100..350], &basis[250..500]);
        // Peer-supplied gaps are validated.
        let limits = Limits::default();
        assert!(GapMap::new(&[(0, 10), (5, 10)], 1000, &limits).is_err(), "overlap");
        assert!(GapMap::new(&[(990, 20)], 1000, &limits).is_err(), "past the end");
        assert!(GapMap::new(&[(10, 0)], 1000, &limits).is_err(), "empty");
        assert!(GapMap::new(&[(u64::MAX, 2)], u64::MAX, &limits).is_err(), "overflow");
        let small = Limits { max_refine_bytes: 100, ..Limits::default() };
        assert!(GapMap::new(&[(0, 101)], 1000, &small).is_err(), "over the byte limit");
    }

    #[test]
    fn two_level_delta_rebuilds_and_beats_one_level() {
        let size = 6 << 20;
        let base = noise(size, 11);
        let mut new = base.clone();
        for k in 0..20usize {
            let at = 1000 + k * 300_001;
            new[at..at + 4096].copy_from_slice(&noise(4096, k as u64 + 100));
        }
        new.splice(3_000_000..3_000_000, b"a short insert".iter().copied());
        let limits = Limits::default();
        let seg = 1 << 20;
        let coarse = BlockSize::coarse_for_len(size as u64);
        let h = SignatureHeader::new(coarse, size as u64);
        let index = DeltaIndex::build(&h, &signature_blocks(&base, coarse), &limits).unwrap();
        let mut all = Vec::new();
        for (i, c) in new.chunks(seg).enumerate() {
            all.extend(match_segment(&index, (i * seg) as u64, c).unwrap());
        }
        let g = gaps(&all, size as u64);
        let total: u64 = g.iter().map(|x| x.1).sum();
        let map = GapMap::new(&g, size as u64, &limits).unwrap();
        let fine_bs = BlockSize::fine_for_gaps(total, g.len() as u64);
        let fh = SignatureHeader::new(fine_bs, total);
        let fine_basis = map.gather(&base);
        let fine =
            DeltaIndex::build(&fh, &signature_blocks(&fine_basis, fine_bs), &limits).unwrap();
        let plan = SegmentHow::Refined(std::sync::Arc::new(Refined {
            matches: all,
            fine: Some((fine, map)),
        }));
        let mut rebuilt = Vec::new();
        let mut literal = 0;
        for (i, c) in new.chunks(seg).enumerate() {
            let (_, d, counts) = encode_segment(&plan, (i * seg) as u64, c.to_vec()).unwrap();
            literal += counts.literal;
            apply(&base, &d, &mut rebuilt, c.len()).unwrap();
        }
        assert_eq!(rebuilt, new);
        // With context windows, runs crossing segment boundaries are matched as one.
        let SegmentHow::Refined(r) = &plan else { unreachable!() };
        let (mut rebuilt, mut windowed) = (Vec::new(), 0);
        for (i, c) in new.chunks(seg).enumerate() {
            let (off, len) = ((i * seg) as u64, c.len() as u64);
            let (pre, post) = r.context(off, len, new.len() as u64, 1 << 20);
            let win = &new[(off - pre) as usize..(off + len + post) as usize];
            let (_, d, counts) = encode_refined(r, off - pre, win, off, len).unwrap();
            windowed += counts.literal;
            apply(&base, &d, &mut rebuilt, c.len()).unwrap();
        }
        assert_eq!(rebuilt, new);
        assert!(windowed <= literal, "{windowed} > {literal}");
        let changed = 20 * 4096 + 14;
        // The fine pass keeps the literal within ~1.5 fine blocks per change.
        assert!(literal < changed + 21 * 2 * u64::from(fine_bs.get()), "{literal} vs {changed}");
    }

    #[test]
    fn block_size_grows_with_file() {
        assert_eq!(BlockSize::for_len(0).get(), 512);
        assert!(BlockSize::for_len(1 << 30).get() >= 4096);
        assert!(BlockSize::for_len(1 << 40).get() <= 64 << 10);
    }
}
