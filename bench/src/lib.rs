//! `ferry-bench`: the workloads and pipeline steps shared by Ferry's criterion micro-benchmarks
//! (`benches/engine.rs`) and the `ferry-bench` binary.
//!
//! - [`Workload::generate`]: a seeded pseudo-random "old" file and a "new" version of it with
//!   scattered overwrites and short inserts that shift everything after them. The same seed
//!   gives the same bytes on every machine and for every thread count.
//!   [`Edits`] is that change plan on its own, applied as a stream, so the dataset generator
//!   mutates a file on disk into exactly the bytes [`Workload::generate`] would produce.
//! - [`sign`], [`diff_segments`], [`patch_segments_into`], [`hash_segments`]: the core delta
//!   pipeline cut the way the agent cuts it, one [`SEGMENT_LEN`] segment at a time, each
//!   diffed against one shared [`DeltaIndex`] of the whole basis. They use the current rayon
//!   pool, so callers choose the parallelism with `ThreadPool::install`.
//! - [`gen`]: the seeded dataset generator (`ferry-bench gen`: `mixed`, `mutate`, `many`).
//! - [`compare`]: Ferry and rsync side by side on those datasets (`ferry-bench compare`), with
//!   [`measure`] (CPU time and peak RSS of each process tree), [`tools`] (the command lines and
//!   their statistics) and [`report`] (table, JSON, markdown and SVG chart).
#![forbid(unsafe_code)]

pub mod compare;
mod every;
pub mod gen;
pub mod measure;
pub mod peers;
pub mod report;
pub mod rounds;
pub mod tools;
pub mod transport;

use std::io::{self, Read, Write};

use ferry_core::delta::{self, BlockSize, DeltaCounts, DeltaError, DeltaIndex, SignatureHeader};
use ferry_core::hash::{hash_segment, merge_segments, SegmentHash};
use ferry_core::rng::SplitMix64;
use ferry_core::segment::seg_len;
use ferry_core::{Limits, SEGMENT_LEN};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Random bytes are generated in independently seeded chunks of this size, in parallel: chunk
/// `i` of a stream depends only on the seed and `i` (see [`fill_random_chunk`]).
pub const RANDOM_CHUNK: usize = 1 << 20;

/// Fills `buf` (at most [`RANDOM_CHUNK`] bytes) with chunk `index` of the [`random_bytes`]
/// stream of `seed`, so a large file can be written chunk by chunk, in any order, without
/// holding it in memory.
pub fn fill_random_chunk(seed: u64, index: u64, buf: &mut [u8]) {
    debug_assert!(buf.len() <= RANDOM_CHUNK);
    let chunk_seed = SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
    SplitMix64::new(chunk_seed).fill(buf);
}

/// `len` pseudo-random bytes from `seed`, generated in parallel; the result does not depend on
/// the number of threads.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v.par_chunks_mut(RANDOM_CHUNK)
        .enumerate()
        .for_each(|(i, c)| fill_random_chunk(seed, i as u64, c));
    v
}

/// How the new version of a workload differs from the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutations {
    /// Number of in-place overwrites with fresh random bytes, one per equal stretch of the file
    /// (so they never overlap).
    pub overwrites: usize,
    /// Bytes per overwrite.
    pub overwrite_len: usize,
    /// Number of inserts of fresh random bytes at random offsets, each shifting the rest.
    pub inserts: usize,
    /// Shortest insert, bytes.
    pub insert_min: usize,
    /// Longest insert, bytes.
    pub insert_max: usize,
}

impl Mutations {
    /// The core issue's reference workload: 200 scattered 4 KiB overwrites and 10 inserts of
    /// 16..=64 bytes.
    pub const REFERENCE: Mutations = Mutations {
        overwrites: 200,
        overwrite_len: 4096,
        inserts: 10,
        insert_min: 16,
        insert_max: 64,
    };

    /// Smallest old-file size these mutations fit in (each overwrite gets a stretch of at least
    /// twice its length).
    pub fn min_len(&self) -> usize {
        self.overwrites * self.overwrite_len * 2
    }
}

/// An old file and its new version.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The old version: the destination's basis.
    pub old: Vec<u8>,
    /// The new version: what the source has.
    pub new: Vec<u8>,
    /// The mutations that turned `old` into `new`.
    pub mutations: Mutations,
    /// Bytes overwritten in place.
    pub overwritten_bytes: u64,
    /// Bytes inserted.
    pub inserted_bytes: u64,
}

