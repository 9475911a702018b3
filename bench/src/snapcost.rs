//! `ferry-bench snapcost`: what a snapshot costs the destination, for the snapshot store and
//! for earlier versions' whole-tree hard-link snapshotter, side by side in one run.
//!
//! On a generated tree (N small files, 1,000 per directory; or the `mixed` dataset of
//! `ferry-bench gen` at a scale), for each snapshotter on a fresh
//! state directory beside the tree (the same filesystem), through the destination's own code
//! (`ferry_agent::state`, in process: no network, so only the snapshot is measured):
//!
//! 1. an initial snapshot (the store's is a full build);
//! 2. a no-change round;
//! 3. a round changing 1% of the files (every 100th regular file, in path order);
//! 4. a round changing one file (the middle one);
//! 5. retention dropping the oldest snapshot (`Snapshots::delete`: for the store, its record
//!    and a mark-and-sweep of what only it reached).
//!
//! A round's files are changed as Ferry's destination changes them (new content in a new
//! inode renamed over the name, the directory's mtime set back), and the store is handed the
//! change list such a round records. For each step: the wall time of commit plus snapshot
//! (`Snapshots::take`), and the disk it added: blocks of the live tree and the state directory
//! together, each inode counted once, after minus before.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ferry_agent::state::snapshot::{Retention, Snapshotter};
use ferry_agent::state::store::ChangeSet;
use ferry_agent::state::ModuleState;
use ferry_core::entry::{Entry, EntryKind, Meta};
use ferry_core::{RelPath, Stats};
use serde::Serialize;

/// Files per generated directory.
const PER_DIR: usize = 1000;

/// Which tree the snapshots are taken of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tree {
    /// This many small files, 1,000 per directory.
    Small(usize),
    /// `ferry-bench gen mixed` at this scale (a big file, small files over nested
    /// directories, symlinks, hard links).
    Mixed(f64),
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The tree.
    pub(crate) tree: Tree,
    /// Where the tree and the state directories go.
    pub(crate) work: PathBuf,
}

/// One step's cost.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    /// Which step.
    pub(crate) step: &'static str,
    /// Wall milliseconds of commit + snapshot (or of retention's delete).
    pub(crate) ms: f64,
    /// KiB the step added to the disk (negative: freed).
    pub(crate) kib: i64,
}

/// One snapshotter's steps.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run {
    /// `store` or `hardlink-tree`.
    pub(crate) snapshotter: &'static str,
    /// `small` or `mixed (scale S)`.
    pub(crate) tree: String,
    /// Regular files in the tree.
    pub(crate) files: usize,
    /// The steps, in order.
    pub(crate) steps: Vec<Step>,
}

/// Runs both snapshotters, each on a fresh copy of the tree.
///
/// # Errors
/// I/O errors, a failed snapshot.
pub(crate) fn run(opts: &Options) -> Result<Vec<Run>> {
    let mut out = Vec::new();
    for (name, how) in
        [("store", Snapshotter::Hardlink), ("hardlink-tree", Snapshotter::HardlinkTree)]
    {
        let base = opts.work.join(name);
        let _ = std::fs::remove_dir_all(&base);
        let live = base.join("live");
        let (tree, files) = match opts.tree {
            Tree::Small(n) => {
                generate(&live, n)?;
                ("small".to_string(), (0..n).map(rel).collect())
            }
            Tree::Mixed(scale) => {
                ferry_bench::gen::generate(ferry_bench::gen::Kind::Mixed, &live, scale, 1)?;
                (format!("mixed (scale {scale})"), plain_files(&live)?)
            }
        };
        let mut r = run_one(name, &how, &live, &base.join("state"), &files)?;
        r.tree = tree;
        out.push(r);
    }
    Ok(out)
}

