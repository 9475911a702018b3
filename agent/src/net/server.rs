//! The server side: `ferry serve` accepts links, answers requests and serves one round per
//! link: pushes into a module (the destination), pulls from it (the source).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::message::{Commit, PROTOCOL_MIN, PROTOCOL_VERSION};
use ferry_transport::frame::write_value;
use ferry_transport::lanes::DATA_LANES;
use ferry_transport::net::{Link, LinkKind, Server, ServerLimits};
use ferry_transport::tls::Identity;
use ferry_transport::{printable, TransportError};

use super::bench::bench_server;
use super::link::{run_over_link, salvage, Hooks, Recording};
use super::protocol::{Access, Direction, Module, Refusal, Request, Response, REQUEST_TIMEOUT};
use super::RemoteError;
use crate::round::driver::Side;
use crate::round::{open_destination, open_source, Report, RoundOptions, SyncOptions};
use crate::state::{ModuleState, RoundEnd, StateConfig};
use crate::unattended::status::Agent;

/// What `ferry serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Modules offered by name (`--module`, `--modules-from`); they win over a subdirectory
    /// of `modules_dir` of the same name.
    pub modules: Vec<Module>,
    /// `--modules-dir`: each subdirectory is a module, looked up when a client asks for it.
    pub modules_dir: Option<crate::many::ModulesDir>,
    /// Worker threads per round.
    pub threads: usize,
    /// Bandwidth cap per connection, bytes/s (0: none).
    pub bwlimit: u64,
    /// What is kept between rounds (`--state-dir`): commit records, snapshots after each
    /// committed push, the resume journal, the signature cache.
    pub state: Option<StateConfig>,
    /// Live status and metrics (`--http`), when served.
    pub agent: Option<Arc<Agent>>,
    /// What pushes may create (`--specials`, `--keep-privileged`, id maps), decided here
    /// whatever the client sends; `specials` also includes them in what pulls are served.
    pub policy: ferry_core::ReceivePolicy,
    /// How long a round's link may hear nothing from the client (`--idle-timeout`): QUIC's
    /// idle timeout, and the same limit on TCP and stdio (keep-alive frames flow meanwhile).
    pub idle_timeout: Duration,
    /// Connections open at once (`--max-connections`); more are closed at once.
    pub max_connections: usize,
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
    let (_fixed, identity) = tokio::sync::watch::channel(Arc::new(identity.clone()));
    serve_watching(listen, identity, cfg, ready).await
}