impl Workload {
    /// Generates `len` random bytes from `seed` as the old version, and applies `mutations`
    /// (also drawn from `seed`, see [`Edits::plan`]) to make the new one.
    ///
    /// # Panics
    /// When `len < mutations.min_len()` or `insert_min > insert_max`.
    pub fn generate(len: usize, mutations: Mutations, seed: u64) -> Workload {
        let old = random_bytes(len, seed);
        let edits = Edits::plan(len as u64, mutations, seed);
        let mut new = Vec::with_capacity(edits.new_len(len as u64) as usize);
        // Reading a slice and writing a Vec cannot fail.
        edits.apply(&old[..], len as u64, &mut new).expect("in-memory apply");
        Workload {
            old,
            new,
            mutations,
            overwritten_bytes: edits.overwritten_bytes(),
            inserted_bytes: edits.inserted_bytes(),
        }
    }

    /// The changed-bytes reference figure: bytes overwritten plus bytes inserted. No delta can
    /// carry fewer literal bytes than this.
    pub fn changed_bytes(&self) -> u64 {
        self.overwritten_bytes + self.inserted_bytes
    }
}

/// A change plan for a file of known length: where the overwrites and inserts of a
/// [`Mutations`] land and which bytes they carry. It only needs the length, not the content, so
/// it can rewrite a file on disk as a stream (the dataset generator's big file) as well as a
/// buffer in memory ([`Workload::generate`]), with the same result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edits {
    /// In-place overwrites: (offset in the old version, new bytes), in increasing offset order
    /// and never overlapping.
    pub overwrites: Vec<(u64, Vec<u8>)>,
    /// Inserts: (offset in the old version, bytes inserted before that offset), in increasing
    /// offset order (draw order among equal offsets). An offset equal to the old length appends.
    pub inserts: Vec<(u64, Vec<u8>)>,
}

impl Edits {
    /// The edits `mutations` makes to a file of `len` bytes, drawn from `seed`.
    ///
    /// # Panics
    /// When `len < mutations.min_len()` or `insert_min > insert_max`.
    pub fn plan(len: u64, mutations: Mutations, seed: u64) -> Edits {
        let m = mutations;
        assert!(len >= m.min_len() as u64, "{len} bytes is too small for {m:?}");
        assert!(m.insert_min <= m.insert_max, "insert_min > insert_max in {m:?}");
        // The draw order (overwrite position, its bytes, ..., then insert position, length,
        // bytes) is what the reference figures in docs/ARCHITECTURE.md were measured with:
        // changing it changes every workload.
        let mut rng = SplitMix64::new(seed ^ 0x6D75_7461_7465);
        let mut overwrites = Vec::with_capacity(m.overwrites);
        if let Some(stretch) = len.checked_div(m.overwrites as u64) {
            for k in 0..m.overwrites as u64 {
                let at = k * stretch + rng.below(stretch - m.overwrite_len as u64 + 1);
                let mut bytes = vec![0; m.overwrite_len];
                rng.fill(&mut bytes);
                overwrites.push((at, bytes));
            }
        }
        let mut inserts: Vec<(u64, Vec<u8>)> = (0..m.inserts)
            .map(|_| {
                let at = rng.below(len + 1);
                let n = m.insert_min + rng.below((m.insert_max - m.insert_min + 1) as u64) as usize;
                let mut bytes = vec![0; n];
                rng.fill(&mut bytes);
                (at, bytes)
            })
            .collect();
        // Stable: inserts at the same offset keep their draw order.
        inserts.sort_by_key(|(at, _)| *at);
        Edits { overwrites, inserts }
    }

