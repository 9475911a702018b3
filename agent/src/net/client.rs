//! The client side: `ferry push` / `ferry pull` dial a `ferry serve` (QUIC, TLS over TCP, or a
//! remote shell's stdio), send the request and run the round.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_core::message::Commit;
use ferry_core::session::Itemized;
use ferry_transport::lanes::DATA_LANES;
use ferry_transport::net::{connect_quic_idle, connect_tcp, Link, LinkKind};
use ferry_transport::tls::Identity;
use ferry_transport::TransportError;
use tokio::io::{AsyncRead, ReadBuf};

use super::choice::{self, Transport, HEAD_START};
use super::credentials::IdentityDir;
use super::link::{run_over_link, salvage, Hooks, Recording};
use super::protocol::{handshake, Direction, Request, Url};
use super::RemoteError;
use crate::round::driver::{Progress, Side};
use crate::round::{open_destination, open_source, Report, SyncOptions};
use crate::state::StateConfig;

/// How a client reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
    /// QUIC or TLS over TCP, without spending bytes on measuring: the two handshakes race (the
    /// preferred one gets a short head start) and the first link up is used. Rounds remember
    /// which was faster per server on disk (see [`super::choice`] for the policy).
    /// `ferry bench --peer` with `auto` races with QUIC preferred and keeps no record.
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
    /// The identity directory (not needed with `--rsh`), read again before each round when
    /// its files changed (clones share what was read).
    pub identity: Option<IdentityDir>,
    /// Bandwidth cap on what this side sends, bytes per second (0: none).
    pub bwlimit: u64,
    /// How long to wait for a handshake.
    pub connect_timeout: Duration,
    /// How long a QUIC connection may hear nothing before the round fails (transiently).
    pub idle_timeout: Duration,
    /// A pull's state directory (`ferry pull --state-dir`): the module's state, under the
    /// server's name for it, kept as `ferry serve` keeps a pushed module's. Not used by push.
    pub state: Option<StateConfig>,
}

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
    let dialer = Dialer::new(url, opts).await?;
    match opts.via {
        Via::Quic => dialer.dial(Transport::Quic).await,
        Via::Tcp => dialer.dial(Transport::Tcp).await,
        Via::Auto => Ok(dialer.race(Transport::Quic).await?.0),
        Via::Rsh(_) => unreachable!("handled above"),
    }
}

/// What dialing a server over QUIC or TCP needs, resolved once for both.
struct Dialer<'a> {
    identity: Arc<Identity>,
    addr: std::net::SocketAddr,
    /// `host:port` as given, for messages.
    target: String,
    host: &'a str,
    opts: &'a RemoteOptions,
}

