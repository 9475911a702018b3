//! `--snapshot csi`: after each committed round, a `snapshot.storage.k8s.io/v1` VolumeSnapshot
//! of the PersistentVolumeClaim that holds the module, through the Kubernetes API
//! ([`crate::k8s`]).
//!
//! ```text
//!   round committed ─▶ commit record ─▶ snapshot record (state: pending, the name) ─▶ syncfs
//!     ─▶ create VolumeSnapshot (409: adopt it if it is this round's) ─▶ wait until bound
//!        and readyToUse (status.error is transient until --snapshot-timeout)
//!     ─▶ record: ready or failed ─▶ Event on the PVC, status, metrics ─▶ retention
//! ```
//!
//! The name is derived from the PVC, the module and the round ([`snapshot_name`]) and written
//! to the state directory before the create, so a server restarted mid-way finds it again:
//! at the start of the next pushed round, before anything in the live tree changes, a pending
//! snapshot of the last committed round is created (or, on a 409, adopted) and awaited; a
//! pending snapshot of a tree that has changed since is never created over newer data, nor
//! trusted if it exists (it may have been cut after the change): it fails as `interrupted`.
//! One that was bound (cut) in time but not ready by the deadline is kept, and becomes ready
//! in the records when a later round finds it so.
//!
//! A snapshot that fails (RBAC refuses, the API server is away past the deadline, the CSI
//! driver keeps failing) leaves the round committed: the commit record is durable and the
//! data in place; only the snapshot failed, and the record, the log, `/status`, an Event and
//! the metrics say so.
//!
//! Retention (`--keep-*`) counts the snapshots that did not fail; it deletes only
//! VolumeSnapshots recorded here that also carry Ferry's labels ([`MANAGED_BY`],
//! [`MODULE_LABEL`]), and never one labelled [`DO_NOT_DELETE`]: that one is left in the
//! cluster and forgotten here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Retention, SnapshotRecord, Snapshots};
use crate::k8s::{KubeApi, KubeError, VolumeSnapshot};
use crate::state::write_state_file as write_atomic;

/// The label on every VolumeSnapshot Ferry creates (`app.kubernetes.io/managed-by=ferry`).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ferry");
/// The label naming the module (made label-safe; the exact name is in the annotation of the
/// same key).
pub const MODULE_LABEL: &str = "ferry.dev/module";
/// The label (and annotation) with the round number.
pub const ROUND_LABEL: &str = "ferry.dev/round";
/// The annotation with the committed tree's root hash.
pub const ROOT_HASH: &str = "ferry.dev/root-hash";
/// The annotation with when the round committed (RFC 3339, UTC).
pub const COMMITTED_AT: &str = "ferry.dev/committed-at";
/// A VolumeSnapshot with this label (any value) is never deleted by retention: it is left in
/// the cluster and Ferry forgets it.
pub const DO_NOT_DELETE: &str = "ferry.dev/do-not-delete";

/// What `--snapshot csi` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiConfig {
    /// `--snapshot-class`: the VolumeSnapshotClass.
    pub class: String,
    /// `--pvc`: the PersistentVolumeClaim holding the module.
    pub pvc: String,
    /// `--namespace`, if given (else `POD_NAMESPACE`, else the service account's).
    pub namespace: Option<String>,
    /// `--snapshot-timeout`: how long a snapshot may take to be bound and ready.
    pub timeout: Duration,
}

/// What one CSI snapshot came to, for `/status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiOutcome {
    /// The module.
    pub module: String,
    /// The VolumeSnapshot's name.
    pub name: String,
    /// Why it failed; `None` when it is ready to use.
    pub error: Option<String>,
    /// A short name of the failure ([`CsiError::kind`]), empty when ready.
    pub failure: &'static str,
}

type Report = Box<dyn Fn(&CsiOutcome) + Send + Sync>;

/// The CSI snapshotter of a server: its configuration, its API connection (made once the
/// runtime runs, [`Csi::connect`]) and where its outcomes are reported.
pub struct Csi {
    /// The configuration.
    pub config: CsiConfig,
    api: OnceLock<KubeApi>,
    report: OnceLock<Report>,
}

impl std::fmt::Debug for Csi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Csi").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PartialEq for Csi {
    fn eq(&self, other: &Csi) -> bool {
        self.config == other.config
    }
}

impl Eq for Csi {}

