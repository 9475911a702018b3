//! The Kubernetes API, as far as Ferry calls it: `snapshot.storage.k8s.io/v1` VolumeSnapshots
//! (create, get, list by label, delete) and `events.k8s.io/v1` Events (create), in one
//! namespace. Used by the CSI snapshotter ([`crate::state::snapshot`]); nothing else here
//! talks to a cluster.
//!
//! ```text
//!   state/snapshot/csi.rs ──(blocking calls)──▶ KubeApi ──(kube::Client, rustls/ring)──▶ API server
//! ```
//!
//! Configuration is kube's: `KUBECONFIG` (or `~/.kube/config`), else the pod's service account
//! (in-cluster: its token, CA and namespace file). The callers run on blocking threads (a
//! round's end), so every call here blocks on the runtime the client was made in, with a
//! timeout of its own: an API server that hangs costs a round at most its deadline.
//!
//! # Security
//! What the API server answers is untrusted: objects are read as JSON values and only the
//! fields used are looked at; messages kept or shown are cut to [`MAX_MESSAGE`] bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;

/// Longest API message Ferry keeps (in a record, a log line, an Event's note).
pub const MAX_MESSAGE: usize = 512;

/// The VolumeSnapshot API group.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

/// Why a call to the Kubernetes API failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KubeError {
    /// No configuration: neither a kubeconfig nor a pod's service account.
    #[error(
        "no Kubernetes API configuration: set KUBECONFIG, or run in a pod with a service \
         account token mounted ({0})"
    )]
    Config(String),
    /// The API server refused the call (RBAC): the service account lacks the permission.
    #[error("forbidden: the API server refused to {verb} {what} (RBAC: grant the service account's Role this verb): {message}")]
    Forbidden {
        /// The verb (`create`, `get`, ...).
        verb: &'static str,
        /// What it was about.
        what: String,
        /// The API server's message.
        message: String,
    },
    /// The API server could not be reached (or did not answer in time).
    #[error("the Kubernetes API server is unreachable: {0}")]
    Unreachable(String),
    /// The object (or its kind: the VolumeSnapshot CRD is not installed) does not exist.
    #[error("not found: {what}: {message}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// The API server's message.
        message: String,
    },
    /// The object exists already (a create).
    #[error("{what} already exists")]
    Conflict {
        /// What was created.
        what: String,
    },
    /// Any other refusal.
    #[error("the API server answered {code} to {verb} {what}: {message}")]
    Api {
        /// The HTTP status.
        code: u16,
        /// The verb.
        verb: &'static str,
        /// What it was about.
        what: String,
        /// The API server's message.
        message: String,
    },
}

impl KubeError {
    /// Whether waiting may help: the server was unreachable, overloaded or failing.
    pub fn transient(&self) -> bool {
        match self {
            KubeError::Unreachable(_) => true,
            KubeError::Api { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }

    /// A short name of the failure, for a commit result and a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            KubeError::Config(_) => "no-config",
            KubeError::Forbidden { .. } => "forbidden",
            KubeError::Unreachable(_) => "unreachable",
            KubeError::NotFound { .. } => "not-found",
            KubeError::Conflict { .. } => "conflict",
            KubeError::Api { .. } => "api-error",
        }
    }
}

/// A connection to one namespace of a cluster's API.
#[derive(Clone)]
pub struct KubeApi {
    rt: tokio::runtime::Handle,
    client: kube::Client,
    namespace: String,
    snapshots: ApiResource,
    events: ApiResource,
    call_timeout: Duration,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl KubeApi {
    /// Connects with kube's inferred configuration (see the module docs), in `namespace` or
    /// else `POD_NAMESPACE`, else the configuration's (the service account's namespace file
    /// in a pod, the kubeconfig context's otherwise). Must be called from within `rt`'s
    /// context or outside any runtime; later calls block on `rt`.
    ///
    /// # Errors
    /// [`KubeError::Config`] when there is no usable configuration.
    pub fn connect(
        rt: &tokio::runtime::Handle,
        namespace: Option<&str>,
    ) -> Result<KubeApi, KubeError> {
        let _guard = rt.enter();
        let mut config = rt
            .block_on(kube::Config::infer())
            .map_err(|e| KubeError::Config(cut(&e.to_string())))?;
        // kube's defaults wait minutes for a dead server; a round has its own deadline.
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        let ns = namespace
            .map(str::to_string)
            .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| config.default_namespace.clone());
        let client =
            kube::Client::try_from(config).map_err(|e| KubeError::Config(cut(&e.to_string())))?;
        let gvk = GroupVersionKind::gvk(SNAPSHOT_GROUP, "v1", "VolumeSnapshot");
        let snapshots = ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots");
        let gvk = GroupVersionKind::gvk("events.k8s.io", "v1", "Event");
        let events = ApiResource::from_gvk_with_plural(&gvk, "events");
        Ok(KubeApi {
            rt: rt.clone(),
            client,
            namespace: ns,
            snapshots,
            events,
            call_timeout: Duration::from_secs(30),
        })
    }

