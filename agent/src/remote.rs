//! Rounds between two agents: `ferry serve` (a destination, and a source for pulls) and
//! `ferry push` / `ferry pull`, over QUIC, TLS-over-TCP or a remote shell's stdio.
//!
//! A connection starts with a [`Request`] (protocol versions, module, direction, options)
//! answered by a [`Response`]; then the round's sessions talk, one frame per message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_core::message::{PROTOCOL_MIN, PROTOCOL_VERSION};
use ferry_core::session::{Itemized, SessionError};
use ferry_core::{Limits, Message};
use ferry_transport::frame::{read_value, write_value};
use ferry_transport::lanes::{self, Lanes, DATA_LANES};
use ferry_transport::net::{connect_quic_idle, connect_tcp, Link, LinkKind, LinkReader, Server};
use ferry_transport::tls::Identity;
use ferry_transport::TransportError;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::driver::{run_remote, Event, Peer, Progress, RoundError, Side};
use crate::sync::{open_destination, open_source, Report, SyncError, SyncOptions};

/// Which way data moves, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// The client is the source; the server's module is the destination.
    Push,
    /// The server's module is the source; the client is the destination.
    Pull,
    /// No files: measure the link (`ferry bench --peer`). The module only authorizes it.
    Bench,
}

/// The round options a client sends (both sides need them: the source to list and hash, the
/// destination to plan).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireOptions {
    /// `--delete`.
    pub delete: bool,
    /// `--checksum`.
    pub checksum: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// zstd level for literal data.
    pub compress_level: i32,
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
    pub options: WireOptions,
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
    /// Parses `NAME=DIR[:ro|:wo|:rw]`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(s: &str) -> Result<Module, String> {
        let (name, rest) =
            s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=DIR[:ro|:wo]"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!("{name:?}: a module name is letters, digits, '-', '_' or '.'"));
        }
        let (path, access) = match rest.rsplit_once(':') {
            Some((p, "ro")) => (p, Access::ReadOnly),
            Some((p, "wo")) => (p, Access::WriteOnly),
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
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default port of `ferry serve`.
pub const DEFAULT_PORT: u16 = 7873;

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

/// How a client reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
    /// Whichever is faster on the link: both are probed with a short transfer in the round's
    /// direction (QUIC alone if TCP does not connect, TCP alone if UDP is blocked), and the
    /// choice is remembered for an hour per server in this process. `ferry bench --peer` with
    /// `auto` tries QUIC first and falls back to TCP.
    Auto,
    /// The stdin/stdout of a command run with `sh -c` (the command runs `ferry serve --stdio`).
    Rsh(String),
}

/// Client-side options of a network round.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The round's flags (as for `ferry sync`).
    pub sync: SyncOptions,
    /// How to connect.
    pub via: Via,
    /// The identity directory (not needed with `--rsh`).
    pub identity: Option<PathBuf>,
    /// Bandwidth cap on what this side sends, bytes per second (0: none).
    pub bwlimit: u64,
    /// How long to wait for a handshake.
    pub connect_timeout: Duration,
    /// How long a QUIC connection may hear nothing before the round fails (transiently).
    pub idle_timeout: Duration,
}

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
    #[error("the server refused: {reason}")]
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
    /// A `--pre-round` command failed: the round did not start.
    #[error("the --pre-round command failed ({0}); the round did not start")]
    Hook(String),
}

impl RemoteError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Connect { source, .. } => source.is_transient(),
            RemoteError::Round(RoundError::Link(e)) => e.is_transient(),
            RemoteError::Refused { code: Refusal::Busy, .. } => true,
            // A quiesce step (a database checkpoint...) may well work a moment later.
            RemoteError::Hook(_) => true,
            _ => false,
        }
    }
}

#[derive(Clone, Copy)]
enum SideKind {
    Source,
    Target,
}

/// The lane a message travels on: per-file messages on data lane `1 + file % data` (so each
/// file's messages keep their order and different files do not queue behind each other), the
/// rest on the control lane 0.
fn lane_of(m: &Message, data: usize) -> usize {
    match (m.file(), data) {
        (Some(f), d) if d > 0 => 1 + (f % d as u64) as usize,
        _ => 0,
    }
}

