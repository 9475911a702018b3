//! Connections: QUIC (quinn) and TLS-over-TCP on the same port, and stdio; each yields a
//! [`Link`], one ordered, reliable byte stream each way.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::tls::Identity;
use crate::TransportError;

/// Which transport a link runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LinkKind {
    /// QUIC (UDP), mutual TLS 1.3.
    Quic,
    /// TLS 1.3 over TCP, mutual.
    Tcp,
    /// A remote shell's stdin/stdout; the tunnel provides authentication.
    Stdio,
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkKind::Quic => "QUIC",
            LinkKind::Tcp => "TLS over TCP",
            LinkKind::Stdio => "stdio",
        })
    }
}

/// Reading half of a link.
pub type LinkReader = Pin<Box<dyn AsyncRead + Send>>;
/// Writing half of a link.
pub type LinkWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// One connection: a byte stream each way, and what keeps it alive.
pub struct Link {
    /// Bytes from the peer.
    pub reader: LinkReader,
    /// Bytes to the peer.
    pub writer: LinkWriter,
    /// The transport.
    pub kind: LinkKind,
    /// The peer, for messages.
    pub peer: String,
    /// The QUIC connection and endpoint, held so they outlive the streams.
    pub quic: Option<(quinn::Connection, Option<quinn::Endpoint>)>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("kind", &self.kind).field("peer", &self.peer).finish()
    }
}

impl Link {
    /// A link over any pair of streams (stdio, a child's pipes, tests).
    pub fn from_streams(
        reader: impl AsyncRead + Send + 'static,
        writer: impl AsyncWrite + Send + 'static,
        kind: LinkKind,
        peer: String,
    ) -> Link {
        Link { reader: Box::pin(reader), writer: Box::pin(writer), kind, peer, quic: None }
    }

    /// Closes the link gracefully: QUIC waits for the peer to have everything.
    pub async fn finish(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.writer.shutdown().await;
        if let Some((conn, endpoint)) = self.quic.take() {
            // Give the peer a moment to read the last bytes before the connection closes.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            conn.close(0u32.into(), b"done");
            if let Some(ep) = endpoint {
                let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
            }
        }
    }
}

/// The largest UDP payload Ferry's QUIC will discover and accept.
///
/// Per-packet cost (one AEAD seal, one header protection, one trip through quinn's state
/// machine) is what holds QUIC back against TLS over TCP, so bigger packets are the biggest
/// lever: on loopback (MTU 64 KiB) 1 GiB moved at 0.87 GB/s with 1452-byte packets and 1.69 GB/s
/// with 6500 (`ferry-bench transport`). The bound is not higher because quinn hands the kernel
/// up to 10 packets per GSO send and Linux refuses a UDP send over 64 KiB: with 9000-byte
/// packets every full batch failed with EMSGSIZE, was dropped silently, and MTU discovery's
/// black-hole detector fell back to 1200 bytes. 10 x 6500 plus headers stays under 65,507. On an
/// ordinary 1500-byte path discovery settles at 1452 as before; on jumbo-frame pod networks
/// (8951 on AWS) it reaches 6500.
pub const MAX_UDP_PAYLOAD: u16 = 6500;

/// Flow-control window per QUIC stream.
const STREAM_WINDOW: u32 = 16 << 20;

/// How long a QUIC connection may hear nothing before it is closed (keep-alives flow every
/// 5 s at most, so only a dead path gets there). Peers use the lower of their two values.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// QUIC transport parameters tuned for bulk transfer: 16 MiB flow-control windows per stream
/// and room for all of them at once on the connection, MTU discovery up to [`MAX_UDP_PAYLOAD`], and
/// keep-alives under the [`IDLE_TIMEOUT`].
pub fn transport_config() -> quinn::TransportConfig {
    transport_config_idle(IDLE_TIMEOUT)
}

/// [`transport_config`] with another idle timeout.
pub fn transport_config_idle(idle: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // The connection window must hold a full window on every stream at once: a round's lanes
    // (crate::lanes) may leave bytes unread on data streams while a control frame they wait
    // for is still on its way, and a connection window smaller than the sum would let them
    // starve it (a deadlock with keep-alives holding the connection open).
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(quinn::VarInt::from_u32(
        STREAM_WINDOW * (crate::lanes::DATA_LANES as u32 + 2),
    ));
    t.send_window(u64::from(STREAM_WINDOW) * (crate::lanes::DATA_LANES as u64 + 2));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(16));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    t.keep_alive_interval(Some((idle / 3).min(Duration::from_secs(5))));
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle) {
        t.max_idle_timeout(Some(idle));
    }
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// Endpoint settings: quinn's defaults, except that datagrams up to [`MAX_UDP_PAYLOAD`] are
/// accepted (the peer's MTU discovery cannot go past what this side advertises).
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut e = quinn::EndpointConfig::default();
    // 6500 is within quinn's accepted range (1200..=65527), so this cannot fail.
    let _ = e.max_udp_payload_size(MAX_UDP_PAYLOAD);
    e
}

