//! What an unattended agent reports: the status record (`--status-file`, `ferry status`,
//! `GET /status`), Prometheus metrics (`GET /metrics`), probes (`/healthz`, `/readyz`) and the
//! manual trigger (`POST /trigger`, also SIGUSR1), served on `--http ADDR` by [`super::http`].

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ferry_core::Stats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::lock;
use crate::round::driver::{PhaseTimes, Progress};
use crate::round::Report;

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The round in progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CurrentRound {
    /// When it started.
    pub started_unix: f64,
    /// Entries listed so far.
    pub entries: u64,
    /// Bytes of regular files listed so far.
    pub source_bytes: u64,
    /// Whether listing is complete.
    pub scan_done: bool,
    /// File bytes moved so far (sent by a source, rebuilt by a destination).
    pub bytes_done: u64,
    /// Files committed so far (destination side).
    pub files_done: u64,
    /// At most this many seconds left, at the rate so far, if every listed byte still had to
    /// move (unchanged files do not, so the round usually ends sooner); once listing is done.
    pub eta_secs_at_most: Option<f64>,
}

/// Where replication stands: written to `--status-file` after every round, served as
/// `GET /status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// Start of the last round.
    pub last_start_unix: f64,
    /// End of the last round.
    pub last_end_unix: f64,
    /// Its duration.
    pub last_duration_secs: f64,
    /// `ok`, `partial` (the round ran but the source could not read all of its tree: what
    /// was read was copied, nothing was deleted, no snapshot was taken; exit code 23), or
    /// `error: ...`.
    pub last_result: String,
    /// Attempts it took (retries + 1).
    pub last_attempts: u32,
    /// The transport it used.
    pub last_transport: Option<String>,
    /// Its stats (files changed, literal/matched bytes, ...).
    pub last_stats: Option<Stats>,
    /// Bytes it put on the wire.
    pub last_wire_bytes_sent: u64,
    /// Start of the last successful round: the copy is as of then.
    #[serde(default)]
    pub last_success_start_unix: Option<f64>,
    /// End of the last successful round.
    pub last_success_unix: Option<f64>,
    /// Rounds that succeeded.
    pub rounds_ok: u64,
    /// Rounds that failed (after their retries).
    pub rounds_failed: u64,
    /// Rounds that were partial (counted in neither `rounds_ok` nor `rounds_failed`).
    #[serde(default)]
    pub rounds_partial: u64,
    /// Retries over all rounds.
    #[serde(default)]
    pub retries: u64,
    /// Scheduled times skipped because a round overran them.
    pub missed_intervals: u64,
    /// When the next round is due.
    pub next_run_unix: Option<f64>,
    /// The newest snapshot (destination side, with `--state-dir`).
    #[serde(default)]
    pub latest_snapshot: Option<String>,
    /// The newest ready VolumeSnapshot (destination side, `--snapshot csi`), as VolSync
    /// reports it: `{"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
    /// "name": ...}`.
    #[serde(default, rename = "latestImage", skip_serializing_if = "Option::is_none")]
    pub latest_image: Option<LatestImage>,
    /// Why the last CSI snapshot failed (`--snapshot csi`); cleared by one that succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_error: Option<String>,
    /// What the destination recorded of the last successful round: of a push, what the
    /// server recorded; of a pull with `--state-dir`, what this side did. Round, snapshot id
    /// and root hash once it is durable there.
    #[serde(default)]
    pub last_commit: Option<crate::round::CommitReport>,
    /// The round in progress, if any.
    #[serde(default)]
    pub current: Option<CurrentRound>,
}

/// A reference to a VolumeSnapshot (a Kubernetes `TypedLocalObjectReference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestImage {
    /// `snapshot.storage.k8s.io`.
    pub api_group: String,
    /// `VolumeSnapshot`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

