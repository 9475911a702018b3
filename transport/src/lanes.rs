//! Lanes: one round's messages spread over several ordered streams, delivered in an order
//! that respects what the sender meant.
//!
//! On QUIC a round uses the control stream (lane 0) plus [`DATA_LANES`] data streams, so a
//! small file's segments do not wait behind a large file's in one stream's buffer, a lost
//! packet stalls one lane instead of the whole round, and control messages (credit, requests)
//! are sent ahead of queued bulk data. TLS-over-TCP and stdio links have lane 0 only.
//!
//! Streams are independent, so the receiver could see a message before one the sender wrote
//! earlier on another lane. Each frame therefore carries the dependencies it needs, as counts of
//! messages the sender had put on other lanes when it sent this one:
//! - a data-lane frame depends on the control lane (8 bytes): it is delivered only after every
//!   control message sent before it;
//! - a control frame sent as a *barrier* depends on every data lane (8 bytes per lane): it is
//!   delivered only after every data message sent before it; other control frames carry zeros.
//!
//! The caller picks the lane (the transport knows nothing about files) and which messages are
//! barriers. Within a lane, order is the stream's. Deliverable is decided by [`Merge`], a
//! sans-IO piece the tests drive directly. The receiver buffers at most one message per lane:
//! a lane is read again only after its head is delivered. That cannot deadlock, because the
//! earliest undelivered message in the sender's order never depends on anything undelivered,
//! and its lane is being read; and the sender writes each lane from its own task, so a lane
//! the receiver is not reading never holds up the others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Limits, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::frame::{read_body, read_message, write_message};
use crate::net::{Link, LinkReader, LinkWriter};
use crate::TransportError;

/// Data lanes a QUIC round opens besides the control stream.
pub const DATA_LANES: usize = 4;

/// How long the server waits for the client's data lanes to appear.
const LANE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which frames wait for which: the receiving half of the lane protocol, without I/O.
#[derive(Debug, Clone)]
pub struct Merge {
    delivered: Vec<u64>,
}

/// Why a frame's dependencies can never be met.
#[derive(Debug, thiserror::Error)]
#[error("lane {lane} ended after {delivered} messages, but a message depends on {wanted}")]
pub struct Unsatisfiable {
    /// The lane that ended.
    pub lane: usize,
    /// Messages it delivered.
    pub delivered: u64,
    /// Messages another frame claimed it would carry.
    pub wanted: u64,
}

impl Merge {
    /// A merge over lane 0 plus `data` data lanes.
    pub fn new(data: usize) -> Merge {
        Merge { delivered: vec![0; data + 1] }
    }

    /// The dependency header length of a frame on `lane`.
    pub fn deps_len(&self, lane: usize) -> usize {
        if lane == 0 {
            self.delivered.len() - 1
        } else {
            1
        }
    }

    /// Whether a frame on `lane` with `deps` can be delivered now.
    pub fn ready(&self, lane: usize, deps: &[u64]) -> bool {
        if lane == 0 {
            deps.iter().zip(&self.delivered[1..]).all(|(want, have)| have >= want)
        } else {
            deps.first().is_none_or(|want| self.delivered[0] >= *want)
        }
    }

    /// Records a delivery on `lane`.
    pub fn delivered(&mut self, lane: usize) {
        self.delivered[lane] += 1;
    }

    /// Checks a waiting frame against the lanes that have ended: `Err` when it waits for
    /// messages an ended lane will never carry.
    pub fn check_ended(
        &self,
        lane: usize,
        deps: &[u64],
        ended: &[bool],
    ) -> Result<(), Unsatisfiable> {
        let pairs: Vec<(usize, u64)> = if lane == 0 {
            deps.iter().enumerate().map(|(i, d)| (i + 1, *d)).collect()
        } else {
            deps.first().map(|d| vec![(0, *d)]).unwrap_or_default()
        };
        for (l, want) in pairs {
            if ended[l] && self.delivered[l] < want {
                return Err(Unsatisfiable { lane: l, delivered: self.delivered[l], wanted: want });
            }
        }
        Ok(())
    }
}

/// The sending half's bookkeeping: messages put on each lane so far.
#[derive(Debug, Clone)]
pub struct Stamp {
    sent: Vec<u64>,
}

impl Stamp {
    /// A stamp over lane 0 plus `data` data lanes.
    pub fn new(data: usize) -> Stamp {
        Stamp { sent: vec![0; data + 1] }
    }

    /// The dependency header for the next frame on `lane`, and counts it as sent.
    pub fn next(&mut self, lane: usize, barrier: bool) -> Vec<u64> {
        let deps = if lane == 0 {
            if barrier {
                self.sent[1..].to_vec()
            } else {
                vec![0; self.sent.len() - 1]
            }
        } else {
            vec![self.sent[0]]
        };
        self.sent[lane] += 1;
        deps
    }
}

