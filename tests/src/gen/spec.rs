//! The plain data a generated tree is: entries, their kinds, content described by seeds
//! rather than stored, and mtimes with nanoseconds.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::PATTERN_PERIOD;
use ferry_core::rng::SplitMix64;

/// A modification time with nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mtime {
    /// Seconds since the epoch.
    pub sec: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

impl Mtime {
    /// The same instant in nanoseconds since the epoch, as in
    /// [`crate::tree::Node::mtime_ns`].
    pub fn as_nanos(self) -> i128 {
        i128::from(self.sec) * 1_000_000_000 + i128::from(self.nsec)
    }
}

/// One write into a sparse file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseWrite {
    /// Where the bytes go.
    pub offset: u64,
    /// How many pseudorandom bytes.
    pub len: u32,
    /// Seed for those bytes.
    pub seed: u64,
}

/// A file's content, described rather than stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// `len` pseudorandom bytes from `seed`.
    Random {
        /// Seed for [`SplitMix64`].
        seed: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A pseudorandom block of [`PATTERN_PERIOD`] bytes repeated to `len`.
    /// Large and self-similar: inserting into it shifts everything after,
    /// which is what a rolling-checksum delta must still match.
    Pattern {
        /// Seed for the repeated block.
        seed: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A file of `len` bytes that is all hole except for `writes`.
    Sparse {
        /// Apparent size.
        len: u64,
        /// The only data blocks; each lies within `len`.
        writes: Vec<SparseWrite>,
    },
}

impl Content {
    /// Apparent size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Random { len, .. }
            | Content::Pattern { len, .. }
            | Content::Sparse { len, .. } => *len,
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The full content in memory.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write_into(&mut out);
        out
    }

    /// Creates a new file at `path` with this content. Holes in
    /// [`Content::Sparse`] are left unallocated.
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        match self {
            Content::Sparse { len, writes } => {
                file.set_len(*len)?;
                for w in writes {
                    file.write_all_at(&sparse_bytes(w), w.offset)?;
                }
                Ok(())
            }
            _ => {
                let mut out = io::BufWriter::with_capacity(1 << 16, &mut file);
                self.write_into(&mut out)?;
                out.flush()
            }
        }
    }

    fn write_into(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Content::Random { seed, len } => {
                let mut rng = SplitMix64::new(*seed);
                // A multiple of 8, so chunking does not change the stream.
                let mut buf = vec![0; 1 << 16];
                let mut left = *len;
                while left > 0 {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    rng.fill(&mut buf[..n]);
                    out.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
            Content::Pattern { seed, len } => {
                let period = SplitMix64::bytes(*seed, PATTERN_PERIOD);
                let mut left = *len;
                while left > 0 {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(period.len());
                    out.write_all(&period[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
            Content::Sparse { len, writes } => {
                let mut all = vec![0; usize::try_from(*len).unwrap_or(usize::MAX)];
                for w in writes {
                    let data = sparse_bytes(w);
                    let start = usize::try_from(w.offset).unwrap_or(usize::MAX);
                    let end = start.saturating_add(data.len()).min(all.len());
                    if start < end {
                        all[start..end].copy_from_slice(&data[..end - start]);
                    }
                }
                out.write_all(&all)
            }
        }
    }
}

fn sparse_bytes(w: &SparseWrite) -> Vec<u8> {
    SplitMix64::bytes(w.seed, w.len as usize)
}

/// What a [`TreeEntry`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File(Content),
    /// A symlink with this raw target.
    Symlink(Vec<u8>),
    /// Another name for the earlier regular file at this relative path. It
    /// shares that file's inode, so its own mode, mtime, owner and xattr are
    /// ignored.
    HardLink(Vec<u8>),
}

/// One entry of a [`TreeSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative path as raw bytes, `/`-separated. Its parent is the root or
    /// an earlier [`EntryKind::Dir`] entry.
    pub path: Vec<u8>,
    /// What to create.
    pub kind: EntryKind,
    /// Permission bits; ignored for symlinks (Linux has no `lchmod`).
    pub mode: u32,
    /// Modification time, symlinks and directories included.
    pub mtime: Mtime,
    /// `(uid, gid)` to give the entry; applied only when running as root.
    pub owner: Option<(u32, u32)>,
    /// Value for [`XATTR_NAME`](super::XATTR_NAME); files and directories only.
    pub xattr: Option<Vec<u8>>,
}

/// A whole tree, in creation order: parents before children, hard-link
/// targets before their links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSpec {
    /// Entries below the root.
    pub entries: Vec<TreeEntry>,
    /// Modification time of the root directory itself.
    pub root_mtime: Mtime,
}

impl TreeSpec {
    /// Relative paths of all entries, in creation order.
    pub fn paths(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|e| e.path.clone()).collect()
    }

    /// Relative paths of the directories, root (`b""`) first.
    pub fn dirs(&self) -> Vec<Vec<u8>> {
        let dirs = self.entries.iter().filter(|e| e.kind == EntryKind::Dir);
        std::iter::once(Vec::new()).chain(dirs.map(|e| e.path.clone())).collect()
    }

    /// Total apparent size of the regular files (hard links counted once).
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File(c) => c.len(),
                _ => 0,
            })
            .sum()
    }
}
