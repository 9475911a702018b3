//! The receiving side of a round: merge-join, plan, rebuild, verify, commit.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::source::message_name;
use super::{check_hello, hello, ProtocolError, SessionError, SessionOptions, WorkId};
use crate::delta::{BlockSize, SignatureHeader};
use crate::entry::{Entry, EntryKind, LocalEntry, RootMeta, Xattr};
use crate::hash::segment_count;
use crate::limits::LimitExceeded;
use crate::message::{Encoding, FileFailure, FileId, Message, Payload};
use crate::path::RelPath;
use crate::segment::seg_len;
use crate::stats::Stats;
use crate::SEGMENT_LEN;

/// Files smaller than this travel whole: a signature would cost more than it saves.
const DELTA_MIN_BASIS: u64 = 1024;
/// Signature bytes per `SignaturePiece` message.
const SIGNATURE_PIECE: usize = 1 << 20;

/// Work the target asks its driver to do. Every path is beneath the destination root.
#[derive(Debug)]
pub enum TargetWork {
    /// Walk on: up to `max` more entries of the destination's tree, in path order.
    Scan {
        /// Most entries to return.
        max: usize,
    },
    /// blake3 of the destination's file at `path` (`--checksum`).
    HashLocal {
        /// The file being decided.
        file: FileId,
        /// Its path.
        path: RelPath,
    },
    /// Does a journal of an interrupted round hold the first segments of this file (same
    /// path, size and mtime)? Reply `Resumable` with their chaining values (empty: no). The
    /// driver keeps that partial file as `file`'s temp file; `Write`s of `Kept` segments read
    /// it back.
    Resume {
        /// The file.
        file: FileId,
        /// Its path.
        path: RelPath,
        /// The source's size.
        size: u64,
        /// The source's mtime.
        mtime_ns: i64,
    },
    /// Open the destination's file at `path` as the basis for `file` and sign it.
    Signature {
        /// The file.
        file: FileId,
        /// The basis path (the same path as the file).
        path: RelPath,
        /// Block size to sign with.
        block_size: BlockSize,
    },
    /// Rebuild segment `index` of `file` into its temp file (creating it at index 0).
    Write {
        /// The file.
        file: FileId,
        /// Where it will live.
        path: RelPath,
        /// Segment index.
        index: u64,
        /// Literal data or a delta against the basis opened by `Signature`.
        payload: Payload,
        /// Payload encoding.
        encoding: Encoding,
        /// The payload.
        data: Vec<u8>,
        /// Exact number of bytes the segment must produce.
        len: usize,
        /// Size of the whole file being rebuilt.
        file_len: u64,
        /// The source's mtime of the file (with its size, the resume journal's key).
        mtime_ns: i64,
    },
    /// Verify the rebuilt file against `hash` and apply `entry`'s metadata to it (still under
    /// its temp name). Reply `Verified` or `Mismatch`.
    Finish {
        /// The file.
        file: FileId,
        /// The source's entry: path, size and metadata.
        entry: Entry,
        /// blake3 the rebuilt content must have.
        hash: [u8; 32],
    },
    /// Gather the `gaps` of the basis opened for `file`, end to end, and sign them (second
    /// pass of a two-level delta). Reply with `Signed`.
    FineSignature {
        /// The file.
        file: FileId,
        /// Sorted, disjoint `(offset, len)` ranges of the basis, already validated.
        gaps: Vec<(u64, u64)>,
        /// Fine block size.
        block_size: BlockSize,
    },
    /// Make the verified files durable (fsync, or one syncfs for a large batch), then rename
    /// each into place, replacing whatever is there (a directory tree included). Reply
    /// `Committed`.
    Commit {
        /// Files previously `Verified`.
        files: Vec<FileId>,
    },
    /// Drop the temp file and basis of `file`.
    Discard {
        /// The file.
        file: FileId,
        /// The round is failing: keep a partial file the resume journal describes, for the
        /// next round.
        keep_partial: bool,
    },
    /// Same content, new metadata: make a new inode (clone of the old content), never chmod
    /// the existing one, which a snapshot may share.
    Retouch {
        /// The source's entry.
        entry: Entry,
    },
    /// Create a directory (mode 0700 until its metadata is set at the end).
    MakeDir {
        /// The source's entry.
        entry: Entry,
        /// Remove a non-directory that is in the way first.
        replace: bool,
    },
    /// Create a symlink or special file beside its path and rename it into place.
    Link {
        /// The source's entry.
        entry: Entry,
    },
    /// Make `path` another name of the file at `to` (skip if it already is).
    HardLink {
        /// The new name.
        path: RelPath,
        /// The existing file.
        to: RelPath,
    },
    /// Remove an entry the source does not have (a directory with its contents), not
    /// crossing into other filesystems.
    Delete {
        /// The destination's entry.
        entry: LocalEntry,
    },
    /// Set a directory's permissions, ownership, xattrs and mtime, after its children.
    DirMeta {
        /// The source's entry.
        entry: Entry,
    },
    /// Set the destination root's own metadata, like the source root's.
    RootMeta {
        /// The source root's metadata.
        root: RootMeta,
    },
    /// fsync every directory this round changed.
    SyncDirs,
}