/// A round's streams: lane 0 is the link's own stream.
pub struct Lanes {
    /// Lane 0 (the link's stream), then the data lanes.
    pub readers: Vec<LinkReader>,
    /// Lane 0, then the data lanes.
    pub writers: Vec<LinkWriter>,
}

impl Lanes {
    /// Lane 0 only.
    pub fn single(reader: LinkReader, writer: LinkWriter) -> Lanes {
        Lanes { readers: vec![reader], writers: vec![writer] }
    }

    /// Data lanes besides lane 0.
    pub fn data_lanes(&self) -> usize {
        self.readers.len() - 1
    }
}

/// Client side: opens `data` QUIC streams next to the link's stream (lower priority, so
/// control frames go first) and names each with its lane number.
///
/// # Errors
/// When the connection fails.
pub async fn open(
    conn: &quinn::Connection,
    reader: LinkReader,
    writer: LinkWriter,
    data: usize,
) -> Result<Lanes, TransportError> {
    let mut lanes = Lanes::single(reader, writer);
    for i in 1..=data {
        let (mut send, recv) = conn.open_bi().await.map_err(TransportError::from_quic)?;
        let _ = send.set_priority(-1);
        // A stream exists for the peer only once something is written on it.
        send.write_all(&[i as u8]).await.map_err(|e| TransportError::Io(e.into()))?;
        lanes.readers.push(Box::pin(recv));
        lanes.writers.push(Box::pin(send));
    }
    Ok(lanes)
}

/// Server side: accepts the `data` streams [`open`] made, placed by the lane number each
/// starts with.
///
/// # Errors
/// When they do not arrive in time, or name lanes that do not exist or twice.
pub async fn accept(
    conn: &quinn::Connection,
    reader: LinkReader,
    writer: LinkWriter,
    data: usize,
) -> Result<Lanes, TransportError> {
    let mut slots: Vec<Option<(quinn::SendStream, quinn::RecvStream)>> =
        (0..data).map(|_| None).collect();
    for _ in 0..data {
        let next = async {
            let (send, mut recv) = conn.accept_bi().await.map_err(TransportError::from_quic)?;
            let mut id = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut recv, &mut id)
                .await
                .map_err(TransportError::Io)?;
            let _ = send.set_priority(-1);
            Ok::<_, TransportError>((id[0] as usize, send, recv))
        };
        let (id, send, recv) = tokio::time::timeout(LANE_TIMEOUT, next)
            .await
            .map_err(|_| TransportError::Timeout("the client's data streams"))??;
        match slots.get_mut(id.wrapping_sub(1)) {
            Some(slot @ None) => *slot = Some((send, recv)),
            _ => return Err(bad_lane(format!("stream names lane {id}, expected 1..={data} once"))),
        }
    }
    let mut lanes = Lanes::single(reader, writer);
    for (send, recv) in slots.into_iter().flatten() {
        lanes.readers.push(Box::pin(recv));
        lanes.writers.push(Box::pin(send));
    }
    Ok(lanes)
}

fn bad_lane(why: String) -> TransportError {
    TransportError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
}

/// Splits a link into its lanes: `data` extra QUIC streams when `data > 0` (the client opens
/// them, the server accepts them), else the link's stream alone.
///
/// # Errors
/// As [`open`] and [`accept`]; asking for data lanes on a link that is not QUIC.
pub async fn split(
    link: Link,
    data: usize,
    client: bool,
) -> Result<(Lanes, Option<(quinn::Connection, Option<quinn::Endpoint>)>), TransportError> {
    let Link { reader, writer, quic, .. } = link;
    if data == 0 {
        return Ok((Lanes::single(reader, writer), quic));
    }
    let Some((conn, endpoint)) = quic else {
        return Err(bad_lane("data lanes need a QUIC connection".into()));
    };
    let lanes = if client {
        open(&conn, reader, writer, data).await?
    } else {
        accept(&conn, reader, writer, data).await?
    };
    Ok((lanes, Some((conn, endpoint))))
}

/// Sends messages on lanes; each lane is written by its own task.
pub struct LaneSender {
    stamp: Stamp,
    queues: Vec<mpsc::UnboundedSender<(Vec<u64>, Message)>>,
}

