//! The `mutate` round, applied in place to a `mixed` tree: the big file's edits, small files
//! edited and appended to, files added, deleted and renamed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use ferry_core::rng::SplitMix64;

use super::content::log_lines;
use super::draw::{
    big_seed, file_time, later_secs, sub_seed, times, Plan, TAG_ADD, TAG_EDIT, TAG_MUTATE, TAG_TIME,
};
use super::spec::{MixedSpec, MutateSpec};
use super::write::write_all_parallel;
use super::{MutateSummary, BIG_FILE};
use crate::Edits;

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
