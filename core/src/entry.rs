//! [`Entry`]: one file, directory, link or special file of a tree, as a manifest carries it.

use serde::{Deserialize, Serialize};

use crate::path::RelPath;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; the target is kept verbatim and never followed.
    Symlink {
        /// The link's target, as raw bytes.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// Another name for a regular file that appears earlier in the same manifest.
    HardLink {
        /// The earlier entry this one shares an inode with.
        to: RelPath,
    },
    /// A named pipe (only when special files are asked for).
    Fifo,
    /// A character device (only when special files are asked for).
    CharDevice {
        /// The device number.
        rdev: u64,
    },
    /// A block device (only when special files are asked for).
    BlockDevice {
        /// The device number.
        rdev: u64,
    },
}

impl EntryKind {
    /// A short name for logs and itemized output.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::HardLink { .. } => "hardlink",
            EntryKind::Fifo => "fifo",
            EntryKind::CharDevice { .. } => "chardev",
            EntryKind::BlockDevice { .. } => "blockdev",
        }
    }
}

/// Ownership, permissions and modification time of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits, including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// One extended attribute, name and value as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Xattr {
    /// Full name including its namespace, e.g. `user.comment`.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// One object of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it lives beneath the root.
    pub path: RelPath,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes for files; 0 otherwise.
    pub size: u64,
    /// Ownership, permissions, mtime.
    pub meta: Meta,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// blake3 of the content, present for files when `--checksum` is on.
    pub hash: Option<[u8; 32]>,
}

/// Metadata of the sync root itself (the root is never an [`Entry`]: it has no name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMeta {
    /// Ownership, permissions, mtime of the root directory.
    pub meta: Meta,
    /// Its extended attributes.
    pub xattrs: Vec<Xattr>,
}

/// An entry of the destination's own tree, with the inode facts planning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// The entry as it would appear in a manifest.
    pub entry: Entry,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links to the inode.
    pub nlink: u64,
    /// Device of the filesystem the entry lives on.
    pub dev: u64,
}
