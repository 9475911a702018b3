//! The fake filesystems: a tree in memory, and the source and destination halves of a fake
//! driver performing the sessions' work against it.

use super::*;

/// A test fake standing in for the agent's real filesystem driver (`LocalSource` and
/// `LocalDestination` in `ferry-agent`): a whole tree in memory, keyed by [`RelPath`], so that
/// iterating it yields exactly the order the agent's walker produces (a directory, then its
/// contents, then its later siblings). It models only what the sessions can observe: kinds,
/// sizes, contents and metadata; no inodes, xattrs, special files or mount points.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct MemTree(pub(super) BTreeMap<RelPath, MemNode>);

/// One node of a [`MemTree`].
#[derive(Clone, PartialEq, Eq)]
pub(super) enum MemNode {
    Dir { meta: Meta },
    File { meta: Meta, bytes: Vec<u8> },
    Symlink { target: Vec<u8>, meta: Meta },
}

impl fmt::Debug for MemNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Contents are summarised: a failing comparison must not print 17 MiB.
        match self {
            MemNode::Dir { meta } => write!(f, "Dir({meta:?})"),
            MemNode::File { meta, bytes } => {
                let h = blake3::hash(bytes).to_hex();
                write!(f, "File({meta:?}, {} bytes, blake3 {})", bytes.len(), &h[..16])
            }
            MemNode::Symlink { target, meta } => {
                write!(f, "Symlink({}, {meta:?})", target.escape_ascii())
            }
        }
    }
}

impl fmt::Debug for MemTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(p, n)| (p.display(), n))).finish()
    }
}

impl MemNode {
    pub(super) fn entry(&self, path: RelPath) -> Entry {
        let (kind, size, meta) = match self {
            MemNode::Dir { meta } => (EntryKind::Dir, 0, *meta),
            MemNode::File { meta, bytes } => (EntryKind::File, bytes.len() as u64, *meta),
            MemNode::Symlink { target, meta } => {
                (EntryKind::Symlink { target: target.clone() }, 0, *meta)
            }
        };
        Entry { path, kind, size, meta, xattrs: Vec::new(), hash: None }
    }
}

impl MemTree {
    pub(super) fn dir(&mut self, p: &str, meta: Meta) -> &mut Self {
        self.0.insert(path(p), MemNode::Dir { meta });
        self
    }

    pub(super) fn file(&mut self, p: &str, meta: Meta, bytes: Vec<u8>) -> &mut Self {
        self.0.insert(path(p), MemNode::File { meta, bytes });
        self
    }

    pub(super) fn symlink(&mut self, p: &str, target: &str, meta: Meta) -> &mut Self {
        self.0.insert(path(p), MemNode::Symlink { target: target.as_bytes().to_vec(), meta });
        self
    }

    pub(super) fn file_mut(&mut self, p: &str) -> (&mut Meta, &mut Vec<u8>) {
        match self.0.get_mut(&path(p)) {
            Some(MemNode::File { meta, bytes }) => (meta, bytes),
            other => panic!("{p} is not a file: {other:?}"),
        }
    }

    pub(super) fn bytes(&self, p: &str) -> &[u8] {
        self.node_bytes(&path(p)).unwrap_or_else(|| panic!("{p} is not a file"))
    }

    pub(super) fn node_bytes(&self, p: &RelPath) -> Option<&[u8]> {
        match self.0.get(p) {
            Some(MemNode::File { bytes, .. }) => Some(bytes),
            _ => None,
        }
    }

    /// Up to `max` entries after `cursor`, in walk order, and whether the walk is then done.
    pub(super) fn list_after(&self, cursor: Option<&RelPath>, max: usize) -> (Vec<Entry>, bool) {
        let lower = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = self.0.range::<RelPath, _>((lower, Bound::Unbounded));
        let batch: Vec<Entry> = it.by_ref().take(max).map(|(p, n)| n.entry(p.clone())).collect();
        (batch, it.next().is_none())
    }