/// Runs `side` over `link` (after the handshake) with `data` extra QUIC streams (0: the
/// link's stream alone): reader tasks feeding the driver's event channel in dependency order,
/// writer tasks draining its outgoing messages (paced by `bwlimit`), and the driver on a
/// blocking thread.
#[allow(clippy::too_many_arguments)]
async fn run_over_link(
    link: Link,
    data: usize,
    client: bool,
    side: Side,
    limits: Limits,
    bwlimit: u64,
    on_item: Box<dyn FnMut(&Itemized) + Send>,
    on_progress: Box<dyn FnMut(&Progress) + Send>,
    progress_every: Duration,
) -> Result<crate::driver::RoundOutcome, RoundError> {
    let (kind, peer) = (link.kind, link.peer.clone());
    let (lanes_, quic) = lanes::split(link, data, client).await.map_err(RoundError::Link)?;
    let side_kind =
        if matches!(side, Side::Source { .. }) { SideKind::Source } else { SideKind::Target };
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<Event>();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let Lanes { readers, writers } = lanes_;
    let mut incoming = lanes::spawn_readers(readers, limits, received.clone());
    let reader_tx = tx.clone();
    let reader_task = tokio::spawn(async move {
        loop {
            let r = incoming.next().await;
            let end = !matches!(r, Ok(Some(_)));
            if reader_tx.send(Event::Peer(r)).is_err() || end {
                break;
            }
        }
    });
    let (mut lane_tx, writers_done) = lanes::spawn_writers(writers, sent.clone(), bwlimit);
    let router = tokio::spawn(async move {
        let data = lane_tx.data_lanes();
        while let Some(m) = out_rx.recv().await {
            let barrier = m.is_barrier();
            lane_tx.send(lane_of(&m, data), m, barrier);
        }
        // Dropping the sender lets every lane flush and close.
    });
    let peer_handle = Peer { outgoing: out_tx, sent, received };
    let driver = tokio::task::spawn_blocking(move || {
        let (mut on_item, mut on_progress) = (on_item, on_progress);
        let r = run_remote(
            side,
            &peer_handle,
            tx,
            rx,
            &mut *on_item,
            &mut *on_progress,
            progress_every,
        );
        drop(peer_handle);
        r
    });
    let is_source = matches!(side_kind, SideKind::Source);
    let result =
        driver.await.map_err(|e| RoundError::Link(TransportError::Io(std::io::Error::other(e))))?;
    let _ = router.await;
    let _ = writers_done.await;
    if let Some((conn, endpoint)) = quic {
        // The target speaks last (Done); the source, having heard it, closes at once. The
        // target waits (bounded) for that close, so its Done is never cut off in flight.
        if !is_source || result.is_err() {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
        conn.close(0u32.into(), b"round over");
        if let Some(ep) = endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
    }
    reader_task.abort();
    tracing::debug!("round with {peer} over {kind} ({data} data lanes) finished");
    result
}

// ----------------------------------------------------------------------------------------
// Server
// ----------------------------------------------------------------------------------------

/// What `ferry serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Modules offered.
    pub modules: Vec<Module>,
    /// Worker threads per round.
    pub threads: usize,
    /// Bandwidth cap per connection, bytes/s (0: none).
    pub bwlimit: u64,
    /// Where snapshots go: a hard-link snapshot of a module after each committed push.
    pub state_dir: Option<PathBuf>,
    /// Snapshots kept per module (0: all).
    pub retention: crate::snapshot::Retention,
    /// How snapshots are taken.
    pub snapshotter: crate::snapshot::Snapshotter,
    /// Live status and metrics (`--http`), when served.
    pub agent: Option<Arc<crate::status::Agent>>,
    /// Keep signatures of large files between rounds in the state directory
    /// ([`crate::sigcache`]).
    pub signature_cache: bool,
}

/// Serves modules on `listen` (QUIC and TLS-over-TCP on the same port) until the process ends.
///
/// `ready` receives the bound address once listening.
///
/// # Errors
/// When the sockets cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    identity: &Identity,
    cfg: ServeConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), TransportError> {
    let mut server = Server::bind(listen, identity).await?;
    ready(server.local_addr());
    let cfg = Arc::new(cfg);
    let busy = Arc::new(BusyHandle::default());
    while let Some(conn) = server.accept().await {
        match conn {
            Ok(link) => {
                let (cfg, busy) = (cfg.clone(), busy.clone());
                tokio::spawn(async move {
                    let peer = link.peer.clone();
                    let kind = link.kind;
                    let start = std::time::SystemTime::now();
                    let r = serve_link(link, &cfg, &busy).await;
                    if let Some(a) = &cfg.agent {
                        let end = std::time::SystemTime::now();
                        match &r {
                            Ok(Some(rep)) => {
                                a.round_finished(start, end, 1, Ok(rep), None, 0);
                            }
                            Err(e) => {
                                a.round_finished(start, end, 1, Err(e.to_string()), None, 0);
                            }
                            Ok(None) => {}
                        }
                    }
                    match r {
                        Ok(Some(r)) => tracing::info!(
                            "{peer} ({kind}): round complete: {} new, {} changed, {} deleted, {} literal bytes",
                            r.stats.files_new, r.stats.files_changed, r.stats.files_deleted, r.stats.literal_bytes
                        ),
                        Ok(None) => {}
                        Err(e) => tracing::warn!("{peer} ({kind}): {e}"),
                    }
                });
            }
            // A refused handshake (unknown CA, expired certificate, no certificate) is logged
            // and the server carries on: nothing of the peer's was read.
            Err(e) => tracing::warn!("connection refused: {e}"),
        }
    }
    Ok(())
}

