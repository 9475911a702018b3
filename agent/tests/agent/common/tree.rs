//! The judge of tree equality. It reads both trees with std and rustix only (no code of the
//! agent it judges) and compares all that `rsync -aHAXc --delete` compares, and more: which
//! names exist, the root included; each one's type; a file's bytes (blake3); a symlink's
//! target; a device's number; permission bits, owner, group; the modification time to the
//! nanosecond (rsync: to the second); every extended attribute, so POSIX ACLs too
//! (`system.posix_acl_*`); and which names are hard links of one another.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// The prefix of the temp files a round writes before it renames them into place.
pub(crate) const TEMP_PREFIX: &str = ".~ferry.";

/// What a name is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file and the hash of its bytes.
    File(blake3::Hash),
    /// A directory.
    Dir,
    /// A symbolic link and its target (never followed).
    Symlink(PathBuf),
    /// A device, FIFO or socket: its type bits and device number.
    Special { kind: u32, rdev: u64 },
}

/// One name of a tree, as compared.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Its type and content.
    pub(crate) kind: Kind,
    /// Permission bits with setuid, setgid and sticky (0 for a symlink: Linux has none).
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u32,
    /// Group.
    pub(crate) gid: u32,
    /// Modification time: seconds and nanoseconds.
    pub(crate) mtime: (i64, i64),
    /// Every extended attribute, by name.
    pub(crate) xattrs: BTreeMap<OsString, Vec<u8>>,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::File(h) => write!(f, "file {}", &h.to_hex()[..16]),
            Kind::Dir => write!(f, "dir"),
            Kind::Symlink(to) => write!(f, "symlink -> {}", to.display()),
            Kind::Special { kind, rdev } => write!(f, "special {kind:o} dev {rdev:#x}"),
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} mode {:o} owner {}:{} mtime {}.{:09}",
            self.kind, self.mode, self.uid, self.gid, self.mtime.0, self.mtime.1
        )?;
        if !self.xattrs.is_empty() {
            write!(f, " xattrs {:?}", self.xattrs)?;
        }
        Ok(())
    }
}

/// Every name under a root, the root itself as the empty path, and the hard-link groups.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Tree {
    /// Path relative to the root → what it is.
    pub(crate) nodes: BTreeMap<PathBuf, Node>,
    /// Names sharing one inode, each group sorted, groups sorted (only groups of two or more).
    pub(crate) links: Vec<Vec<PathBuf>>,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tree of {} names, {} hard-link groups", self.nodes.len(), self.links.len())
    }
}

impl Tree {
    /// Reads the tree under `root`; any error fails the test.
    pub(crate) fn read(root: &Path) -> Tree {
        Tree::read_inner(root, false)
    }

    /// Reads a tree something may be changing meanwhile (a live server renames, retention
    /// deletes): names that vanish while it is read are left out. A file's bytes and its
    /// metadata come from one open inode, so they always belong together.
    pub(crate) fn read_live(root: &Path) -> Tree {
        Tree::read_inner(root, true)
    }

