//! What a round changed, as the store needs it to build the next tree from the last one.

use ferry_core::{Entry, RelPath, RootMeta};

pub use crate::fs::dest::ContentKey;

/// The changes of one round, relative to the previous snapshot's tree.
///
/// Removals apply first, then upserts in path order, then hard links (so a link may name a
/// file the same round added). A removed directory removes its subtree; an upsert of a
/// directory over one keeps its children, over anything else starts it empty.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    /// Entries created or changed: the source manifest's entry (for files `hash` is the
    /// blake3 verified this round or already known, or `None` to hash the live file) and,
    /// for files, the (dev, ino, size, mtime ns) of the live committed inode, which the
    /// store links and checks: a live file that is not that inode is stored by its true
    /// content hash, never under a wrong one.
    pub upserts: Vec<(Entry, Option<ContentKey>)>,
    /// Paths removed (a missing one is ignored).
    pub removed: Vec<RelPath>,
    /// The root directory's metadata, when it changed.
    pub root: Option<RootMeta>,
}

impl ChangeSet {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty() && self.root.is_none()
    }
}
