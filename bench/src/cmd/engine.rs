//! `engine`: the reference workload (see the crate docs), synced end to end through
//! `ferry_agent::round::run` and timed stage by stage through the in-memory core pipeline.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use ferry_agent::round::{self as sync, Report, SyncOptions};
use ferry_bench::{Mutations, Workload};
use serde::Serialize;

use crate::EngineArgs;

/// Decimal gigabytes per second.
fn gbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1e9
    } else {
        f64::INFINITY
    }
}

#[derive(Debug, Serialize)]
struct WorkloadInfo {
    old_bytes: u64,
    new_bytes: u64,
    mutations: Mutations,
    overwritten_bytes: u64,
    inserted_bytes: u64,
    /// Overwritten + inserted: the least any delta must carry as literals.
    changed_bytes: u64,
    block_size: u32,
    segment_len: u64,
    seed: u64,
    new_blake3: String,
}

#[derive(Debug, Serialize)]
struct SyncRun {
    threads: usize,
    /// Wall time around `sync::run`, as measured here.
    wall_secs: f64,
    /// New-file bytes per wall second.
    gbps: f64,
    /// literal_bytes / changed_bytes.
    literal_over_changed: f64,
    verified: bool,
    report: Report,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Stage {
    secs: f64,
    /// Bytes the stage processed (old bytes for signature and index, new bytes otherwise).
    bytes: u64,
    gbps: f64,
}

impl Stage {
    fn new(bytes: u64, d: Duration) -> Stage {
        let secs = d.as_secs_f64();
        Stage { secs, bytes, gbps: gbps(bytes, secs) }
    }
}

#[derive(Debug, Serialize)]
struct CoreRun {
    threads: usize,
    signature: Stage,
    index: Stage,
    delta: Stage,
    patch: Stage,
    verify: Stage,
    total: Stage,
    signature_bytes: u64,
    segments: usize,
    delta_bytes: u64,
    literal_bytes: u64,
    matched_bytes: u64,
    verified: bool,
}

impl CoreRun {
    /// Keeps each stage's faster time of `self` and `other` (same workload, same threads).
    fn fastest(self, other: CoreRun) -> CoreRun {
        let min = |a: Stage, b: Stage| if b.secs < a.secs { b } else { a };
        let mut r = CoreRun {
            signature: min(self.signature, other.signature),
            index: min(self.index, other.index),
            delta: min(self.delta, other.delta),
            patch: min(self.patch, other.patch),
            verify: min(self.verify, other.verify),
            verified: self.verified && other.verified,
            ..self
        };
        r.total = r.summed();
        r
    }