    /// The temp files (and anything else named like them) in the tree.
    pub(crate) fn temps(&self) -> Vec<&Path> {
        self.nodes
            .keys()
            .filter(|p| {
                p.file_name().is_some_and(|n| n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
            })
            .map(PathBuf::as_path)
            .collect()
    }

    /// The regular files that are not temp files.
    pub(crate) fn files(&self) -> impl Iterator<Item = (&Path, &Node)> {
        let temps = self.temps();
        self.nodes
            .iter()
            .filter(move |(p, n)| matches!(n.kind, Kind::File(_)) && !temps.contains(&p.as_path()))
            .map(|(p, n)| (p.as_path(), n))
    }

    /// What differs between `self` (a) and `other` (b), one line each; empty when equal.
    pub(crate) fn diff(&self, other: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        let show =
            |p: &Path| if p.as_os_str().is_empty() { ".".into() } else { p.display().to_string() };
        for (p, a) in &self.nodes {
            match other.nodes.get(p) {
                None => out.push(format!("only in a: {} ({a:?})", show(p))),
                Some(b) if a != b => out.push(format!("{}:\n    a: {a:?}\n    b: {b:?}", show(p))),
                Some(_) => {}
            }
        }
        for (p, b) in &other.nodes {
            if !self.nodes.contains_key(p) {
                out.push(format!("only in b: {} ({b:?})", show(p)));
            }
        }
        if self.links != other.links {
            out.push(format!(
                "hard links differ:\n    a: {:?}\n    b: {:?}",
                self.links, other.links
            ));
        }
        out
    }

    fn read_inner(root: &Path, live: bool) -> Tree {
        // A vanished name is expected in a live tree; anything else is a failure.
        let gone = |e: &std::io::Error| live && e.kind() == ErrorKind::NotFound;
        let mut nodes = BTreeMap::new();
        let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let path = root.join(&rel);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            let ft = meta.file_type();
            let (kind, meta) = if ft.is_file() {
                match read_file(&path) {
                    Ok(Some(found)) => found,
                    // Replaced by something else between the two looks: read it again.
                    Ok(None) if live => {
                        stack.push(rel);
                        continue;
                    }
                    Ok(None) => panic!("{}: changed while read", path.display()),
                    Err(e) if gone(&e) => continue,
                    Err(e) => panic!("{}: {e}", path.display()),
                }
            } else if ft.is_dir() {
                let rd = match std::fs::read_dir(&path) {
                    Ok(rd) => rd,
                    Err(e) if gone(&e) => continue,
                    Err(e) => panic!("{}: {e}", path.display()),
                };
                for e in rd {
                    match e {
                        Ok(e) => stack.push(rel.join(e.file_name())),
                        Err(e) if gone(&e) => {}
                        Err(e) => panic!("{}: {e}", path.display()),
                    }
                }
                (Kind::Dir, meta)
            } else if ft.is_symlink() {
                match std::fs::read_link(&path) {
                    Ok(to) => (Kind::Symlink(to), meta),
                    Err(e) if gone(&e) => continue,
                    Err(e) => panic!("{}: {e}", path.display()),
                }
            } else {
                let special =
                    ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket();
                assert!(special, "{}: unknown file type", path.display());
                (Kind::Special { kind: meta.mode() & 0o170_000, rdev: meta.rdev() }, meta)
            };
            let xattrs = match xattrs(&path) {
                Ok(x) => x,
                Err(e) if gone(&e) => continue,
                Err(e) => panic!("{}: extended attributes: {e}", path.display()),
            };
            if !ft.is_dir() && meta.nlink() > 1 {
                inodes.entry((meta.dev(), meta.ino())).or_default().push(rel.clone());
            }
            let mode = if ft.is_symlink() { 0 } else { meta.mode() & 0o7777 };
            let node = Node {
                kind,
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                xattrs,
            };
            nodes.insert(rel, node);
        }
        let mut links: Vec<Vec<PathBuf>> = inodes
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect();
        links.sort();
        Tree { nodes, links }
    }
}

/// A regular file's hash and metadata, both from one open inode; `None` if it is no longer a
/// regular file.
fn read_file(path: &Path) -> std::io::Result<Option<(Kind, std::fs::Metadata)>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mut file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd),
        // Replaced by a symlink since it was looked at.
        Err(rustix::io::Errno::LOOP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some((Kind::File(hasher.finalize()), meta)))
}

/// Every extended attribute of `path` (not followed), by name.
fn xattrs(path: &Path) -> std::io::Result<BTreeMap<OsString, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let len = rustix::fs::llistxattr_query(path)?;
    if len == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; len];
    let len = rustix::fs::llistxattr(path, &mut names[..])?;
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr_query(path, name) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; len];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..])?;
        value.truncate(len);
        out.insert(name.to_os_string(), value);
    }
    Ok(out)
}

