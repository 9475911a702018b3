//! [`ReceivePolicy`]: what the receiving side accepts from a peer's manifest, decided by the
//! receiving side alone, whatever the peer sends.
//!
//! The sender's `--specials` only filters the sender's own walk; a hostile sender (a client
//! pushing into `ferry serve`, or a server answering a pull) can put any entry kind, mode and
//! xattr in its manifest. The target session passes every entry (and the root's metadata)
//! through [`ReceivePolicy::admit`] before planning it, so the one decision lives here:
//!
//! - fifos and device nodes are refused unless the receiving side allows specials
//!   (`--specials` on `sync`/`pull`, `ferry serve --specials`); counted in
//!   `Stats::specials_refused`, and the destination's entry at that path is left alone;
//! - setuid and setgid bits of non-directories, and `security.capability` xattrs, are dropped
//!   unless `--keep-privileged` (rsync's `--no-super` spirit); counted in
//!   `Stats::privileged_dropped`. A directory's setgid bit (group inheritance, no privilege)
//!   is kept;
//! - owners and groups are mapped (`--usermap`/`--groupmap FROM:TO,...`, numeric) and then
//!   forced (`--chown UID:GID`), for clusters whose ids differ.
//!
//! It does not decide paths (see [`crate::RelPath`]) or limits (see [`crate::Limits`]).

use crate::entry::{Entry, EntryKind, Meta, RootMeta, Xattr};

/// The xattr that grants file capabilities on exec: privileged like setuid.
pub const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// setuid and setgid.
const PRIVILEGED_BITS: u32 = 0o6000;

/// The receiving side's own rules for a peer's entries. The default refuses specials, drops
/// privileged bits and maps nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivePolicy {
    /// Create fifos, sockets and device nodes.
    pub specials: bool,
    /// Keep setuid/setgid bits and `security.capability` xattrs.
    pub keep_privileged: bool,
    /// Owner and group every entry gets, after the maps (`--chown`).
    pub chown: (Option<u32>, Option<u32>),
    /// Owner ids replaced (`--usermap FROM:TO`); the first matching pair wins.
    pub usermap: Vec<(u32, u32)>,
    /// Group ids replaced (`--groupmap FROM:TO`).
    pub groupmap: Vec<(u32, u32)>,
}

/// What the policy made of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not created: a special file without `specials`.
    Refused,
    /// Created, possibly changed; `dropped` when privileged bits or xattrs were removed.
    Admitted {
        /// Whether setuid/setgid or a capability xattr was removed.
        dropped: bool,
    },
}

/// A `--usermap`/`--groupmap`/`--chown` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid id mapping {0:?}: expected FROM:TO[,FROM:TO...] with numeric ids")]
pub struct MapError(pub String);

impl ReceivePolicy {
    /// Applies the policy to `e` in place: refuses it, or maps its owner and strips what is
    /// not allowed.
    pub fn admit(&self, e: &mut Entry) -> Admission {
        if !self.specials
            && matches!(
                e.kind,
                EntryKind::Fifo | EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. }
            )
        {
            return Admission::Refused;
        }
        let dir = e.kind == EntryKind::Dir;
        let dropped = self.meta(&mut e.meta, dir) | self.xattrs(&mut e.xattrs);
        Admission::Admitted { dropped }
    }

    /// Applies the policy to the root's metadata; `true` when something privileged was
    /// dropped.
    pub fn admit_root(&self, r: &mut RootMeta) -> bool {
        self.meta(&mut r.meta, true) | self.xattrs(&mut r.xattrs)
    }

    fn meta(&self, m: &mut Meta, dir: bool) -> bool {
        if let Some(&(_, to)) = self.usermap.iter().find(|(from, _)| *from == m.uid) {
            m.uid = to;
        }
        if let Some(&(_, to)) = self.groupmap.iter().find(|(from, _)| *from == m.gid) {
            m.gid = to;
        }
        m.uid = self.chown.0.unwrap_or(m.uid);
        m.gid = self.chown.1.unwrap_or(m.gid);
        // Only the permission bits a mode can carry; nothing above 0o7777 reaches chmod.
        m.mode &= 0o7777;
        let strip = if dir { 0o4000 } else { PRIVILEGED_BITS };
        if !self.keep_privileged && m.mode & strip != 0 {
            m.mode &= !strip;
            return true;
        }
        false
    }

    fn xattrs(&self, x: &mut Vec<Xattr>) -> bool {
        if self.keep_privileged {
            return false;
        }
        let before = x.len();
        x.retain(|x| x.name != CAPABILITY_XATTR);
        x.len() != before
    }

    /// Parses `FROM:TO[,FROM:TO...]` (numeric ids).
    ///
    /// # Errors
    /// [`MapError`] for anything else.
    pub fn parse_map(s: &str) -> Result<Vec<(u32, u32)>, MapError> {
        s.split(',')
            .map(|pair| {
                let (a, b) = pair.split_once(':').ok_or_else(|| MapError(s.into()))?;
                let id = |v: &str| v.trim().parse::<u32>().map_err(|_| MapError(s.into()));
                Ok((id(a)?, id(b)?))
            })
            .collect()
    }

    /// Parses `--chown UID:GID`, `UID:` or `:GID` (numeric ids).
    ///
    /// # Errors
    /// [`MapError`] for anything else.
    pub fn parse_chown(s: &str) -> Result<(Option<u32>, Option<u32>), MapError> {
        let (u, g) = s.split_once(':').unwrap_or((s, ""));
        let id = |v: &str| {
            if v.is_empty() {
                Ok(None)
            } else {
                v.parse::<u32>().map(Some).map_err(|_| MapError(s.into()))
            }
        };
        let r = (id(u)?, id(g)?);
        if r == (None, None) {
            return Err(MapError(s.into()));
        }
        Ok(r)
    }
}

