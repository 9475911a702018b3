//! The command line's syntax: clap types only. Each flag is parsed into its type here (rates,
//! durations, schedules, enums); what needs more than one flag to check is validated in
//! [`super::config`], once, before anything starts.

// The doc comments here are the command line's help text, written for a terminal
// (`ferry://HOST[:PORT]/MODULE`), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::unattended::schedule::{Retries, Schedule};

/// `ferry`: flags of every command.
#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Fast, safe replication of a directory tree (a Kubernetes volume) to another place, round after round."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More logging on stderr (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Sync SRC into DST on this machine (one round, same protocol as over the network).
    Sync(SyncArgs),
    /// Create the credentials of a replication pair: a private CA, a destination identity and a
    /// source identity, as two directories to copy to each side.
    Init(InitFlags),
    /// Serve modules to peers: receive pushes into them, serve pulls from them.
    Serve(ServeFlags),
    /// Copy a snapshot into a directory, with new inodes (writing there never changes the
    /// snapshot): reflinked copies when DIR is new and on the snapshot's filesystem and it
    /// can clone (btrfs, XFS), else a verified `ferry sync --delete` from the snapshot.
    Restore {
        /// The snapshot.
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
        /// The snapshot.
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
    /// Snapshots of a module taken by `ferry serve --state-dir` or `ferry pull --state-dir`.
    Snapshots {
        /// What to do.
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Push SRC into a module of a `ferry serve`: ferry://HOST:PORT/MODULE. With --list FILE,
    /// push each listed directory into its module: `ferry push --list FILE ferry://HOST:PORT`.
    Push {
        /// Source directory (with --list: the server, ferry://HOST[:PORT]).
        #[arg(required_unless_present = "list")]
        src: Option<PathBuf>,
        /// ferry://HOST[:PORT]/MODULE (not with --list).
        #[arg(value_parser = crate::net::Url::parse)]
        url: Option<crate::net::Url>,
        /// Many modules in one job.
        #[command(flatten)]
        many: ListFlags,
        /// How to reach the server.
        #[command(flatten)]
        net: NetFlags,
        /// The round's options.
        #[command(flatten)]
        round: RoundFlags,
        /// When rounds run.
        #[command(flatten)]
        when: ScheduleFlags,
        /// What the push reads.
        #[command(flatten)]
        image: SourceImageFlags,
    },
    /// Pull a module of a `ferry serve` into DST. With --list FILE, pull each listed module
    /// into its directory: `ferry pull --list FILE ferry://HOST:PORT`.
    Pull {
        /// ferry://HOST[:PORT]/MODULE (with --list: ferry://HOST[:PORT]).
        #[arg(value_parser = crate::many::parse_url)]
        url: crate::net::Url,
        /// Destination directory, created if missing (not with --list).
        #[arg(required_unless_present = "list")]
        dst: Option<PathBuf>,
        /// Many modules in one job.
        #[command(flatten)]
        many: ListFlags,
        /// How to reach the server.
        #[command(flatten)]
        net: NetFlags,
        /// The round's options.
        #[command(flatten)]
        round: RoundFlags,
        /// When rounds run.
        #[command(flatten)]
        when: ScheduleFlags,
        /// What this side keeps between rounds, as `ferry serve` does for a pushed module.
        #[command(flatten)]
        state: StateFlags,
    },
    /// Measure the link to a `ferry serve` (like iperf for volume replication): round-trip
    /// time and raw throughput each way (no disk), then a synthetic sync round: a generated
    /// tree pushed with the real sessions into a scratch directory on the server (tmpfs when
    /// /dev/shm has room, else the temp dir; removed afterwards). Run it before turning on
    /// replication.
    Bench {
        /// ferry://HOST[:PORT]/MODULE (any module the server offers; the module itself is never
        /// read or written).
        #[arg(long, value_parser = crate::net::Url::parse)]
        peer: crate::net::Url,
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
        /// How to reach the server.
        #[command(flatten)]
        net: NetFlags,
    },
    /// Kubernetes: print the manifests of the Helm chart built into this binary, for
    /// kubectl users who do not run Helm.
    K8s {
        /// What to do.
        #[command(subcommand)]
        action: K8sAction,
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

/// `ferry init`.
#[derive(clap::Args)]
pub struct InitFlags {
    /// Where to write `destination/` and `source/`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name(s) the destination is reached by (DNS name or IP); its certificate lists them
    /// and clients check the one they dial.
    #[arg(long = "name", value_name = "DNS_OR_IP", required = true)]
    pub names: Vec<String>,
    /// Validity of the certificates, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Also write Kubernetes Secrets (NAMESPACE/NAME): NAME-destination and NAME-source.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_secret)]
    pub k8s_secret: Option<(String, String)>,
}

/// `ferry serve`.
#[derive(clap::Args)]
pub struct ServeFlags {
    /// Address for QUIC (UDP) and TLS over TCP, on the same port.
    #[arg(long, default_value = "0.0.0.0:7873")]
    pub listen: std::net::SocketAddr,
    /// NAME=DIR[:ro|:wo|:wo-whole]: a directory peers may push into (wo), pull from (ro), or
    /// both; wo-whole is wo that signs nothing of what is there (changed files come whole).
    #[arg(long = "module", value_name = "NAME=DIR[:ro|:wo|:wo-whole]",
          required_unless_present_any = ["modules_from", "modules_dir"],
          value_parser = crate::net::Module::parse)]
    pub modules: Vec<crate::net::Module>,
    /// Serve the modules of a list file (`-`: stdin): one `NAME DIR[:ro|:wo]` per line, NAME a
    /// Kubernetes name, `#` comments (see README, "Many volumes"). A name also given with
    /// --module is an error.
    #[arg(long, value_name = "FILE")]
    pub modules_from: Option<PathBuf>,
    /// Serve every subdirectory of DIR whose name is a Kubernetes name as a module of that
    /// name (hidden, invalid and symlinked ones are not), looked up at each request: one
    /// created while serving is served, one removed is refused. Read-write unless :ro or :wo.
    /// --module and --modules-from names win over a subdirectory of the same name.
    #[arg(long, value_name = "DIR[:ro|:wo]", value_parser = crate::many::ModulesDir::parse)]
    pub modules_dir: Option<crate::many::ModulesDir>,
    /// Directory with the destination's credentials (from `ferry init`).
    #[arg(long, value_name = "DIR", required_unless_present = "stdio")]
    pub identity: Option<PathBuf>,
    /// How often the --identity files are checked for rotated credentials (e.g. a renewed
    /// Kubernetes Secret): when they changed and are usable, new connections use them; an
    /// unusable rotation is logged and the previous credentials kept. 0 turns it off.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub identity_poll: Duration,
    /// Serve one round on stdin/stdout instead of listening (for --rsh).
    #[arg(long)]
    pub stdio: bool,
    /// `--threads`.
    #[command(flatten)]
    pub threads: ThreadsFlag,
    /// `--bwlimit`.
    #[command(flatten)]
    pub bwlimit: BwlimitFlag,
    /// `--state-dir` and its companions.
    #[command(flatten)]
    pub state: StateFlags,
    /// `--http`.
    #[command(flatten)]
    pub http: HttpFlag,
    /// Create fifos and device nodes that clients push (refused and counted by default), and
    /// include them in what pulls are served.
    #[arg(long)]
    pub specials: bool,
    /// What this server accepts from a pushing client.
    #[command(flatten)]
    pub receive: ReceiveFlags,
    /// Seconds a round's connection may hear nothing from the client before the round fails
    /// and the module is free again: QUIC's idle timeout, and the same limit over TLS/TCP and
    /// --stdio (both sides send keep-alives meanwhile, so only a stopped peer gets there).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub idle_timeout: u64,
    /// Connections (QUIC and TCP, authenticated or not) open at once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = ferry_transport::net::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

/// What a destination keeps between rounds: `ferry serve` for the modules peers push into,
/// `ferry pull` for the module it pulls. One group, so both take exactly the same flags.
#[derive(clap::Args, Clone)]
pub struct StateFlags {
    /// Keep state between rounds under DIR (on the module's filesystem, outside it): commit
    /// records, a snapshot of the module after each committed round (under
    /// DIR/snapshots/MODULE/, of the --snapshot kind), the resume journal and the signature
    /// cache. A pull keeps its module's state under the server's name for the module.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep the newest N snapshots per module. A snapshot is kept when any --keep-* rule
    /// keeps it; with none given, all are kept.
    #[arg(long, default_value_t = 0)]
    pub keep_last: usize,
    /// Keep the newest snapshot of each of the last N hours that have one (UTC).
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: usize,
    /// Keep the newest snapshot of each of the last N days that have one (UTC).
    #[arg(long, default_value_t = 0)]
    pub keep_daily: usize,
    /// How snapshots are taken: hardlink (any filesystem; metadata cost only), reflink
    /// (FICLONE copies; btrfs, XFS with reflink=1), btrfs (a read-only snapshot of the module,
    /// which must be a subvolume), command (--snapshot-command) or csi (`ferry serve` only: a
    /// Kubernetes VolumeSnapshot of --pvc, of --snapshot-class).
    #[arg(long, value_enum, default_value_t = SnapshotKind::Hardlink, value_name = "KIND")]
    pub snapshot: SnapshotKind,
    /// With --snapshot command: run CMD with sh -c after each commit, with FERRY_ROUND,
    /// FERRY_ROOT (the module's directory), FERRY_SNAPSHOT_NAME and FERRY_ROOT_HASH set.
    #[arg(long, value_name = "CMD")]
    pub snapshot_command: Option<String>,
    /// With --snapshot csi: the VolumeSnapshotClass of the snapshots.
    #[arg(long, value_name = "NAME")]
    pub snapshot_class: Option<String>,
    /// With --snapshot csi: the PersistentVolumeClaim holding the module(s).
    #[arg(long, value_name = "NAME")]
    pub pvc: Option<String>,
    /// With --snapshot csi: the namespace of the PVC and its snapshots (default:
    /// POD_NAMESPACE, else the service account's namespace, else the kubeconfig context's).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// With --snapshot csi: how long a VolumeSnapshot may take to be bound and ready to use
    /// (status.error counts as transient until then), e.g. 90s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub snapshot_timeout: std::time::Duration,
    /// Do not keep rsync signatures of large files in the state directory between rounds
    /// (then every changed file's basis is read and signed again; see README).
    #[arg(long)]
    pub no_signature_cache: bool,
}

/// What this side accepts when it receives (`sync`, `pull`, `serve`): its own policy,
/// whatever the peer sends. `push` leaves this to the server.
#[derive(clap::Args, Clone, Default)]
pub struct ReceiveFlags {
    /// Keep setuid/setgid bits and security.capability xattrs of received entries (dropped
    /// and counted by default).
    #[arg(long)]
    pub keep_privileged: bool,
    /// Give every received entry this owner and/or group: USER:GROUP, USER: or :GROUP, each
    /// a numeric id or a name of this side's /etc/passwd and /etc/group; after
    /// --usermap/--groupmap.
    #[arg(long, value_name = "USER:GROUP", value_parser = parse_chown)]
    pub chown: Option<Chown>,
    /// Replace owners of received entries: FROM:TO[,FROM:TO...] (ids, or names of this side's
    /// /etc/passwd).
    #[arg(long, value_name = "FROM:TO,...", value_parser = parse_usermap)]
    pub usermap: Option<IdMap>,
    /// Replace groups of received entries: FROM:TO[,FROM:TO...] (ids, or names of this
    /// side's /etc/group).
    #[arg(long, value_name = "FROM:TO,...", value_parser = parse_groupmap)]
    pub groupmap: Option<IdMap>,
}

/// `--chown`: owner and group, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chown(pub Option<u32>, pub Option<u32>);

/// `--usermap`/`--groupmap`: id pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap(pub Vec<(u32, u32)>);

fn parse_chown(s: &str) -> Result<Chown, String> {
    use super::ids::{id, Db};
    let (u, g) = s.split_once(':').unwrap_or((s, ""));
    let part = |v: &str, db| if v.is_empty() { Ok(None) } else { id(v, db).map(Some) };
    match (part(u, Db::Users)?, part(g, Db::Groups)?) {
        (None, None) => Err(format!("{s:?}: expected USER:GROUP, USER: or :GROUP")),
        (u, g) => Ok(Chown(u, g)),
    }
}

fn parse_usermap(s: &str) -> Result<IdMap, String> {
    parse_id_map(s, super::ids::Db::Users)
}

fn parse_groupmap(s: &str) -> Result<IdMap, String> {
    parse_id_map(s, super::ids::Db::Groups)
}

/// `FROM:TO[,FROM:TO...]`, each side an id or a name in `db`.
fn parse_id_map(s: &str, db: super::ids::Db) -> Result<IdMap, String> {
    s.split(',')
        .map(|pair| {
            let (a, b) = pair.split_once(':').ok_or_else(|| format!("{s:?}: expected FROM:TO"))?;
            Ok((super::ids::id(a, db)?, super::ids::id(b, db)?))
        })
        .collect::<Result<_, String>>()
        .map(IdMap)
}

/// `--snapshot KIND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotKind {
    /// The snapshot store, new files kept as hard links on the module's filesystem.
    Hardlink,
    /// The snapshot store, new files kept as reflinked copies (FICLONE).
    Reflink,
    /// Earlier versions' whole tree of hard links per snapshot (for comparison only).
    #[value(hide = true)]
    HardlinkTree,
    /// A read-only btrfs subvolume snapshot.
    Btrfs,
    /// The user's command (--snapshot-command).
    Command,
    /// A Kubernetes VolumeSnapshot of --pvc, through the API.
    Csi,
}

/// `--source-snapshot KIND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceImageKind {
    /// A reflinked copy of the source tree.
    Reflink,
    /// A read-only btrfs snapshot of the source subvolume.
    Btrfs,
    /// The user's command (--source-snapshot-command).
    Command,
}

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// QUIC only.
    Quic,
    /// TLS 1.3 over TCP only.
    Tcp,
    /// Race the two handshakes (QUIC preferred unless past rounds measured TCP faster); TCP
    /// where UDP is blocked. Sends no probe data.
    Auto,
}

