//! A round's sessions over an authenticated link: lanes, reader and writer tasks, the driver
//! on a blocking thread, and the orderly close.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::message::Commit;
use ferry_core::session::Itemized;
use ferry_core::{Limits, Message, Stats};
use ferry_transport::idle::Idle;
use ferry_transport::lanes::{self, Lanes};
use ferry_transport::net::{Link, LinkKind};
use ferry_transport::TransportError;

use super::RemoteError;
use crate::fs::dest::LocalDestination;
use crate::round::driver::{run_remote, Event, Peer, Progress, RoundError, RoundOutcome, Side};
use crate::round::SyncError;
use crate::state::{ModuleState, RoundEnd, StateConfig, StateRound};

#[derive(Clone, Copy)]
enum SideKind {
    Source,
    Target,
}

/// The lane a message travels on: per-file messages on data lane `1 + file % data` (so each
/// file's messages keep their order and different files do not queue behind each other), the
/// rest on the control lane 0.
fn lane_of(m: &Message, data: usize) -> usize {
    match (m.file(), data) {
        (Some(f), d) if d > 0 => 1 + (f % d as u64) as usize,
        _ => 0,
    }
}

/// Work a destination finishes before its last message: called with its final stats, it
/// returns what the destination recorded of the round, which `Done` then carries.
pub(super) type BeforeDone = Box<dyn FnOnce(&Stats) -> Commit + Send>;

/// Work to do at a round's edges, beside the round itself.
pub(super) struct Hooks {
    /// Called with each itemized change.
    pub on_item: Box<dyn FnMut(&Itemized) + Send>,
    /// Called with progress, every `progress_every`.
    pub on_progress: Box<dyn FnMut(&Progress) + Send>,
    /// How often progress is reported.
    pub progress_every: Duration,
    /// On the destination: run (blocking) with its final stats after its last file is
    /// committed and before its last message (`Done`) leaves. The source ends the round when
    /// it hears `Done`, so whatever it must find finished is done here.
    pub before_done: Option<BeforeDone>,
}

impl Hooks {
    /// No callbacks.
    pub(super) fn none() -> Hooks {
        Hooks {
            on_item: Box::new(|_| {}),
            on_progress: Box::new(|_| {}),
            progress_every: Duration::from_secs(3600),
            before_done: None,
        }
    }
}

/// A destination's state-directory lifecycle around one round over a link, the same for a
/// push into `ferry serve` and a `ferry pull` ([`StateRound`]): begun before the walk, ended
/// in the [`Hooks::before_done`] hook when the round's files are committed (so `Done` says
/// what was recorded), or ended as failed after a round that never got there.
pub(super) struct Recording {
    pending: Arc<Mutex<Option<StateRound>>>,
    ended: Arc<Mutex<Option<(RoundEnd, Duration)>>>,
}

impl Recording {
    /// Begins a round of `module` (its data at `path`) into `dest`: claims the module's state
    /// and attaches the journal and the signature cache. Off the async workers: it reads the
    /// journal and stats cached files.
    ///
    /// # Errors
    /// [`RemoteError::StateBusy`] when another process runs a round of the module with this
    /// state directory; [`RemoteError::Local`] when the blocking task failed.
    pub(super) async fn begin(
        state: &StateConfig,
        module: &str,
        path: &Path,
        dest: &Arc<LocalDestination>,
        dry_run: bool,
    ) -> Result<Recording, RemoteError> {
        let (ms, st, owned, dest) =
            (ModuleState::new(&state.dir, module), state.clone(), path.to_path_buf(), dest.clone());
        let round =
            tokio::task::spawn_blocking(move || ms.begin_round(&st, &owned, &dest, dry_run))
                .await
                .map_err(|e| {
                    RemoteError::Local(SyncError::Destination {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(e),
                    })
                })??;
        Ok(Recording {
            pending: Arc::new(Mutex::new(Some(round))),
            ended: Arc::new(Mutex::new(None)),
        })
    }

    /// Whether the destination may offer the source what a cut round left (resume).
    pub(super) fn resumes(&self) -> bool {
        crate::lock(&self.pending).as_ref().is_some_and(StateRound::resumes)
    }

    /// The hook that ends a committed round with the destination's final stats; `tell` turns
    /// what was recorded into what the source is told in `Done`.
    pub(super) fn before_done(
        &self,
        tell: impl FnOnce(Commit) -> Commit + Send + 'static,
    ) -> BeforeDone {
        let (pending, ended) = (self.pending.clone(), self.ended.clone());
        Box::new(move |stats: &Stats| {
            let Some(r) = crate::lock(&pending).take() else { return Commit::Unrecorded };
            let started = Instant::now();
            let end = r.committed(stats);
            let commit = end.commit();
            *crate::lock(&ended) = Some((end, started.elapsed()));
            tell(commit)
        })
    }