/// Serves one round on an already-authenticated (or tunnelled) link. `Ok(None)` when the
/// request was refused (the client was told why).
///
/// # Errors
/// When the round fails.
pub async fn serve_link(
    mut link: Link,
    cfg: &ServeConfig,
    busy: &Arc<BusyHandle>,
) -> Result<Option<Report>, RemoteError> {
    // A peer that authenticates and then says nothing must not hold a task forever.
    let body = tokio::time::timeout(
        REQUEST_TIMEOUT,
        ferry_transport::frame::read_body(
            &mut link.reader,
            ferry_transport::frame::MAX_HANDSHAKE_FRAME,
        ),
    )
    .await
    .unwrap_or(Err(TransportError::Timeout("waiting for the request")))
    .and_then(|b| b.ok_or(TransportError::Closed))
    .map_err(|e| RemoteError::Connect { addr: link.peer.clone(), source: e })?;
    let refuse = |code, reason: String| Response::Refused {
        code,
        reason,
        server_min: PROTOCOL_MIN,
        server_max: PROTOCOL_VERSION,
    };
    // The version range leads every request of every version: read it first, so a peer whose
    // request has another shape still gets a version error naming both ranges.
    let version_error = |min: u32, max: u32| {
        refuse(
            Refusal::Version,
            format!(
                "protocol version mismatch: server speaks {PROTOCOL_MIN}..={PROTOCOL_VERSION}, client {min}..={max}"
            ),
        )
    };
    if let Ok((min, max)) = postcard::from_bytes::<(u32, u32)>(&body) {
        if max < PROTOCOL_MIN || min > PROTOCOL_VERSION {
            tracing::warn!("{}: refused a client speaking protocol {min}..={max}", link.peer);
            let _ = write_value(&mut link.writer, &version_error(min, max)).await;
            link.finish().await;
            return Ok(None);
        }
    }
    let req: Request = postcard::from_bytes(&body).map_err(|e| RemoteError::Connect {
        addr: link.peer.clone(),
        source: TransportError::Frame(ferry_core::message::DecodeError::Malformed(e)),
    })?;
    // The version range was checked above, before the request was decoded whole.
    let decision = match cfg.modules.iter().find(|m| m.name == req.module) {
        None => Err(refuse(Refusal::UnknownModule, format!("no module named {:?}", req.module))),
        Some(m) if req.direction == Direction::Push && m.access == Access::ReadOnly => Err(refuse(
            Refusal::ReadOnly,
            format!("module {:?} is read-only: it can be pulled from, not pushed to", m.name),
        )),
        Some(m) if req.direction == Direction::Pull && m.access == Access::WriteOnly => {
            Err(refuse(
                Refusal::WriteOnly,
                format!("module {:?} is write-only: it can be pushed to, not pulled from", m.name),
            ))
        }
        Some(m) => Ok(m.clone()),
    };
    let data = if link.kind == LinkKind::Quic { usize::from(req.lanes).min(DATA_LANES) } else { 0 };
    if let (Ok(_), Direction::Bench) = (&decision, req.direction) {
        let version = PROTOCOL_VERSION.min(req.version_max);
        write_value(&mut link.writer, &Response::Accepted { version, lanes: data as u8 })
            .await
            .map_err(|e| RemoteError::Connect { addr: link.peer.clone(), source: e })?;
        let writable = decision.as_ref().is_ok_and(|m| m.access != Access::ReadOnly);
        bench_server(link, data, cfg.threads, writable).await?;
        return Ok(None);
    }
    let module = match decision {
        Ok(m) => m,
        Err(resp) => {
            tracing::warn!("{}: refused request for module {:?}: {resp:?}", link.peer, req.module);
            let _ = write_value(&mut link.writer, &resp).await;
            link.finish().await;
            return Ok(None);
        }
    };
    let Some(_guard) = busy.claim(&module.name) else {
        let resp = refuse(
            Refusal::Busy,
            format!("a round is already running on module {:?}; retry later", module.name),
        );
        let _ = write_value(&mut link.writer, &resp).await;
        link.finish().await;
        return Ok(None);
    };
    let opts = SyncOptions {
        delete: req.options.delete,
        checksum: req.options.checksum,
        dry_run: req.options.dry_run,
        excludes: req.options.excludes.clone(),
        compress_level: req.options.compress_level.clamp(0, 19),
        threads: cfg.threads,
        ..SyncOptions::default()
    };
    let mut session = opts.session();
    // A pushed module with a state directory resumes files cut mid-way by an earlier round.
    let journal = match (&cfg.state_dir, req.direction) {
        (Some(state), Direction::Push) if !opts.dry_run => {
            match crate::journal::Journal::open(state, &module.name) {
                Ok(j) => Some(Arc::new(j)),
                Err(e) => {
                    tracing::warn!("module {:?}: no resume journal: {e}", module.name);
                    None
                }
            }
        }
        _ => None,
    };
    session.resume = journal.is_some();
    let mut written = None;
    let mut dest = None;
    let mut sigs = None;
    let side = match req.direction {
        Direction::Push => open_destination(&module.path, &opts).map(|d| {
            if let Some(state) = &cfg.state_dir {
                // The commit's tree hash reuses the hashes verified during the round.
                d.record_hashes();
                written = Some(d.clone());
                if let Some(j) = &journal {
                    d.use_journal(j.clone());
                }
                if cfg.signature_cache && !opts.dry_run {
                    let cache = Arc::new(crate::sigcache::SignatureCache::open(
                        state,
                        &module.name,
                        d.root(),
                    ));
                    d.use_signature_cache(cache.clone());
                    sigs = Some((cache, d.clone()));
                }
            }
            dest = Some(d.clone());
            Side::target(d, &session, opts.thread_count())
        }),
        Direction::Pull | Direction::Bench => {
            open_source(&module.path, &opts).map(|s| Side::source(s, &session, opts.thread_count()))
        }
    };
    let side = match side {
        Ok(s) => s,
        Err(e) => {
            let resp = refuse(Refusal::ServerError, format!("module {:?}: {e}", module.name));
            let _ = write_value(&mut link.writer, &resp).await;
            link.finish().await;
            return Err(e.into());
        }
    };
    write_value(
        &mut link.writer,
        &Response::Accepted { version: PROTOCOL_VERSION.min(req.version_max), lanes: data as u8 },
    )
    .await
    .map_err(|e| RemoteError::Connect { addr: link.peer.clone(), source: e })?;
    tracing::info!("{} ({}): {:?} module {:?}", link.peer, link.kind, req.direction, module.name);
    let kind = link.kind;
    let out = run_over_link(
        link,
        data,
        false,
        side,
        session.limits,
        cfg.bwlimit,
        Box::new(|_| {}),
        Box::new(|_| {}),
        Duration::from_secs(3600),
    )
    .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            salvage(dest.as_deref(), &e);
            finish_signatures(sigs, &module.name, cfg.agent.as_deref()).await;
            return Err(e.into());
        }
    };
    if let (Some(j), Some(d)) = (&journal, &dest) {
        match j.finish_ok(d.root()) {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} partial file(s) no longer needed for resuming"),
            Err(e) => tracing::warn!("module {:?}: emptying the resume journal: {e}", module.name),
        }
    }
    let mut r = Report::new(&out, Vec::new());
    r.transport = Some(kind.to_string());
    r.streams = data + 1;
    // Only a committed round is snapshotted; the module's claim is still held, so no other
    // round changes the tree meanwhile.
    if let (Some(state), Direction::Push, false) = (&cfg.state_dir, req.direction, opts.dry_run) {
        let (state, name, path, stats, keep, how) = (
            state.clone(),
            module.name.clone(),
            module.path.clone(),
            r.stats,
            cfg.retention,
            cfg.snapshotter.clone(),
        );
        let fresh = written.map(|d| d.take_hashes()).unwrap_or_default();
        let started = std::time::Instant::now();
        let taken = tokio::task::spawn_blocking(move || {
            let commits = crate::commit::CommitLog::at(&state, &name);
            crate::snapshot::Snapshots::open(&state, &name, &path, &how)?
                .take(&path, &stats, &keep, &commits, &fresh, &how)
        })
        .await;
        match taken {
            Ok(Ok((commit, rec))) => {
                if let Some(a) = &cfg.agent {
                    a.snapshot_taken(&rec.id);
                }
                tracing::info!(
                "module {:?}: round {} committed (root {}), snapshot {} ({} entries, {} bytes) in {:.2} s",
                module.name,
                commit.round,
                &commit.root_hash[..16],
                rec.id,
                rec.entries,
                rec.bytes,
                started.elapsed().as_secs_f64()
            )
            }
            Ok(Err(e)) => tracing::error!("module {:?}: snapshot failed: {e}", module.name),
            Err(e) => tracing::error!("module {:?}: snapshot task failed: {e}", module.name),
        }
    }
    // After the snapshot and retention, which change the ctime of live files.
    finish_signatures(sigs, &module.name, cfg.agent.as_deref()).await;
    Ok(Some(r))
}

