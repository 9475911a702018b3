//! The `many` dataset: many small files in many directories.

use std::path::Path;

use anyhow::{ensure, Result};

use super::draw::{base_secs, dir_layout, Plan, TAG_MANY};
use super::spec::ManySpec;
use super::write::{create_dirs, prepare_empty, write_all_parallel};

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