/// What the driver reports back for a [`TargetWork`].
#[derive(Debug)]
pub enum TargetOutcome {
    /// The next scan batch.
    Scanned {
        /// Entries, in path order.
        entries: Vec<LocalEntry>,
        /// Whether the walk is complete.
        done: bool,
    },
    /// blake3 of a local file.
    Hashed([u8; 32]),
    /// Chaining values of the segments an interrupted round left of a file (empty: none).
    Resumable(Vec<[u8; 32]>),
    /// Signature of a basis; `None` when the basis could not be opened (send whole).
    Signed(Option<(SignatureHeader, Vec<u8>)>),
    /// A segment was written; how many bytes came from the basis.
    Written {
        /// Bytes copied from the basis.
        matched: u64,
    },
    /// The rebuilt file matched the source's blake3 and has its metadata; not yet in place.
    Verified(WorkCounts),
    /// A batch of verified files is durable and in place.
    Committed(WorkCounts),
    /// The rebuilt content did not match the source's blake3; nothing was renamed.
    Mismatch,
    /// Work done; what it counted.
    Done(WorkCounts),
    /// The peer's data was invalid (bad delta, bad compression): a protocol error.
    BadData(String),
    /// A local failure that ends the round (I/O error, permission, no space).
    Fatal(String),
}

/// Counters a work item reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkCounts {
    /// Entries removed.
    pub deleted: u64,
    /// Ownership changes skipped (not root).
    pub ownership_skipped: u64,
    /// Entries left alone because they are mount points or on another filesystem.
    pub mount_points_skipped: u64,
    /// Whether a link or directory was actually created (false: it was already right).
    pub created: bool,
    /// Entries that could not be made this round (a hard link whose file is missing).
    pub failed: u64,
}

/// What the plan does with one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not on the destination: created.
    New,
    /// Content differs: rebuilt (by delta when a basis exists).
    Changed,
    /// Same content, different metadata: a new inode with the new metadata.
    Metadata,
    /// On the destination only: removed (`--delete`).
    Delete,
    /// Same on both sides.
    Unchanged,
}

/// One line of the itemized plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Itemized {
    /// The path.
    pub path: RelPath,
    /// What happens to it.
    pub action: Action,
    /// What kind of entry it is (the source's kind, or the destination's for deletes).
    pub kind: &'static str,
}

#[derive(Debug)]
enum FileState {
    Hashing,
    /// Asking the driver's journal whether it holds a part of the file.
    Resuming,
    Signing,
    Receiving,
    Finishing,
    /// Verified, waiting for its batch to be committed.
    Verified,
    Committing,
    Discarding,
}

#[derive(Debug)]
struct QueuedSegment {
    index: u64,
    payload: Payload,
    encoding: Encoding,
    data: Vec<u8>,
}

