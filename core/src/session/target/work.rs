//! The target's interface to its driver: the [`TargetWork`] it asks for, the
//! [`TargetOutcome`] it is answered with, and the [`Itemized`] plan it reports.

use crate::delta::{BlockSize, SignatureHeader};
use crate::entry::{Entry, LocalEntry, RootMeta};
use crate::message::{Encoding, FileId, Payload};
use crate::path::RelPath;

/// Work the target asks its driver to do. Every path is beneath the destination root.
#[derive(Debug)]
pub enum TargetWork {
    /// Walk on: up to `max` more entries of the destination's tree, in path order.
    Scan {
        /// Most entries to return.
        max: usize,
    },
    /// blake3 of the destination's file at `path` (`--checksum`).
    HashLocal {
        /// The file being decided.
        file: FileId,
        /// Its path.
        path: RelPath,
    },
    /// Does a journal of an interrupted round hold the first segments of this file (same
    /// path, size and mtime)? Reply `Resumable` with their chaining values (empty: no). The
    /// driver keeps that partial file as `file`'s temp file; `Write`s of `Kept` segments read
    /// it back.
    Resume {
        /// The file.
        file: FileId,
        /// Its path.
        path: RelPath,
        /// The source's size.
        size: u64,
        /// The source's mtime.
        mtime_ns: i64,
    },
    /// Open the destination's file at `path` as the basis for `file` and sign it.
    Signature {
        /// The file.
        file: FileId,
        /// The basis path (the same path as the file).
        path: RelPath,
        /// Block size to sign with.
        block_size: BlockSize,
    },
    /// Rebuild segment `index` of `file` into its temp file (creating it at index 0).
    Write {
        /// The file.
        file: FileId,
        /// Where it will live.
        path: RelPath,
        /// Segment index.
        index: u64,
        /// Literal data or a delta against the basis opened by `Signature`.
        payload: Payload,
        /// Payload encoding.
        encoding: Encoding,
        /// The payload.
        data: Vec<u8>,
        /// Exact number of bytes the segment must produce.
        len: usize,
        /// Size of the whole file being rebuilt.
        file_len: u64,
        /// The source's mtime of the file (with its size, the resume journal's key).
        mtime_ns: i64,
    },
    /// Verify the rebuilt file against `hash` and apply `entry`'s metadata to it (still under
    /// its temp name). Reply `Verified` or `Mismatch`.
    Finish {
        /// The file.
        file: FileId,
        /// The source's entry: path, size and metadata.
        entry: Entry,
        /// blake3 the rebuilt content must have.
        hash: [u8; 32],
    },
    /// Gather the `gaps` of the basis opened for `file`, end to end, and sign them (second
    /// pass of a two-level delta). Reply with `Signed`.
    FineSignature {
        /// The file.
        file: FileId,
        /// Sorted, disjoint `(offset, len)` ranges of the basis, already validated.
        gaps: Vec<(u64, u64)>,
        /// Fine block size.
        block_size: BlockSize,
    },
    /// Make the verified files durable (fsync, or one syncfs for a large batch), then rename
    /// each into place, replacing whatever is there (a directory tree included). Reply
    /// `Committed`.
    Commit {
        /// Files previously `Verified`.
        files: Vec<FileId>,
    },
    /// Drop the temp file and basis of `file`.
    Discard {
        /// The file.
        file: FileId,
        /// The round is failing: keep a partial file the resume journal describes, for the
        /// next round.
        keep_partial: bool,
    },
    /// Same content, new metadata: make a new inode (clone of the old content), never chmod
    /// the existing one, which a snapshot may share.
    Retouch {
        /// The source's entry.
        entry: Entry,
    },
    /// Create a directory (mode 0700 until its metadata is set at the end).
    MakeDir {
        /// The source's entry.
        entry: Entry,
        /// Remove a non-directory that is in the way first.
        replace: bool,
    },
    /// Create a symlink or special file beside its path and rename it into place.
    Link {
        /// The source's entry.
        entry: Entry,
    },
    /// Make `path` another name of the file at `to` (skip if it already is).
    HardLink {
        /// The new name.
        path: RelPath,
        /// The existing file.
        to: RelPath,
    },
    /// Remove an entry the source does not have (a directory with its contents), not
    /// crossing into other filesystems.
    Delete {
        /// The destination's entry.
        entry: LocalEntry,
    },
    /// Set a directory's permissions, ownership, xattrs and mtime, after its children.
    DirMeta {
        /// The source's entry.
        entry: Entry,
    },
    /// Set the destination root's own metadata, like the source root's.
    RootMeta {
        /// The source root's metadata.
        root: RootMeta,
    },
    /// fsync every directory this round changed.
    SyncDirs,
}

/// What the driver reports back for a [`TargetWork`].
#[derive(Debug)]
pub enum TargetOutcome {
    /// The next scan batch.
    Scanned {
        /// Entries, in path order.
        entries: Vec<LocalEntry>,
        /// Whether the walk is complete.
        done: bool,
    },
    /// blake3 of a local file.
    Hashed([u8; 32]),
    /// Chaining values of the segments an interrupted round left of a file (empty: none).
    Resumable(Vec<[u8; 32]>),
    /// Signature of a basis; `None` when the basis could not be opened (send whole).
    Signed(Option<(SignatureHeader, Vec<u8>)>),
    /// A segment was written; how many bytes came from the basis.
    Written {
        /// Bytes copied from the basis.
        matched: u64,
    },
    /// The rebuilt file matched the source's blake3 and has its metadata; not yet in place.
    Verified(WorkCounts),
    /// A batch of verified files is durable and in place.
    Committed(WorkCounts),
    /// The rebuilt content did not match the source's blake3; nothing was renamed.
    Mismatch,
    /// Work done; what it counted.
    Done(WorkCounts),
    /// The peer's data was invalid (bad delta, bad compression): a protocol error.
    BadData(String),
    /// A local failure that ends the round (I/O error, permission, no space).
    Fatal(String),
}

/// Counters a work item reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkCounts {
    /// Entries removed.
    pub deleted: u64,
    /// Ownership changes skipped (not root).
    pub ownership_skipped: u64,
    /// Entries left alone because they are mount points or on another filesystem.
    pub mount_points_skipped: u64,
    /// Whether a link or directory was actually created (false: it was already right).
    pub created: bool,
    /// Entries that could not be made this round (a hard link whose file is missing).
    pub failed: u64,
}

/// What the plan does with one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not on the destination: created.
    New,
    /// Content differs: rebuilt (by delta when a basis exists).
    Changed,
    /// Same content, different metadata: a new inode with the new metadata.
    Metadata,
    /// On the destination only: removed (`--delete`).
    Delete,
    /// Same on both sides.
    Unchanged,
    /// Not created: the receiving side's policy refuses it (a special file without
    /// `--specials`).
    Refused,
}

/// One line of the itemized plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Itemized {
    /// The path.
    pub path: RelPath,
    /// What happens to it.
    pub action: Action,
    /// What kind of entry it is (the source's kind, or the destination's for deletes).
    pub kind: &'static str,
}
