//! [`Limits`]: every bound on what a peer can make us allocate, in one place.

use serde::{Deserialize, Serialize};

/// Bounds checked before any allocation a peer's bytes drive.
///
/// Defaults suit a volume replica; both sides enforce their own limits on what they receive,
/// whatever the peer announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest encoded message (frame) accepted.
    pub max_frame: usize,
    /// Most entries in one manifest batch.
    pub max_batch_entries: usize,
    /// Most blocks in one file's signature.
    pub max_signature_blocks: u64,
    /// Largest delta for one segment, in bytes (a segment delta is at most its literal data
    /// plus framing).
    pub max_delta_segment: usize,
    /// Largest decompressed payload of one segment.
    pub max_segment_output: usize,
    /// Largest zstd window accepted, as a power of two (`windowLog`).
    pub max_zstd_window_log: u32,
    /// Most extended attributes per entry.
    pub max_xattrs: usize,
    /// Largest extended attribute value.
    pub max_xattr_value: usize,
    /// Largest symlink target.
    pub max_link_target: usize,
    /// Most gaps in one refinement request (second pass of a two-level delta).
    pub max_refine_gaps: usize,
    /// Most basis bytes one refinement may ask the destination to gather and sign.
    pub max_refine_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 16 << 20,
            max_batch_entries: 4096,
            // 1 TiB at the smallest block size we ever choose for big files.
            max_signature_blocks: 1 << 24,
            max_delta_segment: crate::SEGMENT_LEN + (1 << 16),
            max_segment_output: crate::SEGMENT_LEN,
            max_zstd_window_log: 24,
            max_xattrs: 256,
            max_xattr_value: 64 << 10,
            max_link_target: 4096,
            max_refine_gaps: 1 << 20,
            max_refine_bytes: 256 << 20,
        }
    }
}

/// A peer-driven size or count beyond its [`Limits`] bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} of {got} exceeds the limit of {limit}")]
pub struct LimitExceeded {
    /// What was being bounded.
    pub what: &'static str,
    /// The bound.
    pub limit: u64,
    /// What the peer asked for.
    pub got: u64,
}

impl LimitExceeded {
    /// `Ok` if `got <= limit`.
    ///
    /// # Errors
    /// [`LimitExceeded`] naming `what` otherwise.
    pub fn check(what: &'static str, got: u64, limit: u64) -> Result<(), LimitExceeded> {
        if got > limit {
            Err(LimitExceeded { what, limit, got })
        } else {
            Ok(())
        }
    }
}
