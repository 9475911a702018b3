//! `ferry serve --snapshot csi` against an in-process stand-in of the Kubernetes API server
//! (no API server runs on these machines): a small HTTP server in this test that serves the
//! VolumeSnapshot and Event endpoints the way the API server and the snapshot controller
//! would, with scripted transitions (created, unbound, bound, ready), `status.error`s that
//! clear or do not, a 409 for a name that exists, a 403 (RBAC), and periods where it is not
//! listening at all. `ferry serve` reaches it through a kubeconfig file the test writes;
//! `ferry push` drives real rounds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::common::{creds, ferry, http, s, Server, FERRY};

/// What the stand-in's snapshot controller shows of a VolumeSnapshot, one step per GET.
#[derive(Debug, Clone)]
enum Step {
    /// Created, no status yet.
    Created,
    /// `readyToUse: false`, no content bound.
    Unbound,
    /// Bound to a VolumeSnapshotContent, not ready yet.
    Bound,
    /// Bound and ready to use.
    Ready,
    /// `status.error` (the snapshot controller retries).
    Error(&'static str),
}

struct Object {
    body: Value,
    script: Vec<Step>,
    gets: usize,
}

/// The stand-in API server's state.
#[derive(Default)]
struct Cluster {
    objects: BTreeMap<String, Object>,
    /// The script each new VolumeSnapshot follows (its last step repeats).
    script: Vec<Step>,
    /// Answer 403 to every VolumeSnapshot call (a Role without that permission).
    forbid: bool,
    /// Every create asked for: name and the status answered.
    creates: Vec<(String, u16)>,
    deletes: Vec<String>,
    events: Vec<Value>,
}

/// The in-process stand-in of the Kubernetes API server, on a fixed port it can leave and
/// come back to.
struct StandIn {
    cluster: Arc<Mutex<Cluster>>,
    port: u16,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl StandIn {
    fn start(script: Vec<Step>) -> StandIn {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = Arc::new(Mutex::new(Cluster { script, ..Cluster::default() }));
        let mut st = StandIn { cluster, port, rt, stop: None };
        st.listen();
        st
    }

    /// Starts answering (again) on its port.
    fn listen(&mut self) {
        let app = axum::Router::new().fallback(handle).with_state(self.cluster.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let port = self.port;
        let l = self.rt.block_on(async move {
            for _ in 0..100 {
                if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    return l;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the stand-in cannot listen on {port} again");
        });
        self.rt.spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.stop = Some(tx);
    }

    /// Stops listening: connections are refused, as with an API server that is away.
    fn go_away(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        // The listener closes once the graceful shutdown is seen.
        std::thread::sleep(Duration::from_millis(200));
    }

    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    \
                 server: http://127.0.0.1:{}\nusers:\n- name: ferry\n  user:\n    token: \
                 stand-in-token\ncontexts:\n- name: c\n  context:\n    cluster: stand-in\n    \
                 user: ferry\n    namespace: apps\ncurrent-context: c\n",
                self.port
            ),
        )
        .unwrap();
        p
    }

    fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self.cluster.lock().unwrap())
    }

    fn names(&self) -> Vec<String> {
        self.with(|c| c.objects.keys().cloned().collect())
    }

    fn object(&self, name: &str) -> Value {
        self.with(|c| c.objects.get(name).map(|o| o.body.clone()).unwrap_or(Value::Null))
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

/// The stand-in's routes: the VolumeSnapshot collection and items, and Events.
async fn handle(
    State(cluster): State<Arc<Mutex<Cluster>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let mut c = cluster.lock().unwrap();
    const SNAPS: &str = "/apis/snapshot.storage.k8s.io/v1/namespaces/apps/volumesnapshots";
    if path == "/apis/events.k8s.io/v1/namespaces/apps/events" && method == Method::POST {
        let v: Value = serde_json::from_slice(&body).unwrap();
        c.events.push(v.clone());
        return (StatusCode::CREATED, axum::Json(v)).into_response();
    }
    let Some(rest) = path.strip_prefix(SNAPS) else {
        return status(404, "NotFound", &format!("the stand-in does not serve {path}"));
    };
    if c.forbid {
        return status(
            403,
            "Forbidden",
            "volumesnapshots.snapshot.storage.k8s.io is forbidden: User \
             \"system:serviceaccount:apps:ferry\" cannot create resource \"volumesnapshots\"",
        );
    }
    match (method, rest.strip_prefix('/')) {
        (Method::POST, None) => {
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            if c.objects.contains_key(&name) {
                c.creates.push((name.clone(), 409));
                return status(
                    409,
                    "AlreadyExists",
                    &format!("volumesnapshots {name:?} already exists"),
                );
            }
            c.creates.push((name.clone(), 201));
            v["metadata"]["uid"] = json!(format!("uid-{name}"));
            v["metadata"]["creationTimestamp"] = json!("2026-11-30T00:00:00Z");
            let script = c.script.clone();
            c.objects.insert(name, Object { body: v.clone(), script, gets: 0 });
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        (Method::GET, None) => {
            let want: Vec<(String, String)> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.strip_prefix("labelSelector="))
                .flat_map(|sel| {
                    let sel = sel.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/");
                    sel.split(',')
                        .filter_map(|t| t.split_once('=').map(|(k, v)| (k.into(), v.into())))
                        .collect::<Vec<_>>()
                })
                .collect();
            let items: Vec<Value> = c
                .objects
                .values()
                .filter(|o| want.iter().all(|(k, v)| o.body["metadata"]["labels"][k] == json!(v)))
                .map(|o| o.body.clone())
                .collect();
            axum::Json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotList", "metadata": {}, "items": items}))
            .into_response()
        }
        (Method::GET, Some(name)) => {
            let Some(o) = c.objects.get_mut(name) else {
                return status(404, "NotFound", &format!("volumesnapshots {name:?} not found"));
            };
            let step = o.script[o.gets.min(o.script.len() - 1)].clone();
            o.gets += 1;
            o.body["status"] = match step {
                Step::Created => Value::Null,
                Step::Unbound => json!({"readyToUse": false}),
                Step::Bound => json!({"readyToUse": false,
                    "boundVolumeSnapshotContentName": format!("snapcontent-{name}")}),
                Step::Ready => json!({"readyToUse": true, "restoreSize": "1Gi",
                    "boundVolumeSnapshotContentName": format!("snapcontent-{name}")}),
                Step::Error(m) => json!({"readyToUse": false,
                    "error": {"message": m, "time": "2026-11-30T00:00:00Z"}}),
            };
            if o.body["status"].is_null() {
                o.body.as_object_mut().unwrap().remove("status");
            }
            axum::Json(o.body.clone()).into_response()
        }
        (Method::DELETE, Some(name)) => match c.objects.remove(name) {
            Some(o) => {
                c.deletes.push(name.to_string());
                axum::Json(o.body).into_response()
            }
            None => status(404, "NotFound", &format!("volumesnapshots {name:?} not found")),
        },
        _ => status(405, "MethodNotAllowed", "not served by the stand-in"),
    }
}

/// A `ferry serve --snapshot csi` of module `m` (PVC `data`, class `csi-snap`) whose
/// kubeconfig points at the stand-in; its log goes to `log`.
fn serve_csi(t: &Path, kubeconfig: &Path, dst: &Path, http_addr: &str, extra: &[&str]) -> Server {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(t.join("serve.log")).unwrap();
    let mut child = Command::new(FERRY)
        .args(["serve", "--listen", "127.0.0.1:0", "--identity"])
        .arg(t.join("creds/destination"))
        .args(["--module", &format!("m={}", s(dst)), "--state-dir", s(&t.join("state"))])
        .args(["--snapshot", "csi", "--snapshot-class", "csi-snap", "--pvc", "data"])
        .args(["--http", http_addr])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}"));
    Server { child, addr: addr.parse().unwrap() }
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

fn push(t: &Path, srv: &Server) -> std::process::Output {
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    Command::new(FERRY)
        .args(["push", s(&t.join("src")), &url, "--identity"])
        .arg(t.join("creds/source"))
        .args(["--transport", "tcp"])
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("creds")).unwrap();
    let c = creds(&t.path().join("creds"));
    assert_eq!(c, t.path().join("creds"));
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("db")).unwrap();
    std::fs::write(src.join("db/a"), b"first").unwrap();
    let dst = t.path().join("dst");
    (t, dst)
}

