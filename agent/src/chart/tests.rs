//! The built-in chart rendered end to end. That it agrees with Helm object for object is
//! checked by deploy/check-render (agent/tests/agent/render.rs runs it).
#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

fn user(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => panic!("values must be a map"),
    }
}

fn release() -> Release {
    Release::new("ferry", "repl").unwrap()
}

fn kinds(ms: &[Manifest]) -> Vec<&str> {
    ms.iter().map(|m| m.kind.as_str()).collect()
}

#[test]
fn every_example_renders_into_objects_of_the_release_namespace() {
    let chart = Chart::embedded().unwrap();
    let mut n = 0;
    for (name, text) in chart.examples() {
        let values = values::parse_yaml(name, text).unwrap();
        let ms = chart.render(&values, &release()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ms.len() >= 2, "{name}: {:?}", kinds(&ms));
        for m in &ms {
            let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&m.text).unwrap();
            assert_eq!(doc["metadata"]["namespace"].as_str(), Some("repl"), "{name}: {}", m.text);
            assert!(m.name.starts_with("ferry"), "{name}: {}", m.name);
        }
        n += 1;
    }
    assert!(n >= 4, "the chart's examples are embedded: {n}");
}

#[test]
fn objects_come_in_helms_install_order() {
    let chart = Chart::embedded().unwrap();
    let v = user(json!({
        "destination": {"enabled": true, "modules": [{"name": "db", "pvc": "db-data"}],
                        "podDisruptionBudget": {"enabled": true}},
        "networkPolicy": {"enabled": true}
    }));
    let ms = chart.render(&v, &release()).unwrap();
    assert_eq!(
        kinds(&ms),
        [
            "NetworkPolicy",
            "PodDisruptionBudget",
            "ServiceAccount",
            "Service",
            "Service",
            "Deployment"
        ]
    );
    assert_eq!(ms[3].name, "ferry-destination");
    assert_eq!(ms[4].name, "ferry-destination-metrics");
    let stream = to_stream(&ms);
    assert!(stream.starts_with("---\n# Source: ferry/templates/networkpolicy.yaml\n"));
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&stream)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 6);
}

#[test]
fn values_reach_the_objects() {
    let chart = Chart::embedded().unwrap();
    let v = user(json!({
        "source": {"enabled": true, "modules": [{"name": "db", "pvc": "db-data"}],
                   "destination": {"host": "dr.example.com", "basePort": 9000},
                   "schedule": "5 * * * *"},
        "serviceAccount": {"create": false},
        "commonLabels": {"team": "storage"}
    }));
    let ms = chart.render(&v, &Release::new("rel", "ns").unwrap()).unwrap();
    assert_eq!(kinds(&ms), ["CronJob"]);
    let cj: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ms[0].text).unwrap();
    assert_eq!(cj["metadata"]["name"].as_str(), Some("rel-ferry-source"));
    assert_eq!(cj["metadata"]["labels"]["team"].as_str(), Some("storage"));
    assert_eq!(cj["spec"]["schedule"].as_str(), Some("5 * * * *"));
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"].as_str(), Some("default"));
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"ferry://dr.example.com:9000/db"), "{args:?}");
    assert_eq!(pod["volumes"][2]["persistentVolumeClaim"]["claimName"].as_str(), Some("db-data"));
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    let chart = Chart::embedded().unwrap();
    let cases = [
        (
            json!({"destination": {"enabled": true, "modules": [{"name": "Bad_Name", "pvc": "x"}]}}),
            "destination.modules[0].name",
        ),
        (
            json!({"destination": {"enabled": true, "modules": [{"name": "db", "pvc": "UPPER"}]}}),
            "destination.modules[0].pvc",
        ),
        (json!({"destination": {"enabled": true}}), "destination.modules: has 0 items"),
        (
            json!({"source": {"enabled": true, "schedule": "every minute", "modules": [{"name": "d", "pvc": "d"}], "destination": {"host": "h"}}}),
            "source.schedule",
        ),
        // Five fields, so the schema passes it, but no cron parser would.
        (
            json!({"source": {"enabled": true, "schedule": "61 * * * *", "modules": [{"name": "d", "pvc": "d"}], "destination": {"host": "h"}}}),
            "source.schedule \"61 * * * *\"",
        ),
        (json!({"securityMode": "root"}), "securityMode"),
        (
            json!({"source": {"enabled": true, "mode": "sidecar", "modules": [{"name": "db", "volume": "data"}], "destination": {"host": "h"}, "sidecar": {"containers": null}}}),
            "source.sidecar.containers: the application's containers",
        ),
    ];
    for (v, want) in cases {
        let e = chart.render(&user(v.clone()), &release()).unwrap_err().to_string();
        assert!(e.contains(want), "{v}: {e}");
    }
    let e = chart.render(&user(cases_sidecar()), &release()).unwrap_err();
    assert!(matches!(e, RenderError::Template(TemplateError::Fail { line: 53, .. })), "{e}");
    assert!(Release::new("Bad", "ns").is_err());
    assert!(Release::new("ok", "-ns").is_err());
    assert!(Release::new(&"a".repeat(54), "ns").is_err());
}

