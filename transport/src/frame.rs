//! Async framing: a little-endian `u32` length, then a postcard body. The length is checked
//! against the receiver's limit before a byte of the body is buffered.

use ferry_core::message::DecodeError;
use ferry_core::{Limits, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TransportError;

/// Largest handshake frame (the request and response before a round starts).
pub const MAX_HANDSHAKE_FRAME: usize = 64 << 10;

/// Reads one frame's body; `None` on a clean end of stream between frames.
///
/// # Errors
/// A frame over `max`, a stream that ends mid-frame, or an I/O error.
pub async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, TransportError> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(TransportError::from_io(e)),
    }
    let len = u32::from_le_bytes(head) as usize;
    if len > max {
        return Err(TransportError::Frame(DecodeError::TooLarge(
            ferry_core::limits::LimitExceeded { what: "frame", limit: max as u64, got: len as u64 },
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(TransportError::from_io)?;
    Ok(Some(body))
}

/// Reads one [`Message`], enforcing `limits`.
///
/// # Errors
/// As [`read_body`], plus malformed messages.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
) -> Result<Option<Message>, TransportError> {
    match read_body(r, limits.max_frame).await? {
        None => Ok(None),
        Some(body) => {
            Ok(Some(ferry_core::message::decode(&body, limits).map_err(TransportError::Frame)?))
        }
    }
}

/// Writes one [`Message`] as a frame (not flushed).
///
/// # Errors
/// I/O errors.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
) -> Result<u64, TransportError> {
    let mut buf = Vec::new();
    ferry_core::message::write_frame(msg, &mut buf);
    w.write_all(&buf).await.map_err(TransportError::Io)?;
    Ok(buf.len() as u64)
}

/// Reads one handshake value (any serde type), bounded by [`MAX_HANDSHAKE_FRAME`].
///
/// # Errors
/// As [`read_body`]; a stream that ends before the value is [`TransportError::Closed`].
pub async fn read_value<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<T, TransportError> {
    let body = read_body(r, MAX_HANDSHAKE_FRAME).await?.ok_or(TransportError::Closed)?;
    postcard::from_bytes(&body).map_err(|e| TransportError::Frame(DecodeError::Malformed(e)))
}

/// Writes one handshake value and flushes.
///
/// # Errors
/// I/O errors.
pub async fn write_value<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    v: &T,
) -> Result<(), TransportError> {
    let body =
        postcard::to_allocvec(v).map_err(|e| TransportError::Frame(DecodeError::Malformed(e)))?;
    let mut buf = (body.len() as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(&body);
    w.write_all(&buf).await.map_err(TransportError::from_io)?;
    w.flush().await.map_err(TransportError::from_io)
}
