//! A depth-first walk with sorted listings: the order [`RelPath`] sorts in, so manifests
//! stream and merge-join without holding the tree in memory.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use ferry_core::{Entry, EntryKind, LocalEntry, RelPath};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::fs::exclude::Excludes;
use crate::fs::{file_type, list_dir, meta_of, read_xattrs, Root};

/// Prefix of the temp files a destination writes; the walk hides them.
pub const TEMP_PREFIX: &[u8] = b".~ferry.";

/// What a walk includes.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Paths to leave out (and not descend into).
    pub excludes: Excludes,
    /// Include fifos and device nodes.
    pub specials: bool,
    /// Do not descend into directories on other filesystems.
    pub one_file_system: bool,
    /// Largest xattr value carried.
    pub max_xattr_value: usize,
    /// On a destination: remove temp files of earlier, interrupted rounds (all `.~ferry.*`
    /// names except those starting with this round's own prefix). A directory is listed
    /// before this round writes any temp file into it, so what the listing shows is stale.
    pub remove_stale_temps: Option<Vec<u8>>,
}

/// Directory fds a walk keeps open at most (plus the root's): deeper levels close the fd of
/// the level [`OPEN_LEVELS`] above and reopen it, by name from the nearest open ancestor,
/// when the walk climbs back. A tree of any depth needs a bounded number of fds.
pub const OPEN_LEVELS: usize = 32;

struct Level {
    path: Option<RelPath>,
    /// `None` while closed to bound the fds held (see [`OPEN_LEVELS`]).
    fd: Option<OwnedFd>,
    /// The directory's (dev, ino), checked when it is reopened.
    id: (u64, u64),
    /// Sorted names, consumed from the front.
    names: std::vec::IntoIter<Vec<u8>>,
}

/// A resumable walk over a [`Root`].
pub struct Walker {
    root: Arc<Root>,
    opts: WalkOptions,
    stack: Vec<Level>,
    started: bool,
    /// (dev, ino) of multiply-linked files seen, to emit later names as hard links.
    links: HashMap<(u64, u64), RelPath>,
    /// Warnings about entries that could not be read (and were skipped).
    pub skipped: Vec<String>,
    /// How many entries or directories could not be read, over the whole walk (a source
    /// with any is a partial round: see [`Walker::next_batch`]).
    pub errors: u64,
    /// Temp files of interrupted rounds removed by this walk.
    pub stale_temps_removed: u64,
    keep: std::collections::HashSet<Vec<u8>>,
}

impl std::fmt::Debug for Walker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walker").field("depth", &self.stack.len()).finish()
    }
}

impl Walker {
    /// A walk of `root`.
    pub fn new(root: Arc<Root>, opts: WalkOptions) -> Self {
        Walker {
            root,
            opts,
            stack: Vec::new(),
            started: false,
            links: HashMap::new(),
            skipped: Vec::new(),
            errors: 0,
            stale_temps_removed: 0,
            keep: std::collections::HashSet::new(),
        }
    }

    /// Spares these temp names from the stale-temp cleanup (the resume journal's partial
    /// files).
    pub fn keep_temps(&mut self, names: std::collections::HashSet<Vec<u8>>) {
        self.keep = names;
    }

