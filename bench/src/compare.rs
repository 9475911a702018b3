//! `ferry-bench compare`: Ferry and rsync side by side on the generated datasets.
//!
//! Scenarios ([`Scenario`]), each run for every available tool in the same invocation,
//! `reps` times, the tools' order rotating from one repetition to the next so none always
//! runs first (on a warmer or colder machine):
//!
//! | scenario | source | destination before the run |
//! | --- | --- | --- |
//! | `initial-mixed` | `mixed` | empty |
//! | `incremental` | `mixed` after `mutate` | `cp -a` of `mixed` (the previous round) |
//! | `nochange-many` | `many` | `cp -a` of `many`, made once and shared: a no-change round leaves it as it is, which the check after every run confirms |
//! | `initial-many` | `many` | empty |
//!
//! Client/server tools (the rsync daemon, `ferry push` to `ferry serve` over QUIC and over TLS
//! over TCP) get a fresh server per run on loopback, whose destination is the run's; the pair's
//! credentials for the Ferry tools are made once, by `ferry init`, in the work directory.
//!
//! Around every run: the destination is prepared (untimed), `sync()` flushes everything so no
//! earlier writeback lands inside the run, the tool runs under the measuring wrapper
//! ([`crate::measure`]), then `syncfs()` of the destination is timed as "flush" (what the tool
//! left to write back: `ferry sync` fsyncs every file and directory it writes before it
//! returns, rsync does not), and finally `rsync -aHAXnic --delete SRC/ DST/` must print nothing,
//! or the comparison stops with the differences and keeps the work directory.
//!
//! Sources are read from the page cache (they were just generated), as in a steady
//! replication loop. Destinations are on the same filesystem as the sources, or with
//! `--dest-tmpfs` on a tmpfs mounted for the run (falling back to `/dev/shm`).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::gen::{self, MutateSummary, TreeStats};
use crate::measure::{self, Usage};
use crate::tools::{self, Env, Tool, Transfer};

/// A scenario of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Initial sync of `mixed` into an empty directory.
    InitialMixed,
    /// Incremental round `mixed` -> `mutate`.
    Incremental,
    /// No-change round on `many`.
    NochangeMany,
    /// Initial sync of `many` into an empty directory.
    InitialMany,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 4] = [
        Scenario::InitialMixed,
        Scenario::Incremental,
        Scenario::NochangeMany,
        Scenario::InitialMany,
    ];

    /// Identifier in tables and JSON.
    pub fn slug(self) -> &'static str {
        match self {
            Scenario::InitialMixed => "initial-mixed",
            Scenario::Incremental => "incremental",
            Scenario::NochangeMany => "nochange-many",
            Scenario::InitialMany => "initial-many",
        }
    }

    /// One-line description.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::InitialMixed => "initial sync of mixed into an empty directory",
            Scenario::Incremental => "incremental round mixed -> mutate",
            Scenario::NochangeMany => "no-change round on many",
            Scenario::InitialMany => "initial sync of many into an empty directory",
        }
    }

    /// Whether the destination starts empty.
    pub fn initial(self) -> bool {
        matches!(self, Scenario::InitialMixed | Scenario::InitialMany)
    }

    /// Whether `tool` takes part.
    pub fn runs(self, tool: Tool) -> bool {
        self.initial() || !tool.initial_only()
    }
}

/// What `compare` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Dataset scale (1 = issue 5's full datasets).
    pub scale: f64,
    /// Repetitions per scenario and tool.
    pub reps: usize,
    /// Destinations on a tmpfs.
    pub dest_tmpfs: bool,
    /// Scenarios to run, in this order.
    pub scenarios: Vec<Scenario>,
    /// Tools to compare.
    pub tools: Vec<Tool>,
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// The `ferry-bench` executable, used as the measuring wrapper.
    pub wrapper: PathBuf,
    /// Work directory (missing or empty); `None`: a temporary directory.
    pub work: Option<PathBuf>,
    /// Keep datasets and destinations afterwards.
    pub keep: bool,
    /// Dataset seed.
    pub seed: u64,
    /// The command line, for the report.
    pub command_line: String,
}

/// A median and its spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }
}

