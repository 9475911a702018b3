//! The source's side of the driver: performs [`SourceWork`] beneath the source root.
//!
//! Live source files are read with positioned reads, never mapped: an application truncating
//! a mapped file would kill the process with SIGBUS. A file whose size or mtime differs from
//! the manifest before or after a segment is read is reported as changed, never sent torn.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use ferry_core::delta::{self, DeltaCounts, SegmentHow};
use ferry_core::entry::{Entry, EntryKind, RootMeta};
use ferry_core::hash::{hash_segment, SegmentHash};
use ferry_core::message::{Encoding, FileFailure, Payload};
use ferry_core::segment;
use ferry_core::session::{SourceOutcome, SourceWork};
use ferry_core::RelPath;
use rayon::prelude::*;
use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::fs::walk::{WalkOptions, Walker};
use crate::fs::{file_type, mtime_ns, Root};
use crate::round::compression::Compression;

/// A source directory on the local filesystem.
pub struct LocalSource {
    root: Arc<Root>,
    walker: Mutex<Walker>,
    checksum: bool,
    compression: Arc<Compression>,
}

impl std::fmt::Debug for LocalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSource").field("root", &self.root.path()).finish()
    }
}

impl LocalSource {
    /// A source rooted at `root`; with `checksum`, every file's blake3 goes in the manifest.
    pub fn new(root: Arc<Root>, walk: WalkOptions, checksum: bool) -> Self {
        LocalSource {
            walker: Mutex::new(Walker::new(root.clone(), walk)),
            root,
            checksum,
            compression: Arc::new(Compression::new(1)),
        }
    }

    /// This source, compressing as `c` says (a fixed level, or `auto`).
    pub fn with_compression(mut self, c: Compression) -> Self {
        self.compression = Arc::new(c);
        self
    }

    /// How this source compresses, and what it did.
    pub fn compression(&self) -> &Compression {
        &self.compression
    }

