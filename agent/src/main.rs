//! The `ferry` binary: flags (syntax only) → validated options → run → exit code.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_agent::driver::Progress;
use ferry_agent::sync::{self, Report, SyncError, SyncOptions};
use ferry_core::session::{Action, Itemized};

/// Exit codes, documented in the README.
mod exit {
    /// Bad flags or arguments.
    pub(crate) const USAGE: u8 = 2;
    /// The peer broke the protocol or aborted.
    pub(crate) const PEER: u8 = 5;
    /// A local I/O error (source unreadable, destination not writable, no space).
    pub(crate) const LOCAL_IO: u8 = 7;
}

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Fast, safe replication of a directory tree (a Kubernetes volume) to another place, round after round."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More logging on stderr (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Sync SRC into DST on this machine (one round, same protocol as over the network).
    Sync(SyncArgs),
    /// Generate a sample tree and sync it twice (initial, then incremental) to show Ferry work.
    Demo {
        /// Where to put the sample source and destination.
        #[arg(default_value = "ferry-demo")]
        dir: PathBuf,
        /// Number of small files in the sample.
        #[arg(long, default_value_t = 2000)]
        files: usize,
        /// Size of the sample's large file, in MiB.
        #[arg(long, default_value_t = 64)]
        big_mib: usize,
    },
}

#[derive(clap::Args)]
struct SyncArgs {
    /// Source directory.
    src: PathBuf,
    /// Destination directory (created if missing).
    dst: PathBuf,
    /// Delete destination entries that are not in the source.
    #[arg(long)]
    delete: bool,
    /// Compare files by blake3 instead of size and mtime.
    #[arg(short = 'c', long)]
    checksum: bool,
    /// Show what would change (itemized); write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Leave out paths matching PATTERN (rsync rules; repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Print the statistics as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print every created, changed or deleted path (always on with --dry-run).
    #[arg(short = 'i', long)]
    itemize: bool,
    /// zstd level for literal data (0 turns compression off).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=19))]
    compress_level: i32,
    /// Worker threads per side (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also copy fifos and device nodes.
    #[arg(long)]
    specials: bool,
    /// Do not cross filesystem boundaries on the source.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Never draw a progress bar, even on a terminal.
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(exit::USAGE) } else { ExitCode::SUCCESS };
        }
    };
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            if let Some(hint) = hint(&e) {
                tracing::error!("hint: {hint}");
            }
            ExitCode::from(classify(&e))
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// What the user can do about an error, where we know.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    match e.downcast_ref::<SyncError>()? {
        SyncError::Source { .. } => {
            Some("check that the source path exists and is a directory you can read")
        }
        SyncError::Destination { .. } => {
            Some("check that the destination's parent exists and is writable by this user")
        }
        SyncError::Exclude(_) => {
            Some("--exclude takes rsync-style globs such as '*.tmp' or 'cache/'")
        }
        SyncError::Round(ferry_agent::driver::RoundError::Target(_)) => Some(
            "the destination was left with only verified files; fix the cause above and run again",
        ),
        SyncError::Round(_) => None,
    }
}

fn classify(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<SyncError>() {
        Some(SyncError::Exclude(_)) => exit::USAGE,
        Some(SyncError::Round(ferry_agent::driver::RoundError::Decode(_))) => exit::PEER,
        _ => exit::LOCAL_IO,
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sync(a) => run_sync(a),
        Command::Demo { dir, files, big_mib } => run_demo(&dir, files, big_mib),
    }
}

