//! Filesystem access beneath a root: every call fd-relative, no symlink ever followed.
//!
//! A [`Root`] holds an fd of the sync root. Paths are opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`; where the kernel lacks `openat2` (before 5.6, or filtered by a
//! seccomp profile) the fallback walks component by component with `O_NOFOLLOW`, which
//! refuses a symlink anywhere on the way just the same.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_core::{Entry, EntryKind, Meta, RelPath, Xattr};

use super::walk::OPEN_LEVELS;
use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};

/// An open sync root.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    dev: u64,
    mnt_id: Option<u64>,
    path: PathBuf,
    openat2: AtomicBool,
}

impl Root {
    /// Opens `path` as a root; it must be a directory.
    ///
    /// # Errors
    /// The `open` error, or `ENOTDIR`.
    pub fn open(path: &Path) -> io::Result<Root> {
        Root::open_with(path, false)
    }

    /// [`Root::open`]; with `no_follow`, the path's last component must not be a symlink
    /// (`ENOTDIR` otherwise): for roots whose name someone else may swap.
    ///
    /// # Errors
    /// I/O errors opening the directory.
    pub fn open_with(path: &Path, no_follow: bool) -> io::Result<Root> {
        let nofollow = if no_follow { OFlags::NOFOLLOW } else { OFlags::empty() };
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | nofollow,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&fd)?;
        let mnt_id = mount_id(&fd, b"")?;
        Ok(Root {
            fd,
            dev: st.st_dev,
            mnt_id,
            path: path.to_path_buf(),
            openat2: AtomicBool::new(true),
        })
    }

    /// The root's own fd.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The device the root lives on: entries elsewhere are mount points.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// Where the root's mount ends: what [`Boundary::crosses`] compares entries with.
    pub fn boundary(&self) -> Boundary {
        Boundary { dev: self.dev, mnt_id: self.mnt_id }
    }

    /// The path the root was opened from, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` beneath the root without following any symlink.
    ///
    /// # Errors
    /// `ELOOP` when a component is a symlink, `EXDEV` when resolution would leave the root,
    /// and the usual open errors.
    pub fn open_beneath(&self, rel: &[u8], flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if self.openat2.load(Ordering::Relaxed) {
            match rfs::openat2(
                &self.fd,
                rel,
                flags,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {
                    // No openat2 here (old kernel or seccomp): use the per-component walk.
                    self.openat2.store(false, Ordering::Relaxed);
                }
                r => return r.map_err(io::Error::from),
            }
        }
        self.open_by_components(rel, flags, mode)
    }

    fn open_by_components(&self, rel: &[u8], flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur: Option<OwnedFd> = None;
        for (i, c) in comps.iter().enumerate() {
            if c.is_empty() || *c == b"." || *c == b".." {
                return Err(io::Error::from_raw_os_error(libc_exdev()));
            }
            let base = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let last = i + 1 == comps.len();
            let next = rfs::openat(base, *c, if last { flags } else { dir_flags }, mode)?;
            cur = Some(next);
        }
        cur.ok_or_else(|| io::Error::from_raw_os_error(libc_exdev()))
    }

    /// Opens the directory that holds `rel` (the root itself for a top-level entry).
    ///
    /// # Errors
    /// As [`Root::open_beneath`].
    pub fn parent_of(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        match rel.parent() {
            Some(p) => self.open_beneath(p.as_bytes(), flags, Mode::empty()),
            None => Ok(rfs::openat(&self.fd, ".", flags | OFlags::CLOEXEC, Mode::empty())?),
        }
    }

    /// Opens directory `rel` (or the root for `None`).
    ///
    /// # Errors
    /// As [`Root::open_beneath`].
    pub fn open_dir(&self, rel: Option<&RelPath>) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        match rel {
            Some(p) => self.open_beneath(p.as_bytes(), flags, Mode::empty()),
            None => Ok(rfs::openat(&self.fd, ".", flags | OFlags::CLOEXEC, Mode::empty())?),
        }
    }
}

