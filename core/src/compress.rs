//! zstd for literal data: skipped when a sample does not compress, bounded when decoding.

use std::cell::RefCell;
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

thread_local! {
    // zstd contexts are costly to create (a profile of an initial sync showed 5% of all CPU
    // in ZSTD_createCCtx/DCtx with one per segment); each worker thread keeps one of each.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<(u32, zstd::bulk::Decompressor<'static>)>> =
        const { RefCell::new(None) };
}

fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<T>,
) -> Option<T> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(level).ok();
        }
        let z = c.as_mut()?;
        z.set_compression_level(level).ok()?;
        f(z).ok()
    })
}

/// Compresses `data` at `level` when a sample shows it pays (at least 10% smaller).
///
/// Returns `None` when the data should travel raw.
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if data.len() < 64 || level == 0 {
        return None;
    }
    let sample = &data[..data.len().min(SAMPLE)];
    let probe = with_compressor(1, |z| z.compress(sample))?;
    if probe.len() * 10 > sample.len() * 9 {
        return None;
    }
    let out = with_compressor(level, |z| z.compress(data))?;
    (out.len() < data.len()).then_some(out)
}

/// Decompresses `data`, refusing output beyond `cap` bytes or a window beyond `2^window_log`.
///
/// # Errors
/// [`DecompressError::TooLarge`] past the cap, [`DecompressError::Invalid`] on bad frames.
pub fn decompress(data: &[u8], cap: usize, window_log: u32) -> Result<Vec<u8>, DecompressError> {
    // A frame that declares its size is refused before anything is allocated, and decoded in
    // one call into exactly that much room with this thread's context; ours always declare it.
    let declared = zstd::zstd_safe::get_frame_content_size(data).ok().flatten();
    let Some(n) = declared else { return decompress_streaming(data, cap, window_log) };
    LimitExceeded::check("decompressed size", n, cap as u64)?;
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.as_ref().is_none_or(|(w, _)| *w != window_log) {
            let mut z = zstd::bulk::Decompressor::new().map_err(DecompressError::Invalid)?;
            z.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(window_log))
                .map_err(DecompressError::Invalid)?;
            *d = Some((window_log, z));
        }
        let Some((_, z)) = d.as_mut() else { unreachable!("set above") };
        let mut out = Vec::with_capacity(n as usize);
        // More output than declared does not fit the room and fails here.
        z.decompress_to_buffer(data, &mut out).map_err(DecompressError::Invalid)?;
        Ok(out)
    })
}

/// Frames that hide their size: decoded as a stream, growing the output as it comes, one byte
/// past the cap at most (so "exactly at the cap" and "over it" are told apart).
fn decompress_streaming(
    data: &[u8],
    cap: usize,
    window_log: u32,
) -> Result<Vec<u8>, DecompressError> {
    let mut dec = zstd::stream::read::Decoder::new(data).map_err(DecompressError::Invalid)?;
    dec.window_log_max(window_log).map_err(DecompressError::Invalid)?;
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
        let noise = crate::rng::SplitMix64::bytes(0x9E37_79B9_7F4A_7C15, 100_000);
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
    fn frames_hiding_or_lying_about_their_size_stay_bounded() {
        let zeros = vec![0u8; 1 << 20];
        // A streamed frame does not declare its size.
        let hidden = zstd::stream::encode_all(&zeros[..], 19).unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&hidden).ok().flatten(), None);
        assert!(matches!(decompress(&hidden, 4096, 24), Err(DecompressError::TooLarge(_))));
        assert_eq!(decompress(&hidden, 1 << 20, 24).unwrap().len(), 1 << 20);
        // Two frames: the first declares 10 bytes, the second brings a megabyte more.
        let mut lying = zstd::bulk::compress(&zeros[..10], 3).unwrap();
        lying.extend_from_slice(&zstd::bulk::compress(&zeros, 3).unwrap());
        assert!(decompress(&lying, 1 << 21, 24).is_err());
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            decompress(b"not zstd at all", 100, 24),
            Err(DecompressError::Invalid(_))
        ));
    }
}
