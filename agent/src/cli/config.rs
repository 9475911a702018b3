//! Validated configuration: what the flags mean, checked once, before anything starts. Each
//! function here turns flag syntax ([`super::flags`]) into the typed options a command runs
//! with; what cannot be checked flag by flag (a kind that needs its command, a command
//! without its kind) is refused here with a [`Usage`] error.

use std::path::PathBuf;
use std::time::Duration;

use super::exit::Usage;
use super::flags::{
    ListFlags, NetFlags, ReceiveFlags, RoundFlags, ScheduleFlags, ServeFlags, SnapshotKind,
    SourceImageFlags, SourceImageKind, StateFlags, Transport,
};
use crate::fs::image::SourceSnapshot;
use crate::many::ListEntry;
use crate::net::{RemoteOptions, ServeConfig, Url, Via};
use crate::round::{RoundOptions, SyncOptions};
use crate::state::snapshot::{Retention, Snapshotter};
use crate::state::StateConfig;
use crate::unattended::http::HttpConfig;
use crate::unattended::runner::Plan;
use crate::unattended::schedule::Backoff;
use ferry_core::ReceivePolicy;

/// zstd level of local rounds: no wire to save.
pub const LOCAL_COMPRESS_LEVEL: i32 = 1;
/// zstd level of network rounds: adapted during the round to whichever of the link and the
/// CPU is behind (`crate::round::compression`).
pub const NETWORK_COMPRESS_LEVEL: i32 = crate::round::compression::COMPRESS_AUTO;

impl RoundFlags {
    /// The round's options, with `default_level` unless `--compress-level` was given.
    pub fn options(&self, default_level: i32) -> SyncOptions {
        SyncOptions {
            round: RoundOptions {
                delete: self.delete,
                checksum: self.checksum,
                dry_run: self.dry_run,
                excludes: self.excludes.clone(),
                compress_level: self.compress_level.unwrap_or(default_level),
            },
            threads: self.threads.get,
            specials: self.specials,
            one_file_system: self.one_file_system,
            policy: self.receive.policy(self.specials),
            // Paths given on the command line are the user's: a symlink there is meant.
            root_no_follow: false,
        }
    }

    /// Whether each change is printed (`--itemize`, or always with `--dry-run`, unless the
    /// output is JSON).
    pub fn itemize(&self) -> bool {
        (self.itemize || self.dry_run) && !self.json
    }
}

impl ReceiveFlags {
    /// The receiving side's policy these flags (and `--specials`) mean.
    pub fn policy(&self, specials: bool) -> ReceivePolicy {
        ReceivePolicy {
            specials,
            keep_privileged: self.keep_privileged,
            chown: self.chown.map_or((None, None), |c| (c.0, c.1)),
            usermap: self.usermap.clone().map(|m| m.0).unwrap_or_default(),
            groupmap: self.groupmap.clone().map(|m| m.0).unwrap_or_default(),
        }
    }
}

impl NetFlags {
    /// How a client connects, for a round with `sync` options.
    pub fn remote(&self, sync: SyncOptions) -> RemoteOptions {
        let via = match (&self.rsh, self.transport) {
            (Some(cmd), _) => Via::Rsh(cmd.clone()),
            (None, Transport::Quic) => Via::Quic,
            (None, Transport::Tcp) => Via::Tcp,
            (None, Transport::Auto) => Via::Auto,
        };
        RemoteOptions {
            sync,
            via,
            identity: self.identity.clone().map(crate::net::credentials::IdentityDir::new),
            bwlimit: self.bwlimit.get.unwrap_or(0),
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            state: None,
        }
    }
}

/// `--snapshot KIND` with `--snapshot-command CMD`.
///
/// # Errors
/// [`Usage`] when `command` lacks its command, or a command is given for another kind.
pub fn snapshotter(kind: SnapshotKind, command: Option<&str>) -> Result<Snapshotter, Usage> {
    match (kind, command) {
        (SnapshotKind::Hardlink, None) => Ok(Snapshotter::Hardlink),
        (SnapshotKind::Reflink, None) => Ok(Snapshotter::Reflink),
        (SnapshotKind::HardlinkTree, None) => Ok(Snapshotter::HardlinkTree),
        (SnapshotKind::Btrfs, None) => Ok(Snapshotter::Btrfs),
        (SnapshotKind::Command, Some(c)) => Ok(Snapshotter::Command(c.to_string())),
        (SnapshotKind::Command, None) => {
            Err(Usage("--snapshot command needs --snapshot-command CMD".into()))
        }
        (SnapshotKind::Csi, None) => {
            Err(Usage("--snapshot csi needs --snapshot-class NAME and --pvc NAME".into()))
        }
        (_, Some(_)) => Err(Usage("--snapshot-command goes with --snapshot command".into())),
    }
}