    /// Bytes overwritten in place.
    pub fn overwritten_bytes(&self) -> u64 {
        self.overwrites.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Bytes inserted.
    pub fn inserted_bytes(&self) -> u64 {
        self.inserts.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Length of the new version of a file of `old_len` bytes.
    pub fn new_len(&self, old_len: u64) -> u64 {
        old_len + self.inserted_bytes()
    }

    /// Reads the old version (`old_len` bytes) from `old` and writes the new version to `out`,
    /// a block at a time: first the overwrites, then the inserts, both at old-version offsets.
    ///
    /// # Errors
    /// I/O errors of `old` or `out`, including `old` ending before `old_len` bytes, and
    /// edits that do not fit `old_len` (a plan made for another length).
    pub fn apply<R: Read, W: Write>(&self, mut old: R, old_len: u64, mut out: W) -> io::Result<()> {
        const BLOCK: usize = 1 << 20;
        let fits = self.overwrites.iter().all(|(at, b)| at + b.len() as u64 <= old_len)
            && self.inserts.iter().all(|(at, _)| *at <= old_len);
        if !fits {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("edits do not fit a file of {old_len} bytes"),
            ));
        }
        let mut buf = vec![0u8; BLOCK.min(old_len as usize)];
        let (mut next_ow, mut next_ins) = (0, 0);
        let mut pos = 0u64;
        while pos < old_len {
            let n = (old_len - pos).min(BLOCK as u64) as usize;
            let end = pos + n as u64;
            let block = &mut buf[..n];
            old.read_exact(block)?;
            // Overwrites touching this block; one may continue into the next block, so it is
            // only passed over once it ends inside this one.
            while let Some((at, bytes)) = self.overwrites.get(next_ow) {
                if *at >= end {
                    break;
                }
                let stop = at + bytes.len() as u64;
                let (s, e) = ((*at).max(pos), stop.min(end));
                block[(s - pos) as usize..(e - pos) as usize]
                    .copy_from_slice(&bytes[(s - at) as usize..(e - at) as usize]);
                if stop > end {
                    break;
                }
                next_ow += 1;
            }
            let mut written = pos;
            while let Some((at, bytes)) = self.inserts.get(next_ins) {
                if *at >= end {
                    break;
                }
                out.write_all(&block[(written - pos) as usize..(at - pos) as usize])?;
                out.write_all(bytes)?;
                written = *at;
                next_ins += 1;
            }
            out.write_all(&block[(written - pos) as usize..])?;
            pos = end;
        }
        for (_, bytes) in &self.inserts[next_ins..] {
            out.write_all(bytes)?;
        }
        out.flush()
    }
}

/// A signed basis, as the destination computes it.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The header a destination sends.
    pub header: SignatureHeader,
    /// The signature blocks.
    pub blocks: Vec<u8>,
}

/// Signs `basis` with the block size the agent would choose for it (coarse blocks for a
/// two-level delta from [`delta::TWO_LEVEL_MIN`], else [`BlockSize::for_len`]), in the current
/// rayon pool.
pub fn sign(basis: &[u8]) -> Signed {
    let len = basis.len() as u64;
    let bs = if len >= delta::TWO_LEVEL_MIN {
        BlockSize::coarse_for_len(len)
    } else {
        BlockSize::for_len(len)
    };
    Signed {
        header: SignatureHeader::new(bs, basis.len() as u64),
        blocks: delta::signature_blocks(basis, bs),
    }
}

/// Indexes a signature for delta search, as the source does.
///
/// # Errors
/// When the signature exceeds the default [`Limits`].
pub fn index(signed: &Signed) -> Result<DeltaIndex, DeltaError> {
    DeltaIndex::build(&signed.header, &signed.blocks, &Limits::default())
}

/// Diffs `data` segment by segment ([`SEGMENT_LEN`]) against the shared `index`, in parallel in
/// the current rayon pool, as the agent's source does.
///
/// # Errors
/// When the delta engine refuses the index.
pub fn diff_segments(index: &DeltaIndex, data: &[u8]) -> Result<Vec<Vec<u8>>, DeltaError> {
    data.par_chunks(SEGMENT_LEN).map(|seg| index.diff(seg)).collect()
}

/// First pass of the two-level delta over `new`, segment by segment in parallel: the coarse
/// matches and the gaps of the basis they leave, as the source computes them.
///
/// # Errors
/// When the delta engine refuses the index.
pub fn coarse_pass(
    index: &DeltaIndex,
    new: &[u8],
    basis_len: u64,
) -> Result<CoarsePass, DeltaError> {
    let per: Vec<Vec<delta::Match>> = new
        .par_chunks(SEGMENT_LEN)
        .enumerate()
        .map(|(i, seg)| delta::match_segment(index, (i * SEGMENT_LEN) as u64, seg))
        .collect::<Result<_, _>>()?;
    let matches: Vec<delta::Match> = per.into_iter().flatten().collect();
    let gaps = delta::gaps(&matches, basis_len);
    Ok(CoarsePass { matches, gaps })
}

/// What the first pass of a two-level delta yields.
#[derive(Debug)]
pub struct CoarsePass {
    /// Coarse matches, sorted by offset in the new data.
    pub matches: Vec<delta::Match>,
    /// Basis ranges no match used.
    pub gaps: Vec<(u64, u64)>,
}

