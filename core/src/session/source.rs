//! The sending side of a round.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::{check_hello, hello, ProtocolError, SessionError, SessionOptions, WorkId};
use crate::delta::{
    self, DeltaCounts, DeltaIndex, GapMap, Match, Refined, SegmentHow, SignatureHeader,
};
use crate::entry::{Entry, EntryKind, RootMeta};
use crate::hash::{merge_segments, segment_count, SegmentHash};
use crate::message::{Encoding, FileFailure, FileId, Message, Payload};
use crate::path::RelPath;
use crate::segment::seg_len;
use crate::stats::Stats;

/// Work the source asks its driver to do.
#[derive(Debug)]
pub enum SourceWork {
    /// Walk on: return up to `max` more entries of the tree, in path order.
    Scan {
        /// Most entries to return.
        max: usize,
    },
    /// First pass of a two-level delta: read one segment, hash it, find its coarse matches
    /// ([`crate::delta::match_segment`]).
    Match {
        /// The file.
        file: FileId,
        /// Its path beneath the root.
        path: RelPath,
        /// Segment index.
        index: u64,
        /// Bytes in this segment.
        len: usize,
        /// Size of the whole file as scanned.
        file_len: u64,
        /// mtime as scanned.
        mtime_ns: i64,
        /// The coarse index of the destination's basis.
        coarse: Arc<DeltaIndex>,
        /// The destination holds a segment with this hash: when the read segment hashes the
        /// same, skip matching it.
        keep_if: Option<SegmentHash>,
    },
    /// Read one segment of a file, hash it, and encode it as literal data or as a delta.
    Segment {
        /// The file.
        file: FileId,
        /// Its path beneath the root.
        path: RelPath,
        /// Segment index; the segment covers `index * SEGMENT_LEN ..` for `len` bytes.
        index: u64,
        /// Bytes in this segment.
        len: usize,
        /// Size of the whole file as scanned; a different size means it changed.
        file_len: u64,
        /// mtime as scanned; a different mtime means it changed.
        mtime_ns: i64,
        /// Literal data, a delta against the destination's basis, or a two-level delta.
        how: SegmentHow,
        /// zstd level for the payload.
        compress_level: i32,
        /// The destination holds a segment with this hash (an interrupted round's, from its
        /// journal): when the read segment hashes the same, answer [`Payload::Kept`] with no
        /// data instead of encoding it.
        keep_if: Option<SegmentHash>,
    },
}

/// What the driver reports back for a [`SourceWork`].
#[derive(Debug)]
pub enum SourceOutcome {
    /// The next scan batch; `done` when the walk is finished.
    Scanned {
        /// Entries, in path order.
        entries: Vec<Entry>,
        /// Whether the walk is complete.
        done: bool,
    },
    /// A segment is ready.
    Segment {
        /// Its blake3 contribution.
        hash: SegmentHash,
        /// Literal data or delta, as `encoding` says.
        data: Vec<u8>,
        /// What `data` is.
        payload: Payload,
        /// How `data` is encoded.
        encoding: Encoding,
        /// Literal and matched bytes of this segment.
        counts: DeltaCounts,
    },
    /// The first pass over a segment is done.
    Matched {
        /// Its blake3 contribution.
        hash: SegmentHash,
        /// Coarse matches, with offsets in the new file.
        matches: Vec<Match>,
    },
    /// The file could not be read as scanned.
    SegmentFailed(FileFailure),
    /// A fatal local failure (the walk itself failed).
    Fatal(String),
}

#[derive(Debug)]
struct FileInfo {
    path: RelPath,
    size: u64,
    mtime_ns: i64,
}

#[derive(Debug)]
enum Mode {
    /// Receiving a signature: the coarse one, or the fine one once `first` holds the first
    /// pass of a two-level delta.
    Signature {
        header: SignatureHeader,
        blocks: Vec<u8>,
        want: usize,
        first: Option<Box<FirstPass>>,
    },
    /// First pass of a two-level delta in progress.
    Matching {
        coarse: Arc<DeltaIndex>,
        basis_len: u64,
        done: Vec<Option<(SegmentHash, Vec<Match>)>>,
        completed: u64,
    },
    /// `Refine` sent; waiting for the fine signature's header.
    AwaitFine(Box<FirstPass>),
    /// Sending segments; with a two-level delta, each segment's hash must equal the first
    /// pass's (else the file changed between the passes).
    Send { how: SegmentHow, expect: Option<Vec<SegmentHash>> },
}