impl Status {
    /// Records a finished round.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        start: SystemTime,
        end: SystemTime,
        attempts: u32,
        result: Result<&Report, String>,
        next: Option<SystemTime>,
        missed: u64,
    ) {
        self.last_start_unix = unix(start);
        self.last_end_unix = unix(end);
        self.last_duration_secs = self.last_end_unix - self.last_start_unix;
        self.last_attempts = attempts;
        self.retries += u64::from(attempts.saturating_sub(1));
        self.missed_intervals += missed;
        self.next_run_unix = next.map(unix);
        self.current = None;
        match result {
            Ok(r) if r.partial => {
                // Not a success: the copy is not complete as of this round's start.
                self.last_result = "partial".into();
                self.last_transport = r.transport.clone();
                self.last_stats = Some(r.stats);
                self.last_wire_bytes_sent = r.wire_bytes_sent;
                self.rounds_partial += 1;
            }
            Ok(r) => {
                self.last_result = "ok".into();
                self.last_transport = r.transport.clone();
                self.last_stats = Some(r.stats);
                self.last_wire_bytes_sent = r.wire_bytes_sent;
                self.last_commit = r.commit.clone();
                self.last_success_start_unix = Some(self.last_start_unix);
                self.last_success_unix = Some(self.last_end_unix);
                self.rounds_ok += 1;
            }
            Err(e) => {
                self.last_result = format!("error: {e}");
                self.rounds_failed += 1;
            }
        }
    }

    /// Seconds the copy is behind at `now`: since the start of the last successful round.
    pub fn out_of_sync_secs(&self, now: SystemTime) -> Option<f64> {
        self.last_success_start_unix.map(|s| (unix(now) - s).max(0.0))
    }

    /// Writes the status to `path` atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        crate::fs::write_atomic(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

type Labels = Vec<(String, String)>;

/// The Prometheus metrics of an agent.
#[derive(Debug)]
struct Metrics {
    registry: Registry,
    rounds: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    files: Family<Labels, Counter>,
    retries: Counter,
    missed: Counter,
    duration: Histogram,
    phases: Family<Labels, Counter<f64, AtomicU64>>,
    out_of_sync: Gauge<f64, AtomicU64>,
    sigcache: Family<Labels, Counter>,
    sigcache_bytes: Counter,
    identity_reloads: Family<Labels, Counter>,
    csi: Family<Labels, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ferry");
        let rounds = Family::<Labels, Counter>::default();
        registry.register("rounds", "Rounds finished, by result", rounds.clone());
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "bytes",
            "Bytes of successful rounds: literal and matched file data, and the wire",
            bytes.clone(),
        );
        let files = Family::<Labels, Counter>::default();
        registry.register("files", "Files of successful rounds, by what happened", files.clone());
        let retries = Counter::default();
        registry.register(
            "retries",
            "Round attempts retried after a transient error",
            retries.clone(),
        );
        let missed = Counter::default();
        registry.register(
            "missed_intervals",
            "Scheduled times skipped by overrunning rounds",
            missed.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register("round_duration_seconds", "Wall time of rounds", duration.clone());
        let phases = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "phase_seconds",
            "Thread-seconds per phase of successful rounds",
            phases.clone(),
        );
        let out_of_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "out_of_sync_seconds",
            "Seconds since the start of the last successful round (how old the copy is)",
            out_of_sync.clone(),
        );
        let sigcache = Family::<Labels, Counter>::default();
        registry.register(
            "signature_cache",
            "Destination signature cache: hits, misses, signatures stored and entries dropped",
            sigcache.clone(),
        );
        let sigcache_bytes = Counter::default();
        registry.register(
            "signature_cache_hit_bytes",
            "Bytes of basis files not re-read to sign them, thanks to the signature cache",
            sigcache_bytes.clone(),
        );
        let identity_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "identity_reloads",
            "Changed --identity files: taken into use (ok) or refused, the previous kept (rejected)",
            identity_reloads.clone(),
        );
        let csi = Family::<Labels, Counter>::default();
        registry.register(
            "csi_snapshots",
            "CSI VolumeSnapshots after committed rounds, by result (ready, failed) and reason",
            csi.clone(),
        );
        Metrics {
            csi,
            registry,
            rounds,
            bytes,
            files,
            retries,
            missed,
            duration,
            phases,
            out_of_sync,
            sigcache,
            sigcache_bytes,
            identity_reloads,
        }
    }

    fn label(k: &str, v: &str) -> Labels {
        vec![(k.to_string(), v.to_string())]
    }

    fn record(&self, secs: f64, attempts: u32, missed: u64, result: Result<&Report, String>) {
        self.duration.observe(secs);
        self.retries.inc_by(u64::from(attempts.saturating_sub(1)));
        self.missed.inc_by(missed);
        let Ok(r) = result else {
            self.rounds.get_or_create(&Self::label("result", "error")).inc();
            return;
        };
        let label = if r.partial { "partial" } else { "ok" };
        self.rounds.get_or_create(&Self::label("result", label)).inc();
        let s = &r.stats;
        for (k, v) in [
            ("literal", s.literal_bytes),
            ("matched", s.matched_bytes),
            ("resumed", s.resumed_bytes),
            ("wire_sent", r.wire_bytes_sent),
            ("wire_received", r.wire_bytes_received),
        ] {
            self.bytes.get_or_create(&Self::label("kind", k)).inc_by(v);
        }
        for (k, v) in [
            ("new", s.files_new),
            ("changed", s.files_changed),
            ("metadata", s.files_metadata),
            ("deleted", s.files_deleted),
            ("failed", s.files_failed),
        ] {
            self.files.get_or_create(&Self::label("kind", k)).inc_by(v);
        }
        let p: &PhaseTimes = &r.phases;
        for (k, v) in [
            ("scan", p.scan),
            ("signature", p.signature),
            ("delta", p.delta),
            ("read", p.read),
            ("apply", p.apply),
        ] {
            self.phases.get_or_create(&Self::label("phase", k)).inc_by(v);
        }
    }
}

