//! The driver: pumps messages between a session and its peer and runs the work it asks for.
//!
//! `ferry sync` runs both sessions in this process ([`run_local`]): their messages go through
//! a [`MemoryPipe`] each way, framed and decoded with the receiver's limits, exactly as on a
//! network. `ferry push`/`pull`/`serve` run one session against a network peer
//! ([`run_remote`]): messages go to a writer task and come from a reader task. Either way the
//! work runs on a rayon pool per side (so one side's backlog cannot starve the other) and
//! comes back, with the peer's messages, through one channel the loop blocks on.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::delta::SegmentHow;
use ferry_core::limits::OUTGOING_QUEUE_BYTES;
use ferry_core::message::Commit;
use ferry_core::session::{Itemized, SessionError, WorkId};
use ferry_core::{
    Message, SessionOptions, SourceOutcome, SourceSession, SourceWork, Stats, TargetOutcome,
    TargetSession, TargetWork,
};
use ferry_transport::MemoryPipe;
use serde::Serialize;

use crate::fs::dest::Destination;
use crate::fs::source::LocalSource;
use crate::round::compression::CompressionReport;

/// Thread-seconds spent per phase, summed over the worker threads.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PhaseTimes {
    /// Walking both trees (and hashing, with `--checksum`).
    pub scan: f64,
    /// Signing destination basis files.
    pub signature: f64,
    /// Reading source segments and computing deltas against a basis.
    pub delta: f64,
    /// Reading and compressing source segments sent whole.
    pub read: f64,
    /// Rebuilding, verifying, committing on the destination (writes, renames, links, deletes).
    pub apply: f64,
}

/// Live counters for a progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Entries the source has listed so far.
    pub entries: u64,
    /// Bytes of regular files the source has listed so far.
    pub source_bytes: u64,
    /// File bytes rebuilt on the destination so far (a network round's source, which sees no
    /// destination work: bytes encoded and sent so far).
    pub bytes_done: u64,
    /// Files committed so far.
    pub files_done: u64,
    /// Whether the source has listed everything.
    pub scan_done: bool,
}

