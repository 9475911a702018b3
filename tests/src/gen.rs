//! Random trees and random edits to them: proptest strategies, and the code
//! that writes them to disk.
//!
//! Strategies produce plain data ([`TreeSpec`], [`Mutation`]) with file
//! contents given as seeds, so a failing case prints compactly and replays
//! exactly. [`materialize`] and [`apply`] turn that data into files.
//!
//! The generator aims at the places a tree copier goes wrong: sizes around
//! block boundaries, holes, hard links, symlinks that dangle, loop or leave
//! the tree, names that are not UTF-8, nanosecond mtimes on every kind of
//! entry (symlinks and directories included), ownership, xattrs, and edits
//! that change an entry's type.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_core::rng::SplitMix64;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, XattrFlags, CWD};
use rustix::io::Errno;

use crate::tree::join;

/// Directories nest at most this deep below the root.
pub const MAX_DEPTH: usize = 4;

/// Upper bound on the apparent size of all file contents in one tree, so a
/// proptest case stays quick. Files that would overflow it are shrunk.
pub const TREE_BUDGET: u64 = 7 << 20;

/// File sizes on either side of the boundaries a block-based copier cares
/// about, plus one large size that is not a multiple of anything.
pub const INTERESTING_SIZES: &[u64] = &[0, 1, 511, 512, 4095, 4096, 65536, (1 << 20) + 3];

/// Permission bits given to generated files.
pub const FILE_MODES: &[u32] = &[0o644, 0o600, 0o755, 0o700, 0o640];

/// Permission bits given to generated directories; all keep the owner's
/// `rwx` so the trees can be walked and removed without root.
pub const DIR_MODES: &[u32] = &[0o755, 0o700, 0o750];

/// Period of [`Content::Pattern`]; deliberately not a multiple of any block
/// size, so repeated blocks appear at many different phases.
pub const PATTERN_PERIOD: usize = 65_536 + 17;

/// The extended attribute set on some generated files and directories.
pub const XATTR_NAME: &str = "user.ferry";

/// Owners given to some entries when the tests run as root.
const OWNERS: &[(u32, u32)] = &[(1000, 1000), (65534, 65534), (0, 1000), (4242, 0)];

/// Names that have tripped up path handling somewhere: spaces, leading dots
/// and dashes, glob characters, newlines, non-UTF-8 bytes.
const NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"file.txt",
    b"dir",
    b"with space",
    b".hidden",
    b"-dash",
    "\u{fc}n\u{ef}c\u{f8}d\u{e9}".as_bytes(),
    b"\xff\xfe",
    b"caf\xe9",
    b"new\nline",
    b"*?[glob]",
    b"back\\slash",
    b"~",
];

/// Symlink targets that do not depend on the tree: absolute, dangling,
/// escaping the root, looping (`.` and `..`) and not UTF-8.
const FIXED_TARGETS: &[&[u8]] = &[
    b"/etc/passwd",
    b"/nonexistent",
    b"nonexistent",
    b".",
    b"..",
    b"../../../../../../../../etc",
    b"\xff\xfe",
    b"dir/with space/x",
];

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
    /// Value for [`XATTR_NAME`]; files and directories only.
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

// The strategies first generate entries whose parent, hard-link source and
// symlink target are indexes into "whatever exists so far"; `resolve` then
// turns those into paths. That keeps every generated tree valid while still
// letting proptest shrink entries independently.

#[derive(Clone, Debug)]
enum RawTarget {
    Entry(Index),
    Fixed(Vec<u8>),
}

#[derive(Clone, Debug)]
enum RawKind {
    Dir,
    File(Content),
    Symlink(RawTarget),
    HardLink(Index),
}

#[derive(Clone, Debug)]
struct RawEntry {
    parent: Index,
    name: Vec<u8>,
    kind: RawKind,
    file_mode: u32,
    dir_mode: u32,
    mtime: Mtime,
    owner: Option<(u32, u32)>,
    xattr: Option<Vec<u8>>,
}

/// Random trees of up to 32 entries; see the module docs for what they
/// contain.
pub fn tree_spec() -> impl Strategy<Value = TreeSpec> {
    (vec(raw_entry(), 0..32), mtime()).prop_map(|(raw, root_mtime)| resolve(raw, root_mtime))
}

