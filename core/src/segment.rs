//! One segment on the wire: how the source encodes it and how the destination rebuilds it.
//!
//! A segment is [`SEGMENT_LEN`] bytes of a file (the last one shorter). The source sends it as
//! a [`Payload`] (the bytes themselves, or a delta against the destination's basis), optionally
//! zstd-compressed ([`Encoding`]). The destination undoes both and checks that exactly the
//! announced number of bytes came out; only then is the segment hashed and written. Everything
//! here is pure: no files, no sessions, so both the agent and the session tests' fake
//! filesystems rebuild segments with the same code, and the fuzzer can reach all of it.
//!
//! A [`Payload::Kept`] segment carries nothing to rebuild: the destination already holds it
//! from an interrupted round and reads it back itself; [`rebuild`] refuses it.

use crate::compress::{self, DecompressError};
use crate::delta::{self, DeltaCounts, DeltaError, Refined, SegmentHow};
use crate::limits::Limits;
use crate::message::{Encoding, Payload};
use crate::SEGMENT_LEN;

/// Length of segment `index` of a file of `file_len` bytes: [`SEGMENT_LEN`], less for the last
/// segment, 0 past the end.
pub fn seg_len(file_len: u64, index: u64) -> u64 {
    file_len.saturating_sub(index.saturating_mul(SEGMENT_LEN as u64)).min(SEGMENT_LEN as u64)
}

/// Why a segment could not be encoded or rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The delta engine refused to diff the segment (only for an index that was validated
    /// already, so a bug rather than bad input).
    #[error("encoding the segment: {0}")]
    Encode(DeltaError),
    /// The compressed payload is not valid zstd, needs too large a window, or would
    /// decompress past its cap (the segment's length, or the delta limit).
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    /// A delta arrived for a file the destination opened no basis for.
    #[error("delta without a basis")]
    NoBasis,
    /// The delta is malformed, copies outside the basis, or rebuilds more than announced.
    #[error(transparent)]
    Apply(DeltaError),
    /// The rebuilt bytes are not as many as the segment's announced length.
    #[error("segment rebuilt to {got} bytes, {want} announced")]
    Length {
        /// Bytes rebuilt.
        got: usize,
        /// Bytes announced (the segment's length in the manifest's file size).
        want: usize,
    },
    /// [`Payload::Kept`] carries no data: the destination reads the segment back from the
    /// partial file of the interrupted round instead.
    #[error("a kept segment has no data to rebuild")]
    Kept,
}

/// A segment as the source sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Literal bytes or a delta.
    pub payload: Payload,
    /// Whether `data` is zstd-compressed.
    pub encoding: Encoding,
    /// What goes on the wire.
    pub data: Vec<u8>,
    /// Literal and matched bytes of the segment (before compression).
    pub counts: DeltaCounts,
}

/// Compresses the `raw` payload at zstd `level` when that pays (see [`compress::compress`];
/// level 0 never compresses).
pub fn pack(payload: Payload, raw: Vec<u8>, counts: DeltaCounts, level: i32) -> Encoded {
    let (encoding, data) = match compress::compress(&raw, level) {
        Some(c) => (Encoding::Zstd, c),
        None => (Encoding::Raw, raw),
    };
    Encoded { payload, encoding, data, counts }
}

/// Encodes the segment `data`, which starts at `offset` in the new file, the way `how` says,
/// and compresses it at `level`.
///
/// # Errors
/// [`SegmentError::Encode`] only if the delta engine refuses an (already validated) index.
pub fn encode(
    how: &SegmentHow,
    offset: u64,
    data: Vec<u8>,
    level: i32,
) -> Result<Encoded, SegmentError> {
    let (payload, raw, counts) =
        delta::encode_segment(how, offset, data).map_err(SegmentError::Encode)?;
    Ok(pack(payload, raw, counts, level))
}

/// [`encode`] for the second pass of a two-level delta, given a `window` of the new file
/// starting at `window_offset` around the segment `offset..offset+len` (see
/// [`Refined::context`]).
///
/// # Errors
/// [`SegmentError::Encode`] only if the delta engine refuses the (already validated) index.
pub fn encode_refined(
    plan: &Refined,
    window_offset: u64,
    window: &[u8],
    offset: u64,
    len: u64,
    level: i32,
) -> Result<Encoded, SegmentError> {
    let (payload, raw, counts) = delta::encode_refined(plan, window_offset, window, offset, len)
        .map_err(SegmentError::Encode)?;
    Ok(pack(payload, raw, counts, level))
}