    /// The sum of the stage times, as a stage over the new file's bytes.
    fn summed(&self) -> Stage {
        let secs = self.signature.secs
            + self.index.secs
            + self.delta.secs
            + self.patch.secs
            + self.verify.secs;
        Stage::new(self.delta.bytes, Duration::from_secs_f64(secs))
    }
}

#[derive(Debug, Serialize)]
struct Output {
    workload: WorkloadInfo,
    sync: Vec<SyncRun>,
    core: Vec<CoreRun>,
}

pub(crate) fn engine(a: &EngineArgs) -> Result<()> {
    ensure!(!a.threads.is_empty(), "--threads needs at least one thread count");
    ensure!(a.threads.iter().all(|&n| n >= 1), "thread counts must be at least 1");
    ensure!(a.repeat >= 1, "--repeat must be at least 1");
    let mutations =
        Mutations { overwrites: a.overwrites, inserts: a.inserts, ..Mutations::REFERENCE };
    let len = a.size_mib.checked_mul(1 << 20).context("--size-mib too large")?;
    ensure!(
        len >= mutations.min_len().max(1),
        "--size-mib {} is too small for {} overwrites of {} bytes",
        a.size_mib,
        mutations.overwrites,
        mutations.overwrite_len
    );

    let t = Instant::now();
    let w = Workload::generate(len, mutations, a.seed);
    let expected = *blake3::Hasher::new().update_rayon(&w.new).finalize().as_bytes();
    let gen_secs = t.elapsed().as_secs_f64();

    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let t = Instant::now();
    let old_path = dir.join("old.bin");
    let new_path = dir.join("new.bin");
    write_synced(&old_path, &w.old)?;
    write_synced(&new_path, &w.new)?;
    let write_secs = t.elapsed().as_secs_f64();
    // The machine may be shared: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // The coarse block size for a two-level delta; one-level files use BlockSize::for_len.
    let block_size = ferry_bench::sign(&w.old[..0]).header.block_size.get();
    let block_size = if w.old.len() as u64 >= ferry_core::delta::TWO_LEVEL_MIN {
        ferry_core::delta::BlockSize::coarse_for_len(w.old.len() as u64).get()
    } else {
        block_size.max(ferry_core::delta::BlockSize::for_len(w.old.len() as u64).get())
    };
    let info = WorkloadInfo {
        old_bytes: w.old.len() as u64,
        new_bytes: w.new.len() as u64,
        mutations,
        overwritten_bytes: w.overwritten_bytes,
        inserted_bytes: w.inserted_bytes,
        changed_bytes: w.changed_bytes(),
        block_size,
        segment_len: ferry_core::SEGMENT_LEN as u64,
        seed: a.seed,
        new_blake3: hex(&expected),
    };
    println!(
        "workload: old {} B ({} MiB), new {} B; {} x {} B overwrites + {} inserts ({} B)",
        info.old_bytes,
        a.size_mib,
        info.new_bytes,
        mutations.overwrites,
        mutations.overwrite_len,
        mutations.inserts,
        info.inserted_bytes,
    );
    println!(
        "changed-bytes reference: {} x {} + {} = {} B; first-pass block size {} B; segment {} B; seed {:#x}",
        mutations.overwrites,
        mutations.overwrite_len,
        info.inserted_bytes,
        info.changed_bytes,
        block_size,
        info.segment_len,
        a.seed
    );
    println!(
        "generated in {gen_secs:.2}s; written (fsynced) to {} in {write_secs:.2}s",
        dir.display()
    );
    if !load.is_empty() {
        println!("load average before the runs: {}", load.trim());
    }
    println!();

    let mut sync_runs = Vec::new();
    for &n in &a.threads {
        let r = sync_run(&dir, &old_path, &new_path, n, &w, &expected, a.keep)?;
        sync_runs.push(r);
    }
    print_sync(&sync_runs, info.changed_bytes);

    let mut core_runs = Vec::new();
    for &n in &a.threads {
        let mut best = core_run(&w, n, &expected)?;
        for _ in 1..a.repeat {
            best = best.fastest(core_run(&w, n, &expected)?);
        }
        core_runs.push(best);
    }
    print_core(&core_runs, a.repeat);

    if let Some(p) = &a.json {
        let out = Output { workload: info, sync: sync_runs, core: core_runs };
        let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), &out)?;
        println!();
        println!("JSON written to {}", p.display());
    }
    Ok(())
}

/// Writes `data` to `path` and fsyncs it, so its writeback does not land inside a timed run.
fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

/// Copies `from` to `to`, fsyncs it and sets its mtime.
fn copy_synced(from: &Path, to: &Path, mtime: SystemTime) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    let f = File::options().write(true).open(to)?;
    f.set_modified(mtime)?;
    f.sync_all()?;
    Ok(())
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new().num_threads(threads).build()?)
}