fn run_sync(a: SyncArgs) -> anyhow::Result<ExitCode> {
    let opts = SyncOptions {
        delete: a.delete,
        checksum: a.checksum,
        dry_run: a.dry_run,
        excludes: a.excludes,
        compress_level: a.compress_level,
        threads: a.threads,
        specials: a.specials,
        one_file_system: a.one_file_system,
    };
    let itemize = a.itemize || a.dry_run;
    let report = sync_with_progress(&a.src, &a.dst, &opts, itemize && !a.json, !a.no_progress)
        .with_context(|| format!("sync {} -> {} failed", a.src.display(), a.dst.display()))?;
    for w in &report.warnings {
        tracing::warn!("skipped: {w}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, a.dry_run);
    }
    Ok(ExitCode::SUCCESS)
}

fn sync_with_progress(
    src: &std::path::Path,
    dst: &std::path::Path,
    opts: &SyncOptions,
    itemize: bool,
    progress: bool,
) -> Result<Report, SyncError> {
    let tty = std::io::stderr().is_terminal() && progress;
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let mut on_item = |it: &Itemized| {
        if itemize {
            let line = format!("{} {:<8} {}", action_code(it.action), it.kind, it.path);
            match &bar {
                Some(b) => b.println(line),
                None => println!("{line}"),
            }
        }
    };
    let mut on_progress = |p: &Progress| {
        let msg = format!(
            "{} entries listed{}, {} files written, {} rebuilt",
            p.entries,
            if p.scan_done { "" } else { " (scanning)" },
            p.files_done,
            human_bytes(p.bytes_done)
        );
        match &bar {
            Some(b) => b.set_message(msg),
            None => tracing::info!("progress: {msg}"),
        }
    };
    let every = if tty { Duration::from_millis(150) } else { Duration::from_secs(5) };
    let r = sync::run_with(src, dst, opts, &mut on_item, &mut on_progress, every);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r
}

fn action_code(a: Action) -> &'static str {
    match a {
        Action::New => "+new    ",
        Action::Changed => ">changed",
        Action::Metadata => ".meta   ",
        Action::Delete => "-delete ",
        Action::Unchanged => "=same   ",
    }
}

fn print_summary(r: &Report, dry_run: bool) {
    let s = &r.stats;
    let p = &r.phases;
    let head = if dry_run { "dry run (nothing written)" } else { "sync complete" };
    println!("{head} in {:.2}s", r.elapsed_secs);
    println!(
        "  entries scanned {:>9}   files {:>9}   ({} in source)",
        s.entries_scanned,
        s.files_scanned,
        human_bytes(s.source_bytes)
    );
    println!(
        "  new {:>9}   changed {:>9}   metadata-only {:>9}   unchanged {:>9}   deleted {:>9}",
        s.files_new, s.files_changed, s.files_metadata, s.files_unchanged, s.files_deleted
    );
    println!(
        "  dirs created {:>6}   links created {:>6}   failed {:>6}   resent after verify {:>4}",
        s.dirs_created, s.links_created, s.files_failed, s.files_resent
    );
    println!(
        "  literal {:>10}   matched {:>10}   after compression {:>10}   signatures {:>10}",
        human_bytes(s.literal_bytes),
        human_bytes(s.matched_bytes),
        human_bytes(s.payload_bytes),
        human_bytes(s.signature_bytes)
    );
    println!(
        "  wire {:>10} sent, {:>10} received",
        human_bytes(r.wire_bytes_sent),
        human_bytes(r.wire_bytes_received)
    );
    println!(
        "  thread-seconds: scan {:.2}  signature {:.2}  delta {:.2}  read {:.2}  apply {:.2}",
        p.scan, p.signature, p.delta, p.read, p.apply
    );
    if s.ownership_skipped > 0 {
        println!(
            "  note: ownership of {} entries not set (not running as root)",
            s.ownership_skipped
        );
    }
    if s.files_failed > 0 {
        println!(
            "  note: {} files changed while being read; they will be retried next round",
            s.files_failed
        );
    }
}

fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn run_demo(dir: &std::path::Path, files: usize, big_mib: usize) -> anyhow::Result<ExitCode> {
    let src = dir.join("source");
    let dst = dir.join("destination");
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    eprintln!(
        "ferry demo: generating a sample tree in {} ({files} files + a {big_mib} MiB file)",
        src.display()
    );
    ferry_agent::demo::generate(&src, files, big_mib << 20, 42)
        .with_context(|| format!("generating the sample tree in {}", src.display()))?;
    let opts = SyncOptions { delete: true, ..SyncOptions::default() };
    println!("== round 1: initial sync into an empty destination");
    let r1 = sync_with_progress(&src, &dst, &opts, false, true)?;
    print_summary(&r1, false);
    ferry_agent::demo::mutate(&src, 42).context("changing the sample tree")?;
    println!("\n== round 2: after overwrites and an insert in the big file, appends, one new and one deleted file");
    let r2 = sync_with_progress(&src, &dst, &opts, true, true)?;
    print_summary(&r2, false);
    println!("\n== round 3: nothing changed");
    let r3 = sync_with_progress(&src, &dst, &opts, true, true)?;
    print_summary(&r3, false);
    println!("\nsource and destination are in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
