//! Checking snapshots against their recorded root hash, and restoring them as linked trees.

use std::io;
use std::path::Path;

use ferry_core::LocalEntry;
use rustix::fs as rfs;
use serde::Serialize;

use super::{io_err, SnapshotError, SnapshotRecord, Snapshots};
use crate::fs::tree::walk_tree_from;
use crate::fs::Root;
use crate::state::commit::{HashCache, TreeHasher};

/// The outcome of [`Snapshots::verify`].
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The snapshot.
    pub id: String,
    /// The hash its record holds.
    pub recorded: String,
    /// The hash of the tree as it is now, every file read.
    pub computed: String,
    /// Entries walked.
    pub entries: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl Verification {
    /// Whether the snapshot is intact.
    pub fn ok(&self) -> bool {
        !self.recorded.is_empty() && self.recorded == self.computed
    }
}

impl Snapshots {
    /// Re-reads every file of snapshot `id` and compares the tree's root hash with the one
    /// recorded when it was taken.
    ///
    /// # Errors
    /// An unknown snapshot, or I/O errors walking it.
    pub fn verify(&self, id: &str) -> Result<Verification, SnapshotError> {
        let rec = self.tree_record(id)?;
        let path = self.path(id);
        read_back(rec, &path).map_err(io_err(format!("reading snapshot {}", path.display())))
    }

    /// The record of snapshot `id`, which must be a tree Ferry can read (not a
    /// `--snapshot-command` one).
    fn tree_record(&self, id: &str) -> Result<SnapshotRecord, SnapshotError> {
        let rec =
            self.list()?.into_iter().find(|r| r.id == id).ok_or_else(|| SnapshotError::Io {
                what: format!("snapshot {id}"),
                source: io::Error::from(io::ErrorKind::NotFound),
            })?;
        if !rec.has_tree() {
            return Err(SnapshotError::Unsupported {
                kind: "command",
                why: format!(
                    "snapshot {id} lives in your storage (taken by --snapshot-command); check it \
                     with that storage's tools against root hash {}",
                    rec.root_hash
                ),
            });
        }
        Ok(rec)
    }

    /// Restores snapshot `id` into `to`, which must not exist yet (it is built beside it and
    /// renamed into place without replacing anything), as a tree of reflinked
    /// copies (own inodes, shared blocks: cheap, and writing there never changes the
    /// snapshot) or, with `hardlinks`, of hard links to the snapshot's inodes (cheap on any
    /// filesystem, but writing there changes the snapshot too). The result is then read back
    /// whole and its root hash compared with the snapshot's record. Returns that check.
    ///
    /// # Errors
    /// [`SnapshotError::Unsupported`] when the filesystem cannot clone (nothing is left
    /// behind: copy instead), I/O errors otherwise.
    pub fn restore_linked(
        &self,
        id: &str,
        to: &Path,
        hardlinks: bool,
    ) -> Result<Verification, SnapshotError> {
        let rec = self.tree_record(id)?;
        let kind = if hardlinks { "hardlink" } else { "reflink" };
        let src = self.path(id);
        // Built under a name of our own beside `to`, checked, then renamed into place without
        // replacing anything: a failure only ever removes what this call made.
        let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let staged = to.with_file_name(format!(".{name}.ferry-restore-{}", std::process::id()));
        // The snapshot's own name is not followed: a symlink planted there is no snapshot.
        let walked = Root::open_with(&src, true)
            .and_then(|root| walk_tree_from(root, Some((&staged, !hardlinks)), None));
        if let Err(e) = walked {
            if e.kind() != io::ErrorKind::AlreadyExists {
                let _ = std::fs::remove_dir_all(&staged);
            }
            let how = if hardlinks { "linking" } else { "cloning" };
            let why = format!("{how} into {}: {e}", staged.display());
            return Err(SnapshotError::Unsupported { kind, why });
        }
        let v = match read_back(rec, &staged) {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(io_err(format!("reading back {}", staged.display()))(e));
            }
        };
        if !v.ok() {
            let _ = std::fs::remove_dir_all(&staged);
            return Ok(v);
        }
        let placed =
            rfs::renameat_with(rfs::CWD, &staged, rfs::CWD, to, rfs::RenameFlags::NOREPLACE);
        if let Err(e) = placed {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(io_err(format!("renaming the restored tree to {}", to.display()))(
                e.into(),
            ));
        }
        Ok(v)
    }
}

/// Reads every file of the tree at `path` (the same walk and hashing as a commit, with an empty
/// cache; `path` itself is not followed if it is a symlink) and checks its root hash against
/// `rec`'s.
pub(super) fn read_back(rec: SnapshotRecord, path: &Path) -> io::Result<Verification> {
    let mut hasher = TreeHasher::default();
    let (empty, mut kept) = (HashCache::default(), HashCache::default());
    let mut visit = |root: &Root, l: &LocalEntry| hasher.visit(root, l, &empty, &mut kept);
    let root = Root::open_with(path, true)?;
    let (entries, _) = walk_tree_from(root, None, Some(&mut visit))?;
    Ok(Verification {
        id: rec.id,
        recorded: rec.root_hash,
        computed: hasher.finish(),
        entries,
        bytes: hasher.hashed_bytes,
    })
}
