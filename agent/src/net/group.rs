//! Recording a consistency group's generation over the network: after every member's round
//! was recorded by the server, the pushing source asks it to record one generation naming
//! the member snapshots ([`crate::state::group`]).
//!
//! ```text
//!   client                                   server
//!   Request { direction: Group,  ──────────▶  (needs --state-dir)
//!             module: GROUP,
//!             version_min: GROUP_PROTOCOL }
//!                               ◀──────────  Response::Accepted
//!   GroupCommit { members }     ──────────▶  each member: a module peers may push to, its
//!                                            snapshot listed, its claim held; record written
//!                               ◀──────────  GroupAnswer::Recorded { generation } | Refused
//! ```
//!
//! The request asks for at least [`GROUP_PROTOCOL`], so a server that does not know groups
//! refuses it with a version error naming both ranges instead of failing to decode it.

use ferry_core::message::{PROTOCOL_MIN, PROTOCOL_VERSION};
use ferry_transport::frame::{read_body, read_value, write_value, MAX_HANDSHAKE_FRAME};
use ferry_transport::net::Link;
use ferry_transport::TransportError;
use serde::{Deserialize, Serialize};

use super::client::{connect, RemoteOptions};
use super::protocol::{handshake, Access, Direction, Refusal, Request, Response, REQUEST_TIMEOUT};
use super::server::{find_module, ServeConfig};
use super::{RemoteError, Url};
use crate::round::RoundOptions;
use crate::state::group::{check_group_name, GroupError, Groups, MAX_MEMBERS};

/// The first protocol version with [`Direction::Group`].
pub const GROUP_PROTOCOL: u32 = 6;

/// One member of a generation to record: a module and the snapshot its round got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The module.
    pub module: String,
    /// The snapshot id the server told the member's round in `Done`.
    pub snapshot: String,
}

/// What the client sends once a group request is accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupCommit {
    /// Every member of the group.
    pub members: Vec<GroupMember>,
}

/// The server's answer to a [`GroupCommit`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GroupAnswer {
    /// The generation is recorded under this id.
    Recorded {
        /// The generation's id.
        generation: String,
    },
    /// No generation was recorded.
    Refused {
        /// Why, as a code.
        code: Refusal,
        /// Why, for a person.
        reason: String,
    },
}

/// Asks the server at `server` to record a generation of `group` naming `members`' snapshots;
/// returns the generation's id.
///
/// # Errors
/// [`RemoteError::Refused`] when the server recorded nothing (a missing snapshot, a busy
/// member, no state directory); connection and version errors as for a round.
pub async fn record_group(
    server: &Url,
    opts: &RemoteOptions,
    group: &str,
    members: &[GroupMember],
) -> Result<String, RemoteError> {
    let url = Url { module: group.to_string(), ..server.clone() };
    let mut link = connect(&url, opts).await?;
    let req = Request {
        version_min: GROUP_PROTOCOL,
        version_max: PROTOCOL_VERSION,
        module: group.to_string(),
        direction: Direction::Group,
        options: RoundOptions::default(),
        lanes: 0,
    };
    handshake(&mut link, &req).await?;
    let peer = link.peer.clone();
    let conn = |source| RemoteError::Connect { addr: peer.clone(), source };
    let commit = GroupCommit { members: members.to_vec() };
    write_value(&mut link.writer, &commit).await.map_err(conn)?;
    let answer: GroupAnswer = read_value(&mut link.reader).await.map_err(conn)?;
    link.finish().await;
    match answer {
        GroupAnswer::Recorded { generation } => Ok(generation),
        GroupAnswer::Refused { code, reason } => Err(RemoteError::Refused { code, reason }),
    }
}