impl LaneSender {
    /// Queues `msg` on `lane` (clamped to the lanes there are); `barrier` makes a control
    /// message wait, at the receiver, for every data message sent before it. A closed lane
    /// surfaces as the receiver's error, not here.
    pub fn send(&mut self, lane: usize, msg: Message, barrier: bool) {
        let lane = lane.min(self.queues.len() - 1);
        let deps = self.stamp.next(lane, barrier);
        let _ = self.queues[lane].send((deps, msg));
    }

    /// Data lanes besides lane 0.
    pub fn data_lanes(&self) -> usize {
        self.queues.len() - 1
    }
}

/// A keep-alive: a frame of length zero, which no message encodes to. Sent on lane 0 of a TCP
/// or stdio link when it has been quiet for the keep-alive interval, and skipped by the
/// reader, so an honest peer that is busy (signing, snapshotting) never looks idle.
pub const KEEPALIVE: [u8; 4] = [0; 4];

/// The keep-alive interval for an idle timeout: a third of it, at most 5 s (as QUIC's).
pub fn keepalive_interval(idle: Duration) -> Duration {
    (idle / 3).min(Duration::from_secs(5))
}

/// Bytes a lane writer gathers before it writes to the link (see [`spawn_writers`]).
const WRITE_BUFFER: usize = 64 << 10;

/// Starts one writer task per lane. `sent` counts bytes written; `bwlimit` (bytes/s, 0 for
/// none) paces all lanes together; `keepalive` (TCP and stdio links) sends a [`KEEPALIVE`] on
/// lane 0 whenever it has been quiet that long, pacing included. The returned handle
/// finishes when every lane has been flushed and shut down after the sender is dropped.
pub fn spawn_writers(
    writers: Vec<LinkWriter>,
    sent: Arc<AtomicU64>,
    bwlimit: u64,
    keepalive: Option<Duration>,
) -> (LaneSender, tokio::task::JoinHandle<Result<(), TransportError>>) {
    let data = writers.len() - 1;
    let start = tokio::time::Instant::now();
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for (lane, w) in writers.into_iter().enumerate() {
        // Messages are written into a buffer and flushed when the queue runs dry: over TLS
        // each write to the stream is a record and a syscall, and a small file's round is a
        // few messages of a few dozen bytes.
        let mut w = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, w);
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u64>, Message)>();
        queues.push(tx);
        let sent = sent.clone();
        let keepalive = keepalive.filter(|_| lane == 0);
        tasks.push(tokio::spawn(async move {
            let mut head = Vec::new();
            loop {
                let next = match keepalive {
                    None => rx.recv().await,
                    Some(k) => match tokio::time::timeout(k, rx.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            w.write_all(&KEEPALIVE).await.map_err(TransportError::Io)?;
                            w.flush().await.map_err(TransportError::Io)?;
                            continue;
                        }
                    },
                };
                let Some((deps, m)) = next else { break };
                head.clear();
                for d in &deps {
                    head.extend_from_slice(&d.to_le_bytes());
                }
                w.write_all(&head).await.map_err(TransportError::Io)?;
                let n = write_message(&mut w, &m).await? + head.len() as u64;
                let total = sent.fetch_add(n, Ordering::Relaxed) + n;
                if bwlimit > 0 {
                    // Pace to the cap: never be ahead of total/bwlimit seconds since the start.
                    let due = start + Duration::from_secs_f64(total as f64 / bwlimit as f64);
                    if let Some(k) = keepalive {
                        // A long pause between paced frames must not look like a dead peer.
                        w.flush().await.map_err(TransportError::Io)?;
                        while due.saturating_duration_since(tokio::time::Instant::now()) > k {
                            tokio::time::sleep(k).await;
                            w.write_all(&KEEPALIVE).await.map_err(TransportError::Io)?;
                            w.flush().await.map_err(TransportError::Io)?;
                        }
                    }
                    tokio::time::sleep_until(due).await;
                }
                if rx.is_empty() {
                    // One turn of the scheduler lets a producer that is mid-burst (the
                    // driver answering a batch of small files) add to this write: a flush per
                    // message would cost a syscall, and over TLS a record, per message.
                    tokio::task::yield_now().await;
                    if rx.is_empty() {
                        w.flush().await.map_err(TransportError::Io)?;
                    }
                }
            }
            w.flush().await.map_err(TransportError::Io)?;
            let _ = w.shutdown().await;
            Ok::<_, TransportError>(())
        }));
    }
    let all = tokio::spawn(async move {
        let mut first_err = Ok(());
        for t in tasks {
            let r = t.await.unwrap_or_else(|e| Err(TransportError::Io(std::io::Error::other(e))));
            if first_err.is_ok() {
                first_err = r;
            }
        }
        first_err
    });
    (LaneSender { stamp: Stamp::new(data), queues }, all)
}

type Arrival = (usize, Result<Option<(Vec<u64>, Message)>, TransportError>);

