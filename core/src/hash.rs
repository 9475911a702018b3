//! Whole-file blake3, computed in independent segments so large files hash in parallel.
//!
//! A file is cut into [`SEGMENT_LEN`](crate::SEGMENT_LEN) pieces (a power of two, so each full
//! segment is a complete BLAKE3 subtree). Each segment yields a chaining value on its own; the
//! chaining values merge into exactly `blake3::hash(file)`, the value `b3sum` prints.

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::SEGMENT_LEN;

/// The hash of one segment: a root hash when the file is a single segment, else a chaining value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHash(pub [u8; 32]);

/// Hashes segment `index` of a file of `file_len` bytes. `data` must be that whole segment.
pub fn hash_segment(index: u64, data: &[u8], file_len: u64) -> SegmentHash {
    let mut h = blake3::Hasher::new();
    if file_len <= SEGMENT_LEN as u64 {
        // A single-segment file has no tree above it: its hash is the root.
        if data.len() >= 128 << 10 {
            h.update_rayon(data);
        } else {
            h.update(data);
        }
        return SegmentHash(*h.finalize().as_bytes());
    }
    h.set_input_offset(index * SEGMENT_LEN as u64);
    h.update(data);
    SegmentHash(h.finalize_non_root())
}

/// Merges the segment hashes of a file of `file_len` bytes into its blake3.
///
/// Returns `None` when the number of segments does not match `file_len`.
pub fn merge_segments(segments: &[SegmentHash], file_len: u64) -> Option<[u8; 32]> {
    let n = segment_count(file_len);
    if segments.len() as u64 != n {
        return None;
    }
    if n <= 1 {
        return segments.first().map(|s| s.0).or(Some(*blake3::hash(b"").as_bytes()));
    }
    let cvs: Vec<ChainingValue> = segments.iter().map(|s| s.0).collect();
    let (l, r) = split(&cvs, file_len);
    Some(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
}

/// Number of segments in a file of `len` bytes (an empty file has none).
pub fn segment_count(len: u64) -> u64 {
    len.div_ceil(SEGMENT_LEN as u64)
}

/// Splits a subtree covering `len` bytes (`len > SEGMENT_LEN`) the way BLAKE3 does and returns
/// the left and right child chaining values.
fn split(cvs: &[ChainingValue], len: u64) -> (ChainingValue, ChainingValue) {
    let left_len = blake3::hazmat::left_subtree_len(len);
    let left_n = (left_len / SEGMENT_LEN as u64) as usize;
    (subtree(&cvs[..left_n], left_len), subtree(&cvs[left_n..], len - left_len))
}

fn subtree(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (l, r) = split(cvs, len);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segmented(data: &[u8]) -> [u8; 32] {
        let len = data.len() as u64;
        let segs: Vec<SegmentHash> = data
            .chunks(SEGMENT_LEN)
            .enumerate()
            .map(|(i, c)| hash_segment(i as u64, c, len))
            .collect();
        merge_segments(&segs, len).unwrap()
    }

    #[test]
    fn equals_plain_blake3_at_segment_boundaries() {
        let s = SEGMENT_LEN;
        let big: Vec<u8> = (0..(5 * s + 7)).map(|i| (i * 31 % 251) as u8).collect();
        for len in [0, 1, 1024, s - 1, s, s + 1, 2 * s, 3 * s - 1, 3 * s + 5, 4 * s, 5 * s + 7] {
            let d = &big[..len];
            assert_eq!(segmented(d), *blake3::hash(d).as_bytes(), "len {len}");
        }
    }

    #[test]
    fn wrong_segment_count_is_refused() {
        assert!(merge_segments(&[], 10).is_none());
        assert!(merge_segments(&[SegmentHash([0; 32])], SEGMENT_LEN as u64 + 1).is_none());
    }
}