/// Ends a round's use of the signature cache (stamps and saves it) and logs what it did.
async fn finish_signatures(
    sigs: Option<(Arc<crate::sigcache::SignatureCache>, Arc<crate::target::LocalDestination>)>,
    module: &str,
    agent: Option<&crate::status::Agent>,
) {
    let Some((cache, dest)) = sigs else { return };
    match tokio::task::spawn_blocking(move || cache.finish(dest.root())).await {
        Ok(Ok(c)) => {
            if let Some(a) = agent {
                a.signature_cache(&c);
            }
            tracing::info!(
                "module {module:?}: signature cache: {} hits ({} bytes not re-read), {} misses, {} stored, {} dropped",
                c.hits, c.hit_bytes, c.misses, c.stored, c.dropped
            )
        }
        Ok(Err(e)) => tracing::warn!("module {module:?}: saving the signature cache: {e}"),
        Err(e) => tracing::warn!("module {module:?}: signature cache task failed: {e}"),
    }
}

/// Claims on modules, released on drop.
#[derive(Debug, Default)]
pub struct BusyHandle(Mutex<std::collections::HashSet<String>>);

/// A claim on a module.
#[derive(Debug)]
pub struct Claim<'a>(&'a BusyHandle, String);

impl BusyHandle {
    fn claim(&self, name: &str) -> Option<Claim<'_>> {
        let mut set = crate::lock(&self.0);
        set.insert(name.to_string()).then(|| Claim(self, name.to_string()))
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        crate::lock(&self.0 .0).remove(&self.1);
    }
}

// ----------------------------------------------------------------------------------------
// Client
// ----------------------------------------------------------------------------------------