/// `--threads`, for `sync`, `push`, `pull` and `serve`.
#[derive(clap::Args, Clone, Copy)]
pub struct ThreadsFlag {
    /// Worker threads per side of a round (default: one per core).
    #[arg(id = "threads", long = "threads", value_name = "N", default_value_t = 0)]
    pub get: usize,
}

/// `--bwlimit`, for `push`, `pull`, `bench` and `serve`.
#[derive(clap::Args, Clone, Copy)]
pub struct BwlimitFlag {
    /// Cap what this side sends (per connection): bytes per second with K/M/G suffix (powers
    /// of 1024); a bare number is KiB/s, as with rsync.
    #[arg(id = "bwlimit", long = "bwlimit", value_name = "RATE", value_parser = parse_rate)]
    pub get: Option<u64>,
}

/// `--http`, for `serve`, `push` and `pull`.
#[derive(clap::Args, Clone, Copy)]
pub struct HttpFlag {
    /// Serve GET /status (JSON: last round, next run, the current round's progress and ETA),
    /// /healthz, /readyz (200 once the last round succeeded) and /metrics (Prometheus) on
    /// ADDR, e.g. 0.0.0.0:9873. For push and pull also POST /trigger (a round now; SIGUSR1
    /// does the same), when --http-token-file is given.
    #[arg(id = "http", long = "http", value_name = "ADDR")]
    pub get: Option<std::net::SocketAddr>,
    /// --http connections open at once; more are closed as soon as they are accepted.
    #[arg(long, value_name = "N", default_value_t = crate::unattended::http::MAX_HTTP_CONNECTIONS,
          value_parser = parse_count, requires = "http")]
    pub http_max_connections: usize,
    /// Close an --http connection that sends nothing (its request, or its next one) for this
    /// long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration,
          requires = "http")]
    pub http_header_timeout: Duration,
    /// Close any --http connection after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration,
          requires = "http")]
    pub http_lifetime: Duration,
    /// Accept at most one POST /trigger per DURATION (429 with Retry-After otherwise).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration,
          requires = "http")]
    pub trigger_interval: Duration,
}

