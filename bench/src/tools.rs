//! The tools `compare` runs, their exact command lines, and what their statistics say.
//!
//! | tool | command |
//! | --- | --- |
//! | [`Tool::FerrySync`] | `ferry sync --delete --json --no-progress SRC DST` (both sides in one process) |
//! | [`Tool::Rsync`] | `rsync -aHAX --delete --no-whole-file --stats SRC/ DST/` (local: rsync forks its receiver) |
//! | [`Tool::RsyncDaemon`] | `rsync -aHAX --delete --stats SRC/ rsync://ADDR:PORT/ferrybench/` against `rsync --daemon --no-detach`, one daemon per run, module path = DST |
//! | [`Tool::Cp`] | `cp -a SRC DST`: the reference floor for initial copies only |
//! | [`Tool::FerryPushQuic`], [`Tool::FerryPushTcp`] | `ferry push --delete --json --no-progress --transport quic\|tcp --identity CREDS/source SRC ferry://ADDR:PORT/ferrybench` against `ferry serve --listen ADDR:0 --identity CREDS/destination --module ferrybench=DST`, one server per run |
//! | [`Tool::FerryPush`], [`Tool::FerryBaseline`] | the same without `--transport` (the default), the server with `--state-dir STATE` (next to DST); when DST holds the previous round, that round is pushed first, untimed, by another server on the same STATE, so the measured push finds its snapshot as a CronJob's push does; the baseline with the `--ferry-baseline` binary |
//! | [`Tool::FerryEvery`] | a round inside a long-running `ferry push --every` agent (`crate::every`) |
//! | [`Tool::VolsyncStyle`], [`Tool::PvMigrateStyle`] | the rsync-based movers ([`crate::peers`]) |
//!
//! ADDR is 127.0.0.1 on loopback, or the destination namespace's address in the network mode
//! ([`NetPlaces`]), where clients run in the source namespace and servers in the destination
//! namespace (`ip netns exec NS` in front of the measuring wrapper).
//!
//! Client/server tools ([`Tool::has_server`]) start their server before the run, under the
//! measuring wrapper in hold mode ([`Held`]), and stop it once the client has exited, so the
//! server's (destination side's) CPU time and peak RSS are measured apart from the client's
//! (source side's). The Ferry pair's credentials (`CREDS`) are made once per comparison by
//! `ferry init` ([`init_credentials`]).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ferry_transport::net::LinkKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compare::VethBytes;
use crate::measure::{self, Held, Measured, Usage};

/// A tool in the comparison.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    /// `ferry sync`, local.
    FerrySync,
    /// rsync, local, delta transfer forced.
    Rsync,
    /// rsync against a plain rsync daemon (unencrypted: the floor).
    RsyncDaemon,
    /// `cp -a`: the floor for initial copies (local only).
    Cp,
    /// `ferry push --transport quic` to `ferry serve` without a state directory.
    FerryPushQuic,
    /// `ferry push --transport tcp` to `ferry serve` without a state directory.
    FerryPushTcp,
    /// Ferry as deployed: one default `ferry push` per round (a CronJob) to `ferry serve
    /// --state-dir`.
    FerryPush,
    /// Ferry as deployed as a sidecar: a round inside a long-running `ferry push --every`
    /// agent, to `ferry serve --state-dir`.
    FerryEvery,
    /// [`Tool::FerryPush`] with another `ferry` binary (`--ferry-baseline`): a before/after
    /// of a change in one alternating run.
    FerryBaseline,
    /// VolSync's rsync-TLS mover: `rsync -aAhHSxz` into an rsync daemon behind stunnel
    /// TLS-PSK, then its `--delete --ignore-existing --ignore-non-existing` pass.
    VolsyncStyle,
    /// pv-migrate's rsync mover: `rsync -az --delete` over ssh.
    PvMigrateStyle,
}

impl Tool {
    /// Every tool, in report order.
    pub const ALL: [Tool; 11] = [
        Tool::FerryPush,
        Tool::FerryEvery,
        Tool::FerryBaseline,
        Tool::FerrySync,
        Tool::FerryPushQuic,
        Tool::FerryPushTcp,
        Tool::Rsync,
        Tool::RsyncDaemon,
        Tool::VolsyncStyle,
        Tool::PvMigrateStyle,
        Tool::Cp,
    ];

    /// The tools of the loopback table, when none are named.
    pub const LOOPBACK: [Tool; 8] = [
        Tool::FerryPush,
        Tool::FerrySync,
        Tool::FerryPushQuic,
        Tool::FerryPushTcp,
        Tool::Rsync,
        Tool::RsyncDaemon,
        Tool::Cp,
        Tool::FerryEvery,
    ];

