//! Manifest intake: the walk's entries, numbered and remembered (files only) until the target
//! asks for them or passes them by, then sent on as the manifest.

use super::SourceSession;
use crate::entry::{Entry, EntryKind};
use crate::message::Message;
use crate::path::RelPath;

/// A scanned file, as the walk saw it; a different size or mtime when read means it changed.
#[derive(Debug)]
pub(super) struct FileInfo {
    pub(super) path: RelPath,
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
}

impl SourceSession {
    pub(super) fn on_scanned(&mut self, entries: Vec<Entry>, errors: Vec<String>) {
        if entries.is_empty() && !self.scan_done && errors.is_empty() {
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
        if let Some(first) = errors.first() {
            // Right after the entries read before the error, before any after it: the target
            // turns --delete off before it could compare what the source failed to list.
            let count = errors.len() as u64;
            self.stats.source_errors += count;
            let first: String = first.chars().take(1024).collect();
            self.out.push_back(Message::SourceErrors { count, first });
        }
        if self.scan_done && !self.end_sent {
            self.end_sent = true;
            let root = self.root.take();
            self.out.push_back(Message::EndOfManifest { count: self.next_id, root });
        }
    }
}