/// Opens directory `name` in `parent`, making it (mode 0700) when it is missing, without
/// following a symlink at `name`: one primitive for every state directory Ferry keeps.
///
/// # Errors
/// `ELOOP`/`ENOTDIR` when `name` is a symlink or not a directory, and the usual mkdir and
/// open errors.
pub fn make_dir_at(parent: &impl AsFd, name: &str) -> io::Result<OwnedFd> {
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The identity and version of a file's content as Ferry keys it: device, inode, size and
/// mtime in nanoseconds. Committed inodes are never modified in place, so an unchanged key
/// means unchanged content.
pub fn content_key(st: &rfs::Stat) -> crate::fs::dest::ContentKey {
    (st.st_dev, st.st_ino, st.st_size as u64, mtime_ns(st))
}

/// blake3 and length of an open file's content, and the key it had ([`content_key`]).
/// Refused when the key changes while the file is read, or the length read differs from
/// its size: something else writes into the tree, and a hash must never be paired with
/// other content.
///
/// # Errors
/// I/O errors, and `Other` ("changed while it was hashed").
pub fn hash_unchanged(
    f: impl Into<std::fs::File>,
) -> io::Result<([u8; 32], u64, crate::fs::dest::ContentKey)> {
    use std::io::Read;
    let mut f: std::fs::File = f.into();
    let before = content_key(&rfs::fstat(&f)?);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        h.update(&buf[..n]);
    }
    if content_key(&rfs::fstat(&f)?) != before || total != before.2 {
        return Err(io::Error::other("changed while it was hashed"));
    }
    Ok((*h.finalize().as_bytes(), total, before))
}

/// The mount a root lives on: its device and, where the kernel reports it (`statx`
/// `STATX_MNT_ID`, Linux 5.8), its mount id. A bind mount of the same filesystem has the same
/// device but another mount id, so the device alone cannot see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    /// `st_dev` of the root.
    pub dev: u64,
    /// Mount id of the root, `None` on kernels without `STATX_MNT_ID`.
    pub mnt_id: Option<u64>,
}

impl Boundary {
    /// Whether `name` in `dir` (whose `st_dev` is `dev`) lives on another mount than the
    /// root: another device, or another mount id (a bind mount or a mount point), or the root
    /// of a mount (`STATX_ATTR_MOUNT_ROOT`). Never follows `name`.
    ///
    /// # Errors
    /// The `statx` error.
    pub fn crosses(&self, dir: &impl AsFd, name: &[u8], dev: u64) -> io::Result<bool> {
        if dev != self.dev {
            return Ok(true);
        }
        let Some(root_mnt) = self.mnt_id else { return Ok(false) };
        let sx = rfs::statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
            rfs::StatxFlags::MNT_ID,
        )?;
        let root_attr = rfs::StatxAttributes::MOUNT_ROOT;
        let mount_root =
            sx.stx_attributes_mask.contains(root_attr) && sx.stx_attributes.contains(root_attr);
        let other = sx.stx_mask & rfs::StatxFlags::MNT_ID.bits() != 0 && sx.stx_mnt_id != root_mnt;
        Ok(other || mount_root)
    }
}

/// The mount id of `name` in `dir` (`dir` itself for an empty name), `None` when the kernel
/// does not report one.
fn mount_id(dir: &impl AsFd, name: &[u8]) -> io::Result<Option<u64>> {
    let flags = if name.is_empty() { AtFlags::EMPTY_PATH } else { AtFlags::SYMLINK_NOFOLLOW };
    match rfs::statx(dir, name, flags, rfs::StatxFlags::MNT_ID) {
        Ok(sx) if sx.stx_mask & rfs::StatxFlags::MNT_ID.bits() != 0 => Ok(Some(sx.stx_mnt_id)),
        Ok(_) => Ok(None),
        Err(e) if e == rustix::io::Errno::NOSYS => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn libc_exdev() -> i32 {
    rustix::io::Errno::XDEV.raw_os_error()
}

/// mtime of a stat in nanoseconds.
pub fn mtime_ns(st: &rfs::Stat) -> i64 {
    st.st_mtime.saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec as i64)
}

/// ctime of a stat in nanoseconds.
pub fn ctime_ns(st: &rfs::Stat) -> i64 {
    st.st_ctime.saturating_mul(1_000_000_000).saturating_add(st.st_ctime_nsec as i64)
}

/// The [`Meta`] of a stat.
pub fn meta_of(st: &rfs::Stat) -> Meta {
    Meta { mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid, mtime_ns: mtime_ns(st) }
}

/// The file type of a stat.
pub fn file_type(st: &rfs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Timestamps setting mtime to `mtime_ns` and leaving atime alone.
pub fn times(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: rfs::UTIME_OMIT },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        },
    }
}