#[derive(Debug)]
struct FirstPass {
    matches: Vec<Match>,
    hashes: Vec<SegmentHash>,
    gaps: GapMap,
}

#[derive(Debug)]
struct Transfer {
    info: FileInfo,
    mode: Mode,
    segments: u64,
    issued: u64,
    sent: u64,
    /// What the destination holds of this file from an interrupted round (`Resume`).
    have: Vec<SegmentHash>,
    hashes: Vec<SegmentHash>,
    ready: BTreeMap<u64, SourceOutcome>,
    /// Set once FileEnd or FileFailed went out; later outcomes are dropped.
    finished: bool,
    /// The target is done with the file; forget it once no work is outstanding.
    settled: bool,
    outstanding: usize,
}

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
    window: BTreeMap<FileId, FileInfo>,
    transfers: HashMap<FileId, Transfer>,
    ready: VecDeque<FileId>,
    /// `Resume` messages waiting for their file's `Want`.
    resume: HashMap<FileId, Vec<SegmentHash>>,
    stats: Stats,
    target_stats: Option<Stats>,
    root: Option<RootMeta>,
}

#[derive(Debug)]
enum Pending {
    Scan,
    Segment { file: FileId, index: u64, len: u64 },
    Match { file: FileId, index: u64 },
}

/// Unmatched bytes after the coarse pass below which a fine pass is not worth its round trip.
const REFINE_MIN_LITERAL: u64 = 16 << 10;

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
            window: BTreeMap::new(),
            transfers: HashMap::new(),
            ready: VecDeque::new(),
            resume: HashMap::new(),
            stats: Stats::default(),
            target_stats: None,
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
            (Phase::Running, Message::Done { stats }) => {
                if !self.end_sent || self.transfers.values().any(|t| !t.settled) {
                    return Err(ProtocolError::Unexpected { what: "early Done" }.into());
                }
                self.target_stats = Some(stats);
                self.phase = Phase::Finished;
                Ok(())
            }
            (_, m) => Err(ProtocolError::Unexpected { what: message_name(&m) }.into()),
        }
    }

    fn on_resume(&mut self, file: FileId, have: Vec<[u8; 32]>) -> Result<(), SessionError> {
        let info = self.window.get(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if have.is_empty()
            || have.len() as u64 > segment_count(info.size)
            || self.resume.contains_key(&file)
        {
            return Err(ProtocolError::Unexpected { what: "Resume" }.into());
        }
        // Bounded: at most one per file of the window, each no longer than the file.
        self.resume.insert(file, have.into_iter().map(SegmentHash).collect());
        Ok(())
    }

    fn on_want(
        &mut self,
        file: FileId,
        basis: Option<SignatureHeader>,
    ) -> Result<(), SessionError> {
        let info = if let Some(info) = self.window.remove(&file) {
            info
        } else {
            // A second request for a file already sent: its rebuilt copy failed verification.
            match self.transfers.remove(&file) {
                Some(t) if t.finished && !t.settled && t.outstanding == 0 && basis.is_none() => {
                    t.info
                }
                _ => return Err(ProtocolError::UnknownFile(file).into()),
            }
        };
        let mode = match basis {
            None => Mode::Send { how: SegmentHow::Literal, expect: None },
            Some(header) => {
                let want = header.validate(&self.opts.limits).map_err(ProtocolError::from)?;
                Mode::Signature { header, blocks: Vec::new(), want, first: None }
            }
        };
        let sending = matches!(mode, Mode::Send { .. });
        let have = self.resume.remove(&file).unwrap_or_default();
        self.transfers.insert(
            file,
            Transfer {
                segments: segment_count(info.size),
                info,
                mode,
                issued: 0,
                sent: 0,
                have,
                hashes: Vec::new(),
                ready: BTreeMap::new(),
                finished: false,
                settled: false,
                outstanding: 0,
            },
        );
        if sending {
            self.start_sending(file);
        }
        Ok(())
    }

    fn on_signature_piece(
        &mut self,
        file: FileId,
        piece: Vec<u8>,
        last: bool,
    ) -> Result<(), SessionError> {
        let t = self.transfers.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        let Mode::Signature { header, blocks, want, first } = &mut t.mode else {
            return Err(ProtocolError::Unexpected { what: "SignaturePiece" }.into());
        };
        if blocks.len() + piece.len() > *want {
            return Err(ProtocolError::SizeMismatch {
                file,
                what: format!("signature longer than the {want} bytes announced"),
            }
            .into());
        }
        if blocks.is_empty() {
            blocks.reserve_exact(*want);
        }
        blocks.extend_from_slice(&piece);
        self.stats.signature_bytes += piece.len() as u64;
        if !last {
            return Ok(());
        }
        let index =
            DeltaIndex::build(header, blocks, &self.opts.limits).map_err(ProtocolError::from)?;
        if let Some(first) = first.take() {
            let FirstPass { matches, hashes, gaps } = *first;
            let plan = Refined { matches, fine: Some((index, gaps)) };
            t.mode = Mode::Send { how: SegmentHow::Refined(Arc::new(plan)), expect: Some(hashes) };
        } else if t.info.size >= delta::TWO_LEVEL_MIN && header.basis_len >= delta::TWO_LEVEL_MIN {
            t.mode = Mode::Matching {
                coarse: Arc::new(index),
                basis_len: header.basis_len,
                done: (0..t.segments).map(|_| None).collect(),
                completed: 0,
            };
        } else {
            t.mode = Mode::Send { how: SegmentHow::Delta(Arc::new(index)), expect: None };
        }
        self.start_sending(file);
        Ok(())
    }

    fn on_fine_signature(
        &mut self,
        file: FileId,
        header: SignatureHeader,
    ) -> Result<(), SessionError> {
        let t = self.transfers.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        let Mode::AwaitFine(first) = &t.mode else {
            return Err(ProtocolError::Unexpected { what: "FineSignature" }.into());
        };
        let want = header.validate(&self.opts.limits).map_err(ProtocolError::from)?;
        if header.basis_len != first.gaps.len() {
            return Err(ProtocolError::SizeMismatch {
                file,
                what: format!(
                    "fine signature covers {} bytes, the gaps {}",
                    header.basis_len,
                    first.gaps.len()
                ),
            }
            .into());
        }
        let Mode::AwaitFine(first) =
            std::mem::replace(&mut t.mode, Mode::Send { how: SegmentHow::Literal, expect: None })
        else {
            return Ok(());
        };
        t.mode = Mode::Signature { header, blocks: Vec::new(), want, first: Some(first) };
        Ok(())
    }

    /// The first pass is complete: ask for a fine signature of the gaps, or send at once when
    /// refining would not pay.
    fn finish_first_pass(&mut self, file: FileId) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        let Mode::Matching { basis_len, done, .. } = &mut t.mode else { return };
        let basis_len = *basis_len;
        let mut matches = Vec::new();
        let mut hashes = Vec::with_capacity(done.len());
        for (h, m) in done.drain(..).flatten() {
            hashes.push(h);
            matches.extend(m);
        }
        let matched: u64 = matches.iter().map(|m| m.len).sum();
        let literal = t.info.size.saturating_sub(matched);
        let gaps = delta::gaps(&matches, basis_len);
        let limits = &self.opts.limits;
        let gap_map = GapMap::new(&gaps, basis_len, limits).ok();
        // Refining costs a round trip and a fine signature of the gaps (~20 bytes per fine
        // block); it pays when there are enough unmatched bytes to shave.
        let refine = gap_map.filter(|g| literal >= REFINE_MIN_LITERAL && !g.is_empty());
        t.issued = 0;
        match refine {
            Some(map) => {
                self.out.push_back(Message::Refine { file, gaps });
                t.mode = Mode::AwaitFine(Box::new(FirstPass { matches, hashes, gaps: map }));
            }
            None => {
                let plan = Refined { matches, fine: None };
                t.mode =
                    Mode::Send { how: SegmentHow::Refined(Arc::new(plan)), expect: Some(hashes) };
                self.ready.push_back(file);
            }
        }
    }

    fn start_sending(&mut self, file: FileId) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        if t.segments == 0 {
            t.finished = true;
            self.out.push_back(Message::FileEnd {
                file,
                size: 0,
                hash: *blake3::hash(b"").as_bytes(),
            });
        } else {
            self.ready.push_back(file);
        }
    }

    fn on_outcome(&mut self, id: WorkId, outcome: SourceOutcome) -> Result<(), SessionError> {
        let pending = self
            .pending
            .remove(&id)
            .ok_or_else(|| SessionError::Local(format!("outcome for unknown work {id}")))?;
        match (pending, outcome) {
            (_, SourceOutcome::Fatal(e)) => Err(SessionError::Local(e)),
            (Pending::Scan, SourceOutcome::Scanned { entries, done }) => {
                self.scan_busy = false;
                self.scan_done = done;
                self.on_scanned(entries);
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

    fn on_scanned(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() && !self.scan_done {
            return;
        }
        for e in &entries {
            self.stats.entries_scanned += 1;
            if e.kind == EntryKind::File {
                self.stats.files_scanned += 1;
                self.stats.source_bytes += e.size;
                self.window.insert(
                    self.next_id,
                    FileInfo { path: e.path.clone(), size: e.size, mtime_ns: e.meta.mtime_ns },
                );
            }
            self.next_id += 1;
        }
        if !entries.is_empty() {
            self.out.push_back(Message::Entries(entries));
        }
        if self.scan_done && !self.end_sent {
            self.end_sent = true;
            let root = self.root.take();
            self.out.push_back(Message::EndOfManifest { count: self.next_id, root });
        }
    }

    fn on_matched(&mut self, file: FileId, index: u64, outcome: SourceOutcome) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        t.outstanding -= 1;
        if t.finished {
            if t.settled && t.outstanding == 0 {
                self.transfers.remove(&file);
            }
            return;
        }
        let Mode::Matching { done, completed, .. } = &mut t.mode else { return };
        match outcome {
            SourceOutcome::Matched { hash, matches } => {
                if let Some(slot) = done.get_mut(index as usize) {
                    *slot = Some((hash, matches));
                    *completed += 1;
                }
                if *completed == t.segments {
                    self.finish_first_pass(file);
                }
            }
            SourceOutcome::SegmentFailed(reason) => {
                t.finished = true;
                self.out.push_back(Message::FileFailed { file, reason });
                self.stats.files_failed += 1;
            }
            _ => {}
        }
    }

    fn on_segment(&mut self, file: FileId, index: u64, len: u64, outcome: SourceOutcome) {
        let Some(t) = self.transfers.get_mut(&file) else { return };
        t.outstanding -= 1;
        if t.finished {
            self.bytes_reserved -= len;
            if t.settled && t.outstanding == 0 {
                self.transfers.remove(&file);
            }
            return;
        }
        if let SourceOutcome::SegmentFailed(reason) = outcome {
            t.finished = true;
            // Segments never sent give their credit back; sent ones are credited by the target.
            self.bytes_reserved -= len;
            self.out.push_back(Message::FileFailed { file, reason });
            self.stats.files_failed += 1;
            let ready: Vec<u64> = t.ready.keys().copied().collect();
            for i in ready {
                t.ready.remove(&i);
                self.bytes_reserved -= seg_len(t.info.size, i);
            }
            return;
        }
        t.ready.insert(index, outcome);
        let expect = match &t.mode {
            Mode::Send { expect, .. } => expect.as_deref(),
            _ => None,
        };
        while let Some(o) = t.ready.remove(&t.sent) {
            if let SourceOutcome::Segment { hash, data, payload, encoding, counts } = o {
                if expect.is_some_and(|e| e.get(t.sent as usize) != Some(&hash)) {
                    // Read differently than in the first pass: the file changed in between.
                    t.finished = true;
                    self.bytes_reserved -= seg_len(t.info.size, t.sent);
                    for i in std::mem::take(&mut t.ready).into_keys() {
                        self.bytes_reserved -= seg_len(t.info.size, i);
                    }
                    self.out.push_back(Message::FileFailed { file, reason: FileFailure::Changed });
                    self.stats.files_failed += 1;
                    return;
                }
                if payload == Payload::Kept {
                    self.stats.resumed_bytes += seg_len(t.info.size, t.sent);
                }
                self.stats.literal_bytes += counts.literal;
                self.stats.matched_bytes += counts.matched;
                self.stats.payload_bytes += data.len() as u64;
                t.hashes.push(hash);
                self.out.push_back(Message::Segment {
                    file,
                    index: t.sent,
                    payload,
                    encoding,
                    data,
                });
            }
            t.sent += 1;
        }
        if t.sent == t.segments {
            t.finished = true;
            let hash = merge_segments(&t.hashes, t.info.size).unwrap_or([0; 32]);
            self.out.push_back(Message::FileEnd { file, size: t.info.size, hash });
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
    }
}
