//! `ferry snapshots list|verify|delete|diff|ls|restore|promote` (the last two, and `list
//! --group`, act on a consistency group's generation), `ferry restore` and `ferry promote`.
//!
//! Snapshots live in the store (`--snapshot hardlink|reflink`, the default) or, for earlier
//! versions' snapshots and `btrfs`, as directories of their own; every command takes both.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::exit::Usage;
use super::flags::{GenerationRef, SnapshotAction, SnapshotRef};
use super::output::{human_bytes, print_summary, sync_with_progress};
use crate::round::{RoundOptions, SyncOptions};
use crate::state::group::{Generation, GroupError, Groups};
use crate::state::snapshot::{utc, SnapshotError, SnapshotRecord, Snapshots};
use crate::state::store::{Change, Materialize, Store, StoreError};
use crate::state::{promote, ModuleState};

impl SnapshotRef {
    /// The module's snapshots and this one's record, after checking it exists.
    fn find(&self) -> anyhow::Result<(Snapshots, SnapshotRecord)> {
        find(&self.state_dir, &self.module, &self.snapshot)
    }
}

fn find(state_dir: &Path, module: &str, id: &str) -> anyhow::Result<(Snapshots, SnapshotRecord)> {
    let snaps = ModuleState::new(state_dir, module).snapshots();
    let rec = if crate::state::snapshot::valid_id(id) {
        snaps.list()?.into_iter().find(|r| r.id == id)
    } else {
        None
    };
    let Some(rec) = rec else {
        anyhow::bail!(Usage(format!(
            "module {module:?} has no snapshot {id:?} in {} (see `ferry snapshots list`)",
            state_dir.display()
        )));
    };
    Ok((snaps, rec))
}

/// The store holding `rec`, which must be a store snapshot (`what` names the command, for
/// the message when it is not).
fn store_of(snaps: &Snapshots, rec: &SnapshotRecord, what: &str) -> anyhow::Result<Store> {
    if !rec.in_store() {
        anyhow::bail!(Usage(format!(
            "snapshot {} is a {} snapshot directory, not in the snapshot store: {what} works on              store snapshots (taken with --snapshot hardlink or reflink by this version);              browse the directory {} instead",
            rec.id,
            if rec.kind.is_empty() { "hardlink" } else { &rec.kind },
            snaps.path(&rec.id).display()
        )));
    }
    match snaps.existing_store()? {
        Some(s) => Ok(s),
        None => anyhow::bail!("snapshot {}: the snapshot store is gone", rec.id),
    }
}

/// A store error explained: a damaged store says what to do about it; a path or snapshot
/// that is not there is a usage error.
fn explain(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::NotFound(_) | StoreError::NoSuchPath { .. } | StoreError::BadName { .. } => {
            Usage(format!("{e} (see `ferry snapshots list` and `ferry snapshots ls`)")).into()
        }
        StoreError::Damaged { .. } | StoreError::BadRecord { .. } => anyhow::anyhow!(
            "{e}: the snapshot store was changed or damaged after the snapshot was taken; run              `ferry snapshots verify` on each snapshot, restore from one that verifies, and              delete those that do not"
        ),
        e => e.into(),
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
        SnapshotAction::List { state_dir, group: Some(g), json, .. } => {
            list_group(&state_dir, &g, json)
        }
        SnapshotAction::List { state_dir, module, json, .. } => {
            list(&state_dir, module.as_deref().unwrap_or_default(), json)
        }
        SnapshotAction::Restore { generation, to } => restore_group(&generation, to.as_deref()),
        SnapshotAction::Promote { generation } => promote_group(&generation),
        SnapshotAction::Verify { snap, path, json } => verify(&snap, path.as_deref(), json),
        SnapshotAction::Delete(r) => {
            let (snaps, _) = r.find()?;
            // A generation naming it would no longer restore.
            if Groups::at(&r.state_dir)
                .pinned(&r.module)
                .map_err(group_error)?
                .contains(&r.snapshot)
            {
                anyhow::bail!(Usage(format!(
                    "snapshot {} of module {:?} is a member of a consistency group's generation \
                     (see `ferry snapshots list --group`): remove that generation's record \
                     first",
                    r.snapshot, r.module
                )));
            }
            snaps.delete(&r.snapshot).map_err(|e| match e {
                SnapshotError::Store(e) => explain(e),
                e => e.into(),
            })?;
            println!("deleted snapshot {} of module {:?}", r.snapshot, r.module);
            Ok(ExitCode::SUCCESS)
        }
        SnapshotAction::Diff { state_dir, module, a, b, json } => {
            diff(&state_dir, &module, &a, &b, json)
        }
        SnapshotAction::Ls { state_dir, module, id, path, json } => {
            ls(&state_dir, &module, &id, path.as_deref(), json)
        }
    }
}

