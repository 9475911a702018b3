//! The pair: both sessions, their fake filesystems and the wire between them, driven to the
//! end of a round with the protocol's flow-control promises checked from outside.

use super::*;

/// Work asked by either session and not yet performed.
pub(super) enum AnyWork {
    Src(WorkId, SourceWork),
    Dst(WorkId, TargetWork),
}

/// Why [`Pair::drive`] stopped short of a successful round.
pub(super) enum DriveError {
    /// A session failed; each side's first error.
    Session { src: Option<SessionError>, dst: Option<SessionError> },
    /// The harness caught something the sessions did not: a message that does not survive the
    /// wire, a credit overrun, a stall, a round that does not end.
    Harness(String),
}

impl fmt::Debug for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveError::Session { src, dst } => {
                write!(f, "session failed: source {src:?}, target {dst:?}")
            }
            DriveError::Harness(why) => write!(f, "harness: {why}"),
        }
    }
}

/// Everything that crossed between the sessions, for assertions after a round.
#[derive(Default)]
pub(super) struct Log {
    /// Messages source → target, bulk payloads dropped.
    pub(super) to_dst: Vec<Message>,
    /// Messages target → source, bulk payloads dropped.
    pub(super) to_src: Vec<Message>,
    /// Every piece of work the target asked for: kind and path.
    pub(super) dst_work: Vec<(&'static str, Option<RelPath>)>,
    /// Itemized plan lines.
    pub(super) events: Vec<Itemized>,
}

/// Flow-control accounting from what crossed the wire (not from the sessions' own counters).
#[derive(Default)]
pub(super) struct Flow {
    /// The first credit grant: the initial window.
    pub(super) initial_entries: Option<u64>,
    pub(super) entries_granted: u64,
    pub(super) entries_sent: u64,
    pub(super) bytes_granted: u64,
    pub(super) bytes_sent: u64,
    /// Size of each manifest entry by id (0 for non-files).
    pub(super) sizes: Vec<u64>,
    /// Files the target asked for and has not settled yet.
    pub(super) wanted: BTreeSet<FileId>,
    /// Most manifest entries delivered beyond the credit the target had handed back.
    pub(super) peak_entries_ahead: u64,
    /// Most files wanted and not yet settled at once.
    pub(super) peak_files: usize,
}

/// A source and a target session, their fake filesystems, and the wire between them.
pub(super) struct Pair {
    pub(super) src: SourceSession,
    pub(super) dst: TargetSession,
    pub(super) src_fs: SourceFs,
    pub(super) dst_fs: DestFs,
    pub(super) queue: VecDeque<AnyWork>,
    /// `Some`: complete work in a seeded random order instead of first-asked-first-done.
    pub(super) shuffle: Option<SplitMix64>,
    pub(super) limits: Limits,
    pub(super) log: Log,
    pub(super) flow: Flow,
    pub(super) src_err: Option<SessionError>,
    pub(super) dst_err: Option<SessionError>,
}

impl Pair {
    pub(super) fn new(src: MemTree, dst: MemTree, opts: SessionOptions) -> Pair {
        Pair {
            src: SourceSession::new(opts.clone()),
            dst: TargetSession::new(opts.clone()),
            src_fs: SourceFs { tree: src, checksum: opts.checksum, ..SourceFs::default() },
            dst_fs: DestFs { tree: dst, limits: opts.limits, ..DestFs::default() },
            queue: VecDeque::new(),
            shuffle: None,
            limits: opts.limits,
            log: Log::default(),
            flow: Flow::default(),
            src_err: None,
            dst_err: None,
        }
    }

    pub(super) fn shuffled(mut self, seed: u64) -> Pair {
        self.shuffle = Some(SplitMix64::new(seed));
        self
    }

    /// Runs the round to its end: success, a session error, or a harness failure.
    pub(super) fn drive(&mut self) -> Result<(), DriveError> {
        for step in 0..MAX_STEPS {
            let moved = self.exchange()?;
            let src_over = self.src.is_finished() || self.src_err.is_some();
            let dst_over = self.dst.is_finished() || self.dst_err.is_some();
            if src_over && dst_over && self.queue.is_empty() {
                return match (self.src_err.take(), self.dst_err.take()) {
                    (None, None) => Ok(()),
                    (src, dst) => Err(DriveError::Session { src, dst }),
                };
            }
            let next = match &mut self.shuffle {
                Some(rng) if !self.queue.is_empty() => {
                    let i = rng.index(self.queue.len());
                    self.queue.swap_remove_back(i)
                }
                _ => self.queue.pop_front(),
            };
            match next {
                Some(w) => self.perform(w),
                None if !moved => {
                    return Err(DriveError::Harness(format!(
                        "stalled at step {step}: no work, no message, source finished {}, \
                         target finished {}",
                        self.src.is_finished(),
                        self.dst.is_finished()
                    )))
                }
                None => {}
            }
        }
        Err(DriveError::Harness(format!("no end after {MAX_STEPS} steps")))
    }

    /// Delivers every queued message both ways and collects every work item asked, until
    /// neither session has anything more to say. Returns whether anything happened.
    fn exchange(&mut self) -> Result<bool, DriveError> {
        let mut moved = false;
        loop {
            let mut any = false;
            while let Some(m) = self.src.poll_transmit() {
                any = true;
                let m = wire(&m, &self.limits).map_err(DriveError::Harness)?;
                self.account_to_dst(&m)?;
                self.log.to_dst.push(summary(&m));
                if let Err(e) = self.dst.handle_message(m) {
                    self.dst_err.get_or_insert(e);
                }
            }
            while let Some(m) = self.dst.poll_transmit() {
                any = true;
                let m = wire(&m, &self.limits).map_err(DriveError::Harness)?;
                self.account_to_src(&m);
                self.log.to_src.push(summary(&m));
                if let Err(e) = self.src.handle_message(m) {
                    self.src_err.get_or_insert(e);
                }
            }
            while let Some(ev) = self.dst.poll_event() {
                self.log.events.push(ev);
            }
            while let Some((id, w)) = self.src.poll_work() {
                any = true;
                self.queue.push_back(AnyWork::Src(id, w));
            }
            while let Some((id, w)) = self.dst.poll_work() {
                any = true;
                self.log.dst_work.push(target_work_name(&w));
                self.queue.push_back(AnyWork::Dst(id, w));
            }
            if !any {
                return Ok(moved);
            }
            moved = true;
        }
    }

