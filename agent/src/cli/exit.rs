//! Exit codes (a contract: the README's table) and how an error is explained to a person.

use crate::net::{Refusal, RemoteError};
use crate::round::driver::RoundError;
use crate::round::SyncError;
use crate::unattended::runner::AttemptError;

/// Bad flags or arguments.
pub const USAGE: u8 = 2;
/// A certificate was refused (ours or the peer's).
pub const AUTH: u8 = 3;
/// No protocol version in common with the peer.
pub const VERSION: u8 = 4;
/// The peer broke the protocol or aborted.
pub const PEER: u8 = 5;
/// A network failure that may pass (timeout, connection cut): retry.
pub const TRANSIENT: u8 = 6;
/// A local I/O error (source unreadable, destination not writable, no space).
pub const LOCAL_IO: u8 = 7;
/// The round ran, but the source could not read all of its tree: a partial round (rsync's
/// 23), with nothing deleted.
pub const PARTIAL: u8 = 23;

/// The exit code of a round that ran: 0, or [`PARTIAL`].
pub fn of_report(r: &crate::round::Report) -> std::process::ExitCode {
    if r.partial {
        std::process::ExitCode::from(PARTIAL)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// A command line that parsed but does not make sense (a missing companion flag, a
/// snapshot that does not exist): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit code for `e`. Errors this module does not know are local: every network and
/// usage error has a type of its own, so what is left (writing credentials, reading a
/// status file, a snapshot's I/O, promote's renames) failed on this machine.
pub fn classify(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Usage>().is_some()
        || e.downcast_ref::<crate::chart::RenderError>().is_some()
    {
        return USAGE;
    }
    let remote = match e.downcast_ref::<AttemptError>() {
        Some(AttemptError::Round(r)) => Some(r),
        Some(AttemptError::PreRound(_) | AttemptError::SourceImage(_)) => return TRANSIENT,
        None => e.downcast_ref::<RemoteError>(),
    };
    if let Some(r) = remote {
        return match r {
            RemoteError::Usage(_) | RemoteError::Identity(_) => USAGE,
            RemoteError::Connect { source, .. } if source.is_auth() => AUTH,
            RemoteError::Connect { source, .. } if source.is_transient() => TRANSIENT,
            RemoteError::Connect { .. } => PEER,
            RemoteError::Refused { code: Refusal::Busy, .. } => TRANSIENT,
            RemoteError::Refused { code: Refusal::Version, .. } | RemoteError::Version { .. } => {
                VERSION
            }
            RemoteError::Refused { .. } => PEER,
            RemoteError::Local(e) => classify_sync(e),
            RemoteError::Round(e) => classify_round(e),
            RemoteError::Rsh(_) => LOCAL_IO,
            RemoteError::NotCommitted { .. } | RemoteError::StateBusy(_) => TRANSIENT,
        };
    }
    match e.downcast_ref::<SyncError>() {
        Some(e) => classify_sync(e),
        None => LOCAL_IO,
    }
}

fn classify_sync(e: &SyncError) -> u8 {
    match e {
        SyncError::Exclude(_) => USAGE,
        SyncError::Round(r) => classify_round(r),
        _ => LOCAL_IO,
    }
}

fn classify_round(e: &RoundError) -> u8 {
    use ferry_core::SessionError as S;
    match e {
        RoundError::Source(S::Version { .. }) | RoundError::Target(S::Version { .. }) => VERSION,
        RoundError::Source(S::Local(_)) | RoundError::Target(S::Local(_)) => LOCAL_IO,
        RoundError::Source(_)
        | RoundError::Target(_)
        | RoundError::Decode(_)
        | RoundError::Stalled => PEER,
        RoundError::Link(t) if t.is_auth() => AUTH,
        RoundError::Link(t) if t.is_transient() => TRANSIENT,
        RoundError::Link(_) => PEER,
    }
}

/// The error and its causes on one line, each cause once (a cause's text is often already
/// part of the message above it). Control characters are escaped: causes carry peer strings
/// (a refusal's or an abort's reason, a TLS close reason) that must not forge log lines.
pub fn explain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = ferry_transport::printable(&cause.to_string()).into_owned();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// What the user can do about an error, where we know.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    let remote = match e.downcast_ref::<AttemptError>() {
        Some(AttemptError::Round(r)) => Some(r),
        Some(_) => return None,
        None => e.downcast_ref::<RemoteError>(),
    };
    if let Some(r) = remote {
        return match r {
            RemoteError::Identity(_) => Some("--identity takes the directory `ferry init` wrote for this side (destination/ or source/)"),
            RemoteError::Connect { source, .. } if source.is_auth() => Some(
                "both sides need credentials from the same `ferry init`, within their validity; the server name dialled must be one of its --name values",
            ),
            RemoteError::Connect { source, .. } if source.is_transient() => {
                Some("is `ferry serve` running and reachable? If UDP is blocked, use --transport tcp")
            }
            RemoteError::Refused { .. } => Some("check the module name and its :ro/:wo mode on the server"),
            RemoteError::NotCommitted { .. } => Some("the files are in place; see the destination's log (its state directory: space, permissions, --snapshot), then run the round again"),
            RemoteError::Version { .. } => Some("run the same Ferry version on both sides"),
            RemoteError::Local(e) => sync_hint(e),
            RemoteError::Round(RoundError::Link(_)) => Some("the round can be run again: files already in place are not sent twice"),
            _ => None,
        };
    }
    sync_hint(e.downcast_ref::<SyncError>()?)
}

fn sync_hint(e: &SyncError) -> Option<&'static str> {
    match e {
        SyncError::Source { .. } => {
            Some("check that the source path exists and is a directory you can read")
        }
        SyncError::Destination { .. } => {
            Some("check that the destination's parent exists and is writable by this user")
        }
        SyncError::Exclude(_) => {
            Some("--exclude takes rsync-style globs such as '*.tmp' or 'cache/'")
        }
        SyncError::Round(RoundError::Target(_)) => Some(
            "the destination was left with only verified files; fix the cause above and run again",
        ),
        SyncError::Round(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors outside the network and sync types failed on this machine: exit 7, not 2
    /// (issue 10, defect 1: `ferry init` write failures, snapshot I/O, promote's renames and
    /// unreadable status files all exited 2).
    #[test]
    fn local_failures_exit_7_and_usage_exits_2() {
        let io = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            .context("writing /x/destination/key.pem");
        assert_eq!(classify(&io), LOCAL_IO);
        let snap = anyhow::Error::new(crate::state::snapshot::SnapshotError::Command("x".into()));
        assert_eq!(classify(&snap), LOCAL_IO);
        let json = serde_json::from_slice::<serde_json::Value>(b"{").map_err(anyhow::Error::new);
        assert_eq!(classify(&json.unwrap_err()), LOCAL_IO);
        assert_eq!(classify(&anyhow::Error::new(Usage("--data DIR".into()))), USAGE);
        let remote = anyhow::Error::new(RemoteError::Usage("bad url".into()));
        assert_eq!(classify(&remote), USAGE);
    }
}