    /// The tools of the network table (the published one), when none are named.
    pub const NETWORK: [Tool; 5] = [
        Tool::FerryPush,
        Tool::FerryEvery,
        Tool::RsyncDaemon,
        Tool::VolsyncStyle,
        Tool::PvMigrateStyle,
    ];

    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Tool::FerrySync => "ferry sync",
            Tool::Rsync => "rsync",
            Tool::RsyncDaemon => "rsync daemon",
            Tool::Cp => "cp -a",
            Tool::FerryPushQuic => "ferry push QUIC",
            Tool::FerryPushTcp => "ferry push TCP",
            Tool::FerryPush => "ferry push",
            Tool::FerryEvery => "ferry --every round",
            Tool::FerryBaseline => "ferry (baseline)",
            Tool::VolsyncStyle => "VolSync-style",
            Tool::PvMigrateStyle => "pv-migrate-style",
        }
    }

    /// Short name under a chart bar.
    pub fn short(self) -> &'static str {
        match self {
            Tool::FerrySync => "sync",
            Tool::Rsync => "rsync",
            Tool::RsyncDaemon => "rsyncd",
            Tool::Cp => "cp -a",
            Tool::FerryPushQuic => "quic",
            Tool::FerryPushTcp => "tcp",
            Tool::FerryPush => "ferry",
            Tool::FerryEvery => "every",
            Tool::FerryBaseline => "base",
            Tool::VolsyncStyle => "volsync",
            Tool::PvMigrateStyle => "pv-mig",
        }
    }

    /// The command line, for the report.
    pub fn command(self) -> &'static str {
        match self {
            Tool::FerrySync => "ferry sync --delete --json --no-progress SRC DST",
            Tool::Rsync => "rsync -aHAX --delete --no-whole-file --stats SRC/ DST/",
            Tool::RsyncDaemon => {
                "rsync -aHAX --delete --stats SRC/ rsync://ADDR:PORT/ferrybench/ \
                 (rsync --daemon --no-detach on the destination side, module path DST)"
            }
            Tool::Cp => "cp -a SRC DST",
            Tool::FerryPushQuic => {
                "ferry push --delete --json --no-progress --transport quic --identity CREDS/source \
                 SRC ferry://ADDR:PORT/ferrybench (ferry serve --listen ADDR:0 \
                 --identity CREDS/destination --module ferrybench=DST)"
            }
            Tool::FerryPushTcp => {
                "ferry push --delete --json --no-progress --transport tcp --identity CREDS/source \
                 SRC ferry://ADDR:PORT/ferrybench (ferry serve --listen ADDR:0 \
                 --identity CREDS/destination --module ferrybench=DST)"
            }
            Tool::FerryPush | Tool::FerryBaseline => {
                "ferry push --delete --json --no-progress --identity CREDS/source SRC \
                 ferry://ADDR:PORT/ferrybench (ferry serve --listen ADDR:0 --identity \
                 CREDS/destination --module ferrybench=DST --state-dir STATE, fresh STATE per run)"
            }
            Tool::FerryEvery => {
                "ferry push --every 24h --delete --json --no-progress --status-file F --identity \
                 CREDS/source SRC ferry://ADDR:PORT/ferrybench (same server as ferry push); a \
                 warm-up round first, then the measured round, started by SIGUSR1; its time is the \
                 status file's last_duration_secs"
            }
            Tool::VolsyncStyle => crate::peers::VOLSYNC_COMMAND,
            Tool::PvMigrateStyle => crate::peers::PV_MIGRATE_COMMAND,
        }
    }

    /// For `ferry push` with an explicit transport: its `--transport` value and the link it
    /// must report having used.
    pub fn transport(self) -> Option<(&'static str, LinkKind)> {
        match self {
            Tool::FerryPushQuic => Some(("quic", LinkKind::Quic)),
            Tool::FerryPushTcp => Some(("tcp", LinkKind::Tcp)),
            _ => None,
        }
    }

    /// Whether this is Ferry.
    pub fn is_ferry(self) -> bool {
        matches!(
            self,
            Tool::FerrySync
                | Tool::FerryPushQuic
                | Tool::FerryPushTcp
                | Tool::FerryPush
                | Tool::FerryEvery
                | Tool::FerryBaseline
        )
    }

    /// Whether it runs `ferry push` against `ferry serve` (and needs the pair's credentials).
    pub fn is_ferry_push(self) -> bool {
        self.is_ferry() && self != Tool::FerrySync
    }

    /// Whether it only makes sense for a copy into an empty destination.
    pub fn initial_only(self) -> bool {
        self == Tool::Cp
    }

    /// Whether both sides run in one place (no network between them): these do not take part
    /// in the network mode.
    pub fn is_local(self) -> bool {
        matches!(self, Tool::FerrySync | Tool::Rsync | Tool::Cp)
    }

    /// Whether it has a server process measured separately.
    pub fn has_server(self) -> bool {
        !self.is_local()
    }
}

