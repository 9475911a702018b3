//! `ferry-bench`: Ferry's benchmark harness.
//!
//! - `ferry-bench compare`: Ferry and rsync side by side on generated datasets (initial sync,
//!   incremental round, no-change round, many small files), with a table on stdout, JSON
//!   (`--json`), and a markdown report with an SVG chart (`--report`); see
//!   `ferry_bench::compare`.
//! - `ferry-bench gen --kind mixed|mutate|many --out DIR`: the datasets alone
//!   (`ferry_bench::gen`).
//! - `ferry-bench report --json FILE --report MD`: the table, report and chart again from a
//!   saved comparison.
//! - `ferry-bench engine`: the engine's reference workload, below.
//! - `ferry-bench snapcost --files N`: commit + snapshot time and disk per snapshot, snapshot
//!   store beside earlier versions' hard-link trees (`snapcost.rs`).
//!
//! `ferry-bench engine` runs the core issue's reference workload: a seeded pseudo-random file
//! (1 GiB by default) and a new version of it with 200 scattered 4 KiB overwrites and 10 short
//! inserts that shift everything after them. For each thread count it
//!
//! 1. syncs the old version to the new one end to end through `ferry_agent::round::run`, on
//!    disk, and verifies the destination's blake3; and
//! 2. times the core pipeline in memory, stage by stage: signature, index, segment-parallel
//!    delta, segment-parallel patch (into pre-touched buffers), segment-parallel blake3
//!    verify.
//!
//! It prints a table and, with `--json FILE`, writes the figures as JSON.
//! The criterion micro-benchmarks are in `benches/engine.rs` (`cargo bench -p ferry-bench`).
#![forbid(unsafe_code)]

mod cmd;
mod snapcost;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferry_bench::compare::{NetMode, Scenario};
use ferry_bench::gen::Kind;
use ferry_bench::measure;
use ferry_bench::tools::Tool;
use ferry_bench::Mutations;

/// Ferry's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "ferry-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The reference workload: a large file with scattered changes, synced end to end through
    /// Ferry and pushed through the core delta pipeline in memory.
    Engine(EngineArgs),
    /// Generate a dataset: `mixed`, `many`, or `mutate` (one round of changes applied in place
    /// to a `mixed` tree). The same seed and scale always give the same tree.
    Gen(GenArgs),
    /// Compare Ferry with rsync on generated datasets: initial sync, incremental round,
    /// no-change round, many small files. Prints a table; writes JSON and a markdown report
    /// with an SVG chart on request.
    Compare(CompareArgs),
    /// Print the table and write the markdown report and chart again from a saved
    /// `compare --json` file (the goals are re-evaluated).
    Report(ReportArgs),
    /// Transport throughput on loopback, in one run: QUIC (Ferry's tuned configuration),
    /// TLS 1.3 over TCP, and plain TCP, alternating.
    Transport(TransportArgs),
    /// The sidecar's rounds with and without the destination's signature cache: `ferry serve
    /// --state-dir` on loopback, an initial push of `mixed` and an incremental push of its
    /// `mutate` change; round times, the commit + hard-link snapshot time and disk cost.
    Rounds(RoundsArgs),
    /// What a snapshot costs the destination, the snapshot store beside earlier versions'
    /// whole hard-link trees: commit + snapshot time and disk added for a no-change round, a
    /// round changing 1% of the files and one changing one file, and retention dropping one.
    Snapcost(SnapcostArgs),
    /// Internal: run a command and write its wall time, CPU time and peak RSS as JSON (the
    /// measuring wrapper `compare` runs every tool under).
    #[command(hide = true)]
    Measure(MeasureArgs),
}

