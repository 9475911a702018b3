//! Rounds between two agents: `ferry serve` (a destination, and a source for pulls) and
//! `ferry push` / `ferry pull`, over QUIC, TLS-over-TCP or a remote shell's stdio.
//!
//! ```text
//!   client.rs ──Request──▶ server.rs        protocol.rs: Request/Response, the handshake
//!      │      ◀─Response──    │             link.rs: a round's sessions over the link
//!      └────── link.rs ───────┘             bench.rs: `ferry bench --peer`
//!                                           choice.rs: which transport `auto` tries first
//!                                           group.rs: recording a consistency group
//! ```
//!
//! A connection starts with a [`Request`] (protocol versions, module, direction, options)
//! answered by a [`Response`]; then the round's sessions talk, one frame per message. What a
//! destination keeps between rounds is [`crate::state`]'s business: the server asks it.

mod bench;
mod choice;
mod client;
pub mod credentials;
mod error;
pub mod group;
mod link;
mod protocol;
mod server;
pub mod synth;

pub use bench::{run_bench, BenchReport, SyncBench};
pub use client::{connect, run_client, RemoteOptions, Via};
pub use error::RemoteError;
pub use protocol::{
    handshake, Access, Direction, Module, Refusal, Request, Response, Url, DEFAULT_PORT,
};
pub use server::{serve, serve_link, serve_watching, BusyHandle, Claim, ServeConfig};
