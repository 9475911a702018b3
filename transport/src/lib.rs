//! Ferry's transports: how the [`Message`](ferry_core::Message)s of a round travel between
//! two agents. The transport knows nothing about files.
//!
//! ```text
//!   agent driver ── Link (reader, writer) ── frame (u32 length + postcard) ──┬─ QUIC (quinn)
//!                                                                            ├─ TLS 1.3 over TCP
//!                                                                            └─ stdio (remote shell)
//! ```
//!
//! - [`tls::Identity`]: the pair's CA plus this side's certificate; mutual TLS 1.3 only,
//!   ALPN `ferry/1`, no 0-RTT, client certificates required; the `ring` provider is the only
//!   one compiled in.
//! - [`net`]: a [`net::Server`] listening for QUIC and TLS-over-TCP on one port, and
//!   `connect_quic` / `connect_tcp` for clients.
//! - [`idle`]: the inactivity limit of TCP and stdio links (QUIC has its own).
//! - [`frame`]: length-prefixed frames, the length checked against the receiver's limit
//!   before the body is buffered.
//! - [`MemoryPipe`]: the in-process channel of `ferry sync`, framing included.
#![forbid(unsafe_code)]

pub mod frame;
pub mod idle;
pub mod lanes;
pub mod net;
pub mod tls;

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

/// Why a connection could not be made or broke.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Our own credentials are unusable.
    #[error(transparent)]
    Identity(#[from] tls::IdentityError),
    /// A certificate was refused, ours by the peer or the peer's by us.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The handshake failed for another reason (protocol, ALPN, configuration).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Nothing answered in time.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// The connection closed before the exchange was complete.
    #[error("connection closed by the peer")]
    Closed,
    /// A frame broke the limits or did not decode.
    #[error("bad frame: {0}")]
    Frame(DecodeError),
    /// A socket error.
    #[error("network: {0}")]
    Io(std::io::Error),
    /// An error with the peer it concerns.
    #[error("{peer}: {source}")]
    Peer {
        /// The peer's address.
        peer: String,
        /// The error.
        source: Box<TransportError>,
    },
}

/// A string from a peer made safe to print on one log line: control characters (newlines,
/// carriage returns, escape sequences) and Unicode line separators are shown escaped
/// (`\n`, `\u{1b}`), so a peer's refusal or abort reason cannot forge log lines or move the
/// terminal's cursor. Everything else is kept as is.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// TLS alerts that mean "your certificate was refused" (RFC 8446 section 6.2). 51
/// (decrypt_error) is what rustls sends for a certificate whose signature does not verify
/// (a CA of the same name but another key), or a bad CertificateVerify.
const AUTH_ALERTS: [u8; 9] = [42, 43, 44, 45, 46, 48, 49, 51, 116];

impl TransportError {
    /// Tags the error with the peer it concerns.
    pub fn with_peer(self, peer: &str) -> TransportError {
        TransportError::Peer { peer: peer.to_string(), source: Box::new(self) }
    }

    /// The error without its peer tag.
    pub fn root(&self) -> &TransportError {
        match self {
            TransportError::Peer { source, .. } => source.root(),
            e => e,
        }
    }

    /// Whether retrying later may succeed (network trouble, not a refusal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.root(),
            TransportError::Timeout(_) | TransportError::Closed | TransportError::Io(_)
        )
    }

    /// Whether this is an authentication failure.
    pub fn is_auth(&self) -> bool {
        matches!(self.root(), TransportError::Auth(_))
    }

    /// Classifies a quinn connection error.
    pub fn from_quic(e: quinn::ConnectionError) -> TransportError {
        use quinn::ConnectionError as C;
        let crypto_alert = |code: quinn::TransportErrorCode| {
            let v = u64::from(code);
            (0x100..0x200).contains(&v).then(|| (v - 0x100) as u8)
        };
        match e {
            C::TransportError(t) => match crypto_alert(t.code) {
                Some(a) if AUTH_ALERTS.contains(&a) || t.reason.contains("certificate") => {
                    TransportError::Auth(t.reason)
                }
                _ => TransportError::Handshake(t.to_string()),
            },
            C::ConnectionClosed(c) => match crypto_alert(c.error_code) {
                Some(a) if AUTH_ALERTS.contains(&a) => TransportError::Auth(format!(
                    "the peer refused the TLS handshake ({}, alert {a})",
                    alert_name(a)
                )),
                Some(a) => TransportError::Handshake(format!("TLS alert {a} from the peer")),
                None => TransportError::Handshake(c.to_string()),
            },
            C::TimedOut => TransportError::Timeout("QUIC connection (idle timeout)"),
            C::Reset | C::LocallyClosed | C::ApplicationClosed(_) => TransportError::Closed,
            other => TransportError::Handshake(other.to_string()),
        }
    }

    /// Classifies an I/O error of an established link: a TLS alert from the peer about our
    /// certificate (TLS 1.3 delivers the server's verdict on the client's certificate with
    /// the first read after the handshake) or a QUIC connection closed by the peer with one
    /// is an authentication failure; anything else stays an I/O error.
    pub fn from_io(e: std::io::Error) -> TransportError {
        if let Some(inner) = e.get_ref() {
            if inner.downcast_ref::<rustls::Error>().is_some() {
                return TransportError::from_tls_io(e);
            }
            let lost = if let Some(quinn::ReadError::ConnectionLost(c)) = inner.downcast_ref() {
                Some(c.clone())
            } else if let Some(quinn::WriteError::ConnectionLost(c)) = inner.downcast_ref() {
                Some(c.clone())
            } else {
                None
            };
            if let Some(c) = lost {
                return match TransportError::from_quic(c) {
                    TransportError::Handshake(_) => TransportError::Io(e),
                    other => other,
                };
            }
        }
        TransportError::Io(e)
    }

    /// Classifies an error from a rustls stream (TLS over TCP).
    pub fn from_tls_io(e: std::io::Error) -> TransportError {
        let msg = e.to_string();
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    TransportError::Auth(tls.to_string())
                }
                rustls::Error::AlertReceived(a) => {
                    let code = u8::from(*a);
                    if AUTH_ALERTS.contains(&code) {
                        TransportError::Auth(format!(
                            "the peer refused the TLS handshake ({}, alert {code})",
                            alert_name(code)
                        ))
                    } else {
                        TransportError::Handshake(tls.to_string())
                    }
                }
                _ => TransportError::Handshake(tls.to_string()),
            };
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                TransportError::Handshake(format!(
                    "the peer closed the connection during the TLS handshake ({msg})"
                ))
            }
            _ => TransportError::Io(e),
        }
    }
}

fn alert_name(a: u8) -> &'static str {
    match a {
        42 => "bad certificate",
        43 => "unsupported certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        49 => "access denied",
        51 => "bad signature",
        116 => "certificate required",
        _ => "alert",
    }
}