fn status_json(addr: &str) -> Value {
    let (code, body) = http(addr, "GET", "/status");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

fn metrics(addr: &str) -> String {
    http(addr, "GET", "/metrics").1
}

fn records(t: &Path) -> Vec<Value> {
    let dir = t.join("state/snapshots/m");
    let mut v: Vec<Value> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    v.sort_by_key(|r| r["round"].as_u64());
    v
}

fn log(t: &Path) -> String {
    std::fs::read_to_string(t.join("serve.log")).unwrap_or_default()
}

/// The main path: each committed round gets a VolumeSnapshot that goes created, unbound,
/// bound, ready; labelled and annotated with module, round and root hash; reported as
/// `latestImage`, counted, announced by an Event on the PVC. Retention deletes only Ferry's
/// own snapshots, and never one labelled do-not-delete.
#[test]
fn csi_snapshot_after_each_round_against_the_stand_in_api_server() {
    let api = StandIn::start(vec![Step::Created, Step::Unbound, Step::Bound, Step::Ready]);
    let (t, dst) = setup();
    let t = t.path();
    // Someone else's snapshot of the same PVC: never touched.
    api.with(|c| {
        let body = json!({"metadata": {"name": "manual", "labels": {"team": "db"}},
            "spec": {"source": {"persistentVolumeClaimName": "data"}}});
        c.objects.insert("manual".into(), Object { body, script: vec![Step::Ready], gets: 0 });
    });
    let kc = api.kubeconfig(t);
    let http_addr = free_addr();
    let srv = serve_csi(t, &kc, &dst, &http_addr, &["--keep-last", "1"]);

    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(stdout(&out).contains("round 1, snapshot ferry-data-m-r1,"), "{}", stdout(&out));
    let o = api.object("ferry-data-m-r1");
    assert_eq!(o["spec"]["volumeSnapshotClassName"], "csi-snap");
    assert_eq!(o["spec"]["source"]["persistentVolumeClaimName"], "data");
    assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "ferry");
    assert_eq!(o["metadata"]["labels"]["ferry.dev/module"], "m");
    assert_eq!(o["metadata"]["labels"]["ferry.dev/round"], "1");
    assert_eq!(o["status"]["readyToUse"], true, "waited until ready: {o}");
    let recs = records(t);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["kind"], "csi");
    assert_eq!(recs[0]["volume_snapshot"]["state"], "ready");
    assert_eq!(recs[0]["volume_snapshot"]["content"], "snapcontent-ferry-data-m-r1");
    assert_eq!(recs[0]["volume_snapshot"]["namespace"], "apps");
    assert_eq!(o["metadata"]["annotations"]["ferry.dev/root-hash"], recs[0]["root_hash"]);
    assert_eq!(recs[0]["root_hash"].as_str().unwrap().len(), 64);
    let st = status_json(&http_addr);
    assert_eq!(
        st["latestImage"],
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
            "name": "ferry-data-m-r1"})
    );
    assert!(st["last_snapshot_error"].is_null(), "{st}");
    assert!(
        metrics(&http_addr).contains("ferry_csi_snapshots_total{result=\"ready\"} 1"),
        "{}",
        metrics(&http_addr)
    );
    let ev = api.with(|c| c.events.clone());
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["reason"], "SnapshotReady");
    assert_eq!(ev[0]["type"], "Normal");
    assert_eq!(ev[0]["regarding"]["kind"], "PersistentVolumeClaim");
    assert_eq!(ev[0]["regarding"]["name"], "data");
    assert_eq!(ev[0]["related"]["name"], "ferry-data-m-r1");
    assert!(ev[0]["eventTime"].as_str().unwrap().ends_with('Z'));

    // Round 2: with --keep-last 1, round 1's snapshot goes; the manual one stays.
    std::fs::write(t.join("src/db/b"), b"second").unwrap();
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert_eq!(api.names(), ["ferry-data-m-r2", "manual"]);
    assert_eq!(api.with(|c| c.deletes.clone()), ["ferry-data-m-r1"]);
    assert_eq!(records(t).len(), 1);
    assert_eq!(status_json(&http_addr)["latestImage"]["name"], "ferry-data-m-r2");

    // Round 2's snapshot is labelled do-not-delete: round 3 leaves it in the cluster.
    api.with(|c| {
        let o = c.objects.get_mut("ferry-data-m-r2").unwrap();
        o.body["metadata"]["labels"]["ferry.dev/do-not-delete"] = json!("true");
    });
    std::fs::write(t.join("src/db/c"), b"third").unwrap();
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert_eq!(api.names(), ["ferry-data-m-r2", "ferry-data-m-r3", "manual"]);
    assert_eq!(api.with(|c| c.deletes.clone()), ["ferry-data-m-r1"]);
    let recs = records(t);
    assert_eq!(recs.len(), 1, "the do-not-delete snapshot is no longer Ferry's: {recs:?}");
    assert_eq!(recs[0]["round"], 3);
    assert!(log(t).contains("is labelled ferry.dev/do-not-delete"), "{}", log(t));
    assert!(metrics(&http_addr).contains("ferry_csi_snapshots_total{result=\"ready\"} 3"));
    // `ferry snapshots list` shows them (no tree of their own).
    let out = ferry(&["snapshots", "list", "--state-dir", s(&t.join("state")), "--module", "m"]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("csi: VolumeSnapshot apps/ferry-data-m-r3 ready"), "{listed}");
    // Restarted, the server reports the newest ready one from its records before any round.
    drop(srv);
    let _srv = serve_csi(t, &kc, &dst, &http_addr, &["--keep-last", "1"]);
    assert_eq!(status_json(&http_addr)["latestImage"]["name"], "ferry-data-m-r3");
}