/// The tree's regular files with one link, in path order: the files a round may replace
/// by a new inode without touching a hard-link group.
fn plain_files(live: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(live.join(&d))? {
            let e = e?;
            let name = e.file_name().into_string().map_err(|n| anyhow::anyhow!("{n:?}"))?;
            let r = if d.is_empty() { name } else { format!("{d}/{name}") };
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(r);
            } else if m.is_file() && m.nlink() == 1 {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn run_one(
    name: &'static str,
    how: &Snapshotter,
    live: &Path,
    state: &Path,
    files: &[String],
) -> Result<Run> {
    let ms = ModuleState::new(state, "m");
    let snaps = ms.open_snapshots(live, how).map_err(|e| anyhow::anyhow!("{e}"))?;
    let commits = ms.commits();
    let mut steps = Vec::new();
    let mut round = 0u64;
    let mut step = |label: &'static str, changed: &[usize]| -> Result<()> {
        round += 1;
        let changed: Vec<&str> = changed.iter().map(|&i| files[i].as_str()).collect();
        let changes = change(live, &changed, round)?;
        let before = disk_kib(&[live, state])?;
        let t = Instant::now();
        let cs =
            if label == "initial" { Err("the first snapshot".to_string()) } else { Ok(changes) };
        snaps
            .take(live, &Stats::default(), &Retention::default(), &commits, &[], cs, how)
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let kib = disk_kib(&[live, state])? as i64 - before as i64;
        steps.push(Step { step: label, ms, kib });
        Ok(())
    };
    step("initial", &[])?;
    step("no change", &[])?;
    let one_percent: Vec<usize> = (0..files.len()).step_by(100).collect();
    step("1% changed", &one_percent)?;
    step("one file changed", &[files.len() / 2])?;
    let oldest = snaps.list().map_err(|e| anyhow::anyhow!("{e}"))?[0].id.clone();
    let before = disk_kib(&[live, state])?;
    let t = Instant::now();
    snaps.delete(&oldest).map_err(|e| anyhow::anyhow!("retention: {e}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let kib = disk_kib(&[live, state])? as i64 - before as i64;
    steps.push(Step { step: "retention (drop one)", ms, kib });
    Ok(Run { snapshotter: name, tree: String::new(), files: files.len(), steps })
}

fn rel(i: usize) -> String {
    format!("d{:04}/f{:06}", i / PER_DIR, i)
}

fn generate(live: &Path, files: usize) -> Result<()> {
    for i in 0..files {
        let p = live.join(rel(i));
        if i % PER_DIR == 0 {
            std::fs::create_dir_all(p.parent().context("parent")?)?;
        }
        std::fs::write(&p, format!("file {i}, version 0\n"))?;
    }
    Ok(())
}

fn meta(m: &std::fs::Metadata) -> Meta {
    Meta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
    }
}

/// Changes files `which` as a round would (new content of the same length in a new inode
/// renamed over the name, the directory's mtime set back) and returns the change list that
/// round records.
fn change(live: &Path, which: &[&str], round: u64) -> Result<ChangeSet> {
    let mut cs = ChangeSet::default();
    let mut dirs = HashSet::new();
    for &r in which {
        let p = live.join(r);
        let dir = p.parent().context("parent")?.to_path_buf();
        let dir_mtime = std::fs::metadata(&dir)?.modified()?;
        let mut body = std::fs::read(&p)?;
        let stamp = format!("round {round} ");
        for (b, s) in body.iter_mut().zip(stamp.bytes()) {
            *b = s;
        }
        if body.is_empty() {
            body = stamp.into_bytes();
        }
        let tmp = dir.join(".ferry-bench-tmp");
        std::fs::write(&tmp, &body)?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(&dir)?.set_modified(dir_mtime)?;
        let m = std::fs::symlink_metadata(&p)?;
        let entry = Entry {
            path: RelPath::new(r.as_bytes().to_vec())?,
            kind: EntryKind::File,
            size: m.len(),
            meta: meta(&m),
            xattrs: Vec::new(),
            hash: Some(*blake3::hash(&body).as_bytes()),
        };
        let key = (m.dev(), m.ino(), m.len(), meta(&m).mtime_ns);
        cs.upserts.push((entry, Some(key)));
        if let Some((d, _)) = r.rsplit_once('/') {
            dirs.insert(d.to_string());
        }
    }
    for d in dirs {
        let m = std::fs::symlink_metadata(live.join(&d))?;
        let entry = Entry {
            path: RelPath::new(d.as_bytes().to_vec())?,
            kind: EntryKind::Dir,
            size: 0,
            meta: meta(&m),
            xattrs: Vec::new(),
            hash: None,
        };
        cs.upserts.push((entry, None));
    }
    Ok(cs)
}

/// KiB of disk the trees under `roots` hold, each inode counted once (like `du` over all of
/// them in one invocation).
fn disk_kib(roots: &[&Path]) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut blocks = 0u64;
    let mut stack: Vec<PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
    while let Some(p) = stack.pop() {
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| p.display().to_string()),
        };
        if seen.insert((m.dev(), m.ino())) {
            blocks += m.blocks();
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(blocks / 2)
}

/// The runs as a table.
pub(crate) fn print(runs: &[Run]) {
    println!(
        "{:<14} {:<18} {:>9} {:<22} {:>12} {:>12}",
        "snapshotter", "tree", "files", "step", "ms", "KiB added"
    );
    for r in runs {
        for s in &r.steps {
            println!(
                "{:<14} {:<18} {:>9} {:<22} {:>12.1} {:>12}",
                r.snapshotter, r.tree, r.files, s.step, s.ms, s.kib
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny scale: every step runs for both snapshotters, and the store's no-change round
    /// adds less than the whole-tree snapshotter's (a record against a tree of links).
    #[test]
    fn snapcost_runs_at_tiny_scale() {
        let t = tempfile::tempdir().unwrap();
        let runs = run(&Options { tree: Tree::Small(2500), work: t.path().to_path_buf() }).unwrap();
        assert_eq!(runs.len(), 2);
        for r in &runs {
            let names: Vec<_> = r.steps.iter().map(|s| s.step).collect();
            assert_eq!(
                names,
                ["initial", "no change", "1% changed", "one file changed", "retention (drop one)"]
            );
        }
        let no_change = |r: &Run| r.steps[1].kib;
        assert!(
            no_change(&runs[0]) < no_change(&runs[1]),
            "store {} KiB, hard-link tree {} KiB",
            no_change(&runs[0]),
            no_change(&runs[1])
        );
        print(&runs);
    }

    /// The mixed tree (nested directories, symlinks, hard links, a big file) runs every step
    /// for both snapshotters; the changed files are plain ones of the tree.
    #[test]
    fn snapcost_runs_on_the_mixed_tree() {
        let t = tempfile::tempdir().unwrap();
        let runs = run(&Options { tree: Tree::Mixed(0.01), work: t.path().to_path_buf() }).unwrap();
        assert_eq!(runs.len(), 2);
        for r in &runs {
            assert_eq!(r.steps.len(), 5);
            assert!(r.files >= 100, "{} plain files", r.files);
            assert_eq!(r.tree, "mixed (scale 0.01)");
        }
        assert!(runs[0].steps[1].kib < runs[1].steps[1].kib);
    }
}
