//! The seeded dataset generator behind `ferry-bench gen` and `ferry-bench compare`.
//!
//! - `mixed` ([`MixedSpec`]): one large incompressible file ([`BIG_FILE`], 1 GiB), 20,000 small
//!   files of 1–64 KiB (half random bytes, half log-like text) spread over ~200 directories,
//!   and a few symlinks (relative, across directories, to a directory, dangling).
//! - `mutate` ([`MutateSpec`]), applied in place to a copy of `mixed`: the big file gets the
//!   reference workload's 200 scattered 4 KiB overwrites and 10 short inserts (the same
//!   [`Edits`] plan as [`crate::Workload`], streamed through the file); 1% of the small files
//!   are edited (random files: a 1–4 KiB overwrite) or appended to (log files: new lines);
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

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use ferry_core::rng::SplitMix64;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{fill_random_chunk, Edits, Mutations, RANDOM_CHUNK};

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

/// Sizes and counts of a `mixed` tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixedSpec {
    /// Length of [`BIG_FILE`].
    pub big_len: u64,
    /// Number of small files.
    pub small_files: usize,
    /// Smallest small file, bytes.
    pub small_min: usize,
    /// Largest small file, bytes.
    pub small_max: usize,
    /// Number of (leaf) directories the small files are spread over.
    pub dirs: usize,
    /// Number of symlinks.
    pub symlinks: usize,
}

impl MixedSpec {
    /// The full-size tree of issue 5.
    pub const FULL: MixedSpec = MixedSpec {
        big_len: 1 << 30,
        small_files: 20_000,
        small_min: 1 << 10,
        small_max: 64 << 10,
        dirs: 200,
        symlinks: 8,
    };

    /// [`MixedSpec::FULL`] at `scale`; at least four symlinks at any scale, one of each kind.
    pub fn scaled(scale: f64) -> MixedSpec {
        let f = MixedSpec::FULL;
        MixedSpec {
            big_len: (f.big_len as f64 * scale).round() as u64,
            small_files: scale_count(f.small_files, scale),
            dirs: scale_count(f.dirs, scale),
            symlinks: scale_count(f.symlinks, scale).max(4),
            ..f
        }
    }
}

/// What `mutate` changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MutateSpec {
    /// Overwrites and inserts in [`BIG_FILE`].
    pub big: Mutations,
    /// Fraction of the small files edited (random files) or appended to (log files).
    pub small_changed_fraction: f64,
    /// Files added.
    pub added: usize,
    /// Files deleted.
    pub deleted: usize,
    /// Files renamed (moved to another directory).
    pub renamed: usize,
}

impl MutateSpec {
    /// The full-size round of issue 5.
    pub const FULL: MutateSpec = MutateSpec {
        big: Mutations::REFERENCE,
        small_changed_fraction: 0.01,
        added: 100,
        deleted: 100,
        renamed: 20,
    };

    /// [`MutateSpec::FULL`] at `scale` (the 1% of small files scales with the tree itself).
    pub fn scaled(scale: f64) -> MutateSpec {
        let f = MutateSpec::FULL;
        MutateSpec {
            big: Mutations {
                overwrites: scale_count(f.big.overwrites, scale),
                inserts: scale_count(f.big.inserts, scale),
                ..f.big
            },
            added: scale_count(f.added, scale),
            deleted: scale_count(f.deleted, scale),
            renamed: scale_count(f.renamed, scale),
            ..f
        }
    }
}

/// Sizes and counts of a `many` tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ManySpec {
    /// Number of files.
    pub files: usize,
    /// Smallest file, bytes.
    pub min: usize,
    /// Largest file, bytes.
    pub max: usize,
    /// Number of (leaf) directories.
    pub dirs: usize,
}

impl ManySpec {
    /// The full-size tree of issue 5.
    pub const FULL: ManySpec = ManySpec { files: 200_000, min: 100, max: 2 << 10, dirs: 2_000 };