    /// Warnings from the walk (entries that could not be read).
    pub fn walk_warnings(&self) -> Vec<String> {
        std::mem::take(&mut crate::lock(&self.walker).skipped)
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
                how,
                compress_level,
                keep_if,
                ..
            } => {
                let offset = index * ferry_core::SEGMENT_LEN as u64;
                // A two-level delta diffs unmatched runs whole across segment boundaries.
                let (pre, post) = match &how {
                    SegmentHow::Refined(plan) => {
                        plan.context(offset, len as u64, file_len, 1 << 20)
                    }
                    _ => (0, 0),
                };
                let window = len + (pre + post) as usize;
                self.read_range(&path, offset - pre, window, file_len, mtime_ns)
                    .and_then(|r| match r {
                        Ok(buf) => {
                            let seg = &buf[pre as usize..pre as usize + len];
                            let hash = hash_segment(index, seg, file_len);
                            if keep_if == Some(hash) {
                                // The destination holds exactly this segment: nothing to send.
                                return Ok(Ok(SourceOutcome::Segment {
                                    hash,
                                    data: Vec::new(),
                                    payload: Payload::Kept,
                                    encoding: Encoding::Raw,
                                    counts: DeltaCounts::default(),
                                }));
                            }
                            self.encode(&how, index, buf, pre as usize, len, compress_level, hash)
                                .map(Ok)
                        }
                        Err(f) => Ok(Err(f)),
                    })
                    .map(|r| r.unwrap_or_else(SourceOutcome::SegmentFailed))
                    .unwrap_or_else(read_error)
            }
            SourceWork::Match { path, index, len, file_len, mtime_ns, coarse, keep_if, .. } => self
                .read_range(&path, index * ferry_core::SEGMENT_LEN as u64, len, file_len, mtime_ns)
                .and_then(|r| match r {
                    Ok(buf) => {
                        let offset = index * ferry_core::SEGMENT_LEN as u64;
                        let hash = hash_segment(index, &buf, file_len);
                        if keep_if == Some(hash) {
                            // Kept by the destination: no match search for it.
                            return Ok(SourceOutcome::Matched { hash, matches: Vec::new() });
                        }
                        let matches = delta::match_segment(&coarse, offset, &buf)
                            .map_err(io::Error::other)?;
                        Ok(SourceOutcome::Matched { hash, matches })
                    }
                    Err(f) => Ok(SourceOutcome::SegmentFailed(f)),
                })
                .unwrap_or_else(read_error),
        }
    }

    fn scan(&self, max: usize) -> SourceOutcome {
        let (batch, errors) = {
            let mut w = crate::lock(&self.walker);
            let before = w.errors;
            let batch = w.next_batch(max);
            let new = (w.errors - before) as usize;
            // Texts for the first new errors (the list is bounded); the count is exact.
            let texts = w.skipped.iter().rev().take(new).rev().cloned();
            let mut errors: Vec<String> = texts.collect();
            errors.resize(new, String::from("(more read errors)"));
            (batch, errors)
        };
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
        SourceOutcome::Scanned { entries, done, errors }
    }

    fn hash_file(&self, path: &RelPath) -> io::Result<[u8; 32]> {
        let f =
            File::from(self.root.open_beneath(path.as_bytes(), OFlags::RDONLY, Mode::empty())?);
        let mut h = blake3::Hasher::new();
        h.update_reader(&f)?;
        Ok(*h.finalize().as_bytes())
    }

    /// Reads `len` bytes at `offset` of `path`, checking the file is still as scanned before
    /// and after.
    fn read_range(
        &self,
        path: &RelPath,
        offset: u64,
        len: usize,
        file_len: u64,
        mtime: i64,
    ) -> io::Result<Result<Vec<u8>, FileFailure>> {
        let fd = self.root.open_beneath(path.as_bytes(), OFlags::RDONLY, Mode::empty())?;
        let unchanged = |fd: &std::os::fd::OwnedFd| -> io::Result<bool> {
            let st = rfs::fstat(fd)?;
            Ok(file_type(&st) == FileType::RegularFile
                && st.st_size as u64 == file_len
                && mtime_ns(&st) == mtime)
        };
        if !unchanged(&fd)? {
            return Ok(Err(FileFailure::Changed));
        }
        let f = File::from(fd);
        let mut buf = vec![0u8; len];
        if let Err(e) = f.read_exact_at(&mut buf, offset) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return Ok(Err(FileFailure::Changed));
            }
            return Err(e);
        }
        let fd: std::os::fd::OwnedFd = f.into();
        if !unchanged(&fd)? {
            return Ok(Err(FileFailure::Changed));
        }
        Ok(Ok(buf))
    }

    /// Encodes segment `index`, which is `buf[pre..pre + len]` (the rest of `buf` is context
    /// for a two-level delta) and hashes to `hash`.
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        how: &SegmentHow,
        index: u64,
        mut buf: Vec<u8>,
        pre: usize,
        len: usize,
        level: i32,
        hash: SegmentHash,
    ) -> io::Result<SourceOutcome> {
        let offset = index * ferry_core::SEGMENT_LEN as u64;
        let c = &self.compression;
        let level = if c.is_auto() { c.level() } else { level };
        let encoded = match how {
            SegmentHow::Refined(plan) => {
                segment::encode_refined(plan, offset - pre as u64, &buf, offset, len as u64, level)
            }
            _ => {
                buf.truncate(pre + len);
                buf.drain(..pre);
                segment::encode(how, offset, buf, level)
            }
        }
        .map_err(io::Error::other)?;
        let segment::Encoded { payload, encoding, data, counts } = encoded;
        c.observe(level, counts.literal as usize, encoding == Encoding::Zstd);
        Ok(SourceOutcome::Segment { hash, data, payload, encoding, counts })
    }
}

fn read_error(e: io::Error) -> SourceOutcome {
    if e.kind() == io::ErrorKind::NotFound {
        SourceOutcome::SegmentFailed(FileFailure::Vanished)
    } else {
        SourceOutcome::SegmentFailed(FileFailure::Unreadable(e.to_string()))
    }
}