/// A path naming `name` inside the directory open as `dir`, through `/proc/self/fd`, for the
/// xattr calls that have no `*at` form. The directory part is the fd itself (no lookup); the
/// final component is never followed by the `l*xattr` calls.
fn proc_path(dir: &impl AsFd, name: &[u8]) -> io::Result<CString> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    CString::new(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Reads the extended attributes of `name` in `dir` without following it; sorted by name.
/// A filesystem without xattr support yields none.
pub fn read_xattrs(dir: &impl AsFd, name: &[u8], max_value: usize) -> io::Result<Vec<Xattr>> {
    let p = proc_path(dir, name)?;
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rfs::llistxattr(p.as_c_str(), &mut names[..]) {
            Ok(n) => break n,
            Err(e) if e == rustix::io::Errno::RANGE && names.len() < (1 << 20) => {
                names.resize(names.len() * 4, 0);
            }
            Err(e) if is_unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for xname in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(xname).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let mut val = vec![0u8; 256];
        let len = loop {
            match rfs::lgetxattr(p.as_c_str(), cname.as_c_str(), &mut val[..]) {
                Ok(len) => break Some(len),
                Err(e) if e == rustix::io::Errno::RANGE && val.len() < max_value => {
                    val.resize((val.len() * 4).min(max_value), 0);
                }
                // Removed meanwhile, or larger than we carry: skip it.
                Err(_) => break None,
            }
        };
        if let Some(len) = len {
            val.truncate(len);
            out.push(Xattr { name: xname.to_vec(), value: val });
        }
    }
    out.sort();
    Ok(out)
}

fn is_unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::OPNOTSUPP
}

/// Sets `xattrs` on an open file or directory, removing ones not listed. Returns how many
/// could not be set (namespaces we may not write, such as `trusted.*` without privilege).
pub fn write_xattrs(fd: &impl AsFd, xattrs: &[Xattr]) -> io::Result<u64> {
    let mut failed = 0;
    let mut names = vec![0u8; 4096];
    if let Ok(n) = rfs::flistxattr(fd, &mut names[..]) {
        for old in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
            if !xattrs.iter().any(|x| x.name == old) {
                if let Ok(c) = CString::new(old) {
                    let _ = rfs::fremovexattr(fd, c.as_c_str());
                }
            }
        }
    }
    for x in xattrs {
        let Ok(c) = CString::new(x.name.clone()) else {
            failed += 1;
            continue;
        };
        match rfs::fsetxattr(fd, c.as_c_str(), &x.value, rfs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) if is_unsupported(e) || e == rustix::io::Errno::PERM => failed += 1,
            Err(e) if e == rustix::io::Errno::ACCESS => failed += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(failed)
}

/// Whether this process may set any owner (root, or CAP_CHOWN in practice).
pub fn can_chown() -> bool {
    rustix::process::geteuid().is_root()
}

