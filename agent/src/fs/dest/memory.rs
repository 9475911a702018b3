//! The seam between the destination's filesystem code and what is remembered between rounds.
//!
//! The destination writes files; the state directory ([`crate::state`]) remembers things
//! about them for the next round: which segments of a cut file are already written (a
//! resume journal) and the signatures of large files it wrote (a signature cache). The
//! destination asks through these two traits and never learns where or how they are kept.

use std::collections::HashSet;
use std::io;

use ferry_core::delta::BlockSize;
use ferry_core::{Limits, RelPath};
use rustix::fs as rfs;

/// Identity of one version of a file's content: device, inode, size, mtime (ns).
pub type ContentKey = (u64, u64, u64, i64);

/// A committed file's content hash, by (device, inode, size, mtime).
pub type FreshHash = (ContentKey, [u8; 32]);

/// Files smaller than this get no kept signature: reading and signing them costs little.
pub const SIGNATURE_CACHE_MIN: u64 = 1 << 20;

/// Largest signature kept (it is held in memory while its file is written): 16 MiB, the
/// signature of a file of about 100 GiB at 128 KiB blocks. Larger files are signed when
/// needed, as without a cache.
pub const SIGNATURE_CACHE_MAX_BYTES: usize = 16 << 20;

/// What an interrupted round left of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Size of the version being rebuilt (the source's).
    pub size: u64,
    /// Its mtime.
    pub mtime_ns: i64,
    /// The temp file's name, in the file's directory.
    pub temp: Vec<u8>,
    /// Chaining values of segments 0, 1, ... held in the temp file.
    pub have: Vec<[u8; 32]>,
}

/// Where the segments of large files are journaled as they are written, so a cut round can
/// resume them.
pub trait ResumeJournal: Send + Sync {
    /// Temp names of the partial files earlier rounds left: the stale-temp cleanup spares them.
    fn temp_names(&self) -> HashSet<Vec<u8>>;

    /// Claims what an interrupted round left of `path`, if it was rebuilding this version.
    fn take(&self, path: &RelPath, size: u64, mtime_ns: i64) -> Option<Partial>;

    /// Segment `index` (chaining value `cv`) of `path`'s version (`size`, `mtime_ns`) is
    /// written in temp file `temp`.
    fn record(
        &self,
        path: &RelPath,
        size: u64,
        mtime_ns: i64,
        temp: &[u8],
        index: u64,
        cv: [u8; 32],
    );

    /// The file rebuilt in temp file `temp` was committed to `path`.
    fn done(&self, path: &RelPath, temp: &[u8]);
}

/// Where signatures of large files the destination wrote are kept for the next round.
pub trait SignatureStore: Send + Sync {
    /// The signature blocks of the file `st` describes at `block_size`, if kept and intact.
    fn lookup(&self, st: &rfs::Stat, block_size: BlockSize, limits: &Limits) -> Option<Vec<u8>>;

    /// Keeps the signature of a file this round rebuilt and put in place at `path`; `st` is
    /// its stat after the rename.
    ///
    /// # Errors
    /// I/O errors keeping it (the caller logs them: the round does not fail).
    fn store(
        &self,
        path: &RelPath,
        st: &rfs::Stat,
        block_size: BlockSize,
        blocks: &[u8],
    ) -> io::Result<()>;
}
