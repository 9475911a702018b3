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