/// An agent's live state, shared by its round loop, its HTTP endpoint and its signal handler.
#[derive(Debug)]
pub struct Agent {
    status: Mutex<Status>,
    metrics: Metrics,
    trigger: Mutex<std::sync::mpsc::Sender<()>>,
    /// Whether this agent runs rounds itself (push/pull); a server only serves them.
    schedules: bool,
}

impl Agent {
    /// A new agent state and the receiving end of its manual trigger.
    pub fn new(schedules: bool) -> (Arc<Agent>, std::sync::mpsc::Receiver<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let a = Agent {
            status: Mutex::new(Status::default()),
            metrics: Metrics::new(),
            trigger: Mutex::new(tx),
            schedules,
        };
        (Arc::new(a), rx)
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Whether this agent runs rounds of its own (push/pull), so that a trigger means something.
    pub fn schedules(&self) -> bool {
        self.schedules
    }

    /// Asks for a round now (the round loop wakes up).
    pub fn trigger(&self) {
        let _ = lock(&self.trigger).send(());
    }

    /// Marks a round as started.
    pub fn round_started(&self, at: SystemTime) {
        lock(&self.status).current =
            Some(CurrentRound { started_unix: unix(at), ..CurrentRound::default() });
    }

    /// Updates the round in progress.
    pub fn progress(&self, p: &Progress) {
        let mut s = lock(&self.status);
        let Some(c) = s.current.as_mut() else { return };
        c.entries = p.entries;
        c.source_bytes = p.source_bytes;
        c.scan_done = p.scan_done;
        c.bytes_done = p.bytes_done;
        c.files_done = p.files_done;
        let elapsed = unix(SystemTime::now()) - c.started_unix;
        c.eta_secs_at_most = (c.scan_done && c.bytes_done > 0 && elapsed > 0.0).then(|| {
            let rate = c.bytes_done as f64 / elapsed;
            c.source_bytes.saturating_sub(c.bytes_done) as f64 / rate
        });
    }

    /// Records a finished round (status and metrics); returns the status to persist.
    pub fn round_finished(
        &self,
        start: SystemTime,
        end: SystemTime,
        attempts: u32,
        result: Result<&Report, String>,
        next: Option<SystemTime>,
        missed: u64,
    ) -> Status {
        let secs = end.duration_since(start).map_or(0.0, |d| d.as_secs_f64());
        self.metrics.record(secs, attempts, missed, result.clone());
        let mut s = lock(&self.status);
        s.record(start, end, attempts, result, next, missed);
        s.clone()
    }

    /// Records what the signature cache did in a round.
    pub fn signature_cache(&self, c: &crate::state::sigcache::CacheCounts) {
        let m = &self.metrics;
        for (k, v) in
            [("hit", c.hits), ("miss", c.misses), ("stored", c.stored), ("dropped", c.dropped)]
        {
            m.sigcache.get_or_create(&Metrics::label("event", k)).inc_by(v);
        }
        m.sigcache_bytes.inc_by(c.hit_bytes);
    }

    /// Counts a change of the `--identity` files: taken into use (`ok`) or refused.
    pub fn identity_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.metrics.identity_reloads.get_or_create(&Metrics::label("result", result)).inc();
    }

    /// Records the newest snapshot.
    pub fn snapshot_taken(&self, id: &str) {
        lock(&self.status).latest_snapshot = Some(id.to_string());
    }

