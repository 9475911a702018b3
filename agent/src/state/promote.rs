//! Failing over: making a snapshot the module's live data directory.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;

use rustix::fs as rfs;

/// Swaps two directories atomically (`renameat2(RENAME_EXCHANGE)`): each name points at the
/// other's tree afterwards, and at no moment is either name missing.
///
/// # Errors
/// I/O errors (`EXDEV` across filesystems, `EINVAL` where the filesystem cannot exchange).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rfs::renameat_with(rfs::CWD, a, rfs::CWD, b, rfs::RenameFlags::EXCHANGE)
        .map_err(io::Error::from)
}

/// Checks the data directory a promote will replace: absolute, canonical (no `..`, no symlink
/// anywhere on the way, so the name cannot be redirected to another tree) and, if it exists,
/// a real directory. `module.json` is only a record in the state directory, which a local user
/// may have written: its path is held to this before anything is replaced.
///
/// # Errors
/// Saying what is wrong with the path.
pub fn check_data_path(data: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(data.is_absolute(), "{} is not an absolute path", data.display());
    let (parent, name) = match (data.parent(), data.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => anyhow::bail!("{} names no directory", data.display()),
    };
    let canon = parent
        .canonicalize()
        .with_context(|| format!("resolving {}", parent.display()))?
        .join(name);
    anyhow::ensure!(
        canon == data,
        "{} is not canonical (a symlink or '..' on the way leads to {})",
        data.display(),
        canon.display()
    );
    match std::fs::symlink_metadata(data) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => anyhow::bail!("{} is not a directory (a symlink?)", data.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", data.display())),
    }
}

/// Creates the staging directory `staged` (never following or reusing what is there: `mkdir`
/// fails on any existing entry, a planted symlink included) and returns its identity, to be
/// checked again before the swap.
///
/// # Errors
/// When the name exists (the message says how to clear it) or cannot be created.
pub fn create_staging(staged: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Ok(m) = std::fs::symlink_metadata(staged) {
        anyhow::bail!(
            "the staging name {} already exists ({}); it is not Ferry's to reuse: inspect and              remove it, then run promote again",
            staged.display(),
            if m.file_type().is_symlink() { "a symlink" } else { "left by an earlier promote?" }
        );
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staged)
        .with_context(|| format!("creating {}", staged.display()))?;
    let m = std::fs::symlink_metadata(staged)?;
    Ok((m.dev(), m.ino()))
}

/// Checks that `staged` is still the directory [`create_staging`] made (`id`), not a symlink
/// or another tree swapped in meanwhile.
///
/// # Errors
/// When it is not.
pub fn check_staging(staged: &Path, id: (u64, u64)) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(staged)
        .with_context(|| format!("inspecting {}", staged.display()))?;
    anyhow::ensure!(
        m.file_type().is_dir() && (m.dev(), m.ino()) == id,
        "{} was replaced while the snapshot was copied into it; nothing was swapped",
        staged.display()
    );
    Ok(())
}

/// Where a promote builds its copy of snapshot `id` before swapping it in: beside the data
/// directory `data`, on its filesystem, under a name of Ferry's.
pub fn staging_path(data: &Path, id: &str) -> PathBuf {
    let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = data.parent().unwrap_or(Path::new("."));
    parent.join(format!(".{name}.ferry-promote-{id}"))
}

/// Makes the tree at `staged` the data directory `data`: atomically exchanged with the tree
/// there, which is kept beside it under a dated name (returned), or simply renamed into
/// place when `data` does not exist.
///
/// # Errors
/// I/O errors of the exchange or the renames, saying which.
pub fn swap_in(staged: &Path, data: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !data.exists() {
        std::fs::rename(staged, data)
            .with_context(|| format!("moving {} to {}", staged.display(), data.display()))?;
        return Ok(None);
    }
    let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let parent = data.parent().unwrap_or(Path::new("."));
    let aside = parent.join(format!("{name}.ferry-replaced-{}", super::snapshot::utc(when, false)));
    exchange(staged, data)
        .with_context(|| format!("swapping {} and {}", staged.display(), data.display()))?;
    std::fs::rename(staged, &aside)
        .with_context(|| format!("moving the replaced tree to {}", aside.display()))?;
    Ok(Some(aside))
}
