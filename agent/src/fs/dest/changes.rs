//! What one round changed beneath the root, as the snapshot store needs it: the seam that lets
//! a snapshot cost what changed instead of what the tree holds.
//!
//! The destination notes every name it creates, replaces, re-stamps or removes, with the
//! *source's* [`Entry`] for it (so metadata the destination could not apply, such as
//! ownership without root, is still what the snapshot records), the blake3 verified for files
//! written this round, and the [`ContentKey`] of the inode now at the name. Names the round
//! did not touch are not listed, so the list is bounded by the round's changes.

use std::collections::BTreeMap;

use ferry_core::entry::{Entry, RootMeta};
use ferry_core::RelPath;

use super::ContentKey;

/// What a round changed beneath the root (see the module docs).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RoundChanges {
    /// Names created or changed (content or metadata), sorted by path: the source's entry
    /// (`hash` is `Some` for a file whose content was written and verified this round) and,
    /// for regular files and hard links, the inode now at the name.
    pub upserts: Vec<(Entry, Option<ContentKey>)>,
    /// Names removed, with everything beneath them, sorted. Applied before `upserts`: a
    /// name removed and then made again (a directory replaced by a file, say) is in both.
    pub removed: Vec<RelPath>,
    /// The root directory's metadata, when the round set it differently from before.
    pub root: Option<RootMeta>,
    /// Why this list cannot be trusted to be complete, when it cannot (the snapshot is then
    /// built from the whole tree).
    pub incomplete: Option<String>,
}

impl RoundChanges {
    /// Whether the round changed nothing.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty() && self.root.is_none()
    }
}

/// Collects a round's changes as they happen; last word per name wins.
#[derive(Debug, Default)]
pub(super) struct ChangeLog {
    upserts: BTreeMap<Vec<u8>, (Entry, Option<ContentKey>)>,
    removed: BTreeMap<Vec<u8>, RelPath>,
    root: Option<RootMeta>,
    incomplete: Option<String>,
}

impl ChangeLog {
    pub(super) fn upsert(&mut self, entry: Entry, key: Option<ContentKey>) {
        self.upserts.insert(entry.path.as_bytes().to_vec(), (entry, key));
    }

    /// `path` and everything beneath it are gone: earlier upserts there no longer hold.
    pub(super) fn remove(&mut self, path: &RelPath) {
        let p = path.as_bytes().to_vec();
        self.upserts.remove(&p);
        let (lo, hi) = subtree_range(&p);
        let beneath: Vec<Vec<u8>> =
            self.upserts.range(lo.clone()..hi.clone()).map(|(k, _)| k.clone()).collect();
        for k in beneath {
            self.upserts.remove(&k);
        }
        // A removal of a parent covers removals beneath it.
        let inner: Vec<Vec<u8>> = self.removed.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in inner {
            self.removed.remove(&k);
        }
        self.removed.insert(p, path.clone());
    }

    pub(super) fn root(&mut self, root: RootMeta) {
        self.root = Some(root);
    }

    pub(super) fn incomplete(&mut self, why: String) {
        self.incomplete.get_or_insert(why);
    }

    pub(super) fn finish(self) -> RoundChanges {
        RoundChanges {
            upserts: self.upserts.into_values().collect(),
            removed: self.removed.into_values().collect(),
            root: self.root,
            incomplete: self.incomplete,
        }
    }
}