/// The destination's side of the second pass: the fine signature of the basis gaps.
///
/// # Errors
/// When the gaps exceed the default [`Limits`].
pub fn fine_signature(
    basis: &[u8],
    gaps: &[(u64, u64)],
) -> Result<(Signed, delta::GapMap), DeltaError> {
    let map = delta::GapMap::new(gaps, basis.len() as u64, &Limits::default())?;
    let bs = BlockSize::fine_for_gaps(map.len(), gaps.len() as u64);
    let fine = map.gather(basis);
    let signed = Signed {
        header: SignatureHeader::new(bs, fine.len() as u64),
        blocks: delta::signature_blocks(&fine, bs),
    };
    Ok((signed, map))
}

/// Second pass of the two-level delta: every segment of `new` as the delta the agent sends,
/// with unmatched runs diffed whole across segment boundaries, in parallel.
///
/// # Errors
/// When the delta engine refuses an index.
pub fn fine_pass(plan: &delta::Refined, new: &[u8]) -> Result<Vec<Vec<u8>>, DeltaError> {
    let n = new.len().div_ceil(SEGMENT_LEN);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let off = (i * SEGMENT_LEN) as u64;
            let len = seg_len(new.len() as u64, i as u64);
            let (pre, post) = plan.context(off, len, new.len() as u64, 1 << 20);
            let win = &new[(off - pre) as usize..(off + len + post) as usize];
            delta::encode_refined(plan, off - pre, win, off, len).map(|(_, d, _)| d)
        })
        .collect()
}

/// Sums the literal and matched bytes of `deltas`.
///
/// Returns `None` if one of them does not parse.
pub fn count_all(deltas: &[Vec<u8>]) -> Option<DeltaCounts> {
    deltas.iter().try_fold(DeltaCounts::default(), |acc, d| {
        let c = delta::count(d)?;
        Some(DeltaCounts { literal: acc.literal + c.literal, matched: acc.matched + c.matched })
    })
}

/// Empty output buffers for the segments of a file of `len` bytes, each with its segment's
/// capacity already written once, so a timed patch does not also time the kernel handing out
/// fresh pages.
pub fn segment_buffers(len: usize) -> Vec<Vec<u8>> {
    (0..len.div_ceil(SEGMENT_LEN))
        .into_par_iter()
        .map(|i| {
            let n = seg_len(len as u64, i as u64) as usize;
            let mut v = Vec::with_capacity(n);
            v.resize(n, 0xA5);
            v.clear();
            v
        })
        .collect()
}

/// Rebuilds a file of `len` bytes from `basis` and its per-segment `deltas` into `outs` (one
/// buffer per segment, cleared first), one segment per task in the current rayon pool, as the
/// agent's destination does: each segment is refused if it would grow past its length.
///
/// # Errors
/// When a delta is malformed or rebuilds the wrong length.
///
/// # Panics
/// When `outs` and `deltas` differ in length.
pub fn patch_segments_into(
    basis: &[u8],
    deltas: &[Vec<u8>],
    outs: &mut [Vec<u8>],
    len: usize,
) -> Result<(), DeltaError> {
    assert_eq!(deltas.len(), outs.len(), "one output buffer per segment delta");
    deltas.par_iter().zip(outs.par_iter_mut()).enumerate().try_for_each(|(i, (d, out))| {
        out.clear();
        delta::apply(basis, d, out, seg_len(len as u64, i as u64) as usize)
    })
}

/// [`patch_segments_into`] freshly allocated buffers.
///
/// # Errors
/// As [`patch_segments_into`].
pub fn patch_segments(
    basis: &[u8],
    deltas: &[Vec<u8>],
    len: usize,
) -> Result<Vec<Vec<u8>>, DeltaError> {
    let mut outs: Vec<Vec<u8>> = (0..deltas.len())
        .map(|i| Vec::with_capacity(seg_len(len as u64, i as u64) as usize))
        .collect();
    patch_segments_into(basis, deltas, &mut outs, len)?;
    Ok(outs)
}

