//! `ferry push`, `ferry pull` and `ferry bench --peer`: the client side of the network.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::session::Itemized;

use super::config::NETWORK_COMPRESS_LEVEL;
use super::flags::{NetFlags, RoundFlags};
use super::output::{human_bytes, print_summary, Progress};
use crate::net::{run_bench, run_client, Direction, RemoteError, RemoteOptions, Url};
use crate::round::driver::Progress as DriverProgress;
use crate::round::{Report, SyncOptions};
use crate::unattended::http::HttpConfig;
use crate::unattended::runner::{self, Plan, Target};
use crate::unattended::status::Agent;

/// Runs push or pull rounds as `plan` says; `http` serves status and triggers meanwhile.
pub(super) fn run(
    direction: Direction,
    local: &Path,
    url: &Url,
    net: &NetFlags,
    round: &RoundFlags,
    plan: &Plan,
    http: Option<(std::net::SocketAddr, HttpConfig)>,
) -> anyhow::Result<ExitCode> {
    let opts = net.remote(round.options(NETWORK_COMPRESS_LEVEL));
    let rt = super::runtime()?;
    super::exit_on_sigterm(&rt);
    let (agent, triggered) = Agent::new(true);
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
    let mut one = |from: &Path| one_round(&rt, direction, from, url, &opts, round, &agent);
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

/// One network round with its progress display.
fn one_round(
    rt: &tokio::runtime::Runtime,
    direction: Direction,
    local: &Path,
    url: &Url,
    opts: &RemoteOptions,
    round: &RoundFlags,
    agent: &Arc<Agent>,
) -> Result<Report, RemoteError> {
    let progress = Progress::new(!round.no_progress);
    let on_item: Box<dyn FnMut(&Itemized) + Send> =
        Box::new(progress.item_printer(round.itemize()));
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