impl StateFlags {
    /// What the destination keeps between rounds (`None` without `--state-dir`).
    ///
    /// # Errors
    /// [`Usage`] for inconsistent snapshot flags.
    pub fn state(&self) -> Result<Option<StateConfig>, Usage> {
        let snapshotter = match self.snapshot {
            SnapshotKind::Csi => csi(self)?,
            kind => {
                if self.snapshot_class.is_some() || self.pvc.is_some() || self.namespace.is_some() {
                    return Err(Usage(
                        "--snapshot-class, --pvc and --namespace go with --snapshot csi".into(),
                    ));
                }
                snapshotter(kind, self.snapshot_command.as_deref())?
            }
        };
        if matches!(snapshotter, Snapshotter::Csi(_)) && self.state_dir.is_none() {
            return Err(Usage(
                "--snapshot csi needs --state-dir DIR (its records live there)".into(),
            ));
        }
        let retention =
            Retention { last: self.keep_last, hourly: self.keep_hourly, daily: self.keep_daily };
        Ok(self.state_dir.clone().map(|dir| StateConfig {
            dir,
            snapshotter,
            retention,
            signature_cache: !self.no_signature_cache,
        }))
    }
}

/// `--snapshot csi` with its class, PVC, namespace and timeout, each name checked against
/// the Kubernetes grammar (a bad one is refused at start-up, not at the first round).
fn csi(f: &StateFlags) -> Result<Snapshotter, Usage> {
    use crate::k8s::{dns1123_label, dns1123_subdomain};
    if f.snapshot_command.is_some() {
        return Err(Usage("--snapshot-command goes with --snapshot command".into()));
    }
    let (Some(class), Some(pvc)) = (&f.snapshot_class, &f.pvc) else {
        return Err(Usage("--snapshot csi needs --snapshot-class NAME and --pvc NAME".into()));
    };
    for (flag, v) in [("--snapshot-class", class), ("--pvc", pvc)] {
        if !dns1123_subdomain(v) {
            return Err(Usage(format!(
                "{flag} {v:?}: not a Kubernetes object name (lower-case letters, digits, '-' \
                 and '.', starting and ending with a letter or digit, at most 253)"
            )));
        }
    }
    if let Some(ns) = &f.namespace {
        if !dns1123_label(ns) {
            return Err(Usage(format!(
                "--namespace {ns:?}: not a namespace name (lower-case letters, digits and '-', \
                 at most 63)"
            )));
        }
    }
    if f.snapshot_timeout.is_zero() {
        return Err(Usage("--snapshot-timeout must be more than 0".into()));
    }
    Ok(Snapshotter::Csi(crate::state::snapshot::csi::Csi::new(
        crate::state::snapshot::csi::CsiConfig {
            class: class.clone(),
            pvc: pvc.clone(),
            namespace: f.namespace.clone(),
            timeout: f.snapshot_timeout,
        },
    )))
}