/// Applies ownership (when permitted), permissions, xattrs and mtime to an open inode that
/// Ferry just created. Returns 1 when ownership was skipped for lack of privilege.
pub fn apply_meta(fd: &impl AsFd, meta: &Meta, xattrs: &[Xattr]) -> io::Result<u64> {
    let mut skipped = 0;
    if can_chown() {
        rfs::fchown(
            fd,
            Some(rustix::process::Uid::from_raw(meta.uid)),
            Some(rustix::process::Gid::from_raw(meta.gid)),
        )?;
    } else {
        let st = rfs::fstat(fd)?;
        if st.st_uid != meta.uid || st.st_gid != meta.gid {
            skipped = 1;
        }
    }
    // After chown: chown clears setuid/setgid bits.
    rfs::fchmod(fd, Mode::from_bits_truncate(meta.mode))?;
    write_xattrs(fd, xattrs)?;
    rfs::futimens(fd, &times(meta.mtime_ns))?;
    Ok(skipped)
}

/// Creates the symlink or special file `entry` describes as `name` in `dir`.
///
/// # Errors
/// The creating call's error; `InvalidInput` for an entry that is neither.
pub fn make_node(dir: &OwnedFd, name: &[u8], entry: &Entry) -> io::Result<()> {
    let mode = Mode::from_bits_truncate(entry.meta.mode);
    match &entry.kind {
        EntryKind::Symlink { target } => rfs::symlinkat(target.as_slice(), dir, name)?,
        EntryKind::Fifo => rfs::mknodat(dir, name, FileType::Fifo, mode, 0)?,
        EntryKind::CharDevice { rdev } => {
            rfs::mknodat(dir, name, FileType::CharacterDevice, mode, *rdev)?
        }
        EntryKind::BlockDevice { rdev } => {
            rfs::mknodat(dir, name, FileType::BlockDevice, mode, *rdev)?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a symlink or special file",
            ))
        }
    }
    Ok(())
}

/// Applies `entry`'s ownership (when permitted), permissions (not for symlinks, whose mode
/// Linux ignores) and mtime to the node `name` in `dir` that Ferry just created. Returns 1
/// when ownership was skipped for lack of privilege.
///
/// The name is looked up once, with `O_PATH | O_NOFOLLOW`, and every change goes through that
/// fd: a local user who swaps the name for a symlink (or another node) between the create and
/// here makes this fail, never redirects a chmod, chown or utimes to another file. The node
/// must still be of the entry's kind and owned by this process (it just created it).
///
/// # Errors
/// The calls' errors; `InvalidData` when the name no longer holds the node Ferry created.
pub fn apply_meta_at(dir: &OwnedFd, name: &[u8], entry: &Entry) -> io::Result<u64> {
    let fd =
        rfs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    let want = match entry.kind {
        EntryKind::Symlink { .. } => FileType::Symlink,
        EntryKind::Fifo => FileType::Fifo,
        EntryKind::CharDevice { .. } => FileType::CharacterDevice,
        EntryKind::BlockDevice { .. } => FileType::BlockDevice,
        _ => FileType::Unknown,
    };
    if file_type(&st) != want || st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a node Ferry created was replaced before its metadata was set",
        ));
    }
    let mut skipped = 0;
    if can_chown() {
        // AT_EMPTY_PATH: the inode the fd holds (a symlink itself, never its target).
        rfs::chownat(
            &fd,
            "",
            Some(rustix::process::Uid::from_raw(entry.meta.uid)),
            Some(rustix::process::Gid::from_raw(entry.meta.gid)),
            AtFlags::EMPTY_PATH,
        )?;
    } else {
        skipped = 1;
    }
    if want != FileType::Symlink {
        // An O_PATH fd cannot be fchmod'ed; its /proc/self/fd magic link names exactly its
        // inode (no lookup by name). After chown (which clears setuid), and past the umask
        // mknod applied.
        rfs::chmod(fd_path(&fd)?.as_c_str(), Mode::from_bits_truncate(entry.meta.mode))?;
    }
    rfs::utimensat(&fd, "", &times(entry.meta.mtime_ns), AtFlags::EMPTY_PATH)?;
    Ok(skipped)
}

