//! A round and its options: [`RoundOptions`] (defined once, from the flags to the wire to the
//! sessions), the [`driver`] that runs a round's two sessions, and `ferry sync`: one round from
//! a local source directory into a local destination directory, through the same sessions and
//! messages a network round uses.

pub mod compression;
pub mod driver;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::session::Itemized;
use ferry_core::{Limits, ReceivePolicy, SessionOptions, Stats};
use serde::{Deserialize, Serialize};

use self::driver::{run_local, PhaseTimes, Progress, RoundError};
use crate::fs::dest::LocalDestination;
use crate::fs::exclude::Excludes;
use crate::fs::source::LocalSource;
use crate::fs::walk::WalkOptions;
use crate::fs::Root;

/// The options of one round as the user chose them: parsed once from the flags, sent as they
/// are in a network client's request (so both sides plan the same round), and turned into
/// each side's [`SessionOptions`]. The one definition of `--delete` and its siblings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundOptions {
    /// `--delete`: remove destination entries the source does not have.
    pub delete: bool,
    /// `--checksum`: compare by blake3 instead of size + mtime.
    pub checksum: bool,
    /// `--dry-run`: itemize the plan; write nothing.
    pub dry_run: bool,
    /// `--exclude`: rsync-style patterns.
    pub excludes: Vec<String>,
    /// `--compress-level`: zstd level for literal data (0: off), or
    /// [`compression::COMPRESS_AUTO`] to adapt it to the link during the round.
    pub compress_level: i32,
}

impl Default for RoundOptions {
    fn default() -> Self {
        RoundOptions {
            delete: false,
            checksum: false,
            dry_run: false,
            excludes: Vec::new(),
            // Local rounds have no wire to save: compress lightly.
            compress_level: 1,
        }
    }
}

impl RoundOptions {
    /// The session options these flags mean.
    pub fn session(&self) -> SessionOptions {
        SessionOptions {
            delete: self.delete,
            checksum: self.checksum,
            dry_run: self.dry_run,
            // `auto` is the source's to apply (see `compression`): the session only carries
            // a level, never a negative one to zstd.
            compress_level: self.compress_level.max(0),
            limits: Limits::default(),
            ..SessionOptions::default()
        }
    }
}

/// The options of a round on this machine: the [`RoundOptions`] plus what only the local
/// side decides (its threads, what its walk includes).
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// What both sides of the round agree on.
    pub round: RoundOptions,
    /// Worker threads per side (0: one per core).
    pub threads: usize,
    /// Include fifos and device nodes.
    pub specials: bool,
    /// Do not descend into other filesystems on the source.
    pub one_file_system: bool,
    /// What this side accepts when it receives (its `specials` is replaced by the field
    /// above, so one flag means both).
    pub policy: ReceivePolicy,
    /// The root's own name must not be a symlink (a module found in `serve --modules-dir`,
    /// whose subdirectories anyone who can write the directory could swap for one).
    pub root_no_follow: bool,
}

/// What a sync did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The destination's account of the round.
    pub stats: Stats,
    /// Thread-seconds per phase.
    pub phases: PhaseTimes,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
    /// Bytes of framed messages, source→destination.
    pub wire_bytes_sent: u64,
    /// Bytes of framed messages, destination→source.
    pub wire_bytes_received: u64,
    /// Entries that could not be read and were skipped.
    pub warnings: Vec<String>,
    /// The transport a network round used (`None` for a local sync).
    pub transport: Option<String>,
    /// Streams a network round used: 1 (control) plus its data streams (QUIC); 0 locally.
    pub streams: usize,
    /// The source could not read all of its tree (`stats.source_errors`): entries may be
    /// missing on the destination, nothing was deleted, and the exit code is 23.
    pub partial: bool,
    /// What the destination recorded of the round: the server, of a push; this side, of a
    /// pull with `--state-dir` (`None` for a local sync or a pull without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitReport>,
    /// How the source compressed (when this side was the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<compression::CompressionReport>,
    /// What the destination's signature cache did, when this side was the destination and
    /// kept one (`ferry pull --state-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_cache: Option<crate::state::sigcache::CacheCounts>,
}

/// What the destination recorded of a round, as `--json`, the status file and
/// `/status` show it (`"state"` says which).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum CommitReport {
    /// The commit record is durable and the snapshot exists (with `--snapshot csi`, the
    /// commit record is durable and `snapshot` says how the VolumeSnapshot went).
    Recorded {
        /// The round's number in the module.
        round: u64,
        /// The snapshot's id (for `ferry snapshots restore`); with `--snapshot csi` the
        /// VolumeSnapshot's name, followed by ` (VolumeSnapshot failed: REASON)` when it
        /// failed (the round is committed all the same).
        snapshot: String,
        /// The committed tree's root hash, hex.
        root_hash: String,
    },
    /// The destination keeps no records (no `--state-dir`, or a dry run): the files are
    /// durable in place, nothing more.
    Unrecorded,
    /// The destination could not record the round (the exit code is then 6, unless the
    /// round was partial).
    Failed {
        /// Why.
        reason: String,
    },
}

