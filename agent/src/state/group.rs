//! Consistency groups on a destination: one record per generation naming the snapshot each
//! member module got in it, so the members can be restored (or promoted) as they were
//! together.
//!
//! ```text
//!   STATE/groups/GROUP/000001-20261130T010203Z.json   one generation: its members' snapshots
//!   STATE/groups/GROUP/.lock                          held while a generation is numbered
//! ```
//!
//! A generation is recorded only after every member's round is recorded (its commit record
//! and snapshot exist), and only while the recorder holds every member's round claim
//! ([`ModuleState::try_claim`]), so no round of a member runs, and no retention drops a
//! member's snapshot, between the check and the write. The record is written whole (temp
//! file, fsync, rename, directory fsync): a crash leaves the generation recorded or not, never
//! a generation with a member missing.
//!
//! Retention never drops a snapshot that any generation record names ([`Groups::pinned`]):
//! a generation is kept as long as its record is, and its record is removed only by hand.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::snapshot::{utc, valid_id};
use super::{check_module_name, write_state_file, ModuleState};

/// Members a group may have: far more than an application's volumes, and a bound on what a
/// peer's request and a record make the destination read.
pub const MAX_MEMBERS: usize = 256;

/// Largest generation record read back.
const MAX_RECORD_BYTES: u64 = 256 * 1024;

/// Generations of one group read back at most (the list is read whole).
const MAX_GENERATIONS: usize = 100_000;

/// One member of a generation: a module and the snapshot it got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// The module.
    pub module: String,
    /// Its snapshot in this generation.
    pub snapshot: String,
    /// The round that snapshot captures.
    pub round: u64,
    /// The snapshot's root hash (see [`crate::state::commit`]).
    pub root_hash: String,
}

/// The record of one generation of a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Generation {
    /// The group.
    pub group: String,
    /// Its id (also its file name): generation number and UTC time, as snapshot ids.
    pub generation: String,
    /// When it was recorded, seconds since the Unix epoch.
    pub time_unix: u64,
    /// Every member and its snapshot.
    pub members: Vec<Member>,
}

/// Why a generation could not be recorded or read.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The group name is not a DNS-1123 label.
    #[error("group {name:?}: {why}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The member list is empty, too long, repeats a module, or names a module badly.
    #[error("group {group:?}: {why}")]
    BadMembers {
        /// The group.
        group: String,
        /// What is wrong.
        why: String,
    },
    /// A member's state is claimed by a running round, or the group by another recorder.
    #[error("group {group:?}: {what} is busy (a round or another generation is being recorded); retry later")]
    Busy {
        /// The group.
        group: String,
        /// What is busy.
        what: String,
    },
    /// A member's snapshot is not among the module's snapshots.
    #[error(
        "group {group:?}: module {module:?} has no snapshot {snapshot:?}: no generation recorded"
    )]
    MissingSnapshot {
        /// The group.
        group: String,
        /// The module.
        module: String,
        /// The snapshot asked for.
        snapshot: String,
    },
    /// No generation of that id (or none at all).
    #[error("group {group:?} has no generation {generation:?}")]
    NotFound {
        /// The group.
        group: String,
        /// The generation asked for (empty: any).
        generation: String,
    },
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// The consistency groups under a state directory.
#[derive(Debug, Clone)]
pub struct Groups {
    state: PathBuf,
}

impl Groups {
    /// The groups under the state directory `state` (nothing is read or created).
    pub fn at(state: &Path) -> Groups {
        Groups { state: state.to_path_buf() }
    }

