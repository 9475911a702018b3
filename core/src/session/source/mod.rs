//! The sending side of a round.
//!
//! [`SourceSession`], its message and outcome dispatch and its work scheduling live here; the
//! rest is split by concern:
//! - `work`: the driver interface ([`SourceWork`], [`SourceOutcome`]).
//! - `manifest`: taking in the walk's entries and sending them as the manifest.
//! - `file`: one file's transfer, from the target's `Want` to its `FileEnd`.
//! - `refine`: the first pass of a two-level delta and the fine signature it asks for.

mod file;
mod manifest;
mod refine;
mod work;

use std::collections::{BTreeMap, HashMap, VecDeque};

pub use work::{SourceOutcome, SourceWork};

use self::file::{Mode, Transfer};
use self::manifest::FileInfo;
use super::{check_hello, hello, ProtocolError, SessionError, SessionOptions, WorkId};
use crate::entry::RootMeta;
use crate::hash::SegmentHash;
use crate::limits::LimitExceeded;
use crate::message::{Commit, FileId, Message};
use crate::segment::seg_len;
use crate::stats::Stats;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Running,
    Finished,
}

/// The source's half of a round. See the [module docs](super).
#[derive(Debug)]
pub struct SourceSession {
    opts: SessionOptions,
    phase: Phase,
    out: VecDeque<Message>,
    work: VecDeque<(WorkId, SourceWork)>,
    pending: HashMap<WorkId, Pending>,
    next_work: WorkId,
    error: Option<SessionError>,
    scan_busy: bool,
    scan_done: bool,
    end_sent: bool,
    next_id: FileId,
    entry_credit: u64,
    byte_credit: u64,
    bytes_reserved: u64,
    /// Signature bytes held by all transfers (see [`crate::Limits::max_signature_bytes`]).
    signature_held: u64,
    window: BTreeMap<FileId, FileInfo>,
    transfers: HashMap<FileId, Transfer>,
    ready: VecDeque<FileId>,
    /// `Resume` messages waiting for their file's `Want`.
    resume: HashMap<FileId, Vec<SegmentHash>>,
    stats: Stats,
    target_stats: Option<Stats>,
    target_commit: Option<Commit>,
    root: Option<RootMeta>,
}

#[derive(Debug)]
enum Pending {
    Scan,
    Segment { file: FileId, index: u64, len: u64 },
    Match { file: FileId, index: u64 },
}

impl SourceSession {
    /// A new session; it greets the peer first.
    pub fn new(opts: SessionOptions) -> Self {
        let mut s = SourceSession {
            opts,
            phase: Phase::AwaitHello,
            out: VecDeque::new(),
            work: VecDeque::new(),
            pending: HashMap::new(),
            next_work: 0,
            error: None,
            scan_busy: false,
            scan_done: false,
            end_sent: false,
            next_id: 0,
            entry_credit: 0,
            byte_credit: 0,
            bytes_reserved: 0,
            signature_held: 0,
            window: BTreeMap::new(),
            transfers: HashMap::new(),
            ready: VecDeque::new(),
            resume: HashMap::new(),
            stats: Stats::default(),
            target_stats: None,
            target_commit: None,
            root: None,
        };
        s.out.push_back(hello());
        s
    }

    /// Sets the source root's own metadata, to be mirrored on the destination root.
    pub fn set_root(&mut self, root: RootMeta) {
        self.root = Some(root);
    }

    /// Feeds a message from the target.
    ///
    /// # Errors
    /// A [`SessionError`] ends the round; an `Abort` for the peer is queued.
    pub fn handle_message(&mut self, msg: Message) -> Result<(), SessionError> {
        if self.error.is_some() || self.phase == Phase::Finished {
            return Ok(());
        }
        let r = self.on_message(msg);
        self.fail_on(r)
    }

    /// Feeds the result of work item `id`.
    ///
    /// # Errors
    /// A [`SessionError`] ends the round.
    pub fn handle_outcome(
        &mut self,
        id: WorkId,
        outcome: SourceOutcome,
    ) -> Result<(), SessionError> {
        if self.error.is_some() {
            // Drop the bookkeeping so the driver can tell when everything has drained.
            self.pending.remove(&id);
            return Ok(());
        }
        let r = self.on_outcome(id, outcome);
        self.fail_on(r)
    }