#[derive(Debug)]
struct TFile {
    entry: Entry,
    state: FileState,
    /// The destination's regular file at this path, if any: basis and metadata to compare.
    local: Option<Entry>,
    segments: u64,
    next_rx: u64,
    written: u64,
    queue: VecDeque<QueuedSegment>,
    writing: bool,
    end: Option<[u8; 32]>,
    failed: bool,
    resent: bool,
    delta: bool,
    /// Length of the basis the signature described.
    basis_len: u64,
    /// A fine signature was asked for (at most once per transfer).
    refined: bool,
    /// The fine signature is being computed.
    refining: bool,
    /// Segments the destination holds from an interrupted round (sent in `Resume`): the
    /// source may answer these with `Kept`.
    resumable: u64,
    /// The write in progress is of a `Kept` segment.
    writing_kept: bool,
}

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
    stats: Stats,
}

impl TargetSession {
    /// A new session; it greets the peer and grants the initial credit.
    pub fn new(mut opts: SessionOptions) -> Self {
        // A window smaller than one segment could never admit a large file's segment.
        opts.window_bytes = opts.window_bytes.max(2 * SEGMENT_LEN as u64);
        opts.window_entries = opts.window_entries.max(1);
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
                self.root = root;
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

    fn on_entries(&mut self, entries: Vec<Entry>) -> Result<(), SessionError> {
        let limits = self.opts.limits;
        if self.src_done {
            return Err(ProtocolError::Unexpected { what: "Entries after EndOfManifest" }.into());
        }
        LimitExceeded::check(
            "entries in one batch",
            entries.len() as u64,
            limits.max_batch_entries as u64,
        )
        .map_err(ProtocolError::from)?;
        let credit_left = self.granted_entries() - self.src_next_id;
        if entries.len() as u64 > credit_left {
            return Err(ProtocolError::Credit("manifest entries").into());
        }
        for e in entries {
            self.validate_entry(&e)?;
            self.stats.entries_scanned += 1;
            if e.kind == EntryKind::File {
                self.stats.files_scanned += 1;
                self.stats.source_bytes += e.size;
            }
            self.src.push_back((self.src_next_id, e));
            self.src_next_id += 1;
        }
        Ok(())
    }

    fn granted_entries(&self) -> u64 {
        // Initial window plus every entry merged (and so re-credited) since.
        self.opts.window_entries + self.merged_upto
    }

    fn validate_entry(&mut self, e: &Entry) -> Result<(), SessionError> {
        let limits = &self.opts.limits;
        if let Some(prev) = &self.last_path {
            if e.path <= *prev {
                return Err(ProtocolError::Unsorted {
                    path: e.path.display(),
                    previous: prev.display(),
                }
                .into());
            }
        }
        while let Some(top) = self.dir_stack.last() {
            if e.path.starts_with(top) {
                break;
            }
            self.dir_stack.pop();
        }
        if e.path.parent().as_ref() != self.dir_stack.last() {
            return Err(ProtocolError::Orphan(e.path.display()).into());
        }
        self.check_xattrs(&e.xattrs)?;
        match &e.kind {
            EntryKind::Symlink { target } => {
                if target.is_empty() || target.contains(&0) {
                    return Err(ProtocolError::Invalid("malformed symlink target".into()).into());
                }
                LimitExceeded::check(
                    "symlink target",
                    target.len() as u64,
                    limits.max_link_target as u64,
                )
                .map_err(ProtocolError::from)?;
            }
            EntryKind::HardLink { to } if *to >= e.path => {
                return Err(ProtocolError::Invalid(format!(
                    "hard link {} points forward to {}",
                    e.path, to
                ))
                .into());
            }
            EntryKind::File if self.opts.checksum && e.hash.is_none() => {
                return Err(ProtocolError::Invalid("--checksum entry without a hash".into()).into());
            }
            EntryKind::Dir => self.dir_stack.push(e.path.clone()),
            _ => {}
        }
        self.last_path = Some(e.path.clone());
        Ok(())
    }

    fn check_xattrs(&self, xattrs: &[Xattr]) -> Result<(), SessionError> {
        let limits = &self.opts.limits;
        LimitExceeded::check("xattrs on one entry", xattrs.len() as u64, limits.max_xattrs as u64)
            .map_err(ProtocolError::from)?;
        for x in xattrs {
            LimitExceeded::check(
                "xattr value",
                x.value.len() as u64,
                limits.max_xattr_value as u64,
            )
            .map_err(ProtocolError::from)?;
            if x.name.is_empty() || x.name.len() > 255 || x.name.contains(&0) {
                return Err(ProtocolError::Invalid("malformed xattr name".into()).into());
            }
        }
        Ok(())
    }

    fn on_segment(&mut self, file: FileId, seg: QueuedSegment) -> Result<(), SessionError> {
        let limits = self.opts.limits;
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if !matches!(f.state, FileState::Receiving) || f.end.is_some() {
            return Err(ProtocolError::UnknownFile(file).into());
        }
        if seg.index != f.next_rx || seg.index >= f.segments {
            return Err(
                ProtocolError::SegmentOrder { file, want: f.next_rx, got: seg.index }.into()
            );
        }
        if seg.payload == Payload::Delta && !f.delta {
            return Err(
                ProtocolError::Invalid(format!("file {file}: delta without a basis")).into()
            );
        }
        if seg.payload == Payload::Kept && seg.index >= f.resumable {
            return Err(ProtocolError::Invalid(format!(
                "file {file}: segment {} kept, but only {} were offered",
                seg.index, f.resumable
            ))
            .into());
        }
        let cap = match seg.payload {
            Payload::Literal => SEGMENT_LEN + (SEGMENT_LEN >> 7) + 1024,
            Payload::Delta => limits.max_delta_segment,
            Payload::Kept => 0,
        };
        LimitExceeded::check("segment payload", seg.data.len() as u64, cap as u64)
            .map_err(ProtocolError::from)?;
        let raw = seg_len(f.entry.size, seg.index);
        if self.bytes_received + raw > self.bytes_granted {
            return Err(ProtocolError::Credit("segment bytes").into());
        }
        self.bytes_received += raw;
        f.next_rx += 1;
        self.stats.payload_bytes += seg.data.len() as u64;
        if f.failed {
            self.bytes_credit_owed += seg_len(f.entry.size, seg.index);
            return Ok(());
        }
        f.queue.push_back(seg);
        self.pump_file(file);
        Ok(())
    }

    fn send_signature(&mut self, file: FileId, blocks: Vec<u8>) {
        self.stats.signature_bytes += blocks.len() as u64;
        let mut pieces = blocks.chunks(SIGNATURE_PIECE).peekable();
        if pieces.peek().is_none() {
            self.out.push_back(Message::SignaturePiece { file, blocks: Vec::new(), last: true });
        }
        while let Some(p) = pieces.next() {
            let last = pieces.peek().is_none();
            self.out.push_back(Message::SignaturePiece { file, blocks: p.to_vec(), last });
        }
    }

    fn on_refine(&mut self, file: FileId, gaps: Vec<(u64, u64)>) -> Result<(), SessionError> {
        let limits = self.opts.limits;
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        let fits = matches!(f.state, FileState::Receiving) && f.delta && !f.refined;
        if !fits || f.next_rx != 0 || f.end.is_some() || f.failed {
            return Err(ProtocolError::Unexpected { what: "Refine" }.into());
        }
        let map =
            crate::delta::GapMap::new(&gaps, f.basis_len, &limits).map_err(ProtocolError::from)?;
        f.refined = true;
        f.refining = true;
        let block_size = BlockSize::fine_for_gaps(map.len(), gaps.len() as u64);
        self.push_work(Pending::File(file), TargetWork::FineSignature { file, gaps, block_size });
        Ok(())
    }

    fn on_file_end(&mut self, file: FileId, size: u64, hash: [u8; 32]) -> Result<(), SessionError> {
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if !matches!(f.state, FileState::Receiving) || f.end.is_some() {
            return Err(ProtocolError::UnknownFile(file).into());
        }
        if size != f.entry.size || f.next_rx != f.segments {
            return Err(ProtocolError::SizeMismatch {
                file,
                what: format!(
                    "ended at {size} bytes / {} segments, manifest said {} bytes / {} segments",
                    f.next_rx, f.entry.size, f.segments
                ),
            }
            .into());
        }
        f.end = Some(hash);
        self.pump_file(file);
        Ok(())
    }

    fn on_file_failed(&mut self, file: FileId, reason: FileFailure) -> Result<(), SessionError> {
        let f = self.files.get_mut(&file).ok_or(ProtocolError::UnknownFile(file))?;
        if !matches!(f.state, FileState::Receiving) || f.end.is_some() || f.failed {
            return Err(ProtocolError::UnknownFile(file).into());
        }
        // The reason is the source's to log; here the file is simply left as it was.
        let _ = reason;
        f.failed = true;
        self.failed_paths.insert(f.entry.path.clone());
        for s in f.queue.drain(..) {
            self.bytes_credit_owed += seg_len(f.entry.size, s.index);
        }
        self.stats.files_failed += 1;
        self.pump_file(file);
        Ok(())
    }

    /// Moves one file forward: next write, or finish, or discard.
    fn pump_file(&mut self, file: FileId) {
        let Some(f) = self.files.get_mut(&file) else { return };
        if f.writing || f.refining || !matches!(f.state, FileState::Receiving) {
            return;
        }
        if f.failed {
            f.state = FileState::Discarding;
            let w = TargetWork::Discard { file, keep_partial: false };
            self.push_work(Pending::File(file), w);
            return;
        }
        if let Some(seg) = f.queue.pop_front() {
            f.writing = true;
            f.writing_kept = seg.payload == Payload::Kept;
            let w = TargetWork::Write {
                file,
                path: f.entry.path.clone(),
                index: seg.index,
                payload: seg.payload,
                encoding: seg.encoding,
                data: seg.data,
                len: seg_len(f.entry.size, seg.index) as usize,
                file_len: f.entry.size,
                mtime_ns: f.entry.meta.mtime_ns,
            };
            self.push_work(Pending::File(file), w);
            return;
        }
        if let Some(hash) = f.end {
            if f.written == f.segments {
                f.state = FileState::Finishing;
                let w = TargetWork::Finish { file, entry: f.entry.clone(), hash };
                self.push_work(Pending::File(file), w);
            }
        }
    }

    fn on_committed(&mut self, files: Vec<FileId>) {
        for file in files {
            if let Some(f) = self.files.remove(&file) {
                if f.resent {
                    self.stats.files_resent += 1;
                }
                self.out.push_back(Message::Settled { file });
            }
        }
    }

    /// Commits verified files in batches: one flush for many files instead of an fsync each.
    /// A batch goes when it is full, or when every file in flight is waiting on it (nothing
    /// else could make progress).
    fn flush_commits(&mut self) {
        if self.commit_batch.is_empty() || self.opts.dry_run {
            return;
        }
        let waiting = self
            .files
            .values()
            .filter(|f| matches!(f.state, FileState::Verified | FileState::Committing))
            .count();
        // Half the window at most, so the other half keeps the pipeline busy meanwhile.
        let full = COMMIT_BATCH.min(self.opts.window_files / 2).max(1);
        if self.commit_batch.len() < full && waiting < self.files.len() {
            return;
        }
        let files = std::mem::take(&mut self.commit_batch);
        for id in &files {
            if let Some(f) = self.files.get_mut(id) {
                f.state = FileState::Committing;
            }
        }
        self.push_work(Pending::Commit(files.clone()), TargetWork::Commit { files });
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

    fn on_file_outcome(
        &mut self,
        file: FileId,
        outcome: TargetOutcome,
    ) -> Result<(), SessionError> {
        let Some(f) = self.files.get_mut(&file) else {
            return Err(SessionError::Local(format!("outcome for unknown file {file}")));
        };
        match (&f.state, outcome) {
            (FileState::Hashing, TargetOutcome::Hashed(local)) => {
                if f.entry.hash == Some(local) {
                    let f = self.files.remove(&file).expect("present: matched above");
                    self.undecided.remove(&file);
                    self.same_content(f.entry, f.local.as_ref());
                } else {
                    self.changed(file);
                }
            }
            (FileState::Resuming, TargetOutcome::Resumable(have)) => {
                // A driver may hold no more than the file has; anything longer is ignored.
                if !have.is_empty() && have.len() as u64 <= f.segments {
                    f.resumable = have.len() as u64;
                    self.out.push_back(Message::Resume { file, have });
                }
                let Some(f) = self.files.remove(&file) else { return Ok(()) };
                self.undecided.remove(&file);
                self.request(file, f);
            }
            (FileState::Signing, TargetOutcome::Signed(sig)) => {
                self.undecided.remove(&file);
                f.state = FileState::Receiving;
                match sig {
                    Some((header, blocks)) => {
                        f.delta = true;
                        f.basis_len = header.basis_len;
                        self.out.push_back(Message::Want { file, basis: Some(header) });
                        self.send_signature(file, blocks);
                    }
                    None => self.out.push_back(Message::Want { file, basis: None }),
                }
            }
            (FileState::Receiving, TargetOutcome::Signed(sig)) if f.refining => {
                f.refining = false;
                // The basis is held in memory, so signing its gaps cannot fail to find it; an
                // empty fine signature (everything literal) is still a valid answer.
                let (header, blocks) = sig.unwrap_or_else(|| {
                    let bs = BlockSize::new(crate::delta::MIN_BLOCK).expect("MIN_BLOCK is valid");
                    (SignatureHeader::new(bs, 0), Vec::new())
                });
                self.out.push_back(Message::FineSignature { file, header });
                self.send_signature(file, blocks);
                self.pump_file(file);
            }
            (FileState::Receiving, TargetOutcome::Written { matched }) => {
                f.writing = false;
                f.written += 1;
                let len = seg_len(f.entry.size, f.written - 1);
                self.bytes_credit_owed += len;
                if std::mem::take(&mut f.writing_kept) {
                    self.stats.resumed_bytes += len;
                } else {
                    self.stats.matched_bytes += matched;
                    self.stats.literal_bytes += len.saturating_sub(matched);
                }
                self.pump_file(file);
            }
            (FileState::Finishing, TargetOutcome::Verified(c)) => {
                self.stats.ownership_skipped += c.ownership_skipped;
                f.state = FileState::Verified;
                self.commit_batch.push(file);
            }
            (FileState::Finishing, TargetOutcome::Mismatch) if !f.resent => {
                // An MD4 collision or a file that changed under the reader: resend it whole.
                f.resent = true;
                f.delta = false;
                f.resumable = 0;
                f.state = FileState::Receiving;
                f.next_rx = 0;
                f.written = 0;
                f.end = None;
                self.out.push_back(Message::Want { file, basis: None });
            }
            (FileState::Finishing, TargetOutcome::Mismatch) => {
                if let Some(f) = self.files.remove(&file) {
                    self.failed_paths.insert(f.entry.path);
                }
                self.stats.files_failed += 1;
                self.out.push_back(Message::Settled { file });
            }
            (FileState::Discarding, TargetOutcome::Done(_)) => {
                self.files.remove(&file);
                self.out.push_back(Message::Settled { file });
            }
            (state, o) => {
                return Err(SessionError::Local(format!(
                    "file {file}: outcome {o:?} does not fit state {state:?}"
                )))
            }
        }
        Ok(())
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
            self.out.push_back(Message::Done { stats: self.stats });
        }
        Ok(())
    }

    fn merge(&mut self) -> Result<(), SessionError> {
        loop {
            if self.barrier || self.files.len() >= self.opts.window_files {
                return Ok(());
            }
            let low_water = self.opts.scan_batch / 2;
            if self.local.len() < low_water && !self.local_busy && !self.local_done {
                self.local_busy = true;
                let max = self.opts.scan_batch;
                self.push_work(Pending::Scan, TargetWork::Scan { max });
            }
            if self.local.is_empty() && !self.local_done {
                return Ok(());
            }
            if let (Some(skip), Some(l)) = (&self.skip_under, self.local.front()) {
                if l.entry.path.starts_with(skip) {
                    self.local.pop_front();
                    continue;
                }
                self.skip_under = None;
            }
            if self.src.is_empty() && !self.src_done {
                return Ok(());
            }
            let ord = match (self.src.front(), self.local.front()) {
                (None, None) => return Ok(()),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((_, s)), Some(l)) => s.path.cmp(&l.entry.path),
            };
            match ord {
                std::cmp::Ordering::Less => {
                    let (id, e) = self.pop_src();
                    self.plan(id, e, None);
                }
                std::cmp::Ordering::Equal => {
                    let (id, e) = self.pop_src();
                    let l = self.local.pop_front().expect("front checked above");
                    self.plan(id, e, Some(l));
                }
                std::cmp::Ordering::Greater => {
                    let l = self.local.pop_front().expect("front checked above");
                    self.extraneous(l);
                }
            }
        }
    }