fn cases_sidecar() -> Json {
    json!({"source": {"enabled": true, "mode": "sidecar", "modules": [{"name": "db", "volume": "data"}],
                      "destination": {"host": "h"}, "sidecar": {"containers": null}}})
}

#[test]
fn a_chart_with_a_broken_template_says_where() {
    let files = |t: &str| {
        [
            ("Chart.yaml".to_owned(), "name: c\nversion: 1.0.0\nappVersion: '2'".to_owned()),
            ("templates/a.yaml".to_owned(), t.to_owned()),
        ]
    };
    let c = Chart::from_files(files("kind: A\nmetadata:\n  name: {{ .Chart.Name }}-{{ .Chart.AppVersion }}-{{ .Capabilities.KubeVersion.Minor }}")).unwrap();
    let ms = c.render(&Map::new(), &release()).unwrap();
    assert_eq!(ms[0].name, "c-2-36");
    let c = Chart::from_files(files("a: {{ .Values.x.y }}")).unwrap();
    let e = c.render(&Map::new(), &release()).unwrap_err().to_string();
    assert_eq!(e, "c/templates/a.yaml:1: nil pointer evaluating interface {}.y");
    let c = Chart::from_files(files("- just\n- a list")).unwrap();
    assert!(matches!(c.render(&Map::new(), &release()), Err(RenderError::Document { .. })));
    let c = Chart::from_files(files("kind: [")).unwrap();
    assert!(matches!(c.render(&Map::new(), &release()), Err(RenderError::Document { .. })));
    assert!(Chart::from_files(files(""))
        .unwrap()
        .render(&Map::new(), &release())
        .unwrap()
        .is_empty());
}

#[test]
fn a_chart_directory_is_read_without_following_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("templates")).unwrap();
    std::fs::write(root.join("Chart.yaml"), "name: c\nversion: 1.0.0").unwrap();
    std::fs::write(root.join("values.yaml"), "n: x").unwrap();
    std::fs::write(root.join("templates/a.yaml"), "kind: A\nmetadata:\n  name: {{ .Values.n }}")
        .unwrap();
    std::fs::write(root.join(".helmignore"), "ignored").unwrap();
    let ms = Chart::from_dir(root).unwrap().render(&Map::new(), &release()).unwrap();
    assert_eq!((ms[0].kind.as_str(), ms[0].name.as_str()), ("A", "x"));
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.yaml"), "kind: Secret\nmetadata:\n  name: s")
        .unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.yaml"), root.join("templates/b.yaml"))
        .unwrap();
    let e = Chart::from_dir(root).unwrap_err().to_string();
    assert!(e.contains("templates/b.yaml") && e.contains("symlink"), "{e}");
}
