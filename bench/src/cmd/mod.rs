//! The subcommands' bodies; their arguments and the dispatch stay in `main.rs`.
//!
//! The small ones live here (`gen`, `rounds`, `transport`); `compare` holds `compare` and
//! `report`, `engine` the reference workload.

pub(crate) mod compare;
pub(crate) mod engine;

use anyhow::{Context, Result};
use ferry_bench::{gen, report};

use crate::{GenArgs, RoundsArgs, TransportArgs};

pub(crate) fn rounds_cmd(a: &RoundsArgs) -> Result<()> {
    use ferry_bench::rounds::{self, median};
    let exe = std::env::current_exe().context("locating the ferry-bench executable")?;
    let tmp = tempfile::tempdir()?;
    let work = a.work.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let runs = rounds::run(&rounds::Options {
        ferry: exe.with_file_name("ferry"),
        work,
        scale: a.scale,
        seed: 0x5EED,
        reps: a.reps,
        drop_caches: a.drop_caches,
    })?;
    println!(
        "{:<16} {:>12} {:>16} {:>18} {:>14}",
        "signature cache", "initial s", "incremental s", "commit+snapshot s", "snapshot KiB"
    );
    for cache in [true, false] {
        let of = |f: fn(&rounds::RoundsRun) -> f64| {
            median(runs.iter().filter(|r| r.signature_cache == cache).map(f).collect())
        };
        println!(
            "{:<16} {:>12.3} {:>16.3} {:>18.3} {:>14.0}",
            if cache { "on" } else { "off" },
            of(|r| r.initial_secs),
            of(|r| r.incremental_secs),
            of(|r| r.snapshot_secs),
            of(|r| r.snapshot_kib as f64)
        );
    }
    println!("(medians of {} runs each; page cache dropped: {})", a.reps, a.drop_caches);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&runs)?)?;
    }
    Ok(())
}

pub(crate) fn gen_cmd(a: &GenArgs) -> Result<()> {
    let g = gen::generate(a.kind, &a.out, a.scale, a.seed)?;
    let s = &g.stats;
    println!(
        "{:?} at {} (scale {}, seed {:#x}): {} files, {} directories, {} symlinks, {} in {:.1} s",
        g.kind,
        a.out.display(),
        g.scale,
        g.seed,
        s.files,
        s.dirs,
        s.symlinks,
        report::human_bytes(s.bytes),
        g.secs
    );
    if let Some(m) = g.mutate {
        println!("{}", serde_json::to_string_pretty(&m)?);
        println!("changed bytes: {}", report::human_bytes(m.changed_bytes()));
    }
    Ok(())
}

pub(crate) fn transport_cmd(a: &TransportArgs) -> Result<()> {
    let bytes = a.size_mib << 20;
    println!(
        "transport: {} MiB per run on loopback, {} run(s) each, alternating; load average {}",
        a.size_mib,
        a.reps,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let runs = ferry_bench::transport::run(bytes, a.reps)?;
    println!("{:<14} {:>10} {:>10}  QUIC path MTU / datagrams", "transport", "seconds", "GB/s");
    for r in &runs {
        let path = r.quic_path.map(|(mtu, n)| format!("{mtu} / {n}")).unwrap_or_default();
        println!("{:<14} {:>10.3} {:>10.3}  {path}", r.transport, r.secs, r.gbps);
    }
    let median = |name: &str| {
        let mut v: Vec<f64> = runs.iter().filter(|r| r.transport == name).map(|r| r.gbps).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (q, t, p) = (median("QUIC"), median("TLS over TCP"), median("plain TCP"));
    println!("medians: QUIC {q:.3} GB/s, TLS over TCP {t:.3} GB/s, plain TCP {p:.3} GB/s");
    println!("QUIC / TLS-over-TCP = {:.2} (goal >= 0.8)", q / t);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&runs)?)?;
    }
    Ok(())
}