    /// Records a new generation of `group` whose members are `(module, snapshot id)`: checks
    /// every member's snapshot is among its module's snapshots while holding every member's
    /// round claim, then writes the record durably. Blocking.
    ///
    /// # Errors
    /// [`GroupError`]: a bad name or member list, a busy member, a missing snapshot, I/O.
    pub fn record(
        &self,
        group: &str,
        members: &[(String, String)],
    ) -> Result<Generation, GroupError> {
        check_group_name(group)?;
        let bad = |why: String| GroupError::BadMembers { group: group.into(), why };
        if members.is_empty() {
            return Err(bad("no members".into()));
        }
        if members.len() > MAX_MEMBERS {
            return Err(bad(format!("more than {MAX_MEMBERS} members")));
        }
        let mut seen = HashSet::new();
        for (m, _) in members {
            check_module_name(m).map_err(bad)?;
            if !seen.insert(m.as_str()) {
                return Err(bad(format!("module {m:?} is named twice")));
            }
        }
        let busy = |what: String| GroupError::Busy { group: group.into(), what };
        let io = |what: String| move |source| GroupError::Io { what, source };
        // Every member's claim first: no round of a member, and so no retention of its
        // snapshots, can run until the record is written.
        let mut claims = Vec::with_capacity(members.len());
        let mut out = Vec::with_capacity(members.len());
        for (module, snapshot) in members {
            let ms = ModuleState::new(&self.state, module);
            match ms.try_claim().map_err(io(format!("claiming module {module:?}")))? {
                Some(c) => claims.push(c),
                None => return Err(busy(format!("module {module:?}"))),
            }
            let missing = || GroupError::MissingSnapshot {
                group: group.into(),
                module: module.clone(),
                snapshot: snapshot.clone(),
            };
            if !valid_id(snapshot) {
                return Err(missing());
            }
            let list = ms.snapshots().list().map_err(|e| GroupError::Io {
                what: format!("listing module {module:?}'s snapshots"),
                source: io::Error::other(e.to_string()),
            })?;
            let rec = list.into_iter().find(|r| &r.id == snapshot).ok_or_else(missing)?;
            out.push(Member {
                module: module.clone(),
                snapshot: rec.id,
                round: rec.round,
                root_hash: rec.root_hash,
            });
        }
        let rel = format!("groups/{group}");
        let dir = ModuleState::new(&self.state, "_")
            .subdir(&rel)
            .map_err(io(format!("creating {}", self.state.join(&rel).display())))?;
        let dfd = open_dir_nofollow(&dir).map_err(io(format!("opening {}", dir.display())))?;
        let lock = rfs::openat(
            &dfd,
            ".lock",
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io(format!("{}/.lock", dir.display()))(e.into()))?;
        match rfs::flock(&lock, rfs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(busy("the group".into())),
            Err(e) => return Err(io(format!("locking {}/.lock", dir.display()))(e.into())),
        }
        let last = ids_in(&dfd).map_err(io(format!("reading {}", dir.display())))?;
        let number = last.iter().filter_map(|id| id.split('-').next()?.parse::<u64>().ok()).max();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("{:06}-{}", number.unwrap_or(0) + 1, utc(now, false));
        let rec = Generation {
            group: group.into(),
            generation: id.clone(),
            time_unix: now,
            members: out,
        };
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| io("encoding".into())(e.into()))?;
        let path = dir.join(format!("{id}.json"));
        write_state_file(&path, &bytes).map_err(io(format!("writing {}", path.display())))?;
        drop(claims);
        Ok(rec)
    }

    /// Every generation of `group`, oldest first. Records that cannot be read, or that name
    /// another group or id than their place, are left out with a warning.
    ///
    /// # Errors
    /// A bad group name; I/O errors reading the directory (a missing one is no generation).
    pub fn list(&self, group: &str) -> Result<Vec<Generation>, GroupError> {
        check_group_name(group)?;
        let Some(dfd) = self.group_dir(group)? else { return Ok(Vec::new()) };
        let what = || format!("{}", self.state.join("groups").join(group).display());
        let ids = ids_in(&dfd).map_err(|source| GroupError::Io { what: what(), source })?;
        let mut out = Vec::new();
        for id in ids.into_iter().take(MAX_GENERATIONS) {
            match read_record(&dfd, &id) {
                Ok(r) if r.group == group && r.generation == id => out.push(r),
                Ok(_) => tracing::warn!("{}/{id}.json names another group or id; left out", what()),
                Err(e) => tracing::warn!("{}/{id}.json: {e}; left out", what()),
            }
        }
        Ok(out)
    }

    /// Generation `id` of `group`, or its newest with `None`.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; as [`Groups::list`].
    pub fn find(&self, group: &str, id: Option<&str>) -> Result<Generation, GroupError> {
        let all = self.list(group)?;
        let found = match id {
            Some(id) => all.into_iter().find(|g| g.generation == id),
            None => all.into_iter().last(),
        };
        found.ok_or_else(|| GroupError::NotFound {
            group: group.into(),
            generation: id.unwrap_or_default().into(),
        })
    }

    /// The names of every group with a directory here.
    ///
    /// # Errors
    /// I/O errors reading `STATE/groups` (a missing one is no group).
    pub fn names(&self) -> Result<Vec<String>, GroupError> {
        let io = |source| GroupError::Io {
            what: format!("{}", self.state.join("groups").display()),
            source,
        };
        let root = match crate::fs::Root::open(&self.state) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let dfd =
            match root.open_beneath(b"groups", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io(e)),
            };
        let names = crate::fs::list_dir(&dfd).map_err(io)?;
        Ok(names
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .filter(|n| check_group_name(n).is_ok())
            .collect())
    }

    /// The snapshots of `module` that some generation of some group names: retention keeps
    /// them.
    ///
    /// # Errors
    /// When a group's directory cannot be read: the caller must then keep everything.
    pub fn pinned(&self, module: &str) -> Result<HashSet<String>, GroupError> {
        let mut out = HashSet::new();
        for g in self.names()? {
            for generation in self.list(&g)? {
                out.extend(
                    generation
                        .members
                        .into_iter()
                        .filter(|m| m.module == module)
                        .map(|m| m.snapshot),
                );
            }
        }
        Ok(out)
    }

    /// `STATE/groups/GROUP`, opened without following a symlink; `None` when missing.
    fn group_dir(&self, group: &str) -> Result<Option<OwnedFd>, GroupError> {
        let io = |source| GroupError::Io {
            what: format!("{}", self.state.join("groups").join(group).display()),
            source,
        };
        let root = match crate::fs::Root::open(&self.state) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let rel = format!("groups/{group}");
        match root.open_beneath(rel.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

/// Checks `name` can name a group: a DNS-1123 label, as list-file module names are (it
/// becomes a directory name under the state directory).
///
/// # Errors
/// [`GroupError::BadName`].
pub fn check_group_name(name: &str) -> Result<(), GroupError> {
    crate::many::check_name(name).map_err(|why| GroupError::BadName {
        name: ferry_transport::printable(name).into_owned(),
        why: why.replace("module name", "group name"),
    })
}

fn open_dir_nofollow(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The generation ids in a group's directory (names `ID.json` with a valid id), sorted.
fn ids_in(dfd: &OwnedFd) -> io::Result<Vec<String>> {
    let mut ids: Vec<String> = crate::fs::list_dir(dfd)?
        .into_iter()
        .filter_map(|n| String::from_utf8(n).ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|id| valid_id(id))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Reads generation `id`'s record: a regular file, opened without following a symlink (and
/// without blocking on a planted FIFO), at most [`MAX_RECORD_BYTES`].
fn read_record(dfd: &OwnedFd, id: &str) -> io::Result<Generation> {
    let f = rfs::openat(
        dfd,
        format!("{id}.json"),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&f)?;
    if crate::fs::file_type(&st) != rfs::FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(f).take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(io::Error::other(format!("larger than {MAX_RECORD_BYTES} bytes")));
    }
    let rec: Generation = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    if rec.members.len() > MAX_MEMBERS {
        return Err(io::Error::other(format!("more than {MAX_MEMBERS} members")));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ferry_core::Stats;

    use super::*;
    use crate::state::snapshot::{Retention, Snapshotter};

    /// Takes a snapshot of `data` as module `module`'s next round; returns its id.
    fn snap(state: &Path, module: &str, data: &Path, keep: Retention) -> String {
        let ms = ModuleState::new(state, module);
        let how = Snapshotter::Hardlink;
        let s = ms.open_snapshots(data, &how).unwrap();
        let commits = ms.commits();
        let (_, rec) = s
            .take(data, &Stats::default(), &keep, &commits, &[], Err("a test".into()), &how)
            .unwrap();
        rec.id
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (state, a, b) = (t.path().join("state"), t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("f"), d.display().to_string()).unwrap();
        }
        (t, state, a, b)
    }

    #[test]
    fn generations_name_each_member_snapshot_and_are_numbered_in_order() {
        let (_t, state, a, b) = setup();
        let g = Groups::at(&state);
        assert!(g.list("db").unwrap().is_empty(), "no directory yet: no generation");
        let (sa, sb) = (
            snap(&state, "a", &a, Retention::default()),
            snap(&state, "b", &b, Retention::default()),
        );
        let first = g.record("db", &[("a".into(), sa.clone()), ("b".into(), sb.clone())]).unwrap();
        assert!(first.generation.starts_with("000001-"), "{}", first.generation);
        assert_eq!(
            first
                .members
                .iter()
                .map(|m| (m.module.as_str(), m.snapshot.as_str()))
                .collect::<Vec<_>>(),
            [("a", sa.as_str()), ("b", sb.as_str())]
        );
        assert!(first.members.iter().all(|m| m.round == 1 && m.root_hash.len() == 64));
        let sa2 = snap(&state, "a", &a, Retention::default());
        let second = g.record("db", &[("a".into(), sa2), ("b".into(), sb)]).unwrap();
        assert!(second.generation.starts_with("000002-"), "{}", second.generation);
        let all = g.list("db").unwrap();
        assert_eq!(all, vec![first.clone(), second.clone()]);
        assert_eq!(g.find("db", None).unwrap(), second);
        assert_eq!(g.find("db", Some(&first.generation)).unwrap(), first);
        assert!(matches!(
            g.find("db", Some("000009-20260101T000000Z")),
            Err(GroupError::NotFound { .. })
        ));
        assert_eq!(g.names().unwrap(), vec!["db".to_string()]);
    }

    #[test]
    fn a_missing_snapshot_or_a_busy_member_records_no_generation() {
        let (_t, state, a, b) = setup();
        let g = Groups::at(&state);
        let sa = snap(&state, "a", &a, Retention::default());
        let sb = snap(&state, "b", &b, Retention::default());
        let r = g.record(
            "db",
            &[("a".into(), sa.clone()), ("b".into(), "000007-20260101T000000Z".into())],
        );
        assert!(
            matches!(r, Err(GroupError::MissingSnapshot { ref module, .. }) if module == "b"),
            "{r:?}"
        );
        let r = g.record("db", &[("a".into(), sa.clone()), ("b".into(), "../../etc".into())]);
        assert!(matches!(r, Err(GroupError::MissingSnapshot { .. })), "{r:?}");
        // Module b's snapshot exists, but b is in a round.
        let claim = ModuleState::new(&state, "b").try_claim().unwrap().unwrap();
        let r = g.record("db", &[("a".into(), sa.clone()), ("b".into(), sb.clone())]);
        assert!(matches!(r, Err(GroupError::Busy { .. })), "{r:?}");
        drop(claim);
        for bad in [vec![], vec![("a".to_string(), sa.clone()), ("a".to_string(), sa.clone())]] {
            assert!(matches!(g.record("db", &bad), Err(GroupError::BadMembers { .. })));
        }
        for name in ["", "DB", "a/b", "..", "-x"] {
            assert!(
                matches!(
                    g.record(name, &[("a".into(), sa.clone())]),
                    Err(GroupError::BadName { .. })
                ),
                "{name:?}"
            );
        }
        assert!(g.list("db").unwrap().is_empty(), "nothing recorded");
        g.record("db", &[("a".into(), sa), ("b".into(), sb)]).unwrap();
        assert_eq!(g.list("db").unwrap().len(), 1);
    }

    #[test]
    fn retention_keeps_every_snapshot_a_generation_names() {
        let (_t, state, a, b) = setup();
        let g = Groups::at(&state);
        let last1 = Retention { last: 1, ..Retention::default() };
        let sa = snap(&state, "a", &a, last1);
        let sb = snap(&state, "b", &b, last1);
        g.record("db", &[("a".into(), sa.clone()), ("b".into(), sb)]).unwrap();
        let mut dropped = Vec::new();
        for i in 0..3 {
            std::fs::write(a.join("f"), format!("round {i}")).unwrap();
            dropped.push(snap(&state, "a", &a, last1));
        }
        let ids: Vec<String> = ModuleState::new(&state, "a")
            .snapshots()
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![sa, dropped[2].clone()], "the named one and the newest");
    }

    #[test]
    fn planted_symlinks_and_hostile_records_are_not_followed_or_trusted() {
        let (t, state, a, _b) = setup();
        let g = Groups::at(&state);
        let sa = snap(&state, "a", &a, Retention::default());
        // A symlink planted as the group's directory: neither read through nor written through.
        let victim = t.path().join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::create_dir_all(state.join("groups")).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("groups/db")).unwrap();
        assert!(g.list("db").is_err());
        assert!(g.record("db", &[("a".into(), sa.clone())]).is_err());
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "nothing written through it");
        // Records that lie about their place, are too large or are symlinks are left out.
        let rec = g.record("web", &[("a".into(), sa.clone())]).unwrap();
        let dir = state.join("groups/web");
        let mut liar = rec.clone();
        liar.group = "db".into();
        std::fs::write(
            dir.join("000005-20260101T000000Z.json"),
            serde_json::to_vec(&liar).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("000006-20260101T000000Z.json"),
            vec![b' '; MAX_RECORD_BYTES as usize + 1],
        )
        .unwrap();
        std::os::unix::fs::symlink(
            dir.join(format!("{}.json", rec.generation)),
            dir.join("000007-20260101T000000Z.json"),
        )
        .unwrap();
        std::fs::write(dir.join("not-an-id.json"), b"{}").unwrap();
        assert_eq!(g.list("web").unwrap(), vec![rec]);
    }
}
