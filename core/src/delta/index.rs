//! Signing a basis in parallel, and a peer's signature indexed for delta search.

use rayon::prelude::*;

use super::{BlockSize, DeltaError, SignatureHeader, BLOCK_SIG_LEN, HASH_SIZE};
use crate::limits::Limits;

/// fast_rsync's magic for an MD4 signature; peers send only the blocks, so it is put back here.
const MD4_MAGIC: u32 = 0x7273_0136;

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
