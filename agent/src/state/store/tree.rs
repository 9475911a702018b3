//! Tree objects: one per directory, its entries sorted by name, each with full metadata and
//! its content's hash (files) or its child tree's hash (directories).
//!
//! On disk a tree is `MAGIC`, one byte saying how the rest is stored (0 raw, 1 zstd), then
//! the postcard encoding of [`Tree`]. A tree's hash is blake3 of the uncompressed encoding,
//! so the same directory has the same hash however it was stored.

use std::io::Read;

use ferry_core::{Entry, EntryKind, Meta, RelPath, RootMeta, Xattr};
use serde::{Deserialize, Serialize};

/// Largest tree object read or written, stored or decompressed: a larger one is an error,
/// never an allocation.
pub const MAX_TREE_BYTES: u64 = 256 << 20;
/// Deepest directory nesting walked (a [`RelPath`] of 4096 bytes has at most 2048 levels).
pub const MAX_DEPTH: usize = 2048;
/// Encodings larger than this are zstd-compressed.
const COMPRESS_OVER: usize = 4096;
const MAGIC: &[u8; 4] = b"FST1";

/// The blake3 hash of a tree object (or of a file's content), shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TreeHash(pub [u8; 32]);

impl TreeHash {
    /// The hash as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<TreeHash> {
        parse_hex(s.as_bytes()).map(TreeHash)
    }
}

impl std::fmt::Debug for TreeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for TreeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What a tree entry is, with the hash that names its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    /// A regular file whose content is the object with this blake3.
    File {
        /// blake3 of the content.
        content: [u8; 32],
    },
    /// A directory: its tree, and how many entries and file bytes lie beneath it.
    Dir {
        /// The child tree.
        tree: TreeHash,
        /// Entries beneath it (at any depth).
        entries: u64,
        /// Bytes of regular files beneath it.
        bytes: u64,
    },
    /// A symbolic link (never followed).
    Symlink {
        /// Its target, verbatim.
        target: Vec<u8>,
    },
    /// Another name of the file at `to`, as the manifest had it. The content is kept too, so
    /// the entry stays whole when a later round changes or removes `to`: materializing
    /// links to `to` only while it still has this content.
    HardLink {
        /// The path this entry was linked to.
        to: RelPath,
        /// blake3 of the content.
        content: [u8; 32],
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
}

impl Node {
    /// The content hash of a file or hard link.
    pub fn content(&self) -> Option<[u8; 32]> {
        match self {
            Node::File { content } | Node::HardLink { content, .. } => Some(*content),
            _ => None,
        }
    }
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Its name in the directory (one path component).
    pub name: Vec<u8>,
    /// What it is.
    pub node: Node,
    /// Size in bytes for files and hard links; 0 otherwise.
    pub size: u64,
    /// Ownership, permissions, mtime.
    pub meta: Meta,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl TreeEntry {
    /// The entry named `name` of `e`'s kind with `node` (the manifest's metadata).
    pub(crate) fn from_entry(e: &Entry, node: Node) -> TreeEntry {
        let size = if node.content().is_some() { e.size } else { 0 };
        TreeEntry {
            name: e.path.file_name().to_vec(),
            node,
            size,
            meta: e.meta,
            xattrs: e.xattrs.clone(),
        }
    }

    /// The entry as a manifest entry at `path` (files and hard links carry their content
    /// hash in `hash`).
    pub fn to_entry(&self, path: RelPath) -> Entry {
        let kind = match &self.node {
            Node::File { .. } => EntryKind::File,
            Node::Dir { .. } => EntryKind::Dir,
            Node::Symlink { target } => EntryKind::Symlink { target: target.clone() },
            Node::HardLink { to, .. } => EntryKind::HardLink { to: to.clone() },
            Node::Fifo => EntryKind::Fifo,
            Node::CharDevice { rdev } => EntryKind::CharDevice { rdev: *rdev },
            Node::BlockDevice { rdev } => EntryKind::BlockDevice { rdev: *rdev },
        };
        Entry {
            path,
            kind,
            size: self.size,
            meta: self.meta,
            xattrs: self.xattrs.clone(),
            hash: self.node.content(),
        }
    }

    /// (entries, bytes) this entry accounts for, itself included.
    pub(crate) fn totals(&self) -> (u64, u64) {
        match &self.node {
            Node::Dir { entries, bytes, .. } => (entries.saturating_add(1), *bytes),
            Node::File { .. } => (1, self.size),
            _ => (1, 0),
        }
    }
}

/// One directory: its entries sorted by name; the root tree also holds the root's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tree {
    /// The root directory's own metadata (root trees only).
    pub root: Option<RootMeta>,
    /// Entries, sorted by name, names unique.
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    /// The stored bytes of the tree and its hash.
    pub(crate) fn encode(&self) -> Result<(Vec<u8>, TreeHash), String> {
        let raw = postcard::to_allocvec(self).map_err(|e| e.to_string())?;
        if raw.len() as u64 > MAX_TREE_BYTES {
            return Err(format!("a tree of {} bytes exceeds {MAX_TREE_BYTES}", raw.len()));
        }
        let hash = TreeHash(*blake3::hash(&raw).as_bytes());
        let mut out = MAGIC.to_vec();
        if raw.len() > COMPRESS_OVER {
            out.push(1);
            out.extend(zstd::bulk::compress(&raw, 3).map_err(|e| e.to_string())?);
        } else {
            out.push(0);
            out.extend(raw);
        }
        Ok((out, hash))
    }

    /// Decodes stored tree bytes, checking them against `want` and every rule a tree keeps
    /// (sorted unique names that are single path components).
    pub(crate) fn decode(stored: &[u8], want: TreeHash) -> Result<Tree, String> {
        let Some(rest) = stored.strip_prefix(&MAGIC[..]) else {
            return Err("not a tree object (bad header)".into());
        };
        let raw = match rest.split_first() {
            Some((0, raw)) => raw.to_vec(),
            Some((1, z)) => {
                let mut out = Vec::new();
                zstd::stream::read::Decoder::new(z)
                    .map_err(|e| e.to_string())?
                    .take(MAX_TREE_BYTES + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("bad compressed tree: {e}"))?;
                if out.len() as u64 > MAX_TREE_BYTES {
                    return Err(format!("tree decompresses beyond {MAX_TREE_BYTES} bytes"));
                }
                out
            }
            _ => return Err("not a tree object (bad header)".into()),
        };
        let got = TreeHash(*blake3::hash(&raw).as_bytes());
        if got != want {
            return Err(format!("tree hashes to {got}, not to its name"));
        }
        let tree: Tree = postcard::from_bytes(&raw).map_err(|e| format!("bad tree: {e}"))?;
        let mut prev: Option<&[u8]> = None;
        for e in &tree.entries {
            RelPath::from_component(&e.name)
                .map_err(|err| format!("bad entry name {:?}: {err}", lossy(&e.name)))?;
            if prev.is_some_and(|p| p >= e.name.as_slice()) {
                return Err(format!("entries not sorted at {:?}", lossy(&e.name)));
            }
            prev = Some(&e.name);
        }
        Ok(tree)
    }

    /// The entry named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn hex(b: &[u8; 32]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

pub(crate) fn parse_hex(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let v = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = v(s[2 * i])? << 4 | v(s[2 * i + 1])?;
    }
    Some(out)
}