/// Fails the test unless the trees under `a` and `b` are the same (see the module's doc),
/// naming what differs.
pub(crate) fn assert_same_tree(a: &Path, b: &Path) {
    let diff = Tree::read(a).diff(&Tree::read(b));
    assert!(
        diff.is_empty(),
        "trees differ: a = {}, b = {}\n{}",
        a.display(),
        b.display(),
        diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The judge sees each kind of difference rsync's `-aHAXc --delete` sees (and rsync agrees
/// that there is one), and none between a tree and its copy.
#[test]
fn the_judge_sees_what_rsync_sees() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};
    let rsync_differs = |a: &Path, b: &Path| {
        let out = std::process::Command::new("rsync")
            .args(["-aHAXnic", "--delete"])
            .arg(format!("{}/", a.display()))
            .arg(format!("{}/", b.display()))
            .output()
            .expect("rsync is installed");
        super::check_ok(&out);
        !out.stdout.is_empty()
    };
    let set_mtime = |p: &Path, secs: u64| {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        std::fs::File::open(p).unwrap().set_modified(t).unwrap();
    };
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    std::fs::create_dir_all(a.join("d")).unwrap();
    std::fs::write(a.join("d/f"), b"same size").unwrap();
    std::fs::write(a.join("x"), b"linked").unwrap();
    std::fs::hard_link(a.join("x"), a.join("d/y")).unwrap();
    std::os::unix::fs::symlink("d/f", a.join("l")).unwrap();
    let b = t.path().join("b");
    type Change = (&'static str, Box<dyn Fn(&Path)>);
    let changes: Vec<Change> = vec![
        (
            "content, same size and mtime",
            Box::new(|b: &Path| {
                let m = std::fs::metadata(b.join("d/f")).unwrap().modified().unwrap();
                std::fs::write(b.join("d/f"), b"SAME SIZE").unwrap();
                std::fs::File::open(b.join("d/f")).unwrap().set_modified(m).unwrap();
            }),
        ),
        (
            "file mode",
            Box::new(|b: &Path| {
                std::fs::set_permissions(b.join("d/f"), std::fs::Permissions::from_mode(0o600))
                    .unwrap()
            }),
        ),
        ("file mtime", Box::new(move |b: &Path| set_mtime(&b.join("d/f"), 1_000_000))),
        ("directory mtime", Box::new(move |b: &Path| set_mtime(&b.join("d"), 1_000_000))),
        (
            "root mode",
            Box::new(|b: &Path| {
                std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o700)).unwrap()
            }),
        ),
        (
            "owner",
            Box::new(|b: &Path| {
                std::os::unix::fs::lchown(b.join("d/f"), Some(4321), Some(4321)).unwrap()
            }),
        ),
        (
            "symlink target",
            Box::new(|b: &Path| {
                std::fs::remove_file(b.join("l")).unwrap();
                std::os::unix::fs::symlink("d/g", b.join("l")).unwrap();
            }),
        ),
        (
            "extended attribute",
            Box::new(|b: &Path| {
                rustix::fs::setxattr(
                    b.join("d/f"),
                    "user.judge",
                    b"x",
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap()
            }),
        ),
        (
            "hard link broken",
            Box::new(|b: &Path| {
                let m = std::fs::metadata(b.join("d/y")).unwrap().modified().unwrap();
                std::fs::remove_file(b.join("d/y")).unwrap();
                std::fs::write(b.join("d/y"), b"linked").unwrap();
                std::fs::File::open(b.join("d/y")).unwrap().set_modified(m).unwrap();
                let dir = std::fs::metadata(b.join("d")).unwrap().modified().unwrap();
                std::fs::File::open(b.join("d")).unwrap().set_modified(dir).unwrap();
            }),
        ),
        ("extra name", Box::new(|b: &Path| std::fs::write(b.join("extra"), b"").unwrap())),
        ("missing name", Box::new(|b: &Path| std::fs::remove_file(b.join("x")).unwrap())),
        (
            "file became a directory",
            Box::new(|b: &Path| {
                std::fs::remove_file(b.join("x")).unwrap();
                std::fs::create_dir(b.join("x")).unwrap();
            }),
        ),
    ];
    for (what, change) in changes {
        if b.exists() {
            std::fs::remove_dir_all(&b).unwrap();
        }
        super::copy_tree(&a, &b);
        assert!(
            Tree::read(&a) == Tree::read(&b),
            "a copy: {:?}",
            Tree::read(&a).diff(&Tree::read(&b))
        );
        assert!(!rsync_differs(&a, &b), "rsync, a copy");
        change(&b);
        assert!(rsync_differs(&a, &b), "{what}: rsync sees no difference");
        let diff = Tree::read(&a).diff(&Tree::read(&b));
        assert!(!diff.is_empty(), "{what}: the judge sees no difference");
    }
}
