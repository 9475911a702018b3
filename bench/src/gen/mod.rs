//! The seeded dataset generator behind `ferry-bench gen` and `ferry-bench compare`.
//!
//! - `mixed` ([`MixedSpec`]): one large incompressible file ([`BIG_FILE`], 1 GiB), 20,000 small
//!   files of 1–64 KiB (half random bytes, half log-like text) spread over ~200 directories,
//!   and a few symlinks (relative, across directories, to a directory, dangling).
//! - `mutate` ([`MutateSpec`]), applied in place to a copy of `mixed`: the big file gets the
//!   reference workload's 200 scattered 4 KiB overwrites and 10 short inserts (the same
//!   [`crate::Edits`] plan as [`crate::Workload`], streamed through the file); 1% of the small
//!   files are edited (random files: a 1–4 KiB overwrite) or appended to (log files: new lines);
//!   100 files are added, 100 deleted and 20 renamed (moved to another directory).
//! - `many` ([`ManySpec`]): 200,000 files of 100 B – 2 KiB in 2,000 directories.
//!
//! Everything is drawn from the seed per file (one generator per file index), so content and
//! mtimes do not depend on the number of threads or the order files are written in: the same
//! seed and scale give the same tree, byte for byte, with the same mtimes. The mtimes matter:
//! `mixed` generated twice with one seed is the same tree, so an untouched file in the mutated
//! copy is "unchanged" (same size and mtime) for both Ferry and rsync. Files are written in
//! parallel with rayon; the big file in 1 MiB chunks at their offsets.
//!
//! `scale` multiplies the big file's size and every count (files, directories, edits; each at
//! least 1). The size range of an individual small file stays the same: a small scale keeps
//! the mix of file sizes, and so what a delta engine sees per file, and shrinks the volume.
//!
//! The kinds, the stats and [`generate`] live here; the rest is split by concern:
//! - `spec`: each kind's sizes and counts; `draw`: seeds, mtimes, layout and file plans;
//!   `content`: random and log-like bytes; `write`: putting drawn files on disk.
//! - `mixed`, `many`, `mutate`: one dataset kind each.

mod content;
mod draw;
mod many;
mod mixed;
mod mutate;
mod spec;
mod write;

pub use content::utc;
pub use draw::{big_seed, dir_layout};
pub use many::generate_many;
pub use mixed::generate_mixed;
pub use mutate::mutate;
pub use spec::{ManySpec, MixedSpec, MutateSpec};

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Name of the big file at the root of a `mixed` tree.
pub const BIG_FILE: &str = "big.img";

/// Smallest accepted `--scale`: below it the big file cannot hold one 4 KiB overwrite stretch.
pub const MIN_SCALE: f64 = 0.0001;
/// Largest accepted `--scale` (16 GiB big file, 3.2 million small files).
pub const MAX_SCALE: f64 = 16.0;

/// The kinds of dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// One big file, many small files, a few symlinks.
    Mixed,
    /// Changes applied in place to a `mixed` tree.
    Mutate,
    /// Very many tiny files.
    Many,
}

/// `n * scale`, rounded, at least 1.
pub fn scale_count(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

/// Checks that `scale` is a number the generator can honour.
///
/// # Errors
/// When it is not finite or outside [`MIN_SCALE`]..=[`MAX_SCALE`].
pub fn check_scale(scale: f64) -> Result<()> {
    ensure!(
        scale.is_finite() && (MIN_SCALE..=MAX_SCALE).contains(&scale),
        "--scale must be between {MIN_SCALE} and {MAX_SCALE} (got {scale})"
    );
    Ok(())
}

/// What a tree holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeStats {
    /// Regular files.
    pub files: u64,
    /// Directories below the root.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Anything else (fifos, sockets, devices).
    pub other: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// Counts what is below `root` (without following symlinks).
///
/// # Errors
/// When a directory cannot be read.
pub fn tree_stats(root: &Path) -> Result<TreeStats> {
    let mut s = TreeStats::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                s.dirs += 1;
                stack.push(e.path());
            } else if ft.is_file() {
                s.files += 1;
                s.bytes += e.metadata()?.len();
            } else if ft.is_symlink() {
                s.symlinks += 1;
            } else {
                s.other += 1;
            }
        }
    }
    Ok(s)
}

/// What `mutate` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutateSummary {
    /// Overwrites in the big file.
    pub big_overwrites: usize,
    /// Inserts in the big file.
    pub big_inserts: usize,
    /// Bytes overwritten plus bytes inserted in the big file.
    pub big_changed_bytes: u64,
    /// Small files edited in place.
    pub small_edited: usize,
    /// Bytes overwritten in them.
    pub edited_bytes: u64,
    /// Small files appended to.
    pub small_appended: usize,
    /// Bytes appended.
    pub appended_bytes: u64,
    /// Files added.
    pub added: usize,
    /// Bytes of the added files.
    pub added_bytes: u64,
    /// Files deleted.
    pub deleted: usize,
    /// Files renamed.
    pub renamed: usize,
}

impl MutateSummary {
    /// Bytes of new content: the least any tool must send as literal data (renamed files are
    /// old content under a new name, and count for nothing here).
    pub fn changed_bytes(&self) -> u64 {
        self.big_changed_bytes + self.edited_bytes + self.appended_bytes + self.added_bytes
    }
}