    /// [`ManySpec::FULL`] at `scale`.
    pub fn scaled(scale: f64) -> ManySpec {
        let f = ManySpec::FULL;
        ManySpec { files: scale_count(f.files, scale), dirs: scale_count(f.dirs, scale), ..f }
    }
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

// Seed derivation: one independent stream per purpose and per index.
const TAG_BIG: u64 = 1;
const TAG_SMALL: u64 = 2;
const TAG_LINK: u64 = 3;
const TAG_MANY: u64 = 4;
const TAG_MUTATE: u64 = 5;
const TAG_TIME: u64 = 6;
const TAG_ADD: u64 = 7;
const TAG_EDIT: u64 = 8;

fn sub_seed(seed: u64, tag: u64, index: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ tag.wrapping_mul(0xA076_1D64_78BD_642F));
    let a = r.next_u64();
    SplitMix64::new(a ^ index.wrapping_mul(0xE703_7ED1_A0B4_28DB)).next_u64()
}

/// The seed of the big file's content and of its edits: with the same `seed`, `mixed` writes
/// `random_bytes(len, big_seed(seed))` and `mutate` turns it into
/// `Workload::generate(len, m, big_seed(seed)).new`.
pub fn big_seed(seed: u64) -> u64 {
    sub_seed(seed, TAG_BIG, 0)
}

/// Seconds since the epoch of the first generated mtime: 2024-01-01T00:00:00Z plus a seeded
/// offset within that year.
fn base_secs(seed: u64) -> u64 {
    1_704_067_200 + SplitMix64::new(sub_seed(seed, TAG_TIME, 0)).below(365 * 86_400)
}

/// mtimes of a later round (`mutate`): 400 days after the base, so they are never equal to an
/// original mtime.
fn later_secs(seed: u64) -> u64 {
    base_secs(seed) + 400 * 86_400
}

/// `base + index` seconds with seeded nanoseconds, so a copy has to keep full precision.
fn file_time(base: u64, index: usize, rng: &mut SplitMix64) -> SystemTime {
    UNIX_EPOCH + Duration::new(base + index as u64, rng.below(1_000_000_000) as u32)
}

fn times(t: SystemTime) -> FileTimes {
    FileTimes::new().set_accessed(t).set_modified(t)
}

/// Leaf directories `dNNN/sNNN`, about sqrt(n) of each level.
pub fn dir_layout(n: usize) -> Vec<String> {
    let fan = ((n as f64).sqrt().ceil() as usize).max(1);
    (0..n).map(|i| format!("d{:03}/s{:03}", i / fan, i % fan)).collect()
}

/// One file to write.
#[derive(Debug, Clone)]
struct FileSpec {
    dir: String,
    name: String,
    len: usize,
    text: bool,
    seed: u64,
    mtime: SystemTime,
}

impl FileSpec {
    fn rel(&self) -> PathBuf {
        Path::new(&self.dir).join(&self.name)
    }
}

/// How to draw a set of files.
struct Plan<'a> {
    count: usize,
    min: usize,
    max: usize,
    dirs: &'a [String],
    seed: u64,
    tag: u64,
    base_secs: u64,
    name: fn(usize, bool) -> String,
}

impl Plan<'_> {
    fn files(&self) -> Vec<FileSpec> {
        (0..self.count)
            .map(|i| {
                let mut rng = SplitMix64::new(sub_seed(self.seed, self.tag, i as u64));
                let dir = self.dirs[rng.below(self.dirs.len() as u64) as usize].clone();
                // Half random, half text, interleaved so every directory gets both.
                let text = i % 2 == 1;
                let len = self.min + rng.below((self.max - self.min + 1) as u64) as usize;
                FileSpec {
                    dir,
                    name: (self.name)(i, text),
                    len,
                    text,
                    seed: rng.next_u64(),
                    mtime: file_time(self.base_secs, i, &mut rng),
                }
            })
            .collect()
    }
}

/// `len` bytes of content: random bytes, or log lines.
fn content(len: usize, text: bool, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    if text {
        let start_ms = (1_704_067_200 + rng.below(365 * 86_400)) * 1000;
        log_lines(&mut rng, len, start_ms)
    } else {
        let mut v = vec![0; len];
        rng.fill(&mut v);
        v
    }
}

