//! `ferry bench --peer`: round-trip time and raw throughput each way over the real link, then
//! a synthetic round with the real sessions into a scratch directory on the server.

use ferry_core::{SessionOptions, Stats};
use ferry_transport::frame::{read_value, write_value};
use ferry_transport::lanes::DATA_LANES;
use ferry_transport::net::{Link, LinkKind, LinkReader, IDLE_TIMEOUT};
use ferry_transport::TransportError;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::client::{connect, RemoteOptions};
use super::link::{run_over_link, Hooks};
use super::protocol::{handshake, Direction, Request, Url};
use super::RemoteError;
use crate::round::driver::Side;
use crate::round::{open_destination, open_source, RoundOptions, SyncOptions};

/// The request of a link probe: no files, only the module's authorization.
pub(super) fn bench_request(url: &Url, lanes: u8) -> Request {
    let options = RoundOptions { dry_run: true, compress_level: 0, ..RoundOptions::default() };
    Request::new(url, Direction::Bench, options, lanes)
}

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
pub(super) enum Probe {
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

pub(super) async fn bench_server(
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
                    crate::net::synth::Scratch::new("dst", n).map_err(|e| e.to_string())
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
                // The scratch space was sized for `n` bytes: the client is held to them.
                let session = SessionOptions { max_file_bytes: Some(n), ..opts.session() };
                let side = Side::target(dst, &session, opts.thread_count());
                write_value(&mut link.writer, &Probe::Ready).await.map_err(io)?;
                let (where_, in_memory) = (scratch.path.clone(), scratch.in_memory);
                // The client's `ferry bench` returns when it hears Done: the scratch tree (and
                // the claim on synthetic rounds) must be gone by then.
                let hooks = Hooks {
                    before_done: Some(Box::new(move |_: &Stats| {
                        drop((scratch, claim));
                        ferry_core::message::Commit::Unrecorded
                    })),
                    ..Hooks::none()
                };
                let r = run_over_link(
                    link,
                    data,
                    false,
                    side,
                    opts.session().limits,
                    0,
                    IDLE_TIMEOUT,
                    hooks,
                )
                .await;
                tracing::info!(
                    "{peer}: synthetic round into {} ({}): {}",
                    where_.display(),
                    if in_memory { "tmpfs" } else { "disk" },
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

pub(super) async fn drain(r: &mut LinkReader, n: u64) -> Result<(), TransportError> {
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

pub(super) async fn send_bytes(
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
        let s = crate::net::synth::Scratch::new("src", sync_bytes).map_err(|e| {
            RemoteError::Usage(format!("synthetic round: {e}; use a smaller --sync-mib or 0"))
        })?;
        let files = crate::net::synth::generate(&s.path, sync_bytes, 1)
            .map_err(|e| RemoteError::Usage(format!("generating the synthetic tree: {e}")))?;
        Some((s, files))
    } else {
        None
    };
    let mut link = connect(url, opts).await?;
    let kind = link.kind;
    let peer = link.peer.clone();
    let io = |e| RemoteError::Connect { addr: peer.clone(), source: e };
    let lanes = if kind == LinkKind::Quic { DATA_LANES as u8 } else { 0 };
    let data = handshake(&mut link, &bench_request(url, lanes)).await?;
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
        opts.idle_timeout,
        Hooks::none(),
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