/// Fuzz harness body: arbitrary entries through arbitrary policies; what comes out obeys
/// the policy whatever went in.
#[cfg(any(fuzzing, test))]
pub fn fuzz_admit(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let policy = ReceivePolicy {
        specials: flags & 1 != 0,
        keep_privileged: flags & 2 != 0,
        chown: ((flags & 4 != 0).then_some(1000), (flags & 8 != 0).then_some(2000)),
        usermap: if flags & 16 != 0 { vec![(0, 65534), (65534, 0)] } else { Vec::new() },
        groupmap: if flags & 32 != 0 { vec![(0, 65534)] } else { Vec::new() },
    };
    let Ok(mut e) = postcard::from_bytes::<Entry>(rest) else { return };
    let before = e.clone();
    match policy.admit(&mut e) {
        Admission::Refused => {
            assert!(!policy.specials);
            assert!(matches!(
                e.kind,
                EntryKind::Fifo | EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. }
            ));
        }
        Admission::Admitted { dropped } => {
            assert_eq!((&e.path, &e.kind, e.size), (&before.path, &before.kind, before.size));
            assert_eq!(e.meta.mode & !0o7777, 0);
            if !policy.specials {
                assert!(!matches!(
                    e.kind,
                    EntryKind::Fifo | EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. }
                ));
            }
            if !policy.keep_privileged {
                let bits = if e.kind == EntryKind::Dir { 0o4000 } else { 0o6000 };
                assert_eq!(e.meta.mode & bits, 0);
                assert!(e.xattrs.iter().all(|x| x.name != CAPABILITY_XATTR));
            } else {
                assert!(!dropped);
                assert_eq!(e.meta.mode, before.meta.mode & 0o7777);
                assert_eq!(e.xattrs, before.xattrs);
            }
            if let Some(u) = policy.chown.0 {
                assert_eq!(e.meta.uid, u);
            }
            if let Some(g) = policy.chown.1 {
                assert_eq!(e.meta.gid, g);
            }
            // Idempotent: a second pass changes nothing more.
            let once = e.clone();
            let mut twice = e;
            let again = policy.admit(&mut twice);
            if policy.usermap.is_empty() && policy.groupmap.is_empty() {
                assert_eq!(twice, once);
                assert_eq!(again, Admission::Admitted { dropped: false });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;

    fn entry(kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: RelPath::new("x").expect("valid"),
            kind,
            size: 0,
            meta: Meta { mode, uid: 0, gid: 0, mtime_ns: 0 },
            xattrs: vec![Xattr { name: CAPABILITY_XATTR.to_vec(), value: vec![1] }],
            hash: None,
        }
    }

    #[test]
    fn the_default_refuses_specials_and_drops_privilege() {
        let p = ReceivePolicy::default();
        for k in [
            EntryKind::Fifo,
            EntryKind::CharDevice { rdev: 1 },
            EntryKind::BlockDevice { rdev: 0xfe00 },
        ] {
            assert_eq!(p.admit(&mut entry(k, 0o666)), Admission::Refused);
        }
        let mut f = entry(EntryKind::File, 0o6755);
        assert_eq!(p.admit(&mut f), Admission::Admitted { dropped: true });
        assert_eq!(f.meta.mode, 0o755);
        assert!(f.xattrs.is_empty());
        let mut d = entry(EntryKind::Dir, 0o2775);
        d.xattrs.clear();
        assert_eq!(p.admit(&mut d), Admission::Admitted { dropped: false });
        assert_eq!(d.meta.mode, 0o2775, "a directory's setgid is group inheritance");
        let keep = ReceivePolicy { specials: true, keep_privileged: true, ..p };
        let mut f = entry(EntryKind::File, 0o4755);
        assert_eq!(keep.admit(&mut f), Admission::Admitted { dropped: false });
        assert_eq!((f.meta.mode, f.xattrs.len()), (0o4755, 1));
        assert!(matches!(
            keep.admit(&mut entry(EntryKind::Fifo, 0o600)),
            Admission::Admitted { .. }
        ));
    }

    /// The seed corpus of the `receive_policy` fuzz target holds real entries, not bytes the
    /// harness rejects before the policy sees them.
    #[test]
    fn the_fuzz_seeds_are_entries() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/receive_policy");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("corpus") {
            let data = std::fs::read(e.expect("entry").path()).expect("seed");
            assert!(postcard::from_bytes::<Entry>(&data[1..]).is_ok());
            n += 1;
        }
        assert!(n >= 5);
    }

    #[test]
    fn ids_are_mapped_then_forced() {
        let p = ReceivePolicy {
            usermap: ReceivePolicy::parse_map("0:1000,5:6").expect("valid"),
            groupmap: ReceivePolicy::parse_map("0:2000").expect("valid"),
            ..ReceivePolicy::default()
        };
        let mut f = entry(EntryKind::File, 0o644);
        p.admit(&mut f);
        assert_eq!((f.meta.uid, f.meta.gid), (1000, 2000));
        let forced = ReceivePolicy { chown: ReceivePolicy::parse_chown(":7").expect("valid"), ..p };
        let mut f = entry(EntryKind::File, 0o644);
        forced.admit(&mut f);
        assert_eq!((f.meta.uid, f.meta.gid), (1000, 7));
        assert!(ReceivePolicy::parse_map("root:0").is_err());
        assert!(ReceivePolicy::parse_chown(":").is_err());
    }
}
