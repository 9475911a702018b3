//! The client side: `ferry push` / `ferry pull` dial a `ferry serve` (QUIC, TLS over TCP, or a
//! remote shell's stdio), send the request and run the round.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_core::session::Itemized;
use ferry_transport::frame::{read_value, write_value};
use ferry_transport::lanes::DATA_LANES;
use ferry_transport::net::{connect_quic_idle, connect_tcp, Link, LinkKind};
use ferry_transport::tls::Identity;
use ferry_transport::TransportError;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::bench::{bench_request, drain, send_bytes, Probe};
use super::link::{run_over_link, salvage, Hooks};
use super::protocol::{handshake, Direction, Request, Url};
use super::RemoteError;
use crate::round::driver::{Progress, Side};
use crate::round::{open_destination, open_source, Report, SyncOptions};

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
                    tracing::info!(
                        "QUIC to {target} failed ({}); trying TLS over TCP",
                        ferry_transport::printable(&e.to_string())
                    );
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
    let lanes = if kind == LinkKind::Quic { DATA_LANES as u8 } else { 0 };
    let req = Request::new(url, direction, s.round.clone(), lanes);
    let data = handshake(&mut link, &req).await?;
    let out = run_over_link(
        link,
        data,
        true,
        side,
        session.limits,
        opts.bwlimit,
        opts.idle_timeout,
        Hooks { on_item, on_progress, progress_every, before_done: None },
    )
    .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            salvage(warn_dst.as_deref(), &e);
            return Err(e.into());
        }
    };
    // A pushed round is a success only once the destination has recorded it; a partial
    // round is never recorded, and says so by its own exit code.
    if let Some(ferry_core::message::Commit::Failed { reason }) = &out.commit {
        if !out.target.partial() {
            return Err(RemoteError::NotCommitted { reason: reason.clone() });
        }
    }
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
    handshake(&mut link, &bench_request(url, 0)).await?;
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
