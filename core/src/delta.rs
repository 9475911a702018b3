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

/// Counts literal and matched bytes of a well-formed delta (as produced by [`DeltaIndex::diff`]).
///
/// Returns `None` for a delta that does not parse.
pub fn count(delta: &[u8]) -> Option<DeltaCounts> {
    let mut c = DeltaCounts::default();
    let mut rest = delta.strip_prefix(&0x7273_0236u32.to_be_bytes())?;
    loop {
        let (&op, tail) = rest.split_first()?;
        rest = tail;
        match op {
            0 => return rest.is_empty().then_some(c),
            1..=0x40 => {
                let n = usize::from(op);
                c.literal += n as u64;
                rest = rest.get(n..)?;
            }
            0x41..=0x44 => {
                let w = 1usize << (op - 0x41);
                let n = be(rest.get(..w)?);
                rest = rest.get(w..)?;
                c.literal += n;
                rest = rest.get(usize::try_from(n).ok()?..)?;
            }
            0x45..=0x54 => {
                let k = op - 0x45;
                let (ow, lw) = (1usize << (k / 4), 1usize << (k % 4));
                let n = be(rest.get(ow..ow + lw)?);
                rest = rest.get(ow + lw..)?;
                c.matched += n;
            }
            _ => return None,
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
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
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
    fn block_size_grows_with_file() {
        assert_eq!(BlockSize::for_len(0).get(), 512);
        assert!(BlockSize::for_len(1 << 30).get() >= 4096);
        assert!(BlockSize::for_len(1 << 40).get() <= 64 << 10);
    }
}