impl HttpFlag {
    /// The endpoint's limits these flags set.
    pub fn limits(&self) -> crate::unattended::http::HttpLimits {
        crate::unattended::http::HttpLimits {
            max_connections: self.http_max_connections,
            header_timeout: self.http_header_timeout,
            lifetime: self.http_lifetime,
            trigger_interval: self.trigger_interval,
        }
    }
}

/// One snapshot of one module.
#[derive(clap::Args)]
pub struct SnapshotRef {
    /// The state directory given to `ferry serve` or `ferry pull`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The module.
    #[arg(long)]
    pub module: String,
    /// The snapshot id (see `ferry snapshots list`).
    #[arg(long)]
    pub snapshot: String,
}

/// `ferry snapshots ...`.
#[derive(Subcommand)]
pub enum SnapshotAction {
    /// Restore every member of a consistency group's generation, each from the snapshot the
    /// generation names: into DIR/MODULE with --to DIR, else over each module's data directory
    /// (where `ferry serve` last served it; stop the server first). Every member's snapshot is
    /// checked to exist before anything is written.
    Restore {
        /// The generation.
        #[command(flatten)]
        generation: GenerationRef,
        /// Restore into DIR/MODULE for each member instead of the data directories.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// Promote every member of a consistency group's generation (as `ferry promote`, one
    /// module after the other). Stop `ferry serve` first.
    Promote {
        /// The generation.
        #[command(flatten)]
        generation: GenerationRef,
    },
    /// Delete one snapshot (its record first, then what only it held).
    Delete(SnapshotRef),
    /// Re-read every file of one snapshot and check it against what was recorded when its
    /// round committed; report the first path that does not match. Exit code 1 when one does
    /// not.
    Verify {
        /// The snapshot.
        #[command(flatten)]
        snap: SnapshotRef,
        /// Check only this path of the snapshot (a directory and everything beneath it, or
        /// one file).
        #[arg(long, value_name = "P")]
        path: Option<String>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// What differs between snapshots A and B: paths added, removed, changed (content or
    /// kind) and changed in metadata only. Takes time in proportion to the difference.
    Diff {
        /// The state directory given to `ferry serve` or `ferry pull`.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The module.
        #[arg(long)]
        module: String,
        /// The older snapshot's id.
        a: String,
        /// The newer snapshot's id.
        b: String,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List a directory of a snapshot (or show one entry) without restoring it.
    Ls {
        /// The state directory given to `ferry serve` or `ferry pull`.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The module.
        #[arg(long)]
        module: String,
        /// The snapshot's id.
        id: String,
        /// The path inside the snapshot (default: its root).
        path: Option<String>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List a module's snapshots (or with --group, a consistency group's generations),
    /// oldest first.
    List {
        /// The state directory given to `ferry serve` or `ferry pull`.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The module.
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        module: Option<String>,
        /// List the generations of this consistency group instead (each names one snapshot
        /// per member module).
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// One generation of a consistency group.
#[derive(clap::Args)]
pub struct GenerationRef {
    /// The state directory given to `ferry serve`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The consistency group.
    #[arg(long, value_name = "NAME")]
    pub group: String,
    /// The generation (see `ferry snapshots list --group`; default: the newest).
    #[arg(long, value_name = "ID")]
    pub generation: Option<String>,
}

/// `ferry sync`.
#[derive(clap::Args)]
pub struct SyncArgs {
    /// Source directory.
    pub src: PathBuf,
    /// Destination directory (created if missing).
    pub dst: PathBuf,
    /// The round's options.
    #[command(flatten)]
    pub round: RoundFlags,
}

/// Flags every round takes, local or over the network.
#[derive(clap::Args, Clone)]
pub struct RoundFlags {
    /// Delete destination entries that are not in the source.
    #[arg(long)]
    pub delete: bool,
    /// Compare files by blake3 instead of size and mtime.
    #[arg(short = 'c', long)]
    pub checksum: bool,
    /// Show what would change (itemized); write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Leave out paths matching PATTERN (rsync rules; repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Print the statistics as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print every created, changed or deleted path (always on with --dry-run).
    #[arg(short = 'i', long)]
    pub itemize: bool,
    /// zstd level for literal data: 0 (off) to 19, or `auto`, which adapts it during the round:
    /// up while the link is the bottleneck, down to off while the CPU is, and skips content
    /// that does not compress. Default: auto over a network, 1 locally.
    #[arg(long, value_name = "LEVEL|auto", value_parser = parse_compress_level)]
    pub compress_level: Option<i32>,
    /// `--threads`.
    #[command(flatten)]
    pub threads: ThreadsFlag,
    /// Also copy fifos and device nodes (the sender's walk; and what the receiving side
    /// accepts on `sync` and `pull`).
    #[arg(long)]
    pub specials: bool,
    /// What this side accepts when it receives (`sync`, `pull`).
    #[command(flatten)]
    pub receive: ReceiveFlags,
    /// Do not cross filesystem boundaries on the source.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Never draw a progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// Unattended operation of `ferry push` / `ferry pull`.
#[derive(clap::Args)]
pub struct ScheduleFlags {
    /// Run a round every DURATION (e.g. 30s, 5m, 1h), the first one at once.
    #[arg(long, value_name = "DURATION", conflicts_with = "schedule", value_parser = Schedule::every)]
    pub every: Option<Schedule>,
    /// Run rounds at the times of a cron expression, in UTC (e.g. '*/15 * * * *').
    #[arg(long, value_name = "CRON", value_parser = Schedule::cron)]
    pub schedule: Option<Schedule>,
    /// Delay each scheduled round by a random amount up to DURATION (spreads many agents).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub jitter: Option<Duration>,
    /// One round, then exit (for a Kubernetes Job or CronJob); the default without a schedule.
    #[arg(long)]
    pub once: bool,
    /// Retries of a round that fails transiently (network, peer restarting, module busy):
    /// N or `forever`, with exponential backoff and jitter. Fatal errors are never retried.
    #[arg(long, default_value = "3", value_parser = Retries::parse)]
    pub retries: Retries,
    /// Delay before the first retry (doubling each time, at most 5 minutes).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// Write the status (last round's times, result, stats, next run, missed intervals) to
    /// this JSON file after every round, atomically.
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<PathBuf>,
    /// `--http`.
    #[command(flatten)]
    pub http: HttpFlag,
    /// Turn on POST /trigger on --http: the file holds the bearer token a trigger must send
    /// (`Authorization: Bearer TOKEN`). Without it POST /trigger is refused (403).
    #[arg(long, value_name = "PATH", requires = "http")]
    pub http_token_file: Option<PathBuf>,
    /// Run CMD (with sh -c) before each round attempt, e.g. to quiesce an application (a
    /// database checkpoint). A non-zero exit skips the attempt (retried like a transient
    /// error). Environment: FERRY_ROOT (the local directory), FERRY_DIRECTION (push|pull),
    /// FERRY_URL, FERRY_ROUND (rounds started by this process), FERRY_ATTEMPT.
    #[arg(long, value_name = "CMD")]
    pub pre_round: Option<String>,
    /// Run CMD (with sh -c) after each attempt whose --pre-round succeeded, whatever the
    /// round's outcome (to resume the application); FERRY_RESULT is ok or error. A failure is
    /// logged.
    #[arg(long, value_name = "CMD")]
    pub post_round: Option<String>,
}

/// `ferry push|pull --list`: many modules in one job.
#[derive(clap::Args, Clone)]
pub struct ListFlags {
    /// Replicate every module of a list file (`-`: stdin): one `NAME DIRECTORY` per line, NAME
    /// a Kubernetes name (lowercase letters, digits, '-'), DIRECTORY the rest of the line, `#`
    /// comments. The whole file is checked before anything moves. One round per module, each
    /// with its own result; the exit code is the worst (see README, "Many volumes").
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Print what --list would run (module, directory, direction) and exit without connecting.
    #[arg(long, requires = "list")]
    pub list_check: bool,
    /// Modules replicated at a time with --list (each its own connection and round).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_JOBS, requires = "list")]
    pub jobs: usize,
    /// Push the list's modules as one consistency group NAME (push only): one --pre-round,
    /// the source images taken together, and one generation recorded on the server only when
    /// every module's round was recorded (see README, "Consistency groups").
    #[arg(long, value_name = "NAME", requires = "list")]
    pub group: Option<String>,
}

/// `--jobs` by default: two rounds keep a link and a disk busy while one waits, without
/// starving a small (2-core) machine; each round has its own worker threads (`--threads`).
pub const DEFAULT_JOBS: usize = 2;

/// The point-in-time image a push reads (source side only).
#[derive(clap::Args)]
pub struct SourceImageFlags {
    /// Push from a point-in-time image of the source instead of the live tree: reflink (a
    /// FICLONE copy, on btrfs or XFS with reflink=1), btrfs (a read-only snapshot; the source
    /// must be a subvolume) or command (--source-snapshot-command). Taken after --pre-round,
    /// removed after the round.
    #[arg(long, value_enum, value_name = "KIND")]
    pub source_snapshot: Option<SourceImageKind>,
    /// With --source-snapshot command: run CMD with sh -c and FERRY_ROOT set; the last line it
    /// prints is the directory to read (clean it up in --post-round).
    #[arg(long, value_name = "CMD")]
    pub source_snapshot_command: Option<String>,
    /// Where reflink and btrfs source images go (default: beside the source directory; it must
    /// be on the source's filesystem, and outside the source tree or --exclude'd).
    #[arg(long, value_name = "DIR")]
    pub source_image_dir: Option<PathBuf>,
}

/// Flags of `ferry push`, `ferry pull` and `ferry bench`.
#[derive(clap::Args)]
pub struct NetFlags {
    /// Directory with this side's credentials (ca.pem, cert.pem, key.pem from `ferry init`).
    #[arg(long, value_name = "DIR")]
    pub identity: Option<PathBuf>,
    /// quic, tcp (TLS 1.3 over TCP, for networks that block UDP) or auto (race the
    /// handshakes, prefer what past rounds measured faster; TCP where UDP is blocked).
    #[arg(long, value_enum, default_value_t = Transport::Auto)]
    pub transport: Transport,
    /// Run the session over the stdin/stdout of CMD (run with sh -c), e.g.
    /// 'kubectl exec -i POD -- ferry serve --stdio --module data=/data'. The tunnel provides
    /// authentication; --identity is not used.
    #[arg(long, value_name = "CMD")]
    pub rsh: Option<String>,
    /// `--bwlimit`.
    #[command(flatten)]
    pub bwlimit: BwlimitFlag,
    /// Seconds to wait for a connection.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds the connection may hear nothing from the server (keep-alives flow meanwhile,
    /// on QUIC, TLS/TCP and --rsh alike) before the round fails as a transient error and is
    /// retried.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout: u64,
}

/// `--bwlimit RATE`: K/M/G suffixes are powers of 1024; a bare number is KiB/s (as rsync).
///
/// # Errors
/// A message for a malformed or non-positive rate.
pub fn parse_rate(s: &str) -> Result<u64, String> {
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

/// A human duration (`30s`, `5m`, `1h30m`).
/// `--compress-level auto|0..=19`.
fn parse_compress_level(s: &str) -> Result<i32, String> {
    if s == "auto" {
        return Ok(crate::round::compression::COMPRESS_AUTO);
    }
    match s.parse::<i32>() {
        Ok(n) if (0..=19).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: expected a zstd level 0..=19 or `auto`")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).and_then(|d| {
        if d.is_zero() {
            Err(format!("{s:?}: must be more than zero"))
        } else {
            Ok(d)
        }
    })
}

/// A count of at least 1.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: expected a whole number of at least 1")),
    }
}

/// `--k8s-secret NAMESPACE/NAME`.
fn parse_secret(s: &str) -> Result<(String, String), String> {
    s.split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .map(|(ns, n)| (ns.to_string(), n.to_string()))
        .ok_or_else(|| format!("{s:?}: expected NAMESPACE/NAME"))
}

/// `ferry k8s` commands.
#[derive(Subcommand)]
pub enum K8sAction {
    /// Print the manifests the chart (deploy/helm/ferry, built in) installs for these values,
    /// as `helm template` renders them, for `kubectl apply -f -`. Values merge as in Helm:
    /// the chart's defaults, then each --values file, then the flags below, then each --set.
    Render(RenderFlags),
}

/// `ferry k8s render`.
#[derive(clap::Args, Debug, Default)]
pub struct RenderFlags {
    /// A values file, as `helm template -f FILE` (repeatable; later files win).
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// A value, as `helm template --set key=value` (repeatable; `a.b=1,c={x,y}`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The namespace the objects go in.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The release name, which prefixes the objects' names.
    #[arg(long, default_value = "ferry")]
    pub release: String,
    /// Which side to deploy: destination (`ferry serve`), source (`ferry push`) or both
    /// (destination.enabled / source.enabled).
    #[arg(long, value_enum)]
    pub role: Option<K8sRole>,
    /// A PVC to replicate, as NAME (module NAME) or MODULE=NAME (repeatable, in the same
    /// order on both sides; needs --role). Sets destination.modules / source.modules.
    #[arg(long, value_name = "[MODULE=]PVC", requires = "role")]
    pub pvc: Vec<String>,
    /// The source's cron schedule, UTC, five fields (source.schedule).
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// Where the source pushes: HOST or HOST:PORT, HOST a name in the destination's
    /// certificate (source.destination.host / .basePort).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub destination: Option<String>,
    /// Render the chart in DIR instead of the one built in (a changed copy, a newer
    /// version). Symlinks in it are refused, not followed.
    #[arg(long, value_name = "DIR")]
    pub chart: Option<PathBuf>,
}

/// A side of the pair, for `ferry k8s render --role`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum K8sRole {
    /// The receiving side: `ferry serve`.
    Destination,
    /// The sending side: `ferry push`.
    Source,
    /// Both, in one release.
    Both,
}
