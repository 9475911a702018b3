//! The driver: pumps messages between the sessions and runs the work they ask for.
//!
//! `ferry sync` runs both sessions in this process. Their messages go through a
//! [`MemoryPipe`] each way, framed and decoded with the receiver's limits, exactly as they
//! will on a network; the work runs on two rayon pools (one per side, so neither side's
//! backlog can starve the other) and comes back through a channel.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::delta::SegmentHow;
use ferry_core::session::{Itemized, SessionError};
use ferry_core::{
    SessionOptions, SourceOutcome, SourceSession, SourceWork, Stats, TargetOutcome, TargetSession,
    TargetWork,
};
use ferry_transport::MemoryPipe;
use serde::Serialize;

use crate::source::LocalSource;
use crate::target::Destination;

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
    /// File bytes rebuilt on the destination so far.
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
}

enum Done {
    Source(u64, SourceOutcome, Phase, Duration),
    Target(u64, TargetOutcome, Phase, Duration, u64),
}

#[derive(Clone, Copy)]
enum Phase {
    Scan,
    Signature,
    Delta,
    Read,
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
    let threads = threads.max(1);
    let pool = |name: &'static str| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("ferry-{name}-{i}"))
            .build()
            .expect("thread pool creation only fails when threads cannot be spawned")
    };
    let src_pool = pool("src");
    let dst_pool = pool("dst");
    let mut opts = opts.clone();
    opts.max_inflight_work = opts.max_inflight_work.max(threads * 2);
    let mut src = SourceSession::new(opts.clone());
    if let Some(root) = source.root_meta() {
        src.set_root(root);
    }
    let mut dst = TargetSession::new(opts.clone());
    let mut s2t = MemoryPipe::new(opts.limits);
    let mut t2s = MemoryPipe::new(opts.limits);
    let (tx, rx) = mpsc::channel::<Done>();
    let mut inflight = 0usize;
    let mut phases = PhaseTimes::default();
    let mut progress = Progress::default();
    let mut last_progress = Instant::now();
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
        while let Some(ev) = dst.poll_event() {
            on_item(&ev);
        }
        while let Some((id, w)) = src.poll_work() {
            let phase = match &w {
                SourceWork::Scan { .. } => Phase::Scan,
                SourceWork::Segment { how: SegmentHow::Literal, .. } => Phase::Read,
                SourceWork::Segment { .. } | SourceWork::Match { .. } => Phase::Delta,
            };
            let (tx, s) = (tx.clone(), source.clone());
            inflight += 1;
            moved = true;
            src_pool.spawn(move || {
                let t = Instant::now();
                let o = s.perform(w);
                let _ = tx.send(Done::Source(id, o, phase, t.elapsed()));
            });
        }
        while let Some((id, w)) = dst.poll_work() {
            let phase = match &w {
                TargetWork::Scan { .. } | TargetWork::HashLocal { .. } => Phase::Scan,
                TargetWork::Signature { .. } | TargetWork::FineSignature { .. } => Phase::Signature,
                _ => Phase::Apply,
            };
            let bytes = match &w {
                TargetWork::Write { len, .. } => *len as u64,
                _ => 0,
            };
            let (tx, d) = (tx.clone(), dest.clone());
            inflight += 1;
            moved = true;
            dst_pool.spawn(move || {
                let t = Instant::now();
                let o = d.perform(w);
                let _ = tx.send(Done::Target(id, o, phase, t.elapsed(), bytes));
            });
        }
        let over =
            (src.is_finished() || src_err.is_some()) && (dst.is_finished() || dst_err.is_some());
        if over && inflight == 0 {
            break;
        }
        if (src_err.is_some() || dst_err.is_some()) && inflight == 0 && !moved {
            break;
        }
        let done = if moved {
            rx.try_recv().ok()
        } else if inflight > 0 {
            rx.recv().ok()
        } else {
            return Err(RoundError::Stalled);
        };
        let Some(mut d) = done else { continue };
        loop {
            inflight -= 1;
            match d {
                Done::Source(id, o, p, t) => {
                    phases.add(p, t);
                    if let Err(e) = src.handle_outcome(id, o) {
                        src_err.get_or_insert(e);
                    }
                }
                Done::Target(id, o, p, t, bytes) => {
                    phases.add(p, t);
                    if matches!(o, TargetOutcome::Written { .. }) {
                        progress.bytes_done += bytes;
                    }
                    if matches!(o, TargetOutcome::Committed(_)) {
                        progress.files_done += 1;
                    }
                    if let Err(e) = dst.handle_outcome(id, o) {
                        dst_err.get_or_insert(e);
                    }
                }
            }
            match rx.try_recv() {
                Ok(next) => d = next,
                Err(_) => break,
            }
        }
        if last_progress.elapsed() >= progress_every {
            last_progress = Instant::now();
            let s = src.stats();
            progress.entries = s.entries_scanned;
            progress.source_bytes = s.source_bytes;
            on_progress(&progress);
        }
    }
    if let Some(e) = dst_err {
        return Err(RoundError::Target(e));
    }
    if let Some(e) = src_err {
        return Err(RoundError::Source(e));
    }
    if let Some(e) = src.take_error() {
        return Err(RoundError::Source(e));
    }
    let target = *src.target_stats().unwrap_or(dst.stats());
    Ok(RoundOutcome {
        target,
        source: *src.stats(),
        phases,
        wire_bytes: (s2t.bytes(), t2s.bytes()),
        elapsed: start.elapsed(),
    })
}
