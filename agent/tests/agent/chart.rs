//! What the Helm chart renders runs: the destination container's arguments, taken from
//! `helm template` of an example (through deploy/check-k8s's renderer, the Helm SDK of the
//! helm-python-sdk package that `.ci/run` installs), start a real `ferry serve` once the pod's
//! paths are mapped onto a temporary directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use super::common::{check_ok, creds, ferry, s, Server, FERRY};

/// The args of the destination Deployment's containers, rendered from `example`.
fn rendered_serve_args(example: &str) -> Vec<Vec<String>> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let script = r#"
import importlib.machinery, importlib.util, json, sys, yaml
loader = importlib.machinery.SourceFileLoader("check_k8s", sys.argv[1] + "/check-k8s")
spec = importlib.util.spec_from_loader("check_k8s", loader)
ck = importlib.util.module_from_spec(spec)
loader.exec_module(ck)
with open(sys.argv[1] + "/helm/ferry/examples/" + sys.argv[2]) as f:
    values = yaml.safe_load(f)
out = [c["args"] for d in ck.render(values) if d["kind"] == "Deployment"
       for c in d["spec"]["template"]["spec"]["containers"]]
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script, s(&deploy), example])
        .output()
        .expect("python3 runs (with helm-python-sdk, kubernetes-validate, pyyaml: see .ci/run)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The batch example: one volume, every subdirectory a module through one `ferry serve
/// --modules-dir`, the state in the volume's hidden `.ferry-state`, push only.
#[test]
fn the_batch_destination_serves_every_subdirectory_as_rendered() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (volumes, src) = (t.path().join("volumes"), t.path().join("src"));
    for m in ["db", "media"] {
        std::fs::create_dir_all(volumes.join(m)).unwrap();
    }
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"replicated").unwrap();
    let containers = rendered_serve_args("destination-batch.yaml");
    assert_eq!(containers.len(), 1, "one container serves every module: {containers:?}");
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let args: Vec<String> = containers[0]
        .iter()
        .map(|a| match a.split_once('=') {
            Some(("--listen", _)) => "--listen=127.0.0.1:0".to_string(),
            Some(("--http", _)) => format!("--http={http}"),
            _ => a
                .replace("/etc/ferry/identity", s(&c.join("destination")))
                .replace("/volumes", s(&volumes)),
        })
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--modules-dir=")), "{args:?}");
    let mut child = Command::new(FERRY)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}"));
    let srv = Server { child, addr: addr.parse().unwrap() };
    let url = |m: &str| format!("ferry://localhost:{}/{m}", srv.addr.port());
    let id = c.join("source");
    let push = |m: &str| ferry(&["push", s(&src), &url(m), "--identity", s(&id), "--no-progress"]);

    // A subdirectory created while serving is a module at once.
    std::fs::create_dir(volumes.join("late")).unwrap();
    for m in ["db", "media", "late"] {
        check_ok(&push(m));
        assert_eq!(std::fs::read(volumes.join(m).join("f")).unwrap(), b"replicated");
    }
    // The state directory is hidden: never a module; the example is push only.
    assert_eq!(push(".ferry-state").status.code(), Some(5));
    let pull = ferry(&["pull", &url("db"), s(&t.path().join("back")), "--identity", s(&id)]);
    assert_eq!(pull.status.code(), Some(5), "access: wo");
    // Each module's snapshot is in the state directory on the same volume.
    let list = ferry(&[
        "snapshots",
        "list",
        "--state-dir",
        s(&volumes.join(".ferry-state")),
        "--module",
        "media",
    ]);
    check_ok(&list);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 2, "a header and one");
}