    /// The namespace the calls go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn snapshots_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &self.snapshots)
    }

    /// Runs `fut` on the client's runtime, at most `limit` (and the call timeout).
    fn block<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        let limit = limit.min(self.call_timeout).max(Duration::from_millis(100));
        self.rt.block_on(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Err(kube::Error::Service(
                    format!("no answer within {:.1} s", limit.as_secs_f64()).into(),
                )),
            }
        })
    }

    /// Creates a VolumeSnapshot of `pvc` named `name`, of class `class`.
    ///
    /// # Errors
    /// [`KubeError::Conflict`] when one of that name exists; others as they come.
    pub fn create_snapshot(
        &self,
        name: &str,
        pvc: &str,
        class: &str,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        limit: Duration,
    ) -> Result<VolumeSnapshot, KubeError> {
        let mut obj = DynamicObject::new(name, &self.snapshots).within(&self.namespace);
        obj.metadata.labels = Some(labels);
        obj.metadata.annotations = Some(annotations);
        obj.data = serde_json::json!({
            "spec": {
                "volumeSnapshotClassName": class,
                "source": { "persistentVolumeClaimName": pvc },
            }
        });
        let api = self.snapshots_api();
        let what = format!("VolumeSnapshot {}/{name}", self.namespace);
        self.block(limit, async move { api.create(&PostParams::default(), &obj).await })
            .map(VolumeSnapshot::from)
            .map_err(|e| classify(e, "create", what))
    }

    /// The VolumeSnapshot `name`.
    ///
    /// # Errors
    /// [`KubeError::NotFound`] when there is none; others as they come.
    pub fn get_snapshot(&self, name: &str, limit: Duration) -> Result<VolumeSnapshot, KubeError> {
        let api = self.snapshots_api();
        let what = format!("VolumeSnapshot {}/{name}", self.namespace);
        let name = name.to_string();
        self.block(limit, async move { api.get(&name).await })
            .map(VolumeSnapshot::from)
            .map_err(|e| classify(e, "get", what))
    }

    /// The VolumeSnapshots matching the label `selector`.
    ///
    /// # Errors
    /// As they come.
    pub fn list_snapshots(
        &self,
        selector: &str,
        limit: Duration,
    ) -> Result<Vec<VolumeSnapshot>, KubeError> {
        let api = self.snapshots_api();
        let what = format!("VolumeSnapshots in {} labelled {selector}", self.namespace);
        let lp = ListParams::default().labels(selector);
        self.block(limit, async move { api.list(&lp).await })
            .map(|l| l.items.into_iter().map(VolumeSnapshot::from).collect())
            .map_err(|e| classify(e, "list", what))
    }

    /// Deletes the VolumeSnapshot `name` (one already gone is not an error).
    ///
    /// # Errors
    /// As they come.
    pub fn delete_snapshot(&self, name: &str, limit: Duration) -> Result<(), KubeError> {
        let api = self.snapshots_api();
        let what = format!("VolumeSnapshot {}/{name}", self.namespace);
        let name = name.to_string();
        match self.block(limit, async move { api.delete(&name, &DeleteParams::default()).await }) {
            Ok(_) => Ok(()),
            Err(e) => match classify(e, "delete", what) {
                KubeError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Records an Event about the PersistentVolumeClaim `pvc`, related to the VolumeSnapshot
    /// `snapshot`: `warning` or normal, with a CamelCase `reason` and a `note`.
    ///
    /// # Errors
    /// As they come (callers treat Events as best effort).
    pub fn event(
        &self,
        pvc: &str,
        snapshot: &str,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<(), KubeError> {
        let now = chrono::Utc::now();
        // Unique within the namespace, like the names client-go's recorder makes.
        let name = format!(
            "{}.{:x}",
            &pvc[..pvc.len().min(200)],
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let mut obj = DynamicObject::new(&name, &self.events).within(&self.namespace);
        let instance = std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "ferry".into());
        obj.data = serde_json::json!({
            "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "reportingController": "ferry.dev/ferry",
            "reportingInstance": cut(&instance),
            "action": "CreateVolumeSnapshot",
            "reason": reason,
            "type": if warning { "Warning" } else { "Normal" },
            "note": cut(note),
            "regarding": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": self.namespace,
                "name": pvc,
            },
            "related": {
                "apiVersion": format!("{SNAPSHOT_GROUP}/v1"),
                "kind": "VolumeSnapshot",
                "namespace": self.namespace,
                "name": snapshot,
            },
        });
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &self.events);
        let what = format!("an Event in {}", self.namespace);
        self.block(
            Duration::from_secs(5),
            async move { api.create(&PostParams::default(), &obj).await },
        )
        .map(|_| ())
        .map_err(|e| classify(e, "create", what))
    }
}

/// What Ferry reads of a VolumeSnapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSnapshot {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// `spec.source.persistentVolumeClaimName`.
    pub pvc: Option<String>,
    /// `status.boundVolumeSnapshotContentName`: the snapshot was cut.
    pub bound_content: Option<String>,
    /// `status.readyToUse`.
    pub ready: bool,
    /// `status.error.message` (cut to [`MAX_MESSAGE`]).
    pub error: Option<String>,
}

