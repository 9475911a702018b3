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
//! Where the two sides run ([`NetMode`], module `net`): by default in two network namespaces
//! joined by a veth pair at MTU 1500 (a pod network; root only, else a fallback to loopback
//! that says why), or on loopback (`--net loopback`). Client/server tools (`ferry push` to
//! `ferry serve`, the rsync daemon, the VolSync- and pv-migrate-style movers) get a fresh
//! server per run in the destination namespace, whose destination is the run's, and run their
//! client in the source namespace; local tools (`ferry sync`, rsync, `cp -a`) take part on
//! loopback only. The pair's credentials for the Ferry tools are made once, by `ferry init`, in
//! the work directory, and so are the movers' keys.
//!
//! Around every run: the destination is prepared (untimed), `sync()` flushes everything so no
//! earlier writeback lands inside the run, the veth counters are read, the tool runs under the
//! measuring wrapper ([`crate::measure`]), then `syncfs()` of the destination is timed as
//! "flush" (what the tool left to write back: Ferry fsyncs every file and directory it writes
//! before a round ends, rsync does not); wall + flush is the run's time to a durable copy, the
//! headline. The veth counters are read again, and finally `rsync -aHAXnic --delete SRC/ DST/`
//! must print nothing (for the VolSync-style mover, with `--omit-dir-times`: its delete pass
//! leaves directory times behind), or the comparison stops with the differences and keeps the
//! work directory.
//!
//! Sources are read from the page cache (they were just generated), as in a steady
//! replication loop. Destinations are on the same filesystem as the sources, or with
//! `--dest-tmpfs` on a tmpfs mounted for the run (falling back to `/dev/shm`).
//!
//! The run itself lives here; the rest is split by concern:
//! - `scenario`: the scenarios and which tools take part in each.
//! - `results`: what a comparison produced (runs, summaries, the machine, the goals), as the
//!   JSON output and the report read it.
//! - `setup`: the work directory, the destinations' filesystem, the machine's description,
//!   and the independent `rsync` check after every run.
//! - `net`: the network namespaces and their veth pair, and its byte counters.

pub mod net;
mod results;
mod scenario;
mod setup;

pub use net::{NetMode, VethBytes};
pub use results::{
    summarise, Dataset, Goal, GoalStatus, Host, Results, Run, Spread, Summary, ToolInfo,
};
pub use scenario::Scenario;
pub use setup::verify;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};

use self::setup::{
    copy_tree, fs_name, host, loadavg, remove_tree, syncfs, verify_with, DestRoot, Work,
};
use crate::gen;
use crate::measure;
use crate::tools::{self, Env, Tool};

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
    /// Tools to compare; empty: the mode's ([`Tool::NETWORK`] or [`Tool::LOOPBACK`]), with
    /// [`Tool::FerryBaseline`] when `ferry_baseline` is given.
    pub tools: Vec<Tool>,
    /// Where the client/server tools run: a veth pair between two network namespaces (falls
    /// back to loopback, saying why, when namespaces cannot be made) or loopback.
    pub net: NetMode,
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// Another `ferry` binary, run as [`Tool::FerryBaseline`].
    pub ferry_baseline: Option<PathBuf>,
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
    // The guard removes the namespaces when `run` returns, on success and on error.
    let (net, veth, net_note) = match opts.net {
        NetMode::Loopback => (NetMode::Loopback, None, None),
        NetMode::Veth => match net::Veth::setup() {
            Ok(v) => {
                eprintln!(
                    "network mode: namespaces {} (source side) and {} (destination side), veth \
                     pair at MTU {}",
                    v.places().src_ns,
                    v.places().dst_ns,
                    net::MTU
                );
                (NetMode::Veth, Some(v), None)
            }
            Err(why) => {
                let note = format!(
                    "network mode unavailable ({why}): falling back to loopback (--net loopback)"
                );
                eprintln!("{note}");
                (NetMode::Loopback, None, Some(note))
            }
        },
    };
    let mut tools = opts.tools.clone();
    if tools.is_empty() {
        tools = match net {
            NetMode::Veth => Tool::NETWORK.to_vec(),
            NetMode::Loopback => Tool::LOOPBACK.to_vec(),
        };
    }
    if opts.ferry_baseline.is_some() && !tools.contains(&Tool::FerryBaseline) {
        tools.push(Tool::FerryBaseline);
    }
    if tools.contains(&Tool::FerryBaseline) {
        match &opts.ferry_baseline {
            Some(p) if p.is_file() => {}
            Some(p) => bail!("--ferry-baseline {}: no such file", p.display()),
            None => bail!("the ferry-baseline tool needs --ferry-baseline PATH"),
        }
    }
    let opts = &Options { tools, ..opts.clone() };
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
    let places = veth.as_ref().map(|v| v.places().clone());
    let result = run_in(opts, &work, &dest.path, rsync_version, places, net_note);
    drop(veth);
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
                            "mover-keys",
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