    /// Records how a CSI snapshot went: the newest ready one becomes `latestImage`; a
    /// failure is kept in `last_snapshot_error` until one succeeds; both are counted.
    pub fn csi_snapshot(&self, o: &crate::state::snapshot::csi::CsiOutcome) {
        let labels = match &o.error {
            None => Metrics::label("result", "ready"),
            Some(_) => vec![
                ("result".to_string(), "failed".to_string()),
                ("reason".to_string(), o.failure.to_string()),
            ],
        };
        self.metrics.csi.get_or_create(&labels).inc();
        let mut s = lock(&self.status);
        match &o.error {
            None => {
                s.latest_image = Some(LatestImage {
                    api_group: crate::k8s::SNAPSHOT_GROUP.into(),
                    kind: "VolumeSnapshot".into(),
                    name: o.name.clone(),
                });
                s.last_snapshot_error = None;
            }
            Some(e) => {
                s.last_snapshot_error = Some(format!("module {:?}: {e}", o.module));
            }
        }
    }

    /// Sets `latestImage` to the VolumeSnapshot `name` (what the records say at start-up).
    pub fn latest_image(&self, name: &str) {
        lock(&self.status).latest_image = Some(LatestImage {
            api_group: crate::k8s::SNAPSHOT_GROUP.into(),
            kind: "VolumeSnapshot".into(),
            name: name.to_string(),
        });
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        if let Some(v) = lock(&self.status).out_of_sync_secs(SystemTime::now()) {
            self.metrics.out_of_sync.set(v);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.metrics.registry);
        out
    }

    /// An agent running rounds is ready when its last round succeeded (a copy exists and the
    /// latest attempt worked); a server is ready once it listens (it has to be reachable for
    /// any round to happen, and one peer's failed round says nothing about the next).
    pub fn ready(&self) -> bool {
        if !self.schedules {
            return true;
        }
        let s = lock(&self.status);
        s.last_success_unix.is_some() && s.last_result == "ok"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn eta_is_an_upper_bound_from_the_rate_so_far() {
        let (a, _rx) = Agent::new(true);
        let start = SystemTime::now() - std::time::Duration::from_secs(10);
        a.round_started(start);
        a.progress(&Progress {
            entries: 10,
            source_bytes: 3000,
            bytes_done: 1000,
            files_done: 1,
            scan_done: true,
        });
        let eta = a.status().current.unwrap().eta_secs_at_most.unwrap();
        // 1000 bytes in ~10 s: 2000 bytes left take ~20 s.
        assert!((19.0..21.5).contains(&eta), "{eta}");
        a.progress(&Progress { scan_done: false, ..Progress::default() });
        assert!(a.status().current.unwrap().eta_secs_at_most.is_none());
    }

    #[test]
    fn out_of_sync_counts_from_the_start_of_the_last_success() {
        let mut s = Status::default();
        assert_eq!(s.out_of_sync_secs(SystemTime::now()), None);
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let r = Report::default();
        s.record(t0, t0 + std::time::Duration::from_secs(5), 2, Ok(&r), None, 1);
        s.record(
            t0 + std::time::Duration::from_secs(60),
            t0 + std::time::Duration::from_secs(61),
            1,
            Err("boom".into()),
            None,
            0,
        );
        let now = t0 + std::time::Duration::from_secs(100);
        assert_eq!(s.out_of_sync_secs(now), Some(100.0));
        assert_eq!((s.rounds_ok, s.rounds_failed, s.retries, s.missed_intervals), (1, 1, 1, 1));
        assert_eq!(s.last_result, "error: boom");
    }

    #[test]
    fn a_partial_round_is_shown_as_partial_not_as_a_success() {
        let mut s = Status::default();
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let ok = Report::default();
        s.record(t0, t0 + std::time::Duration::from_secs(5), 1, Ok(&ok), None, 0);
        let partial = Report { partial: true, ..Report::default() };
        let t1 = t0 + std::time::Duration::from_secs(60);
        s.record(t1, t1 + std::time::Duration::from_secs(5), 1, Ok(&partial), None, 0);
        assert_eq!(s.last_result, "partial");
        assert_eq!((s.rounds_ok, s.rounds_partial, s.rounds_failed), (1, 1, 0));
        // The copy is as of the last complete round, not the partial one.
        assert_eq!(s.last_success_start_unix, Some(1000.0));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["last_result"], "partial");
        assert_eq!(json["rounds_partial"], 1);
    }
}
