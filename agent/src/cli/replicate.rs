//! `ferry push`, `ferry pull` and `ferry bench --peer`: the client side of the network.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_core::session::Itemized;

use super::config::NETWORK_COMPRESS_LEVEL;
use super::exit;
use super::flags::{NetFlags, RoundFlags};
use super::output::{human_bytes, print_summary, Progress};
use crate::many::{module_url, ListEntry};
use crate::net::{run_bench, run_client, Direction, RemoteError, RemoteOptions, Url};
use crate::round::driver::Progress as DriverProgress;
use crate::round::{CommitReport, Report, SyncOptions};
use crate::state::{ModuleState, StateConfig};
use crate::unattended::http::HttpConfig;
use crate::unattended::runner::{self, Plan, Target};
use crate::unattended::status::Agent;

/// Runs push or pull rounds as `plan` says; `http` serves status and triggers meanwhile.
/// `state` is a pull's state directory (`--state-dir`), checked before the first round.
#[allow(clippy::too_many_arguments)] // The command's validated parts, each used once.
pub(super) fn run(
    direction: Direction,
    local: &Path,
    url: &Url,
    net: &NetFlags,
    round: &RoundFlags,
    plan: &Plan,
    http: Option<(std::net::SocketAddr, HttpConfig)>,
    state: Option<&StateConfig>,
) -> anyhow::Result<ExitCode> {
    prepare_state(state, &url.module, local, round.dry_run)?;
    let opts = RemoteOptions {
        state: state.cloned(),
        ..net.remote(round.options(NETWORK_COMPRESS_LEVEL))
    };
    let rt = super::runtime()?;
    super::exit_on_sigterm(&rt);
    let (agent, triggered) = Agent::new(true);
    if let Some(id) = &opts.identity {
        id.report_to(agent.clone());
    }
    if let Some((addr, cfg)) = http {
        super::serve_status(&rt, addr, &agent, cfg)?;
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
    let target = Target { direction, local, url };
    let mut one = |from: &Path| one_round(&rt, direction, from, url, &opts, round, &agent, None);
    let mut last = ExitCode::SUCCESS;
    let mut show = |r: &Report| -> anyhow::Result<()> {
        last = super::exit::of_report(r);
        if round.json {
            println!("{}", serde_json::to_string_pretty(r)?);
        } else {
            print_summary(r, round.dry_run);
        }
        Ok(())
    };
    runner::run(plan, &target, &agent, &triggered, &mut one, &mut show)?;
    // The last round's: 23 when it was partial.
    Ok(last)
}

/// What became of one module of a `--list` job: a line of the summary and an object of the
/// `--json` document.
#[derive(Debug, serde::Serialize)]
pub(super) struct ModuleResult {
    /// The module name.
    pub module: String,
    /// The local directory.
    pub directory: PathBuf,
    /// `ferry://HOST:PORT/MODULE`.
    pub url: String,
    /// The round ran and was complete (exit code 0).
    pub ok: bool,
    /// This module's exit code, as a one-module push or pull would have exited.
    pub exit_code: u8,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The round's report, when the round ran (a partial round too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

/// The `--json` document of a `--list` job.
#[derive(Debug, serde::Serialize)]
pub(super) struct ManyResult<'a> {
    pub direction: &'static str,
    /// The job's exit code: the worst of the modules' ([`worst`]).
    pub exit_code: u8,
    pub modules: &'a [ModuleResult],
    /// With `--group`: whether a generation was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a super::group::GroupResult>,
}

/// Exit codes from best to worst. A round that ran but is incomplete (23) is closest to
/// success; a transient failure (6) passes by itself; a local I/O error (7) and a peer's
/// refusal or failure (5) need someone to look at one side; a version (4), certificate (3)
/// or usage (2) error stops every module until a person changes the setup.
const SEVERITY: [u8; 8] = [
    0,
    exit::PARTIAL,
    exit::TRANSIENT,
    exit::LOCAL_IO,
    exit::PEER,
    exit::VERSION,
    exit::AUTH,
    exit::USAGE,
];

/// The worse of two exit codes by [`SEVERITY`]; a code not listed there is the worst.
pub(super) fn worst(a: u8, b: u8) -> u8 {
    let rank = |c| SEVERITY.iter().position(|&s| s == c).unwrap_or(SEVERITY.len());
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Checks, before the first round, that a pull's state directory can keep `module`'s state
/// for the data at `local` (as `ferry serve` checks its modules at start-up), and remembers
/// where that data lives (for `ferry promote`). Nothing to check without one, or for a dry
/// run, which records nothing.
///
/// # Errors
/// Why snapshots of the configured kind cannot work there.
fn prepare_state(
    state: Option<&StateConfig>,
    module: &str,
    local: &Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let Some(st) = state.filter(|_| !dry_run) else { return Ok(()) };
    ModuleState::new(&st.dir, module)
        .prepare(local, &st.snapshotter)
        .with_context(|| format!("--state-dir for module {module:?}"))
}

/// `ferry push|pull --list`: one round per module, `jobs` at a time, each over its own
/// connection; a failed module does not stop the others. `plans[i]` is `list[i]`'s plan
/// (once; its retries, hooks and source image). With `state` (a pull's `--state-dir`) each
/// module keeps its own state there under its name.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_many(
    direction: Direction,
    server: &Url,
    list: &[ListEntry],
    plans: &[Plan],
    jobs: usize,
    check: bool,
    net: &NetFlags,
    round: &RoundFlags,
    state: Option<&StateConfig>,
) -> anyhow::Result<ExitCode> {
    let dir_name = if direction == Direction::Pull { "pull" } else { "push" };
    if check {
        for e in list {
            let url = module_url(server, &e.name);
            match direction {
                Direction::Pull => println!("pull {}: {url} -> {}", e.name, e.dir.display()),
                _ => println!("push {}: {} -> {url}", e.name, e.dir.display()),
            }
        }
        println!("{} module(s), {} at a time; nothing was run", list.len(), jobs.min(list.len()));
        return Ok(ExitCode::SUCCESS);
    }
    let opts = RemoteOptions {
        state: state.cloned(),
        ..net.remote(round.options(NETWORK_COMPRESS_LEVEL))
    };
    // Progress bars of concurrent rounds would overwrite each other; each module's summary
    // line says what happened.
    let round = RoundFlags { no_progress: true, ..round.clone() };
    let rt = super::runtime()?;
    super::exit_on_sigterm(&rt);
    // SIGUSR1's default action ends the process; a one-module agent takes it as a trigger.
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else { return };
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: ignored with --list (every module runs once)");
        }
    });
    let results = run_modules(&rt, direction, server, list, plans, None, jobs, &opts, &round);
    let code = results.iter().fold(0, |w, r| worst(w, r.exit_code));
    if round.json {
        let doc =
            ManyResult { direction: dir_name, exit_code: code, modules: &results, group: None };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &results {
            println!("{}", summary_line(r));
        }
        let ok = results.iter().filter(|r| r.ok).count();
        println!(
            "{} module(s): {ok} ok, {} not; exit code {code}",
            results.len(),
            results.len() - ok
        );
    }
    Ok(ExitCode::from(code))
}