/// Log-like text: timestamped lines with a few repeating fields and random ids, so it
/// compresses roughly like real service logs (about 3-4x with zstd -1), cut to `len` bytes.
fn log_lines(rng: &mut SplitMix64, len: usize, start_ms: u64) -> Vec<u8> {
    const LEVELS: [&str; 8] = ["INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"];
    const PARTS: [&str; 6] = ["api", "scheduler", "volume", "snapshot", "auth", "gc"];
    const ROUTES: [&str; 6] =
        ["/v1/volumes", "/v1/snapshots", "/v1/nodes", "/v1/claims", "/healthz", "/metrics"];
    const METHODS: [&str; 4] = ["GET", "GET", "PUT", "POST"];
    const STATUS: [u16; 6] = [200, 200, 200, 201, 404, 500];
    let pick = |rng: &mut SplitMix64, n: usize| rng.below(n as u64) as usize;
    let mut s = String::with_capacity(len + 200);
    let mut ms = start_ms;
    while s.len() < len {
        ms += rng.below(2_000);
        let (secs, milli) = (ms / 1000, ms % 1000);
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let sod = secs % 86_400;
        let _ = writeln!(
            s,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z {:<5} [{}-{}] {} {}/{:08x} \
             status={} bytes={} latency_ms={} req={:016x}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
            LEVELS[pick(rng, LEVELS.len())],
            PARTS[pick(rng, PARTS.len())],
            rng.below(8),
            METHODS[pick(rng, METHODS.len())],
            ROUTES[pick(rng, ROUTES.len())],
            rng.below(1 << 20),
            STATUS[pick(rng, STATUS.len())],
            rng.below(1 << 16),
            rng.below(250),
            rng.next_u64(),
        );
    }
    let mut v = s.into_bytes();
    v.truncate(len);
    v
}

/// `secs` since the epoch as "YYYY-MM-DD HH:MM UTC".
pub fn utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", sod / 3600, sod / 60 % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn write_spec(root: &Path, f: &FileSpec) -> Result<u64> {
    let path = root.join(f.rel());
    let data = content(f.len, f.text, f.seed);
    let file = File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all_at(&data, 0).with_context(|| format!("writing {}", path.display()))?;
    file.set_times(times(f.mtime))?;
    Ok(data.len() as u64)
}

fn write_all_parallel(root: &Path, files: &[FileSpec]) -> Result<u64> {
    files.par_iter().map(|f| write_spec(root, f)).sum()
}