/// `/proc/self/fd/N` for an fd: the inode itself, whatever its name is now.
fn fd_path(fd: &impl AsFd) -> io::Result<CString> {
    use std::os::fd::AsRawFd;
    CString::new(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Replaces `path` with `bytes` atomically and durably: a temp file beside it, fsync,
/// rename, fsync of the directory.
///
/// # Errors
/// I/O errors.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Removes `name` in `dir` and, if it is a directory, everything beneath it, never following
/// a symlink and never entering another mount (another device, or a bind mount of the same
/// one: see [`Boundary::crosses`]). Returns (entries removed, entries left because they are
/// on another mount).
///
/// A tree of any depth is removed with at most [`OPEN_LEVELS`] directory fds: deeper levels
/// close the fd of the level that far above and reopen it by name when the walk climbs back,
/// checked against the (dev, ino) it had, as the source's walk does.
pub fn remove_tree(dir: &OwnedFd, name: &[u8], root: &Boundary) -> io::Result<(u64, u64)> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok((0, 0)),
        Err(e) => return Err(e.into()),
    };
    if root.crosses(dir, name, st.st_dev)? {
        return Ok((0, 1));
    }
    if file_type(&st) != FileType::Directory {
        rfs::unlinkat(dir, name, AtFlags::empty())?;
        return Ok((1, 0));
    }
    let mut stack = vec![RemoveLevel::open(dir, name, &st)?];
    let mut removed = 0;
    loop {
        reopen_top(&mut stack, dir)?;
        let top = stack.len() - 1;
        let Some(n) = stack[top].names.next() else {
            let done = stack.pop().expect("the loop runs while a level is left");
            drop(done.fd);
            let parent = if stack.is_empty() {
                dir
            } else {
                reopen_top(&mut stack, dir)?;
                stack[stack.len() - 1].fd.as_ref().expect("reopen_top opened it")
            };
            if done.kept == 0 {
                rfs::unlinkat(parent, done.name.as_slice(), AtFlags::REMOVEDIR)?;
                removed += 1;
            }
            match stack.last_mut() {
                Some(l) => l.kept += done.kept,
                None => return Ok((removed, done.kept)),
            }
            continue;
        };
        let cur = stack[top].fd.as_ref().expect("reopen_top opened it");
        let st = match rfs::statat(cur, n.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if root.crosses(cur, &n, st.st_dev)? {
            stack[top].kept += 1;
            continue;
        }
        if file_type(&st) != FileType::Directory {
            rfs::unlinkat(cur, n.as_slice(), AtFlags::empty())?;
            removed += 1;
            continue;
        }
        let level = RemoveLevel::open(cur, &n, &st)?;
        if let Some(far) = stack.len().checked_sub(OPEN_LEVELS).and_then(|i| stack.get_mut(i)) {
            far.fd = None;
        }
        stack.push(level);
    }
}

/// One directory [`remove_tree`] is inside.
struct RemoveLevel {
    name: Vec<u8>,
    /// `None` while closed to bound the fds held.
    fd: Option<OwnedFd>,
    /// (dev, ino), checked when the directory is reopened.
    id: (u64, u64),
    /// Names still to remove.
    names: std::vec::IntoIter<Vec<u8>>,
    /// Entries beneath it left on other mounts (it stays, too).
    kept: u64,
}

impl RemoveLevel {
    /// Opens and lists the directory `name` in `parent`, which must still be the one `st`
    /// describes.
    fn open(parent: &OwnedFd, name: &[u8], st: &rfs::Stat) -> io::Result<RemoveLevel> {
        let id = (st.st_dev, st.st_ino);
        let fd = open_level(parent, name, id)?;
        let names = list_dir(&fd)?.into_iter();
        Ok(RemoveLevel { name: name.to_vec(), fd: Some(fd), id, names, kept: 0 })
    }
}

/// Opens the directory `name` in `parent` without following a symlink, and checks it is the
/// directory `id` names (not one swapped in meanwhile).
fn open_level(parent: &OwnedFd, name: &[u8], id: (u64, u64)) -> io::Result<OwnedFd> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    if (st.st_dev, st.st_ino) != id {
        return Err(io::Error::other("a directory was replaced while it was being removed"));
    }
    Ok(fd)
}