fn run_in(
    opts: &Options,
    work: &Work,
    dest_root: &Path,
    rsync_version: String,
    places: Option<tools::NetPlaces>,
    net_note: Option<String>,
) -> Result<Results> {
    let net = if places.is_some() { NetMode::Veth } else { NetMode::Loopback };
    let t_start = Instant::now();
    let started_unix =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut host = host(loadavg());
    let scratch = work.path().join("scratch");
    fs::create_dir_all(&scratch)?;

    let mut infos = Vec::new();
    let mut runnable = Vec::new();
    for &tool in &opts.tools {
        let unavailable = if net == NetMode::Veth && tool.is_local() {
            Some("both sides in one place, no network between them: loopback mode only".into())
        } else {
            crate::peers::missing(tool)
        };
        if let Some(note) = unavailable {
            eprintln!("{}: skipped: {note}", tool.label());
            infos.push(ToolInfo {
                tool,
                label: tool.label().to_string(),
                available: false,
                version: None,
                command: tool.command().to_string(),
                note: Some(note),
            });
            continue;
        }
        let version = match tool {
            Tool::Rsync | Tool::RsyncDaemon | Tool::PvMigrateStyle => rsync_version.clone(),
            Tool::VolsyncStyle => format!(
                "{rsync_version}; {}",
                stunnel_version().unwrap_or_else(|| "stunnel".to_string())
            ),
            Tool::Cp => tools::version("cp".as_ref()).map_err(|e| anyhow!("cp -a: {e}"))?,
            _ => {
                let ferry = if tool == Tool::FerryBaseline {
                    opts.ferry_baseline.clone().context("checked above")?
                } else {
                    opts.ferry.clone()
                };
                let v = tools::version(ferry.as_os_str())
                    .map_err(|e| anyhow!("{}: {e}", tool.label()))?;
                // Which build was measured matters when the tree is being worked on.
                let built = fs::metadata(&ferry)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or_else(String::new, |d| format!(", built {}", gen::utc(d.as_secs())));
                format!("{v}, {}{built}", ferry.display())
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
        runnable.push(tool);
    }
    ensure!(!runnable.is_empty(), "no tool to run (see the messages above)");

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
    let creds = if runnable.iter().any(|t| t.is_ferry_push()) {
        Some(tools::init_credentials(&opts.ferry, &work.path().join("creds"))?)
    } else {
        None
    };
    let movers = [Tool::VolsyncStyle, Tool::PvMigrateStyle];
    let keys = if runnable.iter().any(|t| movers.contains(t)) {
        let ssh = runnable.contains(&Tool::PvMigrateStyle);
        Some(crate::peers::make_keys(&work.path().join("mover-keys"), ssh)?)
    } else {
        None
    };
    let env = Env {
        wrapper: opts.wrapper.clone(),
        ferry: opts.ferry.clone(),
        scratch: scratch.clone(),
        creds,
        net: places,
        baseline: opts.ferry_baseline.clone(),
        keys,
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
                let basis = match scenario {
                    Scenario::InitialMixed | Scenario::InitialMany => None,
                    Scenario::Incremental => Some(dataset("mixed")?.0),
                    Scenario::NochangeMany => Some(src.clone()),
                };
                rustix::fs::sync();
                let loadavg_before = loadavg();
                let counters = env.net.as_ref().map(|n| n.counters()).transpose()?;
                let r =
                    tools::run(&env, tool, &src, &dst, basis.as_deref()).with_context(|| {
                        format!("{} / {} (repetition {})", scenario.slug(), tool.label(), rep + 1)
                    })?;
                // The copy is durable once the destination's filesystem is synced.
                let t = Instant::now();
                syncfs(&dst)?;
                let flush_secs = t.elapsed().as_secs_f64();
                let veth = match (r.veth, &env.net, counters) {
                    (Some(v), _, _) => Some(v),
                    (None, Some(n), Some(before)) => Some(n.since(before)?),
                    _ => None,
                };
                verify_with(&src, &dst, tool == Tool::VolsyncStyle).with_context(|| {
                    format!("after {} / {} (repetition {})", scenario.slug(), tool.label(), rep + 1)
                })?;
                let wall_secs = r.client.wall_secs;
                let durable_secs = wall_secs + flush_secs;
                eprintln!(
                    "[{}] rep {}/{} {:<20} durable {:>8.3} s (flush {:.3})  cpu src {:.2} / \
                     dst {:.2} s  rss {:.1} MiB{}  verified",
                    scenario.slug(),
                    rep + 1,
                    opts.reps,
                    tool.label(),
                    durable_secs,
                    flush_secs,
                    r.client.cpu_secs(),
                    r.server.map_or(0.0, |s| s.cpu_secs()),
                    r.client.max_rss_bytes as f64 / (1 << 20) as f64,
                    veth.map_or_else(String::new, |v| format!(
                        "  veth {}",
                        crate::report::human_bytes(v.total())
                    )),
                );
                runs.push(Run {
                    scenario,
                    tool,
                    rep,
                    position,
                    wall_secs,
                    durable_secs,
                    source_bytes,
                    throughput_mb_s: if durable_secs > 0.0 {
                        source_bytes as f64 / durable_secs / 1e6
                    } else {
                        0.0
                    },
                    flush_secs,
                    transfer: r.transfer,
                    client: r.client,
                    server: r.server,
                    veth,
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
        net,
        mtu: if net == NetMode::Veth { Some(net::MTU) } else { None },
        net_note,
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

/// `stunnel -version`'s first line (it prints to stderr).
fn stunnel_version() -> Option<String> {
    let o = std::process::Command::new("stunnel").arg("-version").output().ok()?;
    let text =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    text.lines().find(|l| l.starts_with("stunnel ")).map(|l| l.trim().to_string())
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