/// The CSI part of a snapshot record (kind `csi`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshotRef {
    /// The VolumeSnapshot's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The PersistentVolumeClaim it is of.
    pub pvc: String,
    /// Its VolumeSnapshotClass.
    pub class: String,
    /// Where it stands.
    pub state: CsiState,
    /// Why it failed (empty unless `failed`).
    #[serde(default)]
    pub error: String,
    /// A short name of the failure (`forbidden`, `unreachable`, `timeout`, ...).
    #[serde(default)]
    pub failure: String,
    /// `status.boundVolumeSnapshotContentName`, once bound.
    #[serde(default)]
    pub content: String,
}

/// Where a VolumeSnapshot stands, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsiState {
    /// Named and recorded; created or about to be, not yet known to be ready.
    Pending,
    /// Bound and ready to use.
    Ready,
    /// It failed (see `error`); the round is committed all the same.
    Failed,
}

/// Why a CSI snapshot failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CsiError {
    /// A call to the API failed (forbidden, unreachable past the deadline, ...).
    #[error("VolumeSnapshot {name}: {source}")]
    Api {
        /// The VolumeSnapshot.
        name: String,
        /// The call's error.
        source: KubeError,
    },
    /// A VolumeSnapshot of that name exists and is not this round's.
    #[error("VolumeSnapshot {name} exists and is not this round's snapshot ({why}); not adopted")]
    NameTaken {
        /// The VolumeSnapshot.
        name: String,
        /// What differs.
        why: String,
    },
    /// It was not bound and ready by the deadline.
    #[error("VolumeSnapshot {name} was not ready within {secs} s ({last})")]
    Timeout {
        /// The VolumeSnapshot.
        name: String,
        /// The deadline, seconds.
        secs: u64,
        /// What was last seen.
        last: String,
        /// The VolumeSnapshotContent it was bound to (cut in time, only not ready yet), if
        /// it was.
        bound: Option<String>,
    },
    /// The server stopped before the snapshot was known to be cut, and the live tree has
    /// changed since: what it holds cannot be trusted to be its round's tree.
    #[error(
        "VolumeSnapshot {name}: the server stopped before it was known to be cut, and the live \
         tree has changed since; not trusted (retention deletes it)"
    )]
    Interrupted {
        /// The VolumeSnapshot.
        name: String,
    },
    /// It is gone: deleted while Ferry waited for it, or never created before a restart (and
    /// too late to create now: the live tree moved on).
    #[error("VolumeSnapshot {name} is gone (deleted while Ferry waited, or never created before a restart)")]
    Vanished {
        /// The VolumeSnapshot.
        name: String,
    },
}

impl CsiError {
    /// A short name of the failure (the commit result, the record, the metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            CsiError::Api { source, .. } => source.kind(),
            CsiError::NameTaken { .. } => "name-taken",
            CsiError::Timeout { .. } => "timeout",
            CsiError::Interrupted { .. } => "interrupted",
            CsiError::Vanished { .. } => "vanished",
        }
    }
}

impl Csi {
    /// A snapshotter with `config`, not connected yet.
    pub fn new(config: CsiConfig) -> Arc<Csi> {
        Arc::new(Csi { config, api: OnceLock::new(), report: OnceLock::new() })
    }

    /// Connects to the API (see [`KubeApi::connect`]); call once, from the server's runtime
    /// (or outside any), before the first round.
    ///
    /// # Errors
    /// [`KubeError::Config`] when there is no configuration to connect with.
    pub fn connect(&self, rt: &tokio::runtime::Handle) -> Result<(), KubeError> {
        let api = KubeApi::connect(rt, self.config.namespace.as_deref())?;
        tracing::info!(
            "--snapshot csi: VolumeSnapshots of PVC {}/{} (class {}), ready within {} s",
            api.namespace(),
            self.config.pvc,
            self.config.class,
            self.config.timeout.as_secs()
        );
        let _ = self.api.set(api);
        Ok(())
    }

    /// The newest ready VolumeSnapshot recorded for the module `snaps` is of (for
    /// `latestImage` after a restart).
    pub fn latest_ready(snaps: &Snapshots) -> Option<(u64, String)> {
        let all = snaps.list().ok()?;
        all.into_iter().rev().find_map(|r| {
            let v = r.volume_snapshot?;
            (v.state == CsiState::Ready).then_some((r.time_unix, v.name))
        })
    }