/// Reads every lane and yields messages in an order that meets their dependencies. `received`
/// counts bytes read.
pub struct LaneReceiver {
    merge: Merge,
    heads: Vec<Option<(Vec<u64>, Message)>>,
    ended: Vec<bool>,
    permits: Vec<Arc<Semaphore>>,
    arrivals: mpsc::Receiver<Arrival>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts one reader task per lane, each holding at most one undelivered message.
pub fn spawn_readers(
    readers: Vec<LinkReader>,
    limits: Limits,
    received: Arc<AtomicU64>,
) -> LaneReceiver {
    let data = readers.len() - 1;
    let merge = Merge::new(data);
    let (tx, arrivals) = mpsc::channel(readers.len());
    let mut permits = Vec::new();
    let mut tasks = Vec::new();
    for (lane, r) in readers.into_iter().enumerate() {
        let permit = Arc::new(Semaphore::new(1));
        permits.push(permit.clone());
        let (tx, received) = (tx.clone(), received.clone());
        let deps_len = merge.deps_len(lane);
        tasks.push(tokio::spawn(async move {
            let mut r = Counting { inner: r, n: received };
            loop {
                let Ok(p) = permit.acquire().await else { break };
                p.forget();
                let got = read_frame(&mut r, deps_len, &limits).await;
                let end = !matches!(got, Ok(Some(_)));
                if tx.send((lane, got)).await.is_err() || end {
                    break;
                }
            }
        }));
    }
    LaneReceiver {
        merge,
        heads: (0..=data).map(|_| None).collect(),
        ended: vec![false; data + 1],
        permits,
        arrivals,
        tasks,
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    deps_len: usize,
    limits: &Limits,
) -> Result<Option<(Vec<u64>, Message)>, TransportError> {
    let mut head = vec![0u8; deps_len * 8];
    if deps_len > 0 {
        // End of stream is clean only before a frame's first byte.
        let n = r.read(&mut head).await.map_err(TransportError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        r.read_exact(&mut head[n..]).await.map_err(TransportError::Io)?;
    }
    let deps: Vec<u64> =
        head.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    if deps_len == 0 {
        // A single-lane link (TCP, stdio) carries keep-alives between frames: skip them.
        loop {
            match read_body(r, limits.max_frame).await? {
                Some(b) if b.is_empty() => continue,
                Some(b) => {
                    let m =
                        ferry_core::message::decode(&b, limits).map_err(TransportError::Frame)?;
                    return Ok(Some((deps, m)));
                }
                None => return Ok(None),
            }
        }
    }
    match read_message(r, limits).await? {
        Some(m) => Ok(Some((deps, m))),
        None => Err(TransportError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

impl LaneReceiver {
    /// The next message in dependency order; `None` once every lane has ended and everything
    /// has been delivered.
    ///
    /// # Errors
    /// A lane's read error, or a frame whose dependencies can never be met.
    pub async fn next(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            for lane in 0..self.heads.len() {
                let ready = match &self.heads[lane] {
                    Some((deps, _)) => self.merge.ready(lane, deps),
                    None => false,
                };
                if ready {
                    let Some((_, m)) = self.heads[lane].take() else { continue };
                    self.merge.delivered(lane);
                    self.permits[lane].add_permits(1);
                    return Ok(Some(m));
                }
            }
            for lane in 0..self.heads.len() {
                if let Some((deps, _)) = &self.heads[lane] {
                    self.merge.check_ended(lane, deps, &self.ended).map_err(|e| {
                        TransportError::Io(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            e.to_string(),
                        ))
                    })?;
                }
            }
            if self.ended.iter().all(|e| *e) && self.heads.iter().all(Option::is_none) {
                return Ok(None);
            }
            // Every lane holds a frame that is not ready, or has ended: nothing can arrive that
            // would make one ready. An honest sender never gets here (its earliest undelivered
            // frame is always ready), so the peer's dependencies are inconsistent.
            if (0..self.heads.len()).all(|l| self.heads[l].is_some() || self.ended[l]) {
                return Err(TransportError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the peer's frames wait for each other (inconsistent lane dependencies)",
                )));
            }
            let Some((lane, got)) = self.arrivals.recv().await else { return Ok(None) };
            match got? {
                Some(frame) => self.heads[lane] = Some(frame),
                None => self.ended[lane] = true,
            }
        }
    }
}

impl Drop for LaneReceiver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Counts bytes read through it.
struct Counting {
    inner: LinkReader,
    n: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = self.inner.as_mut().poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.n.fetch_add(n, Ordering::Relaxed);
        r
    }
}

#[cfg(test)]
mod tests;
