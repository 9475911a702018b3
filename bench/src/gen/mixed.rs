//! The `mixed` dataset: the big file, small files in a directory tree, and symlinks.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use ferry_core::rng::SplitMix64;

use super::draw::{
    base_secs, big_seed, dir_layout, file_time, sub_seed, FileSpec, Plan, TAG_BIG, TAG_LINK,
    TAG_SMALL,
};
use super::spec::MixedSpec;
use super::write::{create_dirs, prepare_empty, write_all_parallel, write_big};
use super::BIG_FILE;

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