/// One end-to-end round through Ferry: old in `dst/file`, new in `src/file`.
fn sync_run(
    dir: &Path,
    old_path: &Path,
    new_path: &Path,
    threads: usize,
    w: &Workload,
    expected: &[u8; 32],
    keep: bool,
) -> Result<SyncRun> {
    let run_dir = dir.join(format!("sync-t{threads}"));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    let (src, dst) = (run_dir.join("src"), run_dir.join("dst"));
    std::fs::create_dir_all(&src)?;
    std::fs::create_dir_all(&dst)?;
    // Different mtimes (and sizes): the destination's copy is an hour older, so it is "changed"
    // and gets rebuilt by delta against itself.
    let now = SystemTime::now();
    copy_synced(old_path, &dst.join("file"), now - Duration::from_secs(3600))?;
    copy_synced(new_path, &src.join("file"), now)?;

    let pool = pool(threads)?;
    let opts = SyncOptions { threads, ..SyncOptions::default() };
    let t = Instant::now();
    let report = pool.install(|| sync::run(&src, &dst, &opts))?;
    let wall_secs = t.elapsed().as_secs_f64();

    let got = std::fs::read(dst.join("file"))?;
    let verified = got.len() == w.new.len()
        && pool.install(|| *blake3::Hasher::new().update_rayon(&got).finalize().as_bytes())
            == *expected;
    drop(got);
    if !verified {
        bail!("threads {threads}: destination file does not match the source's blake3");
    }
    let s = &report.stats;
    ensure!(
        s.files_changed == 1 && s.literal_bytes + s.matched_bytes == w.new.len() as u64,
        "threads {threads}: unexpected stats (one changed file of {} bytes expected): {s:?}",
        w.new.len()
    );
    for warning in &report.warnings {
        eprintln!("warning (threads {threads}): {warning}");
    }
    if !keep {
        std::fs::remove_dir_all(&run_dir)?;
    }
    Ok(SyncRun {
        threads,
        wall_secs,
        gbps: gbps(w.new.len() as u64, wall_secs),
        literal_over_changed: s.literal_bytes as f64 / w.changed_bytes() as f64,
        verified,
        report,
    })
}

/// The core pipeline in memory, stage by stage, in a pool of `threads` threads.
fn core_run(w: &Workload, threads: usize, expected: &[u8; 32]) -> Result<CoreRun> {
    let (old_len, new_len) = (w.old.len() as u64, w.new.len() as u64);
    pool(threads)?.install(|| {
        let t = Instant::now();
        let signed = ferry_bench::sign(&w.old);
        let signature = Stage::new(old_len, t.elapsed());

        let t = Instant::now();
        let index = ferry_bench::index(&signed)?;
        let index_stage = Stage::new(old_len, t.elapsed());

        // The two-level delta, as the agent runs it: coarse pass (source), fine signature of
        // the gaps (destination, counted with the signature stage), fine pass (source).
        let two_level = new_len >= ferry_core::delta::TWO_LEVEL_MIN;
        let t = Instant::now();
        let (deltas, fine_sig_bytes, fine_sig_time) = if two_level {
            let ferry_bench::CoarsePass { matches, gaps } =
                ferry_bench::coarse_pass(&index, &w.new, old_len)?;
            let pass1 = t.elapsed();
            let t2 = Instant::now();
            let (fine, map) = ferry_bench::fine_signature(&w.old, &gaps)?;
            let fine_index = ferry_bench::index(&fine)?;
            let fine_time = t2.elapsed();
            let t3 = Instant::now();
            let plan = ferry_core::delta::Refined { matches, fine: Some((fine_index, map)) };
            let deltas = ferry_bench::fine_pass(&plan, &w.new)?;
            (deltas, fine.blocks.len() as u64, Some((pass1 + t3.elapsed(), fine_time)))
        } else {
            (ferry_bench::diff_segments(&index, &w.new)?, 0, None)
        };
        let (delta, signature) = match fine_sig_time {
            Some((d, f)) => (
                Stage::new(new_len, d),
                Stage::new(old_len, Duration::from_secs_f64(signature.secs) + f),
            ),
            None => (Stage::new(new_len, t.elapsed()), signature),
        };

        let mut rebuilt = ferry_bench::segment_buffers(w.new.len());
        let t = Instant::now();
        ferry_bench::patch_segments_into(&w.old, &deltas, &mut rebuilt, w.new.len())?;
        let patch = Stage::new(new_len, t.elapsed());

        let t = Instant::now();
        let hash = ferry_bench::hash_segments(&rebuilt);
        let verify = Stage::new(new_len, t.elapsed());

        let verified = hash == Some(*expected);
        ensure!(verified, "threads {threads}: rebuilt data does not match the new version");
        let counts = ferry_bench::count_all(&deltas).context("a delta does not parse")?;
        let mut run = CoreRun {
            threads,
            signature,
            index: index_stage,
            delta,
            patch,
            verify,
            total: Stage::new(new_len, Duration::ZERO),
            signature_bytes: signed.blocks.len() as u64 + fine_sig_bytes,
            segments: deltas.len(),
            delta_bytes: deltas.iter().map(|d| d.len() as u64).sum(),
            literal_bytes: counts.literal,
            matched_bytes: counts.matched,
            verified,
        };
        run.total = run.summed();
        Ok(run)
    })
}