/// The key range of the names strictly beneath `p`: `p/` up to (not including) `p0`
/// (`'0'` is the byte after `'/'`).
fn subtree_range(p: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = p.to_vec();
    lo.push(b'/');
    let mut hi = p.to_vec();
    hi.push(b'/' + 1);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use ferry_core::entry::{EntryKind, Meta};

    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: RelPath::new(path.as_bytes().to_vec()).unwrap(),
            kind,
            size: 0,
            meta: Meta { mode: 0o644, uid: 0, gid: 0, mtime_ns: 0 },
            xattrs: Vec::new(),
            hash: None,
        }
    }

    fn paths(c: &RoundChanges) -> (Vec<String>, Vec<String>) {
        (
            c.upserts.iter().map(|(e, _)| e.path.to_string()).collect(),
            c.removed.iter().map(|p| p.to_string()).collect(),
        )
    }

    /// One local round from `src` into `dst` (with deletes), recording what it changed.
    fn round(src: &std::path::Path, dst: &std::path::Path) -> RoundChanges {
        use crate::round::{driver, open_destination, open_source, RoundOptions, SyncOptions};
        let opts = SyncOptions {
            round: RoundOptions { delete: true, ..RoundOptions::default() },
            threads: 2,
            ..SyncOptions::default()
        };
        let source = open_source(src, &opts).unwrap();
        let dest = open_destination(dst, &opts).unwrap();
        dest.record_changes();
        let session = opts.session();
        let never = std::time::Duration::from_secs(3600);
        driver::run_local(source, dest.clone(), &session, 2, &mut |_| {}, &mut |_| {}, never)
            .unwrap();
        dest.take_changes()
    }

    fn set_mtime(p: &std::path::Path, secs: i64) {
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 },
            last_modification: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 },
        };
        rustix::fs::utimensat(rustix::fs::CWD, p, &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .unwrap();
    }

    /// The change list of a real round names exactly what the round did: everything at
    /// first, nothing when nothing changed, and then each kind of change with the source's
    /// entry, the verified hash of written files and the inode now at the name.
    #[test]
    fn a_round_lists_exactly_what_it_changed() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        for d in ["d", "d/sub", "g/inner", "keep"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        for (f, body) in [("a", "one"), ("b", "two"), ("c", "three"), ("d/sub/x", "x")] {
            std::fs::write(src.join(f), body).unwrap();
        }
        std::fs::write(src.join("g/inner/y"), "y").unwrap();
        std::fs::write(src.join("keep/z"), "z").unwrap();
        std::os::unix::fs::symlink("a", src.join("s")).unwrap();
        for p in ["d/sub", "d", "g/inner", "g", "keep", ""] {
            set_mtime(&src.join(p), 1_000_000);
        }

        let first = round(&src, &dst);
        let (up, rm) = paths(&first);
        assert_eq!(
            up,
            [
                "a",
                "b",
                "c",
                "d",
                "d/sub",
                "d/sub/x",
                "g",
                "g/inner",
                "g/inner/y",
                "keep",
                "keep/z",
                "s"
            ]
        );
        assert!(rm.is_empty(), "{rm:?}");
        assert!(first.incomplete.is_none());
        let a = first.upserts.iter().find(|(e, _)| e.path.to_string() == "a").unwrap();
        assert_eq!(a.0.hash, Some(*blake3::hash(b"one").as_bytes()), "the verified hash");
        let st = std::fs::metadata(dst.join("a")).unwrap();
        assert_eq!(a.1.map(|k| (k.0, k.1)), Some((st.dev(), st.ino())), "the live inode");

        let none = round(&src, &dst);
        assert!(
            none.is_empty() && none.incomplete.is_none(),
            "a round changing nothing lists nothing: {none:?}"
        );

        // One of each: content, metadata only, delete, a directory replaced by a file, a new
        // file in a new directory, a hard link, a retargeted symlink, a directory's mode.
        std::fs::write(src.join("a"), "one, edited").unwrap();
        std::fs::set_permissions(src.join("b"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(src.join("c")).unwrap();
        std::fs::remove_dir_all(src.join("g")).unwrap();
        std::fs::write(src.join("g"), "now a file").unwrap();
        std::fs::create_dir(src.join("new")).unwrap();
        std::fs::write(src.join("new/n"), "n").unwrap();
        std::fs::hard_link(src.join("keep/z"), src.join("zlink")).unwrap();
        std::fs::remove_file(src.join("s")).unwrap();
        std::os::unix::fs::symlink("b", src.join("s")).unwrap();
        std::fs::set_permissions(src.join("d/sub"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        for p in ["d/sub", "d", "keep", ""] {
            set_mtime(&src.join(p), 1_000_000);
        }
        let third = round(&src, &dst);
        let (up, rm) = paths(&third);
        assert_eq!(up, ["a", "b", "d/sub", "g", "new", "new/n", "s", "zlink"], "{third:?}");
        assert_eq!(rm, ["c", "g"]);
        let kind = |p: &str| third.upserts.iter().find(|(e, _)| e.path.to_string() == p).unwrap();
        assert_eq!(kind("b").0.meta.mode, 0o600);
        assert_eq!(kind("b").0.hash, None, "metadata only: content not re-verified");
        let b = std::fs::metadata(dst.join("b")).unwrap();
        assert_eq!(kind("b").1.map(|k| k.1), Some(b.ino()), "the retouched inode");
        assert!(
            matches!(&kind("zlink").0.kind, EntryKind::HardLink { to } if to.to_string() == "keep/z")
        );
        let z = std::fs::metadata(dst.join("keep/z")).unwrap();
        assert_eq!(kind("zlink").1.map(|k| k.1), Some(z.ino()));
        // The round's renames moved the root's mtime, and the round set it back: recorded,
        // with the source's metadata.
        let root = third.root.as_ref().map(|r| r.meta);
        assert_eq!(root, Some(crate::fs::meta_of(&rustix::fs::stat(&src).unwrap())));
    }

    #[test]
    fn a_removal_drops_earlier_upserts_beneath_it_but_not_beside_it() {
        let mut log = ChangeLog::default();
        log.upsert(entry("d", EntryKind::Dir), None);
        log.upsert(entry("d/a", EntryKind::File), Some((1, 2, 0, 0)));
        log.upsert(entry("d!x", EntryKind::File), None);
        log.upsert(entry("d0", EntryKind::File), None);
        log.upsert(entry("dd/a", EntryKind::File), None);
        log.remove(&RelPath::new(b"d/sub".to_vec()).unwrap());
        log.remove(&RelPath::new(b"d".to_vec()).unwrap());
        let (up, rm) = paths(&log.finish());
        assert_eq!(up, ["d!x", "d0", "dd/a"]);
        assert_eq!(rm, ["d"], "the removal of d covers d/sub");
    }

    #[test]
    fn a_name_removed_then_made_again_is_in_both_lists() {
        let mut log = ChangeLog::default();
        log.remove(&RelPath::new(b"x".to_vec()).unwrap());
        log.upsert(entry("x", EntryKind::File), None);
        log.upsert(entry("x", EntryKind::Symlink { target: b"t".to_vec() }), None);
        let c = log.finish();
        let (up, rm) = paths(&c);
        assert_eq!((up, rm), (vec!["x".to_string()], vec!["x".to_string()]));
        assert!(matches!(c.upserts[0].0.kind, EntryKind::Symlink { .. }), "the last word wins");
    }
}
