//! `ferry k8s render`: deploy/check-render renders every example values file of the chart
//! with this `ferry` and with the Helm SDK (the helm-python-sdk package, offline) and compares
//! the objects as data, and checks that bad inputs are refused by both. `.ci/run` installs the
//! package; without it this test fails, saying what to install.
//!
//! Then `ferry k8s render` as a user runs it: the pair's flags, --set, and bad input.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{ferry, FERRY};

#[test]
fn ferry_k8s_render_gives_the_same_objects_and_refusals_as_helm() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/check-render");
    let out =
        Command::new("python3").arg(&script).args(["--ferry", FERRY]).output().unwrap_or_else(
            |e| panic!("running {}: {e} (is python3 installed?)", script.display()),
        );
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}\n(needs: pip install helm-python-sdk pyyaml)");
    assert!(text.contains(" 0 failed"), "{text}");
    let agreed = text
        .lines()
        .find_map(|l| l.strip_prefix("ferry k8s render agreed with Helm on "))
        .unwrap_or_else(|| panic!("no agreement line: {text}"));
    let (n, of) = agreed.split_once(" of ").unwrap();
    let of = of.split_whitespace().next().unwrap();
    assert_eq!(n, of, "{text}");
    assert!(n.parse::<u32>().unwrap() >= 8, "every example and bad input: {text}");
}

fn docs(out: &Output) -> Vec<serde_yaml_ng::Value> {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &serde_yaml_ng::Value| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> &'a serde_yaml_ng::Value {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind}"))
}

fn refused(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(want), "want {want:?} in: {err}");
    assert!(out.stdout.is_empty(), "nothing half-printed");
}

#[test]
fn render_a_destination_from_the_pairs_flags() {
    let out = ferry(&[
        "k8s",
        "render",
        "--role",
        "destination",
        "--pvc",
        "db-data",
        "--pvc",
        "wal=wal-data",
        "--namespace",
        "dr",
        "--release",
        "prod",
        "--set",
        "destination.service.type=NodePort,destination.keepLast=3",
    ]);
    let d = docs(&out);
    let dep = find(&d, "Deployment");
    assert_eq!(dep["metadata"]["namespace"].as_str(), Some("dr"));
    assert_eq!(dep["metadata"]["name"].as_str(), Some("prod-ferry-destination"));
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["name"].as_str(), Some("serve-db-data"));
    assert_eq!(pod["containers"][1]["name"].as_str(), Some("serve-wal"));
    assert_eq!(pod["volumes"][3]["persistentVolumeClaim"]["claimName"].as_str(), Some("wal-data"));
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--keep-last=3"), "{args:?}");
    let svc = d
        .iter()
        .find(|x| {
            x["metadata"]["name"].as_str() == Some("prod-ferry-destination")
                && x["kind"].as_str() == Some("Service")
        })
        .unwrap();
    assert_eq!(svc["spec"]["type"].as_str(), Some("NodePort"));
    assert!(!d.iter().any(|x| x["kind"].as_str() == Some("CronJob")), "source not enabled");
}

#[test]
fn render_a_source_cronjob_from_the_pairs_flags() {
    let out = ferry(&[
        "k8s",
        "render",
        "--role",
        "source",
        "--pvc",
        "db-data",
        "--schedule",
        "*/5 * * * *",
        "--destination",
        "dr.example.com:8000",
    ]);
    let d = docs(&out);
    let cj = find(&d, "CronJob");
    assert_eq!(cj["metadata"]["namespace"].as_str(), Some("default"));
    assert_eq!(cj["spec"]["schedule"].as_str(), Some("*/5 * * * *"));
    let c = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> =
        c["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(args.contains(&"ferry://dr.example.com:8000/db-data"), "{args:?}");
    // The same objects whatever the order of the flags and files that set them.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("v.yaml");
    std::fs::write(&f, "source:\n  schedule: '*/5 * * * *'\n  destination: {host: dr.example.com, basePort: 8000}\n").unwrap();
    let again = ferry(&[
        "k8s",
        "render",
        "--role",
        "source",
        "--pvc",
        "db-data",
        "-f",
        f.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), String::from_utf8_lossy(&out.stdout));
}

#[test]
fn bad_input_exits_2_naming_the_value() {
    refused(
        &ferry(&["k8s", "render", "--role", "destination", "--pvc", "Bad_Name"]),
        "destination.modules[0].name",
    );
    refused(
        &ferry(&["k8s", "render", "--role", "destination", "--pvc", "db=UPPER"]),
        "destination.modules[0].pvc",
    );
    refused(
        &ferry(&["k8s", "render", "--role", "source", "--pvc", "d", "--schedule", "61 * * * *"]),
        "source.schedule \"61 * * * *\"",
    );
    refused(
        &ferry(&["k8s", "render", "--role", "source", "--pvc", "d", "--schedule", "hourly"]),
        "source.schedule",
    );
    refused(
        &ferry(&["k8s", "render", "--role", "destination"]),
        "destination.modules: has 0 items",
    );
    refused(&ferry(&["k8s", "render", "--pvc", "d"]), "--role");
    refused(
        &ferry(&["k8s", "render", "--values", "/nonexistent/values.yaml"]),
        "/nonexistent/values.yaml",
    );
    refused(&ferry(&["k8s", "render", "--set", "a[x]=1"]), "--set");
    refused(&ferry(&["k8s", "render", "--namespace", "Not_A_Namespace"]), "--namespace");
    refused(
        &ferry(&[
            "k8s",
            "render",
            "--role",
            "source",
            "--pvc",
            "d",
            "--set",
            "source.mode=sidecar",
        ]),
        "source.modules[0].volume",
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("v.yaml");
    std::fs::write(&f, "source: {mode: sidecar}").unwrap();
    refused(
        &ferry(&["k8s", "render", "--role", "source", "--pvc", "d", "-f", f.to_str().unwrap()]),
        "sidecar",
    );
    std::fs::write(&f, "- not\n- a map").unwrap();
    refused(&ferry(&["k8s", "render", "-f", f.to_str().unwrap()]), "must be a map");
}
