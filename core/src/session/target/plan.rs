//! Planning: what one source entry needs, given what the destination has at its path.

use super::file::{FileState, TFile};
use super::work::{Action, Itemized, TargetWork};
use super::{Pending, TargetSession};
use crate::delta::BlockSize;
use crate::entry::{Entry, EntryKind, LocalEntry};
use crate::message::{FileId, Message};
use crate::path::RelPath;
use crate::policy::Admission;

/// Files smaller than this travel whole: a signature would cost more than it saves.
const DELTA_MIN_BASIS: u64 = 1024;

impl TargetSession {
    pub(super) fn itemize(&mut self, path: &RelPath, action: Action, kind: &'static str) {
        self.events.push_back(Itemized { path: path.clone(), action, kind });
    }

    /// Decides what to do with source entry `e` given the destination's `local` entry,
    /// after the receiving side's [`ReceivePolicy`](crate::policy::ReceivePolicy) had its say.
    pub(super) fn plan(&mut self, id: FileId, mut e: Entry, local: Option<LocalEntry>) {
        match self.opts.policy.admit(&mut e) {
            Admission::Refused => {
                self.stats.specials_refused += 1;
                self.itemize(&e.path, Action::Refused, e.kind.name());
                // Whatever the destination has there stays, subtree included.
                if let Some(l) = local.filter(|l| l.entry.kind == EntryKind::Dir) {
                    self.skip_under = Some(l.entry.path);
                }
                return;
            }
            Admission::Admitted { dropped } => {
                self.stats.privileged_dropped += u64::from(dropped);
            }
        }
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
        if self.opts.checksum && !self.opts.whole_files {
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
    pub(super) fn same_content(&mut self, e: Entry, local: Option<&Entry>) {
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

    pub(super) fn changed(&mut self, id: FileId) {
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
    pub(super) fn request(&mut self, id: FileId, mut f: TFile) {
        let path = f.entry.path.clone();
        let local_size = f.local.as_ref().map_or(0, |l| l.size);
        let new_size = f.entry.size;
        let use_delta =
            !self.opts.whole_files && local_size >= DELTA_MIN_BASIS && new_size >= DELTA_MIN_BASIS;
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
}
