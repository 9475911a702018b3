//! `ferry snapshots list|verify|delete`, `ferry restore` and `ferry promote`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::exit::Usage;
use super::flags::{SnapshotAction, SnapshotRef};
use super::output::{human_bytes, print_summary, sync_with_progress};
use crate::round::{RoundOptions, SyncOptions};
use crate::state::snapshot::{utc, SnapshotError, Snapshots};
use crate::state::{promote, ModuleState};

impl SnapshotRef {
    /// The module's snapshots, after checking this one exists.
    fn find(&self) -> anyhow::Result<Snapshots> {
        let snaps = ModuleState::new(&self.state_dir, &self.module).snapshots();
        if !crate::state::snapshot::valid_id(&self.snapshot)
            || !snaps.list()?.iter().any(|r| r.id == self.snapshot)
        {
            anyhow::bail!(Usage(format!(
                "module {:?} has no snapshot {:?} (see `ferry snapshots list`)",
                self.module, self.snapshot
            )));
        }
        Ok(snaps)
    }
}

/// A verified copy that replaces whatever is at its destination.
fn copy_options() -> SyncOptions {
    SyncOptions {
        round: RoundOptions { delete: true, ..RoundOptions::default() },
        ..SyncOptions::default()
    }
}

/// `ferry snapshots ...`.
pub(super) fn run(action: SnapshotAction) -> anyhow::Result<ExitCode> {
    match action {
        SnapshotAction::List { state_dir, module, json } => list(&state_dir, &module, json),
        SnapshotAction::Verify { snap, json } => verify(&snap, json),
        SnapshotAction::Delete(r) => {
            r.find()?.delete(&r.snapshot)?;
            println!("deleted snapshot {} of module {:?}", r.snapshot, r.module);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(state_dir: &Path, module: &str, json: bool) -> anyhow::Result<ExitCode> {
    let list = ModuleState::new(state_dir, module).snapshots().list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<24} {:>6} {:>10} {:>12}  {:<20}  root hash",
            "id", "round", "entries", "bytes", "committed (UTC)"
        );
        for r in &list {
            let when = utc(r.time_unix, true);
            let root = if r.root_hash.is_empty() { "-" } else { &r.root_hash[..] };
            println!(
                "{:<24} {:>6} {:>10} {:>12}  {:<20}  {}",
                r.id, r.round, r.entries, r.bytes, when, root
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(r: &SnapshotRef, json: bool) -> anyhow::Result<ExitCode> {
    let v = r.find()?.verify(&r.snapshot)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": v.ok(), "verification": v,
            }))?
        );
    } else if v.ok() {
        println!(
            "snapshot {} of module {:?} is intact: {} entries, {} read, root {}",
            v.id,
            r.module,
            v.entries,
            human_bytes(v.bytes),
            v.computed
        );
    } else if v.recorded.is_empty() {
        eprintln!("snapshot {} has no recorded root hash (taken by an older ferry)", v.id);
    } else {
        eprintln!(
            "snapshot {} of module {:?} DOES NOT MATCH its record: recorded root {}, \
             computed {} over {} entries. Something changed it after it was taken; \
             restore from another snapshot.",
            v.id, r.module, v.recorded, v.computed, v.entries
        );
    }
    Ok(if v.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `ferry restore`.
pub(super) fn restore(r: &SnapshotRef, to: &Path, hardlinks: bool) -> anyhow::Result<ExitCode> {
    let snaps = r.find()?;
    let fresh = !to.exists();
    if hardlinks && !fresh {
        anyhow::bail!(Usage(format!(
            "--hardlinks restores into a new directory; {} exists",
            to.display()
        )));
    }
    if hardlinks {
        tracing::warn!(
            "restoring as hard links: {} shares its files' inodes with snapshot {} (and \
             with the live module where files did not change since); anything written \
             there changes the snapshot too (use it read-only)",
            to.display(),
            r.snapshot
        );
    }
    // Reflinked copies get their owners only as root; the root hash covers ownership,
    // so without root the copy path (which says ownership was skipped) is used.
    if fresh && (hardlinks || crate::fs::can_chown()) {
        match snaps.restore_linked(&r.snapshot, to, hardlinks) {
            Ok(v) if v.ok() => {
                println!(
                    "restored snapshot {} of module {:?} to {} as {} ({} entries, {} bytes read back, root {} as recorded)",
                    r.snapshot,
                    r.module,
                    to.display(),
                    if hardlinks { "hard links" } else { "reflinked copies" },
                    v.entries,
                    v.bytes,
                    &v.computed[..16.min(v.computed.len())]
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok(v) => anyhow::bail!(
                "the tree restored from snapshot {} has root hash {}, not the recorded {}: \
                 the snapshot was changed after it was taken (`ferry snapshots verify`); \
                 nothing was left at {}",
                r.snapshot,
                v.computed,
                v.recorded,
                to.display()
            ),
            Err(SnapshotError::Unsupported { why, .. }) if !hardlinks => {
                tracing::info!("no reflinks here ({why}); copying instead")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let opts = copy_options();
    let report = sync_with_progress(&snaps.path(&r.snapshot), to, &opts, false, true)
        .with_context(|| format!("restoring snapshot {} to {}", r.snapshot, to.display()))?;
    print_summary(&report, false);
    println!(
        "restored snapshot {} of module {:?} to {} as a verified copy",
        r.snapshot,
        r.module,
        to.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `ferry promote`.
pub(super) fn promote(r: &SnapshotRef, data: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let snaps = r.find()?;
    let commits = ModuleState::new(&r.state_dir, &r.module).commits();
    let from_record = data.is_none();
    let data = data.map(std::path::absolute).transpose().context("--data")?;
    let Some(data) = data.or_else(|| commits.module_path()) else {
        anyhow::bail!(Usage(format!(
            "where is module {:?}'s data? pass --data DIR (no `ferry serve` has recorded it in {})",
            r.module,
            r.state_dir.display()
        )));
    };
    promote::check_data_path(&data).map_err(|e| {
        Usage(format!(
            "refusing to replace {} ({}): {e:#}; pass --data DIR to name the data directory",
            data.display(),
            if from_record { "recorded in module.json" } else { "--data" }
        ))
    })?;
    println!(
        "promote: {} will be replaced by snapshot {} (the replaced tree is kept beside it)",
        data.display(),
        r.snapshot
    );
    let staged = promote::staging_path(&data, &r.snapshot);
    let made = promote::create_staging(&staged)?;
    // A new copy on the data's filesystem: the live tree must not share inodes with the
    // snapshot (the application will write into it).
    let report =
        sync_with_progress(&snaps.path(&r.snapshot), &staged, &copy_options(), false, true)
            .with_context(|| format!("copying snapshot {} to {}", r.snapshot, staged.display()))?;
    promote::check_staging(&staged, made)?;
    let aside = promote::swap_in(&staged, &data)?;
    print_summary(&report, false);
    println!(
        "promoted snapshot {} of module {:?}: {} is now that tree",
        r.snapshot,
        r.module,
        data.display()
    );
    if let Some(aside) = aside {
        println!(
            "the replaced tree is at {} (delete it when you no longer need it)",
            aside.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