    fn pop_src(&mut self) -> (FileId, Entry) {
        let (id, e) = self.src.pop_front().expect("caller checked front");
        self.merged_upto = id + 1;
        self.entries_credit_owed += 1;
        (id, e)
    }

    fn itemize(&mut self, path: &RelPath, action: Action, kind: &'static str) {
        self.events.push_back(Itemized { path: path.clone(), action, kind });
    }

    fn extraneous(&mut self, l: LocalEntry) {
        if l.entry.kind == EntryKind::Dir {
            self.skip_under = Some(l.entry.path.clone());
        }
        if !self.opts.delete {
            return;
        }
        self.itemize(&l.entry.path, Action::Delete, l.entry.kind.name());
        if self.opts.dry_run {
            self.stats.files_deleted += 1;
            return;
        }
        self.push_work(Pending::Other, TargetWork::Delete { entry: l });
    }

    /// Decides what to do with source entry `e` given the destination's `local` entry.
    fn plan(&mut self, id: FileId, e: Entry, local: Option<LocalEntry>) {
        let local_is_dir = matches!(&local, Some(l) if l.entry.kind == EntryKind::Dir);
        if local_is_dir && e.kind != EntryKind::Dir {
            // The directory's contents follow in the local stream; they go with it.
            if let Some(l) = &local {
                self.skip_under = Some(l.entry.path.clone());
            }
        }
        match &e.kind {
            EntryKind::Dir => {
                self.dirs.push(e.clone());
                if local_is_dir {
                    return;
                }
                self.itemize(&e.path, Action::New, "dir");
                self.stats.dirs_created += 1;
                if !self.opts.dry_run {
                    self.barrier = true;
                    let replace = local.is_some();
                    self.push_work(Pending::Barrier, TargetWork::MakeDir { entry: e, replace });
                }
            }
            EntryKind::File => self.plan_file(id, e, local),
            EntryKind::HardLink { to } => {
                // Whether it is new is known only at the end, when the driver compares inodes.
                if !self.opts.dry_run {
                    self.hardlinks.push((e.path.clone(), to.clone()));
                }
            }
            _ => {
                let same = local.as_ref().is_some_and(|l| {
                    l.entry.kind == e.kind
                        && l.entry.meta.uid == e.meta.uid
                        && l.entry.meta.gid == e.meta.gid
                        && l.entry.meta.mtime_ns == e.meta.mtime_ns
                        && (matches!(e.kind, EntryKind::Symlink { .. })
                            || l.entry.meta.mode == e.meta.mode)
                });
                if same {
                    self.stats.files_unchanged += 1;
                    return;
                }
                let action = if local.is_some() { Action::Changed } else { Action::New };
                self.itemize(&e.path, action, e.kind.name());
                self.stats.links_created += 1;
                if !self.opts.dry_run {
                    self.push_work(Pending::Other, TargetWork::Link { entry: e });
                }
            }
        }
    }