/// A rebuilt segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The segment's bytes, exactly as many as announced.
    pub data: Vec<u8>,
    /// How many of them were copied from the basis (0 for a literal).
    pub matched: u64,
}

/// Undoes the [`Encoding`] of a received payload, never producing more than its cap: `len`
/// (the segment's announced length) for a literal, [`Limits::segment_payload_cap`] of `len` for
/// a delta, with zstd windows up to [`Limits::max_zstd_window_log`].
///
/// # Errors
/// [`SegmentError::Kept`] for a kept segment, [`SegmentError::Decompress`] for a payload that
/// is not valid zstd or exceeds its cap.
pub fn unpack(
    payload: Payload,
    encoding: Encoding,
    data: Vec<u8>,
    len: usize,
    limits: &Limits,
) -> Result<Vec<u8>, SegmentError> {
    let cap = match payload {
        Payload::Literal => len,
        Payload::Delta => limits.segment_payload_cap(Payload::Delta, len as u64) as usize,
        Payload::Kept => return Err(SegmentError::Kept),
    };
    match encoding {
        Encoding::Raw => Ok(data),
        Encoding::Zstd => Ok(compress::decompress(&data, cap, limits.max_zstd_window_log)?),
    }
}

/// Checks that a segment came out at its announced length.
///
/// # Errors
/// [`SegmentError::Length`] when `got != want`.
pub fn check_len(got: usize, want: usize) -> Result<(), SegmentError> {
    if got == want {
        Ok(())
    } else {
        Err(SegmentError::Length { got, want })
    }
}