    fn perform(&mut self, w: AnyWork) {
        match w {
            AnyWork::Src(id, w) => {
                let o = self.src_fs.perform(w);
                if let Err(e) = self.src.handle_outcome(id, o) {
                    self.src_err.get_or_insert(e);
                }
            }
            AnyWork::Dst(id, w) => {
                let o = self.dst_fs.perform(w);
                if let Err(e) = self.dst.handle_outcome(id, o) {
                    self.dst_err.get_or_insert(e);
                }
            }
        }
    }

    /// Checks a source message against the credit the source had been given.
    fn account_to_dst(&mut self, m: &Message) -> Result<(), DriveError> {
        let f = &mut self.flow;
        match m {
            Message::Entries(v) => {
                f.entries_sent += v.len() as u64;
                f.sizes.extend(v.iter().map(|e| e.size));
                if f.entries_sent > f.entries_granted {
                    return Err(DriveError::Harness(format!(
                        "source sent {} entries on {} of credit",
                        f.entries_sent, f.entries_granted
                    )));
                }
                let returned = f.entries_granted - f.initial_entries.unwrap_or(0);
                f.peak_entries_ahead = f.peak_entries_ahead.max(f.entries_sent - returned);
            }
            Message::Segment { file, index, .. } => {
                let size = f.sizes.get(*file as usize).copied().unwrap_or(0);
                f.bytes_sent += seg_len(size, *index);
                if f.bytes_sent > f.bytes_granted {
                    return Err(DriveError::Harness(format!(
                        "source sent {} segment bytes on {} of credit",
                        f.bytes_sent, f.bytes_granted
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn account_to_src(&mut self, m: &Message) {
        let f = &mut self.flow;
        match m {
            Message::Credit { entries, bytes, .. } => {
                f.initial_entries.get_or_insert(*entries);
                f.entries_granted += entries;
                f.bytes_granted += bytes;
            }
            Message::Want { file, .. } => {
                f.wanted.insert(*file);
                f.peak_files = f.peak_files.max(f.wanted.len());
            }
            Message::Settled { file } => {
                f.wanted.remove(file);
            }
            _ => {}
        }
    }

    pub(super) fn into_trees(self) -> (MemTree, MemTree) {
        (self.src_fs.tree, self.dst_fs.tree)
    }

    /// How many times the target asked for work of `kind`.
    pub(super) fn asked(&self, kind: &str) -> usize {
        self.log.dst_work.iter().filter(|(k, _)| *k == kind).count()
    }

    /// Whether the target asked for work of `kind` on `p`.
    pub(super) fn asked_for(&self, kind: &str, p: &str) -> bool {
        let p = path(p);
        self.log.dst_work.iter().any(|(k, q)| *k == kind && q.as_ref() == Some(&p))
    }

    pub(super) fn sent_to_dst(&self, name: &str) -> usize {
        self.log.to_dst.iter().filter(|m| message_name(m) == name).count()
    }

    /// The file id the source gave `p`, from the manifest that crossed the wire.
    pub(super) fn id_of(&self, p: &str) -> FileId {
        let p = path(p);
        let mut id = 0;
        for m in &self.log.to_dst {
            if let Message::Entries(v) = m {
                for e in v {
                    if e.path == p {
                        return id;
                    }
                    id += 1;
                }
            }
        }
        panic!("{p} was never listed")
    }

    /// The `basis` of every `Want` for `p`, in order: `true` when a signature was offered.
    pub(super) fn wants(&self, p: &str) -> Vec<bool> {
        let id = self.id_of(p);
        self.log
            .to_src
            .iter()
            .filter_map(|m| match m {
                Message::Want { file, basis } if *file == id => Some(basis.is_some()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn segments_for(&self, p: &str) -> Vec<(u64, Payload)> {
        let id = self.id_of(p);
        self.log
            .to_dst
            .iter()
            .filter_map(|m| match m {
                Message::Segment { file, index, payload, .. } if *file == id => {
                    Some((*index, *payload))
                }
                _ => None,
            })
            .collect()
    }
}

/// Runs one round from `src` onto `dst` and returns the finished pair.
pub(super) fn round(src: MemTree, dst: MemTree, opts: SessionOptions) -> Pair {
    let mut pair = Pair::new(src, dst, opts);
    pair.drive().expect("round completes");
    pair
}

/// Asserts the round ended well on both sides and that the two accounts agree.
pub(super) fn assert_clean(pair: &Pair) {
    assert!(pair.dst.succeeded(), "target did not finish: {:?}", pair.dst.error());
    assert!(pair.src.error().is_none(), "source failed: {:?}", pair.src.error());
    let dones = pair.log.to_src.iter().filter(|m| matches!(m, Message::Done { .. })).count();
    assert_eq!(dones, 1, "the source was told the round is done, once");
    assert_eq!(pair.src.target_stats(), Some(pair.dst.stats()), "Done carries the target's stats");
    assert!(pair.dst_fs.staging.is_empty(), "staged files left behind");
    assert!(pair.dst_fs.bases.is_empty(), "basis files left open");
}
