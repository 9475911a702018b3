//! The command line: flags (syntax only, [`flags`]) → validated configuration ([`config`]) →
//! commands, one file per group → an exit code ([`exit`]), with what a person sees in
//! [`output`].
//!
//! ```text
//!   flags.rs ─▶ config.rs ─▶ setup.rs (sync, init, status), serve.rs,
//!                            replicate.rs (push, pull, bench),
//!                            snapshots.rs (list, verify, delete, restore, promote), demo.rs,
//!                            k8s.rs (k8s render)
//!   exit.rs: error → exit code, explanation, hint        output.rs: progress, summaries
//! ```

pub mod config;
pub mod demo;
pub mod exit;
pub mod flags;
mod group;
mod ids;
mod k8s;
pub mod output;
mod replicate;
mod serve;
mod setup;
mod snapshots;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use self::flags::{Cli, Command};
use crate::unattended::status::Agent;

/// The `ferry` binary: parses the command line, runs it, logs a failure on stderr with what
/// to do about it, and returns the exit code the README promises.
pub fn main() -> ExitCode {
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
            tracing::error!("{}", exit::explain(&e));
            if let Some(hint) = exit::hint(&e) {
                tracing::error!("hint: {hint}");
            }
            ExitCode::from(exit::classify(&e))
        }
    }
}

/// Runs one parsed command line.
///
/// # Errors
/// Whatever the command failed with; [`exit::classify`] gives its exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sync(a) => setup::sync(a),
        Command::K8s { action: flags::K8sAction::Render(f) } => k8s::render(&f),
        Command::Demo { dir, files, big_mib } => demo::run(&dir, files, big_mib),
        Command::Init(f) => setup::init(&f),
        Command::Status { status_file, json } => setup::status(&status_file, json),
        Command::Serve(f) => serve::run(f.validate()?),
        Command::Snapshots { action } => snapshots::run(action),
        Command::Restore { snap, to, hardlinks } => snapshots::restore(&snap, &to, hardlinks),
        Command::Promote { snap, data } => snapshots::promote(&snap, data),
        Command::Push { src, url, many, net, round, when, image } => {
            let direction = crate::net::Direction::Push;
            match many.job(src, url, &when, &net)? {
                config::Job::One { local, url } => {
                    let image = image.image(&local)?;
                    replicate::run(
                        direction,
                        &local,
                        &url,
                        &net,
                        &round,
                        &when.plan(image),
                        when.http()?,
                        None,
                    )
                }
                config::Job::Many { server, list, jobs, check, group: Some(g) } => {
                    let mut images = Vec::with_capacity(list.len());
                    for e in &list {
                        images.push(image.image(&e.dir)?);
                    }
                    let plan = when.plan(None);
                    group::run_group(&server, &list, &g, &plan, &images, jobs, check, &net, &round)
                }
                config::Job::Many { server, list, jobs, check, group: None } => {
                    let mut plans = Vec::with_capacity(list.len());
                    for e in &list {
                        plans.push(when.plan(image.image(&e.dir)?));
                    }
                    replicate::run_many(
                        direction, &server, &list, &plans, jobs, check, &net, &round, None,
                    )
                }
            }
        }
        Command::Pull { url, dst, many, net, round, when, state } => {
            let direction = crate::net::Direction::Pull;
            let state = state.state()?;
            if let Some(crate::state::snapshot::Snapshotter::Csi(_)) =
                state.as_ref().map(|s| &s.snapshotter)
            {
                // The CSI snapshotter needs the API client `ferry serve` connects at start-up.
                return Err(exit::Usage(
                    "--snapshot csi is for ferry serve; a pulling destination takes the other kinds"
                        .into(),
                )
                .into());
            }
            match many.job(dst, Some(url), &when, &net)? {
                config::Job::One { local, url } => {
                    if state.is_some() {
                        crate::state::check_module_name(&url.module).map_err(exit::Usage)?;
                    }
                    let plan = when.plan(None);
                    replicate::run(
                        direction,
                        &local,
                        &url,
                        &net,
                        &round,
                        &plan,
                        when.http()?,
                        state.as_ref(),
                    )
                }
                config::Job::Many { group: Some(_), .. } => Err(exit::Usage(
                    "--group goes with push only for now: pull --list records no generation".into(),
                )
                .into()),
                config::Job::Many { server, list, jobs, check, group: None } => {
                    let plans = vec![when.plan(None); list.len()];
                    replicate::run_many(
                        direction,
                        &server,
                        &list,
                        &plans,
                        jobs,
                        check,
                        &net,
                        &round,
                        state.as_ref(),
                    )
                }
            }
        }
        Command::Bench { peer, size_mib, sync_mib, json, net } => {
            replicate::bench(&peer, size_mib, sync_mib, json, &net)
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

/// The async runtime of the network commands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferry-net")
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Ends the process with exit code 143 on SIGTERM. In a container Ferry is PID 1, which the
/// kernel shields from signals it has no handler for: without this, a pod's deletion waits
/// out its grace period and ends in SIGKILL. Stopping at once is safe: a cut round leaves
/// only verified files and journaled partial ones, and the next round resumes.
fn exit_on_sigterm(rt: &tokio::runtime::Runtime) {
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else { return };
        if term.recv().await.is_some() {
            tracing::info!("SIGTERM: stopping now; an interrupted round resumes next time");
            std::process::exit(143);
        }
    });
}

/// Serves `agent`'s status, metrics and trigger over HTTP on `addr` (`--http`).
fn serve_status(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    agent: &Arc<Agent>,
    cfg: crate::unattended::http::HttpConfig,
) -> anyhow::Result<()> {
    let also = if cfg.token.is_some() { ", POST /trigger (with its token)" } else { "" };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("--http {addr}: cannot listen"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!("status on http://{bound}/status, metrics on /metrics{also}");
    rt.spawn(crate::unattended::http::serve_http(listener, agent.clone(), cfg));
    Ok(())
}
