//! The receiving side of a round: merge-join, plan, rebuild, verify, commit.
//!
//! [`TargetSession`] and its message and outcome dispatch live here; the rest is split by
//! concern:
//! - `work`: the driver interface ([`TargetWork`], [`TargetOutcome`], the itemized plan).
//! - `manifest`: taking in the source's manifest and merge-joining it with the local scan.
//! - `plan`: deciding what each entry needs (nothing, metadata, a delta, the whole file).
//! - `file`: one file's transfer, from its signature to its commit.

mod file;
mod manifest;
mod plan;
mod work;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

pub use work::{Action, Itemized, TargetOutcome, TargetWork, WorkCounts};

use self::file::{QueuedSegment, TFile};
use super::source::message_name;
use super::{check_hello, hello, ProtocolError, SessionError, SessionOptions, WorkId};
use crate::entry::{Entry, LocalEntry, RootMeta};
use crate::message::{Commit, FileId, Message};
use crate::path::RelPath;
use crate::stats::Stats;
use crate::SEGMENT_LEN;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Merging,
    HardLinks,
    DirMeta,
    Sync,
    Finished,
}

#[derive(Debug)]
enum Pending {
    Scan,
    File(FileId),
    Barrier,
    HardLink,
    Commit(Vec<FileId>),
    Other,
}

/// Verified files committed together (one flush, then the renames).
const COMMIT_BATCH: usize = 128;

/// The target's half of a round. See the [module docs](super).
#[derive(Debug)]
pub struct TargetSession {
    opts: SessionOptions,
    phase: Phase,
    out: VecDeque<Message>,
    work: VecDeque<(WorkId, TargetWork)>,
    events: VecDeque<Itemized>,
    pending: HashMap<WorkId, Pending>,
    next_work: WorkId,
    error: Option<SessionError>,

    src: VecDeque<(FileId, Entry)>,
    src_next_id: FileId,
    src_done: bool,
    last_path: Option<RelPath>,
    dir_stack: Vec<RelPath>,
    entries_credit_owed: u64,
    bytes_credit_owed: u64,
    /// Raw segment bytes the source may have sent: the window plus every credit sent.
    bytes_granted: u64,
    /// Raw segment bytes received so far.
    bytes_received: u64,
    decided_sent: u64,

    local: VecDeque<LocalEntry>,
    local_busy: bool,
    local_done: bool,
    skip_under: Option<RelPath>,
    barrier: bool,

    files: HashMap<FileId, TFile>,
    undecided: BTreeSet<FileId>,
    merged_upto: FileId,
    dirs: Vec<Entry>,
    hardlinks: Vec<(RelPath, RelPath)>,
    root: Option<RootMeta>,
    /// Verified files waiting to be committed together.
    commit_batch: Vec<FileId>,
    /// Files given up this round; hard links to them wait for the next round.
    failed_paths: HashSet<RelPath>,
    /// Bytes of metadata held (`limits::held_size`): entries waiting for the merge,
    /// directories and hard links kept to the end of the round.
    held: u64,
    /// The first read error the source reported (the round is partial).
    source_error: Option<String>,
    stats: Stats,
}

impl TargetSession {
    /// A new session; it greets the peer and grants the initial credit.
    pub fn new(mut opts: SessionOptions) -> Self {
        // A window smaller than one segment could never admit a large file's segment.
        opts.window_bytes =
            opts.window_bytes.max(2 * SEGMENT_LEN as u64).min(opts.limits.max_window_bytes);
        opts.window_entries = opts.window_entries.clamp(1, opts.limits.max_window_entries);
        opts.window_files = opts.window_files.max(1);
        opts.scan_batch = opts.scan_batch.max(2);
        let mut s = TargetSession {
            phase: Phase::AwaitHello,
            out: VecDeque::new(),
            work: VecDeque::new(),
            events: VecDeque::new(),
            pending: HashMap::new(),
            next_work: 0,
            error: None,
            src: VecDeque::new(),
            src_next_id: 0,
            src_done: false,
            last_path: None,
            dir_stack: Vec::new(),
            entries_credit_owed: 0,
            bytes_credit_owed: 0,
            bytes_granted: 0,
            bytes_received: 0,
            decided_sent: 0,
            local: VecDeque::new(),
            local_busy: false,
            local_done: false,
            skip_under: None,
            barrier: false,
            files: HashMap::new(),
            undecided: BTreeSet::new(),
            merged_upto: 0,
            dirs: Vec::new(),
            hardlinks: Vec::new(),
            root: None,
            commit_batch: Vec::new(),
            failed_paths: HashSet::new(),
            held: 0,
            source_error: None,
            stats: Stats::default(),
            opts,
        };
        s.out.push_back(hello());
        s.bytes_granted = s.opts.window_bytes;
        s.out.push_back(Message::Credit {
            entries: s.opts.window_entries,
            bytes: s.opts.window_bytes,
            decided: 0,
        });
        s
    }