impl From<DynamicObject> for VolumeSnapshot {
    fn from(o: DynamicObject) -> VolumeSnapshot {
        let str_at = |p: &str| o.data.pointer(p).and_then(|v| v.as_str()).map(cut);
        let status_error = o.data.pointer("/status/error").filter(|v| !v.is_null()).map(|e| {
            e.get("message").and_then(|m| m.as_str()).map_or_else(|| cut(&e.to_string()), cut)
        });
        VolumeSnapshot {
            pvc: str_at("/spec/source/persistentVolumeClaimName"),
            bound_content: str_at("/status/boundVolumeSnapshotContentName")
                .filter(|s| !s.is_empty()),
            ready: o.data.pointer("/status/readyToUse").and_then(|v| v.as_bool()) == Some(true),
            error: status_error,
            name: o.metadata.name.unwrap_or_default(),
            labels: o.metadata.labels.unwrap_or_default(),
            annotations: o.metadata.annotations.unwrap_or_default(),
        }
    }
}

/// `s` cut to [`MAX_MESSAGE`] bytes at a character boundary.
pub fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_MESSAGE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn classify(e: kube::Error, verb: &'static str, what: String) -> KubeError {
    match e {
        kube::Error::Api(r) => {
            let message = cut(&r.message);
            match r.code {
                403 | 401 => KubeError::Forbidden { verb, what, message },
                404 => KubeError::NotFound { what, message },
                409 if verb == "create" => KubeError::Conflict { what },
                code => KubeError::Api { code, verb, what, message },
            }
        }
        kube::Error::Auth(e) => KubeError::Forbidden { verb, what, message: cut(&e.to_string()) },
        // Sockets, TLS, timeouts: the server may come back.
        e => KubeError::Unreachable(cut(&format!("{verb} {what}: {e}"))),
    }
}

/// Whether `s` is a DNS-1123 subdomain (a VolumeSnapshot's, a PVC's, a class's name).
pub fn dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns1123_label)
}

/// Whether `s` is a DNS-1123 label (a namespace's name).
pub fn dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| ok(c) || *c == b'-')
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(dns1123_subdomain("data-db-0"));
        assert!(dns1123_subdomain("a.b-c"));
        assert!(!dns1123_subdomain("Data"));
        assert!(!dns1123_subdomain("-a"));
        assert!(!dns1123_subdomain("a..b"));
        assert!(!dns1123_subdomain(&"a".repeat(254)));
        assert!(dns1123_label("ns-1"));
        assert!(!dns1123_label("a.b"));
        assert!(!dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn status_fields_are_read_leniently() {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(SNAPSHOT_GROUP, "v1", "VolumeSnapshot"),
            "volumesnapshots",
        );
        let mut o = DynamicObject::new("s", &ar);
        o.data = serde_json::json!({"status": {"readyToUse": "yes", "error": {"message": 7},
            "boundVolumeSnapshotContentName": ""}});
        let v = VolumeSnapshot::from(o.clone());
        assert!(!v.ready && v.bound_content.is_none() && v.pvc.is_none());
        assert_eq!(v.error.as_deref(), Some("{\"message\":7}"));
        o.data = serde_json::json!({"status": {"readyToUse": true, "error": null,
            "boundVolumeSnapshotContentName": "snapcontent-1"}});
        let v = VolumeSnapshot::from(o);
        assert!(v.ready && v.error.is_none());
        assert_eq!(v.bound_content.as_deref(), Some("snapcontent-1"));
        assert_eq!(cut(&"é".repeat(400)).len(), 512);
    }
}
