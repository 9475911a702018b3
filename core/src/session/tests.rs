//! Both sessions driven against each other in memory, with a fake filesystem on each side.
//!
//! The harness follows quinn-proto's `tests/util.rs` `Pair`: a [`Pair`] owns a
//! [`SourceSession`], a [`TargetSession`] and a [`MemTree`] for each side. It carries every
//! message through `message::encode`/`decode` (so the postcard wire format is exercised, with
//! the receiver's limits), performs the work each session asks for synchronously (optionally
//! completing it in a seeded random order, to stand in for the agent's thread pools), and turns
//! a round that stops making progress into a test failure instead of a hang. It also checks,
//! from the outside, the flow-control promises of the protocol: the source never sends manifest
//! entries or segment bytes beyond the credit the target granted it.
//!
//! Hostile peers are played by feeding crafted messages straight into a lone session
//! ([`LoneTarget`], [`LoneSource`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;

use super::source::message_name;
use super::{
    Action, Itemized, ProtocolError, SessionError, SessionOptions, SourceOutcome, SourceSession,
    SourceWork, TargetOutcome, TargetSession, TargetWork, WorkCounts, WorkId,
};
use crate::delta::{self, BlockSize, DeltaCounts, DeltaError, SignatureHeader};
use crate::entry::{Entry, EntryKind, LocalEntry, Meta};
use crate::hash::hash_segment;
use crate::limits::{LimitExceeded, Limits};
use crate::message::{
    self, Encoding, FileFailure, FileId, Message, Payload, PROTOCOL_MIN, PROTOCOL_VERSION,
};
use crate::path::RelPath;
use crate::rng::SplitMix64;
use crate::segment::{self, seg_len};
use crate::SEGMENT_LEN;

/// Harness steps (one completed work item, or one exchange of messages) before a round is
/// declared stuck. The largest round here (1000 files through a one-file window) takes a few
/// thousand.
const MAX_STEPS: usize = 200_000;

/// Size of the big test file: 17 MiB and change, so it spans three segments (8 + 8 + 1 MiB)
/// and the last one is partial.
const BIG: usize = (17 << 20) + 12_345;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn path(s: &str) -> RelPath {
    RelPath::new(s).expect("test paths are valid")
}

fn meta(mode: u32, mtime_s: i64) -> Meta {
    Meta { mode, uid: 1000, gid: 1000, mtime_ns: mtime_s * 1_000_000_000 }
}

/// `n` incompressible bytes: zstd cannot shrink them, so literal counts mean what they say.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    SplitMix64::bytes(seed, n)
}