/// A `status.error` that clears is waited out; one that does not runs into
/// --snapshot-timeout: the round is committed, the snapshot failed, and every report says so.
#[test]
fn csi_status_error_that_clears_and_one_that_does_not() {
    let api = StandIn::start(vec![
        Step::Unbound,
        Step::Error("driver busy"),
        Step::Error("driver busy"),
        Step::Bound,
        Step::Ready,
    ]);
    let (t, dst) = setup();
    let t = t.path();
    let kc = api.kubeconfig(t);
    let http_addr = free_addr();
    let srv = serve_csi(t, &kc, &dst, &http_addr, &["--snapshot-timeout", "3s"]);
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(stdout(&out).contains("snapshot ferry-data-m-r1,"), "{}", stdout(&out));
    assert_eq!(records(t)[0]["volume_snapshot"]["state"], "ready");

    api.with(|c| c.script = vec![Step::Unbound, Step::Error("the CSI driver cannot snapshot")]);
    std::fs::write(t.join("src/db/b"), b"second").unwrap();
    let started = Instant::now();
    let out = push(t, &srv);
    let took = started.elapsed();
    // The push succeeds: the data is committed; only the snapshot failed.
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(
        stdout(&out).contains("round 2, snapshot ferry-data-m-r2 (VolumeSnapshot failed: timeout)"),
        "{}",
        stdout(&out)
    );
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(60), "{took:?}");
    let recs = records(t);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["volume_snapshot"]["state"], "failed");
    assert_eq!(recs[1]["volume_snapshot"]["failure"], "timeout");
    let err = recs[1]["volume_snapshot"]["error"].as_str().unwrap();
    assert!(err.contains("the CSI driver cannot snapshot"), "{err}");
    let st = status_json(&http_addr);
    assert_eq!(st["latestImage"]["name"], "ferry-data-m-r1", "the latest *ready* one: {st}");
    let e = st["last_snapshot_error"].as_str().unwrap();
    assert!(e.contains("ferry-data-m-r2 was not ready within 3 s"), "{e}");
    let m = metrics(&http_addr);
    assert!(m.contains("ferry_csi_snapshots_total{result=\"failed\",reason=\"timeout\"} 1"), "{m}");
    assert!(m.contains("ferry_csi_snapshots_total{result=\"ready\"} 1"), "{m}");
    let ev = api.with(|c| c.events.clone());
    assert_eq!(ev.len(), 2);
    assert_eq!(
        (ev[1]["reason"].as_str(), ev[1]["type"].as_str()),
        (Some("SnapshotFailed"), Some("Warning"))
    );
    assert!(ev[1]["note"].as_str().unwrap().contains("round 2 of module \"m\" is committed"));
    assert!(log(t).contains("CSI snapshot failed (timeout)"), "{}", log(t));
    // The commit record is there all the same.
    let last: Value =
        serde_json::from_slice(&std::fs::read(t.join("state/commits/m/last.json")).unwrap())
            .unwrap();
    assert_eq!(last["round"], 2);

    // Round 3's is bound (cut) in time but not ready by the deadline: failed, yet kept with
    // its content; round 2's (never bound) is deleted by retention.
    api.with(|c| c.script = vec![Step::Bound]);
    std::fs::write(t.join("src/db/c"), b"third").unwrap();
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(stdout(&out).contains("ferry-data-m-r3 (VolumeSnapshot failed: timeout)"));
    assert_eq!(api.with(|c| c.deletes.clone()), ["ferry-data-m-r2"]);
    let recs = records(t);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[1]["volume_snapshot"]["content"], "snapcontent-ferry-data-m-r3");
    // It becomes ready later; the next round finds it so, before its own.
    api.with(|c| {
        c.objects.get_mut("ferry-data-m-r3").unwrap().script = vec![Step::Ready];
        c.script = vec![Step::Ready];
    });
    std::fs::write(t.join("src/db/d"), b"fourth").unwrap();
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    let states: Vec<Value> =
        records(t).iter().map(|r| r["volume_snapshot"]["state"].clone()).collect();
    assert_eq!(states, [json!("ready"), json!("ready"), json!("ready")]);
    assert_eq!(api.names(), ["ferry-data-m-r1", "ferry-data-m-r3", "ferry-data-m-r4"]);
}