/// Rebuilds a received segment of announced length `len`: decompresses it ([`unpack`]),
/// applies a delta to `basis` (the destination's old file, whole), and checks the length.
/// Nothing it returns is trusted yet: the caller still hashes it against the source's.
///
/// # Errors
/// Any [`SegmentError`] but `Encode`: the peer's data is bad (or a delta came with no basis).
pub fn rebuild(
    payload: Payload,
    encoding: Encoding,
    data: Vec<u8>,
    len: usize,
    basis: Option<&[u8]>,
    limits: &Limits,
) -> Result<Rebuilt, SegmentError> {
    let raw = unpack(payload, encoding, data, len, limits)?;
    let rebuilt = match payload {
        Payload::Delta => {
            let basis = basis.ok_or(SegmentError::NoBasis)?;
            // Capped at `len`: a delta that would build more stops there, before allocating.
            let mut out = Vec::with_capacity(len);
            delta::apply(basis, &raw, &mut out, len).map_err(SegmentError::Apply)?;
            let matched = delta::count(&raw).map_or(0, |c| c.matched);
            Rebuilt { data: out, matched }
        }
        _ => Rebuilt { data: raw, matched: 0 },
    };
    check_len(rebuilt.data.len(), len)?;
    Ok(rebuilt)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::delta::{BlockSize, DeltaIndex, SignatureHeader};
    use crate::rng::SplitMix64;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn seg_len_cuts_the_last_segment_and_is_zero_past_the_end() {
        let s = SEGMENT_LEN as u64;
        assert_eq!(seg_len(0, 0), 0);
        assert_eq!(seg_len(10, 0), 10);
        assert_eq!(seg_len(2 * s + 5, 1), s);
        assert_eq!(seg_len(2 * s + 5, 2), 5);
        assert_eq!(seg_len(2 * s + 5, 3), 0);
        assert_eq!(seg_len(u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn literals_round_trip_raw_and_compressed() {
        let text = b"a line of a log file\n".repeat(1000);
        let noise = SplitMix64::bytes(1, 10_000);
        for (data, level, encoding) in
            [(&text, 3, Encoding::Zstd), (&text, 0, Encoding::Raw), (&noise, 3, Encoding::Raw)]
        {
            let e = encode(&SegmentHow::Literal, 0, data.clone(), level).unwrap();
            assert_eq!((e.payload, e.encoding), (Payload::Literal, encoding));
            assert_eq!(e.counts, DeltaCounts { literal: data.len() as u64, matched: 0 });
            let r = rebuild(e.payload, e.encoding, e.data, data.len(), None, &limits()).unwrap();
            assert_eq!(r, Rebuilt { data: data.clone(), matched: 0 });
        }
    }

    /// The fuzz campaign's `segment` input (fuzz/CAMPAIGN.md): a short literal at the zstd
    /// levels whose optimal parser an AddressSanitizer build of zstd flagged. Every level
    /// encodes it and rebuilds it exactly.
    #[test]
    fn a_short_literal_round_trips_at_every_zstd_level() {
        let mut body = b"rs\x026\x01".to_vec();
        body.resize(56, 0);
        body[29] = 0x40;
        body.push(0x40);
        for data in [body, b"a line of a log file\n".repeat(3)] {
            for level in 0..=19 {
                let e = encode(&SegmentHow::Literal, 0, data.clone(), level).unwrap();
                let r = rebuild(e.payload, e.encoding, e.data, data.len(), None, &limits());
                assert_eq!(r.unwrap().data, data, "level {level}");
            }
        }
    }

    #[test]
    fn deltas_round_trip_against_their_basis() {
        let basis = SplitMix64::bytes(2, 64 << 10);
        let mut new = basis.clone();
        new[1000..1100].copy_from_slice(&SplitMix64::bytes(3, 100));
        let bs = BlockSize::new(1024).unwrap();
        let header = SignatureHeader::new(bs, basis.len() as u64);
        let blocks = delta::signature_blocks(&basis, bs);
        let index = DeltaIndex::build(&header, &blocks, &limits()).unwrap();
        let e = encode(&SegmentHow::Delta(Arc::new(index)), 0, new.clone(), 3).unwrap();
        assert_eq!(e.payload, Payload::Delta);
        assert!(e.counts.matched >= 60 << 10, "{:?}", e.counts);
        let (p, enc) = (e.payload, e.encoding);
        let r = rebuild(p, enc, e.data.clone(), new.len(), Some(&basis), &limits()).unwrap();
        assert_eq!(r.data, new);
        assert_eq!(r.matched, e.counts.matched);
        // No basis, or the wrong length announced, is refused.
        let no_basis = rebuild(p, enc, e.data.clone(), new.len(), None, &limits());
        assert!(matches!(no_basis, Err(SegmentError::NoBasis)));
        let short = rebuild(p, enc, e.data.clone(), new.len() - 1, Some(&basis), &limits());
        assert!(matches!(short, Err(SegmentError::Apply(_))), "{short:?}");
        let long = rebuild(p, enc, e.data, new.len() + 1, Some(&basis), &limits());
        assert!(
            matches!(long, Err(SegmentError::Length { got, want }) if got + 1 == want),
            "{long:?}"
        );
    }

    #[test]
    fn hostile_payloads_are_refused() {
        let l = limits();
        // A literal longer or shorter than announced.
        let r = rebuild(Payload::Literal, Encoding::Raw, vec![0; 11], 10, None, &l);
        assert!(matches!(r, Err(SegmentError::Length { got: 11, want: 10 })));
        // A zstd bomb is stopped at the segment's length.
        let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).unwrap();
        let r = rebuild(Payload::Literal, Encoding::Zstd, bomb, 4096, None, &l);
        assert!(matches!(r, Err(SegmentError::Decompress(DecompressError::TooLarge(_)))));
        // Garbage zstd, a garbage delta, and a kept segment.
        let r = rebuild(Payload::Literal, Encoding::Zstd, b"nope".to_vec(), 4, None, &l);
        assert!(matches!(r, Err(SegmentError::Decompress(DecompressError::Invalid(_)))));
        let r = rebuild(Payload::Delta, Encoding::Raw, b"nope".to_vec(), 4, Some(b"abcd"), &l);
        assert!(matches!(r, Err(SegmentError::Apply(_))));
        let r = rebuild(Payload::Kept, Encoding::Raw, Vec::new(), 4, None, &l);
        assert!(matches!(r, Err(SegmentError::Kept)));
    }
}
