//! Validated configuration: what the flags mean, checked once, before anything starts. Each
//! function here turns flag syntax ([`super::flags`]) into the typed options a command runs
//! with; what cannot be checked flag by flag (a kind that needs its command, a command
//! without its kind) is refused here with a [`Usage`] error.

use std::path::PathBuf;
use std::time::Duration;

use super::exit::Usage;
use super::flags::{
    NetFlags, ReceiveFlags, RoundFlags, ScheduleFlags, ServeFlags, SnapshotKind, SourceImageFlags,
    SourceImageKind, Transport,
};
use crate::fs::image::SourceSnapshot;
use crate::net::{RemoteOptions, ServeConfig, Via};
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
            identity: self.identity.clone(),
            bwlimit: self.bwlimit.get.unwrap_or(0),
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
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
        (_, Some(_)) => Err(Usage("--snapshot-command goes with --snapshot command".into())),
    }
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
        Ok(Some((addr, HttpConfig { token })))
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

/// `ferry serve`, validated.
#[derive(Debug)]
pub struct Serve {
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The credentials directory (required unless `--stdio`).
    pub identity: Option<PathBuf>,
    /// One round on stdin/stdout.
    pub stdio: bool,
    /// `--http`.
    pub http: Option<std::net::SocketAddr>,
    /// What the server serves and keeps.
    pub config: ServeConfig,
}

impl ServeFlags {
    /// The server's configuration.
    ///
    /// # Errors
    /// [`Usage`] for inconsistent snapshot flags.
    pub fn validate(self) -> Result<Serve, Usage> {
        let snapshotter = snapshotter(self.snapshot, self.snapshot_command.as_deref())?;
        let retention =
            Retention { last: self.keep_last, hourly: self.keep_hourly, daily: self.keep_daily };
        let state = self.state_dir.map(|dir| StateConfig {
            dir,
            snapshotter,
            retention,
            signature_cache: !self.no_signature_cache,
        });
        Ok(Serve {
            listen: self.listen,
            identity: self.identity,
            stdio: self.stdio,
            http: self.http.get,
            config: ServeConfig {
                modules: self.modules,
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
