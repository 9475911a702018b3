//! `ferry k8s render`: the chart's manifests on stdout.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{json, Map, Value as Json};

use super::exit::Usage;
use super::flags::{K8sRole, RenderFlags};
use crate::chart::{self, values, Chart, Release, RenderError};

/// Renders the built-in chart with the flags' values and prints the YAML stream.
pub(crate) fn render(f: &RenderFlags) -> anyhow::Result<ExitCode> {
    let chart = match &f.chart {
        Some(dir) => Chart::from_dir(dir)?,
        None => Chart::embedded()?,
    };
    let user = user_values(f)?;
    let release = Release::new(&f.release, &f.namespace)?;
    let manifests = chart.render(&user, &release)?;
    let mut out = std::io::stdout().lock();
    out.write_all(chart::to_stream(&manifests).as_bytes()).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The user's values: files, then the convenience flags, then --set.
fn user_values(f: &RenderFlags) -> anyhow::Result<Map<String, Json>> {
    let mut user = Map::new();
    for path in &f.values {
        let what = format!("--values {}", path.display());
        let file = std::fs::File::open(path).map_err(|e| Usage(format!("{what}: {e}")))?;
        let mut text = String::new();
        file.take(values::MAX_VALUES_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| Usage(format!("{what}: {e}")))?;
        if text.len() as u64 > values::MAX_VALUES_FILE {
            return Err(
                Usage(format!("{what}: larger than {} bytes", values::MAX_VALUES_FILE)).into()
            );
        }
        values::merge(&mut user, values::parse_yaml(&what, &text).map_err(RenderError::from)?);
    }
    let pair = pair_values(f, &user)?;
    values::merge(&mut user, pair);
    for s in &f.set {
        values::apply_set(&mut user, s).map_err(RenderError::from)?;
    }
    Ok(user)
}

/// The values --role, --pvc, --schedule and --destination stand for.
fn pair_values(f: &RenderFlags, user: &Map<String, Json>) -> Result<Map<String, Json>, Usage> {
    let (dest, src) = match f.role {
        None => (false, false),
        Some(K8sRole::Destination) => (true, false),
        Some(K8sRole::Source) => (false, true),
        Some(K8sRole::Both) => (true, true),
    };
    let mut modules = Vec::new();
    for p in &f.pvc {
        let (module, pvc) = p.split_once('=').unwrap_or((p, p));
        if module.is_empty() || pvc.is_empty() {
            return Err(Usage(format!("--pvc {p:?}: want NAME or MODULE=NAME")));
        }
        modules.push(json!({"name": module, "pvc": pvc}));
    }
    let sidecar =
        user.get("source").and_then(|s| s.get("mode")).and_then(Json::as_str) == Some("sidecar");
    if src && sidecar && !modules.is_empty() {
        return Err(Usage(
            "--pvc: a sidecar source pushes the application's own volumes; list them as \
             source.modules[].volume in a --values file"
                .into(),
        ));
    }
    let mut v = Map::new();
    let mut side = |key: &str, on: bool, extra: Map<String, Json>| {
        let mut m = Map::new();
        if on {
            m.insert("enabled".into(), Json::Bool(true));
            if !modules.is_empty() {
                m.insert("modules".into(), Json::Array(modules.clone()));
            }
        }
        m.extend(extra);
        if !m.is_empty() {
            v.insert(key.into(), Json::Object(m));
        }
    };
    side("destination", dest, Map::new());
    let mut extra = Map::new();
    if let Some(s) = &f.schedule {
        extra.insert("schedule".into(), Json::String(s.clone()));
    }
    if let Some(d) = &f.destination {
        let mut to = Map::new();
        let (host, port) = match d.rsplit_once(':') {
            Some((h, p))
                if !h.contains(':') && !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) =>
            {
                let port: u16 =
                    p.parse().map_err(|_| Usage(format!("--destination {d:?}: bad port")))?;
                (h, Some(port))
            }
            _ => (d.as_str(), None),
        };
        if host.is_empty() {
            return Err(Usage(format!("--destination {d:?}: no host")));
        }
        to.insert("host".into(), Json::String(host.to_owned()));
        if let Some(p) = port {
            to.insert("basePort".into(), Json::from(p));
        }
        extra.insert("destination".into(), Json::Object(to));
    }
    side("source", src, extra);
    Ok(v)
}