/// A random tree together with up to 8 mutations aimed at its entries.
pub fn tree_and_mutations() -> impl Strategy<Value = (TreeSpec, Vec<Mutation>)> {
    tree_spec().prop_flat_map(|spec| {
        let mutations = vec(mutation(&spec), 0..=8);
        (Just(spec), mutations)
    })
}

/// A file or directory name (never `.`, `..`, empty, or containing `/`).
pub fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-z0-9]{1,8}".prop_map(String::into_bytes),
        2 => select(NAMES).prop_map(<[u8]>::to_vec),
        // Long, but leaves room for the ".N" suffix that de-duplicates.
        1 => Just(vec![b'x'; 240]),
    ]
}

/// A modification time, mostly random with nanoseconds, sometimes on a
/// whole second or at the epoch itself.
pub fn mtime() -> impl Strategy<Value = Mtime> {
    // 2000-01-01 .. 2023-11-14: well in the past, so "now" never collides.
    let secs = 946_684_800_i64..1_700_000_000;
    prop_oneof![
        8 => (secs.clone(), 0u32..1_000_000_000).prop_map(|(sec, nsec)| Mtime { sec, nsec }),
        1 => secs.prop_map(|sec| Mtime { sec, nsec: 0 }),
        1 => Just(Mtime { sec: 0, nsec: 0 }),
    ]
}

/// File content: mostly small random data at interesting sizes, sometimes
/// a large repeating pattern or a sparse file.
pub fn content() -> impl Strategy<Value = Content> {
    let random_len = prop_oneof![select(INTERESTING_SIZES), 0u64..10_000];
    let sparse_write = (any::<Index>(), 1u32..200, any::<u64>());
    prop_oneof![
        6 => (any::<u64>(), random_len).prop_map(|(seed, len)| Content::Random { seed, len }),
        1 => (any::<u64>(), (256u64 << 10)..=(2 << 20))
            .prop_map(|(seed, len)| Content::Pattern { seed, len }),
        1 => ((64u64 << 10)..=(2 << 20), vec(sparse_write, 0..4)).prop_map(|(len, raw)| {
            let writes = raw
                .into_iter()
                .map(|(at, n, seed)| {
                    let offset = at.index(len as usize) as u64;
                    let room = u32::try_from(len - offset).unwrap_or(u32::MAX);
                    SparseWrite { offset, len: n.min(room), seed }
                })
                .collect();
            Content::Sparse { len, writes }
        }),
    ]
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let kind = prop_oneof![
        3 => Just(RawKind::Dir),
        5 => content().prop_map(RawKind::File),
        2 => prop_oneof![
            any::<Index>().prop_map(RawTarget::Entry),
            select(FIXED_TARGETS).prop_map(|t| RawTarget::Fixed(t.to_vec())),
        ]
        .prop_map(RawKind::Symlink),
        1 => any::<Index>().prop_map(RawKind::HardLink),
    ];
    let owner = prop_oneof![3 => Just(None), 1 => select(OWNERS).prop_map(Some)];
    let xattr = prop_oneof![3 => Just(None), 1 => vec(any::<u8>(), 0..64).prop_map(Some)];
    (any::<Index>(), name(), kind, select(FILE_MODES), select(DIR_MODES), mtime(), owner, xattr)
        .prop_map(|(parent, name, kind, file_mode, dir_mode, mtime, owner, xattr)| RawEntry {
            parent,
            name,
            kind,
            file_mode,
            dir_mode,
            mtime,
            owner,
            xattr,
        })
}

