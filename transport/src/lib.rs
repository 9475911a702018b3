//! Ferry's transports: how the [`Message`](ferry_core::Message)s of a round travel between
//! two agents.
//!
//! Today this crate holds the in-process channel `ferry sync` uses: the two sessions of a
//! round exchanging messages through memory, encoded and decoded exactly as they will be on a
//! network, so the local path exercises the same framing and limits. QUIC (quinn + rustls,
//! mutual TLS), TLS-over-TCP and stdio transports are the network issue's work and will live
//! here; the transport knows nothing about files.
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use ferry_core::message::{write_frame, DecodeError, FrameReader};
use ferry_core::{Limits, Message};

/// One direction of an in-memory link: messages go in framed and come out decoded, with the
/// receiver's limits enforced, as on a real wire.
#[derive(Debug)]
pub struct MemoryPipe {
    wire: Vec<u8>,
    reader: FrameReader,
    queued: VecDeque<Message>,
    bytes: u64,
}

impl MemoryPipe {
    /// A pipe whose receiving end enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        MemoryPipe {
            wire: Vec::new(),
            reader: FrameReader::new(limits),
            queued: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Sends a message.
    pub fn send(&mut self, msg: &Message) {
        self.wire.clear();
        write_frame(msg, &mut self.wire);
        self.bytes += self.wire.len() as u64;
        self.reader.feed(&self.wire);
    }

    /// Receives the next message, if any.
    ///
    /// # Errors
    /// [`DecodeError`] when a frame breaks the receiver's limits or does not decode.
    pub fn recv(&mut self) -> Result<Option<Message>, DecodeError> {
        if let Some(m) = self.queued.pop_front() {
            return Ok(Some(m));
        }
        self.reader.next_message()
    }

    /// Bytes that went through the pipe, framing included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
