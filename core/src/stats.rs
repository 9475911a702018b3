//! [`Stats`]: what a round did, counted by the sessions and shown by the agent.

use serde::{Deserialize, Serialize};

/// Counters of one round. Both sessions count what they see; the target's copy is the
/// authoritative account of what changed on the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Entries in the source's manifest.
    pub entries_scanned: u64,
    /// Regular files in the source's manifest.
    pub files_scanned: u64,
    /// Files that did not exist on the destination.
    pub files_new: u64,
    /// Files whose content changed.
    pub files_changed: u64,
    /// Files whose content was the same but metadata differed.
    pub files_metadata: u64,
    /// Files found unchanged.
    pub files_unchanged: u64,
    /// Entries removed from the destination (`--delete`, or replaced by another type).
    pub files_deleted: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Symlinks, hard links and special files created or replaced.
    pub links_created: u64,
    /// Files the source could not send this round (changed while read, vanished, unreadable).
    pub files_failed: u64,
    /// Files whose rebuilt content failed blake3 verification and were resent whole.
    pub files_resent: u64,
    /// Bytes of file data that travelled as literals (before compression).
    pub literal_bytes: u64,
    /// Bytes of file data rebuilt from the destination's basis.
    pub matched_bytes: u64,
    /// Segment payload bytes as sent (after compression).
    pub payload_bytes: u64,
    /// Signature bytes sent by the destination.
    pub signature_bytes: u64,
    /// Ownership changes skipped because the destination is not running as root.
    pub ownership_skipped: u64,
    /// Entries left alone because they are on another filesystem (mount points).
    pub mount_points_skipped: u64,
    /// Bytes of data files total in the source manifest.
    pub source_bytes: u64,
    /// Bytes of files cut mid-way by an interrupted round that the destination still held
    /// (its resume journal) and that were not sent again.
    pub resumed_bytes: u64,
    /// Fifos and device nodes from the source that the receiving side refused (no
    /// `--specials` there); the destination's entry at their path was left alone.
    pub specials_refused: u64,
    /// Entries whose setuid/setgid bits or `security.capability` xattr the receiving side
    /// dropped (no `--keep-privileged` there).
    pub privileged_dropped: u64,
    /// Errors the source met reading its tree (unreadable or vanished directories, too many
    /// open files, ...). Non-zero makes the round partial: `--delete` was off for the round.
    pub source_errors: u64,
}

impl Stats {
    /// Adds `other`'s counters into `self`.
    pub fn merge(&mut self, o: &Stats) {
        let Stats {
            entries_scanned,
            files_scanned,
            files_new,
            files_changed,
            files_metadata,
            files_unchanged,
            files_deleted,
            dirs_created,
            links_created,
            files_failed,
            files_resent,
            literal_bytes,
            matched_bytes,
            payload_bytes,
            signature_bytes,
            ownership_skipped,
            mount_points_skipped,
            source_bytes,
            resumed_bytes,
            specials_refused,
            privileged_dropped,
            source_errors,
        } = o;
        self.entries_scanned += entries_scanned;
        self.files_scanned += files_scanned;
        self.files_new += files_new;
        self.files_changed += files_changed;
        self.files_metadata += files_metadata;
        self.files_unchanged += files_unchanged;
        self.files_deleted += files_deleted;
        self.dirs_created += dirs_created;
        self.links_created += links_created;
        self.files_failed += files_failed;
        self.files_resent += files_resent;
        self.literal_bytes += literal_bytes;
        self.matched_bytes += matched_bytes;
        self.payload_bytes += payload_bytes;
        self.signature_bytes += signature_bytes;
        self.ownership_skipped += ownership_skipped;
        self.mount_points_skipped += mount_points_skipped;
        self.source_bytes += source_bytes;
        self.resumed_bytes += resumed_bytes;
        self.specials_refused += specials_refused;
        self.privileged_dropped += privileged_dropped;
        self.source_errors += source_errors;
    }

    /// Whether the round was partial: the source could not read all of its tree, so the
    /// destination may lack entries and nothing was deleted.
    pub fn partial(&self) -> bool {
        self.source_errors > 0
    }
}