impl<'a> Dialer<'a> {
    /// Loads the identity and resolves the address.
    async fn new(url: &'a Url, opts: &'a RemoteOptions) -> Result<Dialer<'a>, RemoteError> {
        let dir = opts.identity.as_ref().ok_or_else(|| {
            RemoteError::Usage(
                "--identity DIR is required (the source or destination directory from `ferry init`)"
                    .into(),
            )
        })?;
        let identity = dir.current()?;
        let target = format!("{}:{}", url.host, url.port);
        let addr = tokio::net::lookup_host(&target)
            .await
            .map_err(|e| RemoteError::Connect {
                addr: target.clone(),
                source: TransportError::Io(e),
            })?
            .next()
            .ok_or_else(|| RemoteError::Connect {
                addr: target.clone(),
                source: TransportError::Closed,
            })?;
        Ok(Dialer { identity, addr, target, host: &url.host, opts })
    }

    fn error(&self, source: TransportError) -> RemoteError {
        RemoteError::Connect { addr: self.target.clone(), source }
    }

    /// Connects over `t`.
    async fn dial(&self, t: Transport) -> Result<Link, RemoteError> {
        self.dial_raw(t).await.map_err(|e| self.error(e))
    }

    async fn dial_raw(&self, t: Transport) -> Result<Link, TransportError> {
        let (o, id) = (self.opts, &self.identity);
        match t {
            Transport::Quic => {
                connect_quic_idle(self.addr, self.host, id, o.connect_timeout, o.idle_timeout).await
            }
            Transport::Tcp => connect_tcp(self.addr, self.host, id, o.connect_timeout).await,
        }
    }

    /// Races the two handshakes: `first` alone for [`HEAD_START`] (or until it fails), then
    /// both; the first link up wins and the other attempt is dropped. A refused certificate
    /// ends the race at once (it would be refused over the other transport too). Returns the
    /// link and whether TCP won while QUIC, started first, had no answer.
    async fn race(&self, first: Transport) -> Result<(Link, bool), RemoteError> {
        let a = self.dial_raw(first);
        let b = self.dial_raw(first.other());
        tokio::pin!(a, b);
        let (mut a_err, mut b_err) = (None, None);
        let head = tokio::time::sleep(HEAD_START);
        tokio::pin!(head);
        tokio::select! {
            r = &mut a => match r {
                Ok(l) => return Ok((l, false)),
                Err(e) if e.is_auth() => return Err(self.error(e)),
                Err(e) => a_err = Some(e),
            },
            () = &mut head => {}
        }
        let quic_unanswered = |l: &Link| first == Transport::Quic && l.kind == LinkKind::Tcp;
        loop {
            tokio::select! {
                r = &mut a, if a_err.is_none() => match r {
                    Ok(l) => return Ok((l, false)),
                    Err(e) if e.is_auth() => return Err(self.error(e)),
                    Err(e) => a_err = Some(e),
                },
                r = &mut b, if b_err.is_none() => match r {
                    Ok(l) => {
                        let unanswered = quic_unanswered(&l);
                        return Ok((l, unanswered));
                    }
                    Err(e) if e.is_auth() => return Err(self.error(e)),
                    Err(e) => b_err = Some(e),
                },
            }
            match (a_err.take(), b_err.take()) {
                (Some(ea), Some(eb)) => {
                    let (quic, tcp) = if first == Transport::Quic { (ea, eb) } else { (eb, ea) };
                    tracing::info!(
                        "QUIC to {} failed ({})",
                        self.target,
                        ferry_transport::printable(&quic.to_string())
                    );
                    // TCP's error says more: a blocked UDP port only ever times out.
                    return Err(self.error(tcp));
                }
                (ea, eb) => (a_err, b_err) = (ea, eb),
            }
        }
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
    let mut session = s.session();
    let (warn_src, warn_dst) = match direction {
        Direction::Bench => {
            return Err(RemoteError::Usage("a link benchmark is run_bench's job".into()));
        }
        Direction::Group => {
            return Err(RemoteError::Usage("a group's record is record_group's job".into()));
        }
        Direction::Push => (Some(open_source(local, s)?), None),
        Direction::Pull => (None, Some(open_destination(local, s)?)),
    };
    let (mut link, auto) = if opts.via == Via::Auto {
        let (link, entry) = connect_auto(url, opts).await?;
        (link, Some(entry))
    } else {
        (connect(url, opts).await?, None)
    };
    let kind = link.kind;
    tracing::info!("connected to {} over {kind}", link.peer);
    let lanes = if kind == LinkKind::Quic { DATA_LANES as u8 } else { 0 };
    let req = Request::new(url, direction, s.round.clone(), lanes);
    let data = handshake(&mut link, &req).await?;
    // A pull's destination is this side: with --state-dir its round is recorded here, as
    // `ferry serve` records a pushed one. Begun once the server has accepted the round, so
    // an attempt that never reached it leaves the state as it was.
    let mut recording = None;
    let mut hooks = Hooks { on_item, on_progress, progress_every, before_done: None };
    if let (Some(dst), Some(state)) = (&warn_dst, &opts.state) {
        let r = Recording::begin(state, &url.module, local, dst, s.round.dry_run).await?;
        session.resume = r.resumes();
        hooks.before_done = Some(r.before_done(told_to_source));
        recording = Some(r);
    }
    let side = match (&warn_src, &warn_dst) {
        (Some(src), _) => Side::source(src.clone(), &session, s.thread_count()),
        (None, Some(dst)) => Side::target(dst.clone(), &session, s.thread_count()),
        (None, None) => return Err(RemoteError::Usage("no local side".into())),
    };
    let out = run_over_link(
        link,
        data,
        true,
        side,
        session.limits,
        opts.bwlimit,
        opts.idle_timeout,
        hooks,
    )
    .await;
    if let Err(e) = &out {
        salvage(warn_dst.as_deref(), e);
    }
    let ended = match recording {
        Some(r) => r.finish().await,
        None => None,
    };
    if let Some((end, took)) = &ended {
        end.log(&url.module, *took);
    }
    let out = out?;
    let local_commit = ended.as_ref().map(|(end, _)| end.commit());
    // A round is a success only once its destination has recorded it (the server, for a
    // push; this side, for a pull with --state-dir); a partial round is never recorded, and
    // says so by its own exit code.
    if let Some(Commit::Failed { reason }) = local_commit.as_ref().or(out.commit.as_ref()) {
        if !out.target.partial() {
            return Err(RemoteError::NotCommitted { reason: reason.clone() });
        }
    }
    let mut warnings = warn_src.map(|s| s.walk_warnings()).unwrap_or_default();
    warnings.extend(warn_dst.map(|d| d.walk_warnings()).unwrap_or_default());
    let mut r = Report::new(&out, warnings);
    if let Some(c) = local_commit {
        r.commit = Some(c.into());
    }
    r.signature_cache = ended.and_then(|(end, _)| end.cache);
    if let Some(mut entry) = auto {
        let t = if kind == LinkKind::Quic { Transport::Quic } else { Transport::Tcp };
        let now = choice::unix_now();
        if entry.record_round(t, r.wire_bytes_sent + r.wire_bytes_received, r.elapsed_secs, now) {
            choice::store(entry, now);
        }
    }
    r.transport = Some(kind.to_string());
    r.streams = data + 1;
    Ok(r)
}

