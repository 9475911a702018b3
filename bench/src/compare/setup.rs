//! The ground a comparison runs on: its work directory, where destinations go (and the tmpfs
//! for them), the machine's description, and the independent `rsync` check after every run.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use super::Host;

/// Where datasets and destinations live.
pub(super) enum Work {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Work {
    pub(super) fn path(&self) -> &Path {
        match self {
            Work::Temp(t) => t.path(),
            Work::Given(p) => p,
        }
    }
}

/// Where destinations go, and how to clean it up.
pub(super) struct DestRoot {
    pub(super) path: PathBuf,
    /// A tmpfs we mounted at `path`.
    mounted: bool,
    /// A directory of ours in /dev/shm.
    shm: Option<tempfile::TempDir>,
}

impl DestRoot {
    pub(super) fn new(work: &Path, tmpfs: bool) -> Result<DestRoot> {
        if !tmpfs {
            let path = work.join("dst");
            fs::create_dir_all(&path)?;
            return Ok(DestRoot { path, mounted: false, shm: None });
        }
        let path = work.join("dst-tmpfs");
        fs::create_dir_all(&path)?;
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755", "ferry-bench"])
            .arg(&path)
            .output();
        match mount {
            Ok(o) if o.status.success() => Ok(DestRoot { path, mounted: true, shm: None }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("note: cannot mount a tmpfs ({why}); using /dev/shm for destinations");
                fs::remove_dir(&path)?;
                let shm = tempfile::Builder::new()
                    .prefix("ferry-compare-")
                    .tempdir_in("/dev/shm")
                    .context("neither a tmpfs mount nor /dev/shm is available for --dest-tmpfs")?;
                Ok(DestRoot { path: shm.path().to_path_buf(), mounted: false, shm: Some(shm) })
            }
        }
    }

    /// Unmounts or removes what we made; with `keep`, leaves it and says where.
    pub(super) fn cleanup(self, keep: bool) -> Result<()> {
        if keep {
            if self.mounted {
                eprintln!(
                    "destinations kept on tmpfs at {} (umount it when done)",
                    self.path.display()
                );
            }
            if let Some(t) = self.shm {
                eprintln!("destinations kept at {}", t.keep().display());
            }
            return Ok(());
        }
        if self.mounted {
            let st = Command::new("umount").arg(&self.path).status()?;
            ensure!(st.success(), "umount {} failed", self.path.display());
        }
        Ok(())
    }
}

pub(super) fn fs_name(path: &Path) -> String {
    let Ok(s) = rustix::fs::statfs(path) else { return "unknown".into() };
    // f_type values from linux/magic.h.
    match s.f_type as u64 {
        0x0102_1994 => "tmpfs".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        other => format!("0x{other:x}"),
    }
}

pub(super) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

pub(super) fn host(loadavg_start: String) -> Host {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem_total_bytes = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    Host {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        mem_total_bytes,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_start,
        loadavg_end: String::new(),
    }
}

/// `cp -a from to` (untimed preparation).
pub(super) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().context("running cp")?;
    ensure!(st.success(), "cp -a {} {} failed", from.display(), to.display());
    Ok(())
}

pub(super) fn remove_tree(p: &Path) -> Result<()> {
    if fs::symlink_metadata(p).is_ok() {
        fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// The independent check: `rsync -aHAXnic --delete SRC/ DST/` prints nothing when DST equals
/// SRC in content (checksums), types, permissions, times, owners, links, ACLs and xattrs.
///
/// # Errors
/// When it prints anything, with what it printed.
pub fn verify(src: &Path, dst: &Path) -> Result<()> {
    verify_with(src, dst, false)
}

/// [`verify`], with `omit_dir_times` adding `--omit-dir-times` (`-O`): directories' times are
/// not compared. For the VolSync-style mover only: its second pass deletes with `-rx`, which
/// does not preserve times, so every directory it deletes from keeps the time of the deletion.
///
/// # Errors
/// When it prints anything, with what it printed.
pub(super) fn verify_with(src: &Path, dst: &Path, omit_dir_times: bool) -> Result<()> {
    let mut s: OsString = src.as_os_str().to_owned();
    s.push("/");
    let mut d: OsString = dst.as_os_str().to_owned();
    d.push("/");
    let mut cmd = Command::new("rsync");
    cmd.args(["-aHAXnic", "--delete"]);
    if omit_dir_times {
        cmd.arg("--omit-dir-times");
    }
    let out = cmd.arg(&s).arg(&d).output().context("running rsync to verify")?;
    ensure!(
        out.status.success(),
        "the check `rsync -aHAXnic --delete {} {}` failed: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    if !diff.trim().is_empty() {
        let n = diff.lines().count();
        let first: Vec<&str> = diff.lines().take(40).collect();
        bail!(
            "DESTINATION DIFFERS FROM SOURCE: `rsync -aHAXnic --delete {} {}` lists {n} \
             differences:\n{}{}",
            src.display(),
            dst.display(),
            first.join("\n"),
            if n > 40 { "\n..." } else { "" }
        );
    }
    Ok(())
}

pub(super) fn syncfs(path: &Path) -> Result<()> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::syncfs(&f).with_context(|| format!("syncfs {}", path.display()))?;
    Ok(())
}
