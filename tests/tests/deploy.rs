//! The Helm chart under deploy/helm/ferry, checked offline by deploy/check-k8s: every example
//! values file renders (through the Helm SDK of the helm-python-sdk package), every object
//! validates strictly against the Kubernetes schemas 1.29 to the newest bundled by the
//! kubernetes-validate package, restricted examples pass the restricted Pod Security
//! Standard's rules, and bad values are refused at render time. `.ci/run` installs both
//! packages; without them this test fails, saying what to install.

use std::path::Path;
use std::process::Command;

#[test]
fn the_chart_renders_and_validates_against_kubernetes_schemas() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/check-k8s");
    let out = Command::new("python3")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (is python3 installed?)", script.display()));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{text}\n(needs: pip install helm-python-sdk kubernetes-validate pyyaml)"
    );
    assert!(text.contains("0 failed"), "{text}");
    assert!(text.contains("1.29.0"), "validated against 1.29 at least: {text}");
}