/// What one round did.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    /// The destination's account (authoritative for what changed).
    pub target: Stats,
    /// The source's account (what it read and sent).
    pub source: Stats,
    /// Busy time per phase.
    pub phases: PhaseTimes,
    /// Bytes that crossed the pipe each way, framing included: (source→target, target→source).
    pub wire_bytes: (u64, u64),
    /// Wall time of the round.
    pub elapsed: Duration,
    /// On the source: what the destination recorded of the round (from its `Done`).
    pub commit: Option<Commit>,
    /// On the source: how it compressed.
    pub compression: Option<CompressionReport>,
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The source session failed (its own error, or the target's abort).
    #[error("source: {0}")]
    Source(SessionError),
    /// The target session failed.
    #[error("destination: {0}")]
    Target(SessionError),
    /// A message broke the framing or the receiver's limits.
    #[error("message decoding: {0}")]
    Decode(#[from] ferry_core::message::DecodeError),
    /// The round stopped making progress (a bug: the sessions disagree about who moves).
    #[error("round stalled: no work in flight and no message to deliver")]
    Stalled,
    /// The connection to the peer failed mid-round.
    #[error("connection to the peer failed: {0}")]
    Link(#[from] ferry_transport::TransportError),
}

/// Something the driver loop waits for.
pub enum Event {
    /// A source work item finished.
    Source(u64, SourceOutcome, Phase, Duration),
    /// A target work item finished (with the raw bytes it wrote, for progress).
    Target(u64, TargetOutcome, Phase, Duration, u64),
    /// A message from the network peer, or the end of its stream.
    Peer(Result<Option<Message>, ferry_transport::TransportError>),
}

/// Which part of a round a work item belongs to, for timing.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    /// Walking a tree.
    Scan,
    /// Signing a basis.
    Signature,
    /// Diffing against a basis.
    Delta,
    /// Reading literal data.
    Read,
    /// Writing on the destination.
    Apply,
}

impl PhaseTimes {
    fn add(&mut self, p: Phase, d: Duration) {
        let s = d.as_secs_f64();
        match p {
            Phase::Scan => self.scan += s,
            Phase::Signature => self.signature += s,
            Phase::Delta => self.delta += s,
            Phase::Read => self.read += s,
            Phase::Apply => self.apply += s,
        }
    }
}

/// Work on at most this many bytes is small enough to batch (see [`Side::dispatch`]).
const SMALL_WORK: usize = 64 << 10;
/// Most small work items in one batch: enough to amortise the hand-off, few enough that the
/// session hears back soon and other workers get a share.
const BATCH_MAX: usize = 32;

/// Whether a target work item is small: a small file's data, its verification and
/// metadata, a link, a directory's metadata. Scans, signatures, commits (which fsync) and
/// deletes (a whole subtree) are not.
fn small_target_work(w: &TargetWork) -> bool {
    match w {
        TargetWork::Write { len, .. } => *len <= SMALL_WORK,
        TargetWork::Finish { entry, .. } => entry.size <= SMALL_WORK as u64,
        TargetWork::Retouch { .. }
        | TargetWork::MakeDir { .. }
        | TargetWork::Link { .. }
        | TargetWork::HardLink { .. }
        | TargetWork::DirMeta { .. }
        | TargetWork::Discard { .. } => true,
        _ => false,
    }
}

fn pool(name: &'static str, threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("ferry-{name}-{i}"))
        .build()
        .expect("thread pool creation only fails when threads cannot be spawned")
}

/// One session with the filesystem work it drives.
pub enum Side {
    /// The sending side.
    Source {
        /// The state machine.
        session: SourceSession,
        /// Where its work runs.
        fs: Arc<LocalSource>,
        /// Worker threads.
        pool: rayon::ThreadPool,
    },
    /// The receiving side.
    Target {
        /// The state machine.
        session: TargetSession,
        /// Where its work runs.
        fs: Arc<dyn Destination>,
        /// Worker threads.
        pool: rayon::ThreadPool,
    },
}

impl Side {
    /// A source side with `threads` workers.
    pub fn source(fs: Arc<LocalSource>, opts: &SessionOptions, threads: usize) -> Side {
        let mut session = SourceSession::new(with_inflight(opts, threads));
        if let Some(root) = fs.root_meta() {
            session.set_root(root);
        }
        Side::Source { session, fs, pool: pool("src", threads) }
    }

    /// A target side with `threads` workers.
    pub fn target(fs: Arc<dyn Destination>, opts: &SessionOptions, threads: usize) -> Side {
        let session = TargetSession::new(with_inflight(opts, threads));
        Side::Target { session, fs, pool: pool("dst", threads) }
    }

    fn poll_transmit(&mut self) -> Option<Message> {
        match self {
            Side::Source { session, .. } => session.poll_transmit(),
            Side::Target { session, .. } => session.poll_transmit(),
        }
    }

    fn handle_message(&mut self, m: Message) -> Result<(), SessionError> {
        match self {
            Side::Source { session, .. } => session.handle_message(m),
            Side::Target { session, .. } => session.handle_message(m),
        }
    }

    /// Hands every work item the session wants to the pool; returns how many.
    ///
    /// Small items (a small file's segment, its verification, a directory's or link's
    /// metadata) go in batches of up to [`BATCH_MAX`], run one after the other by one worker:
    /// per item, a pool hand-off costs two thread wake-ups, more than creating a small file.
    /// Large items keep a worker each, so big files still use every core.
    fn dispatch(&mut self, tx: &mpsc::Sender<Event>, on_item: &mut dyn FnMut(&Itemized)) -> usize {
        let mut n = 0;
        match self {
            Side::Source { session, fs, pool } => {
                let mut batch = Vec::new();
                let flush = |batch: &mut Vec<(WorkId, SourceWork, Phase)>| {
                    if batch.is_empty() {
                        return;
                    }
                    let (tx, fs, items) = (tx.clone(), fs.clone(), std::mem::take(batch));
                    pool.spawn(move || {
                        for (id, w, phase) in items {
                            let t = Instant::now();
                            let o = fs.perform(w);
                            let _ = tx.send(Event::Source(id, o, phase, t.elapsed()));
                        }
                    });
                };
                while let Some((id, w)) = session.poll_work() {
                    let phase = match &w {
                        SourceWork::Scan { .. } => Phase::Scan,
                        SourceWork::Segment { how: SegmentHow::Literal, .. } => Phase::Read,
                        SourceWork::Segment { .. } | SourceWork::Match { .. } => Phase::Delta,
                    };
                    n += 1;
                    if matches!(&w, SourceWork::Segment { len, .. } if *len <= SMALL_WORK) {
                        batch.push((id, w, phase));
                        if batch.len() >= BATCH_MAX {
                            flush(&mut batch);
                        }
                        continue;
                    }
                    let (tx, fs) = (tx.clone(), fs.clone());
                    pool.spawn(move || {
                        let t = Instant::now();
                        let o = fs.perform(w);
                        let _ = tx.send(Event::Source(id, o, phase, t.elapsed()));
                    });
                }
                flush(&mut batch);
            }
            Side::Target { session, fs, pool } => {
                while let Some(ev) = session.poll_event() {
                    on_item(&ev);
                }
                let mut batch = Vec::new();
                let flush = |batch: &mut Vec<(WorkId, TargetWork, Phase, u64)>| {
                    if batch.is_empty() {
                        return;
                    }
                    let (tx, fs, items) = (tx.clone(), fs.clone(), std::mem::take(batch));
                    pool.spawn(move || {
                        for (id, w, phase, bytes) in items {
                            let t = Instant::now();
                            let o = fs.perform(w);
                            let _ = tx.send(Event::Target(id, o, phase, t.elapsed(), bytes));
                        }
                    });
                };
                while let Some((id, w)) = session.poll_work() {
                    let phase = match &w {
                        TargetWork::Scan { .. } | TargetWork::HashLocal { .. } => Phase::Scan,
                        TargetWork::Signature { .. } | TargetWork::FineSignature { .. } => {
                            Phase::Signature
                        }
                        _ => Phase::Apply,
                    };
                    let bytes = match &w {
                        TargetWork::Write { len, .. } => *len as u64,
                        _ => 0,
                    };
                    n += 1;
                    if small_target_work(&w) {
                        batch.push((id, w, phase, bytes));
                        if batch.len() >= BATCH_MAX {
                            flush(&mut batch);
                        }
                        continue;
                    }
                    let (tx, fs) = (tx.clone(), fs.clone());
                    pool.spawn(move || {
                        let t = Instant::now();
                        let o = fs.perform(w);
                        let _ = tx.send(Event::Target(id, o, phase, t.elapsed(), bytes));
                    });
                }
                flush(&mut batch);
            }
        }
        n
    }

    fn finished(&self) -> bool {
        match self {
            Side::Source { session, .. } => session.is_finished(),
            Side::Target { session, .. } => session.is_finished(),
        }
    }

    /// Stats of the round: the destination's account (reported to the source at the end).
    fn stats(&self) -> Stats {
        match self {
            Side::Source { session, .. } => *session.target_stats().unwrap_or(session.stats()),
            Side::Target { session, .. } => *session.stats(),
        }
    }

    /// What the destination recorded of the round, as its `Done` told the source.
    fn commit(&self) -> Option<Commit> {
        match self {
            Side::Source { session, .. } => session.target_commit().cloned(),
            Side::Target { .. } => None,
        }
    }

    /// A source's compression report.
    fn compression(&self) -> Option<CompressionReport> {
        match self {
            Side::Source { fs, .. } => Some(fs.compression().report()),
            Side::Target { .. } => None,
        }
    }

    /// Feeds the source's adaptive compression one turn of the loop (see
    /// [`crate::round::compression`]): `backlog` bytes waiting for the link, `inflight` work
    /// items out of the pool's threads.
    fn adapt(&self, backlog: u64, inflight: usize) {
        if let Side::Source { fs, pool, .. } = self {
            let saturated = inflight >= pool.current_num_threads();
            if let Some(level) = fs.compression().adjust(backlog, saturated) {
                tracing::debug!("compression auto: level {level}");
            }
        }
    }

    fn take_error(&mut self) -> Option<SessionError> {
        match self {
            Side::Source { session, .. } => session.take_error(),
            Side::Target { .. } => None,
        }
    }
}

fn with_inflight(opts: &SessionOptions, threads: usize) -> SessionOptions {
    let mut o = opts.clone();
    o.max_inflight_work = o.max_inflight_work.max(threads.max(1) * 2);
    o
}

/// Bookkeeping shared by both loops.
struct Loop {
    inflight: usize,
    phases: PhaseTimes,
    progress: Progress,
    last_progress: Instant,
}

impl Loop {
    fn new() -> Loop {
        Loop {
            inflight: 0,
            phases: PhaseTimes::default(),
            progress: Progress::default(),
            last_progress: Instant::now(),
        }
    }

    /// Feeds a finished work item to its side; `Err` is that side's session error.
    fn on_done(&mut self, side: &mut Side, ev: Event) -> Result<(), SessionError> {
        self.inflight -= 1;
        match (side, ev) {
            (Side::Source { session, .. }, Event::Source(id, o, p, t)) => {
                self.phases.add(p, t);
                session.handle_outcome(id, o)
            }
            (Side::Target { session, .. }, Event::Target(id, o, p, t, bytes)) => {
                self.phases.add(p, t);
                if matches!(o, TargetOutcome::Written { .. }) {
                    self.progress.bytes_done += bytes;
                }
                if matches!(o, TargetOutcome::Verified(_)) {
                    self.progress.files_done += 1;
                }
                session.handle_outcome(id, o)
            }
            _ => Ok(()),
        }
    }

    fn tick(&mut self, side: &Side, every: Duration, on_progress: &mut dyn FnMut(&Progress)) {
        if self.last_progress.elapsed() < every {
            return;
        }
        self.last_progress = Instant::now();
        match side {
            Side::Source { session, .. } => {
                let s = session.stats();
                self.progress.entries = s.entries_scanned;
                self.progress.source_bytes = s.source_bytes;
                self.progress.scan_done = session.scan_done();
            }
            Side::Target { session, .. } => {
                let s = session.stats();
                self.progress.entries = s.entries_scanned;
                self.progress.source_bytes = s.source_bytes;
            }
        }
        on_progress(&self.progress);
    }
}

/// Runs one round between a local source and a destination, both in this process.
///
/// `on_item` sees every line of the itemized plan; `on_progress` is called at most every
/// `progress_every`.
///
/// # Errors
/// [`RoundError`] when either side fails; the destination then holds nothing unverified.
#[allow(clippy::too_many_arguments)]
pub fn run_local(
    source: Arc<LocalSource>,
    dest: Arc<dyn Destination>,
    opts: &SessionOptions,
    threads: usize,
    on_item: &mut dyn FnMut(&Itemized),
    on_progress: &mut dyn FnMut(&Progress),
    progress_every: Duration,
) -> Result<RoundOutcome, RoundError> {
    let start = Instant::now();
    let mut src = Side::source(source, opts, threads);
    let mut dst = Side::target(dest, opts, threads);
    let mut s2t = MemoryPipe::new(opts.limits);
    let mut t2s = MemoryPipe::new(opts.limits);
    let (tx, rx) = mpsc::channel::<Event>();
    let mut lp = Loop::new();
    let mut src_err: Option<SessionError> = None;
    let mut dst_err: Option<SessionError> = None;
    loop {
        let mut moved = false;
        while let Some(m) = src.poll_transmit() {
            s2t.send(&m);
            moved = true;
        }
        while let Some(m) = dst.poll_transmit() {
            t2s.send(&m);
            moved = true;
        }
        while let Some(m) = s2t.recv()? {
            if let Err(e) = dst.handle_message(m) {
                dst_err.get_or_insert(e);
            }
            moved = true;
        }
        while let Some(m) = t2s.recv()? {
            if let Err(e) = src.handle_message(m) {
                src_err.get_or_insert(e);
            }
            moved = true;
        }
        let n = src.dispatch(&tx, on_item) + dst.dispatch(&tx, on_item);
        lp.inflight += n;
        moved |= n > 0;
        let over = (src.finished() || src_err.is_some()) && (dst.finished() || dst_err.is_some());
        if over && lp.inflight == 0 {
            break;
        }
        if (src_err.is_some() || dst_err.is_some()) && lp.inflight == 0 && !moved {
            break;
        }
        let first = if moved {
            rx.try_recv().ok()
        } else if lp.inflight > 0 {
            rx.recv().ok()
        } else {
            return Err(RoundError::Stalled);
        };
        let mut next = first;
        while let Some(ev) = next {
            let side = if matches!(ev, Event::Source(..)) { &mut src } else { &mut dst };
            let err = if matches!(ev, Event::Source(..)) { &mut src_err } else { &mut dst_err };
            if let Err(e) = lp.on_done(side, ev) {
                err.get_or_insert(e);
            }
            next = rx.try_recv().ok();
        }
        lp.tick(&src, progress_every, on_progress);
    }
    if let Some(e) = dst_err {
        return Err(RoundError::Target(e));
    }
    if let Some(e) = src_err.or_else(|| src.take_error()) {
        return Err(RoundError::Source(e));
    }
    Ok(RoundOutcome {
        target: src.stats(),
        source: match &src {
            Side::Source { session, .. } => *session.stats(),
            Side::Target { .. } => Stats::default(),
        },
        phases: lp.phases,
        wire_bytes: (s2t.bytes(), t2s.bytes()),
        elapsed: start.elapsed(),
        // In-process: no agent records the round.
        commit: None,
        compression: src.compression(),
    })
}

/// The network side of a remote round: where to send messages, and counters of the bytes
/// that crossed the link (filled by the reader and writer tasks).
pub struct Peer {
    /// Messages for the peer's writer task.
    pub outgoing: tokio::sync::mpsc::UnboundedSender<Message>,
    /// Bytes written to the link so far.
    pub sent: Arc<std::sync::atomic::AtomicU64>,
    /// Bytes read from the link so far.
    pub received: Arc<std::sync::atomic::AtomicU64>,
    /// Bytes of messages handed to `outgoing` so far (bulk payloads only: never more than
    /// their encoding, so `queued - sent` never overstates what waits).
    pub queued: std::sync::atomic::AtomicU64,
}

impl Peer {
    /// A handle on a link's writer queue and byte counters.
    pub fn new(
        outgoing: tokio::sync::mpsc::UnboundedSender<Message>,
        sent: Arc<std::sync::atomic::AtomicU64>,
        received: Arc<std::sync::atomic::AtomicU64>,
    ) -> Peer {
        Peer { outgoing, sent, received, queued: std::sync::atomic::AtomicU64::new(0) }
    }

    fn send(&self, m: Message) {
        use std::sync::atomic::Ordering;
        let bulk = match &m {
            Message::Segment { data, .. } => data.len(),
            Message::SignaturePiece { blocks, .. } => blocks.len(),
            Message::Entries(es) => es.iter().map(|e| e.path.as_bytes().len()).sum(),
            _ => 0,
        };
        self.queued.fetch_add(bulk as u64, Ordering::Relaxed);
        // A closed writer surfaces as the reader's end of stream.
        let _ = self.outgoing.send(m);
    }

    /// Whether the writers are less than [`OUTGOING_QUEUE_BYTES`] behind: a peer that stops
    /// reading stops the round here (the session is neither drained nor given work) instead
    /// of filling our memory.
    fn has_room(&self) -> bool {
        self.backlog() < OUTGOING_QUEUE_BYTES
    }

    /// Bulk bytes handed to the writers and not yet written to the link.
    fn backlog(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let queued = self.queued.load(Ordering::Relaxed);
        queued.saturating_sub(self.sent.load(Ordering::Relaxed))
    }
}

/// How long the driver waits for the writers to catch up before it looks again.
const BACKPRESSURE_POLL: Duration = Duration::from_millis(5);

/// Runs one side of a round against a network peer. Events (work outcomes and the peer's
/// messages) arrive on `rx`; the link's reader task must send [`Event::Peer`] on `tx`.
///
/// # Errors
/// [`RoundError`] when the session fails or the link breaks.
#[allow(clippy::too_many_arguments)]
pub fn run_remote(
    mut side: Side,
    peer: &Peer,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    on_item: &mut dyn FnMut(&Itemized),
    on_progress: &mut dyn FnMut(&Progress),
    progress_every: Duration,
) -> Result<RoundOutcome, RoundError> {
    use std::sync::atomic::Ordering;
    let start = Instant::now();
    let mut lp = Loop::new();
    let mut err: Option<SessionError> = None;
    let mut link_err: Option<ferry_transport::TransportError> = None;
    let mut peer_open = true;
    loop {
        // Backpressure: messages go out only while the writers keep up, and no new work
        // starts (so no new messages are made) while they do not. The peer's messages are
        // still taken in meanwhile.
        while peer.has_room() {
            let Some(m) = side.poll_transmit() else { break };
            peer.send(m);
        }
        let room = peer.has_room();
        let n = if room { side.dispatch(&tx, on_item) } else { 0 };
        lp.inflight += n;
        if (side.finished() || err.is_some() || link_err.is_some()) && lp.inflight == 0 {
            break;
        }
        if !peer_open && lp.inflight == 0 && n == 0 {
            break;
        }
        side.adapt(peer.backlog(), lp.inflight);
        let first = if room {
            let Ok(first) = rx.recv() else { break };
            first
        } else {
            match rx.recv_timeout(BACKPRESSURE_POLL) {
                Ok(ev) => ev,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut next = Some(first);
        while let Some(ev) = next {
            match ev {
                Event::Peer(Ok(Some(m))) => {
                    if let Err(e) = side.handle_message(m) {
                        err.get_or_insert(e);
                    }
                }
                Event::Peer(Ok(None)) => {
                    peer_open = false;
                    if !side.finished() {
                        link_err.get_or_insert(ferry_transport::TransportError::Closed);
                    }
                }
                Event::Peer(Err(e)) => {
                    peer_open = false;
                    if matches!(e.root(), ferry_transport::TransportError::Frame(_)) {
                        // Tell a peer that sends garbage why we stop listening.
                        let reason = format!("protocol error from peer: {e}");
                        let _ = peer.outgoing.send(Message::Abort { reason });
                    }
                    link_err.get_or_insert(e);
                }
                ev => {
                    if let Err(e) = lp.on_done(&mut side, ev) {
                        err.get_or_insert(e);
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Side::Source { session, .. } = &side {
            // A local sync counts the destination's writes; a remote source has only its own.
            let st = session.stats();
            lp.progress.bytes_done = st.literal_bytes + st.matched_bytes + st.resumed_bytes;
        }
        lp.tick(&side, progress_every, on_progress);
    }
    // Flush whatever the session said last (an Abort, or Done).
    while let Some(m) = side.poll_transmit() {
        peer.send(m);
    }
    let is_source = matches!(side, Side::Source { .. });
    if let Some(e) = err.or_else(|| side.take_error()) {
        return Err(if is_source { RoundError::Source(e) } else { RoundError::Target(e) });
    }
    if !side.finished() {
        if let Some(e) = link_err {
            return Err(RoundError::Link(e));
        }
        return Err(RoundError::Stalled);
    }
    Ok(RoundOutcome {
        target: side.stats(),
        source: match &side {
            Side::Source { session, .. } => *session.stats(),
            Side::Target { .. } => Stats::default(),
        },
        phases: lp.phases,
        wire_bytes: (peer.sent.load(Ordering::Relaxed), peer.received.load(Ordering::Relaxed)),
        elapsed: start.elapsed(),
        commit: side.commit(),
        compression: side.compression(),
    })
}
