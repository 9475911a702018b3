//! Synthetic data for `ferry bench --peer`'s sync round: a seeded tree generated in a scratch
//! directory (tmpfs when it has room, so the disk stays out of the measurement), synced with
//! the real sessions, then removed.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where scratch trees go when memory-backed storage is not available or too small.
fn fallback_dir() -> PathBuf {
    std::env::temp_dir()
}

/// A scratch directory for `bytes` of data, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    /// The directory (empty when made).
    pub path: PathBuf,
    /// Whether it is on tmpfs (memory) rather than a disk.
    pub in_memory: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Free bytes on the filesystem holding `dir`, and whether it is tmpfs.
fn free_space(dir: &Path) -> Option<(u64, bool)> {
    let st = rustix::fs::statfs(dir).ok()?;
    let free = (st.f_bavail as u64).saturating_mul(st.f_bsize as u64);
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    Some((free, st.f_type as i64 == TMPFS_MAGIC))
}

impl Scratch {
    /// A new directory with room for `bytes` (plus a margin): on `/dev/shm` when it is tmpfs
    /// with room, else in the temporary directory.
    ///
    /// # Errors
    /// When no candidate has room, or the directory cannot be made.
    pub fn new(tag: &str, bytes: u64) -> std::io::Result<Scratch> {
        let need = bytes + bytes / 4 + (16 << 20);
        let mut tried = Vec::new();
        for dir in [PathBuf::from("/dev/shm"), fallback_dir()] {
            let Some((free, tmpfs)) = free_space(&dir) else { continue };
            if free < need {
                tried.push(format!("{} has {} MiB free", dir.display(), free >> 20));
                continue;
            }
            let path = dir.join(format!(
                "ferry-bench-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            std::fs::create_dir(&path)?;
            return Ok(Scratch { path, in_memory: tmpfs });
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("no room for {} MiB of scratch data: {}", need >> 20, tried.join(", ")),
        ))
    }
}

/// Writes a seeded tree of about `bytes` into `dir`: half in one large incompressible file,
/// half in files of 4–64 KiB in 16 directories (every other one log-like text, which
/// compresses). Returns the files written.
///
/// # Errors
/// I/O errors.
pub fn generate(dir: &Path, bytes: u64, seed: u64) -> std::io::Result<u64> {
    let mut rng = blake3::Hasher::new_derive_key("ferry bench --peer synthetic tree");
    rng.update(&seed.to_le_bytes());
    let mut stream = rng.finalize_xof();
    let big = bytes / 2;
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("big.img"))?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = big;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    let mut files = 1;
    let mut left = bytes - big;
    let mut word = [0u8; 8];
    while left > 0 {
        stream.fill(&mut word);
        let r = u64::from_le_bytes(word);
        let size = (4096 + r % (60 << 10)).min(left);
        let sub = dir.join(format!("d{:02}", files % 16));
        if files <= 16 {
            std::fs::create_dir_all(&sub)?;
        }
        let data = if files % 2 == 0 {
            let mut line = 0u64;
            let mut text = Vec::with_capacity(size as usize + 100);
            while (text.len() as u64) < size {
                line += 1;
                let _ = writeln!(
                    text,
                    "2026-11-21T03:{:02}:{:02}Z INFO request {} served in {} us",
                    line % 60,
                    r % 60,
                    r.wrapping_add(line) % 100_000,
                    line * 37 % 9000
                );
            }
            text.truncate(size as usize);
            text
        } else {
            let mut b = vec![0u8; size as usize];
            stream.fill(&mut b);
            b
        };
        std::fs::write(sub.join(format!("f{files:06}")), data)?;
        files += 1;
        left -= size;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generates_the_size_asked_for_the_same_way_every_time() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let n = generate(a.path(), 3 << 20, 7).unwrap();
        assert_eq!(generate(b.path(), 3 << 20, 7).unwrap(), n);
        let total = |d: &Path| -> (u64, Vec<u8>) {
            let mut sum = 0;
            let mut h = blake3::Hasher::new();
            let mut paths: Vec<_> = walk(d);
            paths.sort();
            for p in paths {
                let data = std::fs::read(&p).unwrap();
                sum += data.len() as u64;
                h.update(p.strip_prefix(d).unwrap().as_os_str().as_encoded_bytes());
                h.update(&data);
            }
            (sum, h.finalize().as_bytes().to_vec())
        };
        let (sa, ha) = total(a.path());
        assert_eq!(sa, 3 << 20);
        assert_eq!((sa, ha), total(b.path()));
        assert!(n > 30, "{n} files");
    }

    fn walk(d: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn scratch_is_removed_on_drop() {
        let s = Scratch::new("test", 1 << 20).unwrap();
        let p = s.path.clone();
        assert!(p.is_dir());
        drop(s);
        assert!(!p.exists());
    }
}
