//! The one place that calls into `ferry-agent`.
//!
//! Tests talk to [`Options`] and [`Stats`] defined here rather than to the
//! agent's own types, so when the agent's API moves only this file changes.

use std::path::Path;

use ferry_agent::round::{self as sync, RoundOptions, SyncOptions};

/// What to ask of a sync; mirrors the agent's `SyncOptions`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Remove destination entries that are not in the source.
    pub delete: bool,
    /// Compare file contents, not just size and mtime, to find changes.
    pub checksum: bool,
    /// Report what would change without changing anything.
    pub dry_run: bool,
    /// Exclude patterns, in the agent's syntax.
    pub excludes: Vec<String>,
}

/// The counters a sync reports, copied out of the agent's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Files that did not exist at the destination.
    pub files_new: u64,
    /// Files that existed but differed in content.
    pub files_changed: u64,
    /// Files whose content matched but whose metadata had to be fixed.
    pub files_metadata: u64,
    /// Destination entries removed because of `delete`.
    pub files_deleted: u64,
    /// Files found identical.
    pub files_unchanged: u64,
    /// Files the source could not send (changed while read, vanished).
    pub files_failed: u64,
    /// Bytes sent as literal data rather than as references to the basis.
    pub literal_bytes: u64,
    /// Bytes reproduced from blocks the destination already had.
    pub matched_bytes: u64,
}

/// Syncs the tree at `src` into `dst` with `opts`; the error is the agent's,
/// rendered as text.
pub fn sync(src: &Path, dst: &Path, opts: &Options) -> Result<Stats, String> {
    let agent_opts = SyncOptions {
        round: RoundOptions {
            delete: opts.delete,
            checksum: opts.checksum,
            dry_run: opts.dry_run,
            excludes: opts.excludes.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let report = sync::run(src, dst, &agent_opts)
        .map_err(|e| format!("sync {} -> {}: {e}", src.display(), dst.display()))?;
    let s = &report.stats;
    Ok(Stats {
        files_new: s.files_new,
        files_changed: s.files_changed,
        files_metadata: s.files_metadata,
        files_deleted: s.files_deleted,
        files_unchanged: s.files_unchanged,
        files_failed: s.files_failed,
        literal_bytes: s.literal_bytes,
        matched_bytes: s.matched_bytes,
    })
}

/// Syncs `src` into `dst` with default options plus `delete`.
///
/// # Panics
///
/// If the sync fails; this is a test helper.
#[track_caller]
pub fn run_sync(src: &Path, dst: &Path, delete: bool) -> Stats {
    match sync(src, dst, &Options { delete, ..Options::default() }) {
        Ok(stats) => stats,
        Err(e) => panic!("{e}"),
    }
}