/// RBAC refuses: the round is committed, the error is named (forbidden) in the push's
/// result, the log, `/status`, an Event and the metrics. Then the API server is away for a
/// while during a round: Ferry retries until it is back, within the deadline.
#[test]
fn csi_forbidden_then_an_api_server_away_for_a_while() {
    let mut api = StandIn::start(vec![Step::Bound, Step::Ready]);
    let (t, dst) = setup();
    let t = t.path();
    let kc = api.kubeconfig(t);
    let http_addr = free_addr();
    api.with(|c| c.forbid = true);
    let srv = serve_csi(t, &kc, &dst, &http_addr, &["--snapshot-timeout", "20s"]);
    // Said at start-up already, before any round.
    assert!(log(t).contains("start-up check (forbidden)"), "{}", log(t));
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(
        stdout(&out).contains("ferry-data-m-r1 (VolumeSnapshot failed: forbidden)"),
        "{}",
        stdout(&out)
    );
    assert!(api.names().is_empty());
    assert!(log(t).contains("CSI snapshot failed (forbidden)"), "{}", log(t));
    assert!(log(t).contains("RBAC"), "{}", log(t));
    let st = status_json(&http_addr);
    assert!(st["last_snapshot_error"].as_str().unwrap().contains("forbidden"), "{st}");
    assert!(st["latestImage"].is_null());
    let m = metrics(&http_addr);
    assert!(
        m.contains("ferry_csi_snapshots_total{result=\"failed\",reason=\"forbidden\"} 1"),
        "{m}"
    );
    // The Role lacks volumesnapshots but has events: the failure is announced.
    let ev = api.with(|c| c.events.clone());
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["reason"], "SnapshotFailed");
    assert!(ev[0]["note"].as_str().unwrap().contains("forbidden"), "{}", ev[0]);

    // Away, then back 2 s into the round.
    api.with(|c| c.forbid = false);
    api.go_away();
    std::fs::write(t.join("src/db/b"), b"second").unwrap();
    let pusher = {
        let (t, srv_port) = (t.to_path_buf(), srv.addr.port());
        std::thread::spawn(move || {
            let url = format!("ferry://127.0.0.1:{srv_port}/m");
            Command::new(FERRY)
                .args(["push", s(&t.join("src")), &url, "--identity"])
                .arg(t.join("creds/source"))
                .args(["--transport", "tcp"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    api.listen();
    let out = pusher.join().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(stdout(&out).contains("round 2, snapshot ferry-data-m-r2,"), "{}", stdout(&out));
    assert!(log(t).contains("unreachable"), "the wait was logged: {}", log(t));
    assert_eq!(api.names(), ["ferry-data-m-r2"]);
    let st = status_json(&http_addr);
    assert_eq!(st["latestImage"]["name"], "ferry-data-m-r2");
    assert!(st["last_snapshot_error"].is_null(), "{st}");
}

/// A server killed while it waits for round 1's VolumeSnapshot (created, unbound): round 1 is
/// committed, its snapshot recorded pending. Returns the stand-in, the directory, the
/// destination, the kubeconfig and the server's HTTP address.
fn killed_while_waiting_for_round_1() -> (StandIn, tempfile::TempDir, PathBuf, PathBuf, String) {
    // Round 1's snapshot stays unbound until the test lets it go.
    let api = StandIn::start(vec![Step::Unbound]);
    let (td, dst) = setup();
    let t = td.path();
    let kc = api.kubeconfig(t);
    let http_addr = free_addr();
    let mut srv = serve_csi(t, &kc, &dst, &http_addr, &["--snapshot-timeout", "60s"]);
    let pusher = {
        let (t, srv_port) = (t.to_path_buf(), srv.addr.port());
        std::thread::spawn(move || {
            let url = format!("ferry://127.0.0.1:{srv_port}/m");
            Command::new(FERRY)
                .args(["push", s(&t.join("src")), &url, "--identity"])
                .arg(t.join("creds/source"))
                .args(["--transport", "tcp", "--retries", "0"])
                .output()
                .unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.names().is_empty() {
        assert!(Instant::now() < deadline, "no create: {}", log(t));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let out = pusher.join().unwrap();
    assert!(!out.status.success(), "the server died before its last word");
    let recs = records(t);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["volume_snapshot"]["state"], "pending");
    assert_eq!(recs[0]["volume_snapshot"]["name"], "ferry-data-m-r1");
    (api, td, dst, kc, http_addr)
}

/// The server is killed while it waits for round 1's snapshot; restarted, it finds the
/// recorded name before the next round changes anything, and the create's 409 means "already
/// there": adopted, awaited, recorded ready. No second snapshot of round 1 is made.
#[test]
fn csi_restart_adopts_the_recorded_snapshot_on_409() {
    let (api, t, dst, kc, http_addr) = killed_while_waiting_for_round_1();
    let t = t.path();

    // The CSI driver finishes; the server comes back; the next push first settles round 1.
    api.with(|c| {
        c.objects.get_mut("ferry-data-m-r1").unwrap().script = vec![Step::Bound, Step::Ready];
        c.script = vec![Step::Bound, Step::Ready];
    });
    let srv = serve_csi(t, &kc, &dst, &http_addr, &["--snapshot-timeout", "60s"]);
    std::fs::write(t.join("src/db/b"), b"second").unwrap();
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(stdout(&out).contains("round 2, snapshot ferry-data-m-r2,"), "{}", stdout(&out));
    let creates = api.with(|c| c.creates.clone());
    assert_eq!(
        creates,
        [
            ("ferry-data-m-r1".to_string(), 201),
            ("ferry-data-m-r1".to_string(), 409),
            ("ferry-data-m-r2".to_string(), 201)
        ]
    );
    assert!(log(t).contains("exists already (created before a restart): adopted"), "{}", log(t));
    let recs = records(t);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["volume_snapshot"]["state"], "ready");
    assert_eq!(recs[1]["volume_snapshot"]["state"], "ready");
    assert_eq!(api.names(), ["ferry-data-m-r1", "ferry-data-m-r2"]);
}

/// Bad configuration is refused at start-up with a clear message, never a server that
/// fails each round: a PVC name that is not a Kubernetes name, a missing class, no state
/// directory, and no API configuration at all.
#[test]
fn csi_flags_and_missing_configuration_are_refused_at_start_up() {
    let t = tempfile::tempdir().unwrap();
    let d = s(t.path());
    let base =
        ["serve", "--listen", "127.0.0.1:0", "--module", "m=/nonexistent-m", "--identity", d];
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(FERRY);
        c.args(base).args(extra).env_remove("KUBERNETES_SERVICE_HOST");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let state = format!("{d}/state");
    for (extra, want) in [
        (
            vec![
                "--snapshot",
                "csi",
                "--pvc",
                "Data_1",
                "--snapshot-class",
                "c",
                "--state-dir",
                &state,
            ],
            "--pvc \"Data_1\": not a Kubernetes object name",
        ),
        (
            vec!["--snapshot", "csi", "--pvc", "data", "--state-dir", &state],
            "needs --snapshot-class",
        ),
        (vec!["--snapshot", "csi", "--pvc", "data", "--snapshot-class", "c"], "needs --state-dir"),
        (vec!["--pvc", "data"], "go with --snapshot csi"),
        (
            vec![
                "--snapshot",
                "csi",
                "--pvc",
                "data",
                "--snapshot-class",
                "c",
                "--state-dir",
                &state,
                "--namespace",
                "a.b",
            ],
            "not a namespace name",
        ),
    ] {
        let out = run(&extra, &[]);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let module = t.path().join("m");
    std::fs::create_dir_all(&module).unwrap();
    let out = Command::new(FERRY)
        .args(["serve", "--listen", "127.0.0.1:0", "--stdio", "--module"])
        .arg(format!("m={}", s(&module)))
        .args([
            "--snapshot",
            "csi",
            "--pvc",
            "data",
            "--snapshot-class",
            "c",
            "--state-dir",
            &state,
        ])
        .env("KUBECONFIG", t.path().join("no-such-kubeconfig"))
        .env("HOME", t.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Kubernetes API configuration"), "{err}");
}

/// A pending snapshot whose tree has changed since is never created over newer data, nor
/// trusted: here the server was killed while round 1's snapshot was unbound, and a later
/// round (cut too) changed the live tree (the round-open marker says so). The restarted
/// server fails round 1's snapshot as interrupted, retention deletes it (it may have been cut
/// after the change), and round 2 gets its own.
#[test]
fn csi_a_pending_snapshot_of_a_tree_that_moved_on_is_not_trusted() {
    let (api, t, dst, kc, http_addr) = killed_while_waiting_for_round_1();
    let t = t.path();
    api.with(|c| {
        // Round 1's would now turn out ready, cut who knows when.
        c.objects.get_mut("ferry-data-m-r1").unwrap().script = vec![Step::Ready];
        c.creates.clear();
        c.script = vec![Step::Bound, Step::Ready];
    });
    std::fs::write(t.join("state/commits/m/round-open"), b"a cut round changed the tree\n")
        .unwrap();
    let srv = serve_csi(t, &kc, &dst, &http_addr, &["--snapshot-timeout", "60s"]);
    std::fs::write(t.join("src/db/b"), b"second").unwrap();
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert_eq!(api.with(|c| c.creates.clone()), [("ferry-data-m-r2".to_string(), 201)]);
    // Round 1's snapshot failed for good (counted, logged), and retention dropped it.
    let l = log(t);
    assert!(l.contains("ferry-data-m-r1: the server stopped before it was known to be cut"), "{l}");
    let m = metrics(&http_addr);
    let want = "ferry_csi_snapshots_total{result=\"failed\",reason=\"interrupted\"} 1";
    assert!(m.contains(want), "{m}");
    assert_eq!(api.with(|c| c.deletes.clone()), ["ferry-data-m-r1"]);
    let recs = records(t);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["round"], 2);
    assert_eq!(recs[0]["volume_snapshot"]["state"], "ready");
    assert_eq!(api.names(), ["ferry-data-m-r2"]);
    assert_eq!(status_json(&http_addr)["latestImage"]["name"], "ferry-data-m-r2");
}

/// A 409 for an object that is not this round's snapshot (no Ferry labels, here: a state
/// directory started afresh next to old snapshots would meet its own old names the same way,
/// with another root hash) is not adopted: the snapshot fails, named, and the object is left
/// alone.
#[test]
fn csi_a_name_taken_by_something_else_is_not_adopted() {
    let api = StandIn::start(vec![Step::Ready]);
    let (t, dst) = setup();
    let t = t.path();
    api.with(|c| {
        let body = json!({"metadata": {"name": "ferry-data-m-r1", "labels": {"team": "db"}},
            "spec": {"source": {"persistentVolumeClaimName": "data"}}});
        c.objects
            .insert("ferry-data-m-r1".into(), Object { body, script: vec![Step::Ready], gets: 0 });
    });
    let kc = api.kubeconfig(t);
    let http_addr = free_addr();
    let srv = serve_csi(t, &kc, &dst, &http_addr, &["--keep-last", "1"]);
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert!(
        stdout(&out).contains("snapshot ferry-data-m-r1 (VolumeSnapshot failed: name-taken)"),
        "{}",
        stdout(&out)
    );
    assert!(log(t).contains("is not this round's snapshot (it lacks the label"), "{}", log(t));
    std::fs::write(t.join("src/db/b"), b"second").unwrap();
    let out = push(t, &srv);
    assert!(out.status.success(), "{}\n{}", stdout(&out), log(t));
    assert_eq!(api.names(), ["ferry-data-m-r1", "ferry-data-m-r2"]);
    assert!(api.with(|c| c.deletes.is_empty()), "retention never deletes what is not Ferry's");
    assert_eq!(api.object("ferry-data-m-r1")["metadata"]["labels"], json!({"team": "db"}));
}