/// One run of one tool in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The scenario.
    pub scenario: Scenario,
    /// The tool.
    pub tool: Tool,
    /// Repetition, from 0.
    pub rep: usize,
    /// Position of the tool in this repetition's order, from 0.
    pub position: usize,
    /// Wall time of the tool (the client, for client/server tools), seconds.
    pub wall_secs: f64,
    /// Bytes of regular files in the source tree.
    pub source_bytes: u64,
    /// Source bytes per wall second, MB/s (decimal).
    pub throughput_mb_s: f64,
    /// `syncfs()` of the destination right after the tool, seconds.
    pub flush_secs: f64,
    /// What the tool says it moved.
    pub transfer: Transfer,
    /// The client's (or local tool's) usage.
    pub client: Usage,
    /// The server's usage, for client/server tools.
    pub server: Option<Usage>,
    /// The destination matched the source afterwards.
    pub verified: bool,
    /// `/proc/loadavg` just before the run.
    pub loadavg_before: String,
}

/// The runs of one tool in one scenario, summarised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The scenario.
    pub scenario: Scenario,
    /// The tool.
    pub tool: Tool,
    /// Number of runs.
    pub runs: usize,
    /// Wall time, seconds.
    pub wall: Spread,
    /// Median throughput, MB/s.
    pub throughput_mb_s: f64,
    /// Median flush time, seconds.
    pub flush_secs: f64,
    /// Median transfer figures.
    pub transfer: Transfer,
    /// Median CPU time of the client (local tool), seconds.
    pub client_cpu_secs: f64,
    /// Median CPU time of the server, seconds.
    pub server_cpu_secs: Option<f64>,
    /// Largest peak RSS of the client (local tool) over the runs, bytes.
    pub client_max_rss_bytes: u64,
    /// Largest peak RSS of the server over the runs, bytes.
    pub server_max_rss_bytes: Option<u64>,
    /// All runs verified.
    pub verified: bool,
}

/// A tool as the report lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolInfo {
    /// The tool.
    pub tool: Tool,
    /// Its name.
    pub label: String,
    /// Whether it ran (every tool does now; comparisons saved before `ferry push` existed list
    /// it as not available).
    pub available: bool,
    /// `--version` first line.
    pub version: Option<String>,
    /// Its command line.
    pub command: String,
    /// Why it did not run.
    pub note: Option<String>,
}

/// A generated dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    /// `mixed`, `mutated` or `many`.
    pub name: String,
    /// Where it was.
    pub path: PathBuf,
    /// What it holds.
    pub stats: TreeStats,
    /// Generation time, seconds.
    pub gen_secs: f64,
    /// For `mutated`: what changed from `mixed`.
    pub mutate: Option<MutateSummary>,
}