/// The rounds of a `--list` job: `list[i]` with `plans[i]`, `jobs` at a time; each reads
/// from `read_from[i]` when given (a group's source image) instead of its directory.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_modules(
    rt: &tokio::runtime::Runtime,
    direction: Direction,
    server: &Url,
    list: &[ListEntry],
    plans: &[Plan],
    read_from: Option<&[PathBuf]>,
    jobs: usize,
    opts: &RemoteOptions,
    round: &RoundFlags,
) -> Vec<ModuleResult> {
    let dir_name = if direction == Direction::Pull { "pull" } else { "push" };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ModuleResult>>> =
        Mutex::new((0..list.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, list.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (Some(e), Some(plan)) = (list.get(i), plans.get(i)) else { return };
                let url = module_url(server, &e.name);
                let from = read_from.and_then(|r| r.get(i)).map(PathBuf::as_path);
                tracing::info!("module {}: {dir_name} starts ({})", e.name, e.dir.display());
                let r = one_module(rt, direction, e, &url, plan, from, opts, round);
                match &r.error {
                    None => tracing::info!("module {}: done (exit {})", e.name, r.exit_code),
                    Some(err) => {
                        tracing::error!("module {}: failed (exit {}): {err}", e.name, r.exit_code)
                    }
                }
                crate::lock(&results)[i] = Some(r);
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().flatten().collect()
}

/// One module of a `--list` job, retried as its plan says; it reads from `from` when given.
#[allow(clippy::too_many_arguments)]
fn one_module(
    rt: &tokio::runtime::Runtime,
    direction: Direction,
    e: &ListEntry,
    url: &Url,
    plan: &Plan,
    from: Option<&Path>,
    opts: &RemoteOptions,
    round: &RoundFlags,
) -> ModuleResult {
    let (agent, triggered) = Agent::new(false);
    let target = Target { direction, local: &e.dir, url };
    let mut report = None;
    let r = prepare_state(opts.state.as_ref(), &e.name, &e.dir, round.dry_run).and_then(|()| {
        runner::run(
            plan,
            &target,
            &agent,
            &triggered,
            &mut |dir: &Path| {
                let dir = from.unwrap_or(dir);
                one_round(rt, direction, dir, url, opts, round, &agent, Some(&e.name))
            },
            &mut |r: &Report| {
                report = Some(r.clone());
                Ok(())
            },
        )
    });
    let (exit_code, error) = match &r {
        Ok(()) => (report.as_ref().map_or(0, |r| if r.partial { exit::PARTIAL } else { 0 }), None),
        Err(err) => (exit::classify(err), Some(exit::explain(err))),
    };
    ModuleResult {
        module: e.name.clone(),
        directory: e.dir.clone(),
        url: url.to_string(),
        ok: exit_code == 0,
        exit_code,
        error,
        report,
    }
}

/// `NAME: ok: ...` or `NAME: failed (exit N): why`, one line per module.
pub(super) fn summary_line(r: &ModuleResult) -> String {
    let stats = |rep: &Report| {
        format!(
            "{} new, {} changed, {} deleted, {} literal in {:.1} s",
            rep.stats.files_new,
            rep.stats.files_changed,
            rep.stats.files_deleted,
            human_bytes(rep.stats.literal_bytes),
            rep.elapsed_secs
        )
    };
    match (&r.error, &r.report) {
        (Some(e), _) => format!("{}: failed (exit {}): {e}", r.module, r.exit_code),
        (None, Some(rep)) if rep.partial => {
            format!("{}: partial (exit {}): {}", r.module, r.exit_code, stats(rep))
        }
        (None, Some(rep)) => format!("{}: ok: {}", r.module, stats(rep)),
        (None, None) => format!("{}: ok", r.module),
    }
}

/// One network round with its progress display; `module` prefixes its itemized lines.
#[allow(clippy::too_many_arguments)]
fn one_round(
    rt: &tokio::runtime::Runtime,
    direction: Direction,
    local: &Path,
    url: &Url,
    opts: &RemoteOptions,
    round: &RoundFlags,
    agent: &Arc<Agent>,
    module: Option<&str>,
) -> Result<Report, RemoteError> {
    let progress = Progress::new(!round.no_progress);
    let on_item: Box<dyn FnMut(&Itemized) + Send> = Box::new(
        progress
            .item_printer(round.itemize(), module.map(|m| format!("{m}: ")).unwrap_or_default()),
    );
    let mut show = progress.callback();
    let live = agent.clone();
    let (every, mut shown) = (progress.every, Instant::now());
    // The status gets progress every second; the display keeps its own pace.
    let on_progress: Box<dyn FnMut(&DriverProgress) + Send> = Box::new(move |p| {
        live.progress(p);
        if shown.elapsed() >= every {
            shown = Instant::now();
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
        // A pull with --state-dir recorded the round here: its status and metrics say what
        // the state directory did, as a server's do for a pushed round.
        if opts.state.is_some() {
            if let Some(CommitReport::Recorded { snapshot, .. }) = &report.commit {
                agent.snapshot_taken(snapshot);
            }
        }
        if let Some(c) = &report.signature_cache {
            agent.signature_cache(c);
        }
    }
    r
}

/// `ferry bench --peer`.
pub(super) fn bench(
    peer: &Url,
    size_mib: u64,
    sync_mib: u64,
    json: bool,
    net: &NetFlags,
) -> anyhow::Result<ExitCode> {
    let opts = net.remote(SyncOptions::default());
    let r = super::runtime()?.block_on(run_bench(peer, &opts, size_mib << 20, sync_mib << 20))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
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
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_exit_code_follows_the_documented_order() {
        let fold = |codes: &[u8]| codes.iter().fold(0, |w, &c| worst(w, c));
        assert_eq!(fold(&[0, 0]), 0);
        assert_eq!(fold(&[0, 23, 0]), 23);
        assert_eq!(fold(&[23, 6]), 6);
        assert_eq!(fold(&[7, 6, 23]), 7);
        assert_eq!(fold(&[5, 7]), 5);
        assert_eq!(fold(&[3, 4, 5]), 3);
        assert_eq!(fold(&[2, 3]), 2);
        assert_eq!(fold(&[0, 99, 2]), 99, "an unknown code is the worst");
    }
}