    fn plan_file(&mut self, id: FileId, e: Entry, local: Option<LocalEntry>) {
        let local_file = local.filter(|l| l.entry.kind == EntryKind::File);
        let Some(l) = local_file else {
            self.itemize(&e.path, Action::New, "file");
            self.stats.files_new += 1;
            self.transfer(id, e, None);
            return;
        };
        if self.opts.checksum {
            if l.entry.size == e.size {
                let path = e.path.clone();
                self.undecided.insert(id);
                self.files.insert(id, TFile::new(e, FileState::Hashing, Some(l.entry)));
                self.push_work(Pending::File(id), TargetWork::HashLocal { file: id, path });
                return;
            }
        } else if l.entry.size == e.size && l.entry.meta.mtime_ns == e.meta.mtime_ns {
            self.same_content(e, Some(&l.entry));
            return;
        }
        self.files.insert(id, TFile::new(e, FileState::Signing, Some(l.entry)));
        self.changed(id);
    }

    /// Content is equal: unchanged, or a metadata-only change made on a new inode.
    fn same_content(&mut self, e: Entry, local: Option<&Entry>) {
        if local.is_some_and(|l| l.meta == e.meta && l.xattrs == e.xattrs) {
            self.stats.files_unchanged += 1;
            return;
        }
        self.itemize(&e.path, Action::Metadata, "file");
        self.stats.files_metadata += 1;
        if !self.opts.dry_run {
            self.push_work(Pending::Other, TargetWork::Retouch { entry: e });
        }
    }

