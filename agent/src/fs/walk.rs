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

struct Level {
    path: Option<RelPath>,
    fd: OwnedFd,
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
    /// When the root itself cannot be listed. Entries that vanish or cannot be read midway
    /// are skipped and noted in [`Walker::skipped`].
    pub fn next_batch(&mut self, max: usize) -> io::Result<(Vec<LocalEntry>, bool)> {
        if !self.started {
            self.started = true;
            let fd = self.root.open_dir(None)?;
            let names = list_dir(&fd)?;
            self.stack.push(Level { path: None, fd, names: names.into_iter() });
        }
        let mut out = Vec::with_capacity(max.min(4096));
        while out.len() < max {
            let Some(level) = self.stack.last_mut() else { break };
            let Some(name) = level.names.next() else {
                self.stack.pop();
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                if let Some(own) = &self.opts.remove_stale_temps {
                    // Only files and symlinks: Ferry never makes a temp directory.
                    if !name.starts_with(own)
                        && !self.keep.contains(&name)
                        && rfs::unlinkat(&level.fd, name.as_slice(), AtFlags::empty()).is_ok()
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
                self.skipped
                    .push(format!("{}: name not representable", String::from_utf8_lossy(&name)));
                continue;
            };
            match self.visit(&name, path) {
                Ok(Some((e, descend))) => {
                    if let Some(fd) = descend {
                        let names = match list_dir(&fd) {
                            Ok(n) => n,
                            Err(err) => {
                                self.skipped.push(format!("{}: {err}", e.entry.path));
                                Vec::new()
                            }
                        };
                        self.stack.push(Level {
                            path: Some(e.entry.path.clone()),
                            fd,
                            names: names.into_iter(),
                        });
                    }
                    out.push(e);
                }
                Ok(None) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    let p = self.stack.last().and_then(|l| l.path.clone());
                    self.skipped.push(format!(
                        "{}/{}: {err}",
                        p.map(|p| p.display()).unwrap_or_default(),
                        String::from_utf8_lossy(&name)
                    ));
                }
            }
        }
        Ok((out, self.stack.is_empty()))
    }

    // st_nlink is u32 on some architectures and u64 on others.
    #[allow(clippy::type_complexity, clippy::useless_conversion)]
    fn visit(
        &mut self,
        name: &[u8],
        path: RelPath,
    ) -> io::Result<Option<(LocalEntry, Option<OwnedFd>)>> {
        let level = self.stack.last().expect("visit is called with a level");
        let st = rfs::statat(&level.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
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
                let target = rfs::readlinkat(&level.fd, name, Vec::new())?.into_bytes();
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
            read_xattrs(&level.fd, name, self.opts.max_xattr_value)?
        };
        let other_mount = is_dir
            && self.opts.one_file_system
            && self.root.boundary().crosses(&level.fd, name, st.st_dev)?;
        let descend = if is_dir && !other_mount {
            match rfs::openat(
                &level.fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    self.skipped.push(format!("{path}: cannot open directory: {e}"));
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