    /// The next message to send to the target.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.out.pop_front()
    }

    /// The next work item for the driver.
    pub fn poll_work(&mut self) -> Option<(WorkId, SourceWork)> {
        let w = self.work.pop_front();
        if w.is_none() && self.error.is_none() && self.phase == Phase::Running {
            self.schedule();
            return self.work.pop_front();
        }
        w
    }

    /// Whether the round is over (successfully or not) and nothing is left to send.
    pub fn is_finished(&self) -> bool {
        (self.phase == Phase::Finished || self.error.is_some()) && self.out.is_empty()
    }

    /// Whether the source has listed its whole tree.
    pub fn scan_done(&self) -> bool {
        self.scan_done
    }

    /// Whether work items are outstanding at the driver.
    pub fn has_pending_work(&self) -> bool {
        !self.pending.is_empty()
    }

    /// What this side counted.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The destination's account of the round, once it reported success.
    pub fn target_stats(&self) -> Option<&Stats> {
        self.target_stats.as_ref()
    }

    /// What the destination recorded of the round, once its `Done` arrived.
    pub fn target_commit(&self) -> Option<&Commit> {
        self.target_commit.as_ref()
    }

    /// The error that ended the round, if any.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// Takes the error that ended the round, if any.
    pub fn take_error(&mut self) -> Option<SessionError> {
        self.error.take()
    }

    fn fail_on(&mut self, r: Result<(), SessionError>) -> Result<(), SessionError> {
        if let Err(e) = r {
            if !matches!(e, SessionError::PeerAborted(_)) {
                self.out.push_back(Message::Abort { reason: e.to_string() });
            }
            // Work never handed out will never report back.
            for (id, _) in self.work.drain(..) {
                self.pending.remove(&id);
            }
            let copy = SessionError::Local(e.to_string());
            self.error = Some(copy);
            return Err(e);
        }
        Ok(())
    }

    fn on_message(&mut self, msg: Message) -> Result<(), SessionError> {
        match (&self.phase, msg) {
            (_, Message::Abort { reason }) => Err(SessionError::PeerAborted(reason)),
            (Phase::AwaitHello, Message::Hello { min, max, .. }) => {
                check_hello(min, max)?;
                self.phase = Phase::Running;
                Ok(())
            }
            (Phase::AwaitHello, _) => Err(ProtocolError::Unexpected { what: "pre-hello" }.into()),
            (Phase::Running, Message::Credit { entries, bytes, decided }) => {
                self.entry_credit = self.entry_credit.saturating_add(entries);
                self.byte_credit = self.byte_credit.saturating_add(bytes);
                // A target grants at most its window ahead of what it has had; more would make
                // us read (and queue) as far as the peer likes.
                let limits = &self.opts.limits;
                LimitExceeded::check(
                    "outstanding byte credit (max_window_bytes)",
                    self.byte_credit.saturating_sub(self.bytes_reserved),
                    limits.max_window_bytes,
                )
                .map_err(ProtocolError::from)?;
                LimitExceeded::check(
                    "outstanding entry credit (max_window_entries)",
                    self.entry_credit.saturating_sub(self.next_id),
                    limits.max_window_entries,
                )
                .map_err(ProtocolError::from)?;
                // Files below the decided prefix that were not requested never will be.
                let keep = self.window.split_off(&decided);
                self.window = keep;
                Ok(())
            }
            (Phase::Running, Message::Resume { file, have }) => self.on_resume(file, have),
            (Phase::Running, Message::Want { file, basis }) => self.on_want(file, basis),
            (Phase::Running, Message::SignaturePiece { file, blocks, last }) => {
                self.on_signature_piece(file, blocks, last)
            }
            (Phase::Running, Message::FineSignature { file, header }) => {
                self.on_fine_signature(file, header)
            }
            (Phase::Running, Message::Settled { file }) => match self.transfers.get_mut(&file) {
                Some(t) if t.finished && !t.settled => {
                    t.settled = true;
                    if t.outstanding == 0 {
                        self.transfers.remove(&file);
                    }
                    Ok(())
                }
                _ => Err(ProtocolError::UnknownFile(file).into()),
            },
            (Phase::Running, Message::Done { stats, commit }) => {
                if !self.end_sent || self.transfers.values().any(|t| !t.settled) {
                    return Err(ProtocolError::Unexpected { what: "early Done" }.into());
                }
                if !commit.within_limits() {
                    return Err(
                        ProtocolError::Unexpected { what: "oversized commit result" }.into()
                    );
                }
                self.target_stats = Some(stats);
                self.target_commit = Some(commit);
                self.phase = Phase::Finished;
                Ok(())
            }
            (_, m) => Err(ProtocolError::Unexpected { what: message_name(&m) }.into()),
        }
    }

    fn on_outcome(&mut self, id: WorkId, outcome: SourceOutcome) -> Result<(), SessionError> {
        let pending = self
            .pending
            .remove(&id)
            .ok_or_else(|| SessionError::Local(format!("outcome for unknown work {id}")))?;
        match (pending, outcome) {
            (_, SourceOutcome::Fatal(e)) => Err(SessionError::Local(e)),
            (Pending::Scan, SourceOutcome::Scanned { entries, done, errors }) => {
                self.scan_busy = false;
                self.scan_done = done;
                self.on_scanned(entries, errors);
                Ok(())
            }
            (Pending::Segment { file, index, len }, outcome) => {
                self.on_segment(file, index, len, outcome);
                Ok(())
            }
            (Pending::Match { file, index }, outcome) => {
                self.on_matched(file, index, outcome);
                Ok(())
            }
            (Pending::Scan, _) => Err(SessionError::Local("scan returned a segment".into())),
        }
    }

    fn schedule(&mut self) {
        let max = self.opts.max_inflight_work.max(1);
        // Scanning runs ahead only as far as the target's entry credit allows.
        if !self.scan_busy && !self.scan_done && self.next_id < self.entry_credit {
            let room = (self.entry_credit - self.next_id) as usize;
            let n = room.min(self.opts.scan_batch).min(self.opts.limits.max_batch_entries);
            self.scan_busy = true;
            self.push_work(Pending::Scan, SourceWork::Scan { max: n });
        }
        let mut rounds = self.ready.len();
        while self.pending.len() < max && rounds > 0 {
            rounds -= 1;
            let Some(file) = self.ready.pop_front() else { break };
            let Some(t) = self.transfers.get_mut(&file) else { continue };
            if t.finished || t.issued >= t.segments {
                continue;
            }
            let len = seg_len(t.info.size, t.issued);
            let keep_if = t.have.get(t.issued as usize).copied();
            let (p, w) = match &t.mode {
                Mode::Matching { coarse, .. } => {
                    let w = SourceWork::Match {
                        file,
                        path: t.info.path.clone(),
                        index: t.issued,
                        len: len as usize,
                        file_len: t.info.size,
                        mtime_ns: t.info.mtime_ns,
                        coarse: coarse.clone(),
                        keep_if,
                    };
                    (Pending::Match { file, index: t.issued }, w)
                }
                Mode::Send { how, .. } => {
                    if self.bytes_reserved + len > self.byte_credit {
                        self.ready.push_front(file);
                        break;
                    }
                    self.bytes_reserved += len;
                    let w = SourceWork::Segment {
                        file,
                        path: t.info.path.clone(),
                        index: t.issued,
                        len: len as usize,
                        file_len: t.info.size,
                        mtime_ns: t.info.mtime_ns,
                        how: how.clone(),
                        compress_level: self.opts.compress_level,
                        keep_if,
                    };
                    (Pending::Segment { file, index: t.issued, len }, w)
                }
                _ => continue,
            };
            t.issued += 1;
            t.outstanding += 1;
            if t.issued < t.segments {
                // Large files get several segments in flight, but other files take turns.
                self.ready.push_back(file);
                rounds += 1;
            }
            self.push_work(p, w);
        }
    }

    fn push_work(&mut self, p: Pending, w: SourceWork) {
        let id = self.next_work;
        self.next_work += 1;
        self.pending.insert(id, p);
        self.work.push_back((id, w));
    }
}

pub(super) fn message_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::Entries(_) => "Entries",
        Message::EndOfManifest { .. } => "EndOfManifest",
        Message::Credit { .. } => "Credit",
        Message::Want { .. } => "Want",
        Message::Resume { .. } => "Resume",
        Message::SignaturePiece { .. } => "SignaturePiece",
        Message::Refine { .. } => "Refine",
        Message::FineSignature { .. } => "FineSignature",
        Message::Segment { .. } => "Segment",
        Message::FileEnd { .. } => "FileEnd",
        Message::FileFailed { .. } => "FileFailed",
        Message::Settled { .. } => "Settled",
        Message::Done { .. } => "Done",
        Message::Abort { .. } => "Abort",
        Message::SourceErrors { .. } => "SourceErrors",
    }
}