fn resolve(raw: Vec<RawEntry>, root_mtime: Mtime) -> TreeSpec {
    let mut entries: Vec<TreeEntry> = Vec::new();
    let mut taken = BTreeSet::new();
    // (path, depth), root first.
    let mut dirs: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0)];
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut budget = TREE_BUDGET;

    for r in raw {
        let parents: Vec<&(Vec<u8>, usize)> = match r.kind {
            RawKind::Dir => dirs.iter().filter(|(_, depth)| *depth < MAX_DEPTH).collect(),
            _ => dirs.iter().collect(),
        };
        // Never empty: the root has depth 0.
        let (parent, depth) = parents[r.parent.index(parents.len())].clone();
        let path = unique_child(&parent, &r.name, &taken);
        let (kind, mode, owner, xattr) = match r.kind {
            RawKind::Dir => {
                dirs.push((path.clone(), depth + 1));
                (EntryKind::Dir, r.dir_mode, r.owner, r.xattr)
            }
            RawKind::File(content) => {
                files.push(path.clone());
                (EntryKind::File(fit(content, &mut budget)), r.file_mode, r.owner, r.xattr)
            }
            RawKind::Symlink(RawTarget::Fixed(target)) => {
                (EntryKind::Symlink(target), 0o777, r.owner, None)
            }
            RawKind::Symlink(RawTarget::Entry(i)) => {
                let target = match entries.len() {
                    0 => Vec::new(),
                    n => entries[i.index(n)].path.clone(),
                };
                (EntryKind::Symlink(relative_target(depth, &target)), 0o777, r.owner, None)
            }
            RawKind::HardLink(_) if files.is_empty() => {
                let empty = Content::Random { seed: 0, len: 0 };
                files.push(path.clone());
                (EntryKind::File(empty), r.file_mode, r.owner, r.xattr)
            }
            RawKind::HardLink(i) => {
                (EntryKind::HardLink(files[i.index(files.len())].clone()), 0, None, None)
            }
        };
        taken.insert(path.clone());
        entries.push(TreeEntry { path, kind, mode, mtime: r.mtime, owner, xattr });
    }
    TreeSpec { entries, root_mtime }
}

/// `parent/name`, with a `.N` suffix if that path is already taken.
fn unique_child(parent: &[u8], name: &[u8], taken: &BTreeSet<Vec<u8>>) -> Vec<u8> {
    let mut base = parent.to_vec();
    if !base.is_empty() {
        base.push(b'/');
    }
    base.extend_from_slice(name);
    let mut path = base.clone();
    let mut n = 1;
    while taken.contains(&path) {
        path = base.clone();
        path.extend_from_slice(format!(".{n}").as_bytes());
        n += 1;
    }
    path
}

/// A relative symlink target reaching `target` (relative to the root) from
/// a directory `depth` levels below the root.
fn relative_target(depth: usize, target: &[u8]) -> Vec<u8> {
    let mut out = b"../".repeat(depth);
    out.extend_from_slice(target);
    if out.is_empty() {
        out.push(b'.');
    } else if out.ends_with(b"/") {
        out.pop();
    }
    out
}

/// Keeps a tree under [`TREE_BUDGET`]: content that does not fit becomes a
/// small random file.
fn fit(content: Content, budget: &mut u64) -> Content {
    let len = content.len();
    if len <= *budget {
        *budget -= len;
        return content;
    }
    let seed = match content {
        Content::Random { seed, .. } | Content::Pattern { seed, .. } => seed,
        Content::Sparse { len, .. } => len,
    };
    let len = (len % 4096).min(*budget);
    *budget -= len;
    Content::Random { seed, len }
}

/// Creates `spec` under the existing, empty directory `root`, and gives the
/// root [`TreeSpec::root_mtime`].
///
/// Ownership is applied only when running as root. Filesystems without
/// user xattrs get none.
pub fn materialize(root: &Path, spec: &TreeSpec) -> io::Result<()> {
    for e in &spec.entries {
        let path = join(root, &e.path);
        match &e.kind {
            EntryKind::Dir => fs::create_dir(&path)?,
            EntryKind::File(content) => content.write_to(&path)?,
            EntryKind::Symlink(target) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)?
            }
            EntryKind::HardLink(to) => fs::hard_link(join(root, to), &path)?,
        }
    }

    // Metadata after all content: creating a child or a hard link touches
    // the parent directory's mtime, and chown can clear mode bits.
    let as_root = rustix::process::geteuid().is_root();
    for e in &spec.entries {
        if matches!(e.kind, EntryKind::HardLink(_)) {
            continue;
        }
        let path = join(root, &e.path);
        if let (Some((uid, gid)), true) = (e.owner, as_root) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        }
        if !matches!(e.kind, EntryKind::Symlink(_)) {
            fs::set_permissions(&path, fs::Permissions::from_mode(e.mode))?;
        }
        if let Some(value) = &e.xattr {
            set_xattr(&path, value)?;
        }
    }

    for e in &spec.entries {
        if !matches!(e.kind, EntryKind::HardLink(_) | EntryKind::Dir) {
            set_mtime(&join(root, &e.path), e.mtime)?;
        }
    }
    // Deepest first, so setting a directory's mtime is never undone by work
    // inside it.
    let mut dirs: Vec<&TreeEntry> =
        spec.entries.iter().filter(|e| e.kind == EntryKind::Dir).collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.iter().filter(|&&b| b == b'/').count()));
    for e in dirs {
        set_mtime(&join(root, &e.path), e.mtime)?;
    }
    set_mtime(root, spec.root_mtime)
}