/// Socket buffer size asked for the UDP socket (the kernel may cap it).
const UDP_BUFFER: usize = 8 << 20;

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    // Bulk QUIC loses packets to small default buffers long before the network does.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&s, UDP_BUFFER);
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&s, UDP_BUFFER);
    // What the kernel offers decides QUIC's CPU per byte at a 1500-byte MTU (see
    // docs/ARCHITECTURE.md): say it where a slow link is being diagnosed.
    if let Ok(state) = quinn::udp::UdpSocketState::new((&s).into()) {
        tracing::debug!(
            "UDP offload on {:?}: GSO up to {} segments (quinn sends at most 10), GRO {} segments",
            s.local_addr().ok(),
            state.max_gso_segments(),
            state.gro_segments()
        );
    }
    Ok(s)
}

/// What a [`Server`] allows: how long a connection may be idle and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// QUIC's idle timeout (TCP and stdio rounds use the same value, see [`crate::idle`]).
    pub idle_timeout: Duration,
    /// Connections open at once, authenticated or not; more are closed at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { idle_timeout: IDLE_TIMEOUT, max_connections: DEFAULT_MAX_CONNECTIONS }
    }
}

/// Connections a server keeps open at once by default (rounds are one per module; the rest
/// are handshakes, refusals and busy answers).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long a TLS-over-TCP client has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keep-alive: the kernel probes a connection quiet this long, so a peer that vanished
/// (power off, cable cut) is found even when neither side has anything to send.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Turns on TCP keep-alive probes (15 s, then every 5 s, 3 misses) and `TCP_NODELAY`.
pub fn tune_tcp(sock: &TcpStream) {
    use rustix::net::sockopt as so;
    let _ = sock.set_nodelay(true);
    let _ = so::set_socket_keepalive(sock, true);
    let _ = so::set_tcp_keepidle(sock, TCP_KEEPALIVE);
    let _ = so::set_tcp_keepintvl(sock, Duration::from_secs(5));
    let _ = so::set_tcp_keepcnt(sock, 3);
}

