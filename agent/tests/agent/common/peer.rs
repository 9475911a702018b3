//! Crafted peers and bad links: a client that speaks the protocol by hand, a lossy UDP
//! relay, a push through a link that goes dark.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_agent::net::{Direction, Request};
use ferry_agent::round::RoundOptions;
use ferry_transport::net::connect_tcp;
use ferry_transport::tls::Identity;

use super::{check_ok, ferry, s, Rng};

pub(crate) fn request(module: &str, direction: Direction) -> Request {
    Request {
        version_min: ferry_core::message::PROTOCOL_MIN,
        version_max: ferry_core::message::PROTOCOL_VERSION,
        module: module.into(),
        direction,
        options: RoundOptions {
            delete: true,
            checksum: false,
            dry_run: false,
            excludes: vec![],
            compress_level: 3,
        },
        lanes: 0,
    }
}

/// Connects as a legitimate client (valid certificate) that will then misbehave.
pub(crate) async fn hostile_client(c: &Path, addr: SocketAddr) -> ferry_transport::net::Link {
    let id = Identity::load(&c.join("source")).unwrap();
    connect_tcp(addr, "localhost", &id, Duration::from_secs(5)).await.unwrap()
}

/// A userspace UDP relay (this kernel has no netem) between one QUIC client and the server:
/// drops a share of the datagrams each way, delays them, and can blackhole everything for a
/// while once a number of client bytes have crossed (mid-round, whatever the timing).
pub(crate) struct UdpRelay {
    pub(crate) addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) fn udp_relay(
    server: SocketAddr,
    drop_per_mille: u64,
    delay: Duration,
    blackhole: Option<(u64, Duration)>,
) -> UdpRelay {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;
    let front = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    let back = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    back.connect(server).unwrap();
    let addr = front.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let forwarded = Arc::new(AtomicU64::new(0));
    let dark_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
    // One direction: receive on `from`, hold for `delay`, send on `to`.
    let pump = |upstream: bool, seed: u64| {
        let (front, back, stop, client, forwarded, dark_until) = (
            front.clone(),
            back.clone(),
            stop.clone(),
            client.clone(),
            forwarded.clone(),
            dark_until.clone(),
        );
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut queue: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
            let mut buf = vec![0u8; 65536];
            let from = if upstream { &front } else { &back };
            while !stop.load(Ordering::Relaxed) {
                let wait = queue.front().map_or(Duration::from_millis(20), |(at, _)| {
                    at.saturating_duration_since(Instant::now()).max(Duration::from_micros(100))
                });
                from.set_read_timeout(Some(wait)).unwrap();
                if let Ok((n, peer)) = from.recv_from(&mut buf) {
                    if upstream {
                        *client.lock().unwrap() = Some(peer);
                        let total = forwarded.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                        if let Some((after, len)) = blackhole {
                            let mut d = dark_until.lock().unwrap();
                            if total >= after && d.is_none() {
                                *d = Some(Instant::now() + len);
                            }
                        }
                    }
                    let x = rng.next_u64();
                    let dark = dark_until.lock().unwrap().is_some_and(|t| Instant::now() < t);
                    if !dark && x % 1000 >= drop_per_mille {
                        queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
                    }
                }
                while queue.front().is_some_and(|(at, _)| *at <= Instant::now()) {
                    let (_, d) = queue.pop_front().unwrap();
                    if upstream {
                        let _ = back.send(&d);
                    } else if let Some(c) = *client.lock().unwrap() {
                        let _ = front.send_to(&d, c);
                    }
                }
            }
        });
    };
    pump(true, 0x9E37_79B9_7F4A_7C15);
    pump(false, 0xD1B5_4A32_D192_ED03);
    UdpRelay { addr, stop }
}

/// A QUIC push through a relay that goes dark mid-round: a 1 s idle timeout and quick
/// retries. Checks that it succeeded after at least one retry; returns its `--json` report.
pub(crate) fn push_through_a_cut(
    src: &Path,
    url: &str,
    id: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec!["push", s(src), url, "--identity", s(id), "--transport", "quic"];
    args.extend(["--json", "--idle-timeout", "1", "--retries", "20", "--retry-base", "300ms"]);
    args.extend(extra);
    let out = ferry(&args);
    check_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retry 1"), "the cut attempt was not retried:\n{err}");
    serde_json::from_slice(&out.stdout).unwrap()
}
