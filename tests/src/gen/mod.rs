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
//!
//! The limits and the name and target pools live here; the rest is split by concern:
//! `spec` (the data), `strategy` (random trees), `disk` (writing a tree), `mutation`
//! (random edits and applying them).

mod disk;
mod mutation;
mod spec;
mod strategy;

pub use disk::{materialize, set_mtime, set_xattr};
pub use mutation::{apply, mutation, Mutation};
pub use spec::{Content, EntryKind, Mtime, SparseWrite, TreeEntry, TreeSpec};
pub use strategy::{content, mtime, name, tree_and_mutations, tree_spec};

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
