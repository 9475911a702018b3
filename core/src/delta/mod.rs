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
//!
//! The error type, the per-segment encoding choice and the tests live here; the rest is split
//! by concern:
//! - `block`: block sizes and the signature header, validated before anything is allocated.
//! - `index`: signing a basis and indexing a peer's signature for delta search.
//! - `format`: the delta format itself: parsing, counting, encoding and applying ops.
//! - `two_level`: the coarse matches, the gaps around them and the fine pass over those gaps.

mod block;
mod format;
mod index;
mod two_level;

pub use block::{
    BlockSize, SignatureHeader, BLOCK_SIG_LEN, COARSE_MIN_BLOCK, FINE_MIN_BLOCK, HASH_SIZE,
    MAX_BLOCK, MIN_BLOCK, SIGNED_BLOCKS,
};
pub use format::{apply, count, encode, ops, DeltaCounts, Op};
pub use index::{signature_blocks, DeltaIndex};
pub use two_level::{
    encode_refined, gaps, match_segment, matches, GapMap, Match, Refined, TWO_LEVEL_MIN,
};

use crate::limits::LimitExceeded;

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
    /// A refinement asks for something the two-level protocol never produces: the signature of
    /// basis ranges that are not whole coarse blocks.
    #[error("refinement gap {gap} ({offset}+{len}) is not whole blocks of {block} bytes")]
    Refine {
        /// Index of the offending gap.
        gap: usize,
        /// Its offset in the basis.
        offset: u64,
        /// Its length.
        len: u64,
        /// The coarse block size it must be made of.
        block: u32,
    },
    /// fast_rsync refused the signature or the delta.
    #[error("delta engine: {0}")]
    Engine(String),
    /// Applying a delta failed (out-of-range copy, output past the announced size, bad op).
    #[error("patch refused: {0}")]
    Apply(#[from] fast_rsync::ApplyError),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

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

    /// A source holds every signature of a round against `Limits::max_signature_bytes`: the
    /// destination keeps an honest one to `SIGNED_BLOCKS` blocks up to 256 GiB, with the same
    /// block sizes as before up to 4 GiB.
    #[test]
    fn an_honest_signature_keeps_to_its_block_count() {
        const GIB: u64 = 1 << 30;
        for basis in [GIB, 16 * GIB, 40 * GIB, 100 * GIB, 256 * GIB, 1 << 40] {
            for new in [1 << 20, basis] {
                let b = u64::from(BlockSize::for_basis(basis, new).get());
                assert!(b.is_power_of_two() && b <= u64::from(MAX_BLOCK), "{basis} {new}: {b}");
                if basis <= 256 * GIB {
                    assert!(basis / b <= SIGNED_BLOCKS, "{basis} {new}: {} blocks", basis / b);
                }
            }
        }
        assert_eq!(BlockSize::for_basis(1 << 40, 1 << 40).get(), MAX_BLOCK);
        for basis in [0, 4096, 5 << 20, GIB, 4 * GIB] {
            for new in [100, basis] {
                let before = if basis >= TWO_LEVEL_MIN && new >= TWO_LEVEL_MIN {
                    BlockSize::coarse_for_len(basis)
                } else {
                    BlockSize::for_len(basis)
                };
                assert_eq!(BlockSize::for_basis(basis, new), before, "{basis} {new}");
            }
        }
    }
}
