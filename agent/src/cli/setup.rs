//! `ferry sync`, `ferry init` and `ferry status`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::config::LOCAL_COMPRESS_LEVEL;
use super::flags::{InitFlags, SyncArgs};
use super::output::{print_summary, sync_with_progress};
use crate::net::credentials;

/// `ferry sync SRC DST`.
pub(super) fn sync(a: SyncArgs) -> anyhow::Result<ExitCode> {
    let opts = a.round.options(LOCAL_COMPRESS_LEVEL);
    let report = sync_with_progress(&a.src, &a.dst, &opts, a.round.itemize(), !a.round.no_progress)
        .with_context(|| format!("sync {} -> {} failed", a.src.display(), a.dst.display()))?;
    for w in &report.warnings {
        tracing::warn!("skipped: {w}");
    }
    if a.round.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, a.round.dry_run);
    }
    Ok(super::exit::of_report(&report))
}

/// `ferry init`: a pair's credentials, and Kubernetes Secrets when asked.
pub(super) fn init(f: &InitFlags) -> anyhow::Result<ExitCode> {
    let out = &f.out;
    let pair = credentials::generate_for_days(&f.names, f.days)?;
    credentials::write_identity(&out.join("destination"), &pair.destination)?;
    credentials::write_identity(&out.join("source"), &pair.source)?;
    println!("wrote {}/destination (for `ferry serve --identity`) and {}/source (for `ferry push|pull --identity`)", out.display(), out.display());
    println!("valid for {} days; the destination answers to: {}", f.days, f.names.join(", "));
    if let Some((ns, name)) = &f.k8s_secret {
        for (side, id) in [("destination", &pair.destination), ("source", &pair.source)] {
            let path = out.join(format!("{side}-secret.yaml"));
            std::fs::write(&path, credentials::k8s_secret(ns, &format!("{name}-{side}"), id))
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} (Secret {ns}/{name}-{side})", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry status --status-file PATH`.
pub(super) fn status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| {
        format!("reading {} (written by --status-file after each round)", path.display())
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a Ferry status file", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let ago = |k: &str| {
        v[k].as_f64().map(|t| format!("{:.0} s ago", now - t)).unwrap_or_else(|| "never".into())
    };
    println!(
        "last round:    {} ({}, {} attempt(s), {:.2} s, over {})",
        v["last_result"].as_str().unwrap_or("?"),
        ago("last_end_unix"),
        v["last_attempts"],
        v["last_duration_secs"].as_f64().unwrap_or(0.0),
        v["last_transport"].as_str().unwrap_or("-")
    );
    println!("last success:  {}", ago("last_success_unix"));
    println!(
        "rounds:        {} ok, {} failed; {} scheduled time(s) missed",
        v["rounds_ok"], v["rounds_failed"], v["missed_intervals"]
    );
    match v["next_run_unix"].as_f64() {
        Some(t) => println!("next round:    in {:.0} s", t - now),
        None => println!("next round:    none scheduled"),
    }
    if let Some(st) = v["last_stats"].as_object() {
        println!(
            "last changes:  {} new, {} changed, {} deleted, {} literal bytes",
            st["files_new"], st["files_changed"], st["files_deleted"], st["literal_bytes"]
        );
    }
    Ok(ExitCode::SUCCESS)
}
