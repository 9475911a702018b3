//! Point-in-time images of the source (`ferry push --source-snapshot`): a reflinked copy, a
//! read-only btrfs snapshot or the user's command, read instead of the live tree and removed
//! after the round.

use std::path::{Path, PathBuf};

use crate::fs::tree::walk_tree;

/// Why a source image could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The filesystem cannot make this kind of image.
    #[error("--source-snapshot reflink: {why}")]
    Unsupported {
        /// Why not.
        why: String,
    },
    /// The `btrfs` tool or the user's command failed.
    #[error("the source snapshot command failed: {0}")]
    Command(String),
}

/// How the source takes a point-in-time image of its tree before a round reads it
/// (`ferry push --source-snapshot KIND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSnapshot {
    /// A reflinked copy of the tree (FICLONE) in the image directory.
    Reflink,
    /// A read-only btrfs snapshot of the source (which must be a subvolume).
    Btrfs,
    /// The user's command, run with `FERRY_ROOT`; the last line it prints is the directory
    /// of the image to read.
    Command(String),
}

/// A fresh image name: unique per image, not only per process, since `push --list --jobs N`
/// takes several at once and sources sharing a parent directory would otherwise share one.
fn image_name() -> String {
    static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".ferry-source-image-{}-{n}", std::process::id())
}

impl SourceSnapshot {
    /// Takes the image of `src` (in `dir` for reflink and btrfs); it is removed on drop.
    ///
    /// # Errors
    /// [`ImageError`], saying why the image could not be taken.
    pub fn take(&self, src: &Path, dir: &Path) -> Result<SourceImage, ImageError> {
        let path = dir.join(image_name());
        let run = |cmd: &mut std::process::Command| -> Result<String, ImageError> {
            match cmd.output() {
                Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
                Ok(o) => Err(ImageError::Command(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))),
                Err(e) => Err(ImageError::Command(format!("{cmd:?}: {e}"))),
            }
        };
        match self {
            SourceSnapshot::Reflink => {
                let _ = std::fs::remove_dir_all(&path);
                let image = SourceImage { path: path.clone(), btrfs: false, owned: true };
                walk_tree(src, Some((&path, true)), None).map_err(|e| ImageError::Unsupported {
                    why: format!(
                        "cloning {} into {}: {e} (reflinks need btrfs or XFS with reflink=1, and \
                         --source-image-dir on the source's filesystem)",
                        src.display(),
                        path.display()
                    ),
                })?;
                Ok(image)
            }
            SourceSnapshot::Btrfs => {
                if path.exists() {
                    let _ = run(std::process::Command::new("btrfs")
                        .args(["subvolume", "delete"])
                        .arg(&path));
                }
                run(std::process::Command::new("btrfs")
                    .args(["subvolume", "snapshot", "-r"])
                    .arg(src)
                    .arg(&path))?;
                Ok(SourceImage { path, btrfs: true, owned: true })
            }
            SourceSnapshot::Command(cmd) => {
                let out = run(std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("FERRY_ROOT", src))?;
                let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                let path = PathBuf::from(last);
                if !path.is_dir() {
                    return Err(ImageError::Command(format!(
                        "{cmd:?} must print the image's directory on its last line; it printed {last:?}"
                    )));
                }
                Ok(SourceImage { path, btrfs: false, owned: false })
            }
        }
    }
}

/// A point-in-time image of the source, read instead of the live tree; removed on drop when
/// Ferry made it.
#[derive(Debug)]
pub struct SourceImage {
    /// Where to read.
    pub path: PathBuf,
    btrfs: bool,
    owned: bool,
}

impl Drop for SourceImage {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if self.btrfs {
            let _ = std::process::Command::new("btrfs")
                .args(["subvolume", "delete"])
                .arg(&self.path)
                .output();
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Images taken at once by one process (`push --list --jobs N`) never share a name.
    #[test]
    fn images_taken_by_one_process_get_distinct_names() {
        let names: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(super::image_name)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
    }
}