    /// Removes `p` and everything beneath it; returns how many nodes went.
    pub(super) fn remove_subtree(&mut self, p: &RelPath) -> u64 {
        // Descendants sort right after their ancestor (`/` orders before every other byte).
        let doomed: Vec<RelPath> = self
            .0
            .range(p.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(p))
            .cloned()
            .collect();
        for k in &doomed {
            self.0.remove(k);
        }
        doomed.len() as u64
    }

    pub(super) fn parent_is_dir(&self, p: &RelPath) -> bool {
        p.parent().is_none_or(|d| matches!(self.0.get(&d), Some(MemNode::Dir { .. })))
    }

    pub(super) fn total_file_bytes(&self) -> u64 {
        self.0
            .values()
            .map(|n| match n {
                MemNode::File { bytes, .. } => bytes.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

/// The source half of the fake driver: performs [`SourceWork`] against a [`MemTree`] the way
/// the agent's `LocalSource` does against a directory.
#[derive(Default)]
pub(super) struct SourceFs {
    pub(super) tree: MemTree,
    /// Last path the walk returned.
    pub(super) cursor: Option<RelPath>,
    /// Put each file's blake3 in its entry (`--checksum`), as the agent's scan does.
    pub(super) checksum: bool,
    /// Files a concurrent writer appends to at the moment a segment of them is first read.
    pub(super) touch_on_read: BTreeSet<RelPath>,
    /// Paths that are further names of an earlier file's inode: the walk lists them as
    /// `HardLink { to }` with size 0, as the agent's walker does. Both are files in `tree`.
    pub(super) links: BTreeMap<RelPath, RelPath>,
}

impl SourceFs {
    pub(super) fn perform(&mut self, work: SourceWork) -> SourceOutcome {
        match work {
            SourceWork::Scan { max } => {
                let (mut entries, done) = self.tree.list_after(self.cursor.as_ref(), max);
                if let Some(last) = entries.last() {
                    self.cursor = Some(last.path.clone());
                }
                for e in &mut entries {
                    if let Some(to) = self.links.get(&e.path) {
                        e.kind = EntryKind::HardLink { to: to.clone() };
                        e.size = 0;
                    }
                }
                if self.checksum {
                    for e in entries.iter_mut().filter(|e| e.kind == EntryKind::File) {
                        let bytes = self.tree.node_bytes(&e.path).expect("listed as a file");
                        e.hash = Some(*blake3::hash(bytes).as_bytes());
                    }
                }
                SourceOutcome::Scanned { entries, done, errors: Vec::new() }
            }
            SourceWork::Segment {
                path,
                index,
                len,
                file_len,
                mtime_ns,
                how,
                compress_level,
                keep_if,
                ..
            } => match self.segment(
                &path,
                index,
                len,
                file_len,
                mtime_ns,
                Some(&how),
                compress_level,
            ) {
                // As the agent does: a segment the destination holds is answered with `Kept`.
                SourceOutcome::Segment { hash, .. } if keep_if == Some(hash) => {
                    SourceOutcome::Segment {
                        hash,
                        data: Vec::new(),
                        payload: Payload::Kept,
                        encoding: Encoding::Raw,
                        counts: DeltaCounts::default(),
                    }
                }
                other => other,
            },
            SourceWork::Match { path, index, len, file_len, mtime_ns, coarse, .. } => {
                match self.segment(&path, index, len, file_len, mtime_ns, None, 0) {
                    SourceOutcome::Segment { hash, data, .. } => {
                        let offset = index * SEGMENT_LEN as u64;
                        match delta::match_segment(&coarse, offset, &data) {
                            Ok(matches) => SourceOutcome::Matched { hash, matches },
                            Err(e) => {
                                SourceOutcome::SegmentFailed(FileFailure::Unreadable(e.to_string()))
                            }
                        }
                    }
                    other => other,
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn segment(
        &mut self,
        path: &RelPath,
        index: u64,
        len: usize,
        file_len: u64,
        mtime_ns: i64,
        how: Option<&delta::SegmentHow>,
        level: i32,
    ) -> SourceOutcome {
        let Some(MemNode::File { meta, bytes }) = self.tree.0.get_mut(path) else {
            return SourceOutcome::SegmentFailed(FileFailure::Vanished);
        };
        if self.touch_on_read.remove(path) {
            // The writer changes size and mtime: the agent's before/after fstat would see it.
            bytes.push(b'!');
            meta.mtime_ns += 1_000_000_000;
        }
        if bytes.len() as u64 != file_len || meta.mtime_ns != mtime_ns {
            return SourceOutcome::SegmentFailed(FileFailure::Changed);
        }
        let start = index as usize * SEGMENT_LEN;
        let Some(data) = bytes.get(start..start + len) else {
            return SourceOutcome::SegmentFailed(FileFailure::Changed);
        };
        let hash = hash_segment(index, data, file_len);
        let offset = index * SEGMENT_LEN as u64;
        let how = how.unwrap_or(&delta::SegmentHow::Literal);
        let e = match segment::encode(how, offset, data.to_vec(), level) {
            Ok(e) => e,
            Err(e) => return SourceOutcome::SegmentFailed(FileFailure::Unreadable(e.to_string())),
        };
        let segment::Encoded { payload, encoding, data, counts } = e;
        SourceOutcome::Segment { hash, data, payload, encoding, counts }
    }
}

/// A file being rebuilt: the bytes so far and the segment expected next.
#[derive(Default)]
pub(super) struct Staged {
    pub(super) bytes: Vec<u8>,
    pub(super) next: u64,
}

/// The destination half of the fake driver: performs [`TargetWork`] against a [`MemTree`] the
/// way the agent's `LocalDestination` does against a directory (same checks, same outcomes).
#[derive(Default)]
pub(super) struct DestFs {
    pub(super) tree: MemTree,
    /// Last path the walk returned; the walk sees the live tree, as a real one would.
    pub(super) cursor: Option<RelPath>,
    pub(super) next_ino: u64,
    pub(super) limits: Limits,
    pub(super) bases: HashMap<FileId, Vec<u8>>,
    pub(super) staging: HashMap<FileId, Staged>,
    /// Verified files waiting for their commit.
    pub(super) verified: HashMap<FileId, (Entry, Vec<u8>)>,
    /// Files whose staged content gets one bit flipped before the next `n` verifications, as
    /// a torn read or an MD4 collision would leave it.
    pub(super) corrupt: BTreeMap<RelPath, usize>,
}

impl DestFs {
    pub(super) fn perform(&mut self, work: TargetWork) -> TargetOutcome {
        match work {
            TargetWork::Scan { max } => {
                let (entries, done) = self.tree.list_after(self.cursor.as_ref(), max);
                if let Some(last) = entries.last() {
                    self.cursor = Some(last.path.clone());
                }
                let entries = entries
                    .into_iter()
                    .map(|entry| {
                        self.next_ino += 1;
                        LocalEntry { entry, ino: self.next_ino, nlink: 1, dev: 1 }
                    })
                    .collect();
                TargetOutcome::Scanned { entries, done }
            }
            TargetWork::HashLocal { path, .. } => match self.tree.0.get(&path) {
                Some(MemNode::File { bytes, .. }) => {
                    TargetOutcome::Hashed(*blake3::hash(bytes).as_bytes())
                }
                // Unreadable: a hash that matches nothing, as the agent does.
                _ => TargetOutcome::Hashed([0; 32]),
            },
            TargetWork::Signature { file, path, block_size } => {
                let Some(MemNode::File { bytes, .. }) = self.tree.0.get(&path) else {
                    return TargetOutcome::Signed(None);
                };
                let header = SignatureHeader::new(block_size, bytes.len() as u64);
                if header.validate(&self.limits).is_err() {
                    return TargetOutcome::Signed(None);
                }
                let blocks = delta::signature_blocks(bytes, block_size);
                self.bases.insert(file, bytes.clone());
                TargetOutcome::Signed(Some((header, blocks)))
            }
            TargetWork::Write { file, path, index, payload, encoding, data, len, .. } => {
                self.write(file, &path, index, payload, encoding, data, len)
            }
            TargetWork::Finish { file, entry, hash } => self.finish(file, entry, hash),
            TargetWork::Commit { files } => self.commit(files),
            TargetWork::FineSignature { file, gaps, block_size } => {
                let Some(basis) = self.bases.get(&file) else {
                    return TargetOutcome::BadData("refinement without a basis".into());
                };
                let map = match delta::GapMap::new(&gaps, basis.len() as u64, &self.limits) {
                    Ok(m) => m,
                    Err(e) => return TargetOutcome::BadData(e.to_string()),
                };
                let header = SignatureHeader::new(block_size, map.len());
                TargetOutcome::Signed(Some((header, map.sign(basis, block_size))))
            }
            // This fake keeps no journal: nothing of an earlier round to resume.
            TargetWork::Resume { .. } => TargetOutcome::Resumable(Vec::new()),
            TargetWork::Discard { file, .. } => {
                self.bases.remove(&file);
                self.staging.remove(&file);
                self.verified.remove(&file);
                TargetOutcome::Done(WorkCounts::default())
            }
            TargetWork::Retouch { entry } => match self.tree.0.get_mut(&entry.path) {
                Some(MemNode::File { meta, .. }) => {
                    *meta = entry.meta;
                    TargetOutcome::Done(WorkCounts::default())
                }
                other => TargetOutcome::Fatal(format!("retouch {}: {other:?}", entry.path)),
            },
            TargetWork::MakeDir { entry, replace } => {
                if !self.tree.parent_is_dir(&entry.path) {
                    return TargetOutcome::Fatal(format!("mkdir {}: no parent", entry.path));
                }
                let mut counts = WorkCounts { created: true, ..WorkCounts::default() };
                match self.tree.0.get(&entry.path) {
                    Some(MemNode::Dir { .. }) => counts.created = false,
                    Some(_) if replace => counts.deleted += self.tree.remove_subtree(&entry.path),
                    Some(_) => {
                        return TargetOutcome::Fatal(format!("{} is not a directory", entry.path))
                    }
                    None => {}
                }
                if counts.created {
                    // 0700 and no owner until DirMeta at the end, as the agent does.
                    let meta = Meta { mode: 0o700, uid: 0, gid: 0, mtime_ns: 0 };
                    self.tree.0.insert(entry.path, MemNode::Dir { meta });
                }
                TargetOutcome::Done(counts)
            }
            TargetWork::Link { entry } => {
                let EntryKind::Symlink { target } = entry.kind else {
                    return TargetOutcome::Fatal(format!("{}: not a link", entry.path));
                };
                if !self.tree.parent_is_dir(&entry.path) {
                    return TargetOutcome::Fatal(format!("link {}: no parent", entry.path));
                }
                let deleted = self.replace(&entry.path);
                self.tree.0.insert(entry.path, MemNode::Symlink { target, meta: entry.meta });
                TargetOutcome::Done(WorkCounts { deleted, created: true, ..WorkCounts::default() })
            }
            TargetWork::HardLink { path, to } => {
                let Some(node @ MemNode::File { .. }) = self.tree.0.get(&to).cloned() else {
                    return TargetOutcome::BadData(format!("hard link {path}: {to} is not a file"));
                };
                // Already another name of the same file (as far as a fake without inodes can
                // tell): nothing to do, as the agent skips a link that is already in place.
                if self.tree.0.get(&path) == Some(&node) {
                    return TargetOutcome::Done(WorkCounts::default());
                }
                let deleted = self.replace(&path);
                self.tree.0.insert(path, node);
                TargetOutcome::Done(WorkCounts { deleted, created: true, ..WorkCounts::default() })
            }
            TargetWork::Delete { entry } => {
                let deleted = self.tree.remove_subtree(&entry.entry.path);
                TargetOutcome::Done(WorkCounts { deleted, ..WorkCounts::default() })
            }
            TargetWork::DirMeta { entry } => match self.tree.0.get_mut(&entry.path) {
                Some(MemNode::Dir { meta }) => {
                    *meta = entry.meta;
                    TargetOutcome::Done(WorkCounts::default())
                }
                // The agent opens the directory to set its metadata; a missing one is fatal.
                other => {
                    TargetOutcome::Fatal(format!("setting metadata of {}: {other:?}", entry.path))
                }
            },
            TargetWork::RootMeta { .. } => TargetOutcome::Done(WorkCounts::default()),
            TargetWork::SyncDirs => TargetOutcome::Done(WorkCounts::default()),
        }
    }

    /// Makes room for a new node at `p`: a directory in the way goes with its contents (the
    /// agent's `replace`); anything else is simply renamed over.
    pub(super) fn replace(&mut self, p: &RelPath) -> u64 {
        match self.tree.0.get(p) {
            Some(MemNode::Dir { .. }) => self.tree.remove_subtree(p),
            _ => 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &mut self,
        file: FileId,
        path: &RelPath,
        index: u64,
        payload: Payload,
        encoding: Encoding,
        data: Vec<u8>,
        len: usize,
    ) -> TargetOutcome {
        let mut st = match (self.staging.remove(&file), index) {
            (Some(s), _) => s,
            (None, 0) if self.tree.parent_is_dir(path) => Staged::default(),
            (None, 0) => return TargetOutcome::Fatal(format!("temp file for {path}: no parent")),
            (None, _) => {
                return TargetOutcome::BadData(format!("{path}: segment {index} without its file"))
            }
        };
        // Stricter than the agent (which appends blindly): the session promises in-order writes.
        if st.next != index {
            return TargetOutcome::Fatal(format!(
                "{path}: segment {index} written, {} due",
                st.next
            ));
        }
        if payload == Payload::Kept {
            return TargetOutcome::BadData(format!("{path}: nothing was kept"));
        }
        let basis = self.bases.get(&file).map(Vec::as_slice);
        let rebuilt = match segment::rebuild(payload, encoding, data, len, basis, &self.limits) {
            Ok(r) => r,
            Err(e) => return TargetOutcome::BadData(format!("{path}: segment {index}: {e}")),
        };
        let (out, matched) = (rebuilt.data, rebuilt.matched);
        st.bytes.extend_from_slice(&out);
        st.next += 1;
        self.staging.insert(file, st);
        TargetOutcome::Written { matched }
    }

    pub(super) fn finish(&mut self, file: FileId, entry: Entry, hash: [u8; 32]) -> TargetOutcome {
        self.bases.remove(&file);
        let mut bytes = match self.staging.remove(&file) {
            Some(s) => s.bytes,
            None if entry.size == 0 => Vec::new(),
            None => {
                return TargetOutcome::BadData(format!("{}: finished without data", entry.path))
            }
        };
        if let Some(n) = self.corrupt.get_mut(&entry.path).filter(|n| **n > 0) {
            *n -= 1;
            match bytes.first_mut() {
                Some(b) => *b ^= 1,
                None => bytes.push(0),
            }
        }
        if bytes.len() as u64 != entry.size || *blake3::hash(&bytes).as_bytes() != hash {
            return TargetOutcome::Mismatch;
        }
        self.verified.insert(file, (entry, bytes));
        TargetOutcome::Verified(WorkCounts::default())
    }

    pub(super) fn commit(&mut self, files: Vec<FileId>) -> TargetOutcome {
        let mut counts = WorkCounts::default();
        for id in files {
            let Some((entry, bytes)) = self.verified.remove(&id) else {
                return TargetOutcome::Fatal(format!("commit of file {id}, never verified"));
            };
            if !self.tree.parent_is_dir(&entry.path) {
                return TargetOutcome::Fatal(format!("commit {}: no parent", entry.path));
            }
            counts.deleted += self.replace(&entry.path);
            self.tree.0.insert(entry.path, MemNode::File { meta: entry.meta, bytes });
        }
        TargetOutcome::Committed(counts)
    }
}
