//! Block sizes and the signature header: what a signature's shape may be, chosen for a file
//! or checked when it comes from a peer.

use serde::{Deserialize, Serialize};

use super::{DeltaError, TWO_LEVEL_MIN};
use crate::limits::{LimitExceeded, Limits};

/// Strong-hash bytes per block in every signature Ferry sends (the whole MD4).
pub const HASH_SIZE: u8 = 16;
/// Weak-checksum bytes per block.
const CRC_SIZE: usize = 4;
/// Serialized bytes per signature block.
pub const BLOCK_SIG_LEN: usize = CRC_SIZE + HASH_SIZE as usize;
/// Smallest block size accepted from a peer.
pub const MIN_BLOCK: u32 = 64;
/// Largest block size accepted from a peer.
pub const MAX_BLOCK: u32 = 1 << 20;
/// Most blocks the destination signs a basis with, up to the largest block size (256 GiB).
pub const SIGNED_BLOCKS: u64 = 1 << 18;
/// Smallest coarse block (first pass of a two-level delta). A `Refine` is accepted only
/// against a signature of at least this block size.
pub const COARSE_MIN_BLOCK: u32 = 4 << 10;
/// Smallest fine block (second pass): the least the destination ever signs for a peer in a
/// fine signature.
pub const FINE_MIN_BLOCK: u32 = 128;

/// A validated signature block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockSize(u32);

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
    ///
    /// Blocks grow past those sizes (up to [`MAX_BLOCK`]) for bases over 4 GiB (one-level: a
    /// new file under 4 MiB) or 32 GiB (coarse) so a signature keeps to [`SIGNED_BLOCKS`]
    /// blocks (5 MiB) up to 256 GiB: a source holds every signature of the round against
    /// `Limits::max_signature_bytes`.
    pub fn for_basis(basis_len: u64, new_len: u64) -> BlockSize {
        let b = if basis_len >= TWO_LEVEL_MIN && new_len >= TWO_LEVEL_MIN {
            BlockSize::coarse_for_len(basis_len)
        } else {
            BlockSize::for_len(basis_len)
        };
        let floor = basis_len.div_ceil(SIGNED_BLOCKS).next_power_of_two().min(u64::from(MAX_BLOCK));
        BlockSize(b.0.max(floor as u32))
    }

    /// Block size of the coarse pass of a two-level delta: large, because the fine pass
    /// recovers the precision, so the first signature stays small (about 20 bytes per
    /// `2 * sqrt(len)` bytes of basis).
    pub fn coarse_for_len(len: u64) -> BlockSize {
        let b = ((len as f64).sqrt() as u64 * 2).max(1).next_power_of_two();
        BlockSize(b.clamp(u64::from(COARSE_MIN_BLOCK), 128 << 10) as u32)
    }

    /// Block size of the fine pass over `gap_bytes` of basis in `gaps` pieces: the same
    /// signature-vs-literal balance as [`BlockSize::for_len`], with one change per gap.
    pub fn fine_for_gaps(gap_bytes: u64, gaps: u64) -> BlockSize {
        let ideal = ((BLOCK_SIG_LEN as u64 * gap_bytes / gaps.max(1)) as f64).sqrt() as u64;
        // Nearest power of two (not next): the cost curve is flat near the optimum, and
        // rounding down keeps the literal cost of each change low.
        let up = ideal.max(1).next_power_of_two();
        let b = if up - ideal > ideal - up / 2 { up / 2 } else { up };
        BlockSize(b.clamp(u64::from(FINE_MIN_BLOCK), 4096) as u32)
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

    /// The signature `blocks` (made for this header) cut to whole blocks: a short last block
    /// is dropped and `basis_len` rounded down to a multiple of the block size. A block
    /// shorter than the block size would tell the peer about a few bytes of the destination
    /// (one byte's block is inverted by trying 256 values), so the destination never sends
    /// one; the source sends the tail of the file as literal data instead. `None` when not even
    /// one whole block is left.
    pub fn whole_blocks(self, mut blocks: Vec<u8>) -> Option<(SignatureHeader, Vec<u8>)> {
        let b = u64::from(self.block_size.get());
        let whole = self.basis_len / b;
        if whole == 0 {
            return None;
        }
        blocks.truncate(whole as usize * BLOCK_SIG_LEN);
        Some((SignatureHeader { basis_len: whole * b, ..self }, blocks))
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