/// `n` bytes of repetitive text: compressible, so the zstd path is exercised too.
fn text(n: usize, tag: &str) -> Vec<u8> {
    format!("{tag}: the quick brown fox jumps over the lazy dog\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(n)
        .collect()
}

fn file_entry(p: &str, size: u64) -> Entry {
    Entry {
        path: path(p),
        kind: EntryKind::File,
        size,
        meta: meta(0o644, 1),
        xattrs: Vec::new(),
        hash: None,
    }
}

fn dir_entry(p: &str) -> Entry {
    Entry { kind: EntryKind::Dir, size: 0, ..file_entry(p, 0) }
}

fn peer_hello() -> Message {
    Message::Hello { min: PROTOCOL_MIN, max: PROTOCOL_VERSION, features: 0 }
}

/// `m` as the peer receives it: encoded, then decoded with the receiver's limits.
fn wire(m: &Message, limits: &Limits) -> Result<Message, String> {
    let back = message::decode(&message::encode(m), limits)
        .map_err(|e| format!("{} does not decode: {e}", message_name(m)))?;
    if back != *m {
        return Err(format!("{} changed on the wire", message_name(m)));
    }
    Ok(back)
}

/// `m` without its bulk payload, for the message log.
fn summary(m: &Message) -> Message {
    match m {
        Message::Segment { file, index, payload, encoding, .. } => Message::Segment {
            file: *file,
            index: *index,
            payload: *payload,
            encoding: *encoding,
            data: Vec::new(),
        },
        Message::SignaturePiece { file, last, .. } => {
            Message::SignaturePiece { file: *file, blocks: Vec::new(), last: *last }
        }
        m => m.clone(),
    }
}

fn target_work_name(w: &TargetWork) -> (&'static str, Option<RelPath>) {
    match w {
        TargetWork::Scan { .. } => ("Scan", None),
        TargetWork::HashLocal { path, .. } => ("HashLocal", Some(path.clone())),
        TargetWork::Signature { path, .. } => ("Signature", Some(path.clone())),
        TargetWork::Resume { path, .. } => ("Resume", Some(path.clone())),
        TargetWork::FineSignature { .. } => ("FineSignature", None),
        TargetWork::Write { path, .. } => ("Write", Some(path.clone())),
        TargetWork::Finish { entry, .. } => ("Finish", Some(entry.path.clone())),
        TargetWork::Commit { .. } => ("Commit", None),
        TargetWork::Discard { .. } => ("Discard", None),
        TargetWork::Retouch { entry } => ("Retouch", Some(entry.path.clone())),
        TargetWork::MakeDir { entry, .. } => ("MakeDir", Some(entry.path.clone())),
        TargetWork::Link { entry } => ("Link", Some(entry.path.clone())),
        TargetWork::HardLink { path, .. } => ("HardLink", Some(path.clone())),
        TargetWork::Delete { entry } => ("Delete", Some(entry.entry.path.clone())),
        TargetWork::DirMeta { entry } => ("DirMeta", Some(entry.path.clone())),
        TargetWork::RootMeta { .. } => ("RootMeta", None),
        TargetWork::SyncDirs => ("SyncDirs", None),
    }
}

// ---------------------------------------------------------------------------------------------
// The fake filesystem
// ---------------------------------------------------------------------------------------------

/// A test fake standing in for the agent's real filesystem driver (`LocalSource` and
/// `LocalDestination` in `ferry-agent`): a whole tree in memory, keyed by [`RelPath`], so that
/// iterating it yields exactly the order the agent's walker produces (a directory, then its
/// contents, then its later siblings). It models only what the sessions can observe: kinds,
/// sizes, contents and metadata; no inodes, xattrs, special files or mount points.
#[derive(Clone, Default, PartialEq, Eq)]
struct MemTree(BTreeMap<RelPath, MemNode>);

/// One node of a [`MemTree`].
#[derive(Clone, PartialEq, Eq)]
enum MemNode {
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
    fn entry(&self, path: RelPath) -> Entry {
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
    fn dir(&mut self, p: &str, meta: Meta) -> &mut Self {
        self.0.insert(path(p), MemNode::Dir { meta });
        self
    }

    fn file(&mut self, p: &str, meta: Meta, bytes: Vec<u8>) -> &mut Self {
        self.0.insert(path(p), MemNode::File { meta, bytes });
        self
    }

    fn symlink(&mut self, p: &str, target: &str, meta: Meta) -> &mut Self {
        self.0.insert(path(p), MemNode::Symlink { target: target.as_bytes().to_vec(), meta });
        self
    }

    fn file_mut(&mut self, p: &str) -> (&mut Meta, &mut Vec<u8>) {
        match self.0.get_mut(&path(p)) {
            Some(MemNode::File { meta, bytes }) => (meta, bytes),
            other => panic!("{p} is not a file: {other:?}"),
        }
    }

    fn bytes(&self, p: &str) -> &[u8] {
        self.node_bytes(&path(p)).unwrap_or_else(|| panic!("{p} is not a file"))
    }

    fn node_bytes(&self, p: &RelPath) -> Option<&[u8]> {
        match self.0.get(p) {
            Some(MemNode::File { bytes, .. }) => Some(bytes),
            _ => None,
        }
    }

    /// Up to `max` entries after `cursor`, in walk order, and whether the walk is then done.
    fn list_after(&self, cursor: Option<&RelPath>, max: usize) -> (Vec<Entry>, bool) {
        let lower = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = self.0.range::<RelPath, _>((lower, Bound::Unbounded));
        let batch: Vec<Entry> = it.by_ref().take(max).map(|(p, n)| n.entry(p.clone())).collect();
        (batch, it.next().is_none())
    }

    /// Removes `p` and everything beneath it; returns how many nodes went.
    fn remove_subtree(&mut self, p: &RelPath) -> u64 {
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

    fn parent_is_dir(&self, p: &RelPath) -> bool {
        p.parent().is_none_or(|d| matches!(self.0.get(&d), Some(MemNode::Dir { .. })))
    }

    fn total_file_bytes(&self) -> u64 {
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
struct SourceFs {
    tree: MemTree,
    /// Last path the walk returned.
    cursor: Option<RelPath>,
    /// Put each file's blake3 in its entry (`--checksum`), as the agent's scan does.
    checksum: bool,
    /// Files a concurrent writer appends to at the moment a segment of them is first read.
    touch_on_read: BTreeSet<RelPath>,
    /// Paths that are further names of an earlier file's inode: the walk lists them as
    /// `HardLink { to }` with size 0, as the agent's walker does. Both are files in `tree`.
    links: BTreeMap<RelPath, RelPath>,
}

impl SourceFs {
    fn perform(&mut self, work: SourceWork) -> SourceOutcome {
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
                SourceOutcome::Scanned { entries, done }
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
    fn segment(
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
struct Staged {
    bytes: Vec<u8>,
    next: u64,
}

/// The destination half of the fake driver: performs [`TargetWork`] against a [`MemTree`] the
/// way the agent's `LocalDestination` does against a directory (same checks, same outcomes).
#[derive(Default)]
struct DestFs {
    tree: MemTree,
    /// Last path the walk returned; the walk sees the live tree, as a real one would.
    cursor: Option<RelPath>,
    next_ino: u64,
    limits: Limits,
    bases: HashMap<FileId, Vec<u8>>,
    staging: HashMap<FileId, Staged>,
    /// Verified files waiting for their commit.
    verified: HashMap<FileId, (Entry, Vec<u8>)>,
    /// Files whose staged content gets one bit flipped before the next `n` verifications, as
    /// a torn read or an MD4 collision would leave it.
    corrupt: BTreeMap<RelPath, usize>,
}

impl DestFs {
    fn perform(&mut self, work: TargetWork) -> TargetOutcome {
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
                let fine = map.gather(basis);
                let header = SignatureHeader::new(block_size, fine.len() as u64);
                TargetOutcome::Signed(Some((header, delta::signature_blocks(&fine, block_size))))
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
    fn replace(&mut self, p: &RelPath) -> u64 {
        match self.tree.0.get(p) {
            Some(MemNode::Dir { .. }) => self.tree.remove_subtree(p),
            _ => 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
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

    fn finish(&mut self, file: FileId, entry: Entry, hash: [u8; 32]) -> TargetOutcome {
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

    fn commit(&mut self, files: Vec<FileId>) -> TargetOutcome {
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

// ---------------------------------------------------------------------------------------------
// The pair
// ---------------------------------------------------------------------------------------------

/// Work asked by either session and not yet performed.
enum AnyWork {
    Src(WorkId, SourceWork),
    Dst(WorkId, TargetWork),
}

/// Why [`Pair::drive`] stopped short of a successful round.
enum DriveError {
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
struct Log {
    /// Messages source → target, bulk payloads dropped.
    to_dst: Vec<Message>,
    /// Messages target → source, bulk payloads dropped.
    to_src: Vec<Message>,
    /// Every piece of work the target asked for: kind and path.
    dst_work: Vec<(&'static str, Option<RelPath>)>,
    /// Itemized plan lines.
    events: Vec<Itemized>,
}

/// Flow-control accounting from what crossed the wire (not from the sessions' own counters).
#[derive(Default)]
struct Flow {
    /// The first credit grant: the initial window.
    initial_entries: Option<u64>,
    entries_granted: u64,
    entries_sent: u64,
    bytes_granted: u64,
    bytes_sent: u64,
    /// Size of each manifest entry by id (0 for non-files).
    sizes: Vec<u64>,
    /// Files the target asked for and has not settled yet.
    wanted: BTreeSet<FileId>,
    /// Most manifest entries delivered beyond the credit the target had handed back.
    peak_entries_ahead: u64,
    /// Most files wanted and not yet settled at once.
    peak_files: usize,
}

/// A source and a target session, their fake filesystems, and the wire between them.
struct Pair {
    src: SourceSession,
    dst: TargetSession,
    src_fs: SourceFs,
    dst_fs: DestFs,
    queue: VecDeque<AnyWork>,
    /// `Some`: complete work in a seeded random order instead of first-asked-first-done.
    shuffle: Option<SplitMix64>,
    limits: Limits,
    log: Log,
    flow: Flow,
    src_err: Option<SessionError>,
    dst_err: Option<SessionError>,
}

impl Pair {
    fn new(src: MemTree, dst: MemTree, opts: SessionOptions) -> Pair {
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

    fn shuffled(mut self, seed: u64) -> Pair {
        self.shuffle = Some(SplitMix64::new(seed));
        self
    }

    /// Runs the round to its end: success, a session error, or a harness failure.
    fn drive(&mut self) -> Result<(), DriveError> {
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

    fn into_trees(self) -> (MemTree, MemTree) {
        (self.src_fs.tree, self.dst_fs.tree)
    }

    /// How many times the target asked for work of `kind`.
    fn asked(&self, kind: &str) -> usize {
        self.log.dst_work.iter().filter(|(k, _)| *k == kind).count()
    }

    /// Whether the target asked for work of `kind` on `p`.
    fn asked_for(&self, kind: &str, p: &str) -> bool {
        let p = path(p);
        self.log.dst_work.iter().any(|(k, q)| *k == kind && q.as_ref() == Some(&p))
    }

    fn sent_to_dst(&self, name: &str) -> usize {
        self.log.to_dst.iter().filter(|m| message_name(m) == name).count()
    }

    /// The file id the source gave `p`, from the manifest that crossed the wire.
    fn id_of(&self, p: &str) -> FileId {
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
    fn wants(&self, p: &str) -> Vec<bool> {
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

    fn segments_for(&self, p: &str) -> Vec<(u64, Payload)> {
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
fn round(src: MemTree, dst: MemTree, opts: SessionOptions) -> Pair {
    let mut pair = Pair::new(src, dst, opts);
    pair.drive().expect("round completes");
    pair
}

/// Asserts the round ended well on both sides and that the two accounts agree.
fn assert_clean(pair: &Pair) {
    assert!(pair.dst.succeeded(), "target did not finish: {:?}", pair.dst.error());
    assert!(pair.src.error().is_none(), "source failed: {:?}", pair.src.error());
    let dones = pair.log.to_src.iter().filter(|m| matches!(m, Message::Done { .. })).count();
    assert_eq!(dones, 1, "the source was told the round is done, once");
    assert_eq!(pair.src.target_stats(), Some(pair.dst.stats()), "Done carries the target's stats");
    assert!(pair.dst_fs.staging.is_empty(), "staged files left behind");
    assert!(pair.dst_fs.bases.is_empty(), "basis files left open");
}

// ---------------------------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------------------------

/// Nested dirs, an empty dir, an empty file, a small text file, a symlink, a mid-size text
/// file; `big` adds a 3-segment file of noise.
fn sample_tree(big: bool) -> MemTree {
    let mut t = MemTree::default();
    t.dir("a", meta(0o755, 100))
        .dir("a/b", meta(0o750, 101))
        .file("a/b/deep.txt", meta(0o644, 102), text(300, "deep"))
        .dir("a/c", meta(0o700, 103))
        .file("a/empty", meta(0o600, 104), Vec::new())
        .symlink("link", "a/b/deep.txt", meta(0o777, 105))
        .file("z.txt", meta(0o644, 106), text(5000, "z"));
    if big {
        t.file("big.bin", meta(0o644, 107), noise(BIG, 1));
    }
    t
}

/// `dirs` directories of `per_dir` small files each.
fn many_files(dirs: usize, per_dir: usize) -> MemTree {
    let mut t = MemTree::default();
    for d in 0..dirs {
        t.dir(&format!("d{d:02}"), meta(0o755, 10));
        for f in 0..per_dir {
            t.file(
                &format!("d{d:02}/f{f:04}"),
                meta(0o644, 11),
                text(16 + f % 7, &format!("{d}/{f}")),
            );
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Rounds
// ---------------------------------------------------------------------------------------------

#[test]
fn initial_round_copies_the_tree_exactly() {
    let src = sample_tree(true);
    let pair = round(src.clone(), MemTree::default(), SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_new, 4, "deep.txt, empty, z.txt, big.bin");
    assert_eq!(s.dirs_created, 3, "a, a/b, a/c");
    assert_eq!(s.links_created, 1);
    assert_eq!((s.files_changed, s.files_unchanged, s.files_metadata), (0, 0, 0));
    assert_eq!((s.files_deleted, s.files_failed, s.files_resent), (0, 0, 0));
    assert_eq!(s.literal_bytes, src.total_file_bytes());
    assert_eq!(s.matched_bytes, 0);

    let ss = pair.src.stats();
    assert_eq!(ss.entries_scanned, 8);
    assert_eq!(ss.files_scanned, 4);
    assert_eq!(ss.source_bytes, src.total_file_bytes());
    assert_eq!(ss.literal_bytes, src.total_file_bytes());
    // The text compresses, the noise does not: what went on the wire is less than the data,
    // but not by much.
    assert!(ss.payload_bytes < ss.literal_bytes, "{ss:?}");
    assert!(ss.payload_bytes > BIG as u64, "{ss:?}");

    // The big file went as three literal segments, in order; the empty file as none.
    let lit = Payload::Literal;
    assert_eq!(pair.segments_for("big.bin"), [(0, lit), (1, lit), (2, lit)]);
    assert!(pair.segments_for("a/empty").is_empty());
    // New files are wanted whole: there is nothing to sign.
    assert_eq!(pair.wants("big.bin"), [false]);
    assert_eq!(pair.asked("Signature"), 0);
    assert_eq!(pair.asked("MakeDir"), 3);
    assert_eq!(pair.asked("Finish"), 4);
    assert_eq!(pair.asked("SyncDirs"), 1);
}

#[test]
fn initial_round_is_exact_whatever_order_work_completes_in() {
    let src = sample_tree(true);
    for seed in 1..=3 {
        let opts = SessionOptions { max_inflight_work: 8, ..SessionOptions::default() };
        let mut pair = Pair::new(src.clone(), MemTree::default(), opts).shuffled(seed);
        pair.drive().unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_clean(&pair);
        assert_eq!(pair.dst_fs.tree, src, "seed {seed}");
        assert_eq!(pair.dst.stats().files_new, 4, "seed {seed}");
    }
}

#[test]
fn incremental_round_sends_a_delta() {
    let first = round(sample_tree(true), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();

    // 1000 bytes inserted in the middle of segment 1 shift everything after them, segment 2
    // included.
    let (m, big) = src.file_mut("big.bin");
    big.splice(12 << 20..12 << 20, noise(1000, 2));
    m.mtime_ns += 10_000_000_000;
    let (m, z) = src.file_mut("z.txt");
    z[2500..2520].copy_from_slice(b"an edit in the midst");
    m.mtime_ns += 10_000_000_000;
    let (m, deep) = src.file_mut("a/b/deep.txt");
    deep[..4].copy_from_slice(b"DEEP");
    m.mtime_ns += 10_000_000_000;

    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_changed, 3);
    assert_eq!(s.files_unchanged, 2, "a/empty and the symlink");
    assert_eq!((s.files_new, s.dirs_created, s.links_created), (0, 0, 0));
    let big_len = src.bytes("big.bin").len() as u64;
    assert!(s.literal_bytes * 20 < big_len, "literal {} of {big_len}", s.literal_bytes);
    assert!(pair.src.stats().literal_bytes * 20 < big_len, "{:?}", pair.src.stats());
    assert!(s.matched_bytes > big_len - big_len / 20, "{s:?}");
    assert!(s.signature_bytes > 0);

    // Files with a basis of 1 KiB or more are signed and sent as deltas; smaller ones whole.
    let d = Payload::Delta;
    assert_eq!(pair.wants("big.bin"), [true]);
    assert_eq!(pair.segments_for("big.bin"), [(0, d), (1, d), (2, d)]);
    assert_eq!(pair.wants("z.txt"), [true]);
    assert_eq!(pair.wants("a/b/deep.txt"), [false]);
    assert_eq!(pair.segments_for("a/b/deep.txt"), [(0, Payload::Literal)]);
}

#[test]
fn unchanged_round_sends_no_data() {
    let first = round(sample_tree(true), MemTree::default(), SessionOptions::default());
    let (src, dst) = first.into_trees();
    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_unchanged, 5, "four files and the symlink");
    assert_eq!((s.files_new, s.files_changed, s.files_metadata), (0, 0, 0));
    assert_eq!((s.dirs_created, s.links_created, s.files_deleted), (0, 0, 0));
    assert_eq!((s.literal_bytes, s.matched_bytes, s.payload_bytes), (0, 0, 0));
    assert_eq!(pair.src.stats().literal_bytes, 0);
    assert_eq!(pair.sent_to_dst("Segment"), 0);
    assert!(!pair.log.to_src.iter().any(|m| matches!(m, Message::Want { .. })));
    for kind in ["Signature", "Write", "Finish", "MakeDir", "Link", "Retouch", "Delete"] {
        assert_eq!(pair.asked(kind), 0, "{kind}");
    }
    assert!(pair.log.events.is_empty(), "{:?}", pair.log.events);
}

#[test]
fn metadata_only_change_makes_a_new_inode_without_data() {
    let first = round(sample_tree(false), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();
    src.file_mut("z.txt").0.mode = 0o600;

    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.dst.stats().files_metadata, 1);
    assert!(pair.asked_for("Retouch", "z.txt"));
    assert_eq!(pair.sent_to_dst("Segment"), 0);
    assert_eq!(
        pair.log.events,
        [Itemized { path: path("z.txt"), action: Action::Metadata, kind: "file" }]
    );
}

#[test]
fn type_changes_replace_what_is_in_the_way() {
    let mut src = MemTree::default();
    src.dir("x", meta(0o755, 1))
        .file("x/in.txt", meta(0o644, 2), text(100, "in"))
        .file("y", meta(0o644, 3), text(2000, "y"))
        .symlink("w", "x", meta(0o777, 4));
    let mut dst = MemTree::default();
    dst.file("x", meta(0o644, 5), text(50, "old x"))
        .dir("y", meta(0o755, 6))
        .file("y/old", meta(0o644, 7), text(10, "old"))
        .dir("y/sub", meta(0o755, 8))
        .file("y/sub/older", meta(0o644, 9), text(10, "older"))
        .dir("w", meta(0o755, 10))
        .file("w/q", meta(0o644, 11), text(10, "q"));

    // Without --delete too: what stands in the way of a source entry always goes.
    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    let s = pair.dst.stats();
    assert_eq!((s.dirs_created, s.files_new, s.links_created), (1, 2, 1));
    // The old contents of y/ and w/ were never planned on their own.
    assert!(!pair.log.dst_work.iter().any(|(k, _)| *k == "Delete"));
    let ev = |p: &str, action, kind| Itemized { path: path(p), action, kind };
    assert_eq!(
        pair.log.events,
        [
            ev("w", Action::Changed, "symlink"),
            ev("x", Action::New, "dir"),
            ev("x/in.txt", Action::New, "file"),
            ev("y", Action::New, "file"),
        ]
    );
}

#[test]
fn delete_removes_extraneous_entries_only_when_asked() {
    let src = sample_tree(false);
    let mut dst = src.clone();
    dst.file("a/b/stray.txt", meta(0o644, 1), text(10, "stray"))
        .dir("olddir", meta(0o755, 2))
        .file("olddir/x", meta(0o644, 3), text(10, "x"))
        .dir("olddir/sub", meta(0o755, 4))
        .file("olddir/sub/y", meta(0o644, 5), text(10, "y"));

    let keep = round(src.clone(), dst.clone(), SessionOptions::default());
    assert_clean(&keep);
    assert_eq!(keep.dst_fs.tree, dst, "without --delete nothing goes");
    assert_eq!(keep.dst.stats().files_deleted, 0);
    assert_eq!(keep.asked("Delete"), 0);

    let opts = SessionOptions { delete: true, ..SessionOptions::default() };
    let del = round(src.clone(), dst, opts);
    assert_clean(&del);
    assert_eq!(del.dst_fs.tree, src);
    // One Delete per extraneous top: the directory takes its contents with it.
    assert_eq!(del.asked("Delete"), 2);
    assert!(del.asked_for("Delete", "olddir") && del.asked_for("Delete", "a/b/stray.txt"));
    assert_eq!(del.dst.stats().files_deleted, 5, "stray.txt, olddir and its 3 entries");
    let deletes: Vec<&str> =
        del.log.events.iter().filter(|e| e.action == Action::Delete).map(|e| e.kind).collect();
    assert_eq!(deletes, ["file", "dir"]);
}

#[test]
fn checksum_detects_a_change_with_the_same_size_and_mtime() {
    let first = round(sample_tree(false), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();
    // Same length, same mtime: invisible to the quick check.
    src.file_mut("z.txt").1[100..105].copy_from_slice(b"SNEAK");

    let quick = round(src.clone(), dst.clone(), SessionOptions::default());
    assert_clean(&quick);
    assert_eq!(quick.dst.stats().files_changed, 0);
    assert_ne!(quick.dst_fs.tree.bytes("z.txt"), src.bytes("z.txt"), "the quick check misses it");

    let opts = SessionOptions { checksum: true, ..SessionOptions::default() };
    let sum = round(src.clone(), dst, opts);
    assert_clean(&sum);
    assert_eq!(sum.dst_fs.tree, src);
    let s = sum.dst.stats();
    assert_eq!(s.files_changed, 1);
    assert_eq!(s.files_unchanged, 3, "deep.txt, empty, and the symlink");
    // Every destination file of the same size was hashed (the empty one too).
    assert_eq!(sum.asked("HashLocal"), 3);
    assert_eq!(sum.wants("z.txt"), [true]);
}

#[test]
fn dry_run_itemizes_and_writes_nothing() {
    let src = sample_tree(false);
    let mut dst = MemTree::default();
    // The same directories (with the same metadata), one file changed, one missing, the
    // symlink missing, two extraneous entries.
    dst.dir("a", meta(0o755, 100))
        .dir("a/b", meta(0o750, 101))
        .file("a/b/deep.txt", meta(0o644, 50), text(300, "stale"))
        .dir("a/c", meta(0o700, 103))
        .file("old.txt", meta(0o644, 1), text(10, "old"))
        .dir("olddir", meta(0o755, 2))
        .file("olddir/x", meta(0o644, 3), text(10, "x"))
        .file("z.txt", meta(0o644, 106), text(5000, "z"));
    let opts = SessionOptions { dry_run: true, delete: true, ..SessionOptions::default() };
    let pair = round(src, dst.clone(), opts);
    assert_clean(&pair);

    let ev = |p: &str, action, kind| Itemized { path: path(p), action, kind };
    assert_eq!(
        pair.log.events,
        [
            ev("a/b/deep.txt", Action::Changed, "file"),
            ev("a/empty", Action::New, "file"),
            ev("link", Action::New, "symlink"),
            ev("old.txt", Action::Delete, "file"),
            ev("olddir", Action::Delete, "dir"),
        ]
    );
    let s = pair.dst.stats();
    assert_eq!((s.files_changed, s.files_new, s.links_created, s.files_unchanged), (1, 1, 1, 1));
    assert_eq!(s.files_deleted, 2);
    assert_eq!(pair.dst_fs.tree, dst, "the destination is untouched");
    for kind in [
        "Write",
        "Finish",
        "MakeDir",
        "Delete",
        "Retouch",
        "Link",
        "HardLink",
        "SyncDirs",
        "Signature",
    ] {
        assert_eq!(pair.asked(kind), 0, "{kind} asked in a dry run");
    }
    assert_eq!(pair.sent_to_dst("Segment"), 0);
}

#[test]
fn dry_run_sets_no_directory_metadata() {
    let src = sample_tree(false);
    let mut dst = MemTree::default();
    // `a` exists with other metadata; `a/b` and `a/c` do not exist at all.
    dst.dir("a", meta(0o700, 1));
    let opts = SessionOptions { dry_run: true, ..SessionOptions::default() };
    let mut pair = Pair::new(src, dst.clone(), opts);
    let r = pair.drive();
    assert!(r.is_ok(), "a dry run fails: {r:?}");
    assert_eq!(pair.asked("DirMeta"), 0);
    assert_eq!(pair.dst_fs.tree, dst, "a dry run changed the destination");
}

#[test]
fn a_file_changing_while_read_fails_alone_and_is_retried_next_round() {
    let src = sample_tree(true);
    let opts = SessionOptions { max_inflight_work: 8, ..SessionOptions::default() };
    let mut pair = Pair::new(src, MemTree::default(), opts).shuffled(7);
    pair.src_fs.touch_on_read.insert(path("big.bin"));
    pair.drive().expect("the round completes");
    assert_clean(&pair);

    assert_eq!(pair.dst.stats().files_failed, 1);
    assert_eq!(pair.src.stats().files_failed, 1);
    assert!(!pair.asked_for("Finish", "big.bin"), "a failed file was committed");
    assert_eq!(pair.asked("Discard"), 1);
    let id = pair.id_of("big.bin");
    assert!(pair.log.to_dst.iter().any(|m| matches!(
        m,
        Message::FileFailed { file, reason: FileFailure::Changed } if *file == id
    )));
    // Everything else arrived.
    let (src, dst) = pair.into_trees();
    let mut want = src.clone();
    want.0.remove(&path("big.bin"));
    assert_eq!(dst, want);

    // The next round sends the file as it now is.
    let again = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&again);
    assert_eq!(again.dst_fs.tree, src);
    assert_eq!(again.dst.stats().files_new, 1);
}

#[test]
fn a_verification_mismatch_resends_the_file_whole() {
    let first = round(sample_tree(true), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();
    let (m, big) = src.file_mut("big.bin");
    big[5 << 20] ^= 0xff;
    m.mtime_ns += 1;

    let mut pair = Pair::new(src.clone(), dst, SessionOptions::default());
    pair.dst_fs.corrupt.insert(path("big.bin"), 1);
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_resent, 1);
    assert_eq!(s.files_failed, 0);
    // First as a delta against the basis, then whole.
    assert_eq!(pair.wants("big.bin"), [true, false]);
    let segs = pair.segments_for("big.bin");
    assert_eq!(segs.len(), 6, "{segs:?}");
    assert!(segs[..3].iter().all(|s| s.1 == Payload::Delta), "{segs:?}");
    assert!(segs[3..].iter().all(|s| s.1 == Payload::Literal), "{segs:?}");
    assert!(s.literal_bytes >= BIG as u64, "{s:?}");
}

#[test]
fn a_second_mismatch_gives_the_file_up_for_the_round() {
    let src = sample_tree(false);
    let mut pair = Pair::new(src.clone(), MemTree::default(), SessionOptions::default());
    pair.dst_fs.corrupt.insert(path("z.txt"), 2);
    pair.drive().expect("round completes");
    assert_clean(&pair);

    let s = pair.dst.stats();
    assert_eq!((s.files_failed, s.files_resent), (1, 0));
    assert_eq!(pair.wants("z.txt"), [false, false]);
    let id = pair.id_of("z.txt");
    assert!(pair.log.to_src.iter().any(|m| matches!(m, Message::Settled { file } if *file == id)));
    let mut want = src;
    want.0.remove(&path("z.txt"));
    assert_eq!(pair.dst_fs.tree, want, "nothing unverified is in place");
}

/// `data` with a second name `data-link`, and a file between them in walk order.
fn linked_tree() -> (MemTree, BTreeMap<RelPath, RelPath>) {
    let mut t = MemTree::default();
    t.file("data", meta(0o644, 1), noise(3000, 5))
        .file("data-link", meta(0o644, 1), noise(3000, 5))
        .file("data.txt", meta(0o644, 2), text(40, "between"));
    (t, BTreeMap::from([(path("data-link"), path("data"))]))
}

#[test]
fn hard_links_are_made_after_their_files_and_only_once() {
    let (src, links) = linked_tree();
    let mut pair = Pair::new(src.clone(), MemTree::default(), SessionOptions::default());
    pair.src_fs.links = links.clone();
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.dst.stats().links_created, 1);
    assert_eq!(pair.dst.stats().files_new, 2, "the link is not a file of its own");
    assert!(pair.segments_for("data-link").is_empty(), "a link's content is not sent");
    // The link is made after every file is in place.
    let first_link = pair.log.dst_work.iter().position(|(k, _)| *k == "HardLink");
    let last_finish = pair.log.dst_work.iter().rposition(|(k, _)| *k == "Finish");
    assert!(first_link > last_finish, "{:?}", pair.log.dst_work);

    let (src, dst) = pair.into_trees();
    let mut again = Pair::new(src.clone(), dst, SessionOptions::default());
    again.src_fs.links = links;
    again.drive().expect("second round completes");
    assert_clean(&again);
    assert_eq!(again.dst_fs.tree, src);
    assert_eq!(again.dst.stats().links_created, 0, "the link was already in place");
}

#[test]
fn a_hard_link_to_a_file_that_failed_does_not_abort_the_round() {
    let (src, links) = linked_tree();
    let mut pair = Pair::new(src, MemTree::default(), SessionOptions::default());
    pair.src_fs.links = links;
    pair.src_fs.touch_on_read.insert(path("data"));
    let r = pair.drive();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(pair.dst.stats().files_failed, 1);
    assert_eq!(pair.dst_fs.tree.bytes("data.txt"), text(40, "between"));
}

// ---------------------------------------------------------------------------------------------
// Flow control
// ---------------------------------------------------------------------------------------------

#[test]
fn tiny_entry_window_bounds_what_the_source_sends() {
    let src = many_files(10, 100);
    let opts = SessionOptions { window_entries: 16, scan_batch: 8, ..SessionOptions::default() };
    // `drive` fails the moment the source sends an entry beyond its credit; the target would
    // too (ProtocolError::Credit). A clean round with this window proves both agree.
    let pair = round(src.clone(), MemTree::default(), opts);
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.dst.stats().files_new, 1000);
    assert!(pair.flow.peak_entries_ahead <= 16);
    // Scans never exceed the batch size.
    for m in &pair.log.to_dst {
        if let Message::Entries(v) = m {
            assert!(!v.is_empty() && v.len() <= 8, "batch of {}", v.len());
        }
    }
    assert_eq!(pair.flow.entries_sent, 1010);
}

#[test]
fn one_file_window_keeps_one_file_in_flight() {
    let src = many_files(10, 100);
    let opts = SessionOptions {
        window_entries: 16,
        scan_batch: 8,
        window_files: 1,
        max_inflight_work: 4,
        ..SessionOptions::default()
    };
    let mut pair = Pair::new(src.clone(), MemTree::default(), opts).shuffled(3);
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.flow.peak_files, 1);
    // With the target merging one file at a time the source runs into its entry credit: the
    // window was exercised, not merely never reached.
    assert_eq!(pair.flow.peak_entries_ahead, 16);

    // And a second round through the same tiny windows finds everything unchanged.
    let (src, dst) = pair.into_trees();
    let opts = SessionOptions {
        window_entries: 16,
        scan_batch: 8,
        window_files: 1,
        ..SessionOptions::default()
    };
    let again = round(src.clone(), dst, opts);
    assert_clean(&again);
    assert_eq!(again.dst.stats().files_unchanged, 1000);
    assert_eq!(again.sent_to_dst("Segment"), 0);
}

#[test]
fn byte_window_admits_a_file_larger_than_the_window() {
    // window_bytes is raised to two segments; a three-segment file must still get through.
    let src = sample_tree(true);
    let opts =
        SessionOptions { window_bytes: 1, max_inflight_work: 16, ..SessionOptions::default() };
    let mut pair = Pair::new(src.clone(), MemTree::default(), opts).shuffled(11);
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert!(pair.flow.bytes_sent <= pair.flow.bytes_granted);
}

#[test]
fn scan_batch_of_one_does_not_stall() {
    let src = sample_tree(false);
    let opts = SessionOptions { scan_batch: 1, ..SessionOptions::default() };
    let mut pair = Pair::new(src.clone(), src.clone(), opts);
    let r = pair.drive();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(pair.dst_fs.tree, src);
}

// ---------------------------------------------------------------------------------------------
// Random trees
// ---------------------------------------------------------------------------------------------

/// A random node for `p`: mostly files (empty, small text, or noise big enough to be sent as a
/// delta), some directories and symlinks.
fn random_node(rng: &mut SplitMix64, salt: u64) -> MemNode {
    let m = meta(0o600 | (rng.index(2) as u32 * 0o044), 1000 + rng.index(3) as i64);
    match rng.index(10) {
        0 | 1 => MemNode::Dir { meta: m },
        // A symlink's own mode is always 0777 on Linux; the sessions rightly ignore it.
        2 => MemNode::Symlink {
            target: format!("t{}", rng.index(4)).into_bytes(),
            meta: Meta { mode: 0o777, ..m },
        },
        3 => MemNode::File { meta: m, bytes: Vec::new() },
        4 | 5 => MemNode::File { meta: m, bytes: text(1 + rng.index(900), "r") },
        _ => MemNode::File { meta: m, bytes: noise(1024 + rng.index(70_000), salt) },
    }
}

fn random_tree(rng: &mut SplitMix64, nodes: usize) -> MemTree {
    let mut t = MemTree::default();
    let mut dirs: Vec<Option<RelPath>> = vec![None];
    for i in 0..nodes {
        let name = format!("n{}", rng.index(12));
        let p = match &dirs[rng.index(dirs.len())] {
            Some(d) => d.join(name.as_bytes()),
            None => RelPath::from_component(name.as_bytes()),
        }
        .expect("valid name");
        if t.0.contains_key(&p) {
            continue;
        }
        let node = random_node(rng, i as u64);
        if matches!(node, MemNode::Dir { .. }) {
            dirs.push(Some(p.clone()));
        }
        t.0.insert(p, node);
    }
    t
}

/// An older version of `src`, as a destination might hold it: content edited (with a new
/// mtime), bytes inserted, modes changed, entries missing, entries of another type, and
/// entries the source no longer has.
fn older_version(src: &MemTree, rng: &mut SplitMix64) -> MemTree {
    let mut t = src.clone();
    let paths: Vec<RelPath> = t.0.keys().cloned().collect();
    for (i, p) in paths.iter().enumerate() {
        let Some(node) = t.0.get_mut(p) else { continue };
        match (rng.index(8), node) {
            (0, _) => {
                t.remove_subtree(p);
            }
            (1, MemNode::File { meta, bytes }) if !bytes.is_empty() => {
                let at = rng.index(bytes.len());
                bytes[at] ^= 0x55;
                meta.mtime_ns -= 7;
            }
            (2, MemNode::File { meta, bytes }) => {
                let at = rng.index(bytes.len() + 1);
                bytes.splice(at..at, noise(1 + rng.index(3000), i as u64));
                meta.mtime_ns -= 7;
            }
            (3, MemNode::File { meta, .. } | MemNode::Dir { meta }) => {
                meta.mode ^= 0o004;
            }
            (4, _) => {
                // Another type of entry at the same name (a directory loses its contents).
                t.remove_subtree(p);
                let node = match random_node(rng, 99) {
                    MemNode::Dir { meta } => MemNode::File { meta, bytes: text(10, "was") },
                    _ => MemNode::Dir { meta: meta(0o755, 5) },
                };
                t.0.insert(p.clone(), node);
            }
            (5, MemNode::Dir { .. }) => {
                let extra = p.join(format!("extra{i}").as_bytes()).expect("valid name");
                t.0.insert(extra, random_node(rng, i as u64 + 500));
            }
            _ => {}
        }
    }
    t
}

#[test]
fn random_trees_converge_in_one_round_and_then_stay_put() {
    for seed in 0..24u64 {
        let mut rng = SplitMix64::new(seed);
        let src = random_tree(&mut rng, 80);
        let dst = older_version(&src, &mut rng);
        // Small, varying windows so flow control, the file window and the local scan refills
        // are all in play; checksum mode on every other seed.
        let opts = SessionOptions {
            delete: true,
            checksum: seed % 2 == 1,
            window_entries: 4 + rng.index(16) as u64,
            window_files: 1 + rng.index(4),
            scan_batch: 2 + rng.index(8),
            max_inflight_work: 1 + rng.index(8),
            ..SessionOptions::default()
        };
        let mut pair = Pair::new(src.clone(), dst, opts.clone()).shuffled(seed);
        pair.drive().unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_clean(&pair);
        assert_eq!(pair.dst_fs.tree, src, "seed {seed}");

        let (src, dst) = pair.into_trees();
        let mut again = Pair::new(src.clone(), dst, opts).shuffled(seed + 1000);
        again.drive().unwrap_or_else(|e| panic!("seed {seed}, second round: {e:?}"));
        assert_clean(&again);
        assert_eq!(again.dst_fs.tree, src, "seed {seed}, second round");
        assert_eq!(again.sent_to_dst("Segment"), 0, "seed {seed}: data sent for nothing");
        assert!(again.log.events.is_empty(), "seed {seed}: {:?}", again.log.events);
    }
}

#[test]
fn random_faults_spoil_only_their_own_files() {
    let (mut failed, mut resent) = (0, 0);
    for seed in 0..24u64 {
        let mut rng = SplitMix64::new(seed ^ 0xfa17);
        let src = random_tree(&mut rng, 60);
        let dst = older_version(&src, &mut rng);
        let opts = SessionOptions {
            delete: true,
            window_entries: 4 + rng.index(16) as u64,
            window_files: 1 + rng.index(4),
            scan_batch: 2 + rng.index(8),
            max_inflight_work: 1 + rng.index(8),
            ..SessionOptions::default()
        };
        let mut pair = Pair::new(src.clone(), dst, opts.clone()).shuffled(seed);
        // Some files change under the reader, some rebuild wrong once (resent), some twice
        // (given up).
        let mut faulty = Vec::new();
        for (p, n) in &src.0 {
            if !matches!(n, MemNode::File { .. }) {
                continue;
            }
            match rng.index(8) {
                0 => {
                    pair.src_fs.touch_on_read.insert(p.clone());
                }
                1 => {
                    pair.dst_fs.corrupt.insert(p.clone(), 1);
                }
                2 => {
                    pair.dst_fs.corrupt.insert(p.clone(), 2);
                }
                _ => continue,
            }
            faulty.push(p.clone());
        }
        pair.drive().unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_clean(&pair);
        let s = *pair.dst.stats();
        assert!(s.files_failed + s.files_resent <= faulty.len() as u64, "seed {seed}: {s:?}");
        failed += s.files_failed;
        resent += s.files_resent;

        // Everywhere else the destination is the source.
        let spoiled = |p: &RelPath| faulty.iter().any(|f| p.starts_with(f));
        let (src_now, dst) = pair.into_trees();
        let clean = |t: &MemTree| -> Vec<(RelPath, MemNode)> {
            t.0.iter().filter(|(p, _)| !spoiled(p)).map(|(p, n)| (p.clone(), n.clone())).collect()
        };
        assert_eq!(clean(&dst), clean(&src_now), "seed {seed}");

        // And a round without faults repairs the rest.
        let again = round(src_now.clone(), dst, opts);
        assert_clean(&again);
        assert_eq!(again.dst_fs.tree, src_now, "seed {seed}, repair round");
    }
    // The faults did fire: files were given up and files were resent.
    assert!(failed > 0 && resent > 0, "failed {failed}, resent {resent}");
}

// ---------------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------------

fn assert_version_error(r: Result<(), SessionError>) {
    let e = r.expect_err("a future-only peer is refused");
    let text = e.to_string();
    match e {
        SessionError::Version { our_min, our_max, peer_min, peer_max } => {
            assert_eq!((our_min, our_max), (PROTOCOL_MIN, PROTOCOL_VERSION));
            assert_eq!((peer_min, peer_max), (99, 99));
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(text.contains(&format!("{PROTOCOL_MIN}..={PROTOCOL_VERSION}")), "{text}");
    assert!(text.contains("99..=99"), "{text}");
}

#[test]
fn a_peer_speaking_only_a_future_version_is_refused_by_both_sides() {
    let future = Message::Hello { min: 99, max: 99, features: 0 };

    let mut dst = TargetSession::new(SessionOptions::default());
    assert_version_error(dst.handle_message(future.clone()));
    let out: Vec<Message> = std::iter::from_fn(|| dst.poll_transmit()).collect();
    assert!(matches!(out.last(), Some(Message::Abort { .. })), "{out:?}");
    assert!(dst.is_finished() && !dst.succeeded());

    let mut src = SourceSession::new(SessionOptions::default());
    assert_version_error(src.handle_message(future));
    let out: Vec<Message> = std::iter::from_fn(|| src.poll_transmit()).collect();
    assert!(matches!(out.last(), Some(Message::Abort { .. })), "{out:?}");
    assert!(src.is_finished());
    assert!(src.poll_work().is_none(), "a failed source starts no work");
}

// ---------------------------------------------------------------------------------------------
// A hostile source
// ---------------------------------------------------------------------------------------------

/// A target session fed crafted messages directly, its work done by a [`DestFs`].
struct LoneTarget {
    dst: TargetSession,
    fs: DestFs,
    limits: Limits,
    asked: Vec<&'static str>,
    sent: Vec<Message>,
}

impl LoneTarget {
    /// A target past the greeting, whose destination holds `local`.
    fn new(opts: SessionOptions, local: MemTree) -> Self {
        let mut t = LoneTarget {
            dst: TargetSession::new(opts.clone()),
            fs: DestFs { tree: local, limits: opts.limits, ..DestFs::default() },
            limits: opts.limits,
            asked: Vec::new(),
            sent: Vec::new(),
        };
        t.feed(peer_hello()).expect("hello accepted");
        t
    }

    /// Delivers `m` as it would arrive off the wire.
    fn feed(&mut self, m: Message) -> Result<(), SessionError> {
        let m = wire(&m, &self.limits).expect("crafted messages are representable");
        let r = self.dst.handle_message(m);
        self.sent.extend(std::iter::from_fn(|| self.dst.poll_transmit()));
        r
    }

    /// Performs the work the target asks for until it asks for no more.
    fn settle(&mut self) -> Result<(), SessionError> {
        while let Some((id, w)) = self.dst.poll_work() {
            self.asked.push(target_work_name(&w).0);
            let o = self.fs.perform(w);
            let r = self.dst.handle_outcome(id, o);
            self.sent.extend(std::iter::from_fn(|| self.dst.poll_transmit()));
            r?;
        }
        Ok(())
    }

    fn wanted(&self, file: FileId) -> bool {
        self.sent.iter().any(|m| matches!(m, Message::Want { file: f, .. } if *f == file))
    }

    /// Feeds `m`, which must be refused as `want` describes, and checks the aftermath.
    fn assert_refuses(mut self, m: Message, want: impl Fn(&ProtocolError) -> bool) {
        let name = message_name(&m);
        match self.feed(m) {
            Err(SessionError::Protocol(e)) => assert!(want(&e), "{name}: wrong error: {e:?}"),
            other => panic!("{name}: expected a protocol error, got {other:?}"),
        }
        assert!(
            matches!(self.sent.last(), Some(Message::Abort { .. })),
            "{name}: no Abort for the peer: {:?}",
            self.sent
        );
        assert!(self.dst.error().is_some());
        // The round is over: what is still asked (dropping temp files) runs, nothing commits.
        self.settle().expect("outcomes after an error are accepted");
        assert!(!self.asked.contains(&"Finish"), "{name}: asked to commit {:?}", self.asked);
        assert!(self.fs.staging.is_empty(), "{name}: a staged file was kept");
        // Further input is ignored, not acted on.
        self.feed(Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Literal,
            encoding: Encoding::Raw,
            data: vec![0],
        })
        .expect("a dead session ignores input");
        assert!(self.dst.poll_work().is_none());
        assert!(self.dst.is_finished() && !self.dst.succeeded());
    }
}

fn lone_target() -> LoneTarget {
    LoneTarget::new(SessionOptions::default(), MemTree::default())
}

/// A target that was sent one new file of `size` bytes and has asked for it.
fn target_wanting(size: u64) -> LoneTarget {
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("f", size)])).expect("entry accepted");
    t.settle().expect("scan and plan");
    assert!(t.wanted(0), "{:?}", t.sent);
    t
}

fn literal(file: FileId, index: u64, data: Vec<u8>) -> Message {
    Message::Segment { file, index, payload: Payload::Literal, encoding: Encoding::Raw, data }
}

#[test]
fn target_refuses_unsorted_and_duplicate_entries() {
    lone_target().assert_refuses(
        Message::Entries(vec![file_entry("b", 1), file_entry("a", 1)]),
        |e| matches!(e, ProtocolError::Unsorted { path, previous } if path == "a" && previous == "b"),
    );
    lone_target()
        .assert_refuses(Message::Entries(vec![file_entry("a", 1), file_entry("a", 1)]), |e| {
            matches!(e, ProtocolError::Unsorted { .. })
        });
    // Order is kept across batches too.
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("m", 1)])).expect("first batch");
    t.assert_refuses(Message::Entries(vec![file_entry("c", 1)]), |e| {
        matches!(e, ProtocolError::Unsorted { .. })
    });
}

#[test]
fn target_refuses_entries_without_their_parent() {
    lone_target().assert_refuses(
        Message::Entries(vec![file_entry("x/y", 1)]),
        |e| matches!(e, ProtocolError::Orphan(p) if p == "x/y"),
    );
    // A parent that is a file is no parent.
    lone_target()
        .assert_refuses(Message::Entries(vec![file_entry("x", 1), file_entry("x/y", 1)]), |e| {
            matches!(e, ProtocolError::Orphan(_))
        });
    // Nor is a directory the manifest has left: `b/y` follows `a`'s subtree, not `b`.
    lone_target().assert_refuses(
        Message::Entries(vec![dir_entry("a"), file_entry("a/x", 1), file_entry("b/y", 1)]),
        |e| matches!(e, ProtocolError::Orphan(p) if p == "b/y"),
    );
}

#[test]
fn target_refuses_entries_beyond_its_credit() {
    let opts = SessionOptions { window_entries: 4, ..SessionOptions::default() };
    let five: Vec<Entry> = (0..5).map(|i| file_entry(&format!("f{i}"), 1)).collect();
    LoneTarget::new(opts.clone(), MemTree::default())
        .assert_refuses(Message::Entries(five.clone()), |e| matches!(e, ProtocolError::Credit(_)));
    // The credit is cumulative: 3 + 2 overruns a window of 4 while nothing has been merged
    // (the target's own scan has not run, so it cannot merge).
    let mut t = LoneTarget::new(opts, MemTree::default());
    t.feed(Message::Entries(five[..3].to_vec())).expect("within credit");
    t.assert_refuses(Message::Entries(five[3..].to_vec()), |e| {
        matches!(e, ProtocolError::Credit(_))
    });
}

#[test]
fn target_refuses_malformed_entries() {
    let link =
        |to: &str| Entry { kind: EntryKind::HardLink { to: path(to) }, ..file_entry("m", 0) };
    lone_target().assert_refuses(
        Message::Entries(vec![link("z")]),
        |e| matches!(e, ProtocolError::Invalid(why) if why.contains("forward")),
    );
    lone_target().assert_refuses(Message::Entries(vec![link("m")]), |e| {
        matches!(e, ProtocolError::Invalid(_))
    });
    for target in [&b""[..], b"a\0b"] {
        let e =
            Entry { kind: EntryKind::Symlink { target: target.to_vec() }, ..file_entry("s", 0) };
        lone_target()
            .assert_refuses(Message::Entries(vec![e]), |e| matches!(e, ProtocolError::Invalid(_)));
    }
    let long =
        Entry { kind: EntryKind::Symlink { target: vec![b'x'; 5000] }, ..file_entry("s", 0) };
    lone_target()
        .assert_refuses(Message::Entries(vec![long]), |e| matches!(e, ProtocolError::Limit(_)));
    // --checksum: the target compares by hash, so a file entry without one is useless.
    let opts = SessionOptions { checksum: true, ..SessionOptions::default() };
    LoneTarget::new(opts, MemTree::default())
        .assert_refuses(Message::Entries(vec![file_entry("f", 1)]), |e| {
            matches!(e, ProtocolError::Invalid(_))
        });
}

#[test]
fn target_refuses_a_manifest_that_does_not_add_up() {
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("a", 1), file_entry("b", 1)])).expect("entries");
    t.assert_refuses(Message::EndOfManifest { count: 3, root: None }, |e| {
        matches!(e, ProtocolError::Invalid(_))
    });
    let mut t = lone_target();
    t.feed(Message::EndOfManifest { count: 0, root: None }).expect("an empty manifest");
    t.assert_refuses(Message::Entries(vec![file_entry("a", 1)]), |e| {
        matches!(e, ProtocolError::Unexpected { .. })
    });
}

#[test]
fn target_refuses_a_batch_over_the_entry_limit() {
    let opts = SessionOptions {
        limits: Limits { max_batch_entries: 4, ..Limits::default() },
        ..SessionOptions::default()
    };
    let five: Vec<Entry> = (0..5).map(|i| file_entry(&format!("f{i}"), 1)).collect();
    LoneTarget::new(opts, MemTree::default()).assert_refuses(Message::Entries(five), |e| {
        matches!(e, ProtocolError::Limit(LimitExceeded { got: 5, limit: 4, .. }))
    });
}

#[test]
fn target_refuses_segments_for_files_it_did_not_ask_for() {
    let mut t = lone_target();
    t.feed(Message::Entries(vec![file_entry("f", 10)])).expect("entry");
    t.settle().expect("plan");
    t.assert_refuses(literal(7, 0, vec![0; 10]), |e| matches!(e, ProtocolError::UnknownFile(7)));

    // Listed but unchanged, so never wanted.
    let mut local = MemTree::default();
    local.file("f", meta(0o644, 1), vec![0; 10]);
    let mut t = LoneTarget::new(SessionOptions::default(), local);
    t.feed(Message::Entries(vec![file_entry("f", 10)])).expect("entry");
    t.settle().expect("plan");
    assert!(!t.wanted(0));
    t.assert_refuses(literal(0, 0, vec![0; 10]), |e| matches!(e, ProtocolError::UnknownFile(0)));
}

#[test]
fn target_refuses_segments_out_of_order() {
    let three = 3 * SEGMENT_LEN as u64;
    target_wanting(three).assert_refuses(literal(0, 1, vec![1]), |e| {
        matches!(e, ProtocolError::SegmentOrder { file: 0, want: 0, got: 1 })
    });
    // A repeat.
    let mut t = target_wanting(three);
    t.feed(literal(0, 0, vec![1])).expect("first segment");
    t.assert_refuses(literal(0, 0, vec![1]), |e| {
        matches!(e, ProtocolError::SegmentOrder { want: 1, got: 0, .. })
    });
    // Past the end.
    let mut t = target_wanting(10);
    t.feed(literal(0, 0, vec![0; 10])).expect("the only segment");
    t.assert_refuses(literal(0, 1, vec![1]), |e| matches!(e, ProtocolError::SegmentOrder { .. }));
}

#[test]
fn target_refuses_a_file_end_that_disagrees_with_the_manifest() {
    let data = text(100, "f");
    let hash = *blake3::hash(&data).as_bytes();
    let mut t = target_wanting(100);
    t.feed(literal(0, 0, data.clone())).expect("segment");
    t.settle().expect("write");
    t.assert_refuses(Message::FileEnd { file: 0, size: 101, hash }, |e| {
        matches!(e, ProtocolError::SizeMismatch { file: 0, .. })
    });
    // The right size but segments missing.
    target_wanting(2 * SEGMENT_LEN as u64)
        .assert_refuses(Message::FileEnd { file: 0, size: 2 * SEGMENT_LEN as u64, hash }, |e| {
            matches!(e, ProtocolError::SizeMismatch { .. })
        });
}

#[test]
fn target_refuses_a_file_ended_or_failed_out_of_turn() {
    lone_target()
        .assert_refuses(Message::FileFailed { file: 4, reason: FileFailure::Vanished }, |e| {
            matches!(e, ProtocolError::UnknownFile(4))
        });
    let data = text(100, "f");
    let end = Message::FileEnd { file: 0, size: 100, hash: *blake3::hash(&data).as_bytes() };
    let mut t = target_wanting(100);
    t.feed(literal(0, 0, data)).expect("segment");
    t.feed(end.clone()).expect("end");
    t.assert_refuses(end, |e| matches!(e, ProtocolError::UnknownFile(0)));
    // Failing a file after ending it.
    let mut t = target_wanting(0);
    t.feed(Message::FileEnd { file: 0, size: 0, hash: *blake3::hash(b"").as_bytes() })
        .expect("end");
    t.assert_refuses(Message::FileFailed { file: 0, reason: FileFailure::Changed }, |e| {
        matches!(e, ProtocolError::UnknownFile(0))
    });
}

#[test]
fn target_refuses_an_oversized_segment_before_queuing_it() {
    let cap = SEGMENT_LEN + (SEGMENT_LEN >> 7) + 1024;
    target_wanting(SEGMENT_LEN as u64).assert_refuses(literal(0, 0, vec![0; cap + 1]), |e| {
        matches!(e, ProtocolError::Limit(LimitExceeded { what: "segment payload", .. }))
    });
}

#[test]
fn target_refuses_messages_only_a_target_sends() {
    lone_target().assert_refuses(
        Message::SignaturePiece { file: 0, blocks: vec![0; 20], last: true },
        |e| matches!(e, ProtocolError::Unexpected { what: "SignaturePiece" }),
    );
    lone_target().assert_refuses(Message::Want { file: 0, basis: None }, |e| {
        matches!(e, ProtocolError::Unexpected { what: "Want" })
    });
}

#[test]
fn target_refuses_a_delta_it_offered_no_basis_for() {
    target_wanting(100).assert_refuses(
        Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Delta,
            encoding: Encoding::Raw,
            data: vec![0x72, 0x73, 0x02, 0x36, 0],
        },
        |e| matches!(e, ProtocolError::Invalid(_)),
    );
}

#[test]
fn target_refuses_a_segment_that_rebuilds_to_the_wrong_length() {
    // Accepted on arrival (the length is known only once decoded), refused by the write.
    let mut t = target_wanting(100);
    t.feed(literal(0, 0, vec![0; 99])).expect("queued");
    match t.settle() {
        Err(SessionError::Protocol(ProtocolError::Invalid(why))) => {
            assert!(why.contains("99"), "{why}")
        }
        other => panic!("expected bad data, got {other:?}"),
    }
    assert!(matches!(t.sent.last(), Some(Message::Abort { .. })));
    t.settle().expect("discards run");
    assert!(!t.asked.contains(&"Finish"));
    assert!(t.fs.staging.is_empty());
}

#[test]
fn target_refuses_segments_beyond_its_byte_credit() {
    // window_bytes is raised to 2 segments (16 MiB); the Writes are not performed, so no
    // credit comes back. The third 8 MiB segment is beyond what was granted.
    let opts = SessionOptions { window_bytes: 0, ..SessionOptions::default() };
    let mut t = LoneTarget::new(opts, MemTree::default());
    t.feed(Message::Entries(vec![file_entry("f", 5 * SEGMENT_LEN as u64)])).expect("entry");
    t.settle().expect("plan");
    assert!(t.wanted(0));
    t.feed(literal(0, 0, vec![1])).expect("within credit");
    t.feed(literal(0, 1, vec![1])).expect("within credit");
    t.assert_refuses(literal(0, 2, vec![1]), |e| matches!(e, ProtocolError::Credit(_)));
}

#[test]
fn target_has_no_pending_work_once_a_failed_round_drains() {
    // Its first scan is queued (not yet taken by the driver) when the peer misbehaves.
    let mut t = lone_target();
    assert!(t.dst.has_pending_work());
    let _ = t.feed(Message::Entries(vec![file_entry("b", 1), file_entry("a", 1)]));
    t.settle().expect("discards run");
    assert!(t.dst.poll_work().is_none(), "nothing is left for the driver to do");
    assert!(!t.dst.has_pending_work(), "target still reports pending work");
}

#[test]
fn source_has_no_pending_work_once_a_failed_round_drains() {
    // A scan is out at the driver when the peer misbehaves; its outcome comes back later.
    let mut s = LoneSource::new(sample_tree(false), false);
    let (id, _scan) = s.src.poll_work().expect("a scan");
    assert!(s.feed(Message::Settled { file: 3 }).is_err());
    s.src
        .handle_outcome(id, SourceOutcome::Scanned { entries: Vec::new(), done: true })
        .expect("a late outcome is accepted");
    assert!(!s.src.has_pending_work(), "source still reports pending work");
}

#[test]
fn done_is_the_last_thing_the_target_says() {
    let src = sample_tree(false);
    let opts = SessionOptions { dry_run: true, ..SessionOptions::default() };
    let pair = round(src, MemTree::default(), opts);
    let tail = &pair.log.to_src[pair.log.to_src.len().saturating_sub(2)..];
    assert!(matches!(tail.last(), Some(Message::Done { .. })), "after Done: {tail:?}");
}

// ---------------------------------------------------------------------------------------------
// A hostile target
// ---------------------------------------------------------------------------------------------

/// A source session fed crafted messages directly, its work done by a [`SourceFs`].
struct LoneSource {
    src: SourceSession,
    fs: SourceFs,
    limits: Limits,
    sent: Vec<Message>,
}

impl LoneSource {
    /// A source past the greeting with ample credit; with `scan`, its whole manifest is out.
    fn new(tree: MemTree, scan: bool) -> Self {
        let opts = SessionOptions::default();
        let mut s = LoneSource {
            src: SourceSession::new(opts.clone()),
            fs: SourceFs { tree, ..SourceFs::default() },
            limits: opts.limits,
            sent: Vec::new(),
        };
        s.feed(peer_hello()).expect("hello");
        s.feed(Message::Credit { entries: 1000, bytes: 1 << 30, decided: 0 }).expect("credit");
        if scan {
            s.settle();
            assert!(s.sent.iter().any(|m| message_name(m) == "EndOfManifest"), "{:?}", s.sent);
        }
        s
    }

    fn feed(&mut self, m: Message) -> Result<(), SessionError> {
        let m = wire(&m, &self.limits).expect("crafted messages are representable");
        let r = self.src.handle_message(m);
        self.sent.extend(std::iter::from_fn(|| self.src.poll_transmit()).map(|m| summary(&m)));
        r
    }

    fn settle(&mut self) {
        while let Some((id, w)) = self.src.poll_work() {
            let o = self.fs.perform(w);
            self.src.handle_outcome(id, o).expect("outcome accepted");
            self.sent.extend(std::iter::from_fn(|| self.src.poll_transmit()).map(|m| summary(&m)));
        }
    }

    fn assert_refuses(mut self, m: Message, want: impl Fn(&ProtocolError) -> bool) {
        let name = message_name(&m);
        match self.feed(m) {
            Err(SessionError::Protocol(e)) => assert!(want(&e), "{name}: wrong error: {e:?}"),
            other => panic!("{name}: expected a protocol error, got {other:?}"),
        }
        assert!(
            matches!(self.sent.last(), Some(Message::Abort { .. })),
            "{name}: no Abort for the peer: {:?}",
            self.sent
        );
        assert!(self.src.error().is_some() && self.src.is_finished());
        assert!(self.src.poll_work().is_none(), "{name}: work after the error");
        self.feed(Message::Settled { file: 0 }).expect("a dead session ignores input");
    }
}

/// `d/` (id 0), `d/f` (id 1, 4 KiB), `g` (id 2, 10 bytes).
fn source_tree() -> MemTree {
    let mut t = MemTree::default();
    t.dir("d", meta(0o755, 1)).file("d/f", meta(0o644, 2), noise(4096, 3)).file(
        "g",
        meta(0o644, 3),
        text(10, "g"),
    );
    t
}

fn header(block: u32, basis_len: u64) -> SignatureHeader {
    SignatureHeader::new(BlockSize::new(block).expect("valid block size"), basis_len)
}

#[test]
fn source_refuses_wants_for_what_it_did_not_list_as_a_file() {
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 99, basis: None }, |e| {
            matches!(e, ProtocolError::UnknownFile(99))
        });
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 0, basis: None }, |e| {
            matches!(e, ProtocolError::UnknownFile(0))
        });
    // Twice for a file already being sent.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 2, basis: None }).expect("first want");
    s.assert_refuses(Message::Want { file: 2, basis: None }, |e| {
        matches!(e, ProtocolError::UnknownFile(2))
    });
}

#[test]
fn source_refuses_a_signature_header_with_a_bad_hash_size() {
    let bad = SignatureHeader { hash_size: 17, ..header(1024, 4096) };
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 1, basis: Some(bad) }, |e| {
            matches!(e, ProtocolError::Delta(DeltaError::HashSize(17)))
        });
}

#[test]
fn source_refuses_a_signature_header_beyond_its_limits() {
    // 2^57 blocks of 64 bytes: validated before anything is allocated for it.
    LoneSource::new(source_tree(), true)
        .assert_refuses(Message::Want { file: 1, basis: Some(header(64, u64::MAX)) }, |e| {
            matches!(e, ProtocolError::Delta(DeltaError::Limit(_)))
        });
}

#[test]
fn source_refuses_a_signature_that_does_not_match_its_header() {
    // 4 blocks of 1024 → 80 bytes announced.
    let basis = Some(header(1024, 4096));
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis }).expect("want");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 81], last: false }, |e| {
        matches!(e, ProtocolError::SizeMismatch { file: 1, .. })
    });
    // Over the announced length only across pieces.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis }).expect("want");
    s.feed(Message::SignaturePiece { file: 1, blocks: vec![0; 60], last: false }).expect("piece");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 21], last: true }, |e| {
        matches!(e, ProtocolError::SizeMismatch { .. })
    });
    // Short.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis }).expect("want");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 40], last: true }, |e| {
        matches!(e, ProtocolError::Delta(DeltaError::SignatureLength { want: 80, got: 40 }))
    });
    // For a file wanted whole.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 1, basis: None }).expect("want");
    s.assert_refuses(Message::SignaturePiece { file: 1, blocks: vec![0; 20], last: true }, |e| {
        matches!(e, ProtocolError::Unexpected { what: "SignaturePiece" })
    });
}