    /// Checks at start-up that the calls can work (lists Ferry's VolumeSnapshots): logs a
    /// warning naming what is wrong (RBAC, no VolumeSnapshot CRD, an API server away). Never
    /// fatal: rounds still commit, and each snapshot reports its own failure.
    pub fn check(&self) {
        let Ok(api) = self.api() else { return };
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        match api.list_snapshots(&selector, Duration::from_secs(10)) {
            Ok(l) => tracing::info!(
                "--snapshot csi: the API answers ({} VolumeSnapshot(s) of Ferry's in {})",
                l.len(),
                api.namespace()
            ),
            Err(e @ KubeError::NotFound { .. }) => tracing::warn!(
                "--snapshot csi: start-up check: {e}: is the VolumeSnapshot CRD \
                 (snapshot.storage.k8s.io/v1) installed? Snapshots will fail until it is"
            ),
            Err(e) => tracing::warn!(
                "--snapshot csi: start-up check ({}): {e}; snapshots fail until this is fixed",
                e.kind()
            ),
        }
    }

    /// Where each snapshot's outcome goes (status and metrics); set once.
    pub fn on_outcome(&self, f: impl Fn(&CsiOutcome) + Send + Sync + 'static) {
        let _ = self.report.set(Box::new(f));
    }

    fn api(&self) -> Result<&KubeApi, KubeError> {
        self.api.get().ok_or_else(|| KubeError::Config("the server did not connect".into()))
    }

    /// The record of a round's snapshot before it is created: named, pending.
    pub(super) fn pending(&self, module: &str, round: u64) -> VolumeSnapshotRef {
        VolumeSnapshotRef {
            name: snapshot_name(&self.config.pvc, module, round),
            namespace: self.api.get().map(|a| a.namespace().to_string()).unwrap_or_default(),
            pvc: self.config.pvc.clone(),
            class: self.config.class.clone(),
            state: CsiState::Pending,
            error: String::new(),
            failure: String::new(),
            content: String::new(),
        }
    }

    /// Takes the snapshot `rec` names (its record is written, pending, and the live tree is
    /// the round's): flushes the module's filesystem, creates (or adopts) the VolumeSnapshot,
    /// waits for it, records how it went, reports it, then applies `keep`. Blocking.
    ///
    /// Returns the updated record and, when the snapshot failed, why (the round stays
    /// committed either way).
    pub fn finish(
        &self,
        snaps: &Snapshots,
        module_path: &Path,
        mut rec: SnapshotRecord,
        keep: &Retention,
    ) -> (SnapshotRecord, Option<CsiError>) {
        let Some(v) = rec.volume_snapshot.clone() else { return (rec, None) };
        // What the round wrote must be on the volume before the CSI driver cuts it.
        match crate::fs::Root::open(module_path) {
            Ok(root) => {
                if let Err(e) = rustix::fs::syncfs(root.fd()) {
                    tracing::warn!("syncfs {}: {e}", module_path.display());
                }
            }
            Err(e) => tracing::warn!("opening {} to sync it: {e}", module_path.display()),
        }
        let deadline = Instant::now() + self.config.timeout;
        let r = self.create_and_wait(&snaps.module, &rec, &v.name, deadline);
        let err = self.conclude(snaps, &mut rec, r);
        self.retain(snaps, keep, &rec.id);
        (rec, err)
    }

    /// Records, reports and announces (Event) how a snapshot went.
    fn conclude(
        &self,
        snaps: &Snapshots,
        rec: &mut SnapshotRecord,
        r: Result<VolumeSnapshot, CsiError>,
    ) -> Option<CsiError> {
        let v = rec.volume_snapshot.as_mut()?;
        let name = v.name.clone();
        let (err, note) = match r {
            Ok(s) => {
                v.state = CsiState::Ready;
                v.content = s.bound_content.unwrap_or_default();
                v.error.clear();
                v.failure.clear();
                let note = format!(
                    "VolumeSnapshot {name} of round {} of module {:?} is ready (content {})",
                    rec.round, snaps.module, v.content
                );
                tracing::info!("module {:?}: {note}", snaps.module);
                (None, note)
            }
            Err(e) => {
                v.state = CsiState::Failed;
                if let CsiError::Timeout { bound: Some(c), .. } = &e {
                    // Cut in time: kept (and counted) by retention, ready perhaps later.
                    v.content = c.clone();
                }
                v.error = crate::k8s::cut(&e.to_string());
                v.failure = e.kind().to_string();
                let note = format!(
                    "round {} of module {:?} is committed, but its snapshot failed: {e}",
                    rec.round, snaps.module
                );
                tracing::error!(
                    "module {:?}: CSI snapshot failed ({}): {e}",
                    snaps.module,
                    e.kind()
                );
                (Some(e), note)
            }
        };
        if let Err(e) = write_record(snaps, rec) {
            tracing::warn!("module {:?}: recording VolumeSnapshot {name}: {e}", snaps.module);
        }
        if let Some(f) = self.report.get() {
            let error = err.as_ref().map(|e| e.to_string());
            let failure = err.as_ref().map_or("", CsiError::kind);
            f(&CsiOutcome { module: snaps.module.clone(), name: name.clone(), error, failure });
        }
        if let Ok(api) = self.api() {
            let (warning, reason) = match &err {
                None => (false, "SnapshotReady"),
                Some(_) => (true, "SnapshotFailed"),
            };
            // Best effort: the API server that refused the snapshot may refuse this too.
            if let Err(e) = api.event(&self.config.pvc, &name, warning, reason, &note) {
                tracing::warn!("module {:?}: recording an Event: {e}", snaps.module);
            }
        }
        err
    }