/// [`serve`] with credentials that may be rotated while serving: each new connection uses
/// the identity `identity` holds when it arrives (see
/// [`crate::net::credentials::IdentityDir`]); rounds already running keep theirs.
///
/// # Errors
/// When the sockets cannot be bound.
pub async fn serve_watching(
    listen: SocketAddr,
    identity: tokio::sync::watch::Receiver<Arc<Identity>>,
    cfg: ServeConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), TransportError> {
    let limits =
        ServerLimits { idle_timeout: cfg.idle_timeout, max_connections: cfg.max_connections };
    let mut server = Server::bind_watching(listen, identity, limits).await?;
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
                        Err(e) => tracing::warn!("{peer} ({kind}): {}", printable(&e.to_string())),
                    }
                });
            }
            // A refused handshake (unknown CA, expired certificate, no certificate) is logged
            // and the server carries on: nothing of the peer's was read.
            Err(e) => tracing::warn!("connection refused: {}", printable(&e.to_string())),
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
    if req.direction == Direction::Group {
        super::group::serve_group(link, &req, cfg).await?;
        return Ok(None);
    }
    let explicit = cfg.modules.iter().any(|m| m.name == req.module);
    let found = find_module(cfg, &req.module, req.direction).await;
    let decision = match found.as_ref() {
        Err(why) => Err(refuse(Refusal::ServerError, why.clone())),
        Ok(None) => {
            Err(refuse(Refusal::UnknownModule, format!("no module named {:?}", req.module)))
        }
        Ok(Some(m)) if req.direction == Direction::Push && m.access == Access::ReadOnly => {
            Err(refuse(
                Refusal::ReadOnly,
                format!("module {:?} is read-only: it can be pulled from, not pushed to", m.name),
            ))
        }
        Ok(Some(m)) if req.direction == Direction::Pull && m.access.push_only() => Err(refuse(
            Refusal::WriteOnly,
            format!("module {:?} is write-only: it can be pushed to, not pulled from", m.name),
        )),
        Ok(Some(m)) => Ok(m.clone()),
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
        round: RoundOptions {
            compress_level: req
                .options
                .compress_level
                .clamp(crate::round::compression::COMPRESS_AUTO, 19),
            ..req.options.clone()
        },
        threads: cfg.threads,
        specials: cfg.policy.specials,
        policy: cfg.policy.clone(),
        // A --modules-dir module was checked to be a real directory by name; between that
        // check and this open, whoever can write the directory could swap it for a symlink.
        root_no_follow: !explicit,
        ..SyncOptions::default()
    };
    let mut session = opts.session();
    // Nothing derived from the module's contents for its pushers: no signatures, no blake3
    // comparison, no resume offers.
    let whole = module.access == Access::WriteOnlyWhole;
    if whole {
        session.whole_files = true;
        session.checksum = false;
    }
    let mut dest = None;
    let mut recording = None;
    let side = match req.direction {
        Direction::Push => match open_destination(&module.path, &opts) {
            Ok(d) => {
                if let Some(state) = &cfg.state {
                    let dry = opts.round.dry_run;
                    let r = match Recording::begin(state, &module.name, &module.path, &d, dry).await
                    {
                        Ok(r) => r,
                        Err(RemoteError::StateBusy(busy)) => {
                            let resp = refuse(Refusal::Busy, busy.to_string());
                            let _ = write_value(&mut link.writer, &resp).await;
                            link.finish().await;
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    };
                    session.resume = r.resumes() && !whole;
                    recording = Some(r);
                }
                dest = Some(d.clone());
                Ok(Side::target(d, &session, opts.thread_count()))
            }
            Err(e) => Err(e),
        },
        Direction::Pull | Direction::Bench | Direction::Group => {
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
    // A committed round is snapshotted before the destination's last word, so the source's
    // success means the snapshot exists; the module's claim is held meanwhile, so no other
    // round changes the tree. A round that fails never reaches Done and ends the state's way.
    let mut hooks = Hooks::none();
    if let Some(r) = &recording {
        // The root hash covers the whole destination tree, files the pusher never sent
        // included: a write-only module's pusher could confirm guesses of them offline.
        let withhold_root = module.access.push_only();
        hooks.before_done = Some(r.before_done(move |mut commit| {
            if let Commit::Recorded { root_hash, .. } = &mut commit {
                if withhold_root {
                    root_hash.clear();
                }
            }
            commit
        }));
    }
    let out = run_over_link(
        link,
        data,
        false,
        side,
        session.limits,
        cfg.bwlimit,
        cfg.idle_timeout,
        hooks,
    )
    .await;
    if let Err(e) = &out {
        salvage(dest.as_deref(), e);
    }
    if let Some(r) = recording {
        if let Some((end, took)) = r.finish().await {
            report_end(&module.name, &end, took, cfg.agent.as_deref());
        }
    }
    let out = out?;
    let mut r = Report::new(&out, Vec::new());
    r.transport = Some(kind.to_string());
    r.streams = data + 1;
    Ok(Some(r))
}

/// The module `name`: a `--module`/`--modules-from` one, else a subdirectory of
/// `--modules-dir` ([`lookup_in_dir`]). `Ok(None)` when there is none.
///
/// # Errors
/// Why a `--modules-dir` module's state cannot be kept (for a push).
pub(super) async fn find_module(
    cfg: &ServeConfig,
    name: &str,
    direction: Direction,
) -> Result<Option<Module>, String> {
    match cfg.modules.iter().find(|m| m.name == name) {
        Some(m) => Ok(Some(m.clone())),
        None => lookup_in_dir(cfg, name, direction).await,
    }
}

/// `name` among the subdirectories of `--modules-dir` as they are now (a directory created
/// after the server started is served, a removed one refused). Before a push into one, its
/// state is prepared as `ferry serve` prepares a `--module` at start-up; a failure there
/// refuses the module (`Err`, the reason) rather than failing the round after the data moved.
async fn lookup_in_dir(
    cfg: &ServeConfig,
    name: &str,
    direction: Direction,
) -> Result<Option<Module>, String> {
    let Some(dir) = cfg.modules_dir.clone() else { return Ok(None) };
    let state = cfg.state.clone();
    let owned = name.to_string();
    tokio::task::spawn_blocking(move || {
        let Some(m) = dir.lookup(&owned) else { return Ok(None) };
        if let (Some(state), Direction::Push) = (&state, direction) {
            if let Err(e) =
                ModuleState::new(&state.dir, &m.name).prepare(&m.path, &state.snapshotter)
            {
                tracing::error!("module {:?}: --state-dir: {e}", m.name);
                return Err(format!("module {:?}: the server cannot keep its state", m.name));
            }
        }
        Ok(Some(m))
    })
    .await
    .unwrap_or_else(|_| Err(format!("module {name:?}: the lookup failed")))
}

/// Logs what the state directory did at the end of a round and tells the status endpoint.
fn report_end(module: &str, end: &RoundEnd, took: Duration, agent: Option<&Agent>) {
    end.log(module, took);
    if let Some(a) = agent {
        if let Some((_, rec)) = &end.committed {
            a.snapshot_taken(&rec.id);
        }
        if let Some(c) = &end.cache {
            a.signature_cache(c);
        }
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