/// Connects to `url` as `opts.via` says; returns the link (its kind says which transport).
///
/// # Errors
/// [`RemoteError`] for bad addresses, credentials or connection failures.
pub async fn connect(url: &Url, opts: &RemoteOptions) -> Result<Link, RemoteError> {
    if let Via::Rsh(cmd) = &opts.via {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(RemoteError::Rsh)?;
        let (Some(out), Some(inp)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(RemoteError::Rsh(std::io::Error::other("no pipes to the remote shell")));
        };
        // The child lives as long as the link's reader half does.
        let reader = ChildReader { out, _child: child };
        return Ok(Link::from_streams(reader, inp, LinkKind::Stdio, cmd.clone()));
    }
    let dir = opts.identity.as_deref().ok_or_else(|| {
        RemoteError::Usage(
            "--identity DIR is required (the source or destination directory from `ferry init`)"
                .into(),
        )
    })?;
    let identity = Identity::load(dir)?;
    let target = format!("{}:{}", url.host, url.port);
    let addr = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| RemoteError::Connect { addr: target.clone(), source: TransportError::Io(e) })?
        .next()
        .ok_or_else(|| RemoteError::Connect {
            addr: target.clone(),
            source: TransportError::Closed,
        })?;
    let t = opts.connect_timeout;
    let err = |source| RemoteError::Connect { addr: target.clone(), source };
    match opts.via {
        Via::Quic => {
            connect_quic_idle(addr, &url.host, &identity, t, opts.idle_timeout).await.map_err(err)
        }
        Via::Tcp => connect_tcp(addr, &url.host, &identity, t).await.map_err(err),
        Via::Auto => {
            // UDP is often blocked (OpenShift Routes and most Ingresses carry only TCP): give
            // QUIC a short chance, then fall back, unless the server refused our certificate.
            let t = t.min(Duration::from_secs(3));
            match connect_quic_idle(addr, &url.host, &identity, t, opts.idle_timeout).await {
                Ok(l) => Ok(l),
                Err(e) if e.is_auth() => Err(err(e)),
                Err(e) => {
                    tracing::info!("QUIC to {target} failed ({e}); trying TLS over TCP");
                    connect_tcp(addr, &url.host, &identity, t).await.map_err(err)
                }
            }
        }
        Via::Rsh(_) => unreachable!("handled above"),
    }
}

struct ChildReader {
    out: tokio::process::ChildStdout,
    _child: tokio::process::Child,
}

impl AsyncRead for ChildReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.out).poll_read(cx, buf)
    }
}

/// Runs the client side of a push (`local` is the source) or pull (`local` is the destination).
///
/// # Errors
/// [`RemoteError`].
pub async fn run_client(
    direction: Direction,
    local: &Path,
    url: &Url,
    opts: &RemoteOptions,
    on_item: Box<dyn FnMut(&Itemized) + Send>,
    on_progress: Box<dyn FnMut(&Progress) + Send>,
    progress_every: Duration,
) -> Result<Report, RemoteError> {
    let s = &opts.sync;
    // Open the local side first: a bad local path should not cost a connection.
    let session = s.session();
    let (side, warn_src, warn_dst) = match direction {
        Direction::Bench => {
            return Err(RemoteError::Usage("a link benchmark is run_bench's job".into()));
        }
        Direction::Push => {
            let src = open_source(local, s)?;
            (Side::source(src.clone(), &session, s.thread_count()), Some(src), None)
        }
        Direction::Pull => {
            let dst = open_destination(local, s)?;
            (Side::target(dst.clone(), &session, s.thread_count()), None, Some(dst))
        }
    };
    let chosen;
    let opts = if opts.via == Via::Auto {
        chosen =
            RemoteOptions { via: choose_transport(url, opts, direction).await, ..opts.clone() };
        &chosen
    } else {
        opts
    };
    let mut link = connect(url, opts).await?;
    let kind = link.kind;
    tracing::info!("connected to {} over {kind}", link.peer);
    let req = Request {
        version_min: PROTOCOL_MIN,
        version_max: PROTOCOL_VERSION,
        module: url.module.clone(),
        direction,
        options: WireOptions {
            delete: s.delete,
            checksum: s.checksum,
            dry_run: s.dry_run,
            excludes: s.excludes.clone(),
            compress_level: s.compress_level,
        },
        lanes: if kind == LinkKind::Quic { DATA_LANES as u8 } else { 0 },
    };
    let peer = link.peer.clone();
    let hs = |e| RemoteError::Connect { addr: peer.clone(), source: e };
    write_value(&mut link.writer, &req).await.map_err(hs)?;
    let data = match read_value::<Response, _>(&mut link.reader).await.map_err(hs)? {
        Response::Accepted { lanes, .. } => usize::from(lanes).min(DATA_LANES),
        Response::Refused { code: Refusal::Version, server_min, server_max, .. } => {
            return Err(RemoteError::Version {
                our_min: PROTOCOL_MIN,
                our_max: PROTOCOL_VERSION,
                peer_min: server_min,
                peer_max: server_max,
            })
        }
        Response::Refused { code, reason, .. } => {
            return Err(RemoteError::Refused { code, reason })
        }
    };
    let out = run_over_link(
        link,
        data,
        true,
        side,
        session.limits,
        opts.bwlimit,
        on_item,
        on_progress,
        progress_every,
    )
    .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            salvage(warn_dst.as_deref(), &e);
            return Err(e.into());
        }
    };
    let mut warnings = warn_src.map(|s| s.walk_warnings()).unwrap_or_default();
    warnings.extend(warn_dst.map(|d| d.walk_warnings()).unwrap_or_default());
    let mut r = Report::new(&out, warnings);
    r.transport = Some(kind.to_string());
    r.streams = data + 1;
    Ok(r)
}

/// How long `auto`'s choice of transport is remembered per server.
const AUTO_REMEMBER: Duration = Duration::from_secs(3600);