    /// Creates the VolumeSnapshot `name` for `rec` (adopting this round's on a 409), then
    /// waits until it is bound and ready, until `deadline`.
    fn create_and_wait(
        &self,
        module: &str,
        rec: &SnapshotRecord,
        name: &str,
        deadline: Instant,
    ) -> Result<VolumeSnapshot, CsiError> {
        let api = self.api().map_err(|source| CsiError::Api { name: name.into(), source })?;
        let (labels, annotations) = metadata(module, rec);
        let mut pause = Pause::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let made = api.create_snapshot(
                name,
                &self.config.pvc,
                &self.config.class,
                labels.clone(),
                annotations.clone(),
                left,
            );
            match made {
                Ok(_) => {
                    tracing::info!("module {module:?}: created VolumeSnapshot {name}");
                    break;
                }
                Err(KubeError::Conflict { .. }) => {
                    let found = api
                        .get_snapshot(name, left)
                        .map_err(|source| CsiError::Api { name: name.into(), source })?;
                    if let Some(why) = self.not_ours(module, rec, &found) {
                        return Err(CsiError::NameTaken { name: name.into(), why });
                    }
                    tracing::info!(
                        "module {module:?}: VolumeSnapshot {name} exists already (created \
                         before a restart): adopted"
                    );
                    break;
                }
                Err(e) if e.transient() && Instant::now() < deadline => {
                    tracing::warn!(
                        "module {module:?}: creating VolumeSnapshot {name}: {e}; retrying"
                    );
                    pause.sleep(deadline);
                }
                Err(source) => return Err(CsiError::Api { name: name.into(), source }),
            }
        }
        self.wait(api, name, deadline)
    }

    /// Why `found` is not `rec`'s snapshot, if it is not.
    fn not_ours(
        &self,
        module: &str,
        rec: &SnapshotRecord,
        found: &VolumeSnapshot,
    ) -> Option<String> {
        let ann = |k: &str| found.annotations.get(k).map(String::as_str);
        if found.labels.get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1) {
            return Some(format!("it lacks the label {}={}", MANAGED_BY.0, MANAGED_BY.1));
        }
        if ann(MODULE_LABEL) != Some(module) {
            return Some(format!("it is of module {:?}", ann(MODULE_LABEL).unwrap_or("")));
        }
        if found.pvc.as_deref() != Some(self.config.pvc.as_str()) {
            return Some(format!("it is of PVC {:?}", found.pvc.as_deref().unwrap_or("")));
        }
        if ann(ROOT_HASH) != Some(rec.root_hash.as_str()) {
            return Some("it is of another tree (its root hash differs)".into());
        }
        None
    }

    /// Polls `name` until it is bound and ready to use, or `deadline`.
    fn wait(
        &self,
        api: &KubeApi,
        name: &str,
        deadline: Instant,
    ) -> Result<VolumeSnapshot, CsiError> {
        let mut last;
        let mut bound = None;
        let mut pause = Pause::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match api.get_snapshot(name, left) {
                Ok(s) if s.ready && s.bound_content.is_some() => return Ok(s),
                Ok(s) => {
                    bound = s.bound_content.clone().or(bound);
                    last = match (&s.error, &s.bound_content) {
                        // The snapshot controller retries; so does Ferry, until the deadline.
                        (Some(e), _) => format!("status.error: {e}"),
                        (None, Some(c)) => format!("bound to {c}, not ready to use yet"),
                        (None, None) => "not bound yet".into(),
                    };
                }
                Err(KubeError::NotFound { .. }) => {
                    return Err(CsiError::Vanished { name: name.into() })
                }
                Err(e) if e.transient() => last = e.to_string(),
                Err(source) => return Err(CsiError::Api { name: name.into(), source }),
            }
            if Instant::now() >= deadline {
                let secs = self.config.timeout.as_secs();
                return Err(CsiError::Timeout { name: name.into(), secs, last, bound });
            }
            pause.sleep(deadline);
        }
    }

    /// Settles what an earlier run left pending, before a round changes the live tree.
    /// `unchanged_since` is the last committed round when the live tree is still its tree
    /// (no round changed it since): that round's pending snapshot is taken now, a 409 meaning
    /// it was created before the restart. Any other pending one fails as interrupted; a
    /// failed one that was bound in time is looked up, and recorded ready if it is now.
    /// Blocking.
    pub fn resume(&self, snaps: &Snapshots, unchanged_since: Option<u64>) {
        let Ok(all) = snaps.list() else { return };
        let Ok(api) = self.api() else { return };
        for mut rec in all {
            let Some(v) = rec.volume_snapshot.clone() else { continue };
            match v.state {
                CsiState::Ready => {}
                CsiState::Pending if unchanged_since == Some(rec.round) => {
                    tracing::info!(
                        "module {:?}: VolumeSnapshot {} of round {} was left pending (a \
                         restart): taking it now, before the live tree changes",
                        snaps.module,
                        v.name,
                        rec.round
                    );
                    let deadline = Instant::now() + self.config.timeout;
                    let r = self.create_and_wait(&snaps.module, &rec, &v.name, deadline);
                    self.conclude(snaps, &mut rec, r);
                }
                // It may have been cut after the tree moved on: a snapshot labelled round N
                // holding later data is worse than none (retention deletes it).
                CsiState::Pending => {
                    let e = CsiError::Interrupted { name: v.name.clone() };
                    self.conclude(snaps, &mut rec, Err(e));
                }
                // Cut in time (bound) but not ready by the deadline: ready now?
                CsiState::Failed if !v.content.is_empty() => {
                    if let Ok(s) = api.get_snapshot(&v.name, Duration::from_secs(10)) {
                        if s.ready && s.bound_content.is_some() {
                            tracing::info!(
                                "module {:?}: VolumeSnapshot {} is ready now",
                                snaps.module,
                                v.name
                            );
                            self.conclude(snaps, &mut rec, Ok(s));
                        }
                    }
                }
                CsiState::Failed => {}
            }
        }
    }

    /// Applies `keep` to the module's snapshots (see the module docs); `current` is never
    /// dropped. Failures are logged and left for the next round.
    fn retain(&self, snaps: &Snapshots, keep: &Retention, current: &str) {
        let Ok(all) = snaps.list() else { return };
        // A failure with nothing cut in time holds no round's tree; one bound in time but
        // not ready by the deadline does, and may become ready (see `resume`).
        let failed = |r: &SnapshotRecord| {
            r.volume_snapshot
                .as_ref()
                .is_some_and(|v| v.state == CsiState::Failed && v.content.is_empty())
        };
        let counted: Vec<SnapshotRecord> = all.iter().filter(|r| !failed(r)).cloned().collect();
        let kept = keep.keep(&counted);
        let doomed: Vec<&SnapshotRecord> = all
            .iter()
            .filter(|r| r.id != current && (failed(r) || !kept.contains(&r.id)))
            .collect();
        if doomed.is_empty() {
            return;
        }
        let Ok(api) = self.api() else { return };
        let selector = format!(
            "{}={},{MODULE_LABEL}={}",
            MANAGED_BY.0,
            MANAGED_BY.1,
            label_value(&snaps.module)
        );
        let ours = match api.list_snapshots(&selector, Duration::from_secs(30)) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "module {:?}: retention: {e} (tried again next round)",
                    snaps.module
                );
                return;
            }
        };
        for r in doomed {
            let Some(v) = &r.volume_snapshot else {
                if let Err(e) = snaps.delete(&r.id) {
                    tracing::warn!("retention: deleting snapshot {}: {e}", r.id);
                }
                continue;
            };
            match ours.iter().find(|s| s.name == v.name) {
                Some(s) if s.labels.contains_key(DO_NOT_DELETE) => tracing::info!(
                    "module {:?}: VolumeSnapshot {} is labelled {DO_NOT_DELETE}: left in the \
                     cluster, no longer managed by Ferry",
                    snaps.module,
                    v.name
                ),
                Some(_) => {
                    if let Err(e) = api.delete_snapshot(&v.name, Duration::from_secs(30)) {
                        tracing::warn!("module {:?}: retention: {e}", snaps.module);
                        continue;
                    }
                    tracing::info!(
                        "module {:?}: retention: deleted VolumeSnapshot {}",
                        snaps.module,
                        v.name
                    );
                }
                // Gone, or not Ferry's (its labels say so): nothing to delete.
                None => {}
            }
            if let Err(e) = snaps.delete(&r.id) {
                tracing::warn!("retention: dropping the record of {}: {e}", r.id);
            }
        }
    }
}