/// What a pulling destination tells the serving source of its commit in `Done`: that the
/// round was recorded, as round and snapshot id, or that it was not. Never the root hash: it
/// covers files of this side's tree the server never sent, whose guesses the server could
/// otherwise confirm offline. Never why recording failed: that names this side's paths.
fn told_to_source(commit: Commit) -> Commit {
    match commit {
        Commit::Recorded { round, snapshot, .. } => {
            Commit::Recorded { round, snapshot, root_hash: String::new() }
        }
        Commit::Failed { .. } => Commit::failed("the destination could not record the round"),
        Commit::Unrecorded => Commit::Unrecorded,
    }
}

/// `--transport auto` for a round: races the handshakes, the one [`choice`]'s cache prefers
/// first; returns the link and the server's cache entry (to record the round in).
async fn connect_auto(
    url: &Url,
    opts: &RemoteOptions,
) -> Result<(Link, choice::ServerEntry), RemoteError> {
    let dialer = Dialer::new(url, opts).await?;
    let mut entry = choice::load(&dialer.target, &choice::ca_key(dialer.identity.ca_der()));
    let plan = entry.plan(choice::unix_now());
    let (link, quic_unanswered) = dialer.race(plan.first).await?;
    tracing::info!(
        "transport auto: {} first ({}); connected over {}",
        plan.first,
        plan.why,
        link.kind
    );
    if quic_unanswered {
        let now = choice::unix_now();
        entry.record_quic_unanswered(now);
        choice::store(entry.clone(), now);
    }
    Ok((link, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulling_destination_tells_the_source_neither_its_root_hash_nor_its_paths() {
        let recorded = Commit::Recorded {
            round: 7,
            snapshot: "000007-20261129T000000Z".into(),
            root_hash: "ab".repeat(32),
        };
        assert_eq!(
            told_to_source(recorded),
            Commit::Recorded {
                round: 7,
                snapshot: "000007-20261129T000000Z".into(),
                root_hash: String::new()
            }
        );
        let Commit::Failed { reason } = told_to_source(Commit::failed("/secret/state: ENOSPC"))
        else {
            panic!("a failure is still a failure")
        };
        assert!(!reason.contains("secret"), "{reason}");
        assert_eq!(told_to_source(Commit::Unrecorded), Commit::Unrecorded);
    }
}
