//! Edits to a tree: the [`Mutation`] data, the strategy aiming them at a tree's entries, and
//! applying them on disk without ever going through a symlink.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_core::rng::SplitMix64;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use rustix::fs::{Mode, OFlags};

use super::disk::set_mtime;
use super::spec::{Content, EntryKind, Mtime, TreeSpec};
use super::strategy::name;
use super::{FILE_MODES, FIXED_TARGETS};

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