/// Sets [`XATTR_NAME`] on `path` (not following symlinks); a no-op on
/// filesystems without xattr support.
pub fn set_xattr(path: &Path, value: &[u8]) -> io::Result<()> {
    match rustix::fs::lsetxattr(path, XATTR_NAME, value, XattrFlags::empty()) {
        Err(e) if e == Errno::NOTSUP => Ok(()),
        r => Ok(r?),
    }
}

/// Sets the access and modification times of `path` without following a
/// symlink, so symlinks get their own mtime.
pub fn set_mtime(path: &Path, mtime: Mtime) -> io::Result<()> {
    let ts = Timespec { tv_sec: mtime.sec, tv_nsec: mtime.nsec.into() };
    let times = Timestamps { last_access: ts, last_modification: ts };
    Ok(rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// An edit to a tree, aimed at an entry by relative path. [`apply`] skips
/// it if the entry no longer exists or is of the wrong kind by then.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Overwrite up to `len` bytes of a file in place, from a position
    /// chosen by `at`.
    Edit {
        /// The file.
        path: Vec<u8>,
        /// Start, as an index into the file's current length.
        at: Index,
        /// Bytes to overwrite, clipped at the end of the file.
        len: u32,
        /// Seed for the new bytes.
        seed: u64,
    },
    /// Insert `len` bytes, shifting the rest of the file.
    Insert {
        /// The file.
        path: Vec<u8>,
        /// Where, as an index into the file's current length plus one.
        at: Index,
        /// Bytes to insert.
        len: u32,
        /// Seed for the new bytes.
        seed: u64,
    },
    /// Shorten a non-empty file.
    Truncate {
        /// The file.
        path: Vec<u8>,
        /// New length, as an index into the current length.
        keep: Index,
    },
    /// Add `len` bytes at the end of a file.
    Append {
        /// The file.
        path: Vec<u8>,
        /// Bytes to add.
        len: u32,
        /// Seed for the new bytes.
        seed: u64,
    },
    /// Rename a file or symlink within its directory (skipped if `to` is
    /// taken).
    Rename {
        /// The file or symlink.
        path: Vec<u8>,
        /// The new name.
        to: Vec<u8>,
    },
    /// Create a new file in a directory.
    Create {
        /// The directory (`b""` is the root).
        dir: Vec<u8>,
        /// The new name; skipped if taken.
        name: Vec<u8>,
        /// Length of the file.
        len: u32,
        /// Seed for its bytes.
        seed: u64,
    },
    /// Replace a file with an empty directory.
    FileToDir {
        /// The file.
        path: Vec<u8>,
    },
    /// Replace a directory and everything in it with a file.
    DirToFile {
        /// The directory.
        path: Vec<u8>,
        /// Length of the new file.
        len: u32,
        /// Seed for its bytes.
        seed: u64,
    },
    /// Replace a file with a symlink.
    FileToSymlink {
        /// The file.
        path: Vec<u8>,
        /// The symlink's target.
        target: Vec<u8>,
    },
    /// Replace a symlink with a file.
    SymlinkToFile {
        /// The symlink.
        path: Vec<u8>,
        /// Length of the new file.
        len: u32,
        /// Seed for its bytes.
        seed: u64,
    },
    /// Remove a file, symlink or whole directory.
    Delete {
        /// The entry.
        path: Vec<u8>,
    },
    /// Change a file's or directory's permission bits (directories keep
    /// owner `rwx`).
    Chmod {
        /// The entry.
        path: Vec<u8>,
        /// New permission bits.
        mode: u32,
    },
    /// Shift an entry's mtime (symlinks included) by a non-zero amount.
    Touch {
        /// The entry.
        path: Vec<u8>,
        /// Nanoseconds to add; may be negative.
        delta_ns: i64,
    },
}

/// One mutation aimed at an entry of `spec` (or, for [`Mutation::Create`],
/// at one of its directories). Each kind of mutation mostly picks entries of
/// the kind it applies to; earlier mutations may still have changed or
/// removed them, and a path that never exists is mixed in, so the skip path
/// gets exercised too.
pub fn mutation(spec: &TreeSpec) -> impl Strategy<Value = Mutation> {
    let pick = |want: &dyn Fn(&EntryKind) -> bool| {
        let mut paths: Vec<Vec<u8>> =
            spec.entries.iter().filter(|e| want(&e.kind)).map(|e| e.path.clone()).collect();
        paths.push(b"does-not-exist".to_vec());
        select(paths)
    };
    let any_path = pick(&|_| true);
    let file = pick(&|k| matches!(k, EntryKind::File(_) | EntryKind::HardLink(_)));
    let dir = pick(&|k| *k == EntryKind::Dir);
    let symlink = pick(&|k| matches!(k, EntryKind::Symlink(_)));
    let parent = select(spec.dirs());
    let seed = any::<u64>;
    let small = || 1u32..4096;
    let target = prop_oneof![select(FIXED_TARGETS).prop_map(<[u8]>::to_vec), any_path.clone()];
    let delta_ns = prop_oneof![-1_000_000_000_000_i64..0, 1_i64..1_000_000_000_000];
    prop_oneof![
        3 => (file.clone(), any::<Index>(), small(), seed())
            .prop_map(|(path, at, len, seed)| Mutation::Edit { path, at, len, seed }),
        3 => (file.clone(), any::<Index>(), small(), seed())
            .prop_map(|(path, at, len, seed)| Mutation::Insert { path, at, len, seed }),
        1 => (file.clone(), any::<Index>())
            .prop_map(|(path, keep)| Mutation::Truncate { path, keep }),
        1 => (file.clone(), 1u32..65536, seed())
            .prop_map(|(path, len, seed)| Mutation::Append { path, len, seed }),
        1 => (any_path.clone(), name()).prop_map(|(path, to)| Mutation::Rename { path, to }),
        1 => (parent, name(), 0u32..65536, seed())
            .prop_map(|(dir, name, len, seed)| Mutation::Create { dir, name, len, seed }),
        1 => file.clone().prop_map(|path| Mutation::FileToDir { path }),
        1 => (dir.clone(), small(), seed())
            .prop_map(|(path, len, seed)| Mutation::DirToFile { path, len, seed }),
        1 => (file.clone(), target)
            .prop_map(|(path, target)| Mutation::FileToSymlink { path, target }),
        1 => (symlink, small(), seed())
            .prop_map(|(path, len, seed)| Mutation::SymlinkToFile { path, len, seed }),
        1 => any_path.clone().prop_map(|path| Mutation::Delete { path }),
        1 => (prop_oneof![file, dir], select(FILE_MODES))
            .prop_map(|(path, mode)| Mutation::Chmod { path, mode }),
        1 => (any_path, delta_ns).prop_map(|(path, delta_ns)| Mutation::Touch { path, delta_ns }),
    ]
}

/// Applies `mutations` in order under `root`, returning how many took
/// effect. Mutations whose target is gone or of the wrong kind are
/// skipped; nothing is ever done through a symlink.
pub fn apply(root: &Path, mutations: &[Mutation]) -> io::Result<usize> {
    let mut applied = 0;
    for m in mutations {
        if apply_one(root, m)? {
            applied += 1;
        }
    }
    Ok(applied)
}

fn apply_one(root: &Path, m: &Mutation) -> io::Result<bool> {
    use Mutation as M;

    let target = match m {
        M::Create { dir, .. } => dir,
        M::Edit { path, .. }
        | M::Insert { path, .. }
        | M::Truncate { path, .. }
        | M::Append { path, .. }
        | M::Rename { path, .. }
        | M::FileToDir { path }
        | M::DirToFile { path, .. }
        | M::FileToSymlink { path, .. }
        | M::SymlinkToFile { path, .. }
        | M::Delete { path }
        | M::Chmod { path, .. }
        | M::Touch { path, .. } => path,
    };
    let Some((path, meta)) = lookup(root, target) else {
        return Ok(false);
    };
    let (file, dir, link) = (meta.is_file(), meta.is_dir(), meta.file_type().is_symlink());
    let is_root = target.is_empty();

    match m {
        M::Edit { at, len, seed, .. } if file && meta.len() > 0 => {
            let size = meta.len();
            let offset = at.index(size as usize) as u64;
            let n = u64::from(*len).min(size - offset);
            let f = open_nofollow(&path)?;
            f.write_all_at(&SplitMix64::bytes(*seed, n as usize), offset)?;
        }
        M::Insert { at, len, seed, .. } if file => {
            let mut f = open_nofollow(&path)?;
            let mut data = Vec::new();
            f.read_to_end(&mut data)?;
            let offset = at.index(data.len() + 1);
            data.splice(offset..offset, SplitMix64::bytes(*seed, *len as usize));
            // In place rather than write-and-rename, so hard links keep
            // sharing the edited inode.
            f.write_all_at(&data[offset..], offset as u64)?;
        }
        M::Truncate { keep, .. } if file && meta.len() > 0 => {
            let f = open_nofollow(&path)?;
            f.set_len(keep.index(meta.len() as usize) as u64)?;
        }
        M::Append { len, seed, .. } if file => {
            let f = open_nofollow(&path)?;
            f.write_all_at(&SplitMix64::bytes(*seed, *len as usize), meta.len())?;
        }
        M::Rename { to, .. } if file || link => {
            let new = path.with_file_name(OsStr::from_bytes(to));
            if fs::symlink_metadata(&new).is_ok() {
                return Ok(false);
            }
            fs::rename(&path, &new)?;
        }
        M::Create { name, len, seed, .. } if dir => {
            let new = path.join(OsStr::from_bytes(name));
            if fs::symlink_metadata(&new).is_ok() {
                return Ok(false);
            }
            Content::Random { seed: *seed, len: u64::from(*len) }.write_to(&new)?;
        }
        M::FileToDir { .. } if file => {
            fs::remove_file(&path)?;
            fs::create_dir(&path)?;
        }
        M::DirToFile { len, seed, .. } if dir && !is_root => {
            fs::remove_dir_all(&path)?;
            Content::Random { seed: *seed, len: u64::from(*len) }.write_to(&path)?;
        }
        M::FileToSymlink { target, .. } if file => {
            fs::remove_file(&path)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)?;
        }
        M::SymlinkToFile { len, seed, .. } if link => {
            fs::remove_file(&path)?;
            Content::Random { seed: *seed, len: u64::from(*len) }.write_to(&path)?;
        }
        M::Delete { .. } if dir && !is_root => fs::remove_dir_all(&path)?,
        M::Delete { .. } if !is_root => fs::remove_file(&path)?,
        M::Chmod { mode, .. } if file => {
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
        }
        M::Chmod { mode, .. } if dir => {
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode | 0o700))?;
        }
        M::Touch { delta_ns, .. } => {
            let now = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            let mut shifted = now + i128::from(*delta_ns);
            if shifted < 0 {
                // Stay after the epoch; pre-1970 mtimes are not what this
                // mutation is about.
                shifted = now + i128::from(delta_ns.unsigned_abs());
            }
            let sec = i64::try_from(shifted.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
            let nsec = shifted.rem_euclid(1_000_000_000) as u32;
            set_mtime(&path, Mtime { sec, nsec })?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The entry at `rel` under `root`, if every ancestor is a real directory.
/// Refusing to walk through symlinks keeps mutations inside the tree: a
/// symlink may point at `/etc`.
fn lookup(root: &Path, rel: &[u8]) -> Option<(PathBuf, Metadata)> {
    let mut path = root.to_path_buf();
    let mut meta = fs::symlink_metadata(&path).ok()?;
    if rel.is_empty() {
        return Some((path, meta));
    }
    for component in rel.split(|&b| b == b'/') {
        if !meta.is_dir() {
            return None;
        }
        path.push(OsStr::from_bytes(component));
        meta = fs::symlink_metadata(&path).ok()?;
    }
    Some((path, meta))
}

/// Opens an existing file read-write, failing rather than following a
/// symlink that replaced it.
fn open_nofollow(path: &Path) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}