/// What `gen` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generated {
    /// The kind generated.
    pub kind: Kind,
    /// The scale.
    pub scale: f64,
    /// The seed.
    pub seed: u64,
    /// The tree afterwards.
    pub stats: TreeStats,
    /// For `mutate`, what changed.
    pub mutate: Option<MutateSummary>,
    /// Wall time, seconds.
    pub secs: f64,
}

/// Generates `kind` at `out` (for `mixed` and `many`, `out` must be missing or empty; for
/// `mutate`, `out` is the `mixed` tree to change in place).
///
/// # Errors
/// Invalid scale, a non-empty `out`, I/O errors.
pub fn generate(kind: Kind, out: &Path, scale: f64, seed: u64) -> Result<Generated> {
    check_scale(scale)?;
    let t = Instant::now();
    let mutate = match kind {
        Kind::Mixed => {
            generate_mixed(out, &MixedSpec::scaled(scale), seed)?;
            None
        }
        Kind::Many => {
            generate_many(out, &ManySpec::scaled(scale), seed)?;
            None
        }
        Kind::Mutate => Some(mutate(out, &MutateSpec::scaled(scale), seed)?),
    };
    Ok(Generated {
        kind,
        scale,
        seed,
        stats: tree_stats(out)?,
        mutate,
        secs: t.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    use ferry_core::rng::SplitMix64;

    use super::content::{civil_from_days, log_lines};
    use crate::{random_bytes, Workload};

    /// Every entry below `root`: path, kind, content hash, mtime (ns), symlink target.
    fn fingerprint(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for e in fs::read_dir(root.join(&rel)).expect("read_dir") {
                let e = e.expect("entry");
                let r = rel.join(e.file_name());
                let m = fs::symlink_metadata(e.path()).expect("metadata");
                if m.is_dir() {
                    stack.push(r.clone());
                    out.push(format!("d {}", r.display()));
                } else if m.is_symlink() {
                    let t = fs::read_link(e.path()).expect("readlink");
                    out.push(format!("l {} -> {}", r.display(), t.display()));
                } else {
                    let h = blake3::hash(&fs::read(e.path()).expect("read"));
                    let mtime = m
                        .modified()
                        .expect("mtime")
                        .duration_since(UNIX_EPOCH)
                        .expect("after epoch");
                    out.push(format!("f {} {} {}", r.display(), h, mtime.as_nanos()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn mixed_and_mutate_are_deterministic_and_the_big_file_matches_the_workload() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let scale = 0.004;
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        generate(Kind::Mixed, &a, scale, 7).expect("gen a");
        // Another thread count must not change a byte.
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool")
            .install(|| generate(Kind::Mixed, &b, scale, 7))
            .expect("gen b");
        assert_eq!(fingerprint(&a), fingerprint(&b));

        let spec = MixedSpec::scaled(scale);
        let stats = tree_stats(&a).expect("stats");
        assert_eq!(stats.files, spec.small_files as u64 + 1);
        assert_eq!(stats.symlinks, spec.symlinks as u64);
        let big = fs::read(a.join(BIG_FILE)).expect("big");
        assert!(big == random_bytes(spec.big_len as usize, big_seed(7)));

        let m = generate(Kind::Mutate, &a, scale, 7).expect("mutate").mutate.expect("summary");
        let ms = MutateSpec::scaled(scale);
        let w = Workload::generate(spec.big_len as usize, ms.big, big_seed(7));
        assert!(fs::read(a.join(BIG_FILE)).expect("big") == w.new);
        assert_eq!(m.big_changed_bytes, w.changed_bytes());
        assert_eq!((m.added, m.deleted, m.renamed), (ms.added, ms.deleted, ms.renamed));
        assert_eq!(m.small_edited + m.small_appended, 1);
        let after = tree_stats(&a).expect("stats");
        assert_eq!(after.files, stats.files + ms.added as u64 - ms.deleted as u64);

        generate(Kind::Mutate, &b, scale, 7).expect("mutate b");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert!(generate(Kind::Mixed, &a, scale, 7).is_err(), "refuses a non-empty directory");
    }

    #[test]
    fn many_and_scaling() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let g = generate(Kind::Many, tmp.path(), 0.002, 1).expect("many");
        assert_eq!(g.stats.files, 400);
        assert!(g.stats.bytes >= 400 * 100 && g.stats.bytes <= 400 * 2048);
        assert_eq!(MixedSpec::scaled(1.0), MixedSpec::FULL);
        assert_eq!(MutateSpec::scaled(1.0), MutateSpec::FULL);
        assert_eq!(ManySpec::scaled(0.05).files, 10_000);
        assert_eq!(dir_layout(200).iter().collect::<BTreeSet<_>>().len(), 200);
        assert!(check_scale(0.0).is_err() && check_scale(f64::NAN).is_err());
    }

    #[test]
    fn log_lines_look_like_logs() {
        let text = log_lines(&mut SplitMix64::new(3), 4000, 1_704_067_200_000);
        assert_eq!(text.len(), 4000);
        let s = String::from_utf8(text).expect("utf-8");
        assert!(s.starts_with("2024-01-01T00:00:"), "{}", &s[..40]);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(utc(1_709_164_800 + 3_600 + 120), "2024-02-29 01:02 UTC");
    }
}
