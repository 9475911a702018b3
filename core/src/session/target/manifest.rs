//! Manifest intake: the source's entries, checked as they arrive (order, parents, limits,
//! credit), and the merge-join of them with the destination's own scan.

use super::{Action, Pending, TargetSession, TargetWork};
use crate::entry::{Entry, EntryKind, LocalEntry, Xattr};
use crate::limits::LimitExceeded;
use crate::message::FileId;
use crate::session::{ProtocolError, SessionError};

impl TargetSession {
    pub(super) fn on_entries(&mut self, entries: Vec<Entry>) -> Result<(), SessionError> {
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
            self.held += crate::limits::held_size(&e);
            LimitExceeded::check(
                "bytes of manifest entries, directories and hard links held by the \
                 destination this round (Limits::max_held_bytes)",
                self.held,
                limits.max_held_bytes,
            )
            .map_err(ProtocolError::from)?;
            self.stats.entries_scanned += 1;
            if e.kind == EntryKind::File {
                self.stats.files_scanned += 1;
                self.stats.source_bytes += e.size;
                if let Some(max) = self.opts.max_file_bytes {
                    LimitExceeded::check(
                        "file bytes beyond the round's declared size",
                        self.stats.source_bytes,
                        max,
                    )
                    .map_err(ProtocolError::from)?;
                }
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

    pub(super) fn check_xattrs(&self, xattrs: &[Xattr]) -> Result<(), SessionError> {
        let limits = &self.opts.limits;
        LimitExceeded::check("xattrs on one entry", xattrs.len() as u64, limits.max_xattrs as u64)
            .map_err(ProtocolError::from)?;
        let total: usize = xattrs.iter().map(|x| x.name.len() + x.value.len()).sum();
        LimitExceeded::check(
            "xattr bytes on one entry",
            total as u64,
            limits.max_entry_xattr_bytes as u64,
        )
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

    pub(super) fn merge(&mut self) -> Result<(), SessionError> {
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
        // Directories and hard links stay held until the end of the round; a file's entry
        // is bounded by the file window instead.
        if !matches!(e.kind, EntryKind::Dir | EntryKind::HardLink { .. }) {
            self.held -= crate::limits::held_size(&e);
        }
        self.merged_upto = id + 1;
        self.entries_credit_owed += 1;
        (id, e)
    }

    fn extraneous(&mut self, l: LocalEntry) {
        if l.entry.kind == EntryKind::Dir {
            self.skip_under = Some(l.entry.path.clone());
        }
        if !self.opts.delete || self.stats.source_errors > 0 {
            // A partial source (a read error) deletes nothing: what it failed to list is not
            // what it does not have.
            return;
        }
        self.itemize(&l.entry.path, Action::Delete, l.entry.kind.name());
        if self.opts.dry_run {
            self.stats.files_deleted += 1;
            return;
        }
        self.push_work(Pending::Other, TargetWork::Delete { entry: l });
    }
}