fn print_sync(runs: &[SyncRun], changed: u64) {
    println!(
        "end to end: ferry_agent::round::run (local round, src and dst pools of N threads each)"
    );
    println!(
        "{:>7} {:>9} {:>7} {:>12} {:>14} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8}",
        "threads",
        "elapsed_s",
        "GB/s",
        "literal_B",
        "matched_B",
        "payload_B",
        "sig_B",
        "wire_sent_B",
        "wire_recv_B",
        "lit/chg",
        "verified"
    );
    for r in runs {
        let s = &r.report.stats;
        println!(
            "{:>7} {:>9.3} {:>7.3} {:>12} {:>14} {:>11} {:>11} {:>11} {:>11} {:>8.2} {:>8}",
            r.threads,
            r.report.elapsed_secs,
            r.gbps,
            s.literal_bytes,
            s.matched_bytes,
            s.payload_bytes,
            s.signature_bytes,
            r.report.wire_bytes_sent,
            r.report.wire_bytes_received,
            r.literal_over_changed,
            if r.verified { "blake3 ok" } else { "MISMATCH" }
        );
    }
    println!("  changed-bytes reference: {changed} B; GB/s = new-file bytes / wall time around sync::run");
    println!("  phases (thread-seconds, summed over both pools):");
    for r in runs {
        let p = &r.report.phases;
        println!(
            "  {:>5}  scan {:.3}  signature {:.3}  delta {:.3}  read {:.3}  apply {:.3}  (wall {:.3}s)",
            r.threads, p.scan, p.signature, p.delta, p.read, p.apply, r.wall_secs
        );
    }
    println!();
}

fn print_core(runs: &[CoreRun], repeat: usize) {
    println!(
        "core pipeline in memory, two-level delta as the agent runs it (seconds, GB/s; signature = \
         coarse + fine signature, index over old bytes, delta = coarse + fine pass over new; \
         patch into pre-touched segment buffers; best of {repeat})"
    );
    println!(
        "{:>7} {:>16} {:>16} {:>16} {:>16} {:>16} {:>16}",
        "threads", "signature", "index", "delta", "patch", "verify", "total"
    );
    let cell = |s: &Stage| format!("{:.3}s {:>6.2}", s.secs, s.gbps);
    for r in runs {
        println!(
            "{:>7} {:>16} {:>16} {:>16} {:>16} {:>16} {:>16}",
            r.threads,
            cell(&r.signature),
            cell(&r.index),
            cell(&r.delta),
            cell(&r.patch),
            cell(&r.verify),
            cell(&r.total)
        );
    }
    for r in runs {
        println!(
            "  threads {}: {} segments, signature {} B, deltas {} B (literal {} B, matched {} B), {}",
            r.threads,
            r.segments,
            r.signature_bytes,
            r.delta_bytes,
            r.literal_bytes,
            r.matched_bytes,
            if r.verified { "blake3 ok" } else { "MISMATCH" }
        );
    }
}