#[test]
fn source_refuses_settled_for_a_file_it_is_not_sending() {
    LoneSource::new(source_tree(), true).assert_refuses(Message::Settled { file: 2 }, |e| {
        matches!(e, ProtocolError::UnknownFile(2))
    });
    // Wanted, but its segments are still being read: not finished, so not settleable.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 2, basis: None }).expect("want");
    s.assert_refuses(Message::Settled { file: 2 }, |e| matches!(e, ProtocolError::UnknownFile(2)));
}

#[test]
fn source_refuses_an_early_done() {
    // Before the manifest is complete.
    LoneSource::new(source_tree(), false)
        .assert_refuses(Message::Done { stats: crate::stats::Stats::default() }, |e| {
            matches!(e, ProtocolError::Unexpected { what: "early Done" })
        });
    // With a file sent but not settled.
    let mut s = LoneSource::new(source_tree(), true);
    s.feed(Message::Want { file: 2, basis: None }).expect("want");
    s.settle();
    assert!(s.sent.iter().any(|m| matches!(m, Message::FileEnd { file: 2, size: 10, .. })));
    s.assert_refuses(Message::Done { stats: crate::stats::Stats::default() }, |e| {
        matches!(e, ProtocolError::Unexpected { .. })
    });
}

#[test]
fn source_refuses_messages_only_a_source_sends() {
    LoneSource::new(source_tree(), true).assert_refuses(Message::Entries(Vec::new()), |e| {
        matches!(e, ProtocolError::Unexpected { what: "Entries" })
    });
}