/// Bytes each transport moves in `auto`'s probe.
const AUTO_PROBE_BYTES: u64 = 32 << 20;

/// `auto`'s choices: server → (transport, when it was chosen).
static AUTO_CHOICES: Mutex<Vec<(String, Via, std::time::Instant)>> = Mutex::new(Vec::new());

/// Picks QUIC or TCP for `url` by measuring both in the round's direction (see [`Via::Auto`]).
/// Returns [`Via::Auto`] when neither probe works, so that connecting reports the real error.
async fn choose_transport(url: &Url, opts: &RemoteOptions, direction: Direction) -> Via {
    let key = format!("{}:{}", url.host, url.port);
    {
        let choices = crate::lock(&AUTO_CHOICES);
        if let Some((_, via, _)) =
            choices.iter().find(|(k, _, at)| *k == key && at.elapsed() < AUTO_REMEMBER)
        {
            return via.clone();
        }
    }
    let probe = |via: Via, timeout: Duration| {
        let o = RemoteOptions { via, connect_timeout: timeout, ..opts.clone() };
        async move { probe_once(url, &o, direction).await }
    };
    // UDP is often blocked (OpenShift Routes and most Ingresses carry only TCP): QUIC gets a
    // short chance.
    let quic = probe(Via::Quic, opts.connect_timeout.min(Duration::from_secs(3))).await;
    let tcp = probe(Via::Tcp, opts.connect_timeout).await;
    let show = |r: &Result<f64, RemoteError>| match r {
        Ok(g) => format!("{:.0} MB/s", g * 1e3),
        Err(e) => format!("failed ({e})"),
    };
    let via = match (&quic, &tcp) {
        // QUIC is kept unless TCP is clearly faster: it recovers from loss per stream.
        (Ok(q), Ok(t)) if *t > q * 1.1 => Via::Tcp,
        (Ok(_), _) => Via::Quic,
        (Err(_), Ok(_)) => Via::Tcp,
        (Err(_), Err(_)) => return Via::Auto,
    };
    tracing::info!(
        "transport auto: probed {key} with {} MiB {}: QUIC {}, TLS over TCP {}; using {} for the next hour",
        AUTO_PROBE_BYTES >> 20,
        if direction == Direction::Pull { "down" } else { "up" },
        show(&quic),
        show(&tcp),
        if via == Via::Tcp { "TLS over TCP" } else { "QUIC" },
    );
    let mut choices = crate::lock(&AUTO_CHOICES);
    choices.retain(|(k, _, _)| *k != key);
    choices.push((key, via.clone(), std::time::Instant::now()));
    via
}

/// One probe for [`choose_transport`]: connects with `opts.via` and moves
/// [`AUTO_PROBE_BYTES`] the way the round will; returns GB/s.
async fn probe_once(
    url: &Url,
    opts: &RemoteOptions,
    direction: Direction,
) -> Result<f64, RemoteError> {
    let mut link = connect(url, opts).await?;
    let peer = link.peer.clone();
    let io = |e| RemoteError::Connect { addr: peer.clone(), source: e };
    write_value(&mut link.writer, &bench_request(url)).await.map_err(io)?;
    if let Response::Refused { code, reason, .. } =
        read_value::<Response, _>(&mut link.reader).await.map_err(io)?
    {
        return Err(RemoteError::Refused { code, reason });
    }
    let t = tokio::time::Instant::now();
    if direction == Direction::Pull {
        write_value(&mut link.writer, &Probe::Download(AUTO_PROBE_BYTES)).await.map_err(io)?;
        drain(&mut link.reader, AUTO_PROBE_BYTES).await.map_err(io)?;
    } else {
        write_value(&mut link.writer, &Probe::Upload(AUTO_PROBE_BYTES)).await.map_err(io)?;
        send_bytes(&mut link.writer, AUTO_PROBE_BYTES).await.map_err(io)?;
        link.writer.flush().await.map_err(|e| io(TransportError::Io(e)))?;
        read_value::<Probe, _>(&mut link.reader).await.map_err(io)?;
    }
    let secs = t.elapsed().as_secs_f64().max(1e-6);
    let _ = write_value(&mut link.writer, &Probe::Done).await;
    link.finish().await;
    Ok(AUTO_PROBE_BYTES as f64 / secs / 1e9)
}

fn bench_request(url: &Url) -> Request {
    Request {
        version_min: PROTOCOL_MIN,
        version_max: PROTOCOL_VERSION,
        module: url.module.clone(),
        direction: Direction::Bench,
        options: WireOptions {
            delete: false,
            checksum: false,
            dry_run: true,
            excludes: vec![],
            compress_level: 0,
        },
        lanes: 0,
    }
}

/// After a failed round, keeps the destination's whole, verified files (see
/// [`crate::target::LocalDestination::salvage`]) when the link failed transiently (a cut, a
/// timeout); a protocol error keeps nothing of the round.
fn salvage(dest: Option<&crate::target::LocalDestination>, e: &RoundError) {
    if let (Some(d), RoundError::Link(t)) = (dest, e) {
        if !t.is_transient() {
            return;
        }
        let n = d.salvage();
        if n > 0 {
            tracing::info!("the round failed ({e}); {n} whole, verified files kept in place");
        }
    }
}