impl SourceImageFlags {
    /// The source image to read instead of the live tree of `src`, and where it goes.
    ///
    /// # Errors
    /// [`Usage`] when `command` lacks its command, or a command is given for another kind.
    pub fn image(&self, src: &std::path::Path) -> Result<Option<(SourceSnapshot, PathBuf)>, Usage> {
        let how = match (self.source_snapshot, self.source_snapshot_command.as_deref()) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(Usage(
                    "--source-snapshot-command goes with --source-snapshot command".into(),
                ))
            }
            (Some(SourceImageKind::Reflink), None) => SourceSnapshot::Reflink,
            (Some(SourceImageKind::Btrfs), None) => SourceSnapshot::Btrfs,
            (Some(SourceImageKind::Command), Some(c)) => SourceSnapshot::Command(c.to_string()),
            (Some(SourceImageKind::Command), None) => {
                return Err(Usage(
                    "--source-snapshot command needs --source-snapshot-command CMD".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(Usage(
                    "--source-snapshot-command goes with --source-snapshot command".into(),
                ))
            }
        };
        let dir = match &self.source_image_dir {
            Some(d) => d.clone(),
            None => src
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        Ok(Some((how, dir)))
    }
}

impl ScheduleFlags {
    /// `--http` and its trigger token (read from `--http-token-file` now, so a missing or
    /// empty file stops the agent before its first round).
    ///
    /// # Errors
    /// [`Usage`] when the token file cannot be read or holds no token.
    pub fn http(&self) -> Result<Option<(std::net::SocketAddr, HttpConfig)>, Usage> {
        let Some(addr) = self.http.get else { return Ok(None) };
        let token = match &self.http_token_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Usage(format!("--http-token-file {}: {e}", p.display())))?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(Usage(format!("--http-token-file {}: empty", p.display())));
                }
                Some(t.to_string())
            }
        };
        Ok(Some((addr, HttpConfig { token, limits: self.http.limits() })))
    }

    /// When and how rounds run, with the source image a push reads (`None` for pull).
    pub fn plan(&self, source_image: Option<(SourceSnapshot, PathBuf)>) -> Plan {
        Plan {
            schedule: self.every.clone().or_else(|| self.schedule.clone()),
            once: self.once,
            jitter: self.jitter,
            retries: self.retries,
            backoff: Backoff { base: self.retry_base, ..Backoff::default() },
            status_file: self.status_file.clone(),
            pre_round: self.pre_round.clone(),
            post_round: self.post_round.clone(),
            source_image,
        }
    }
}

/// What one `ferry push` or `ferry pull` replicates.
#[derive(Debug)]
pub enum Job {
    /// One directory and one module.
    One {
        /// The local directory (source of a push, destination of a pull).
        local: PathBuf,
        /// The module.
        url: Url,
    },
    /// `--list`: each listed directory with its module on one server.
    Many {
        /// The server (its module empty).
        server: Url,
        /// The modules, checked.
        list: Vec<ListEntry>,
        /// `--jobs`, at least 1.
        jobs: usize,
        /// `--list-check`: print, do not run.
        check: bool,
        /// `--group`: the modules as one consistency group, checked.
        group: Option<String>,
    },
}

impl ListFlags {
    /// What a push or pull replicates, from its positional arguments: `local` and `url` of
    /// one module, or with `--list` only the server's URL (given first to push, whose single
    /// positional then lands in `local`).
    ///
    /// # Errors
    /// [`Usage`] for a missing or extra argument, a URL with (or without) a module, a bad
    /// list file, and flags `--list` does not take.
    pub fn job(
        &self,
        local: Option<PathBuf>,
        url: Option<Url>,
        when: &ScheduleFlags,
        net: &NetFlags,
    ) -> Result<Job, Usage> {
        let Some(file) = &self.list else {
            return match (local, url) {
                (Some(_), Some(u)) if u.module.is_empty() => Err(Usage(format!(
                    "{u}: no /MODULE (only --list takes a server without a module)"
                ))),
                (Some(local), Some(url)) => Ok(Job::One { local, url }),
                _ => Err(Usage("expected a directory and ferry://HOST[:PORT]/MODULE".into())),
            };
        };
        let server = match (local, url) {
            (None, Some(u)) => u,
            (Some(first), None) => crate::many::parse_url(&first.to_string_lossy())
                .map_err(|e| Usage(format!("with --list, {e}")))?,
            (Some(_), Some(_)) => {
                return Err(Usage(
                    "with --list, give only the server, ferry://HOST[:PORT]: the list file names each module's directory".into(),
                ))
            }
            (None, None) => return Err(Usage("--list needs the server, ferry://HOST[:PORT]".into())),
        };
        if !server.module.is_empty() {
            return Err(Usage(format!(
                "with --list, the URL names the server only (ferry://{}:{}): the list file names the modules, not /{}",
                server.host, server.port, server.module
            )));
        }
        let refused = [
            (when.every.is_some() || when.schedule.is_some(), "--every/--schedule"),
            (when.status_file.is_some(), "--status-file"),
            (when.http.get.is_some(), "--http"),
            (net.rsh.is_some(), "--rsh"),
        ];
        if let Some((_, flag)) = refused.iter().find(|(given, _)| *given) {
            return Err(Usage(format!(
                "{flag} does not go with --list yet: run one process per module, or --list once (e.g. from a CronJob)"
            )));
        }
        if self.jobs == 0 {
            return Err(Usage("--jobs must be at least 1".into()));
        }
        if let Some(g) = &self.group {
            crate::state::group::check_group_name(g).map_err(|e| Usage(format!("--group: {e}")))?;
        }
        let list = crate::many::read_list(file).map_err(|e| Usage(format!("--list {e}")))?;
        Ok(Job::Many {
            server,
            list,
            jobs: self.jobs,
            check: self.list_check,
            group: self.group.clone(),
        })
    }
}

