//! The `ferry` binary: flags (syntax only) → validated options → run → exit code.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_agent::driver::{Progress as DriverProgress, RoundError};
use ferry_agent::remote::{
    run_client, serve, serve_link, BusyHandle, Direction, Module, Refusal, RemoteError,
    RemoteOptions, ServeConfig, Url, Via,
};
use ferry_agent::sync::{self, Report, SyncError, SyncOptions};
use ferry_core::session::{Action, Itemized};
use ferry_transport::net::{Link, LinkKind};
use ferry_transport::tls::Identity;

/// Exit codes, documented in the README.
mod exit {
    /// Bad flags or arguments.
    pub(crate) const USAGE: u8 = 2;
    /// A certificate was refused (ours or the peer's).
    pub(crate) const AUTH: u8 = 3;
    /// No protocol version in common with the peer.
    pub(crate) const VERSION: u8 = 4;
    /// The peer broke the protocol or aborted.
    pub(crate) const PEER: u8 = 5;
    /// A network failure that may pass (timeout, connection cut): retry.
    pub(crate) const TRANSIENT: u8 = 6;
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
    /// Create the credentials of a replication pair: a private CA, a destination identity and a
    /// source identity, as two directories to copy to each side.
    Init {
        /// Where to write `destination/` and `source/`.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Name(s) the destination is reached by (DNS name or IP); its certificate lists them
        /// and clients check the one they dial.
        #[arg(long = "name", value_name = "DNS_OR_IP", required = true)]
        names: Vec<String>,
        /// Validity of the certificates, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Also write Kubernetes Secrets (NAMESPACE/NAME): NAME-destination and NAME-source.
        #[arg(long, value_name = "NAMESPACE/NAME")]
        k8s_secret: Option<String>,
    },
    /// Serve modules to peers: receive pushes into them, serve pulls from them.
    Serve {
        /// Address for QUIC (UDP) and TLS over TCP, on the same port.
        #[arg(long, default_value = "0.0.0.0:7873")]
        listen: std::net::SocketAddr,
        /// NAME=DIR[:ro|:wo]: a directory peers may push into (wo), pull from (ro), or both.
        #[arg(long = "module", value_name = "NAME=DIR[:ro|:wo]", required = true)]
        modules: Vec<String>,
        /// Directory with the destination's credentials (from `ferry init`).
        #[arg(long, value_name = "DIR", required_unless_present = "stdio")]
        identity: Option<PathBuf>,
        /// Serve one round on stdin/stdout instead of listening (for --rsh).
        #[arg(long)]
        stdio: bool,
        /// Worker threads per round (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Cap what the server sends per connection (as for push).
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        bwlimit: Option<u64>,
        /// Take a hard-link snapshot of a module after each committed push, under
        /// DIR/snapshots/MODULE/ (DIR must be on the module's filesystem, outside it).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Keep the newest N snapshots per module. A snapshot is kept when any --keep-* rule
        /// keeps it; with none given, all are kept.
        #[arg(long, default_value_t = 0)]
        keep_last: usize,
        /// Keep the newest snapshot of each of the last N hours that have one (UTC).
        #[arg(long, default_value_t = 0)]
        keep_hourly: usize,
        /// Keep the newest snapshot of each of the last N days that have one (UTC).
        #[arg(long, default_value_t = 0)]
        keep_daily: usize,
        /// Serve GET /status (rounds served, latest snapshot), /healthz, /readyz and /metrics
        /// (Prometheus) on ADDR, e.g. 0.0.0.0:9873.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// How snapshots are taken: hardlink (any filesystem; metadata cost only), reflink
        /// (FICLONE copies; btrfs, XFS with reflink=1), btrfs (a read-only snapshot of the module,
        /// which must be a subvolume) or command (--snapshot-command).
        #[arg(long, default_value = "hardlink", value_name = "KIND")]
        snapshot: String,
        /// With --snapshot command: run CMD with sh -c after each commit, with FERRY_ROUND,
        /// FERRY_ROOT (the module's directory), FERRY_SNAPSHOT_NAME and FERRY_ROOT_HASH set.
        #[arg(long, value_name = "CMD")]
        snapshot_command: Option<String>,
        /// Do not keep rsync signatures of large files in the state directory between rounds
        /// (then every changed file's basis is read and signed again; see README).
        #[arg(long)]
        no_signature_cache: bool,
    },
    /// Copy a snapshot into a directory, with new inodes (writing there never changes the
    /// snapshot): reflinked copies when DIR is new and on the snapshot's filesystem and it
    /// can clone (btrfs, XFS), else a verified `ferry sync --delete` from the snapshot.
    Restore {
        #[command(flatten)]
        snap: SnapshotRef,
        /// Where to restore (created if missing; entries not in the snapshot are removed).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Restore as hard links to the snapshot's files (instant on any filesystem; DIR must
        /// be new and on the snapshot's filesystem). Writing into the result changes the
        /// snapshot too: for read-only use (inspection, a read-only mount).
        #[arg(long)]
        hardlinks: bool,
    },
    /// Fail over: make a snapshot the module's live data directory. The snapshot is copied
    /// (new inodes, verified) beside the data directory, the two are swapped atomically, and
    /// the replaced tree is kept beside it under a name printed at the end. Stop `ferry serve`
    /// for the module first, so no round writes into it meanwhile.
    Promote {
        #[command(flatten)]
        snap: SnapshotRef,
        /// The module's data directory (default: where `ferry serve` last served it from).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Show where unattended replication stands, from a `--status-file`.
    Status {
        /// The file given to `ferry push|pull --status-file`.
        #[arg(long, value_name = "PATH")]
        status_file: PathBuf,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Snapshots of a module taken by `ferry serve --state-dir`.
    Snapshots {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Push SRC into a module of a `ferry serve`: ferry://HOST:PORT/MODULE.
    Push {
        /// Source directory.
        src: PathBuf,
        /// ferry://HOST[:PORT]/MODULE
        url: String,
        #[command(flatten)]
        net: NetFlags,
        #[command(flatten)]
        round: RoundFlags,
        #[command(flatten)]
        when: ScheduleFlags,
    },
    /// Pull a module of a `ferry serve` into DST.
    Pull {
        /// ferry://HOST[:PORT]/MODULE
        url: String,
        /// Destination directory (created if missing).
        dst: PathBuf,
        #[command(flatten)]
        net: NetFlags,
        #[command(flatten)]
        round: RoundFlags,
        #[command(flatten)]
        when: ScheduleFlags,
    },
    /// Measure the link to a `ferry serve` (like iperf for volume replication): round-trip
    /// time and raw throughput each way (no disk), then a synthetic sync round: a generated
    /// tree pushed with the real sessions into a scratch directory on the server (tmpfs when
    /// /dev/shm has room, else the temp dir; removed afterwards). Run it before turning on
    /// replication.
    Bench {
        /// ferry://HOST[:PORT]/MODULE (any module the server offers; the module itself is never
        /// read or written).
        #[arg(long)]
        peer: String,
        /// MiB to move each way.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// MiB of generated data in the synthetic round (half one large file, half files of
        /// 4-64 KiB, half of those compressible text); 0 skips the round.
        #[arg(long, default_value_t = 256)]
        sync_mib: u64,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: NetFlags,
    },
    /// Show Ferry work with no setup: generate a sample tree, start a destination agent and a
    /// source agent on loopback with fresh credentials, push three rounds (initial,
    /// incremental, unchanged) over QUIC, snapshot after each, and list the snapshots.
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

/// One snapshot of one module.
#[derive(clap::Args)]
struct SnapshotRef {
    /// The state directory given to `ferry serve`.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// The module.
    #[arg(long)]
    module: String,
    /// The snapshot id (see `ferry snapshots list`).
    #[arg(long)]
    snapshot: String,
}

impl SnapshotRef {
    /// The module's snapshots, after checking this one exists.
    fn find(&self) -> anyhow::Result<ferry_agent::snapshot::Snapshots> {
        let snaps = ferry_agent::snapshot::Snapshots::at(&self.state_dir, &self.module);
        if !snaps.list()?.iter().any(|r| r.id == self.snapshot) {
            anyhow::bail!(RemoteError::Usage(format!(
                "module {:?} has no snapshot {:?} (see `ferry snapshots list`)",
                self.module, self.snapshot
            )));
        }
        Ok(snaps)
    }
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// Delete one snapshot (its record first, then its tree).
    Delete(SnapshotRef),
    /// Re-read every file of one snapshot and check the tree against the root hash recorded
    /// when its round committed. Exit code 1 when it does not match.
    Verify {
        #[command(flatten)]
        snap: SnapshotRef,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List a module's snapshots, oldest first.
    List {
        /// The state directory given to `ferry serve`.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The module.
        #[arg(long)]
        module: String,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct SyncArgs {
    /// Source directory.
    src: PathBuf,
    /// Destination directory (created if missing).
    dst: PathBuf,
    #[command(flatten)]
    round: RoundFlags,
}

/// Flags every round takes, local or over the network.
#[derive(clap::Args, Clone)]
struct RoundFlags {
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
    /// zstd level for literal data (0 turns compression off; default 1 locally, 3 over a network).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=19))]
    compress_level: Option<i32>,
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

impl RoundFlags {
    fn options(&self, default_level: i32) -> SyncOptions {
        SyncOptions {
            delete: self.delete,
            checksum: self.checksum,
            dry_run: self.dry_run,
            excludes: self.excludes.clone(),
            compress_level: self.compress_level.unwrap_or(default_level),
            threads: self.threads,
            specials: self.specials,
            one_file_system: self.one_file_system,
        }
    }
}

/// Unattended operation of `ferry push` / `ferry pull`.
#[derive(clap::Args)]
struct ScheduleFlags {
    /// Run a round every DURATION (e.g. 30s, 5m, 1h), the first one at once.
    #[arg(long, value_name = "DURATION", conflicts_with = "schedule")]
    every: Option<String>,
    /// Run rounds at the times of a cron expression, in UTC (e.g. '*/15 * * * *').
    #[arg(long, value_name = "CRON")]
    schedule: Option<String>,
    /// Delay each scheduled round by a random amount up to DURATION (spreads many agents).
    #[arg(long, value_name = "DURATION")]
    jitter: Option<String>,
    /// One round, then exit (for a Kubernetes Job or CronJob); the default without a schedule.
    #[arg(long)]
    once: bool,
    /// Retries of a round that fails transiently (network, peer restarting, module busy):
    /// N or `forever`, with exponential backoff and jitter. Fatal errors are never retried.
    #[arg(long, default_value = "3", value_parser = ferry_agent::schedule::Retries::parse)]
    retries: ferry_agent::schedule::Retries,
    /// Delay before the first retry (doubling each time, at most 5 minutes).
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    retry_base: String,
    /// Write the status (last round's times, result, stats, next run, missed intervals) to
    /// this JSON file after every round, atomically.
    #[arg(long, value_name = "PATH")]
    status_file: Option<PathBuf>,
    /// Serve GET /status (JSON: last round, next run, current round's progress and ETA),
    /// /healthz, /readyz (200 once the last round succeeded), /metrics (Prometheus) and
    /// POST /trigger (a round now) on ADDR, e.g. 0.0.0.0:9873. SIGUSR1 also triggers a round.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Run CMD (with sh -c) before each round attempt, e.g. to quiesce an application (a
    /// database checkpoint). A non-zero exit skips the attempt (retried like a transient
    /// error). Environment: FERRY_ROOT (the local directory), FERRY_DIRECTION (push|pull),
    /// FERRY_URL, FERRY_ROUND (rounds started by this process), FERRY_ATTEMPT.
    #[arg(long, value_name = "CMD")]
    pre_round: Option<String>,
    /// Run CMD (with sh -c) after each attempt whose --pre-round succeeded, whatever the
    /// round's outcome (to resume the application); FERRY_RESULT is ok or error. A failure is
    /// logged.
    #[arg(long, value_name = "CMD")]
    post_round: Option<String>,
    /// Push from a point-in-time image of the source instead of the live tree: reflink (a
    /// FICLONE copy, on btrfs or XFS with reflink=1), btrfs (a read-only snapshot; the source
    /// must be a subvolume) or command (--source-snapshot-command). Taken after --pre-round,
    /// removed after the round.
    #[arg(long, value_name = "KIND")]
    source_snapshot: Option<String>,
    /// With --source-snapshot command: run CMD with sh -c and FERRY_ROOT set; the last line it
    /// prints is the directory to read (clean it up in --post-round).
    #[arg(long, value_name = "CMD")]
    source_snapshot_command: Option<String>,
    /// Where reflink and btrfs source images go (default: beside the source directory; it must
    /// be on the source's filesystem, and outside the source tree or --exclude'd).
    #[arg(long, value_name = "DIR")]
    source_image_dir: Option<PathBuf>,
}

/// Flags of `ferry push` and `ferry pull`.
#[derive(clap::Args)]
struct NetFlags {
    /// Directory with this side's credentials (ca.pem, cert.pem, key.pem from `ferry init`).
    #[arg(long, value_name = "DIR")]
    identity: Option<PathBuf>,
    /// quic, tcp (TLS 1.3 over TCP, for networks that block UDP) or auto (probe both, use
    /// the faster; TCP where UDP is blocked).
    #[arg(long, default_value = "auto", value_parser = ["quic", "tcp", "auto"])]
    transport: String,
    /// Run the session over the stdin/stdout of CMD (run with sh -c), e.g.
    /// 'kubectl exec -i POD -- ferry serve --stdio --module data=/data'. The tunnel provides
    /// authentication; --identity is not used.
    #[arg(long, value_name = "CMD")]
    rsh: Option<String>,
    /// Cap what this side sends: bytes per second with K/M/G suffix (powers of 1024); a bare
    /// number is KiB/s, as with rsync.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    bwlimit: Option<u64>,
    /// Seconds to wait for a connection.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// Seconds a QUIC connection may hear nothing (keep-alives flow meanwhile) before the
    /// round fails as a transient error and is retried.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1 << 10),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s:?}: expected a rate like 500K, 20M or 1G"))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("{s:?}: the rate must be positive"));
    }
    Ok((n * mult as f64) as u64)
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
            tracing::error!("{}", explain(&e));
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

/// The error and its causes on one line, each cause once (a cause's text is often already
/// part of the message above it).
fn explain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// What the user can do about an error, where we know.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    if let Some(r) = e.downcast_ref::<RemoteError>() {
        return match r {
            RemoteError::Identity(_) => Some("--identity takes the directory `ferry init` wrote for this side (destination/ or source/)"),
            RemoteError::Connect { source, .. } if source.is_auth() => Some(
                "both sides need credentials from the same `ferry init`, within their validity; the server name dialled must be one of its --name values",
            ),
            RemoteError::Connect { source, .. } if source.is_transient() => {
                Some("is `ferry serve` running and reachable? If UDP is blocked, use --transport tcp")
            }
            RemoteError::Refused { .. } => Some("check the module name and its :ro/:wo mode on the server"),
            RemoteError::Version { .. } => Some("run the same Ferry version on both sides"),
            RemoteError::Local(e) => sync_hint(e),
            RemoteError::Round(RoundError::Link(_)) => Some("the round can be run again: files already in place are not sent twice"),
            _ => None,
        };
    }
    sync_hint(e.downcast_ref::<SyncError>()?)
}

fn sync_hint(e: &SyncError) -> Option<&'static str> {
    match e {
        SyncError::Source { .. } => {
            Some("check that the source path exists and is a directory you can read")
        }
        SyncError::Destination { .. } => {
            Some("check that the destination's parent exists and is writable by this user")
        }
        SyncError::Exclude(_) => {
            Some("--exclude takes rsync-style globs such as '*.tmp' or 'cache/'")
        }
        SyncError::Round(RoundError::Target(_)) => Some(
            "the destination was left with only verified files; fix the cause above and run again",
        ),
        SyncError::Round(_) => None,
    }
}

fn classify(e: &anyhow::Error) -> u8 {
    if let Some(r) = e.downcast_ref::<RemoteError>() {
        return match r {
            RemoteError::Usage(_) | RemoteError::Identity(_) => exit::USAGE,
            RemoteError::Connect { source, .. } if source.is_auth() => exit::AUTH,
            RemoteError::Connect { source, .. } if source.is_transient() => exit::TRANSIENT,
            RemoteError::Connect { .. } => exit::PEER,
            RemoteError::Refused { code: Refusal::Busy, .. } => exit::TRANSIENT,
            RemoteError::Refused { code: Refusal::Version, .. } | RemoteError::Version { .. } => {
                exit::VERSION
            }
            RemoteError::Refused { .. } => exit::PEER,
            RemoteError::Local(e) => classify_sync(e),
            RemoteError::Round(e) => classify_round(e),
            RemoteError::Rsh(_) => exit::LOCAL_IO,
            RemoteError::Hook(_) => exit::TRANSIENT,
        };
    }
    match e.downcast_ref::<SyncError>() {
        Some(e) => classify_sync(e),
        None => exit::USAGE,
    }
}

fn classify_sync(e: &SyncError) -> u8 {
    match e {
        SyncError::Exclude(_) => exit::USAGE,
        SyncError::Round(r) => classify_round(r),
        _ => exit::LOCAL_IO,
    }
}

fn classify_round(e: &RoundError) -> u8 {
    use ferry_core::SessionError as S;
    match e {
        RoundError::Source(S::Version { .. }) | RoundError::Target(S::Version { .. }) => {
            exit::VERSION
        }
        RoundError::Source(S::Local(_)) | RoundError::Target(S::Local(_)) => exit::LOCAL_IO,
        RoundError::Source(_)
        | RoundError::Target(_)
        | RoundError::Decode(_)
        | RoundError::Stalled => exit::PEER,
        RoundError::Link(t) if t.is_auth() => exit::AUTH,
        RoundError::Link(t) if t.is_transient() => exit::TRANSIENT,
        RoundError::Link(_) => exit::PEER,
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sync(a) => run_sync(a),
        Command::Demo { dir, files, big_mib } => run_demo(&dir, files, big_mib),
        Command::Init { out, names, days, k8s_secret } => {
            run_init(&out, &names, days, k8s_secret.as_deref())
        }
        Command::Serve {
            listen,
            modules,
            identity,
            stdio,
            threads,
            bwlimit,
            state_dir,
            keep_last,
            keep_hourly,
            keep_daily,
            http,
            snapshot,
            snapshot_command,
            no_signature_cache,
        } => run_serve(
            listen,
            &modules,
            identity.as_deref(),
            stdio,
            threads,
            bwlimit.unwrap_or(0),
            state_dir,
            ferry_agent::snapshot::Retention {
                last: keep_last,
                hourly: keep_hourly,
                daily: keep_daily,
            },
            http,
            ferry_agent::snapshot::Snapshotter::parse(&snapshot, snapshot_command.as_deref())
                .map_err(RemoteError::Usage)?,
            !no_signature_cache,
        ),
        Command::Snapshots { action: SnapshotAction::Verify { snap: r, json } } => {
            let v = r.find()?.verify(&r.snapshot)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "ok": v.ok(), "verification": v,
                    }))?
                );
            } else if v.ok() {
                println!(
                    "snapshot {} of module {:?} is intact: {} entries, {} read, root {}",
                    v.id,
                    r.module,
                    v.entries,
                    human_bytes(v.bytes),
                    v.computed
                );
            } else if v.recorded.is_empty() {
                eprintln!("snapshot {} has no recorded root hash (taken by an older ferry)", v.id);
            } else {
                eprintln!(
                    "snapshot {} of module {:?} DOES NOT MATCH its record: recorded root {}, \
                     computed {} over {} entries. Something changed it after it was taken; \
                     restore from another snapshot.",
                    v.id, r.module, v.recorded, v.computed, v.entries
                );
            }
            Ok(if v.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Snapshots { action: SnapshotAction::Delete(r) } => {
            r.find()?.delete(&r.snapshot)?;
            println!("deleted snapshot {} of module {:?}", r.snapshot, r.module);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { status_file, json } => {
            let bytes = std::fs::read(&status_file).with_context(|| {
                format!(
                    "reading {} (written by --status-file after each round)",
                    status_file.display()
                )
            })?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a Ferry status file", status_file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let ago = |k: &str| {
                v[k].as_f64()
                    .map(|t| format!("{:.0} s ago", now - t))
                    .unwrap_or_else(|| "never".into())
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
        Command::Restore { snap: r, to, hardlinks } => {
            let snaps = r.find()?;
            let fresh = !to.exists();
            if hardlinks && !fresh {
                anyhow::bail!(RemoteError::Usage(format!(
                    "--hardlinks restores into a new directory; {} exists",
                    to.display()
                )));
            }
            if hardlinks {
                tracing::warn!(
                    "restoring as hard links: {} shares its files' inodes with snapshot {} (and \
                     with the live module where files did not change since); anything written \
                     there changes the snapshot too (use it read-only)",
                    to.display(),
                    r.snapshot
                );
            }
            // Reflinked copies get their owners only as root; the root hash covers ownership,
            // so without root the copy path (which says ownership was skipped) is used.
            if fresh && (hardlinks || ferry_agent::fs::can_chown()) {
                match snaps.restore_linked(&r.snapshot, &to, hardlinks) {
                    Ok(v) if v.ok() => {
                        println!(
                            "restored snapshot {} of module {:?} to {} as {} ({} entries, {} bytes read back, root {} as recorded)",
                            r.snapshot,
                            r.module,
                            to.display(),
                            if hardlinks { "hard links" } else { "reflinked copies" },
                            v.entries,
                            v.bytes,
                            &v.computed[..16.min(v.computed.len())]
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    Ok(v) => anyhow::bail!(
                        "the tree restored from snapshot {} has root hash {}, not the recorded {}: \
                         the snapshot was changed after it was taken (`ferry snapshots verify`); \
                         nothing was left at {}",
                        r.snapshot,
                        v.computed,
                        v.recorded,
                        to.display()
                    ),
                    Err(ferry_agent::snapshot::SnapshotError::Unsupported { why, .. })
                        if !hardlinks =>
                    {
                        tracing::info!("no reflinks here ({why}); copying instead")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let opts = SyncOptions { delete: true, ..SyncOptions::default() };
            let report = sync_with_progress(&snaps.path(&r.snapshot), &to, &opts, false, true)
                .with_context(|| {
                    format!("restoring snapshot {} to {}", r.snapshot, to.display())
                })?;
            print_summary(&report, false);
            println!(
                "restored snapshot {} of module {:?} to {} as a verified copy",
                r.snapshot,
                r.module,
                to.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote { snap: r, data } => {
            let snaps = r.find()?;
            let commits = ferry_agent::commit::CommitLog::at(&r.state_dir, &r.module);
            let Some(data) = data.or_else(|| commits.module_path()) else {
                anyhow::bail!(RemoteError::Usage(format!(
                    "where is module {:?}'s data? pass --data DIR (no `ferry serve` has recorded it in {})",
                    r.module,
                    r.state_dir.display()
                )));
            };
            let name =
                data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let parent = data.parent().unwrap_or(std::path::Path::new("."));
            let staged = parent.join(format!(".{name}.ferry-promote-{}", r.snapshot));
            // A new copy on the data's filesystem: the live tree must not share inodes with
            // the snapshot (the application will write into it).
            let opts = SyncOptions { delete: true, ..SyncOptions::default() };
            let report = sync_with_progress(&snaps.path(&r.snapshot), &staged, &opts, false, true)
                .with_context(|| {
                    format!("copying snapshot {} to {}", r.snapshot, staged.display())
                })?;
            let when = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = parent
                .join(format!("{name}.ferry-replaced-{}", ferry_agent::snapshot::utc(when, false)));
            if data.exists() {
                ferry_agent::snapshot::exchange(&staged, &data).with_context(|| {
                    format!("swapping {} and {}", staged.display(), data.display())
                })?;
                std::fs::rename(&staged, &aside)
                    .with_context(|| format!("moving the replaced tree to {}", aside.display()))?;
            } else {
                std::fs::rename(&staged, &data).with_context(|| {
                    format!("moving {} to {}", staged.display(), data.display())
                })?;
            }
            print_summary(&report, false);
            println!(
                "promoted snapshot {} of module {:?}: {} is now that tree",
                r.snapshot,
                r.module,
                data.display()
            );
            if aside.exists() {
                println!(
                    "the replaced tree is at {} (delete it when you no longer need it)",
                    aside.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshots { action: SnapshotAction::List { state_dir, module, json } } => {
            let list = ferry_agent::snapshot::Snapshots::at(&state_dir, &module).list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:>6} {:>10} {:>12}  {:<20}  root hash",
                    "id", "round", "entries", "bytes", "committed (UTC)"
                );
                for r in &list {
                    let when = ferry_agent::snapshot::utc(r.time_unix, true);
                    let root = if r.root_hash.is_empty() { "-" } else { &r.root_hash[..] };
                    println!(
                        "{:<24} {:>6} {:>10} {:>12}  {:<20}  {}",
                        r.id, r.round, r.entries, r.bytes, when, root
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Push { src, url, net, round, when } => {
            run_net(Direction::Push, &src, &url, net, round, when)
        }
        Command::Pull { url, dst, net, round, when } => {
            run_net(Direction::Pull, &dst, &url, net, round, when)
        }
        Command::Bench { peer, size_mib, sync_mib, json, net } => {
            run_bench_cmd(&peer, size_mib, sync_mib, json, &net)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferry-net")
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_init(
    out: &std::path::Path,
    names: &[String],
    days: u32,
    secret: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use ferry_agent::init;
    let secret = secret
        .map(|s| s.split_once('/').filter(|(ns, n)| !ns.is_empty() && !n.is_empty()).ok_or(s))
        .transpose()
        .map_err(|s| RemoteError::Usage(format!("--k8s-secret {s:?}: expected NAMESPACE/NAME")))?;
    let pair = init::generate_for_days(names, days)?;
    init::write_identity(&out.join("destination"), &pair.destination)?;
    init::write_identity(&out.join("source"), &pair.source)?;
    println!("wrote {}/destination (for `ferry serve --identity`) and {}/source (for `ferry push|pull --identity`)", out.display(), out.display());
    println!("valid for {days} days; the destination answers to: {}", names.join(", "));
    if let Some((ns, name)) = secret {
        for (side, id) in [("destination", &pair.destination), ("source", &pair.source)] {
            let path = out.join(format!("{side}-secret.yaml"));
            std::fs::write(&path, init::k8s_secret(ns, &format!("{name}-{side}"), id))
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} (Secret {ns}/{name}-{side})", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves `agent`'s status, metrics and trigger over HTTP on `addr` (`--http`).
fn serve_status(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    agent: &std::sync::Arc<ferry_agent::status::Agent>,
    also: &str,
) -> anyhow::Result<()> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("--http {addr}: cannot listen"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!("status on http://{bound}/status, metrics on /metrics{also}");
    rt.spawn(ferry_agent::status::serve_http(listener, agent.clone()));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_serve(
    listen: std::net::SocketAddr,
    modules: &[String],
    identity: Option<&std::path::Path>,
    stdio: bool,
    threads: usize,
    bwlimit: u64,
    state_dir: Option<PathBuf>,
    retention: ferry_agent::snapshot::Retention,
    http: Option<std::net::SocketAddr>,
    snapshotter: ferry_agent::snapshot::Snapshotter,
    signature_cache: bool,
) -> anyhow::Result<ExitCode> {
    let modules = modules
        .iter()
        .map(|m| Module::parse(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RemoteError::Usage)?;
    if let Some(state) = &state_dir {
        // Refuse at start-up, not after the first round, when snapshots cannot work.
        for m in &modules {
            ferry_agent::snapshot::Snapshots::open(state, &m.name, &m.path, &snapshotter)
                .with_context(|| format!("--state-dir for module {:?}", m.name))?;
            ferry_agent::commit::CommitLog::at(state, &m.name)
                .remember_module(&m.path)
                .with_context(|| format!("--state-dir for module {:?}", m.name))?;
        }
    }
    let rt = runtime()?;
    let agent = match http {
        Some(addr) => {
            let (agent, _) = ferry_agent::status::Agent::new(false);
            serve_status(&rt, addr, &agent, "")?;
            Some(agent)
        }
        None => None,
    };
    let cfg = ServeConfig {
        modules,
        threads,
        bwlimit,
        state_dir,
        retention,
        agent,
        snapshotter,
        signature_cache,
    };
    if stdio {
        let link = Link::from_streams(
            tokio::io::stdin(),
            tokio::io::stdout(),
            LinkKind::Stdio,
            "stdio".into(),
        );
        let busy = std::sync::Arc::new(BusyHandle::default());
        let _guard = rt.enter();
        rt.block_on(serve_link(link, &cfg, &busy))?;
        return Ok(ExitCode::SUCCESS);
    }
    let dir = identity.ok_or_else(|| RemoteError::Usage("--identity DIR is required".into()))?;
    let identity = Identity::load(dir).map_err(RemoteError::Identity)?;
    for m in &cfg.modules {
        tracing::info!("module {:?} -> {} ({:?})", m.name, m.path.display(), m.access);
    }
    rt.block_on(serve(listen, &identity, cfg, |addr| {
        tracing::info!("listening on {addr} (QUIC and TLS over TCP)");
        // Tests and scripts wait for this line on stdout.
        println!("listening on {addr}");
    }))
    .map_err(|e| RemoteError::Connect { addr: listen.to_string(), source: e })?;
    Ok(ExitCode::SUCCESS)
}

fn run_net(
    direction: Direction,
    local: &std::path::Path,
    url: &str,
    net: NetFlags,
    round: RoundFlags,
    when: ScheduleFlags,
) -> anyhow::Result<ExitCode> {
    use ferry_agent::schedule::{Backoff, Jitter, Schedule};
    use std::time::SystemTime;
    let url = Url::parse(url).map_err(RemoteError::Usage)?;
    let opts = remote_options(&net, round.options(3));
    let schedule = match (&when.every, &when.schedule) {
        (Some(e), _) => Some(Schedule::every(e).map_err(RemoteError::Usage)?),
        (None, Some(c)) => Some(Schedule::cron(c).map_err(RemoteError::Usage)?),
        (None, None) => None,
    };
    let parse_d = |s: &str, flag: &str| {
        humantime::parse_duration(s).map_err(|e| RemoteError::Usage(format!("{flag} {s:?}: {e}")))
    };
    let jitter = when.jitter.as_deref().map(|j| parse_d(j, "--jitter")).transpose()?;
    let backoff =
        Backoff { base: parse_d(&when.retry_base, "--retry-base")?, ..Backoff::default() };
    let mut rng = Jitter::new(
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()),
    );
    let once = when.once || schedule.is_none();
    let rt = runtime()?;
    let (agent, triggered) = ferry_agent::status::Agent::new(true);
    if let Some(addr) = when.http {
        serve_status(&rt, addr, &agent, ", POST /trigger")?;
    }
    {
        let agent = agent.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else { return };
            while usr1.recv().await.is_some() {
                tracing::info!("SIGUSR1: a round starts now");
                agent.trigger();
            }
        });
    }
    let source_image = match (&when.source_snapshot, direction) {
        (Some(kind), Direction::Push) => Some(
            ferry_agent::snapshot::SourceSnapshot::parse(
                kind,
                when.source_snapshot_command.as_deref(),
            )
            .map_err(RemoteError::Usage)?,
        ),
        (Some(_), _) => anyhow::bail!(RemoteError::Usage(
            "--source-snapshot is for push (the source side)".into()
        )),
        (None, _) => None,
    };
    let image_dir = match &when.source_image_dir {
        Some(d) => d.clone(),
        None => local
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let mut due = SystemTime::now();
    let mut rounds_started = 0u64;
    loop {
        // Sleep until the round is due or a trigger (POST /trigger, SIGUSR1) arrives; a
        // trigger during a round runs one more right after it.
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        let manual = matches!(triggered.recv_timeout(wait), Ok(()));
        while triggered.try_recv().is_ok() {}
        if let (Some(j), false) = (jitter, manual) {
            std::thread::sleep(j.mul_f64(rng.next_unit()));
        }
        let start = SystemTime::now();
        agent.round_started(start);
        let mut attempt = 0;
        rounds_started += 1;
        let result = loop {
            let env = [
                ("FERRY_ROOT", local.display().to_string()),
                (
                    "FERRY_DIRECTION",
                    if direction == Direction::Pull { "pull" } else { "push" }.into(),
                ),
                ("FERRY_URL", format!("ferry://{}:{}/{}", url.host, url.port, url.module)),
                ("FERRY_ROUND", rounds_started.to_string()),
                ("FERRY_ATTEMPT", (attempt + 1).to_string()),
            ];
            let r = match when.pre_round.as_deref().map(|c| run_hook("--pre-round", c, &env, None))
            {
                Some(Err(e)) => Err(RemoteError::Hook(e)),
                pre => {
                    let image = match &source_image {
                        Some(how) => match how.take(local, &image_dir) {
                            Ok(i) => Some(i),
                            Err(e) => {
                                return Err(anyhow::Error::new(e)
                                    .context("taking the source's point-in-time image"));
                            }
                        },
                        None => None,
                    };
                    let read_from = image.as_ref().map_or(local, |i| i.path.as_path());
                    let r = one_round(&rt, direction, read_from, &url, &opts, &round, &agent);
                    drop(image);
                    if let (Some(post), Some(Ok(())) | None) = (when.post_round.as_deref(), pre) {
                        let result = if r.is_ok() { "ok" } else { "error" };
                        if let Err(e) = run_hook("--post-round", post, &env, Some(result)) {
                            tracing::warn!("the --post-round command failed ({e})");
                        }
                    }
                    r
                }
            };
            match r {
                Err(e) if e.is_transient() && when.retries.allows(attempt) => {
                    let d = backoff.delay(attempt, rng.next_unit());
                    tracing::warn!(
                        "round failed ({e}); retry {} in {:.1} s",
                        attempt + 1,
                        d.as_secs_f64()
                    );
                    std::thread::sleep(d);
                    attempt += 1;
                }
                r => break r,
            }
        };
        let end = SystemTime::now();
        let (next, missed) = match (&schedule, once) {
            // A manual round before the scheduled time leaves that time as it was.
            (Some(_), false) if manual && end < due => (Some(due), 0),
            (Some(s), false) => s.after_round(due, end),
            _ => (None, 0),
        };
        if missed > 0 {
            tracing::warn!("the round overran {missed} scheduled time(s); they were skipped");
        }
        let status = agent.round_finished(
            start,
            end,
            attempt + 1,
            result.as_ref().map_err(|e| e.to_string()),
            next,
            missed,
        );
        if let Some(path) = &when.status_file {
            status.write(path).with_context(|| format!("writing {}", path.display()))?;
        }
        match result {
            Ok(report) => {
                if round.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print_summary(&report, round.dry_run);
                }
            }
            // Fatal errors fail fast even on a schedule: retrying cannot fix them.
            Err(e) if once || !e.is_transient() => return Err(e.into()),
            Err(e) => tracing::error!(
                "round failed after {} attempt(s): {e}; waiting for the next one",
                attempt + 1
            ),
        }
        match next {
            Some(n) if !once => due = n,
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Runs a `--pre-round`/`--post-round` command with `sh -c`; `Err` says how it failed.
fn run_hook(
    flag: &str,
    cmd: &str,
    env: &[(&str, String)],
    result: Option<&str>,
) -> Result<(), String> {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    if let Some(r) = result {
        c.env("FERRY_RESULT", r);
    }
    tracing::info!("running {flag}: {cmd}");
    match c.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(match s.code() {
            Some(code) => format!("{cmd:?} exited with {code}"),
            None => format!("{cmd:?} was killed by a signal"),
        }),
        Err(e) => Err(format!("{cmd:?} could not start: {e}")),
    }
}

/// One network round with its progress display.
fn one_round(
    rt: &tokio::runtime::Runtime,
    direction: Direction,
    local: &std::path::Path,
    url: &Url,
    opts: &RemoteOptions,
    round: &RoundFlags,
    agent: &Arc<ferry_agent::status::Agent>,
) -> Result<Report, RemoteError> {
    let itemize = (round.itemize || round.dry_run) && !round.json;
    let progress = Progress::new(!round.no_progress);
    let on_item: Box<dyn FnMut(&Itemized) + Send> = Box::new(progress.item_printer(itemize));
    let mut show = progress.callback();
    let live = agent.clone();
    let (every, mut shown) = (progress.every, std::time::Instant::now());
    // The status gets progress every second; the display keeps its own pace.
    let on_progress: Box<dyn FnMut(&DriverProgress) + Send> = Box::new(move |p| {
        live.progress(p);
        if shown.elapsed() >= every {
            shown = std::time::Instant::now();
            show(p);
        }
    });
    let r = rt.block_on(run_client(
        direction,
        local,
        url,
        opts,
        on_item,
        on_progress,
        progress.every.min(Duration::from_secs(1)),
    ));
    progress.finish();
    if let Ok(report) = &r {
        for w in &report.warnings {
            tracing::warn!("skipped: {w}");
        }
    }
    r
}

fn remote_options(net: &NetFlags, sync: SyncOptions) -> RemoteOptions {
    let via = match (&net.rsh, net.transport.as_str()) {
        (Some(cmd), _) => Via::Rsh(cmd.clone()),
        (None, "quic") => Via::Quic,
        (None, "tcp") => Via::Tcp,
        (None, _) => Via::Auto,
    };
    RemoteOptions {
        sync,
        via,
        identity: net.identity.clone(),
        bwlimit: net.bwlimit.unwrap_or(0),
        connect_timeout: Duration::from_secs(net.connect_timeout.max(1)),
        idle_timeout: Duration::from_secs(net.idle_timeout.max(1)),
    }
}

fn run_bench_cmd(
    peer: &str,
    size_mib: u64,
    sync_mib: u64,
    json: bool,
    net: &NetFlags,
) -> anyhow::Result<ExitCode> {
    let url = Url::parse(peer).map_err(RemoteError::Usage)?;
    let opts = remote_options(net, SyncOptions::default());
    let r = runtime()?.block_on(ferry_agent::remote::run_bench(
        &url,
        &opts,
        size_mib << 20,
        sync_mib << 20,
    ))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("link to {peer} over {}", r.transport);
        println!("  round trip {:>9.3} ms (median of 5)", r.rtt_ms);
        println!("  upload     {:>9.3} GB/s ({} each way)", r.upload_gbps, human_bytes(r.bytes));
        println!("  download   {:>9.3} GB/s", r.download_gbps);
        if let Some(s) = &r.sync {
            println!(
                "  sync round {:>9.2} s  {:.0} MB/s  ({} in {} files, {} on the wire; source on {})",
                s.secs,
                s.mb_per_s,
                human_bytes(s.bytes),
                s.files,
                human_bytes(s.wire_bytes),
                if s.source_in_memory { "tmpfs" } else { "disk" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_sync(a: SyncArgs) -> anyhow::Result<ExitCode> {
    let opts = a.round.options(1);
    let itemize = a.round.itemize || a.round.dry_run;
    let report =
        sync_with_progress(&a.src, &a.dst, &opts, itemize && !a.round.json, !a.round.no_progress)
            .with_context(|| format!("sync {} -> {} failed", a.src.display(), a.dst.display()))?;
    for w in &report.warnings {
        tracing::warn!("skipped: {w}");
    }
    if a.round.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, a.round.dry_run);
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress display: a spinner line on a terminal, periodic log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    every: Duration,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let tty = std::io::stderr().is_terminal() && enabled;
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let every = if tty { Duration::from_millis(150) } else { Duration::from_secs(5) };
        Progress { bar, every }
    }

    fn callback(&self) -> Box<dyn FnMut(&DriverProgress) + Send> {
        let bar = self.bar.clone();
        Box::new(move |p: &DriverProgress| {
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
        })
    }

    /// Prints each itemized line (above the progress line on a terminal) when `itemize`.
    fn item_printer(&self, itemize: bool) -> impl FnMut(&Itemized) + Send + 'static {
        let bar = self.bar.clone();
        move |it: &Itemized| {
            if itemize {
                let line = format!("{} {:<8} {}", action_code(it.action), it.kind, it.path);
                match &bar {
                    Some(b) => b.println(line),
                    None => println!("{line}"),
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn sync_with_progress(
    src: &std::path::Path,
    dst: &std::path::Path,
    opts: &SyncOptions,
    itemize: bool,
    progress: bool,
) -> Result<Report, SyncError> {
    let progress = Progress::new(progress);
    let mut on_item = progress.item_printer(itemize);
    let mut on_progress = progress.callback();
    let r = sync::run_with(src, dst, opts, &mut on_item, &mut *on_progress, progress.every);
    progress.finish();
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
    let head = if dry_run { "dry run (nothing written)" } else { "round complete" };
    match &r.transport {
        Some(t) if r.streams > 1 => {
            println!("{head} in {:.2}s over {t} ({} streams)", r.elapsed_secs, r.streams)
        }
        Some(t) => println!("{head} in {:.2}s over {t}", r.elapsed_secs),
        None => println!("{head} in {:.2}s", r.elapsed_secs),
    }
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
    if s.resumed_bytes > 0 {
        println!(
            "  resumed {:>10} of files cut mid-way by an interrupted round (not sent again)",
            human_bytes(s.resumed_bytes)
        );
    }
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
    let state = dir.join("state");
    let creds = dir.join("creds");
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    eprintln!(
        "ferry demo: generating a sample tree in {} ({files} files + a {big_mib} MiB file)",
        src.display()
    );
    ferry_agent::demo::generate(&src, files, big_mib << 20, 42)
        .with_context(|| format!("generating the sample tree in {}", src.display()))?;
    // Fresh credentials, a destination agent and a source agent, on loopback, over QUIC.
    let pair = ferry_agent::init::generate_for_days(&["127.0.0.1".to_string()], 1)?;
    ferry_agent::init::write_identity(&creds.join("destination"), &pair.destination)?;
    ferry_agent::init::write_identity(&creds.join("source"), &pair.source)?;
    let server_id = Identity::load(&creds.join("destination")).map_err(RemoteError::Identity)?;
    let cfg = ServeConfig {
        modules: vec![Module {
            name: "data".into(),
            path: dst.clone(),
            access: ferry_agent::remote::Access::ReadWrite,
        }],
        threads: 0,
        bwlimit: 0,
        state_dir: Some(state.clone()),
        retention: ferry_agent::snapshot::Retention::default(),
        agent: None,
        snapshotter: ferry_agent::snapshot::Snapshotter::Hardlink,
        signature_cache: true,
    };
    ferry_agent::snapshot::Snapshots::open(
        &state,
        "data",
        &dst,
        &ferry_agent::snapshot::Snapshotter::Hardlink,
    )?;
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    rt.spawn(async move {
        let r = serve(any, &server_id, cfg, move |addr| {
            let _ = tx.send(addr);
        })
        .await;
        if let Err(e) = r {
            tracing::error!("demo destination agent: {e}");
        }
    });
    let addr =
        rx.recv_timeout(Duration::from_secs(10)).context("starting the destination agent")?;
    println!(
        "destination agent listening on {addr} (QUIC and TLS over TCP), module data -> {}",
        dst.display()
    );
    let url = Url { host: "127.0.0.1".into(), port: addr.port(), module: "data".into() };
    let opts = RemoteOptions {
        sync: SyncOptions { delete: true, compress_level: 3, ..SyncOptions::default() },
        via: Via::Quic,
        identity: Some(creds.join("source")),
        bwlimit: 0,
        connect_timeout: Duration::from_secs(10),
        idle_timeout: ferry_transport::net::IDLE_TIMEOUT,
    };
    let snaps = ferry_agent::snapshot::Snapshots::at(&state, "data");
    let round = |title: &str, n: u64| -> anyhow::Result<()> {
        println!("\n== round {n}: {title}");
        let progress = Progress::new(true);
        let r = rt.block_on(run_client(
            Direction::Push,
            &src,
            &url,
            &opts,
            Box::new(|_| {}),
            progress.callback(),
            progress.every,
        ));
        progress.finish();
        print_summary(&r?, false);
        // The destination snapshots right after the round; wait for it (bounded).
        for _ in 0..200 {
            if snaps.list()?.last().is_some_and(|s| s.round == n) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        anyhow::bail!("the destination took no snapshot of round {n}")
    };
    round("initial push into an empty destination", 1)?;
    ferry_agent::demo::mutate(&src, 42).context("changing the sample tree")?;
    round(
        "after overwrites and an insert in the big file, appends, one new and one deleted file",
        2,
    )?;
    round("nothing changed", 3)?;
    println!("\n== snapshots of module data (one per round, hard links: metadata cost only)");
    println!("{:<24} {:>6} {:>10} {:>12}", "id", "round", "entries", "bytes");
    for r in snaps.list()? {
        println!("{:<24} {:>6} {:>10} {:>12}", r.id, r.round, r.entries, r.bytes);
    }
    println!(
        "\neverything is in {}: source/, destination/, state/snapshots/data/, creds/",
        dir.display()
    );
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}