#[derive(Debug, Args)]
struct SnapcostArgs {
    /// Small files in the generated tree (100000 and 1000000 for the published figures).
    #[arg(long, default_value_t = 10_000, conflicts_with = "mixed")]
    files: usize,
    /// Snapshot the `mixed` dataset (`ferry-bench gen mixed`) at this scale instead of small
    /// files (1: a 1 GiB file and 20,000 small files over nested directories).
    #[arg(long, value_name = "SCALE")]
    mixed: Option<f64>,
    /// Working directory (tree and state directories; default: a temp dir, removed).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Write the runs as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RoundsArgs {
    /// Dataset scale (1: the 1.7 GB mixed tree).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Repetitions of each mode.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Drop the page cache before each incremental round (root), so bases are read from disk.
    #[arg(long)]
    drop_caches: bool,
    /// Working directory (datasets, destination, state; default: a temp dir, removed).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Write the runs as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TransportArgs {
    /// Bytes per run, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs per transport.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Write all runs as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// What to generate.
    #[arg(long, value_enum)]
    kind: Kind,
    /// The directory: new or empty for `mixed` and `many`; a `mixed` tree for `mutate`.
    #[arg(long)]
    out: PathBuf,
    /// Multiplies the big file's size and every count (files, directories, edits); 0.05 is a
    /// small version for CI.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seed (give `mutate` the seed its `mixed` tree was made with).
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Multiplies dataset sizes and counts: 1 is issue 5's full datasets (1 GiB + 20,000
    /// files; 200,000 files); 0.05 runs every scenario in about a minute.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Runs per tool and scenario (median and min–max are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Put the destinations on a tmpfs mounted for the run (needs root; falls back to
    /// /dev/shm), taking the disk's write path out of the comparison.
    #[arg(long)]
    dest_tmpfs: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a markdown report (with an SVG chart next to it) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the SVG chart goes (default: the report's path with `.svg`).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Scenarios, comma-separated, in run order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    scenarios: Vec<Scenario>,
    /// Tools, comma-separated [default: the network mode's ferry-push, ferry-every,
    /// rsync-daemon, volsync-style, pv-migrate-style; loopback's ferry-push, ferry-sync,
    /// ferry-push-quic, ferry-push-tcp, rsync, rsync-daemon, cp, ferry-every].
    #[arg(long, value_enum, value_delimiter = ',')]
    tools: Vec<Tool>,
    /// Where the client/server tools run: `veth`, two network namespaces joined by a veth pair
    /// at MTU 1500 (a pod network; needs root, else falls back to loopback and says so), or
    /// `loopback`.
    #[arg(long, value_enum, default_value_t = NetMode::Veth)]
    net: NetMode,
    /// The ferry binary [default: `ferry` next to this executable].
    #[arg(long)]
    ferry: Option<PathBuf>,
    /// Another ferry binary to run as its own tool, "ferry (baseline)" (`ferry push` as
    /// deployed), alternating with the others: a before/after of a change in one run.
    #[arg(long, value_name = "PATH")]
    ferry_baseline: Option<PathBuf>,
    /// Directory for datasets and destinations, new or empty [default: a temporary
    /// directory]. Kept after a failure, for inspection.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep datasets and destinations after a successful run.
    #[arg(long)]
    keep: bool,
    /// Dataset seed.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The JSON written by `compare --json`.
    #[arg(long)]
    json: PathBuf,
    /// Write the markdown report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the SVG chart goes (default: the report's path with `.svg`).
    #[arg(long)]
    chart: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MeasureArgs {
    /// Where to write the usage JSON.
    #[arg(long)]
    report: PathBuf,
    /// Keep a server running until stdin closes, then stop it once its children are gone.
    #[arg(long)]
    hold: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct EngineArgs {
    /// Size of the old version, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: usize,
    /// Thread counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    threads: Vec<usize>,
    /// Directory for the generated files and the sync trees (default: a fresh temporary
    /// directory, removed at the end). Sync trees are removed after each run unless `--keep`.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the sync trees (`DIR/sync-tN/{src,dst}`) after each run.
    #[arg(long)]
    keep: bool,
    /// Number of 4 KiB overwrites.
    #[arg(long, default_value_t = Mutations::REFERENCE.overwrites)]
    overwrites: usize,
    /// Number of 16..=64 byte inserts.
    #[arg(long, default_value_t = Mutations::REFERENCE.inserts)]
    inserts: usize,
    /// Run the in-memory core pipeline this many times per thread count and keep each
    /// stage's fastest time.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Engine(a) => cmd::engine::engine(&a),
        Cmd::Gen(a) => cmd::gen_cmd(&a),
        Cmd::Compare(a) => cmd::compare::compare_cmd(a),
        Cmd::Report(a) => cmd::compare::report_cmd(&a),
        Cmd::Transport(a) => cmd::transport_cmd(&a),
        Cmd::Rounds(a) => cmd::rounds_cmd(&a),
        Cmd::Snapcost(a) => snapcost_cmd(&a),
        Cmd::Measure(a) => measure::wrapper_main(&a.report, a.hold, &a.command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn snapcost_cmd(a: &SnapcostArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let work = a.work.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let tree = match a.mixed {
        Some(scale) => snapcost::Tree::Mixed(scale),
        None => snapcost::Tree::Small(a.files),
    };
    let runs = snapcost::run(&snapcost::Options { tree, work })?;
    snapcost::print(&runs);
    if let Some(j) = &a.json {
        std::fs::write(j, serde_json::to_vec_pretty(&runs)?)?;
    }
    Ok(())
}