/// The server's side of a group request (`req.module` is the group): accepted only with a
/// state directory; then the members are read and the generation recorded, or refused.
///
/// # Errors
/// When the link fails.
pub(super) async fn serve_group(
    mut link: Link,
    req: &Request,
    cfg: &ServeConfig,
) -> Result<(), RemoteError> {
    let peer = link.peer.clone();
    let conn = |source| RemoteError::Connect { addr: peer.clone(), source };
    let refusal = |code, reason: String| Response::Refused {
        code,
        reason,
        server_min: PROTOCOL_MIN,
        server_max: PROTOCOL_VERSION,
    };
    let early = match (&cfg.state, check_group_name(&req.module)) {
        (None, _) => Some(refusal(
            Refusal::BadRequest,
            "this server keeps no state (--state-dir): it records no group".into(),
        )),
        (_, Err(e)) => Some(refusal(Refusal::BadRequest, e.to_string())),
        _ if req.version_max < GROUP_PROTOCOL => Some(refusal(
            Refusal::Version,
            format!("a group needs protocol {GROUP_PROTOCOL} or newer"),
        )),
        _ => None,
    };
    if let Some(resp) = early {
        let _ = write_value(&mut link.writer, &resp).await;
        link.finish().await;
        return Ok(());
    }
    let accepted = Response::Accepted { version: PROTOCOL_VERSION.min(req.version_max), lanes: 0 };
    write_value(&mut link.writer, &accepted).await.map_err(conn)?;
    let body =
        tokio::time::timeout(REQUEST_TIMEOUT, read_body(&mut link.reader, MAX_HANDSHAKE_FRAME))
            .await
            .unwrap_or(Err(TransportError::Timeout("waiting for the group's members")))
            .and_then(|b| b.ok_or(TransportError::Closed))
            .map_err(conn)?;
    let answer = match postcard::from_bytes::<GroupCommit>(&body) {
        Ok(commit) => decide(&req.module, commit, cfg).await,
        Err(e) => GroupAnswer::Refused {
            code: Refusal::BadRequest,
            reason: format!("malformed group members: {e}"),
        },
    };
    match &answer {
        GroupAnswer::Recorded { generation } => {
            tracing::info!("{peer}: group {:?}: generation {generation} recorded", req.module)
        }
        GroupAnswer::Refused { reason, .. } => tracing::warn!(
            "{peer}: group {:?}: no generation recorded: {}",
            req.module,
            ferry_transport::printable(reason)
        ),
    }
    write_value(&mut link.writer, &answer).await.map_err(conn)?;
    link.finish().await;
    Ok(())
}

/// Checks every member is a module peers may push to, then records the generation.
async fn decide(group: &str, commit: GroupCommit, cfg: &ServeConfig) -> GroupAnswer {
    let refuse = |code, reason: String| GroupAnswer::Refused { code, reason };
    let Some(state) = cfg.state.clone() else {
        return refuse(Refusal::BadRequest, "no --state-dir".into());
    };
    if commit.members.is_empty() || commit.members.len() > MAX_MEMBERS {
        return refuse(
            Refusal::BadRequest,
            format!("a group has 1 to {MAX_MEMBERS} members, not {}", commit.members.len()),
        );
    }
    for m in &commit.members {
        match find_module(cfg, &m.module, Direction::Push).await {
            Ok(Some(module)) if module.access == Access::ReadOnly => {
                return refuse(
                    Refusal::ReadOnly,
                    format!("module {:?} is read-only: it cannot be a group's member", m.module),
                )
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return refuse(Refusal::UnknownModule, format!("no module named {:?}", m.module))
            }
            Err(why) => return refuse(Refusal::ServerError, why),
        }
    }
    let members: Vec<(String, String)> =
        commit.members.into_iter().map(|m| (m.module, m.snapshot)).collect();
    let owned = group.to_string();
    let r =
        tokio::task::spawn_blocking(move || Groups::at(&state.dir).record(&owned, &members)).await;
    match r {
        Ok(Ok(generation)) => GroupAnswer::Recorded { generation: generation.generation },
        Ok(Err(e @ GroupError::Busy { .. })) => refuse(Refusal::Busy, e.to_string()),
        Ok(Err(GroupError::Io { what, source })) => {
            // The state directory's paths stay in the server's log.
            tracing::error!("group {group:?}: {what}: {source}");
            refuse(Refusal::ServerError, "the server could not write the group's record".into())
        }
        Ok(Err(e)) => refuse(Refusal::BadRequest, e.to_string()),
        Err(_) => refuse(Refusal::ServerError, "recording the group failed".into()),
    }
}