/// Where the two sides run in the network mode: two network namespaces joined by a veth pair
/// (see `compare::net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlaces {
    /// The source side's namespace.
    pub src_ns: String,
    /// The destination side's namespace.
    pub dst_ns: String,
    /// The source side's veth interface.
    pub src_if: String,
    /// The destination side's veth interface.
    pub dst_if: String,
    /// The source side's address.
    pub src_addr: Ipv4Addr,
    /// The destination side's address: servers listen there.
    pub dst_addr: Ipv4Addr,
}

/// Transfer figures a tool reports about itself (`None`: it does not say).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Bytes sent from the source side to the destination side (Ferry: framed messages, for
    /// `ferry push` as written to the connection, before TLS or QUIC framing; rsync: "Total
    /// bytes sent" of the client, which is the sender).
    pub wire_sent: Option<u64>,
    /// Bytes sent back from the destination side.
    pub wire_received: Option<u64>,
    /// File data sent as literals (Ferry: before compression).
    pub literal: Option<u64>,
    /// File data rebuilt from the destination's old copies.
    pub matched: Option<u64>,
    /// Ferry: segment payload bytes as sent, after compression.
    pub payload: Option<u64>,
    /// Ferry: signature bytes sent by the destination.
    pub signature: Option<u64>,
    /// Files whose content was sent (Ferry: new + changed; rsync: "regular files transferred").
    pub files_transferred: Option<u64>,
}

impl Transfer {
    /// Sent + received, when both are known.
    pub fn wire_total(&self) -> Option<u64> {
        Some(self.wire_sent? + self.wire_received?)
    }
}

fn stat_number(text: &str, label: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.trim().strip_prefix(label))?;
    // rsync groups digits ("1,234,567", or "1.234.567" in some locales).
    let token = rest.split_whitespace().next()?;
    let digits: String = token.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads rsync's `--stats` block.
///
/// # Errors
/// When the output has no "Total bytes sent" line.
pub fn parse_rsync_stats(text: &str) -> Result<Transfer> {
    let t = Transfer {
        wire_sent: stat_number(text, "Total bytes sent:"),
        wire_received: stat_number(text, "Total bytes received:"),
        literal: stat_number(text, "Literal data:"),
        matched: stat_number(text, "Matched data:"),
        payload: None,
        signature: None,
        files_transferred: stat_number(text, "Number of regular files transferred:"),
    };
    ensure!(t.wire_sent.is_some(), "rsync printed no --stats:\n{}", tail(text, 20));
    Ok(t)
}

/// Reads `ferry sync --json` (or `ferry push --json`, the same shape): `wire_bytes_sent`,
/// `wire_bytes_received` and the `stats` object's `literal_bytes`, `matched_bytes`,
/// `payload_bytes`, `signature_bytes`, `files_new`, `files_changed`.
///
/// # Errors
/// When it is not JSON, has no wire counters, or reports failed files.
pub fn parse_ferry_json(text: &str) -> Result<Transfer> {
    let v: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("ferry --json printed something else:\n{}", tail(text, 20)))?;
    let u = |p: &str| v.pointer(p).and_then(Value::as_u64);
    let failed = u("/stats/files_failed").unwrap_or(0);
    ensure!(failed == 0, "ferry reports {failed} failed files");
    let t = Transfer {
        wire_sent: u("/wire_bytes_sent"),
        wire_received: u("/wire_bytes_received"),
        literal: u("/stats/literal_bytes"),
        matched: u("/stats/matched_bytes"),
        payload: u("/stats/payload_bytes"),
        signature: u("/stats/signature_bytes"),
        files_transferred: Some(
            u("/stats/files_new").unwrap_or(0) + u("/stats/files_changed").unwrap_or(0),
        ),
    };
    ensure!(t.wire_sent.is_some(), "ferry --json has no wire_bytes_sent:\n{}", tail(text, 20));
    Ok(t)
}

/// The `transport` field of `ferry push --json` ("QUIC", "TLS over TCP"), if there is one.
pub fn ferry_json_transport(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    v.get("transport")?.as_str().map(str::to_string)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// First line of `program --version`, or why it could not run.
pub fn version(program: &OsStr) -> Result<String, String> {
    match Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => {
            let out = String::from_utf8_lossy(&o.stdout);
            // rsync pads its version line with double spaces.
            Ok(out.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" "))
        }
        Ok(o) => Err(format!("`{} --version` failed ({})", program.to_string_lossy(), o.status)),
        Err(e) => Err(format!("cannot run {}: {e}", program.to_string_lossy())),
    }
}