/// Sleeps after a failed `accept`: EMFILE/ENFILE/ENOBUFS stay true until a connection
/// closes, and retrying at once only spins. Doubles from 10 ms to 1 s; reset on success.
pub async fn accept_backoff(e: &std::io::Error, backoff: &mut Duration) {
    if *backoff >= Duration::from_secs(1) || backoff.is_zero() {
        tracing::warn!("accept failed ({e}); backing off");
    }
    *backoff = (*backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    tokio::time::sleep(*backoff).await;
}

/// A stream that holds a connection slot of its server for as long as it lives.
struct Slot<R> {
    inner: R,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<R: AsyncRead + Unpin> AsyncRead for Slot<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// After a refused TLS handshake, lets the alert reach the client before the socket closes:
/// closing with the client's first bytes unread would send a reset, and a reset can discard
/// the alert on its way, leaving the client to guess (a transient error instead of exit 3).
async fn linger_close(mut sock: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = sock.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async { while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// A destination listening for QUIC and TLS-over-TCP on the same port.
pub struct Server {
    incoming: mpsc::Receiver<Result<Link, TransportError>>,
    local: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local", &self.local).finish()
    }
}

impl Server {
    /// Binds UDP and TCP at `addr` (port 0 picks one free for both), with default limits.
    ///
    /// # Errors
    /// When either socket cannot be bound or the identity is unusable.
    pub async fn bind(addr: SocketAddr, identity: &Identity) -> Result<Server, TransportError> {
        Server::bind_with(addr, identity, ServerLimits::default()).await
    }

    /// [`Server::bind`] with `limits`.
    ///
    /// # Errors
    /// As [`Server::bind`].
    pub async fn bind_with(
        addr: SocketAddr,
        identity: &Identity,
        limits: ServerLimits,
    ) -> Result<Server, TransportError> {
        // Nobody sends on this channel: the identity stays the one given.
        let (_fixed, rx) = watch::channel(Arc::new(identity.clone()));
        Server::bind_watching(addr, rx, limits).await
    }

    /// [`Server::bind_with`] with credentials that may change while serving: each new
    /// connection, QUIC or TCP, is handshaken with the identity `identity` holds when it
    /// arrives; connections already up keep theirs, so a rotation cuts no round. The caller
    /// sends only identities that passed [`Identity::from_files`]; one that still cannot be
    /// used is logged and the previous one kept.
    ///
    /// # Errors
    /// As [`Server::bind`], for the identity `identity` holds now.
    pub async fn bind_watching(
        addr: SocketAddr,
        identity: watch::Receiver<Arc<Identity>>,
        limits: ServerLimits,
    ) -> Result<Server, TransportError> {
        let configs = Arc::new(ServerConfigs::new(identity, limits.idle_timeout)?);
        let (tcp, udp) = bind_pair(addr).await?;
        let local = tcp.local_addr().map_err(TransportError::Io)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| TransportError::Handshake("no async runtime".into()))?;
        let first = (*configs.current().quic).clone();
        let endpoint = quinn::Endpoint::new(endpoint_config(), Some(first), udp, runtime)
            .map_err(TransportError::Io)?;
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
        let (tx, rx) = mpsc::channel(16);
        let (qtx, qslots, qconfigs) = (tx.clone(), slots.clone(), configs.clone());
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Ok(permit) = qslots.clone().try_acquire_owned() else {
                    tracing::debug!("{}: too many connections; refused", incoming.remote_address());
                    incoming.refuse();
                    continue;
                };
                let tx = qtx.clone();
                let quic = qconfigs.current().quic;
                tokio::spawn(async move {
                    let peer = incoming.remote_address().to_string();
                    let r: Result<Link, TransportError> = async {
                        let conn = incoming
                            .accept_with(quic)
                            .map_err(TransportError::from_quic)?
                            .await
                            .map_err(TransportError::from_quic)?;
                        let (send, recv) =
                            conn.accept_bi().await.map_err(TransportError::from_quic)?;
                        Ok(Link {
                            reader: Box::pin(Slot { inner: recv, _permit: permit }),
                            writer: Box::pin(send),
                            kind: LinkKind::Quic,
                            peer: peer.clone(),
                            quic: Some((conn, None)),
                        })
                    }
                    .await;
                    let _ = tx.send(r.map_err(|e| e.with_peer(&peer))).await;
                });
            }
        });
        tokio::spawn(async move {
            let mut backoff = Duration::ZERO;
            loop {
                let (sock, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        accept_backoff(&e, &mut backoff).await;
                        continue;
                    }
                };
                backoff = Duration::ZERO;
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // Closed at once: the descriptor is what a flood would exhaust.
                    tracing::debug!("{peer}: too many connections; closed");
                    continue;
                };
                let tx = tx.clone();
                let acceptor = tokio_rustls::TlsAcceptor::from(configs.current().tls);
                tokio::spawn(async move {
                    tune_tcp(&sock);
                    let peer = peer.to_string();
                    let accept = acceptor.accept(sock).into_fallible();
                    let r = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(s)) => {
                            let (r, w) = tokio::io::split(s);
                            let r = Slot { inner: r, _permit: permit };
                            Ok(Link::from_streams(r, w, LinkKind::Tcp, peer.clone()))
                        }
                        Ok(Err((e, sock))) => {
                            let e = TransportError::from_tls_io(e);
                            let _ = tx.send(Err(e.with_peer(&peer))).await;
                            linger_close(sock).await;
                            drop(permit);
                            return;
                        }
                        Err(_) => Err(TransportError::Timeout("TLS handshake")),
                    };
                    let _ = tx.send(r.map_err(|e| e.with_peer(&peer))).await;
                });
            }
        });
        Ok(Server { incoming: rx, local })
    }

    /// The address bound (UDP and TCP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection attempt: an authenticated link, or why one failed (the server
    /// keeps running either way).
    pub async fn accept(&mut self) -> Option<Result<Link, TransportError>> {
        self.incoming.recv().await
    }
}

/// A server's TLS configurations for TCP and QUIC, rebuilt when its identity changes.
struct ServerConfigs {
    identity: watch::Receiver<Arc<Identity>>,
    idle_timeout: Duration,
    built: std::sync::Mutex<Built>,
}

/// The configurations built from one identity.
#[derive(Clone)]
struct Built {
    identity: Arc<Identity>,
    tls: Arc<rustls::ServerConfig>,
    quic: Arc<quinn::ServerConfig>,
}

impl ServerConfigs {
    fn new(
        identity: watch::Receiver<Arc<Identity>>,
        idle_timeout: Duration,
    ) -> Result<ServerConfigs, TransportError> {
        let first = identity.borrow().clone();
        let built = Self::build(first, idle_timeout)?;
        Ok(ServerConfigs { identity, idle_timeout, built: std::sync::Mutex::new(built) })
    }

