//! `ferry-bench rounds`: the sidecar's rounds as an operator runs them, with and without the
//! destination's signature cache.
//!
//! Per repetition and per mode (cache on, then `--no-signature-cache`), on a fresh destination
//! and state directory (on the same filesystem, as hard-link snapshots need):
//!
//! 1. `ferry serve --listen 127.0.0.1:0 --module ferrybench=DST --state-dir STATE
//!    [--no-signature-cache]` (under the measuring wrapper, as `compare` runs it);
//! 2. round 1: `ferry push --delete --json` of the `mixed` tree (initial);
//! 3. round 2: the `mixed`-then-`mutate` tree (the incremental change), optionally after
//!    dropping the page cache (`--drop-caches`, root), so every basis read comes from disk;
//!
//! Each round's time is the push's wall time (what the source waits for: every file verified,
//! in place and durable on the destination). The server then commits and snapshots; the
//! commit + hard-link snapshot time is the server's own figure from its log line, and the
//! snapshot's disk cost is what `du -sk DST SNAPSHOT` adds for the snapshot beyond the live
//! tree (du counts each inode once per invocation, so shared file data is not counted twice).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::gen::{self, Kind};
use crate::tools::{read_log, Env, FerryServe, MODULE};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// Where datasets, destinations and logs go.
    pub work: PathBuf,
    /// Dataset scale (1.0: the 1.7 GB mixed tree).
    pub scale: f64,
    /// Dataset seed.
    pub seed: u64,
    /// Repetitions of each mode.
    pub reps: usize,
    /// Drop the page cache before the incremental round (root only).
    pub drop_caches: bool,
}

/// One repetition of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct RoundsRun {
    /// Whether the signature cache was on.
    pub signature_cache: bool,
    /// Initial round, wall seconds of the push.
    pub initial_secs: f64,
    /// Incremental round, wall seconds of the push.
    pub incremental_secs: f64,
    /// Server's commit + snapshot seconds after the incremental round.
    pub snapshot_secs: f64,
    /// KiB the incremental round's snapshot adds beyond the live tree.
    pub snapshot_kib: u64,
    /// The server's signature-cache line for the incremental round, as logged.
    pub cache_line: String,
}

/// Waits until the server's log has `n` lines containing `needle`; returns the last one.
fn wait_log(log: &Path, needle: &str, n: usize) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = read_log(log);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        if lines.len() >= n {
            return Ok(lines[n - 1].to_string());
        }
        ensure!(Instant::now() < deadline, "ferry serve never logged {needle:?} #{n}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(env: &Env, creds: &Path, dst: &Path, state: &Path, cache: bool) -> Result<FerryServe> {
    std::fs::create_dir_all(dst)?;
    let mut extra = vec![OsStr::new("--state-dir"), state.as_os_str()];
    if !cache {
        extra.push(OsStr::new("--no-signature-cache"));
    }
    FerryServe::start(env, creds, dst, &extra)
}

fn push(o: &Options, creds: &Path, src: &Path, addr: &str) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new(&o.ferry)
        .args(["push", "--delete", "--json", "--no-progress", "--transport", "quic", "--identity"])
        .arg(creds.join("source"))
        .arg(src)
        .arg(format!("ferry://{addr}/{MODULE}"))
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(out.status.success(), "ferry push failed:\n{}", String::from_utf8_lossy(&out.stderr));
    Ok(secs)
}

fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache (root?)")
}

/// Seconds in a server line `... snapshot ID (...) in X s`.
fn secs_in(line: &str) -> Option<f64> {
    line.rsplit(" in ").next()?.trim().strip_suffix(" s")?.parse().ok()
}

fn du_beyond(dst: &Path, snap: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sk").arg(dst).arg(snap).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("du output {text:?}"))
}

/// Runs the benchmark; generates the datasets under `work` first.
///
/// # Errors
/// When a dataset, the server or a push fails.
pub fn run(o: &Options) -> Result<Vec<RoundsRun>> {
    ensure!(o.reps > 0, "--reps must be at least 1");
    std::fs::create_dir_all(&o.work)?;
    let (mixed, mutated) = (o.work.join("mixed"), o.work.join("mutated"));
    gen::generate(Kind::Mixed, &mixed, o.scale, o.seed)?;
    gen::generate(Kind::Mixed, &mutated, o.scale, o.seed)?;
    gen::generate(Kind::Mutate, &mutated, o.scale, o.seed)?;
    let creds = crate::tools::init_credentials(&o.ferry, &o.work.join("creds"))?;
    // The server runs under the measuring wrapper (this executable), as in `compare`.
    let env = Env {
        wrapper: std::env::current_exe().context("locating the ferry-bench executable")?,
        ferry: o.ferry.clone(),
        scratch: o.work.clone(),
        creds: Some(creds.clone()),
        net: None,
        baseline: None,
        keys: None,
    };
    let mut runs = Vec::new();
    for _ in 0..o.reps {
        for cache in [true, false] {
            let (dst, state) = (o.work.join("dst"), o.work.join("state"));
            for d in [&dst, &state] {
                if d.exists() {
                    std::fs::remove_dir_all(d)?;
                }
            }
            let srv = serve(&env, &creds, &dst, &state, cache)?;
            let initial_secs = push(o, &creds, &mixed, &srv.addr)?;
            wait_log(&srv.log, "committed (root", 1)?;
            if cache {
                wait_log(&srv.log, "signature cache:", 1)?;
            }
            if o.drop_caches {
                drop_caches()?;
            }
            let incremental_secs = push(o, &creds, &mutated, &srv.addr)?;
            let committed = wait_log(&srv.log, "committed (root", 2)?;
            let cache_line = if cache {
                wait_log(&srv.log, "signature cache:", 2)?
                    .split("signature cache: ")
                    .nth(1)
                    .unwrap_or_default()
                    .to_string()
            } else {
                "off".into()
            };
            let snapshot_secs = secs_in(&committed)
                .with_context(|| format!("no time in the server's line {committed:?}"))?;
            let id = committed
                .split(", snapshot ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .with_context(|| format!("no snapshot id in {committed:?}"))?;
            let snapshot_kib = du_beyond(&dst, &state.join("snapshots").join(MODULE).join(id))?;
            drop(srv);
            let run = RoundsRun {
                signature_cache: cache,
                initial_secs,
                incremental_secs,
                snapshot_secs,
                snapshot_kib,
                cache_line,
            };
            eprintln!(
                "cache {:>3}: initial {:.3} s, incremental {:.3} s, commit+snapshot {:.3} s, {} KiB; cache: {}",
                if cache { "on" } else { "off" },
                run.initial_secs,
                run.incremental_secs,
                run.snapshot_secs,
                run.snapshot_kib,
                run.cache_line
            );
            runs.push(run);
        }
    }
    if runs.is_empty() {
        bail!("no runs");
    }
    Ok(runs)
}

/// The median of `v` (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_parse() {
        let l = "2026 INFO module \"m\": round 2 committed (root abcd), snapshot 20261121T000000Z-r2 (5 entries, 9 bytes) in 0.21 s";
        assert_eq!(secs_in(l), Some(0.21));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