/// rsync's version line.
///
/// # Errors
/// When rsync is not installed, with how to install it.
pub fn rsync_version() -> Result<String> {
    version(OsStr::new("rsync")).map_err(|e| {
        anyhow::anyhow!(
            "rsync is needed (it is compared against, and it checks every destination): {e}.\n\
             Install it: `apt-get install rsync` (Debian/Ubuntu), `dnf install rsync` \
             (Fedora/RHEL), `apk add rsync` (Alpine)"
        )
    })
}

/// What a tool run needs.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `ferry-bench` executable, which is also the measuring wrapper.
    pub wrapper: PathBuf,
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// Where report files, daemon configurations and logs go.
    pub scratch: PathBuf,
    /// The credentials [`init_credentials`] made (`destination/` for `ferry serve`, `source/`
    /// for `ferry push`); the push tools need them.
    pub creds: Option<PathBuf>,
    /// The network mode's namespaces; `None`: everything on loopback.
    pub net: Option<NetPlaces>,
    /// `--ferry-baseline`: the other `ferry` binary of [`Tool::FerryBaseline`].
    pub baseline: Option<PathBuf>,
    /// The keys of the rsync-based movers ([`crate::peers::make_keys`]), when one runs.
    pub keys: Option<PathBuf>,
}

impl Env {
    /// The address servers listen on: the destination namespace's, or 127.0.0.1.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.net.as_ref().map_or(Ipv4Addr::LOCALHOST, |n| n.dst_addr)
    }

    /// The source side's namespace (network mode).
    pub fn src_ns(&self) -> Option<&str> {
        self.net.as_ref().map(|n| n.src_ns.as_str())
    }

    /// The destination side's namespace (network mode).
    pub fn dst_ns(&self) -> Option<&str> {
        self.net.as_ref().map(|n| n.dst_ns.as_str())
    }
}

/// The names the credentials are made for: what `ferry push` dials.
const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "localhost", crate::compare::net::DST_ADDR_TEXT];

/// Makes a pair's credentials for loopback and the network mode's destination address with
/// `ferry init --out DIR --name 127.0.0.1 --name localhost --name 10.231.7.2` (untimed, once per comparison), and returns `dir`.
///
/// # Errors
/// When `ferry init` cannot run or fails.
pub fn init_credentials(ferry: &Path, dir: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(ferry);
    cmd.arg("init").arg("--out").arg(dir);
    for name in SERVER_NAMES {
        cmd.args(["--name", name]);
    }
    let out = cmd.output().with_context(|| format!("running {} init", ferry.display()))?;
    ensure!(
        out.status.success(),
        "`{} init --out {}` failed ({}):\n{}",
        ferry.display(),
        dir.display(),
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr), 20)
    );
    Ok(dir.to_path_buf())
}

/// One run of a tool.
#[derive(Debug, Clone)]
pub struct ToolRun {
    /// The client (for local tools: the whole tool).
    pub client: Usage,
    /// The server, for tools that have one.
    pub server: Option<Usage>,
    /// What the tool says it moved.
    pub transfer: Transfer,
    /// What crossed the veth pair in the measured round, when the tool measured it itself
    /// (a round inside a long-running agent: not its warm-up); `None`: the harness reads the
    /// counters around the whole run.
    pub veth: Option<VethBytes>,
}

/// `path` with a trailing slash: rsync's "the contents of".
pub(crate) fn slash(path: &Path) -> OsString {
    let mut s = path.as_os_str().to_owned();
    s.push("/");
    s
}

pub(crate) fn args<const N: usize>(a: [&OsStr; N]) -> Vec<OsString> {
    a.iter().map(|s| s.to_os_string()).collect()
}

pub(crate) fn check(tool: Tool, m: &Measured) -> Result<()> {
    if !m.usage.success() {
        bail!(
            "{} failed ({}):\n{}\n{}",
            tool.label(),
            m.usage.describe_exit(),
            tail(&m.stderr, 30),
            tail(&m.stdout, 10)
        );
    }
    Ok(())
}