    fn build(identity: Arc<Identity>, idle_timeout: Duration) -> Result<Built, TransportError> {
        let tls = Arc::new(identity.server_config()?);
        let quic_tls = QuicServerConfig::try_from((*tls).clone())
            .map_err(|e| TransportError::Handshake(e.to_string()))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
        sc.transport_config(Arc::new(transport_config_idle(idle_timeout)));
        Ok(Built { identity, tls, quic: Arc::new(sc) })
    }

    /// The configurations of the identity held now; built once per identity.
    fn current(&self) -> Built {
        let now = self.identity.borrow().clone();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&now, &built.identity) {
            match Self::build(now.clone(), self.idle_timeout) {
                Ok(b) => *built = b,
                Err(e) => {
                    tracing::error!("new credentials unusable ({e}); still using the previous");
                    // Not retried for every connection: the next identity sent is.
                    built.identity = now;
                }
            }
        }
        built.clone()
    }
}

/// Binds TCP and UDP on the same port; with port 0, retries until a port is free for both.
async fn bind_pair(addr: SocketAddr) -> Result<(TcpListener, std::net::UdpSocket), TransportError> {
    for _ in 0..32 {
        let tcp = TcpListener::bind(addr).await.map_err(TransportError::Io)?;
        let mut a = addr;
        a.set_port(tcp.local_addr().map_err(TransportError::Io)?.port());
        match udp_socket(a) {
            Ok(u) => return Ok((tcp, u)),
            Err(e) if addr.port() != 0 => return Err(TransportError::Io(e)),
            Err(_) => continue,
        }
    }
    Err(TransportError::Io(std::io::Error::other("no port free for both UDP and TCP")))
}

/// Connects over QUIC and opens the round's stream.
///
/// # Errors
/// Timeouts, refused handshakes (with the TLS reason), I/O errors.
pub async fn connect_quic(
    addr: SocketAddr,
    server_name: &str,
    identity: &Identity,
    timeout: Duration,
) -> Result<Link, TransportError> {
    connect_quic_idle(addr, server_name, identity, timeout, IDLE_TIMEOUT).await
}

/// [`connect_quic`] with another idle timeout (the connection uses the lower of the client's
/// and the server's).
///
/// # Errors
/// As [`connect_quic`].
pub async fn connect_quic_idle(
    addr: SocketAddr,
    server_name: &str,
    identity: &Identity,
    timeout: Duration,
    idle: Duration,
) -> Result<Link, TransportError> {
    let tls = identity.client_config()?;
    let qc =
        QuicClientConfig::try_from(tls).map_err(|e| TransportError::Handshake(e.to_string()))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(qc));
    cc.transport_config(Arc::new(transport_config_idle(idle)));
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| TransportError::Io(std::io::Error::other("bad bind address")))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| TransportError::Handshake("no async runtime".into()))?;
    let mut endpoint = quinn::Endpoint::new(
        endpoint_config(),
        None,
        udp_socket(bind).map_err(TransportError::Io)?,
        runtime,
    )
    .map_err(TransportError::Io)?;
    endpoint.set_default_client_config(cc);
    let connecting = endpoint
        .connect(addr, server_name)
        .map_err(|e| TransportError::Handshake(e.to_string()))?;
    let conn = match tokio::time::timeout(timeout, connecting).await {
        Ok(r) => r.map_err(TransportError::from_quic)?,
        Err(_) => return Err(TransportError::Timeout("QUIC handshake")),
    };
    let (send, recv) = conn.open_bi().await.map_err(TransportError::from_quic)?;
    Ok(Link {
        reader: Box::pin(recv),
        writer: Box::pin(send),
        kind: LinkKind::Quic,
        peer: addr.to_string(),
        quic: Some((conn, Some(endpoint))),
    })
}

/// Connects with TLS 1.3 over TCP.
///
/// # Errors
/// Timeouts, refused handshakes (with the TLS reason), I/O errors.
pub async fn connect_tcp(
    addr: SocketAddr,
    server_name: &str,
    identity: &Identity,
    timeout: Duration,
) -> Result<Link, TransportError> {
    let tls = Arc::new(identity.client_config()?);
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| TransportError::Handshake(format!("invalid server name {server_name:?}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let fut = async {
        let sock = TcpStream::connect(addr).await.map_err(TransportError::Io)?;
        tune_tcp(&sock);
        connector.connect(name, sock).await.map_err(TransportError::from_tls_io)
    };
    let stream = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r?,
        Err(_) => return Err(TransportError::Timeout("TCP/TLS handshake")),
    };
    let (r, w) = tokio::io::split(stream);
    Ok(Link::from_streams(r, w, LinkKind::Tcp, addr.to_string()))
}