/// The machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
    /// Memory, bytes.
    pub mem_total_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg` before the first dataset was generated.
    pub loadavg_start: String,
    /// `/proc/loadavg` at the end.
    pub loadavg_end: String,
}

/// How a goal of issue 5 stands in this run (a report, never a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoalStatus {
    /// Reached.
    Met,
    /// Not reached.
    NotMet,
    /// Not measured in this run (scenario or tool missing).
    NotMeasured,
}

/// A goal of issue 5 and where this run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goal {
    /// The goal.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// Met or not.
    pub status: GoalStatus,
}

/// Everything a comparison produced (the JSON output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// `ferry-bench` version.
    pub ferry_bench_version: String,
    /// The command line.
    pub command: String,
    /// Start, seconds since the epoch.
    pub started_unix: u64,
    /// Total duration, seconds.
    pub duration_secs: f64,
    /// The machine.
    pub host: Host,
    /// Scale.
    pub scale: f64,
    /// Repetitions.
    pub reps: usize,
    /// Seed.
    pub seed: u64,
    /// Scenarios run.
    pub scenarios: Vec<Scenario>,
    /// Where destinations were.
    pub dest_root: PathBuf,
    /// Filesystem of the destinations.
    pub dest_fs: String,
    /// Filesystem of the sources.
    pub source_fs: String,
    /// Tools asked for.
    pub tools: Vec<ToolInfo>,
    /// The wrapper running `true`: the floor of every peak-RSS figure.
    pub rusage_floor: Usage,
    /// The datasets.
    pub datasets: Vec<Dataset>,
    /// Every run.
    pub runs: Vec<Run>,
    /// Per scenario and tool.
    pub summaries: Vec<Summary>,
    /// Issue 5's goals.
    pub goals: Vec<Goal>,
    /// Every run verified (a failed check stops the comparison, so this is true when present).
    pub all_verified: bool,
}

impl Results {
    /// The summary of `tool` in `scenario`.
    pub fn summary(&self, scenario: Scenario, tool: Tool) -> Option<&Summary> {
        self.summaries.iter().find(|s| s.scenario == scenario && s.tool == tool)
    }
}

/// Where datasets and destinations live.
enum Work {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Work {
    fn path(&self) -> &Path {
        match self {
            Work::Temp(t) => t.path(),
            Work::Given(p) => p,
        }
    }
}

/// Where destinations go, and how to clean it up.
struct DestRoot {
    path: PathBuf,
    /// A tmpfs we mounted at `path`.
    mounted: bool,
    /// A directory of ours in /dev/shm.
    shm: Option<tempfile::TempDir>,
}

impl DestRoot {
    fn new(work: &Path, tmpfs: bool) -> Result<DestRoot> {
        if !tmpfs {
            let path = work.join("dst");
            fs::create_dir_all(&path)?;
            return Ok(DestRoot { path, mounted: false, shm: None });
        }
        let path = work.join("dst-tmpfs");
        fs::create_dir_all(&path)?;
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755", "ferry-bench"])
            .arg(&path)
            .output();
        match mount {
            Ok(o) if o.status.success() => Ok(DestRoot { path, mounted: true, shm: None }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("note: cannot mount a tmpfs ({why}); using /dev/shm for destinations");
                fs::remove_dir(&path)?;
                let shm = tempfile::Builder::new()
                    .prefix("ferry-compare-")
                    .tempdir_in("/dev/shm")
                    .context("neither a tmpfs mount nor /dev/shm is available for --dest-tmpfs")?;
                Ok(DestRoot { path: shm.path().to_path_buf(), mounted: false, shm: Some(shm) })
            }
        }
    }

    /// Unmounts or removes what we made; with `keep`, leaves it and says where.
    fn cleanup(self, keep: bool) -> Result<()> {
        if keep {
            if self.mounted {
                eprintln!(
                    "destinations kept on tmpfs at {} (umount it when done)",
                    self.path.display()
                );
            }
            if let Some(t) = self.shm {
                eprintln!("destinations kept at {}", t.keep().display());
            }
            return Ok(());
        }
        if self.mounted {
            let st = Command::new("umount").arg(&self.path).status()?;
            ensure!(st.success(), "umount {} failed", self.path.display());
        }
        Ok(())
    }
}

fn fs_name(path: &Path) -> String {
    let Ok(s) = rustix::fs::statfs(path) else { return "unknown".into() };
    // f_type values from linux/magic.h.
    match s.f_type as u64 {
        0x0102_1994 => "tmpfs".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        other => format!("0x{other:x}"),
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

fn host(loadavg_start: String) -> Host {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem_total_bytes = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    Host {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        mem_total_bytes,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_start,
        loadavg_end: String::new(),
    }
}

/// `cp -a from to` (untimed preparation).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().context("running cp")?;
    ensure!(st.success(), "cp -a {} {} failed", from.display(), to.display());
    Ok(())
}

fn remove_tree(p: &Path) -> Result<()> {
    if fs::symlink_metadata(p).is_ok() {
        fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// The independent check: `rsync -aHAXnic --delete SRC/ DST/` prints nothing when DST equals
/// SRC in content (checksums), types, permissions, times, owners, links, ACLs and xattrs.
///
/// # Errors
/// When it prints anything, with what it printed.
pub fn verify(src: &Path, dst: &Path) -> Result<()> {
    let mut s: OsString = src.as_os_str().to_owned();
    s.push("/");
    let mut d: OsString = dst.as_os_str().to_owned();
    d.push("/");
    let out = Command::new("rsync")
        .args(["-aHAXnic", "--delete"])
        .arg(&s)
        .arg(&d)
        .output()
        .context("running rsync to verify")?;
    ensure!(
        out.status.success(),
        "the check `rsync -aHAXnic --delete {} {}` failed: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    if !diff.trim().is_empty() {
        let n = diff.lines().count();
        let first: Vec<&str> = diff.lines().take(40).collect();
        bail!(
            "DESTINATION DIFFERS FROM SOURCE: `rsync -aHAXnic --delete {} {}` lists {n} \
             differences:\n{}{}",
            src.display(),
            dst.display(),
            first.join("\n"),
            if n > 40 { "\n..." } else { "" }
        );
    }
    Ok(())
}

fn syncfs(path: &Path) -> Result<()> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::syncfs(&f).with_context(|| format!("syncfs {}", path.display()))?;
    Ok(())
}

/// Runs the comparison.
///
/// # Errors
/// Missing rsync or ferry (with what to do), a tool failing, a destination not matching its
/// source (the work directory is then kept for inspection), I/O errors.
pub fn run(opts: &Options) -> Result<Results> {
    gen::check_scale(opts.scale)?;
    ensure!(opts.reps >= 1, "--reps must be at least 1");
    ensure!(!opts.scenarios.is_empty(), "no scenario selected");
    let rsync_version = tools::rsync_version()?;
    if opts.tools.iter().any(|t| t.is_ferry()) && !opts.ferry.is_file() {
        bail!(
            "the ferry binary is not at {}: build it first with \
             `cargo build --release -p ferry-agent` (or give its path with --ferry PATH)",
            opts.ferry.display()
        );
    }
    let work = match &opts.work {
        None => Work::Temp(tempfile::Builder::new().prefix("ferry-compare-").tempdir()?),
        Some(p) => {
            if p.exists() && fs::read_dir(p)?.next().is_some() {
                bail!("--work {} is not empty: give a new or empty directory", p.display());
            }
            fs::create_dir_all(p)?;
            Work::Given(fs::canonicalize(p)?)
        }
    };
    let dest = DestRoot::new(work.path(), opts.dest_tmpfs)?;
    let result = run_in(opts, &work, &dest.path, rsync_version);
    match &result {
        Ok(_) => {
            dest.cleanup(opts.keep)?;
            if opts.keep {
                eprintln!("work directory kept: {}", work.path().display());
            } else {
                match &work {
                    Work::Temp(_) => {} // removed on drop
                    Work::Given(p) => {
                        for sub in [
                            "src-mixed",
                            "src-mutated",
                            "src-many",
                            "dst",
                            "dst-tmpfs",
                            "scratch",
                            "creds",
                        ] {
                            remove_tree(&p.join(sub))?;
                        }
                    }
                }
            }
        }
        Err(_) => {
            // Keep the evidence: the trees that differ, daemon logs, usage reports.
            dest.cleanup(true)?;
            let p = match work {
                Work::Temp(t) => t.keep(),
                Work::Given(p) => p,
            };
            eprintln!("work directory kept for inspection: {}", p.display());
        }
    }
    result
}

fn run_in(opts: &Options, work: &Work, dest_root: &Path, rsync_version: String) -> Result<Results> {
    let t_start = Instant::now();
    let started_unix =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut host = host(loadavg());
    let scratch = work.path().join("scratch");
    fs::create_dir_all(&scratch)?;

    let mut infos = Vec::new();
    for &tool in &opts.tools {
        let version = match tool {
            Tool::Rsync | Tool::RsyncDaemon => rsync_version.clone(),
            Tool::Cp => tools::version("cp".as_ref()).map_err(|e| anyhow!("cp -a: {e}"))?,
            Tool::FerrySync | Tool::FerryPushQuic | Tool::FerryPushTcp => {
                let v = tools::version(opts.ferry.as_os_str())
                    .map_err(|e| anyhow!("{}: {e}", tool.label()))?;
                // Which build was measured matters when the tree is being worked on.
                let built = fs::metadata(&opts.ferry)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or_else(String::new, |d| format!(", built {}", gen::utc(d.as_secs())));
                format!("{v}, {}{built}", opts.ferry.display())
            }
        };
        infos.push(ToolInfo {
            tool,
            label: tool.label().to_string(),
            available: true,
            version: Some(version),
            command: tool.command().to_string(),
            note: None,
        });
    }
    let runnable: Vec<Tool> = opts.tools.clone();
    ensure!(!runnable.is_empty(), "no tool selected");

    // Datasets: only those the selected scenarios need.
    let need = |s: &[Scenario]| opts.scenarios.iter().any(|x| s.contains(x));
    let mut datasets = Vec::new();
    let mut make = |name: &str, kinds: &[gen::Kind]| -> Result<()> {
        let path = work.path().join(format!("src-{name}"));
        eprintln!("generating {name} (scale {}) in {} ...", opts.scale, path.display());
        let t = Instant::now();
        let mut mutate = None;
        for &k in kinds {
            mutate = gen::generate(k, &path, opts.scale, opts.seed)?.mutate.or(mutate);
        }
        let stats = gen::tree_stats(&path)?;
        let gen_secs = t.elapsed().as_secs_f64();
        eprintln!(
            "  {} files, {} dirs, {} symlinks, {} in {gen_secs:.1} s",
            stats.files,
            stats.dirs,
            stats.symlinks,
            crate::report::human_bytes(stats.bytes)
        );
        datasets.push(Dataset { name: name.to_string(), path, stats, gen_secs, mutate });
        Ok(())
    };
    if need(&[Scenario::InitialMixed, Scenario::Incremental]) {
        make("mixed", &[gen::Kind::Mixed])?;
    }
    if need(&[Scenario::Incremental]) {
        // The same seed regenerates `mixed` exactly (content and mtimes), then one round of
        // changes: what the destination's copy of `mixed` must become.
        make("mutated", &[gen::Kind::Mixed, gen::Kind::Mutate])?;
    }
    if need(&[Scenario::NochangeMany, Scenario::InitialMany]) {
        make("many", &[gen::Kind::Many])?;
    }
    let dataset = |name: &str| -> Result<(PathBuf, u64)> {
        let d = datasets.iter().find(|d| d.name == name).context("dataset generated")?;
        Ok((d.path.clone(), d.stats.bytes))
    };
    rustix::fs::sync();

    // One pair of credentials for every `ferry serve` / `ferry push` of the comparison.
    let creds = if runnable.iter().any(|t| t.transport().is_some()) {
        Some(tools::init_credentials(&opts.ferry, &work.path().join("creds"))?)
    } else {
        None
    };
    let env = Env {
        wrapper: opts.wrapper.clone(),
        ferry: opts.ferry.clone(),
        scratch: scratch.clone(),
        creds,
    };
    let rusage_floor = measure::run(&env.wrapper, &scratch, "true", &[])?.usage;

    let mut runs = Vec::new();
    for &scenario in &opts.scenarios {
        let (src, source_bytes) = match scenario {
            Scenario::InitialMixed => dataset("mixed")?,
            Scenario::Incremental => dataset("mutated")?,
            Scenario::NochangeMany | Scenario::InitialMany => dataset("many")?,
        };
        let tools: Vec<Tool> = runnable.iter().copied().filter(|&t| scenario.runs(t)).collect();
        if tools.is_empty() {
            continue;
        }
        let dst = dest_root.join(scenario.slug());
        if scenario == Scenario::NochangeMany {
            remove_tree(&dst)?;
            copy_tree(&src, &dst)?;
            verify(&src, &dst).context("the no-change destination prepared with cp -a")?;
        }
        for rep in 0..opts.reps {
            for position in 0..tools.len() {
                let tool = tools[(position + rep) % tools.len()];
                match scenario {
                    Scenario::InitialMixed | Scenario::InitialMany => {
                        remove_tree(&dst)?;
                        fs::create_dir(&dst)?;
                    }
                    Scenario::Incremental => {
                        remove_tree(&dst)?;
                        copy_tree(&dataset("mixed")?.0, &dst)?;
                    }
                    Scenario::NochangeMany => {}
                }
                rustix::fs::sync();
                let loadavg_before = loadavg();
                let r = tools::run(&env, tool, &src, &dst).with_context(|| {
                    format!("{} / {} (repetition {})", scenario.slug(), tool.label(), rep + 1)
                })?;
                let t = Instant::now();
                syncfs(&dst)?;
                let flush_secs = t.elapsed().as_secs_f64();
                verify(&src, &dst).with_context(|| {
                    format!("after {} / {} (repetition {})", scenario.slug(), tool.label(), rep + 1)
                })?;
                let wall_secs = r.client.wall_secs;
                eprintln!(
                    "[{}] rep {}/{} {:<15} {:>8.3} s  cpu {:>7.2} s  rss {:>7.1} MiB  verified",
                    scenario.slug(),
                    rep + 1,
                    opts.reps,
                    tool.label(),
                    wall_secs,
                    r.client.cpu_secs() + r.server.map_or(0.0, |s| s.cpu_secs()),
                    r.client.max_rss_bytes as f64 / (1 << 20) as f64,
                );
                runs.push(Run {
                    scenario,
                    tool,
                    rep,
                    position,
                    wall_secs,
                    source_bytes,
                    throughput_mb_s: if wall_secs > 0.0 {
                        source_bytes as f64 / wall_secs / 1e6
                    } else {
                        0.0
                    },
                    flush_secs,
                    transfer: r.transfer,
                    client: r.client,
                    server: r.server,
                    verified: true,
                    loadavg_before,
                });
            }
        }
        remove_tree(&dst)?;
    }
    host.loadavg_end = loadavg();

    let summaries = summarise(&opts.scenarios, &runnable, &runs);
    let mut results = Results {
        ferry_bench_version: env!("CARGO_PKG_VERSION").to_string(),
        command: opts.command_line.clone(),
        started_unix,
        duration_secs: 0.0,
        host,
        scale: opts.scale,
        reps: opts.reps,
        seed: opts.seed,
        scenarios: opts.scenarios.clone(),
        dest_root: dest_root.to_path_buf(),
        dest_fs: fs_name(dest_root),
        source_fs: fs_name(work.path()),
        tools: infos,
        rusage_floor,
        datasets,
        all_verified: runs.iter().all(|r| r.verified),
        runs,
        summaries,
        goals: Vec::new(),
    };
    results.goals = crate::report::goals(&results);
    results.duration_secs = t_start.elapsed().as_secs_f64();
    Ok(results)
}

fn median_u64(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let v: Vec<f64> = values.flatten().map(|x| x as f64).collect();
    (!v.is_empty()).then(|| Spread::of(&v).median.round() as u64)
}

/// Per scenario and tool, in scenario order then tool order.
pub fn summarise(scenarios: &[Scenario], tools: &[Tool], runs: &[Run]) -> Vec<Summary> {
    let mut out = Vec::new();
    for &scenario in scenarios {
        for &tool in tools {
            let rs: Vec<&Run> =
                runs.iter().filter(|r| r.scenario == scenario && r.tool == tool).collect();
            if rs.is_empty() {
                continue;
            }
            let med = |f: &dyn Fn(&Run) -> f64| {
                Spread::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>()).median
            };
            let tr =
                |f: fn(&Transfer) -> Option<u64>| median_u64(rs.iter().map(|r| f(&r.transfer)));
            let has_server = rs.iter().all(|r| r.server.is_some());
            out.push(Summary {
                scenario,
                tool,
                runs: rs.len(),
                wall: Spread::of(&rs.iter().map(|r| r.wall_secs).collect::<Vec<_>>()),
                throughput_mb_s: med(&|r| r.throughput_mb_s),
                flush_secs: med(&|r| r.flush_secs),
                transfer: Transfer {
                    wire_sent: tr(|t| t.wire_sent),
                    wire_received: tr(|t| t.wire_received),
                    literal: tr(|t| t.literal),
                    matched: tr(|t| t.matched),
                    payload: tr(|t| t.payload),
                    signature: tr(|t| t.signature),
                    files_transferred: tr(|t| t.files_transferred),
                },
                client_cpu_secs: med(&|r| r.client.cpu_secs()),
                server_cpu_secs: has_server
                    .then(|| med(&|r| r.server.map_or(0.0, |s| s.cpu_secs()))),
                client_max_rss_bytes: rs.iter().map(|r| r.client.max_rss_bytes).max().unwrap_or(0),
                server_max_rss_bytes: has_server.then(|| {
                    rs.iter().filter_map(|r| r.server.map(|s| s.max_rss_bytes)).max().unwrap_or(0)
                }),
                verified: rs.iter().all(|r| r.verified),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_min_max() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Spread { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Spread::of(&[]), Spread::default());
    }

    #[test]
    fn cp_runs_only_into_empty_destinations_and_every_other_tool_everywhere() {
        assert!(Scenario::InitialMany.runs(Tool::Cp));
        assert!(!Scenario::Incremental.runs(Tool::Cp));
        for sc in Scenario::ALL {
            for tool in Tool::ALL.into_iter().filter(|&t| t != Tool::Cp) {
                assert!(sc.runs(tool), "{tool:?} in {sc:?}");
            }
        }
    }
}
