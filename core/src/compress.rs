//! zstd for literal data: skipped when a sample does not compress, bounded when decoding.

use std::io::Read;

use crate::limits::LimitExceeded;

/// Bytes sampled to decide whether a payload is worth compressing.
const SAMPLE: usize = 64 << 10;

/// Why a compressed payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The output would exceed the caller's cap.
    #[error(transparent)]
    TooLarge(#[from] LimitExceeded),
    /// The frame is not valid zstd, or needs a window beyond the limit.
    #[error("invalid zstd data: {0}")]
    Invalid(std::io::Error),
}

/// Compresses `data` at `level` when a sample shows it pays (at least 10% smaller).
///
/// Returns `None` when the data should travel raw.
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if data.len() < 64 || level == 0 {
        return None;
    }
    let sample = &data[..data.len().min(SAMPLE)];
    let probe = zstd::bulk::compress(sample, 1).ok()?;
    if probe.len() * 10 > sample.len() * 9 {
        return None;
    }
    let out = zstd::bulk::compress(data, level).ok()?;
    (out.len() < data.len()).then_some(out)
}

/// Decompresses `data`, refusing output beyond `cap` bytes or a window beyond `2^window_log`.
///
/// # Errors
/// [`DecompressError::TooLarge`] past the cap, [`DecompressError::Invalid`] on bad frames.
pub fn decompress(data: &[u8], cap: usize, window_log: u32) -> Result<Vec<u8>, DecompressError> {
    let mut dec = zstd::stream::read::Decoder::new(data).map_err(DecompressError::Invalid)?;
    dec.window_log_max(window_log).map_err(DecompressError::Invalid)?;
    // Read one byte past the cap so "exactly at the cap" and "over it" are told apart, and never
    // reserve more than the data can plausibly need up front.
    let mut out = Vec::with_capacity(cap.min(data.len().saturating_mul(4)));
    let n = dec.take(cap as u64 + 1).read_to_end(&mut out).map_err(DecompressError::Invalid)?;
    LimitExceeded::check("decompressed size", n as u64, cap as u64)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_compressible_data() {
        let text = b"log line: all is well\n".repeat(5000);
        let c = compress(&text, 3).expect("text compresses");
        assert!(c.len() < text.len() / 10);
        assert_eq!(decompress(&c, text.len(), 24).unwrap(), text);
    }

    #[test]
    fn skips_incompressible_data() {
        let mut x = 0x9E3779B97F4A7C15u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(&noise, 3).is_none());
    }

    #[test]
    fn refuses_output_past_the_cap() {
        let zeros = vec![0u8; 1 << 20];
        let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
        assert!(bomb.len() < 1000);
        match decompress(&bomb, 4096, 24) {
            Err(DecompressError::TooLarge(e)) => assert_eq!(e.limit, 4096),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(decompress(&bomb, 1 << 20, 24).unwrap().len(), 1 << 20);
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            decompress(b"not zstd at all", 100, 24),
            Err(DecompressError::Invalid(_))
        ));
    }
}