    /// Feeds a message from the source.
    ///
    /// # Errors
    /// A [`SessionError`] ends the round; an `Abort` for the peer is queued.
    pub fn handle_message(&mut self, msg: Message) -> Result<(), SessionError> {
        if self.error.is_some() || self.phase == Phase::Finished {
            return Ok(());
        }
        let r = self.on_message(msg).and_then(|()| self.step());
        self.fail_on(r)
    }

    /// Feeds the result of work item `id`.
    ///
    /// # Errors
    /// A [`SessionError`] ends the round.
    pub fn handle_outcome(
        &mut self,
        id: WorkId,
        outcome: TargetOutcome,
    ) -> Result<(), SessionError> {
        if self.error.is_some() {
            // Drop the bookkeeping so the driver can tell when everything has drained.
            self.pending.remove(&id);
            return Ok(());
        }
        let r = self.on_outcome(id, outcome).and_then(|()| self.step());
        self.fail_on(r)
    }

    /// The next message to send to the source.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.out.pop_front()
    }

    /// The next work item for the driver.
    pub fn poll_work(&mut self) -> Option<(WorkId, TargetWork)> {
        self.work.pop_front()
    }

    /// The next line of the itemized plan.
    pub fn poll_event(&mut self) -> Option<Itemized> {
        self.events.pop_front()
    }

    /// Whether the round is over and nothing is left to send.
    pub fn is_finished(&self) -> bool {
        (self.phase == Phase::Finished || self.error.is_some()) && self.out.is_empty()
    }

    /// Whether the round completed successfully.
    pub fn succeeded(&self) -> bool {
        self.phase == Phase::Finished && self.error.is_none()
    }

    /// Whether work items are outstanding at the driver.
    pub fn has_pending_work(&self) -> bool {
        !self.pending.is_empty()
    }

    /// What the destination did.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The first read error the source reported, if any: the round is partial and deleted
    /// nothing after it.
    pub fn source_error(&self) -> Option<&str> {
        self.source_error.as_deref()
    }

    /// The error that ended the round, if any.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    fn fail_on(&mut self, r: Result<(), SessionError>) -> Result<(), SessionError> {
        match r {
            Ok(()) => {
                self.flush_credit();
                Ok(())
            }
            Err(e) => {
                if !matches!(e, SessionError::PeerAborted(_)) {
                    self.out.push_back(Message::Abort { reason: e.to_string() });
                }
                // Temp files of unfinished files are dropped by the driver; nothing
                // unverified was renamed into place.
                for (id, _) in self.work.drain(..) {
                    self.pending.remove(&id);
                }
                for id in self.files.keys().copied().collect::<Vec<_>>() {
                    let wid = self.next_work;
                    self.next_work += 1;
                    self.pending.insert(wid, Pending::Other);
                    let w = TargetWork::Discard { file: id, keep_partial: true };
                    self.work.push_back((wid, w));
                }
                self.files.clear();
                self.error = Some(SessionError::Local(e.to_string()));
                Err(e)
            }
        }
    }

    fn flush_credit(&mut self) {
        if self.phase == Phase::Finished {
            // Done is the last word; credit after it would be a protocol error at the source.
            return;
        }
        let decided = self.decided_prefix();
        if self.entries_credit_owed > 0 || self.bytes_credit_owed > 0 || decided > self.decided_sent
        {
            self.out.push_back(Message::Credit {
                entries: self.entries_credit_owed,
                bytes: self.bytes_credit_owed,
                decided,
            });
            self.entries_credit_owed = 0;
            self.bytes_granted += self.bytes_credit_owed;
            self.bytes_credit_owed = 0;
            self.decided_sent = decided;
        }
    }

    fn decided_prefix(&self) -> FileId {
        self.undecided.first().copied().unwrap_or(self.merged_upto).min(self.merged_upto)
    }

    fn on_message(&mut self, msg: Message) -> Result<(), SessionError> {
        match (&self.phase, msg) {
            (_, Message::Abort { reason }) => Err(SessionError::PeerAborted(reason)),
            (Phase::AwaitHello, Message::Hello { min, max, .. }) => {
                check_hello(min, max)?;
                self.phase = Phase::Merging;
                Ok(())
            }
            (Phase::AwaitHello, _) => Err(ProtocolError::Unexpected { what: "pre-hello" }.into()),
            (Phase::Merging, Message::Entries(entries)) => self.on_entries(entries),
            (Phase::Merging, Message::SourceErrors { count, first }) => {
                if self.src_done || count == 0 {
                    return Err(ProtocolError::Unexpected { what: "SourceErrors" }.into());
                }
                // From here on nothing is deleted: what the source failed to list must not
                // look like what it does not have.
                self.stats.source_errors = self.stats.source_errors.saturating_add(count);
                if self.source_error.is_none() {
                    self.source_error = Some(first.chars().take(1024).collect());
                }
                Ok(())
            }
            (Phase::Merging, Message::EndOfManifest { count, root }) => {
                if self.src_done || count != self.src_next_id {
                    return Err(ProtocolError::Invalid(format!(
                        "end of manifest claims {count} entries, {} received",
                        self.src_next_id
                    ))
                    .into());
                }
                self.src_done = true;
                if let Some(r) = &root {
                    self.check_xattrs(&r.xattrs)?;
                }
                self.root = root.map(|mut r| {
                    self.stats.privileged_dropped += u64::from(self.opts.policy.admit_root(&mut r));
                    r
                });
                Ok(())
            }
            (Phase::Merging, Message::Segment { file, index, payload, encoding, data }) => {
                self.on_segment(file, QueuedSegment { index, payload, encoding, data })
            }
            (Phase::Merging, Message::FileEnd { file, size, hash }) => {
                self.on_file_end(file, size, hash)
            }
            (Phase::Merging, Message::Refine { file, gaps }) => self.on_refine(file, gaps),
            (Phase::Merging, Message::FileFailed { file, reason }) => {
                self.on_file_failed(file, reason)
            }
            (_, m) => Err(ProtocolError::Unexpected { what: message_name(&m) }.into()),
        }
    }

    fn on_outcome(&mut self, id: WorkId, outcome: TargetOutcome) -> Result<(), SessionError> {
        let pending = self
            .pending
            .remove(&id)
            .ok_or_else(|| SessionError::Local(format!("outcome for unknown work {id}")))?;
        match outcome {
            TargetOutcome::Fatal(e) => return Err(SessionError::Local(e)),
            TargetOutcome::BadData(e) => return Err(ProtocolError::Invalid(e).into()),
            _ => {}
        }
        match pending {
            Pending::Scan => {
                let TargetOutcome::Scanned { entries, done } = outcome else {
                    return Err(SessionError::Local("scan returned something else".into()));
                };
                self.local_busy = false;
                self.local_done = done;
                self.local.extend(entries);
            }
            Pending::Commit(files) => {
                if let TargetOutcome::Committed(c) = outcome {
                    self.stats.files_deleted += c.deleted;
                    self.on_committed(files);
                } else {
                    return Err(SessionError::Local(format!("commit returned {outcome:?}")));
                }
            }
            Pending::Barrier => {
                self.barrier = false;
                self.count(outcome);
            }
            Pending::Other => self.count(outcome),
            Pending::HardLink => {
                if matches!(outcome, TargetOutcome::Done(c) if c.created) {
                    self.stats.links_created += 1;
                }
                self.count(outcome);
            }
            Pending::File(file) => self.on_file_outcome(file, outcome)?,
        }
        Ok(())
    }

    fn count(&mut self, outcome: TargetOutcome) {
        if let TargetOutcome::Done(c) = outcome {
            self.stats.files_deleted += c.deleted;
            self.stats.ownership_skipped += c.ownership_skipped;
            self.stats.mount_points_skipped += c.mount_points_skipped;
            self.stats.files_failed += c.failed;
        }
    }

    /// Runs the merge and the end-of-round phases as far as they can go.
    fn step(&mut self) -> Result<(), SessionError> {
        if self.phase == Phase::Merging {
            self.merge()?;
            self.flush_commits();
            let merged = self.src_done
                && self.local_done
                && self.src.is_empty()
                && self.local.is_empty()
                && self.files.is_empty()
                && !self.barrier;
            if merged && self.pending.is_empty() {
                self.phase = Phase::HardLinks;
                for (path, to) in std::mem::take(&mut self.hardlinks) {
                    if self.failed_paths.contains(&to) {
                        // Counted once, as the file's failure; the link follows it next round.
                        continue;
                    }
                    self.push_work(Pending::HardLink, TargetWork::HardLink { path, to });
                }
            }
        }
        if self.phase == Phase::HardLinks && self.pending.is_empty() {
            self.phase = Phase::DirMeta;
            // Deepest first, so a read-only parent is set after its children.
            let dirs = std::mem::take(&mut self.dirs);
            if !self.opts.dry_run {
                for entry in dirs.into_iter().rev() {
                    self.push_work(Pending::Other, TargetWork::DirMeta { entry });
                }
            }
            if let Some(root) = self.root.take().filter(|_| !self.opts.dry_run) {
                self.push_work(Pending::Other, TargetWork::RootMeta { root });
            }
        }
        if self.phase == Phase::DirMeta && self.pending.is_empty() {
            self.phase = Phase::Sync;
            if !self.opts.dry_run {
                self.push_work(Pending::Other, TargetWork::SyncDirs);
            }
        }
        if self.phase == Phase::Sync && self.pending.is_empty() {
            self.phase = Phase::Finished;
            self.out.push_back(Message::Done { stats: self.stats, commit: Commit::Unrecorded });
        }
        Ok(())
    }

    fn push_work(&mut self, p: Pending, w: TargetWork) {
        let id = self.next_work;
        self.next_work += 1;
        self.pending.insert(id, p);
        self.work.push_back((id, w));
    }
}
