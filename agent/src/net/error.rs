//! Why a network round failed, as one error type for the client, the server and the binary's
//! exit codes.

use ferry_transport::TransportError;

use super::protocol::Refusal;
use crate::round::driver::RoundError;
use crate::round::SyncError;

/// Why a network round failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The address or a flag is malformed.
    #[error("{0}")]
    Usage(String),
    /// Our credentials could not be loaded.
    #[error("loading credentials: {0}")]
    Identity(#[from] ferry_transport::tls::IdentityError),
    /// Connecting failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: TransportError,
    },
    /// The server refused the request.
    #[error("the server refused: {}", ferry_transport::printable(reason))]
    Refused {
        /// Why, as a code.
        code: Refusal,
        /// Why, for a person.
        reason: String,
    },
    /// No protocol version in common.
    #[error("protocol version mismatch: we speak {our_min}..={our_max}, the peer speaks {peer_min}..={peer_max}")]
    Version {
        /// Ours.
        our_min: u32,
        /// Ours.
        our_max: u32,
        /// Theirs.
        peer_min: u32,
        /// Theirs.
        peer_max: u32,
    },
    /// Opening the local side failed.
    #[error(transparent)]
    Local(#[from] SyncError),
    /// The round failed.
    #[error(transparent)]
    Round(#[from] RoundError),
    /// The remote shell command could not be started.
    #[error("starting the remote shell: {0}")]
    Rsh(std::io::Error),
    /// The round's files reached the destination, but it could not record the round (write
    /// its commit record or take its snapshot), so no point-in-time copy covers it.
    #[error("the destination did not record the round: {}", ferry_transport::printable(reason))]
    NotCommitted {
        /// Why, as the destination said.
        reason: String,
    },
    /// Another process is running a round of the module with the same state directory (a
    /// second `ferry pull --state-dir` of it, or a server sharing the directory).
    #[error(transparent)]
    StateBusy(#[from] crate::state::RoundBusy),
}

impl RemoteError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Connect { source, .. } => source.is_transient(),
            RemoteError::Round(RoundError::Link(e)) => e.is_transient(),
            RemoteError::Refused { code: Refusal::Busy, .. } => true,
            // The next round records everything again; a full disk may be freed meanwhile.
            RemoteError::NotCommitted { .. } | RemoteError::StateBusy(_) => true,
            _ => false,
        }
    }
}