    /// Up to `max` more entries, each with its inode facts; `true` when the walk is done.
    ///
    /// # Errors
    /// When the root itself cannot be listed. An entry that vanishes before it is examined
    /// is left out; any other entry or directory that cannot be read (unreadable, vanished
    /// before it could be listed, out of fds, a name that cannot be sent) is noted in
    /// [`Walker::skipped`], counted in [`Walker::errors`], and ends the batch right there,
    /// so a caller that hears of the error before sending later entries can act on it
    /// before anything after the missing part is compared (the source turns `--delete` off).
    pub fn next_batch(&mut self, max: usize) -> io::Result<(Vec<LocalEntry>, bool)> {
        if !self.started {
            self.started = true;
            let fd = self.root.open_dir(None)?;
            let st = rfs::fstat(&fd)?;
            let names = list_dir(&fd)?;
            self.stack.push(Level {
                path: None,
                fd: Some(fd),
                id: (st.st_dev, st.st_ino),
                names: names.into_iter(),
            });
        }
        let mut out = Vec::with_capacity(max.min(4096));
        let errors_before = self.errors;
        while out.len() < max && self.errors == errors_before {
            if let Err(e) = self.reopen_top() {
                // The directory cannot be reopened (replaced, or out of fds): its remaining
                // names are not read.
                let l = self.stack.pop().expect("reopen_top had a level");
                self.error(format!(
                    "{}: cannot reopen directory: {e}",
                    l.path.map(|p| p.display()).unwrap_or_default()
                ));
                continue;
            }
            let Some(level) = self.stack.last_mut() else { break };
            let Some(fd) = level.fd.as_ref() else { break };
            let Some(name) = level.names.next() else {
                self.stack.pop();
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                if let Some(own) = &self.opts.remove_stale_temps {
                    // Only files and symlinks: Ferry never makes a temp directory.
                    if !name.starts_with(own)
                        && !self.keep.contains(&name)
                        && rfs::unlinkat(fd, name.as_slice(), AtFlags::empty()).is_ok()
                    {
                        self.stale_temps_removed += 1;
                    }
                }
                continue;
            }
            let path = match &level.path {
                Some(p) => p.join(&name),
                None => RelPath::from_component(&name),
            };
            let Ok(path) = path else {
                self.error(format!("{}: name not representable", String::from_utf8_lossy(&name)));
                continue;
            };
            match self.visit(&name, path) {
                Ok(Some((e, descend))) => {
                    if let Some(fd) = descend {
                        match list_dir(&fd) {
                            Ok(names) => {
                                self.close_far_levels();
                                self.stack.push(Level {
                                    path: Some(e.entry.path.clone()),
                                    fd: Some(fd),
                                    id: (e.dev, e.ino),
                                    names: names.into_iter(),
                                });
                            }
                            Err(err) => self.error(format!("{}: {err}", e.entry.path)),
                        }
                    }
                    out.push(e);
                }
                Ok(None) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    let p = self.stack.last().and_then(|l| l.path.clone());
                    self.error(format!(
                        "{}/{}: {err}",
                        p.map(|p| p.display()).unwrap_or_default(),
                        String::from_utf8_lossy(&name)
                    ));
                }
            }
        }
        Ok((out, self.stack.is_empty()))
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        // The count is what matters; the texts are bounded.
        if self.skipped.len() < 1000 {
            self.skipped.push(what);
        }
    }

    /// Closes the fd of the level [`OPEN_LEVELS`] above the one about to be pushed (never the
    /// root's), so the walk holds a bounded number of fds at any depth.
    fn close_far_levels(&mut self) {
        let n = self.stack.len();
        if n > OPEN_LEVELS {
            if let Some(l) = self.stack.get_mut(n - OPEN_LEVELS).filter(|l| l.path.is_some()) {
                l.fd = None;
            }
        }
    }

    /// Reopens the top level if its fd was closed: from the nearest open ancestor, one
    /// `O_NOFOLLOW` component at a time (no path length limit), each checked against the
    /// (dev, ino) it had when first listed, so a directory replaced meanwhile is an error,
    /// never another tree walked under the old name. The levels reopened on the way stay
    /// open (the walk climbs through them next), except those [`OPEN_LEVELS`] above the
    /// newest, closed as the chain is reopened, so a sibling 1000 levels down costs no more
    /// fds than the descent did.
    fn reopen_top(&mut self) -> io::Result<()> {
        let Some(top) = self.stack.len().checked_sub(1) else { return Ok(()) };
        if self.stack[top].fd.is_some() {
            return Ok(());
        }
        let base = (0..top).rev().find(|&i| self.stack[i].fd.is_some()).unwrap_or(0);
        for i in base + 1..=top {
            if self.stack[i].fd.is_some() {
                continue;
            }
            let name = self.stack[i]
                .path
                .as_ref()
                .map(|p| p.file_name().to_vec())
                .ok_or_else(|| io::Error::other("the root level has no name"))?;
            let parent =
                self.stack[i - 1].fd.as_ref().ok_or_else(|| io::Error::other("no parent fd"))?;
            let fd = rfs::openat(
                parent,
                name.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = rfs::fstat(&fd)?;
            if (st.st_dev, st.st_ino) != self.stack[i].id {
                return Err(io::Error::other("the directory was replaced during the walk"));
            }
            self.stack[i].fd = Some(fd);
            // Close as we go (never the root's): a chain reopened from far up never holds
            // more than OPEN_LEVELS below the root.
            if let Some(far) = i.checked_sub(OPEN_LEVELS).filter(|&f| f > 0) {
                self.stack[far].fd = None;
            }
        }
        Ok(())
    }

    // st_nlink is u32 on some architectures and u64 on others.
    #[allow(clippy::type_complexity, clippy::useless_conversion)]
    fn visit(
        &mut self,
        name: &[u8],
        path: RelPath,
    ) -> io::Result<Option<(LocalEntry, Option<OwnedFd>)>> {
        let level = self.stack.last().expect("visit is called with a level");
        let dir = level.fd.as_ref().expect("visit is called with an open level");
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let ft = file_type(&st);
        let is_dir = ft == FileType::Directory;
        if self.opts.excludes.is_excluded(&path, is_dir) {
            return Ok(None);
        }
        let meta = meta_of(&st);
        let mut size = 0;
        let kind = match ft {
            FileType::RegularFile => {
                size = st.st_size as u64;
                if st.st_nlink > 1 {
                    match self.links.get(&(st.st_dev, st.st_ino)) {
                        Some(first) => EntryKind::HardLink { to: first.clone() },
                        None => {
                            self.links.insert((st.st_dev, st.st_ino), path.clone());
                            EntryKind::File
                        }
                    }
                } else {
                    EntryKind::File
                }
            }
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new())?.into_bytes();
                EntryKind::Symlink { target }
            }
            FileType::Fifo if self.opts.specials => EntryKind::Fifo,
            FileType::CharacterDevice if self.opts.specials => {
                EntryKind::CharDevice { rdev: st.st_rdev }
            }
            FileType::BlockDevice if self.opts.specials => {
                EntryKind::BlockDevice { rdev: st.st_rdev }
            }
            _ => return Ok(None),
        };
        if matches!(kind, EntryKind::HardLink { .. }) {
            size = 0;
        }
        let xattrs = if ft == FileType::Symlink {
            Vec::new()
        } else {
            read_xattrs(dir, name, self.opts.max_xattr_value)?
        };
        let other_mount = is_dir
            && self.opts.one_file_system
            && self.root.boundary().crosses(dir, name, st.st_dev)?;
        let descend = if is_dir && !other_mount {
            match rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    self.error(format!("{path}: cannot open directory: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let entry = Entry { path, kind, size, meta, xattrs, hash: None };
        Ok(Some((
            LocalEntry { entry, ino: st.st_ino, nlink: u64::from(st.st_nlink), dev: st.st_dev },
            descend,
        )))
    }
}
