//! Kubernetes: `ferry k8s render` prints the manifests the Helm chart (deploy/helm/ferry)
//! would install, without Helm. The chart's files are embedded at build time and rendered
//! by a Go-template engine of our own, so there is one source of the manifests: the chart.
//! CI (deploy/check-render) renders every example both ways and compares the objects.
//!
//! ```text
//!   values.yaml ─┐
//!   --values ────┼─ values.rs (merge, --set) ─ schema.rs (values.schema.json)
//!   --set ───────┘                                 │
//!   templates/ ─── template/ (parse, execute) ◀────┘ ─▶ documents, in Helm's install order
//! ```

pub mod schema;
pub mod template;
pub mod values;

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use self::template::{Limits, TemplateError, Templates, Value};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/chart_files.rs"));
}

/// The Kubernetes version `.Capabilities.KubeVersion` reports, as `helm template` (Helm 4.2,
/// offline) reports it.
pub const KUBE_VERSION: (u32, u32) = (1, 36);

/// Why the chart did not render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The chart itself is broken (a file missing or not parsing): a bug in the build.
    #[error("the chart's {file}: {message}")]
    Chart {
        /// The chart file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The values could not be read.
    #[error(transparent)]
    Values(#[from] values::ValuesError),
    /// The values break the chart's schema.
    #[error("the values do not fit the chart's values.schema.json: {}", list(.0))]
    Schema(Vec<schema::Violation>),
    /// The schema has what the validator cannot check.
    #[error(transparent)]
    SchemaUnsupported(#[from] schema::SchemaError),
    /// A template failed, or the chart refused the values (`fail`, `required`).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A template rendered something that is not a YAML object.
    #[error("{template}: the rendered document is not a YAML object: {message}")]
    Document {
        /// The template file.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A release or namespace name Kubernetes would refuse.
    #[error("{what} {name:?}: not a DNS-1123 label (lower-case letters, digits and '-', at most {max} characters)")]
    Name {
        /// "--release" or "--namespace".
        what: &'static str,
        /// The name.
        name: String,
        /// Its longest allowed length.
        max: usize,
    },
    /// A schedule that does not parse as a five-field cron expression.
    #[error("source.schedule {schedule:?}: {message}")]
    Schedule {
        /// The schedule.
        schedule: String,
        /// What is wrong.
        message: String,
    },
}

fn list(v: &[schema::Violation]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Helm's `.Release`: what `helm template NAME --namespace NS` is given.
#[derive(Debug, Clone)]
pub struct Release {
    /// The release name.
    pub name: String,
    /// The namespace.
    pub namespace: String,
}

impl Release {
    /// A release, its name and namespace checked as Helm and Kubernetes check them.
    ///
    /// # Errors
    /// [`RenderError::Name`].
    pub fn new(name: &str, namespace: &str) -> Result<Release, RenderError> {
        // Helm allows 53 characters for a release name: suffixes must still fit in 63.
        for (what, v, max) in [("--release", name, 53), ("--namespace", namespace, 63)] {
            if !is_dns_label(v, max) {
                return Err(RenderError::Name { what, name: v.to_owned(), max });
            }
        }
        Ok(Release { name: name.to_owned(), namespace: namespace.to_owned() })
    }
}

/// A DNS-1123 label of at most `max` characters.
pub fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// One rendered object.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The template it came from (`ferry/templates/destination.yaml`).
    pub source: String,
    /// Its `kind`.
    pub kind: String,
    /// Its `metadata.name`.
    pub name: String,
    /// The YAML text, as the template rendered it.
    pub text: String,
}

/// A chart: its files, with `Chart.yaml` read.
#[derive(Debug, Clone)]
pub struct Chart {
    files: BTreeMap<String, String>,
    meta: Map<String, Json>,
}

impl Chart {
    /// The chart built into this binary.
    ///
    /// # Errors
    /// [`RenderError::Chart`] if its `Chart.yaml` does not parse (a build bug).
    pub fn embedded() -> Result<Chart, RenderError> {
        Self::from_files(
            embedded::CHART_FILES.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())),
        )
    }

    /// A chart from its files (path inside the chart, contents).
    ///
    /// # Errors
    /// [`RenderError::Chart`] without a parsable `Chart.yaml`.
    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Chart, RenderError> {
        let files: BTreeMap<String, String> = files.into_iter().collect();
        let chart_err = |m: String| RenderError::Chart { file: "Chart.yaml".into(), message: m };
        let text = files.get("Chart.yaml").ok_or_else(|| chart_err("missing".into()))?;
        let meta = values::parse_yaml("Chart.yaml", text).map_err(|e| chart_err(e.to_string()))?;
        if !meta.get("name").is_some_and(Json::is_string) {
            return Err(chart_err("no name".into()));
        }
        Ok(Chart { files, meta })
    }

    /// A chart from a directory (`ferry k8s render --chart DIR`): every file beneath it but
    /// hidden ones, read without following a symlink (one is an error, naming it).
    ///
    /// # Errors
    /// [`RenderError::Chart`] for what cannot be read, a symlink, or a chart past
    /// [`MAX_CHART_FILES`] files or [`MAX_CHART_BYTES`] bytes.
    pub fn from_dir(path: &std::path::Path) -> Result<Chart, RenderError> {
        let err = |file: String, m: String| RenderError::Chart { file, message: m };
        let root = crate::fs::Root::open(path)
            .map_err(|e| err(path.display().to_string(), e.to_string()))?;
        let mut files = Vec::new();
        let mut budget = MAX_CHART_BYTES;
        let top = rustix::fs::openat(
            root.fd(),
            ".",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| err(path.display().to_string(), e.to_string()))?;
        read_tree(&top, "", 0, &mut files, &mut budget)?;
        Self::from_files(files)
    }

    /// The chart's name.
    pub fn name(&self) -> &str {
        self.meta.get("name").and_then(Json::as_str).unwrap_or("chart")
    }

    /// The example values files (`examples/NAME.yaml`), by file name.
    pub fn examples(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().filter_map(|(p, t)| p.strip_prefix("examples/").map(|n| (n, t.as_str())))
    }

    /// The chart's default values (`values.yaml`).
    ///
    /// # Errors
    /// [`RenderError::Chart`] if it does not parse.
    pub fn default_values(&self) -> Result<Map<String, Json>, RenderError> {
        match self.files.get("values.yaml") {
            Some(t) => values::parse_yaml("values.yaml", t).map_err(|e| RenderError::Chart {
                file: "values.yaml".into(),
                message: e.to_string(),
            }),
            None => Ok(Map::new()),
        }
    }

    /// Renders the chart with `user` values over its defaults, as `helm template` does:
    /// values checked against `values.schema.json`, every template under `templates/` whose
    /// name does not start with `_` rendered, split into documents, empty ones dropped, and
    /// the objects sorted into Helm's install order.
    ///
    /// # Errors
    /// A [`RenderError`] naming the value, template and line at fault.
    pub fn render(
        &self,
        user: &Map<String, Json>,
        release: &Release,
    ) -> Result<Vec<Manifest>, RenderError> {
        let merged = values::coalesce(&self.default_values()?, user);
        let merged = Json::Object(merged);
        if let Some(s) = self.files.get("values.schema.json") {
            let schema: Json = serde_json::from_str(s).map_err(|e| RenderError::Chart {
                file: "values.schema.json".into(),
                message: e.to_string(),
            })?;
            let violations = schema::validate(&schema, &merged)?;
            if !violations.is_empty() {
                return Err(RenderError::Schema(violations));
            }
        }
        check_schedule(&merged)?;
        let mut set = Templates::new();
        let name = self.name().to_owned();
        let mut outputs = Vec::new();
        for (path, text) in &self.files {
            let Some(file) = path.strip_prefix("templates/") else { continue };
            if file == "NOTES.txt" {
                continue;
            }
            let full = format!("{name}/{path}");
            set.add(&full, text)?;
            if !file.rsplit('/').next().unwrap_or(file).starts_with('_') {
                outputs.push(full);
            }
        }
        let values = Value::from_json(&merged)
            .map_err(|e| RenderError::Chart { file: "values".into(), message: e.to_string() })?;
        let mut manifests = Vec::new();
        for full in outputs {
            let top = self.top(&values, release, &full)?;
            let text = set.render(&full, &top, Limits::default())?;
            for doc in split_documents(&text) {
                manifests.push(parse_manifest(&full, doc)?);
            }
        }
        manifests.sort_by(|a, b| {
            install_rank(&a.kind).cmp(&install_rank(&b.kind)).then_with(|| a.name.cmp(&b.name))
        });
        Ok(manifests)
    }

    /// The data a template starts with: `.Values`, `.Release`, `.Chart`, `.Capabilities`
    /// and `.Template`, as Helm names them.
    fn top(&self, values: &Value, release: &Release, template: &str) -> Result<Value, RenderError> {
        let s = |v: &str| Value::str(v);
        let mut chart = BTreeMap::new();
        for (k, v) in &self.meta {
            let mut key = k.clone();
            if let Some(first) = key.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            let v = Value::from_json(v).map_err(|e| RenderError::Chart {
                file: "Chart.yaml".into(),
                message: e.to_string(),
            })?;
            chart.insert(key, v);
        }
        let (major, minor) = KUBE_VERSION;
        let kube = BTreeMap::from([
            ("Version".to_owned(), s(&format!("v{major}.{minor}.0"))),
            ("GitVersion".to_owned(), s(&format!("v{major}.{minor}.0"))),
            ("Major".to_owned(), s(&major.to_string())),
            ("Minor".to_owned(), s(&minor.to_string())),
        ]);
        let base = template.rsplit_once('/').map_or(template, |(d, _)| d);
        Ok(Value::map(BTreeMap::from([
            // Each template gets the same values; a template that changes them (`set`) changes
            // them for the ones after it, as in Helm.
            ("Values".to_owned(), values.clone()),
            (
                "Release".to_owned(),
                Value::map(BTreeMap::from([
                    ("Name".to_owned(), s(&release.name)),
                    ("Namespace".to_owned(), s(&release.namespace)),
                    ("Service".to_owned(), s("Helm")),
                    ("IsInstall".to_owned(), Value::Bool(true)),
                    ("IsUpgrade".to_owned(), Value::Bool(false)),
                    ("Revision".to_owned(), Value::Int(1)),
                ])),
            ),
            ("Chart".to_owned(), Value::map(chart)),
            (
                "Capabilities".to_owned(),
                Value::map(BTreeMap::from([("KubeVersion".to_owned(), Value::map(kube))])),
            ),
            (
                "Template".to_owned(),
                Value::map(BTreeMap::from([
                    ("Name".to_owned(), s(template)),
                    ("BasePath".to_owned(), s(base)),
                ])),
            ),
        ])))
    }
}

/// The most files [`Chart::from_dir`] reads.
pub const MAX_CHART_FILES: usize = 1000;
/// The most bytes [`Chart::from_dir`] reads, all files together.
pub const MAX_CHART_BYTES: u64 = 16 << 20;

fn read_tree(
    dir: &std::os::fd::OwnedFd,
    rel: &str,
    depth: usize,
    out: &mut Vec<(String, String)>,
    budget: &mut u64,
) -> Result<(), RenderError> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::io::Read as _;
    let err = |file: &str, m: String| RenderError::Chart { file: file.to_owned(), message: m };
    if depth > 16 {
        return Err(err(rel, "directories nest too deep".into()));
    }
    let names = crate::fs::list_dir(dir).map_err(|e| err(rel, e.to_string()))?;
    for name in names {
        let Ok(name) = String::from_utf8(name) else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let fd = rustix::fs::openat(
            dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            let why = if e == rustix::io::Errno::LOOP {
                "a symlink, not followed".to_owned()
            } else {
                e.to_string()
            };
            err(&path, why)
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| err(&path, e.to_string()))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => read_tree(&fd, &path, depth + 1, out, budget)?,
            FileType::RegularFile => {
                if out.len() >= MAX_CHART_FILES {
                    return Err(err(
                        &path,
                        format!("the chart has more than {MAX_CHART_FILES} files"),
                    ));
                }
                let mut text = String::new();
                std::fs::File::from(fd)
                    .take(*budget + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| err(&path, e.to_string()))?;
                if text.len() as u64 > *budget {
                    return Err(err(
                        &path,
                        format!("the chart is larger than {MAX_CHART_BYTES} bytes"),
                    ));
                }
                *budget -= text.len() as u64;
                out.push((path, text));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks `source.schedule` (when the source side runs as a CronJob) the way the CronJob
/// controller will: a five-field expression or a macro. The schema only counts the fields; a
/// CronJob whose schedule does not parse would never run, silently.
fn check_schedule(values: &Json) -> Result<(), RenderError> {
    let src = &values["source"];
    if src["enabled"] != Json::Bool(true) || src["mode"].as_str().unwrap_or("cronjob") != "cronjob"
    {
        return Ok(());
    }
    let Some(s) = src["schedule"].as_str() else { return Ok(()) };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(s)
        .map(|_| ())
        .map_err(|e| RenderError::Schedule { schedule: s.to_owned(), message: e.to_string() })
}

/// Splits a rendered file into its documents, as Helm does: at lines that start with
/// `---`; documents that are only whitespace are dropped.
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("---") && line[3..].trim().is_empty() {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

fn parse_manifest(template: &str, doc: &str) -> Result<Manifest, RenderError> {
    let bad = |m: String| RenderError::Document { template: template.to_owned(), message: m };
    let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).map_err(|e| bad(e.to_string()))?;
    let serde_yaml_ng::Value::Mapping(m) = &y else {
        return Err(bad(first_line(doc).to_owned()));
    };
    let field = |k: &str| m.get(k).and_then(serde_yaml_ng::Value::as_str).map(str::to_owned);
    let kind = field("kind").ok_or_else(|| bad("it has no kind".into()))?;
    let name = m
        .get("metadata")
        .and_then(|md| md.get("name"))
        .and_then(serde_yaml_ng::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let text = doc.trim_matches('\n').to_owned();
    Ok(Manifest { source: template.to_owned(), kind, name, text })
}

fn first_line(s: &str) -> &str {
    s.trim_start().lines().next().unwrap_or_default()
}

/// Helm's install order (`releaseutil.InstallOrder`); kinds it does not list go last.
fn install_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "PriorityClass",
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodSecurityPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "SecretList",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleList",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        "Role",
        "RoleList",
        "RoleBinding",
        "RoleBindingList",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// The manifests as one YAML stream for `kubectl apply -f -`, each with a `# Source:` line
/// as `helm template` prints them.
pub fn to_stream(manifests: &[Manifest]) -> String {
    let mut out = String::new();
    for m in manifests {
        out.push_str("---\n# Source: ");
        out.push_str(&m.source);
        out.push('\n');
        out.push_str(&m.text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
