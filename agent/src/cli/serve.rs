//! `ferry serve`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferry_transport::net::{Link, LinkKind};

use super::config::Serve;
use super::exit::Usage;
use crate::net::credentials::IdentityDir;
use crate::net::{serve_link, serve_watching, BusyHandle, RemoteError};
use crate::state::snapshot::csi::Csi;
use crate::state::snapshot::Snapshotter;
use crate::state::ModuleState;
use crate::unattended::status::Agent;

/// Serves the configured modules until the process ends (or one round with `--stdio`).
pub(super) fn run(s: Serve) -> anyhow::Result<ExitCode> {
    let mut cfg = s.config;
    if let Some(state) = &cfg.state {
        // Refuse at start-up, not after the first round, when snapshots cannot work.
        for m in &cfg.modules {
            ModuleState::new(&state.dir, &m.name)
                .prepare(&m.path, &state.snapshotter)
                .with_context(|| format!("--state-dir for module {:?}", m.name))?;
        }
    }
    if let Some(md) = &cfg.modules_dir {
        // Its subdirectories come and go while serving; the directory itself must be there.
        crate::fs::Root::open(&md.dir)
            .with_context(|| format!("--modules-dir {}", md.dir.display()))?;
    }
    let rt = super::runtime()?;
    super::exit_on_sigterm(&rt);
    if let Some(addr) = s.http {
        let (agent, _) = Agent::new(false);
        let http = crate::unattended::http::HttpConfig { token: None, limits: s.http_limits };
        super::serve_status(&rt, addr, &agent, http)?;
        cfg.agent = Some(agent);
    }
    if let Some(Snapshotter::Csi(csi)) = cfg.state.as_ref().map(|s| &s.snapshotter) {
        // No configuration at all is a mistake to refuse now; an API server that is away
        // or refuses is a round's snapshot failure, reported then.
        csi.connect(rt.handle()).context("--snapshot csi")?;
        csi.check();
        if let (Some(agent), Some(state)) = (cfg.agent.clone(), &cfg.state) {
            // What the records say until a round says more: the newest ready one of any module.
            let newest = cfg
                .modules
                .iter()
                .filter_map(|m| {
                    Csi::latest_ready(&ModuleState::new(&state.dir, &m.name).snapshots())
                })
                .max();
            if let Some((_, name)) = newest {
                agent.latest_image(&name);
            }
            csi.on_outcome(move |o| agent.csi_snapshot(o));
        }
    }
    if s.stdio {
        let link = Link::from_streams(
            tokio::io::stdin(),
            tokio::io::stdout(),
            LinkKind::Stdio,
            "stdio".into(),
        );
        let busy = Arc::new(BusyHandle::default());
        let r = {
            let _guard = rt.enter();
            rt.block_on(serve_link(link, &cfg, &busy))
        };
        // tokio reads stdin on a blocking thread that may still be waiting for a client that
        // fell silent; dropping the runtime would wait for it forever.
        rt.shutdown_background();
        r?;
        return Ok(ExitCode::SUCCESS);
    }
    let dir = s.identity.ok_or_else(|| Usage("--identity DIR is required".into()))?;
    let identity = IdentityDir::new(dir);
    let watched = identity.subscribe().map_err(RemoteError::Identity)?;
    if let Some(agent) = &cfg.agent {
        identity.report_to(agent.clone());
    }
    if !s.identity_poll.is_zero() {
        rt.spawn(identity.poll_every(s.identity_poll));
    }
    for m in &cfg.modules {
        tracing::info!("module {:?} -> {} ({:?})", m.name, m.path.display(), m.access);
    }
    if let Some(md) = &cfg.modules_dir {
        tracing::info!(
            "modules: the subdirectories of {} ({:?}), looked up at each request",
            md.dir.display(),
            md.access
        );
    }
    let listen = s.listen;
    rt.block_on(serve_watching(listen, watched, cfg, |addr| {
        tracing::info!("listening on {addr} (QUIC and TLS over TCP)");
        // Tests and scripts wait for this line on stdout.
        println!("listening on {addr}");
    }))
    .map_err(|e| RemoteError::Connect { addr: listen.to_string(), source: e })?;
    Ok(ExitCode::SUCCESS)
}