/// Writes `random_bytes(len, seed)` to a new file at `path`, 1 MiB chunks in parallel, without
/// holding more than one chunk per thread in memory.
fn write_big(path: &Path, len: u64, seed: u64, mtime: SystemTime) -> Result<()> {
    let f = File::create_new(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(len)?;
    let chunk = RANDOM_CHUNK as u64;
    (0..len.div_ceil(chunk))
        .into_par_iter()
        .try_for_each_init(
            || vec![0u8; RANDOM_CHUNK],
            |buf, i| {
                let off = i * chunk;
                let n = (len - off).min(chunk) as usize;
                fill_random_chunk(seed, i, &mut buf[..n]);
                f.write_all_at(&buf[..n], off)
            },
        )
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_times(times(mtime))?;
    Ok(())
}

/// Creates `out` if missing; refuses a non-empty one, so a generator never mixes its tree
/// with something else.
fn prepare_empty(out: &Path) -> Result<()> {
    if out.exists() {
        ensure!(out.is_dir(), "{} exists and is not a directory", out.display());
        if fs::read_dir(out)?.next().is_some() {
            bail!("{} is not empty: give a new or empty directory", out.display());
        }
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

fn create_dirs(root: &Path, dirs: &[String]) -> Result<()> {
    for d in dirs {
        let p = root.join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    Ok(())
}

/// Generates a `mixed` tree at `out` (missing or empty).
///
/// # Errors
/// A non-empty `out`, I/O errors.
pub fn generate_mixed(out: &Path, spec: &MixedSpec, seed: u64) -> Result<()> {
    ensure!(spec.small_files > 0 && spec.dirs > 0, "mixed needs files and directories");
    ensure!(spec.small_min <= spec.small_max, "small_min > small_max");
    prepare_empty(out)?;
    let dirs = dir_layout(spec.dirs);
    create_dirs(out, &dirs)?;
    let base = base_secs(seed);
    let files = Plan {
        count: spec.small_files,
        min: spec.small_min,
        max: spec.small_max,
        dirs: &dirs,
        seed,
        tag: TAG_SMALL,
        // The big file takes the base time itself; small files follow it.
        base_secs: base + 1,
        name: |i, text| {
            if text {
                format!("app-{i:06}.log")
            } else {
                format!("blob-{i:06}.bin")
            }
        },
    }
    .files();
    let mut rng = SplitMix64::new(sub_seed(seed, TAG_BIG, 1));
    write_big(&out.join(BIG_FILE), spec.big_len, big_seed(seed), file_time(base, 0, &mut rng))?;
    write_all_parallel(out, &files)?;
    make_symlinks(out, &files, spec.symlinks, seed)
}

/// Symlinks of four kinds, in turn: to a sibling file, from the root to a file deep in the
/// tree, to a directory, and dangling. Symlinks are copied verbatim, never followed.
fn make_symlinks(root: &Path, files: &[FileSpec], n: usize, seed: u64) -> Result<()> {
    let mut rng = SplitMix64::new(sub_seed(seed, TAG_LINK, 0));
    for k in 0..n {
        let f = &files[rng.below(files.len() as u64) as usize];
        let name = format!("link-{k:03}");
        let (at, target) = match k % 4 {
            0 => (Path::new(&f.dir).join(&name), PathBuf::from(&f.name)),
            1 => (PathBuf::from(&name), f.rel()),
            2 => (PathBuf::from(&name), PathBuf::from(&f.dir)),
            _ => (Path::new(&f.dir).join(&name), PathBuf::from("../no-such-file")),
        };
        let path = root.join(at);
        symlink(&target, &path).with_context(|| format!("creating symlink {}", path.display()))?;
    }
    Ok(())
}

/// Generates a `many` tree at `out` (missing or empty).
///
/// # Errors
/// A non-empty `out`, I/O errors.
pub fn generate_many(out: &Path, spec: &ManySpec, seed: u64) -> Result<()> {
    ensure!(spec.files > 0 && spec.dirs > 0, "many needs files and directories");
    ensure!(spec.min <= spec.max, "min > max");
    prepare_empty(out)?;
    let dirs = dir_layout(spec.dirs);
    create_dirs(out, &dirs)?;
    let files = Plan {
        count: spec.files,
        min: spec.min,
        max: spec.max,
        dirs: &dirs,
        seed,
        tag: TAG_MANY,
        base_secs: base_secs(seed),
        name: |i, text| {
            if text {
                format!("note-{i:06}.txt")
            } else {
                format!("rec-{i:06}.dat")
            }
        },
    }
    .files();
    write_all_parallel(out, &files)?;
    Ok(())
}

/// Regular files below `root`, relative, in sorted order (so selections drawn from the list
/// are reproducible), and the directories holding them.
fn list_files(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    fn walk(root: &Path, rel: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
        let dir = root.join(rel);
        let mut entries = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type()?;
            let r = rel.join(e.file_name());
            if ft.is_dir() {
                walk(root, &r, files)?;
            } else if ft.is_file() {
                files.push(r);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut files)?;
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    Ok((files, dirs.into_iter().collect()))
}

/// Applies one round of changes to the `mixed` tree at `dir`, in place.
///
/// # Errors
/// When `dir` has no [`BIG_FILE`], is too small for `spec`, or on I/O errors.
pub fn mutate(dir: &Path, spec: &MutateSpec, seed: u64) -> Result<MutateSummary> {
    let big = dir.join(BIG_FILE);
    let meta = fs::symlink_metadata(&big).with_context(|| {
        format!(
            "{} has no {BIG_FILE}: mutate changes a tree made by `gen --kind mixed`",
            dir.display()
        )
    })?;
    ensure!(meta.is_file(), "{} is not a regular file", big.display());
    let len = meta.len();
    ensure!(
        len >= spec.big.min_len() as u64,
        "{} is {len} bytes, too small for {} overwrites of {} bytes",
        big.display(),
        spec.big.overwrites,
        spec.big.overwrite_len
    );
    let later = later_secs(seed);
    let mut when = SplitMix64::new(sub_seed(seed, TAG_TIME, 1));
    let mut summary = MutateSummary::default();

    // The big file: the reference workload's edits, streamed into a new file renamed over the
    // old one (inserts shift everything after them, so the rest is rewritten anyway).
    let edits = Edits::plan(len, spec.big, big_seed(seed));
    let tmp = dir.join(format!(".{BIG_FILE}.mutating"));
    {
        let r = BufReader::with_capacity(1 << 20, File::open(&big)?);
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        edits.apply(r, len, &mut w).with_context(|| format!("rewriting {}", big.display()))?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.set_times(times(file_time(later, 0, &mut when)))?;
    }
    fs::rename(&tmp, &big)?;
    summary.big_overwrites = edits.overwrites.len();
    summary.big_inserts = edits.inserts.len();
    summary.big_changed_bytes = edits.overwritten_bytes() + edits.inserted_bytes();

    // Small files: disjoint sets drawn from one shuffle of the sorted list.
    let (mut files, dirs) = list_files(dir)?;
    files.retain(|f| f != Path::new(BIG_FILE));
    ensure!(!dirs.is_empty(), "{} has no directories of small files", dir.display());
    let mut rng = SplitMix64::new(sub_seed(seed, TAG_MUTATE, 0));
    for i in (1..files.len()).rev() {
        files.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let changed = ((files.len() as f64 * spec.small_changed_fraction).round() as usize).max(1);
    ensure!(
        files.len() >= changed + spec.deleted + spec.renamed,
        "{} has {} small files, too few to change {changed}, delete {} and rename {}",
        dir.display(),
        files.len(),
        spec.deleted,
        spec.renamed
    );
    let (to_change, rest) = files.split_at(changed);
    let (to_delete, rest) = rest.split_at(spec.deleted);
    let to_rename = &rest[..spec.renamed];

    for (j, rel) in to_change.iter().enumerate() {
        let mut r = SplitMix64::new(sub_seed(seed, TAG_EDIT, j as u64));
        let path = dir.join(rel);
        let f = OpenOptions::new().write(true).open(&path)?;
        let size = f.metadata()?.len();
        if rel.extension() == Some(OsStr::new("log")) {
            // Logs grow at the end.
            let n = 256 + r.below(4096 - 256 + 1) as usize;
            let start_ms = later * 1000 + j as u64;
            let text = log_lines(&mut r, n, start_ms);
            f.write_all_at(&text, size)?;
            summary.small_appended += 1;
            summary.appended_bytes += n as u64;
        } else {
            // Binary files change in place somewhere inside.
            let n = (1024 + r.below(3 * 1024 + 1)).min(size) as usize;
            let at = r.below(size - n as u64 + 1);
            let mut bytes = vec![0; n];
            r.fill(&mut bytes);
            f.write_all_at(&bytes, at)?;
            summary.small_edited += 1;
            summary.edited_bytes += n as u64;
        }
        f.set_times(times(file_time(later, j + 1, &mut when)))?;
    }
    for rel in to_delete {
        fs::remove_file(dir.join(rel))?;
    }
    summary.deleted = to_delete.len();
    for (j, rel) in to_rename.iter().enumerate() {
        let to = &dirs[rng.below(dirs.len() as u64) as usize];
        let name = rel.file_name().context("a listed file has a name")?;
        let mut new_name = format!("moved-{j:04}-").into_bytes();
        new_name.extend_from_slice(name.as_encoded_bytes());
        let new_name = String::from_utf8_lossy(&new_name).into_owned();
        fs::rename(dir.join(rel), dir.join(to).join(new_name))?;
    }
    summary.renamed = to_rename.len();

    let dir_names: Vec<String> = dirs.iter().map(|d| d.to_string_lossy().into_owned()).collect();
    let added = Plan {
        count: spec.added,
        min: MixedSpec::FULL.small_min,
        max: MixedSpec::FULL.small_max,
        dirs: &dir_names,
        seed,
        tag: TAG_ADD,
        base_secs: later + 1_000_000,
        name: |i, text| {
            if text {
                format!("new-{i:05}.log")
            } else {
                format!("new-{i:05}.bin")
            }
        },
    }
    .files();
    summary.added_bytes = write_all_parallel(dir, &added)?;
    summary.added = added.len();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
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