/// The blake3 of the concatenation of `segments` (each [`SEGMENT_LEN`] long but the last),
/// hashed one segment per task in the current rayon pool and merged.
///
/// Returns `None` when the segments do not cut the file at [`SEGMENT_LEN`] boundaries.
pub fn hash_segments<S: AsRef<[u8]> + Sync>(segments: &[S]) -> Option<[u8; 32]> {
    let len: usize = segments.iter().map(|s| s.as_ref().len()).sum();
    let aligned = segments
        .iter()
        .enumerate()
        .all(|(i, s)| s.as_ref().len() as u64 == seg_len(len as u64, i as u64));
    if !aligned {
        return None;
    }
    let hashes: Vec<SegmentHash> = segments
        .par_iter()
        .enumerate()
        .map(|(i, s)| hash_segment(i as u64, s.as_ref(), len as u64))
        .collect();
    merge_segments(&hashes, len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic_and_counts_its_changes() {
        let m = Mutations { overwrites: 20, ..Mutations::REFERENCE };
        let a = Workload::generate(3 << 20, m, 42);
        let b = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool")
            .install(|| Workload::generate(3 << 20, m, 42));
        assert_eq!(a.old, b.old);
        assert_eq!(a.new, b.new);
        assert_eq!(a.new.len() as u64, a.old.len() as u64 + a.inserted_bytes);
        assert!((10 * 16..=10 * 64).contains(&a.inserted_bytes));
        assert_eq!(a.changed_bytes(), 20 * 4096 + a.inserted_bytes);
    }

    /// The workload as it was generated before [`Edits`] existed, kept as the reference the
    /// streaming application must reproduce byte for byte.
    fn reference_new(len: usize, m: Mutations, seed: u64) -> Vec<u8> {
        let old = random_bytes(len, seed);
        let mut rng = SplitMix64::new(seed ^ 0x6D75_7461_7465);
        let mut edited = old.clone();
        if let Some(stretch) = len.checked_div(m.overwrites) {
            for k in 0..m.overwrites {
                let at = k * stretch + rng.below((stretch - m.overwrite_len + 1) as u64) as usize;
                rng.fill(&mut edited[at..at + m.overwrite_len]);
            }
        }
        let mut inserts: Vec<(usize, Vec<u8>)> = (0..m.inserts)
            .map(|_| {
                let at = rng.below(len as u64 + 1) as usize;
                let n = m.insert_min + rng.below((m.insert_max - m.insert_min + 1) as u64) as usize;
                let mut bytes = vec![0; n];
                rng.fill(&mut bytes);
                (at, bytes)
            })
            .collect();
        inserts.sort_by_key(|(at, _)| *at);
        let mut new = Vec::new();
        let mut pos = 0;
        for (at, bytes) in &inserts {
            new.extend_from_slice(&edited[pos..*at]);
            new.extend_from_slice(bytes);
            pos = *at;
        }
        new.extend_from_slice(&edited[pos..]);
        new
    }

    #[test]
    fn streamed_edits_match_the_reference_workload() {
        // Sizes around the 1 MiB apply block, with overwrites and inserts on block boundaries
        // likely (many edits in little data), plus an append at the very end.
        for (len, seed) in [(3 << 20, 1), ((2 << 20) + 4097, 2), (600_000, 3), (1 << 20, 4)] {
            let m = Mutations { overwrites: 40, inserts: 30, ..Mutations::REFERENCE };
            let w = Workload::generate(len, m, seed);
            assert!(w.new == reference_new(len, m, seed), "len {len} seed {seed}");
        }
        // An insert at the old length appends; a plan for a longer file is refused.
        let len = 300_000u64;
        let mut edits = Edits::plan(len, Mutations { overwrites: 3, ..Mutations::REFERENCE }, 9);
        edits.inserts.push((len, b"tail".to_vec()));
        let old = random_bytes(len as usize, 9);
        let mut new = Vec::new();
        edits.apply(&old[..], len, &mut new).expect("apply");
        assert!(new.ends_with(b"tail"));
        assert_eq!(new.len() as u64, edits.new_len(len));
        edits.overwrites[0].0 = (1 << 20) - 10;
        assert!(edits.apply(&old[..], len, Vec::new()).is_err());
    }

    #[test]
    fn pipeline_rebuilds_the_new_version() {
        let w = Workload::generate(SEGMENT_LEN * 2 + 12345, Mutations::REFERENCE, 7);
        let signed = sign(&w.old);
        let ix = index(&signed).expect("index");
        let deltas = diff_segments(&ix, &w.new).expect("diff");
        let c = count_all(&deltas).expect("count");
        assert_eq!(c.literal + c.matched, w.new.len() as u64);
        assert!(c.literal >= w.changed_bytes());
        let rebuilt = patch_segments(&w.old, &deltas, w.new.len()).expect("patch");
        assert_eq!(hash_segments(&rebuilt), Some(*blake3::hash(&w.new).as_bytes()));
    }
}