/// Reopens the top level of a [`remove_tree`] walk if its fd was closed, from the nearest
/// open level (or `dir`), closing each level [`OPEN_LEVELS`] above the one it opens. Climbing
/// out of a tree `d` deep costs about `d * d / OPEN_LEVELS` opens (70,000 for 1500 levels).
fn reopen_top(stack: &mut [RemoveLevel], dir: &OwnedFd) -> io::Result<()> {
    let Some(top) = stack.len().checked_sub(1) else { return Ok(()) };
    if stack[top].fd.is_some() {
        return Ok(());
    }
    let from = (0..top).rev().find(|&i| stack[i].fd.is_some()).map_or(0, |i| i + 1);
    for i in from..=top {
        let fd = {
            let parent = match i.checked_sub(1) {
                Some(p) => stack[p].fd.as_ref().ok_or_else(|| io::Error::other("no parent fd"))?,
                None => dir,
            };
            open_level(parent, &stack[i].name, stack[i].id)?
        };
        stack[i].fd = Some(fd);
        // Close as we go: a chain reopened from far up never holds more than the bound.
        if let Some(far) = i.checked_sub(OPEN_LEVELS).and_then(|f| stack.get_mut(f)) {
            far.fd = None;
        }
    }
    Ok(())
}

/// Lists a directory's names (without `.` and `..`), sorted bytewise.
pub fn list_dir(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for ent in rfs::Dir::read_from(dir)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root opened with `no_follow` (a `--modules-dir` module) is refused when its own
    /// name has become a symlink, also through the round's entry points; a plain open
    /// follows it (a user's configured module path may be a symlink).
    #[test]
    fn a_no_follow_root_refuses_a_symlinked_name() {
        let t = tempfile::tempdir().unwrap();
        let (real, elsewhere) = (t.path().join("real"), t.path().join("elsewhere"));
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.path().join("swapped")).unwrap();
        assert!(Root::open_with(&real, true).is_ok());
        assert!(Root::open_with(&t.path().join("swapped"), false).is_ok());
        let Err(e) = Root::open_with(&t.path().join("swapped"), true) else {
            panic!("a symlinked name was followed")
        };
        // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (ELOOP without O_DIRECTORY).
        let refused =
            [rustix::io::Errno::NOTDIR, rustix::io::Errno::LOOP].map(|e| e.raw_os_error());
        assert!(refused.contains(&e.raw_os_error().unwrap_or(0)), "{e}");
        let opts = crate::round::SyncOptions { root_no_follow: true, ..Default::default() };
        assert!(crate::round::open_destination(&t.path().join("swapped"), &opts).is_err());
        assert!(crate::round::open_source(&t.path().join("swapped"), &opts).is_err());
        assert!(crate::round::open_destination(&real, &opts).is_ok());
    }

    /// Both resolution paths (openat2, and the per-component fallback for kernels without
    /// it) refuse a symlink anywhere in the path and never leave the root.
    #[test]
    fn symlinks_are_never_followed_by_either_resolver() {
        let t = tempfile::tempdir().unwrap();
        let root_dir = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root_dir.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root_dir.join("real/f"), b"in").unwrap();
        std::fs::write(outside.join("secret"), b"out").unwrap();
        std::os::unix::fs::symlink(&outside, root_dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", root_dir.join("rel")).unwrap();
        std::os::unix::fs::symlink("real/f", root_dir.join("leaf")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        let flags = OFlags::RDONLY;
        for fallback in [false, true] {
            let open = |p: &[u8]| {
                if fallback {
                    root.open_by_components(
                        p,
                        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )
                } else {
                    root.open_beneath(p, flags, Mode::empty())
                }
            };
            assert!(open(b"real/f").is_ok(), "fallback={fallback}");
            for bad in [
                &b"abs/secret"[..],
                b"rel/secret",
                b"leaf",
                b"../outside/secret",
                b"real/../../outside/secret",
            ] {
                assert!(
                    open(bad).is_err(),
                    "fallback={fallback}: {}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }
}