/// Maps a session error from a round to "the peer's fault" or "a version mismatch".
pub fn session_error(e: &RoundError) -> Option<&SessionError> {
    match e {
        RoundError::Source(e) | RoundError::Target(e) => Some(e),
        _ => None,
    }
}

// ----------------------------------------------------------------------------------------
// Link benchmark (`ferry bench --peer`)
// ----------------------------------------------------------------------------------------

/// What `ferry bench --peer` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The transport used.
    pub transport: String,
    /// Bytes moved each way.
    pub bytes: u64,
    /// Round-trip time of a small message, median of 5, milliseconds.
    pub rtt_ms: f64,
    /// Client to server, GB/s (10^9 bytes per second), until the server acknowledged all.
    pub upload_gbps: f64,
    /// Server to client, GB/s.
    pub download_gbps: f64,
    /// The synthetic sync round, when one was asked for.
    pub sync: Option<SyncBench>,
}

/// `ferry bench --peer`'s synthetic round: a generated tree pushed with the real sessions into
/// a scratch directory on the server.
#[derive(Debug, Clone, Serialize)]
pub struct SyncBench {
    /// Bytes of file data in the tree.
    pub bytes: u64,
    /// Files in the tree.
    pub files: u64,
    /// Wall time of the round.
    pub secs: f64,
    /// File bytes per second, MB/s (10^6).
    pub mb_per_s: f64,
    /// Bytes on the wire, source to destination.
    pub wire_bytes: u64,
    /// Whether the local tree was on tmpfs (else on disk).
    pub source_in_memory: bool,
}

/// Messages of the link benchmark.
#[derive(Debug, Serialize, Deserialize)]
enum Probe {
    Ping,
    Pong,
    /// The client sends this many raw bytes next.
    Upload(u64),
    /// The server has read them all.
    Received,
    /// The server sends this many raw bytes next.
    Download(u64),
    /// A synthetic sync round of about this many bytes follows (the client is the source).
    Sync(u64),
    /// The server has a scratch destination ready.
    Ready,
    /// The server cannot run the synthetic round, and why.
    Unable(String),
    Done,
}

/// Largest synthetic round a server accepts (it needs this much scratch space).
const SYNC_MAX: u64 = 16 << 30;

/// Most bytes one probe may ask for.
const PROBE_MAX: u64 = 64 << 30;

/// One synthetic round at a time per server: each needs scratch space the size of its data.
static SYNTHETIC_ROUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Releases [`SYNTHETIC_ROUND`] on drop.
struct SyntheticClaim;

impl Drop for SyntheticClaim {
    fn drop(&mut self) {
        SYNTHETIC_ROUND.store(false, std::sync::atomic::Ordering::Release);
    }
}

async fn bench_server(
    mut link: Link,
    data: usize,
    threads: usize,
    writable: bool,
) -> Result<(), RemoteError> {
    let peer = link.peer.clone();
    let io = |e| RemoteError::Connect { addr: peer.clone(), source: e };
    loop {
        match read_value::<Probe, _>(&mut link.reader).await.map_err(io)? {
            Probe::Ping => write_value(&mut link.writer, &Probe::Pong).await.map_err(io)?,
            Probe::Upload(n) => {
                drain(&mut link.reader, n.min(PROBE_MAX)).await.map_err(io)?;
                write_value(&mut link.writer, &Probe::Received).await.map_err(io)?;
            }
            Probe::Download(n) => {
                send_bytes(&mut link.writer, n.min(PROBE_MAX)).await.map_err(io)?;
                link.writer.flush().await.map_err(|e| io(TransportError::Io(e)))?;
            }
            Probe::Sync(n) => {
                use std::sync::atomic::Ordering;
                // Writing gigabytes into the server's memory is for peers that may write.
                let claim = SYNTHETIC_ROUND
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                    .then_some(SyntheticClaim);
                let scratch = if !writable {
                    Err("the module is read-only for this peer; name a module it may push to"
                        .into())
                } else if claim.is_none() {
                    Err("another synthetic round is running on this server; retry later".into())
                } else if n > SYNC_MAX {
                    Err(format!("at most {} GiB", SYNC_MAX >> 30))
                } else {
                    crate::synth::Scratch::new("dst", n).map_err(|e| e.to_string())
                };
                let scratch = match scratch {
                    Ok(s) => s,
                    Err(why) => {
                        write_value(&mut link.writer, &Probe::Unable(why)).await.map_err(io)?;
                        continue;
                    }
                };
                let opts = SyncOptions { threads, ..SyncOptions::default() };
                let dst = open_destination(&scratch.path, &opts)?;
                let side = Side::target(dst, &opts.session(), opts.thread_count());
                write_value(&mut link.writer, &Probe::Ready).await.map_err(io)?;
                let r = run_over_link(
                    link,
                    data,
                    false,
                    side,
                    opts.session().limits,
                    0,
                    Box::new(|_| {}),
                    Box::new(|_| {}),
                    Duration::from_secs(3600),
                )
                .await;
                tracing::info!(
                    "{peer}: synthetic round into {} ({}): {}",
                    scratch.path.display(),
                    if scratch.in_memory { "tmpfs" } else { "disk" },
                    match &r {
                        Ok(o) => format!("{:.2} s", o.elapsed.as_secs_f64()),
                        Err(e) => e.to_string(),
                    }
                );
                r?;
                return Ok(());
            }
            Probe::Done | Probe::Pong | Probe::Received | Probe::Ready | Probe::Unable(_) => break,
        }
    }
    link.finish().await;
    Ok(())
}

