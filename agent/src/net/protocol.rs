//! The handshake: the client's [`Request`] (protocol versions, module, direction, round
//! options) and the server's [`Response`], written once for every kind of client, plus the
//! names both sides use for modules and addresses.

use std::path::PathBuf;
use std::time::Duration;

use ferry_core::message::{PROTOCOL_MIN, PROTOCOL_VERSION};
use ferry_transport::frame::{read_value, write_value};
use ferry_transport::lanes::DATA_LANES;
use ferry_transport::net::Link;
use ferry_transport::TransportError;
use serde::{Deserialize, Serialize};

use super::RemoteError;
use crate::round::RoundOptions;

/// Which way data moves, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// The client is the source; the server's module is the destination.
    Push,
    /// The server's module is the source; the client is the destination.
    Pull,
    /// No files: measure the link (`ferry bench --peer`). The module only authorizes it.
    Bench,
    /// No files: record a consistency group's generation (the request's `module` is the
    /// group's name; see [`super::group`]). Protocol 6 and newer.
    Group,
}

/// First frame from the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Oldest protocol version the client speaks.
    pub version_min: u32,
    /// Newest protocol version the client speaks.
    pub version_max: u32,
    /// The module to push into or pull from.
    pub module: String,
    /// Push or pull.
    pub direction: Direction,
    /// Round options.
    pub options: RoundOptions,
    /// Data streams the client offers to open beside the control stream (QUIC only; 0 on
    /// TCP and stdio, where a second stream would share the same byte order anyway).
    pub lanes: u8,
}

/// Why a server refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// No protocol version in common.
    Version,
    /// No module of that name.
    UnknownModule,
    /// The module does not accept pushes (`:ro`).
    ReadOnly,
    /// The module does not serve pulls (`:wo`).
    WriteOnly,
    /// A round is already running on the module.
    Busy,
    /// The request itself is invalid.
    BadRequest,
    /// The server failed to open the module.
    ServerError,
}

/// The server's answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Go ahead with this protocol version.
    Accepted {
        /// The version both speak.
        version: u32,
        /// Data streams the round uses (at most what the client offered).
        lanes: u8,
    },
    /// Refused.
    Refused {
        /// Why, as a code.
        code: Refusal,
        /// Why, for a person.
        reason: String,
        /// The server's protocol range (for version errors).
        server_min: u32,
        /// The server's protocol range (for version errors).
        server_max: u32,
    },
}

/// What peers may do with a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Push and pull.
    ReadWrite,
    /// Pull only.
    ReadOnly,
    /// Push only.
    WriteOnly,
    /// Push only, and nothing of what is there is signed or hashed for the peer: every
    /// changed file is sent whole (`:wo-whole`).
    WriteOnlyWhole,
}

impl Access {
    /// Whether peers may only push (`:wo` and `:wo-whole`).
    pub fn push_only(self) -> bool {
        matches!(self, Access::WriteOnly | Access::WriteOnlyWhole)
    }
}

/// A directory a server offers under a name.
#[derive(Debug, Clone)]
pub struct Module {
    /// The name clients use.
    pub name: String,
    /// The directory.
    pub path: PathBuf,
    /// What peers may do.
    pub access: Access,
}

impl Module {
    /// Parses `NAME=DIR[:ro|:wo|:wo-whole|:rw]`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(s: &str) -> Result<Module, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=DIR[:ro|:wo|:wo-whole]"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!("{name:?}: a module name is letters, digits, '-', '_' or '.'"));
        }
        let (path, access) = match rest.rsplit_once(':') {
            Some((p, "ro")) => (p, Access::ReadOnly),
            Some((p, "wo")) => (p, Access::WriteOnly),
            Some((p, "wo-whole")) => (p, Access::WriteOnlyWhole),
            Some((p, "rw")) => (p, Access::ReadWrite),
            _ => (rest, Access::ReadWrite),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: empty directory"));
        }
        Ok(Module { name: name.to_string(), path: PathBuf::from(path), access })
    }
}