/// The VolumeSnapshot name for round `round` of `module` on `pvc`: `ferry-PVC-MODULE-rROUND`
/// when that is a DNS-1123 name of at most 63 characters; otherwise made one (lower case,
/// other characters as `-`, cut) with 8 hex digits of a hash of the PVC and module names,
/// so different modules never share a name.
pub fn snapshot_name(pvc: &str, module: &str, round: u64) -> String {
    let suffix = format!("-r{round}");
    let plain = format!("ferry-{pvc}-{module}");
    let name = format!("{plain}{suffix}");
    if name.len() <= 63 && crate::k8s::dns1123_label(&name) {
        return name;
    }
    let mut base = clean(&plain);
    base.truncate(63 - suffix.len() - 9);
    let base = base.trim_end_matches('-');
    format!("{base}-{}{suffix}", short_hash(&format!("{pvc}\0{module}")))
}

/// `module` as a label value: itself when it is one, else cleaned, cut, and hashed.
pub fn label_value(module: &str) -> String {
    let b = module.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric();
    let valid = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| ok(c) || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok);
    if valid {
        return module.to_string();
    }
    let mut base = clean(module);
    base.truncate(54);
    let base = base.trim_end_matches('-');
    let h = short_hash(module);
    if base.is_empty() {
        h
    } else {
        format!("{base}-{h}")
    }
}

