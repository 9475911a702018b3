//! The transport micro-benchmark: the same bytes over QUIC (Ferry's tuned configuration),
//! TLS 1.3 over TCP, and plain TCP, on loopback, in one run.
//!
//! Each run sends `bytes` in 1 MiB writes on one connection (one stream for QUIC) from a
//! client to a server that reads and discards them, and reports wall time from the first byte
//! written to the server's acknowledgement of the last one (a one-byte reply), so buffered
//! bytes are not counted as delivered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_transport::net::{connect_quic, connect_tcp, Link, Server};
use ferry_transport::tls::Identity;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One transport's result.
#[derive(Debug, Clone, Serialize)]
pub struct TransportRun {
    /// Which transport.
    pub transport: &'static str,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds from first write to the server's acknowledgement.
    pub secs: f64,
    /// Throughput, GB/s (10^9 bytes).
    pub gbps: f64,
    /// QUIC only: the path MTU discovery had reached at the end, and UDP datagrams sent.
    pub quic_path: Option<(u16, u64)>,
}

const CHUNK: usize = 1 << 20;

/// Runs QUIC, TLS-over-TCP and plain TCP in turn, `reps` times each, alternating.
///
/// # Errors
/// When a connection fails.
pub fn run(bytes: u64, reps: usize) -> Result<Vec<TransportRun>> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let pair = ferry_agent::net::credentials::generate_for_days(&["localhost".into()], 1)?;
        let server_id = Identity::from_pem(
            &pair.destination.ca,
            &pair.destination.cert,
            &pair.destination.key,
        )?;
        let client_id = Identity::from_pem(&pair.source.ca, &pair.source.cert, &pair.source.key)?;
        let any: SocketAddr = "127.0.0.1:0".parse()?;
        let mut server = Server::bind(any, &server_id).await?;
        let addr = server.local_addr();
        tokio::spawn(async move {
            while let Some(Ok(link)) = server.accept().await {
                tokio::spawn(sink(link));
            }
        });
        let plain = tokio::net::TcpListener::bind(any).await?;
        let plain_addr = plain.local_addr()?;
        tokio::spawn(async move {
            while let Ok((s, _)) = plain.accept().await {
                let _ = s.set_nodelay(true);
                let (r, w) = tokio::io::split(s);
                let link =
                    Link::from_streams(r, w, ferry_transport::net::LinkKind::Tcp, "plain".into());
                tokio::spawn(sink(link));
            }
        });
        let mut out = Vec::new();
        let timeout = Duration::from_secs(10);
        for _ in 0..reps.max(1) {
            let l = connect_quic(addr, "localhost", &client_id, timeout).await.context("QUIC")?;
            out.push(blast("QUIC", l, bytes).await?);
            let l = connect_tcp(addr, "localhost", &client_id, timeout).await.context("TLS/TCP")?;
            out.push(blast("TLS over TCP", l, bytes).await?);
            let s = tokio::net::TcpStream::connect(plain_addr).await?;
            s.set_nodelay(true)?;
            let (r, w) = tokio::io::split(s);
            let l = Link::from_streams(r, w, ferry_transport::net::LinkKind::Tcp, "plain".into());
            out.push(blast("plain TCP", l, bytes).await?);
        }
        Ok(out)
    })
}

async fn blast(transport: &'static str, mut link: Link, bytes: u64) -> Result<TransportRun> {
    let buf = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        link.writer.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    link.writer.flush().await?;
    link.writer.shutdown().await?;
    let mut ack = [0u8; 1];
    link.reader.read_exact(&mut ack).await.context("waiting for the server's acknowledgement")?;
    let secs = start.elapsed().as_secs_f64();
    let quic_path = link.quic.as_ref().map(|(conn, _)| {
        let st = conn.stats();
        (st.path.current_mtu, st.udp_tx.datagrams)
    });
    link.finish().await;
    Ok(TransportRun { transport, bytes, secs, gbps: bytes as f64 / secs / 1e9, quic_path })
}

/// Reads everything, then acknowledges with one byte.
async fn sink(mut link: Link) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match link.reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = link.writer.write_all(&[1]).await;
    let _ = link.writer.flush().await;
    let _ = link.writer.shutdown().await;
    if let Some((conn, _)) = &link.quic {
        // Let the acknowledgement arrive before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    }
}