/// A `ferry://HOST:PORT/MODULE` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or IP (also the name checked against the server's certificate).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Module.
    pub module: String,
}

/// How long a server waits for a connected client's request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default port of `ferry serve`.
pub const DEFAULT_PORT: u16 = 7873;

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "ferry://[{}]:{}/{}", self.host, self.port, self.module)
        } else {
            write!(f, "ferry://{}:{}/{}", self.host, self.port, self.module)
        }
    }
}

impl Url {
    /// Parses `ferry://HOST[:PORT]/MODULE` (IPv6 hosts in brackets).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("ferry://")
            .ok_or_else(|| format!("{s:?}: expected ferry://HOST:PORT/MODULE"))?;
        let (hostport, module) =
            rest.split_once('/').ok_or_else(|| format!("{s:?}: no /MODULE"))?;
        if module.is_empty() || module.contains('/') {
            return Err(format!("{s:?}: expected exactly one module name after the host"));
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h.split_once(']').ok_or_else(|| format!("{s:?}: unclosed ["))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?,
            None => DEFAULT_PORT,
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(Url { host, port, module: module.to_string() })
    }
}

impl Request {
    /// A request of this build's protocol range for `url`'s module.
    pub fn new(url: &Url, direction: Direction, options: RoundOptions, lanes: u8) -> Request {
        Request {
            version_min: PROTOCOL_MIN,
            version_max: PROTOCOL_VERSION,
            module: url.module.clone(),
            direction,
            options,
            lanes,
        }
    }
}

/// The client's half of the handshake: sends `req` and reads the server's answer. Returns the
/// number of data lanes the server granted (at most [`DATA_LANES`]).
///
/// # Errors
/// [`RemoteError::Connect`] when the link fails, [`RemoteError::Version`] or
/// [`RemoteError::Refused`] when the server says no.
pub async fn handshake(link: &mut Link, req: &Request) -> Result<usize, RemoteError> {
    let peer = link.peer.clone();
    let hs = |e| RemoteError::Connect { addr: peer.clone(), source: e };
    let answer = match write_value(&mut link.writer, req).await {
        Ok(()) => read_value::<Response, _>(&mut link.reader).await,
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return Err(hs(verdict(link, e).await)),
    };
    match answer {
        Response::Accepted { lanes, .. } => Ok(usize::from(lanes).min(DATA_LANES)),
        Response::Refused { code: Refusal::Version, server_min, server_max, .. } => {
            Err(RemoteError::Version {
                our_min: PROTOCOL_MIN,
                our_max: PROTOCOL_VERSION,
                peer_min: server_min,
                peer_max: server_max,
            })
        }
        Response::Refused { code, reason, .. } => Err(RemoteError::Refused { code, reason }),
    }
}

/// How long a client waits for the server's verdict on its certificate after the first
/// exchange failed.
const VERDICT_WAIT: Duration = Duration::from_secs(2);

/// Why the first exchange after the TLS handshake failed. In TLS 1.3 the client finishes its
/// handshake before the server has checked the client's certificate, so a refusal arrives as
/// the first read's error (TCP: a TLS alert; QUIC: the connection closed with a crypto error
/// code). A failed write or a bare I/O error may hide it: wait briefly for the real verdict
/// before calling the failure transient, so a refused certificate is exit 3 every time.
async fn verdict(link: &mut Link, e: TransportError) -> TransportError {
    if e.is_auth() {
        return e;
    }
    if let Some((conn, _)) = &link.quic {
        if let Ok(reason) = tokio::time::timeout(VERDICT_WAIT, conn.closed()).await {
            let why = TransportError::from_quic(reason);
            if why.is_auth() {
                return why;
            }
        }
        return e;
    }
    if link.kind == ferry_transport::net::LinkKind::Tcp {
        // The write may have failed first; the alert is still waiting to be read.
        let later = tokio::time::timeout(VERDICT_WAIT, read_value::<Response, _>(&mut link.reader));
        if let Ok(Err(why)) = later.await {
            if why.is_auth() {
                return why;
            }
        }
    }
    e
}