impl From<ferry_core::message::Commit> for CommitReport {
    fn from(c: ferry_core::message::Commit) -> CommitReport {
        use ferry_core::message::Commit;
        match c {
            Commit::Recorded { round, snapshot, root_hash } => {
                CommitReport::Recorded { round, snapshot, root_hash }
            }
            Commit::Unrecorded => CommitReport::Unrecorded,
            Commit::Failed { reason } => CommitReport::Failed { reason },
        }
    }
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source is not a readable directory.
    #[error("cannot open source directory {path}")]
    Source {
        /// The path given.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The destination cannot be created or opened.
    #[error("cannot open or create destination directory {path}")]
    Destination {
        /// The path given.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An exclude pattern is not a valid glob.
    #[error("invalid --exclude pattern: {0}")]
    Exclude(#[from] globset::Error),
    /// The round failed.
    #[error(transparent)]
    Round(#[from] RoundError),
}

/// Syncs `src` into `dst`.
///
/// # Errors
/// [`SyncError`]; on error the destination holds only verified files.
pub fn run(src: &Path, dst: &Path, opts: &SyncOptions) -> Result<Report, SyncError> {
    run_with(src, dst, opts, &mut |_| {}, &mut |_| {}, Duration::from_secs(3600))
}

/// [`run`] with callbacks for the itemized plan and for progress.
///
/// # Errors
/// As [`run`].
pub fn run_with(
    src: &Path,
    dst: &Path,
    opts: &SyncOptions,
    on_item: &mut dyn FnMut(&Itemized),
    on_progress: &mut dyn FnMut(&Progress),
    progress_every: Duration,
) -> Result<Report, SyncError> {
    let source = open_source(src, opts)?;
    let dest = open_destination(dst, opts)?;
    let out = run_local(
        source.clone(),
        dest.clone(),
        &opts.session(),
        opts.thread_count(),
        on_item,
        on_progress,
        progress_every,
    )?;
    let mut warnings = source.walk_warnings();
    warnings.extend(dest.walk_warnings());
    Ok(Report::new(&out, warnings))
}

impl SyncOptions {
    /// The session options these flags mean.
    pub fn session(&self) -> SessionOptions {
        let policy = ReceivePolicy { specials: self.specials, ..self.policy.clone() };
        SessionOptions { policy, ..self.round.session() }
    }

    /// Worker threads per side (one per core when 0).
    pub fn thread_count(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.threads
        }
    }

    fn walk(&self) -> Result<WalkOptions, SyncError> {
        Ok(WalkOptions {
            excludes: Excludes::new(&self.round.excludes)?,
            specials: self.specials,
            one_file_system: self.one_file_system,
            max_xattr_value: Limits::default().max_xattr_value,
            remove_stale_temps: None,
        })
    }
}

impl Report {
    /// A report of `out`.
    pub fn new(out: &driver::RoundOutcome, warnings: Vec<String>) -> Report {
        Report {
            stats: out.target,
            phases: out.phases,
            elapsed_secs: out.elapsed.as_secs_f64(),
            wire_bytes_sent: out.wire_bytes.0,
            wire_bytes_received: out.wire_bytes.1,
            warnings,
            transport: None,
            streams: 0,
            partial: out.target.partial(),
            commit: out.commit.clone().map(CommitReport::from),
            compression: out.compression.clone(),
            signature_cache: None,
        }
    }
}

/// Opens `src` as the source of a round.
///
/// # Errors
/// [`SyncError::Source`] or an invalid exclude pattern.
pub fn open_source(src: &Path, opts: &SyncOptions) -> Result<Arc<LocalSource>, SyncError> {
    let walk = opts.walk()?;
    let root = Root::open_with(src, opts.root_no_follow)
        .map_err(|source| SyncError::Source { path: src.into(), source })?;
    let compression = compression::Compression::new(opts.round.compress_level);
    Ok(Arc::new(
        LocalSource::new(Arc::new(root), walk, opts.round.checksum).with_compression(compression),
    ))
}

/// Opens (creating it unless dry-running) `dst` as the destination of a round.
///
/// # Errors
/// [`SyncError::Destination`] or an invalid exclude pattern.
pub fn open_destination(
    dst: &Path,
    opts: &SyncOptions,
) -> Result<Arc<LocalDestination>, SyncError> {
    let walk = opts.walk()?;
    if !opts.round.dry_run {
        std::fs::create_dir_all(dst)
            .map_err(|source| SyncError::Destination { path: dst.into(), source })?;
    }
    let root = match Root::open_with(dst, opts.root_no_follow) {
        Ok(r) => r,
        Err(e) if opts.round.dry_run && e.kind() == std::io::ErrorKind::NotFound => {
            // Dry run into a directory that does not exist yet: plan against an empty tree.
            let empty = tempfile_dir()?;
            Root::open(&empty)
                .map_err(|source| SyncError::Destination { path: dst.into(), source })?
        }
        Err(source) => return Err(SyncError::Destination { path: dst.into(), source }),
    };
    // The destination never descends into other filesystems: deletes must not cross them.
    let walk = WalkOptions { one_file_system: true, ..walk };
    Ok(Arc::new(LocalDestination::new(Arc::new(root), walk, Limits::default())))
}

fn tempfile_dir() -> Result<PathBuf, SyncError> {
    let p = std::env::temp_dir().join(format!("ferry-dry-run-{}", std::process::id()));
    std::fs::create_dir_all(&p)
        .map_err(|source| SyncError::Destination { path: p.clone(), source })?;
    Ok(p)
}
