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
//!
//! The harness is split by topic: `pair` (the in-memory driver), `fs` (the fake
//! filesystems), and the tests: `rounds`, `flow`, `random`, `hostile_source`,
//! `hostile_target`, `hostile_oracle` (what a peer can learn of the destination) and
//! `hostile_memory` (what a peer can make a session hold). Helpers every topic uses are here.

mod flow;
mod fs;
mod hostile_memory;
mod hostile_oracle;
mod hostile_source;
mod hostile_target;
mod pair;
mod random;
mod rounds;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;

use self::fs::{DestFs, MemNode, MemTree, SourceFs};
use self::hostile_source::target_wanting;
use self::hostile_target::LoneSource;
use self::pair::{assert_clean, round, Pair};
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