    fn changed(&mut self, id: FileId) {
        let Some(f) = self.files.remove(&id) else { return };
        self.undecided.remove(&id);
        self.itemize(&f.entry.path, Action::Changed, "file");
        self.stats.files_changed += 1;
        self.transfer(id, f.entry, f.local);
    }

    fn transfer(&mut self, id: FileId, e: Entry, local: Option<Entry>) {
        if self.opts.dry_run {
            return;
        }
        let f = TFile::new(e, FileState::Receiving, local);
        if self.opts.resume && f.segments > 1 {
            // Only multi-segment files: a cut single-segment file has nothing to resume from.
            let w = TargetWork::Resume {
                file: id,
                path: f.entry.path.clone(),
                size: f.entry.size,
                mtime_ns: f.entry.meta.mtime_ns,
            };
            let mut f = f;
            f.state = FileState::Resuming;
            self.undecided.insert(id);
            self.files.insert(id, f);
            self.push_work(Pending::File(id), w);
            return;
        }
        self.request(id, f);
    }

    /// Asks the source for a file: by delta when there is a basis worth signing, else whole.
    fn request(&mut self, id: FileId, mut f: TFile) {
        let path = f.entry.path.clone();
        let local_size = f.local.as_ref().map_or(0, |l| l.size);
        let new_size = f.entry.size;
        let use_delta = local_size >= DELTA_MIN_BASIS && new_size >= DELTA_MIN_BASIS;
        f.state = FileState::Receiving;
        if use_delta {
            f.state = FileState::Signing;
            self.undecided.insert(id);
            self.files.insert(id, f);
            let block_size = BlockSize::for_basis(local_size, new_size);
            self.push_work(Pending::File(id), TargetWork::Signature { file: id, path, block_size });
        } else {
            self.files.insert(id, f);
            self.out.push_back(Message::Want { file: id, basis: None });
        }
    }

    fn push_work(&mut self, p: Pending, w: TargetWork) {
        let id = self.next_work;
        self.next_work += 1;
        self.pending.insert(id, p);
        self.work.push_back((id, w));
    }
}

impl TFile {
    fn new(entry: Entry, state: FileState, local: Option<Entry>) -> Self {
        TFile {
            segments: segment_count(entry.size),
            entry,
            state,
            local,
            next_rx: 0,
            written: 0,
            queue: VecDeque::new(),
            writing: false,
            end: None,
            failed: false,
            resent: false,
            delta: false,
            basis_len: 0,
            refined: false,
            refining: false,
            resumable: 0,
            writing_kept: false,
        }
    }
}
