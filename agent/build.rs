//! Embeds the Helm chart (deploy/helm/ferry) in the binary, so `ferry k8s render` renders the
//! very templates and values Helm installs: one list of every file, made at build time.

use std::path::{Path, PathBuf};

fn main() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/ferry");
    println!("cargo:rerun-if-changed={}", chart.display());
    let mut files = Vec::new();
    collect(&chart, &chart, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The chart's files: path inside the chart, contents.\n\
         pub(crate) static CHART_FILES: &[(&str, &str)] = &[\n",
    );
    for (rel, abs) in &files {
        out.push_str(&format!("    ({rel:?}, include_str!({:?})),\n", abs.display().to_string()));
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("chart_files.rs");
    std::fs::write(dest, out).expect("writing chart_files.rs into OUT_DIR");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(root, &path, out);
        } else if ft.is_file() && std::fs::read_to_string(&path).is_ok() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let abs = path.canonicalize().unwrap_or(path);
            out.push((rel, abs));
        }
    }
}