/// Runs `tool` from `src` into `dst` (which exists and is empty or holds the previous round;
/// for [`Tool::Cp`] it must not exist). `basis` is the tree `dst` holds before the run (`None`:
/// `dst` is empty): the long-running agent of [`Tool::FerryEvery`] replicates it in a warm-up
/// round before the measured one.
///
/// # Errors
/// When the tool fails or is not available.
pub fn run(env: &Env, tool: Tool, src: &Path, dst: &Path, basis: Option<&Path>) -> Result<ToolRun> {
    let o = |s: &'static str| OsStr::new(s);
    match tool {
        Tool::FerrySync => {
            let a = args([
                o("sync"),
                o("--delete"),
                o("--json"),
                o("--no-progress"),
                src.as_os_str(),
                dst.as_os_str(),
            ]);
            let m = measure::run(&env.wrapper, &env.scratch, &env.ferry, &a)?;
            check(tool, &m)?;
            Ok(ToolRun {
                client: m.usage,
                server: None,
                transfer: parse_ferry_json(&m.stdout)?,
                veth: None,
            })
        }
        Tool::Rsync => {
            let a = args([
                o("-aHAX"),
                o("--delete"),
                o("--no-whole-file"),
                o("--stats"),
                &slash(src),
                &slash(dst),
            ]);
            let m = measure::run(&env.wrapper, &env.scratch, "rsync", &a)?;
            check(tool, &m)?;
            Ok(ToolRun {
                client: m.usage,
                server: None,
                transfer: parse_rsync_stats(&m.stdout)?,
                veth: None,
            })
        }
        Tool::RsyncDaemon => {
            let daemon = RsyncDaemon::start(env, dst, "")?;
            let url = format!("rsync://{}:{}/{MODULE}/", env.server_ip(), daemon.port);
            let a = args([o("-aHAX"), o("--delete"), o("--stats"), &slash(src), OsStr::new(&url)]);
            let m = measure::run_in(env.src_ns(), &env.wrapper, &env.scratch, "rsync", &a);
            let server = daemon.held.finish()?;
            let m = m?;
            check(tool, &m)?;
            Ok(ToolRun {
                client: m.usage,
                server: Some(server),
                transfer: parse_rsync_stats(&m.stdout)?,
                veth: None,
            })
        }
        Tool::VolsyncStyle => crate::peers::volsync(env, src, dst),
        Tool::PvMigrateStyle => crate::peers::pv_migrate(env, src, dst),
        Tool::FerryEvery => crate::every::run(env, src, dst, basis),
        Tool::Cp => {
            if dst.exists() {
                fs::remove_dir(dst).with_context(|| {
                    format!("cp -a needs a missing destination; {} is not empty", dst.display())
                })?;
            }
            let a = args([o("-a"), src.as_os_str(), dst.as_os_str()]);
            let m = measure::run(&env.wrapper, &env.scratch, "cp", &a)?;
            check(tool, &m)?;
            Ok(ToolRun { client: m.usage, server: None, transfer: Transfer::default(), veth: None })
        }
        Tool::FerryPushQuic | Tool::FerryPushTcp | Tool::FerryPush | Tool::FerryBaseline => {
            push_once(env, tool, src, dst, basis)
        }
    }
}

/// The state directory of `ferry serve --state-dir` for destination `dst`: next to it, on the
/// destination's filesystem, fresh for every run.
pub(crate) fn state_dir_for(dst: &Path) -> PathBuf {
    let mut name = dst.file_name().map(OsStr::to_os_string).unwrap_or_default();
    name.push("-ferry-state");
    dst.with_file_name(name)
}

