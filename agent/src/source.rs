//! The source's side of the driver: performs [`SourceWork`] beneath the source root.
//!
//! Live source files are read with positioned reads, never mapped: an application truncating
//! a mapped file would kill the process with SIGBUS. A file whose size or mtime differs from
//! the manifest before or after a segment is read is reported as changed, never sent torn.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_core::compress;
use ferry_core::delta::{self, DeltaCounts};
use ferry_core::entry::{Entry, EntryKind, RootMeta};
use ferry_core::hash::hash_segment;
use ferry_core::message::{Encoding, FileFailure, Payload};
use ferry_core::session::{SourceOutcome, SourceWork};
use ferry_core::RelPath;
use rayon::prelude::*;
use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::fs::{file_type, mtime_ns, Root};
use crate::walk::{WalkOptions, Walker};

/// A source directory on the local filesystem.
pub struct LocalSource {
    root: Arc<Root>,
    walker: Mutex<Walker>,
    checksum: bool,
}

impl std::fmt::Debug for LocalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSource").field("root", &self.root.path()).finish()
    }
}

impl LocalSource {
    /// A source rooted at `root`; with `checksum`, every file's blake3 goes in the manifest.
    pub fn new(root: Arc<Root>, walk: WalkOptions, checksum: bool) -> Self {
        LocalSource { walker: Mutex::new(Walker::new(root.clone(), walk)), root, checksum }
    }

    /// Warnings from the walk (entries that could not be read).
    pub fn walk_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.walker.lock().unwrap_or_else(PoisonError::into_inner).skipped)
    }

    /// The source root's own metadata, or `None` if it cannot be read.
    pub fn root_meta(&self) -> Option<RootMeta> {
        let st = rfs::fstat(self.root.fd()).ok()?;
        let xattrs = crate::fs::read_xattrs(self.root.fd(), b".", 64 << 10).ok()?;
        Some(RootMeta { meta: crate::fs::meta_of(&st), xattrs })
    }

    /// Performs one work item.
    pub fn perform(&self, work: SourceWork) -> SourceOutcome {
        match work {
            SourceWork::Scan { max } => self.scan(max),
            SourceWork::Segment {
                path,
                index,
                len,
                file_len,
                mtime_ns,
                delta,
                compress_level,
                ..
            } => {
                match self.segment(
                    &path,
                    index,
                    len,
                    file_len,
                    mtime_ns,
                    delta.as_deref(),
                    compress_level,
                ) {
                    Ok(o) => o,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        SourceOutcome::SegmentFailed(FileFailure::Vanished)
                    }
                    Err(e) => SourceOutcome::SegmentFailed(FileFailure::Unreadable(e.to_string())),
                }
            }
        }
    }

    fn scan(&self, max: usize) -> SourceOutcome {
        let batch = self.walker.lock().unwrap_or_else(PoisonError::into_inner).next_batch(max);
        let (local, done) = match batch {
            Ok(b) => b,
            Err(e) => {
                return SourceOutcome::Fatal(format!(
                    "scanning {}: {e}",
                    self.root.path().display()
                ))
            }
        };
        let mut entries: Vec<Entry> = local.into_iter().map(|l| l.entry).collect();
        if self.checksum {
            entries.par_iter_mut().filter(|e| e.kind == EntryKind::File).for_each(|e| {
                // Unreadable files get no hash and are compared (and fail) when sent.
                e.hash = self.hash_file(&e.path).ok();
            });
            // A file we could not hash is still listed; the target needs some hash for it.
            for e in entries.iter_mut().filter(|e| e.kind == EntryKind::File) {
                e.hash.get_or_insert([0; 32]);
            }
        }
        SourceOutcome::Scanned { entries, done }
    }

    fn hash_file(&self, path: &RelPath) -> io::Result<[u8; 32]> {
        let f =
            File::from(self.root.open_beneath(path.as_bytes(), OFlags::RDONLY, Mode::empty())?);
        let mut h = blake3::Hasher::new();
        h.update_reader(&f)?;
        Ok(*h.finalize().as_bytes())
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
        &self,
        path: &RelPath,
        index: u64,
        len: usize,
        file_len: u64,
        mtime: i64,
        index_sig: Option<&delta::DeltaIndex>,
        level: i32,
    ) -> io::Result<SourceOutcome> {
        let fd = self.root.open_beneath(path.as_bytes(), OFlags::RDONLY, Mode::empty())?;
        let unchanged = |fd: &std::os::fd::OwnedFd| -> io::Result<bool> {
            let st = rfs::fstat(fd)?;
            Ok(file_type(&st) == FileType::RegularFile
                && st.st_size as u64 == file_len
                && mtime_ns(&st) == mtime)
        };
        if !unchanged(&fd)? {
            return Ok(SourceOutcome::SegmentFailed(FileFailure::Changed));
        }
        let f = File::from(fd);
        let mut buf = vec![0u8; len];
        let offset = index * ferry_core::SEGMENT_LEN as u64;
        if let Err(e) = f.read_exact_at(&mut buf, offset) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return Ok(SourceOutcome::SegmentFailed(FileFailure::Changed));
            }
            return Err(e);
        }
        let fd: std::os::fd::OwnedFd = f.into();
        if !unchanged(&fd)? {
            return Ok(SourceOutcome::SegmentFailed(FileFailure::Changed));
        }
        let hash = hash_segment(index, &buf, file_len);
        let (payload, raw, counts) = match index_sig {
            Some(ix) => {
                let d = ix.diff(&buf).map_err(io::Error::other)?;
                let c = delta::count(&d).unwrap_or(DeltaCounts { literal: len as u64, matched: 0 });
                (Payload::Delta, d, c)
            }
            None => (Payload::Literal, buf, DeltaCounts { literal: len as u64, matched: 0 }),
        };
        let (encoding, data) = match compress::compress(&raw, level) {
            Some(c) => (Encoding::Zstd, c),
            None => (Encoding::Raw, raw),
        };
        Ok(SourceOutcome::Segment { hash, data, payload, encoding, counts })
    }
}