async fn drain(r: &mut LinkReader, n: u64) -> Result<(), TransportError> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = r.read(&mut buf[..want]).await.map_err(TransportError::Io)?;
        if got == 0 {
            return Err(TransportError::Closed);
        }
        left -= got as u64;
    }
    Ok(())
}

async fn send_bytes(
    w: &mut ferry_transport::net::LinkWriter,
    n: u64,
) -> Result<(), TransportError> {
    let chunk: Vec<u8> =
        (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..k]).await.map_err(TransportError::Io)?;
        left -= k as u64;
    }
    Ok(())
}

/// Measures the link to `url`'s server: round-trip time, then `bytes` each way. Nothing is
/// read from or written to the module; naming it is what authorizes the probe.
///
/// # Errors
/// [`RemoteError`] for connection failures or a refused request.
pub async fn run_bench(
    url: &Url,
    opts: &RemoteOptions,
    bytes: u64,
    sync_bytes: u64,
) -> Result<BenchReport, RemoteError> {
    // Generate first: a local problem should not cost a connection.
    let scratch = if sync_bytes > 0 {
        let s = crate::synth::Scratch::new("src", sync_bytes).map_err(|e| {
            RemoteError::Usage(format!("synthetic round: {e}; use a smaller --sync-mib or 0"))
        })?;
        let files = crate::synth::generate(&s.path, sync_bytes, 1)
            .map_err(|e| RemoteError::Usage(format!("generating the synthetic tree: {e}")))?;
        Some((s, files))
    } else {
        None
    };
    let mut link = connect(url, opts).await?;
    let kind = link.kind;
    let peer = link.peer.clone();
    let io = |e| RemoteError::Connect { addr: peer.clone(), source: e };
    let mut req = bench_request(url);
    req.lanes = if kind == LinkKind::Quic { DATA_LANES as u8 } else { 0 };
    write_value(&mut link.writer, &req).await.map_err(io)?;
    let data = match read_value::<Response, _>(&mut link.reader).await.map_err(io)? {
        Response::Refused { code, reason, .. } => {
            return Err(RemoteError::Refused { code, reason })
        }
        Response::Accepted { lanes, .. } => usize::from(lanes).min(DATA_LANES),
    };
    let mut rtts = Vec::new();
    for _ in 0..5 {
        let t = tokio::time::Instant::now();
        write_value(&mut link.writer, &Probe::Ping).await.map_err(io)?;
        read_value::<Probe, _>(&mut link.reader).await.map_err(io)?;
        rtts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    rtts.sort_by(f64::total_cmp);
    let t = tokio::time::Instant::now();
    write_value(&mut link.writer, &Probe::Upload(bytes)).await.map_err(io)?;
    send_bytes(&mut link.writer, bytes).await.map_err(io)?;
    link.writer.flush().await.map_err(|e| io(TransportError::Io(e)))?;
    read_value::<Probe, _>(&mut link.reader).await.map_err(io)?;
    let up = t.elapsed().as_secs_f64();
    let t = tokio::time::Instant::now();
    write_value(&mut link.writer, &Probe::Download(bytes)).await.map_err(io)?;
    drain(&mut link.reader, bytes).await.map_err(io)?;
    let down = t.elapsed().as_secs_f64();
    let mut report = BenchReport {
        transport: kind.to_string(),
        bytes,
        rtt_ms: rtts[rtts.len() / 2],
        upload_gbps: bytes as f64 / up / 1e9,
        download_gbps: bytes as f64 / down / 1e9,
        sync: None,
    };
    let Some((scratch, files)) = scratch else {
        write_value(&mut link.writer, &Probe::Done).await.map_err(io)?;
        link.finish().await;
        return Ok(report);
    };
    write_value(&mut link.writer, &Probe::Sync(sync_bytes)).await.map_err(io)?;
    match read_value::<Probe, _>(&mut link.reader).await.map_err(io)? {
        Probe::Ready => {}
        Probe::Unable(why) => {
            let _ = write_value(&mut link.writer, &Probe::Done).await;
            link.finish().await;
            return Err(RemoteError::Usage(format!(
                "the server cannot run the synthetic round: {why}; use a smaller --sync-mib or 0"
            )));
        }
        other => {
            return Err(io(TransportError::Io(std::io::Error::other(format!(
                "unexpected answer to the synthetic round: {other:?}"
            )))))
        }
    }
    let s = &opts.sync;
    let src = open_source(&scratch.path, s)?;
    let side = Side::source(src, &s.session(), s.thread_count());
    let out = run_over_link(
        link,
        data,
        true,
        side,
        s.session().limits,
        opts.bwlimit,
        Box::new(|_| {}),
        Box::new(|_| {}),
        Duration::from_secs(3600),
    )
    .await?;
    let secs = out.elapsed.as_secs_f64().max(1e-6);
    report.sync = Some(SyncBench {
        bytes: sync_bytes,
        files,
        secs,
        mb_per_s: sync_bytes as f64 / secs / 1e6,
        wire_bytes: out.wire_bytes.0,
        source_in_memory: scratch.in_memory,
    });
    Ok(report)
}