    /// After the round: one that never reached `Done` ends the state's way for a failed round
    /// (journal kept, cache stamped). Returns what the state directory did and how long its
    /// part of the round's end took.
    pub(super) async fn finish(self) -> Option<(RoundEnd, Duration)> {
        let unfinished = crate::lock(&self.pending).take();
        if let Some(r) = unfinished {
            let started = Instant::now();
            if let Ok(end) = tokio::task::spawn_blocking(move || r.failed()).await {
                *crate::lock(&self.ended) = Some((end, started.elapsed()));
            }
        }
        let ended = crate::lock(&self.ended).take();
        ended
    }
}

/// Runs `side` over `link` (after the handshake) with `data` extra QUIC streams (0: the
/// link's stream alone): reader tasks feeding the driver's event channel in dependency order,
/// writer tasks draining its outgoing messages (paced by `bwlimit`), and the driver on a
/// blocking thread.
///
/// `idle` is the round's idle timeout. QUIC enforces its own (quinn's keep-alives and idle
/// timer); on TCP and stdio the link is wrapped in [`Idle`] (a read or write waiting on the
/// peer that long fails, transiently) and lane 0 carries keep-alive frames every third of
/// it, so a peer that stops cannot hold the round (and its module) while a slow, honest one
/// never looks idle.
#[allow(clippy::too_many_arguments)] // The round's parts, each used once: a struct adds nothing.
pub(super) async fn run_over_link(
    mut link: Link,
    data: usize,
    client: bool,
    side: Side,
    limits: Limits,
    bwlimit: u64,
    idle: Duration,
    hooks: Hooks,
) -> Result<RoundOutcome, RoundError> {
    let Hooks { on_item, on_progress, progress_every, before_done } = hooks;
    let (kind, peer) = (link.kind, link.peer.clone());
    let keepalive = if kind == LinkKind::Quic {
        None
    } else {
        link.reader = Box::pin(Idle::new(link.reader, idle));
        link.writer = Box::pin(Idle::new(link.writer, idle));
        Some(lanes::keepalive_interval(idle))
    };
    let (lanes_, quic) = lanes::split(link, data, client).await.map_err(RoundError::Link)?;
    let side_kind =
        if matches!(side, Side::Source { .. }) { SideKind::Source } else { SideKind::Target };
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<Event>();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let Lanes { readers, writers } = lanes_;
    let mut incoming = lanes::spawn_readers(readers, limits, received.clone());
    let reader_tx = tx.clone();
    let reader_task = tokio::spawn(async move {
        loop {
            let r = incoming.next().await;
            let end = !matches!(r, Ok(Some(_)));
            if reader_tx.send(Event::Peer(r)).is_err() || end {
                break;
            }
        }
    });
    let (mut lane_tx, writers_done) =
        lanes::spawn_writers(writers, sent.clone(), bwlimit, keepalive);
    let mut before_done = before_done;
    let router = tokio::spawn(async move {
        let data = lane_tx.data_lanes();
        while let Some(mut m) = out_rx.recv().await {
            if let Message::Done { stats, commit } = &mut m {
                // The peer takes Done as the end of the round: what must be finished by then
                // (a commit, a snapshot, a scratch tree removed) is finished first, and Done
                // says how it went.
                if let Some(hook) = before_done.take() {
                    let stats = *stats;
                    *commit = match tokio::task::spawn_blocking(move || hook(&stats)).await {
                        Ok(c) => c,
                        Err(e) => Commit::failed(&format!("recording the round: {e}")),
                    };
                }
            }
            let barrier = m.is_barrier();
            lane_tx.send(lane_of(&m, data), m, barrier);
        }
        // Dropping the sender lets every lane flush and close.
    });
    let peer_handle = Peer::new(out_tx, sent, received);
    let driver = tokio::task::spawn_blocking(move || {
        let (mut on_item, mut on_progress) = (on_item, on_progress);
        let r = run_remote(
            side,
            &peer_handle,
            tx,
            rx,
            &mut *on_item,
            &mut *on_progress,
            progress_every,
        );
        drop(peer_handle);
        r
    });
    let is_source = matches!(side_kind, SideKind::Source);
    let result =
        driver.await.map_err(|e| RoundError::Link(TransportError::Io(std::io::Error::other(e))))?;
    let _ = router.await;
    let _ = writers_done.await;
    if let Some((conn, endpoint)) = quic {
        // The target speaks last (Done); the source, having heard it, closes at once. The
        // target waits (bounded) for that close, so its Done is never cut off in flight.
        if !is_source || result.is_err() {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
        conn.close(0u32.into(), b"round over");
        if let Some(ep) = endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
    }
    reader_task.abort();
    tracing::debug!("round with {peer} over {kind} ({data} data lanes) finished");
    result
}

/// After a failed round, keeps the destination's whole, verified files (see
/// [`crate::fs::dest::LocalDestination::salvage`]) when the link failed transiently (a cut, a
/// timeout); a protocol error keeps nothing of the round.
pub(super) fn salvage(dest: Option<&crate::fs::dest::LocalDestination>, e: &RoundError) {
    if let (Some(d), RoundError::Link(t)) = (dest, e) {
        if !t.is_transient() {
            return;
        }
        let n = d.salvage();
        if n > 0 {
            tracing::info!("the round failed ({e}); {n} whole, verified files kept in place");
        }
    }
}