fn change_name(c: Change) -> &'static str {
    match c {
        Change::Added => "added",
        Change::Removed => "removed",
        Change::Changed => "changed",
        Change::Metadata => "metadata",
    }
}

/// `ferry snapshots diff`.
fn diff(state_dir: &Path, module: &str, a: &str, b: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (snaps, ra) = find(state_dir, module, a)?;
    let (_, rb) = find(state_dir, module, b)?;
    let store = store_of(&snaps, &ra, "diff")?;
    store_of(&snaps, &rb, "diff")?;
    let d = store.diff(a, b).map_err(explain)?;
    if json {
        let changes: Vec<_> = d
            .iter()
            .map(|e| serde_json::json!({"path": e.display(), "change": change_name(e.change)}))
            .collect();
        let out = serde_json::json!({"a": a, "b": b, "changes": changes});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for e in &d {
            println!("{:<8} {}", change_name(e.change), e.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry snapshots ls`.
fn ls(
    state_dir: &Path,
    module: &str,
    id: &str,
    path: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (snaps, rec) = find(state_dir, module, id)?;
    let entries = store_of(&snaps, &rec, "ls")?.ls(id, path).map_err(explain)?;
    if json {
        let out: Vec<_> = entries
            .iter()
            .map(|e| {
                let target = match &e.kind {
                    ferry_core::EntryKind::Symlink { target } => {
                        Some(String::from_utf8_lossy(target).into_owned())
                    }
                    ferry_core::EntryKind::HardLink { to } => Some(to.display()),
                    _ => None,
                };
                serde_json::json!({
                    "path": e.path.display(),
                    "kind": e.kind.name(),
                    "size": e.size,
                    "mode": format!("{:04o}", e.meta.mode),
                    "uid": e.meta.uid,
                    "gid": e.meta.gid,
                    "mtime_ns": e.meta.mtime_ns,
                    "target": target,
                    "blake3": e.hash.map(|h| blake3::Hash::from(h).to_hex().to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let when = utc(e.meta.mtime_ns.div_euclid(1_000_000_000).max(0) as u64, true);
        let tail = match &e.kind {
            ferry_core::EntryKind::Symlink { target } => {
                format!(" -> {}", String::from_utf8_lossy(target))
            }
            ferry_core::EntryKind::HardLink { to } => format!(" => {}", to.display()),
            _ => String::new(),
        };
        println!(
            "{:<8} {:04o} {:>6}:{:<6} {:>12}  {}  {}{}",
            e.kind.name(),
            e.meta.mode,
            e.meta.uid,
            e.meta.gid,
            e.size,
            when,
            e.path.display(),
            tail
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry snapshots list --group`.
fn list_group(state_dir: &Path, group: &str, json: bool) -> anyhow::Result<ExitCode> {
    let list = Groups::at(state_dir).list(group).map_err(group_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<20}  members (module=snapshot)", "generation", "recorded (UTC)");
    for g in &list {
        let members: Vec<String> =
            g.members.iter().map(|m| format!("{}={}", m.module, m.snapshot)).collect();
        println!("{:<24} {:<20}  {}", g.generation, utc(g.time_unix, true), members.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

/// A group error: a bad name or a missing generation is the user's to fix.
fn group_error(e: GroupError) -> anyhow::Error {
    match e {
        GroupError::BadName { .. } | GroupError::NotFound { .. } => {
            Usage(format!("{e} (see `ferry snapshots list --group`)")).into()
        }
        e => e.into(),
    }
}

/// The generation `g` names and each member's snapshot reference, every snapshot checked to
/// exist before the caller writes anything.
fn members_of(g: &GenerationRef) -> anyhow::Result<(Generation, Vec<SnapshotRef>)> {
    let generation =
        Groups::at(&g.state_dir).find(&g.group, g.generation.as_deref()).map_err(group_error)?;
    let mut refs = Vec::with_capacity(generation.members.len());
    for m in &generation.members {
        crate::state::check_module_name(&m.module).map_err(Usage)?;
        let r = SnapshotRef {
            state_dir: g.state_dir.clone(),
            module: m.module.clone(),
            snapshot: m.snapshot.clone(),
        };
        r.find().with_context(|| {
            format!("generation {} of group {:?} is not whole", generation.generation, g.group)
        })?;
        refs.push(r);
    }
    Ok((generation, refs))
}

/// `ferry snapshots restore --group`.
fn restore_group(g: &GenerationRef, to: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (generation, refs) = members_of(g)?;
    for r in &refs {
        let dest = match to {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
                dir.join(&r.module)
            }
            None => {
                let commits = ModuleState::new(&r.state_dir, &r.module).commits();
                let Some(data) = commits.module_path() else {
                    anyhow::bail!(Usage(format!(
                        "where is module {:?}'s data? pass --to DIR (no `ferry serve` has                          recorded it in {})",
                        r.module,
                        r.state_dir.display()
                    )));
                };
                promote::check_data_path(&data).map_err(|e| {
                    Usage(format!(
                        "refusing to restore over {} (recorded in module.json): {e:#}; pass --to DIR",
                        data.display()
                    ))
                })?;
                data
            }
        };
        restore(r, &dest, false)?;
    }
    println!(
        "restored generation {} of group {:?}: {} module(s)",
        generation.generation,
        g.group,
        refs.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `ferry snapshots promote --group`.
fn promote_group(g: &GenerationRef) -> anyhow::Result<ExitCode> {
    let (generation, refs) = members_of(g)?;
    for r in &refs {
        promote(r, None)?;
    }
    println!(
        "promoted generation {} of group {:?}: {} module(s)",
        generation.generation,
        g.group,
        refs.len()
    );
    Ok(ExitCode::SUCCESS)
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
            if let Some(v) = &r.volume_snapshot {
                let state = serde_json::to_value(v.state).unwrap_or_default();
                let state = state.as_str().unwrap_or("?");
                let why = if v.error.is_empty() { String::new() } else { format!(": {}", v.error) };
                println!("  csi: VolumeSnapshot {}/{} {state}{why}", v.namespace, v.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(r: &SnapshotRef, path: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let (snaps, rec) = r.find()?;
    if rec.in_store() {
        return verify_stored(r, &snaps, &rec, path, json);
    }
    if path.is_some() {
        anyhow::bail!(Usage(format!(
            "--path works on store snapshots; snapshot {} is a directory (verify it whole)",
            rec.id
        )));
    }
    let v = snaps.verify(&r.snapshot)?;
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

/// Verifies a store snapshot: exit 1 and the first damaged path when one is.
fn verify_stored(
    r: &SnapshotRef,
    snaps: &Snapshots,
    rec: &SnapshotRecord,
    path: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = store_of(snaps, rec, "verify")?;
    match store.verify(&rec.id, path) {
        Ok(v) => {
            if json {
                // The fields of a directory snapshot's check, and the store's own.
                let out = serde_json::json!({"ok": true, "verification": {
                    "id": v.snapshot, "recorded": rec.root_hash, "computed": rec.root_hash,
                    "entries": rec.entries, "bytes": v.bytes, "path": v.path,
                    "trees": v.trees, "files": v.files,
                }});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "snapshot {} of module {:?} is intact at {}: {} directories, {} files, {} \
                     read, root {}",
                    v.snapshot,
                    r.module,
                    v.path,
                    v.trees,
                    v.files,
                    human_bytes(v.bytes),
                    rec.root_hash
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Damaged { snapshot, path, what }) => {
            if json {
                let out = serde_json::json!({
                    "ok": false, "snapshot": snapshot, "path": path, "problem": what,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                eprintln!(
                    "snapshot {snapshot} of module {:?} DOES NOT MATCH its record at {path}: \
                     {what}. Something changed the snapshot store after it was taken; restore \
                     from another snapshot that verifies, and delete this one.",
                    r.module
                );
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(explain(e)),
    }
}

/// `ferry restore`.
pub(super) fn restore(r: &SnapshotRef, to: &Path, hardlinks: bool) -> anyhow::Result<ExitCode> {
    let (snaps, rec) = r.find()?;
    let fresh = !to.exists();
    if hardlinks && !fresh {
        anyhow::bail!(Usage(format!(
            "--hardlinks restores into a new directory; {} exists",
            to.display()
        )));
    }
    if rec.in_store() {
        return restore_stored(r, &snaps, &rec, to, hardlinks);
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

/// Checks store snapshot `rec` whole, then recreates it as `to` (which must not exist):
/// built under a name of our own beside it and renamed into place without replacing
/// anything. Returns what was made.
fn materialize_checked(
    store: &Store,
    rec: &SnapshotRecord,
    to: &Path,
    mode: Materialize,
) -> anyhow::Result<crate::state::store::MaterializeStats> {
    // Checked first: a restore must never hand back a silently damaged tree.
    store.verify(&rec.id, None).map_err(explain)?;
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staged = to.with_file_name(format!(".{name}.ferry-restore-{}", std::process::id()));
    let made = store.materialize(&rec.id, None, &staged, mode);
    let placed = made.map_err(explain).and_then(|m| {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staged,
            rustix::fs::CWD,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .with_context(|| format!("renaming the restored tree to {}", to.display()))?;
        Ok(m)
    });
    if placed.is_err() && staged.symlink_metadata().is_ok() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    placed
}

/// `ferry restore` of a store snapshot.
fn restore_stored(
    r: &SnapshotRef,
    snaps: &Snapshots,
    rec: &SnapshotRecord,
    to: &Path,
    hardlinks: bool,
) -> anyhow::Result<ExitCode> {
    let store = store_of(snaps, rec, "restore")?;
    if hardlinks {
        tracing::warn!(
            "restoring as hard links: {} shares its files' inodes with the snapshot store \
             (and with the live module where files did not change since); anything written \
             there changes the snapshot too, and every snapshot holding that content (use it \
             read-only). Hard-linked files show the metadata of the first snapshot that stored \
             their content.",
            to.display()
        );
    }
    let mode = if hardlinks { Materialize::Hardlink } else { Materialize::Copy };
    if to.exists() {
        // Into an existing directory: materialized beside it, then a verified copy over it
        // (removing what the snapshot does not hold).
        let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = to.with_file_name(format!(".{name}.ferry-restore-src-{}", std::process::id()));
        let m = materialize_checked(&store, rec, &tmp, mode);
        let report = m.and_then(|_| {
            sync_with_progress(&tmp, to, &copy_options(), false, true)
                .with_context(|| format!("restoring snapshot {} to {}", rec.id, to.display()))
        });
        let _ = std::fs::remove_dir_all(&tmp);
        print_summary(&report?, false);
        println!(
            "restored snapshot {} of module {:?} to {} as a verified copy",
            rec.id,
            r.module,
            to.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let m = materialize_checked(&store, rec, to, mode)?;
    println!(
        "restored snapshot {} of module {:?} to {} as {} ({} entries, {}, root {} verified)",
        rec.id,
        r.module,
        to.display(),
        if hardlinks { "hard links" } else { "reflinked or copied files" },
        m.entries,
        human_bytes(m.bytes),
        &rec.root_hash[..16.min(rec.root_hash.len())]
    );
    if m.ownership_skipped > 0 {
        println!(
            "{} entries kept your ownership (not running as root); the snapshot records their \
             owners: restore as root to apply them",
            m.ownership_skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry promote`.
pub(super) fn promote(r: &SnapshotRef, data: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (snaps, rec) = r.find()?;
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
    // A new copy on the data's filesystem: the live tree must not share inodes with the
    // snapshot (the application will write into it).
    if rec.in_store() {
        let store = store_of(&snaps, &rec, "promote")?;
        if staged.symlink_metadata().is_ok() {
            anyhow::bail!(
                "{} already exists (left by an interrupted promote, or planted): check what it \
                 is, remove it, and run promote again",
                staged.display()
            );
        }
        let m = materialize_checked(&store, &rec, &staged, Materialize::Copy)?;
        let made = std::fs::symlink_metadata(&staged)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
            .with_context(|| format!("{}", staged.display()))?;
        promote::check_staging(&staged, made)?;
        println!("copied {} entries ({}) from the snapshot store", m.entries, human_bytes(m.bytes));
    } else {
        let made = promote::create_staging(&staged)?;
        let report =
            sync_with_progress(&snaps.path(&r.snapshot), &staged, &copy_options(), false, true)
                .with_context(|| {
                    format!("copying snapshot {} to {}", r.snapshot, staged.display())
                })?;
        promote::check_staging(&staged, made)?;
        print_summary(&report, false);
    }
    // The live tree is about to be another: the next round's snapshot cannot be built from
    // the last one and that round's changes alone.
    ModuleState::new(&r.state_dir, &r.module).open_round().with_context(|| {
        format!("marking module {:?}'s live tree as changed in {}", r.module, r.state_dir.display())
    })?;
    let aside = promote::swap_in(&staged, &data)?;
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