/// Verified files are committed in batches (one flush for many files), never one by one when
/// many are in flight, and every file still ends up in place.
#[test]
fn verified_files_are_committed_in_batches() {
    let src = many_files(10, 100);
    let pair = round(src.clone(), MemTree::default(), SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    let commits = pair.log.dst_work.iter().filter(|(k, _)| *k == "Commit").count();
    let finishes = pair.log.dst_work.iter().filter(|(k, _)| *k == "Finish").count();
    assert_eq!(finishes, 1000);
    assert!((1..=1000 / 16).contains(&commits), "{commits} commits for {finishes} files");
}

/// A source offered the segments the destination kept from an interrupted round answers the
/// ones that hash the same with `Kept` and sends the others; its end hash covers the file.
#[test]
fn source_answers_resumed_segments_with_kept_and_sends_the_rest() {
    let content = noise(3 * SEGMENT_LEN + 10, 4);
    let len = content.len() as u64;
    let mut tree = MemTree::default();
    tree.file("big", meta(0o644, 1), content.clone());
    let mut s = LoneSource::new(tree, true);
    let cv =
        |i: usize| hash_segment(i as u64, &content[i * SEGMENT_LEN..(i + 1) * SEGMENT_LEN], len).0;
    // Segment 1 on the destination differs (a chunk that did not survive, say).
    s.feed(Message::Resume { file: 0, have: vec![cv(0), [7; 32], cv(2)] }).expect("resume");
    s.feed(Message::Want { file: 0, basis: None }).expect("want");
    s.settle();
    let segs: Vec<(u64, Payload)> = s
        .sent
        .iter()
        .filter_map(|m| match m {
            Message::Segment { index, payload, .. } => Some((*index, *payload)),
            _ => None,
        })
        .collect();
    let (k, l) = (Payload::Kept, Payload::Literal);
    assert_eq!(segs, [(0, k), (1, l), (2, k), (3, l)]);
    let end = s.sent.iter().find_map(|m| match m {
        Message::FileEnd { hash, .. } => Some(*hash),
        _ => None,
    });
    assert_eq!(end, Some(*blake3::hash(&content).as_bytes()));
    assert_eq!(s.src.stats().resumed_bytes, 2 * SEGMENT_LEN as u64);
}

#[test]
fn resume_offers_that_do_not_fit_are_protocol_errors() {
    let mut tree = MemTree::default();
    tree.file("big", meta(0o644, 1), noise(SEGMENT_LEN + 1, 4));
    // Longer than the file's two segments.
    LoneSource::new(tree.clone(), true)
        .assert_refuses(Message::Resume { file: 0, have: vec![[0; 32]; 3] }, |e| {
            matches!(e, ProtocolError::Unexpected { what: "Resume" })
        });
    // For a file that is not in the manifest.
    LoneSource::new(tree, true)
        .assert_refuses(Message::Resume { file: 9, have: vec![[0; 32]] }, |e| {
            matches!(e, ProtocolError::UnknownFile(9))
        });
    // A target sent `Kept` for a segment it never offered.
    target_wanting(SEGMENT_LEN as u64 * 2).assert_refuses(
        Message::Segment {
            file: 0,
            index: 0,
            payload: Payload::Kept,
            encoding: Encoding::Raw,
            data: Vec::new(),
        },
        |e| matches!(e, ProtocolError::Invalid(m) if m.contains("kept")),
    );
}
