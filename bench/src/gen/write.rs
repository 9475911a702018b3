//! Writing drawn files to disk, small ones in parallel and the big one in parallel chunks,
//! into a directory that must start empty.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;

use super::content::content;
use super::draw::{times, FileSpec};
use crate::{fill_random_chunk, RANDOM_CHUNK};

fn write_spec(root: &Path, f: &FileSpec) -> Result<u64> {
    let path = root.join(f.rel());
    let data = content(f.len, f.text, f.seed);
    let file = File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all_at(&data, 0).with_context(|| format!("writing {}", path.display()))?;
    file.set_times(times(f.mtime))?;
    Ok(data.len() as u64)
}

pub(super) fn write_all_parallel(root: &Path, files: &[FileSpec]) -> Result<u64> {
    files.par_iter().map(|f| write_spec(root, f)).sum()
}

/// Writes `random_bytes(len, seed)` to a new file at `path`, 1 MiB chunks in parallel, without
/// holding more than one chunk per thread in memory.
pub(super) fn write_big(path: &Path, len: u64, seed: u64, mtime: SystemTime) -> Result<()> {
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
pub(super) fn prepare_empty(out: &Path) -> Result<()> {
    if out.exists() {
        ensure!(out.is_dir(), "{} exists and is not a directory", out.display());
        if fs::read_dir(out)?.next().is_some() {
            bail!("{} is not empty: give a new or empty directory", out.display());
        }
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

pub(super) fn create_dirs(root: &Path, dirs: &[String]) -> Result<()> {
    for d in dirs {
        let p = root.join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    Ok(())
}