fn remove_dir_if_there(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// The `ferry` binary `tool` runs.
pub(crate) fn ferry_of(env: &Env, tool: Tool) -> Result<&Path> {
    if tool == Tool::FerryBaseline {
        env.baseline.as_deref().context("ferry (baseline) needs --ferry-baseline PATH")
    } else {
        Ok(&env.ferry)
    }
}

/// One `ferry push` against a fresh `ferry serve`: explicit transport and no state directory
/// for the QUIC/TCP tools; defaults and a state directory for the deployed ones. As deployed,
/// that state directory already holds the previous round: when `dst` holds `basis`, `basis`
/// is pushed first, untimed, by another server process on the same state directory, so the
/// measured round finds the snapshot of the tree it starts from (a CronJob's push finds the
/// last run's), not an empty store.
/// The arguments of one `ferry push` of `src` to `url` by `tool`: the measured push and its
/// untimed warm-up round are the same command.
fn push_args(tool: Tool, creds: &Path, src: &Path, url: &str) -> Vec<OsString> {
    let o = |s: &'static str| OsStr::new(s);
    let mut a = args([o("push"), o("--delete"), o("--no-progress")]);
    if let Some((flag, _)) = tool.transport() {
        a.extend(args([o("--transport"), o(flag)]));
    }
    a.extend(args([
        o("--identity"),
        creds.join("source").as_os_str(),
        src.as_os_str(),
        OsStr::new(url),
    ]));
    a
}

fn push_once(
    env: &Env,
    tool: Tool,
    src: &Path,
    dst: &Path,
    basis: Option<&Path>,
) -> Result<ToolRun> {
    let ferry = ferry_of(env, tool)?;
    let creds = env.creds.as_deref().context("the push tools need Env::creds")?;
    let state = (tool.transport().is_none()).then(|| state_dir_for(dst));
    let mut extra: Vec<OsString> = Vec::new();
    if let Some(state) = &state {
        remove_dir_if_there(state)?;
        extra.push("--state-dir".into());
        extra.push(state.as_os_str().to_owned());
    }
    if let (Some(_), Some(basis)) = (&state, basis) {
        let warm = FerryServe::start_with(env, ferry, creds, dst, &extra)?;
        let a = push_args(tool, creds, basis, &format!("ferry://{}/{MODULE}", warm.addr));
        let m = measure::run_in(env.src_ns(), &env.wrapper, &env.scratch, ferry, &a);
        let ok = m.as_ref().is_ok_and(|m| m.usage.success());
        warm.finish(ok)?;
        ensure!(ok, "{}: the untimed warm-up round (the previous tree) failed", tool.label());
    }
    let server = FerryServe::start_with(env, ferry, creds, dst, &extra)?;
    let mut a = push_args(tool, creds, src, &format!("ferry://{}/{MODULE}", server.addr));
    a.push("--json".into());
    // With a warm-up round, the veth counters are read around the measured push alone.
    let veth_before = match (basis.is_some() && state.is_some(), &env.net) {
        (true, Some(n)) => Some(n.counters()?),
        _ => None,
    };
    let m = measure::run_in(env.src_ns(), &env.wrapper, &env.scratch, ferry, &a);
    let veth = match (veth_before, &env.net) {
        (Some(b), Some(n)) => Some(n.since(b)?),
        _ => None,
    };
    let pushed = m.as_ref().is_ok_and(|m| m.usage.success());
    let log = server.log.clone();
    let server = server.finish(pushed);
    let m = m?;
    if !pushed {
        bail!(
            "{} failed ({}):\n{}\n{}\nferry serve's log:\n{}",
            tool.label(),
            m.usage.describe_exit(),
            tail(&m.stderr, 30),
            tail(&m.stdout, 10),
            tail(&read_log(&log), 20)
        );
    }
    let server = server?;
    if let Some(state) = &state {
        remove_dir_if_there(state)?;
    }
    let transfer = parse_ferry_json(&m.stdout)?;
    let used = ferry_json_transport(&m.stdout);
    if let Some((_, kind)) = tool.transport() {
        ensure!(
            used.as_deref() == Some(kind.to_string().as_str()),
            "{} ran over {}, not {kind}",
            tool.label(),
            used.as_deref().unwrap_or("an unnamed transport")
        );
    }
    Ok(ToolRun { client: m.usage, server: Some(server), transfer, veth })
}

/// Reads a server's log (empty when it cannot).
pub(crate) fn read_log(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A `ferry serve` on the destination side's address (127.0.0.1, or the destination namespace's
/// in the network mode; QUIC and TLS over TCP on one port the system picks) serving one module,
/// the destination, under the measuring wrapper in hold mode: its account is the server side's
/// CPU time and peak RSS.
pub(crate) struct FerryServe {
    pub(crate) held: Held,
    /// `ADDR:PORT`, from its `listening on` line.
    pub(crate) addr: String,
    /// Its stdout and stderr.
    pub(crate) log: PathBuf,
}

impl FerryServe {
    /// How long the server may take to start, and to log the end of a round the client saw end.
    const WAIT: Duration = Duration::from_secs(30);

    /// Starts the server on `module_path` as module [`MODULE`], with `extra` flags.
    pub(crate) fn start(
        env: &Env,
        creds: &Path,
        module_path: &Path,
        extra: &[&OsStr],
    ) -> Result<FerryServe> {
        let extra: Vec<OsString> = extra.iter().map(|s| s.to_os_string()).collect();
        FerryServe::start_with(env, &env.ferry, creds, module_path, &extra)
    }

    /// [`FerryServe::start`] with the `ferry` binary `ferry`.
    pub(crate) fn start_with(
        env: &Env,
        ferry: &Path,
        creds: &Path,
        module_path: &Path,
        extra: &[OsString],
    ) -> Result<FerryServe> {
        let mut module = OsString::from(format!("{MODULE}="));
        module.push(fs::canonicalize(module_path)?);
        let log = env.scratch.join(format!("ferry-serve-{}-{}.log", std::process::id(), unique()));
        let listen = format!("{}:0", env.server_ip());
        let mut a = args([
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new(&listen),
            OsStr::new("--identity"),
            creds.join("destination").as_os_str(),
            OsStr::new("--module"),
            &module,
        ]);
        a.extend(extra.iter().cloned());
        // At info level the server logs "round complete" for every round, which `finish` waits
        // for; RUST_LOG from the environment could hide it.
        let mut held = Held::start_in(
            env.dst_ns(),
            &env.wrapper,
            &env.scratch,
            ferry,
            &a,
            &[("RUST_LOG", "info")],
            &log,
        )?;
        let deadline = Instant::now() + Self::WAIT;
        loop {
            // stdout is line-buffered: the line is whole once it is there. The log line of the
            // same name starts with a timestamp.
            let text = read_log(&log);
            if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("listening on ")) {
                let addr = addr.trim().to_string();
                return Ok(FerryServe { held, addr, log });
            }
            if held.ended()? {
                bail!("ferry serve exited at start:\n{}", tail(&read_log(&log), 20));
            }
            if Instant::now() > deadline {
                bail!(
                    "ferry serve did not print `listening on` within {} s:\n{}",
                    Self::WAIT.as_secs(),
                    tail(&text, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server and returns its account. After a round the client completed
    /// (`round_done`), first waits for the server to log the round's end, so the server's
    /// account holds all of it and nothing of the round is cut short.
    pub(crate) fn finish(self, round_done: bool) -> Result<Usage> {
        self.finish_after(usize::from(round_done))
    }

    /// Waits for the server to log the end of `rounds` rounds, then stops it and returns its
    /// account.
    pub(crate) fn finish_after(mut self, rounds: usize) -> Result<Usage> {
        if rounds > 0 {
            let deadline = Instant::now() + Self::WAIT;
            while read_log(&self.log).matches(": round complete: ").count() < rounds {
                if self.held.ended()? || Instant::now() > deadline {
                    bail!(
                        "ferry push succeeded but ferry serve did not log the round's end:\n{}",
                        tail(&read_log(&self.log), 20)
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.held.finish()
    }
}

/// The module name, of the rsync daemon and of `ferry serve`.
pub(crate) const MODULE: &str = "ferrybench";

/// An `rsync --daemon --no-detach` on the destination side's address serving one module (the
/// destination), run under the measuring wrapper in hold mode, so its account (the daemon plus
/// every connection process it forked and reaped) is the server side's CPU time and peak RSS.
pub(crate) struct RsyncDaemon {
    pub(crate) held: Held,
    pub(crate) port: u16,
}

/// Writes an rsyncd.conf serving `module_path` as module [`MODULE`] (with `extra` global
/// lines) into the scratch directory; returns its path and the daemon's log file.
pub(crate) fn rsyncd_conf(
    env: &Env,
    module_path: &Path,
    extra: &str,
) -> Result<(PathBuf, PathBuf)> {
    let module_path = fs::canonicalize(module_path)?;
    let stem = format!("rsyncd-{}-{}", std::process::id(), unique());
    let conf = env.scratch.join(format!("{stem}.conf"));
    let log = env.scratch.join(format!("{stem}.log"));
    // As root the daemon would otherwise drop to "nobody" for transfers and could not set
    // ownership; chroot is off, so symlinks must not be munged to stay verbatim.
    let ids = if rustix::process::geteuid().is_root() { "    uid = 0\n    gid = 0\n" } else { "" };
    fs::write(
        &conf,
        format!(
            "# ferry-bench compare: one module, the destination of one run\n\
             use chroot = no\n\
             log file = {}\n{extra}\
             [{MODULE}]\n    path = {}\n    read only = false\n    list = false\n    \
             munge symlinks = no\n{ids}",
            log.display(),
            module_path.display()
        ),
    )?;
    Ok((conf, log))
}

impl RsyncDaemon {
    pub(crate) fn start(env: &Env, module_path: &Path, extra: &str) -> Result<RsyncDaemon> {
        let (conf, log) = rsyncd_conf(env, module_path, extra)?;
        let out = log.with_extension("out");
        let mut last_error = String::new();
        // The port is free when picked and could be taken before the daemon binds it: retry.
        for _ in 0..5 {
            let port = free_port()?;
            let a: Vec<OsString> = [
                "--daemon".to_string(),
                "--no-detach".to_string(),
                format!("--config={}", conf.display()),
                format!("--port={port}"),
                format!("--address={}", env.server_ip()),
            ]
            .into_iter()
            .map(OsString::from)
            .collect();
            let mut held =
                Held::start_in(env.dst_ns(), &env.wrapper, &env.scratch, "rsync", &a, &[], &out)?;
            if wait_listening(&mut held, port)? {
                return Ok(RsyncDaemon { held, port });
            }
            last_error = format!(
                "{}\n{}",
                tail(&fs::read_to_string(&log).unwrap_or_default(), 10),
                tail(&fs::read_to_string(&out).unwrap_or_default(), 10)
            );
        }
        bail!("rsync --daemon exited at start five times; last log:\n{last_error}")
    }
}

/// Waits until a TCP socket listens on `port` in the network namespace of `held`'s wrapper
/// (`/proc/PID/net/tcp` lists the sockets of that process's namespace, so no connection is
/// made to find out). `Ok(false)`: the command exited first.
///
/// # Errors
/// When it does not listen within 10 s.
pub(crate) fn wait_listening(held: &mut Held, port: u16) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = held.wrapper_pid();
    loop {
        if held.ended()? {
            return Ok(false);
        }
        if listens(pid, port) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!("nothing listened on port {port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a TCP socket listens on `port` in `pid`'s network namespace.
fn listens(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|f| {
        fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .is_ok_and(|t| proc_net_tcp_listens(&t, port))
    })
}

/// Reads `/proc/net/tcp` text: a line whose local address ends in `:PORT` (hex) and whose
/// state is `0A` (LISTEN).
fn proc_net_tcp_listens(text: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    text.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        local.ends_with(&want) && state == "0A"
    })
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_stats_are_read() {
        let out = "\nNumber of files: 4 (reg: 1, dir: 2, link: 1)\n\
                   Number of regular files transferred: 1,204\n\
                   Total file size: 1,073,741,830 bytes\n\
                   Literal data: 12,345,678 bytes\n\
                   Matched data: 1,061,396,152 bytes\n\
                   Total bytes sent: 12,413,906\n\
                   Total bytes received: 1,207,441\n\n\
                   sent 12,413,906 bytes  received 1,207,441 bytes  2.35 MB/sec\n";
        let t = parse_rsync_stats(out).expect("stats");
        assert_eq!(t.wire_sent, Some(12_413_906));
        assert_eq!(t.wire_received, Some(1_207_441));
        assert_eq!(t.literal, Some(12_345_678));
        assert_eq!(t.matched, Some(1_061_396_152));
        assert_eq!(t.files_transferred, Some(1_204));
        assert_eq!(t.wire_total(), Some(13_621_347));
        assert!(parse_rsync_stats("rsync error: some files could not be transferred").is_err());
    }

    #[test]
    fn ferry_json_is_read() {
        let out = r#"{"stats":{"files_new":3,"files_changed":2,"files_failed":0,
            "literal_bytes":10,"matched_bytes":20,"payload_bytes":7,"signature_bytes":5},
            "elapsed_secs":0.1,"wire_bytes_sent":100,"wire_bytes_received":50,"warnings":[]}"#;
        let t = parse_ferry_json(out).expect("json");
        assert_eq!(
            t,
            Transfer {
                wire_sent: Some(100),
                wire_received: Some(50),
                literal: Some(10),
                matched: Some(20),
                payload: Some(7),
                signature: Some(5),
                files_transferred: Some(5),
            }
        );
        assert!(parse_ferry_json(&out.replace("\"files_failed\":0", "\"files_failed\":1")).is_err());
        assert!(parse_ferry_json("sync done").is_err());
    }

    #[test]
    fn listening_sockets_are_found_in_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                    0: 0207E70A:1F90 00000000:0000 0A 00000000:00000000 00:00000000\n   \
                    1: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000\n";
        assert!(proc_net_tcp_listens(text, 8080));
        assert!(!proc_net_tcp_listens(text, 22), "an established connection is not a listener");
        assert!(!proc_net_tcp_listens(text, 80));
    }

    #[test]
    fn push_tools_name_their_transport_and_have_a_server() {
        let push: Vec<Tool> = Tool::ALL.into_iter().filter(|t| t.transport().is_some()).collect();
        assert_eq!(push, [Tool::FerryPushQuic, Tool::FerryPushTcp]);
        assert!(push.iter().all(|t| t.has_server() && t.is_ferry() && t.is_ferry_push()));
        assert!(Tool::NETWORK.iter().all(|t| !t.is_local()), "local tools have no network");
        assert_eq!(Tool::FerryPushTcp.transport(), Some(("tcp", LinkKind::Tcp)));
        let out = r#"{"stats":{},"wire_bytes_sent":1,"wire_bytes_received":2,"transport":"QUIC"}"#;
        assert_eq!(ferry_json_transport(out).as_deref(), Some("QUIC"));
        assert_eq!(ferry_json_transport(r#"{"stats":{}}"#), None);
    }
}