fn clean(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out
}

fn short_hash(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex()[..8].to_string()
}

/// The labels and annotations of a round's VolumeSnapshot.
fn metadata(
    module: &str,
    rec: &SnapshotRecord,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (MODULE_LABEL.to_string(), label_value(module)),
        (ROUND_LABEL.to_string(), rec.round.to_string()),
    ]);
    let annotations = BTreeMap::from([
        (MODULE_LABEL.to_string(), module.to_string()),
        (ROUND_LABEL.to_string(), rec.round.to_string()),
        (ROOT_HASH.to_string(), rec.root_hash.clone()),
        (COMMITTED_AT.to_string(), super::utc(rec.time_unix, true)),
    ]);
    (labels, annotations)
}

fn write_record(snaps: &Snapshots, rec: &SnapshotRecord) -> std::io::Result<()> {
    let json = snaps.dir.join(format!("{}.json", rec.id));
    write_atomic(&json, &serde_json::to_vec_pretty(rec).unwrap_or_default())
}

/// Growing pauses between polls: quick for a fast CSI driver, gentle on the API server for a
/// slow one.
struct Pause(Duration);

impl Pause {
    fn new() -> Pause {
        Pause(Duration::from_millis(200))
    }

    fn sleep(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(self.0.min(left));
        self.0 = (self.0 * 3 / 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns1123_and_distinct() {
        assert_eq!(snapshot_name("data", "www", 7), "ferry-data-www-r7");
        let odd = snapshot_name("data", "My_Module", 7);
        assert!(crate::k8s::dns1123_label(&odd), "{odd}");
        assert!(odd.starts_with("ferry-data-my-module-") && odd.ends_with("-r7"), "{odd}");
        assert_ne!(odd, snapshot_name("data", "my-module", 7));
        assert_ne!(odd, snapshot_name("data", "My.Module", 7));
        let long = snapshot_name(&"p".repeat(200), &"m".repeat(200), u64::MAX);
        assert!(long.len() <= 63 && crate::k8s::dns1123_label(&long), "{long}");
        assert!(long.ends_with(&format!("-r{}", u64::MAX)));
        assert_eq!(label_value("www"), "www");
        let l = label_value("a/b c");
        assert!(l.starts_with("a-b-c-") && l.len() == 14, "{l}");
        assert_eq!(label_value("___").len(), 8);
    }
}