/// `ferry serve`, validated.
#[derive(Debug)]
pub struct Serve {
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The credentials directory (required unless `--stdio`).
    pub identity: Option<PathBuf>,
    /// `--identity-poll`: how often the credentials are checked for a rotation (zero: never).
    pub identity_poll: Duration,
    /// One round on stdin/stdout.
    pub stdio: bool,
    /// `--http`.
    pub http: Option<std::net::SocketAddr>,
    /// `--http-max-connections` and the other limits of `--http`.
    pub http_limits: crate::unattended::http::HttpLimits,
    /// What the server serves and keeps.
    pub config: ServeConfig,
}

impl ServeFlags {
    /// The server's configuration.
    ///
    /// # Errors
    /// [`Usage`] for inconsistent snapshot flags.
    pub fn validate(self) -> Result<Serve, Usage> {
        let state = self.state.state()?;
        let mut modules = self.modules;
        if let Some(file) = &self.modules_from {
            if self.stdio && file.as_os_str() == "-" {
                return Err(Usage(
                    "--modules-from - reads stdin, which --stdio serves the round on".into(),
                ));
            }
            let listed = crate::many::served_modules(file)
                .map_err(|e| Usage(format!("--modules-from {e}")))?;
            for m in listed {
                if modules.iter().any(|e| e.name == m.name) {
                    return Err(Usage(format!(
                        "module {:?} is given both by --module and in --modules-from {}",
                        m.name,
                        file.display()
                    )));
                }
                modules.push(m);
            }
        }
        if state.is_some() {
            for m in &modules {
                crate::state::check_module_name(&m.name).map_err(Usage)?;
            }
        }
        Ok(Serve {
            listen: self.listen,
            identity: self.identity,
            identity_poll: self.identity_poll,
            stdio: self.stdio,
            http: self.http.get,
            http_limits: self.http.limits(),
            config: ServeConfig {
                modules,
                modules_dir: self.modules_dir,
                threads: self.threads.get,
                bwlimit: self.bwlimit.get.unwrap_or(0),
                state,
                agent: None,
                policy: self.receive.policy(self.specials),
                idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
                max_connections: self.max_connections.max(1),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::super::flags::{Cli, Command};
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn push_only_flags_are_refused_for_pull_at_parse_time() {
        let e = parse(&["pull", "ferry://h/m", "d", "--source-snapshot", "reflink"]);
        assert_eq!(e.err().map(|e| e.kind()), Some(clap::error::ErrorKind::UnknownArgument));
        assert!(parse(&["push", "s", "ferry://h/m", "--source-snapshot", "reflink"]).is_ok());
    }

    #[test]
    fn durations_schedules_and_enums_are_parsed_before_anything_runs() {
        for bad in [
            &["push", "s", "ferry://h/m", "--every", "soon"][..],
            &["push", "s", "ferry://h/m", "--schedule", "not cron"],
            &["push", "s", "ferry://h/m", "--jitter", "x"],
            &["push", "s", "ferry://h/m", "--retry-base", "1 fortnight"],
            &["push", "s", "ferry://h/m", "--transport", "udp"],
            &["push", "s", "http://h/m"],
            &["serve", "--module", "m=/d", "--identity", "i", "--snapshot", "zfs"],
            &["serve", "--module", "bad name=/d", "--identity", "i"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let Ok(Cli { command: Command::Push { net, when, .. }, .. }) =
            parse(&["push", "s", "ferry://h/m", "--every", "5m", "--transport", "tcp"])
        else {
            panic!("push did not parse")
        };
        assert_eq!(net.transport, Transport::Tcp);
        assert!(when.every.is_some());
    }

    fn job(args: &[&str]) -> Result<Job, Usage> {
        match parse(args).map_err(|e| Usage(e.to_string()))?.command {
            Command::Push { src, url, many, net, when, .. } => many.job(src, url, &when, &net),
            Command::Pull { url, dst, many, net, when, .. } => {
                many.job(dst, Some(url), &when, &net)
            }
            _ => panic!("not push or pull"),
        }
    }

    #[test]
    fn list_takes_the_server_only_and_no_schedule() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("list");
        std::fs::write(&f, "a /x\nb /y z\n").unwrap();
        let f = f.to_str().unwrap();
        for args in
            [&["push", "--list", f, "ferry://h:9"][..], &["pull", "--list", f, "ferry://h:9/"]]
        {
            let Ok(Job::Many { server, list, jobs, check: false, group: None }) = job(args) else {
                panic!("{args:?}")
            };
            assert_eq!((server.host.as_str(), server.port, server.module.as_str()), ("h", 9, ""));
            assert_eq!(list.len(), 2);
            assert_eq!(jobs, super::super::flags::DEFAULT_JOBS);
        }
        for (args, says) in [
            (&["push", "--list", f, "ferry://h:9/m"][..], "server only"),
            (&["pull", "--list", f, "ferry://h:9/m"], "server only"),
            (&["push", "--list", f, "src", "ferry://h:9/m"], "only the server"),
            (&["push", "--list", f, "ferry://h:9", "--every", "5m"], "--every"),
            (&["pull", "--list", f, "ferry://h:9", "--status-file", "s"], "--status-file"),
            (&["pull", "--list", f, "ferry://h:9", "--rsh", "x"], "--rsh"),
            (&["pull", "--list", f, "ferry://h:9", "--jobs", "0"], "at least 1"),
            (&["pull", "ferry://h:9", "d"], "no /MODULE"),
            (&["pull", "--list", "/nonexistent/list", "ferry://h:9"], "/nonexistent/list"),
        ] {
            match job(args) {
                Err(Usage(e)) => assert!(e.contains(says), "{args:?}: {e}"),
                Ok(j) => panic!("{args:?}: {j:?}"),
            }
        }
        assert!(parse(&["push", "s", "ferry://h/m", "--list-check"]).is_err(), "needs --list");
        assert!(matches!(job(&["pull", "ferry://h/m", "d"]), Ok(Job::One { .. })));
    }

    #[test]
    fn a_group_takes_a_kubernetes_name_and_needs_a_list() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("list");
        std::fs::write(&f, "a /x\nb /y\n").unwrap();
        let f = f.to_str().unwrap();
        let Ok(Job::Many { group: Some(g), .. }) =
            job(&["push", "--list", f, "ferry://h:9", "--group", "pg-1"])
        else {
            panic!("--group pg-1")
        };
        assert_eq!(g, "pg-1");
        for bad in ["PG", "a/b", "..", "-x", ""] {
            match job(&["push", "--list", f, "ferry://h:9", "--group", bad]) {
                Err(Usage(e)) => assert!(e.contains("--group"), "{bad:?}: {e}"),
                Ok(j) => panic!("{bad:?}: {j:?}"),
            }
        }
        assert!(parse(&["push", "s", "ferry://h/m", "--group", "g"]).is_err(), "needs --list");
    }

    #[test]
    fn serve_modules_from_clashing_with_module_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("list");
        std::fs::write(&f, "a /x:ro\nb /y\n").unwrap();
        let f = f.to_str().unwrap();
        let serve = |args: &[&str]| match parse(args).unwrap().command {
            Command::Serve(s) => s.validate(),
            _ => panic!("not serve"),
        };
        let s =
            serve(&["serve", "--modules-from", f, "--module", "c=/z", "--identity", "i"]).unwrap();
        let names: Vec<_> = s.config.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        let e = serve(&["serve", "--modules-from", f, "--module", "a=/z", "--identity", "i"]);
        assert!(e.unwrap_err().0.contains("both by --module and in --modules-from"));
        assert!(parse(&["serve", "--identity", "i"]).is_err(), "no module at all");
        let e = serve(&["serve", "--modules-from", "-", "--stdio"]).unwrap_err();
        assert!(e.0.contains("--stdio"), "{e}");
        assert!(parse(&["serve", "--modules-dir", "/d:ro", "--identity", "i"]).is_ok());
    }

    #[test]
    fn companion_flags_are_checked_together() {
        assert!(snapshotter(SnapshotKind::Command, None).is_err());
        assert!(snapshotter(SnapshotKind::Hardlink, Some("x")).is_err());
        assert_eq!(snapshotter(SnapshotKind::Reflink, None).unwrap(), Snapshotter::Reflink);
        let Ok(Cli { command: Command::Serve(f), .. }) =
            parse(&["serve", "--module", "m=/a", "--identity", "i", "--snapshot", "command"])
        else {
            panic!("serve did not parse")
        };
        assert!(f.validate().is_err(), "--snapshot command without its command");
    }
}
