//! Ferry's core: everything about a sync round that is not I/O.
//!
//! Ferry replicates a directory tree from a source to a destination, round after round, moving
//! only what changed. This crate holds the parts that decide *what* moves and *how*, and none
//! of the parts that touch the world:
//!
//! - [`RelPath`]: every path from a peer is parsed into one before anything else happens.
//! - [`Entry`]: the manifest's unit (file, dir, symlink, hard link, special), streamed in
//!   path order so both sides can merge-join their trees in constant memory.
//! - [`delta`]: signatures, deltas and patches over `fast_rsync`, with validated parameters,
//!   parallel signing and a shared delta index for parallel segment diffs.
//! - [`hash`]: whole-file blake3, computable segment by segment in parallel.
//! - [`compress`]: zstd for literal data, skipped when it does not pay, bounded when decoded.
//! - [`segment`]: one segment as the wire carries it: encoded (delta or literal, compressed)
//!   by the source, rebuilt and length-checked by the destination.
//! - [`message`]: the [`Message`]s of a round and their framing.
//! - [`session`]: the round as two sans-IO state machines, [`SourceSession`] and
//!   [`TargetSession`], that ask a driver to do [`SourceWork`]/[`TargetWork`].
//! - [`ReceivePolicy`]: what the receiving side accepts from a peer's manifest (specials,
//!   setuid/setgid, capabilities, id maps), its own decision.
//! - [`Limits`]: every bound on what a peer can make us allocate.
//! - [`rng`]: the workspace's one seedable, non-cryptographic generator, for test data,
//!   benchmark datasets and jitter.
//!
//! It does not open files or sockets, spawn threads (beyond `rayon` inside pure computations),
//! or read the clock. The `ferry-agent` crate is the driver.
//!
//! # Security
//! Everything from the peer is untrusted. Decoding never panics; every length and count is
//! checked against [`Limits`] before it drives an allocation; `fast_rsync` sees only validated
//! parameters; nothing rebuilt is trusted until its blake3 matches the source's.
#![forbid(unsafe_code)]

pub mod compress;
pub mod delta;
pub mod entry;
pub mod hash;
pub mod limits;
pub mod message;
pub mod path;
pub mod policy;
pub mod rng;
pub mod segment;
pub mod session;
pub mod stats;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

pub use entry::{Entry, EntryKind, LocalEntry, Meta, RootMeta, Xattr};
pub use limits::Limits;
pub use message::Message;
pub use path::RelPath;
pub use policy::ReceivePolicy;
pub use session::{
    SessionError, SessionOptions, SourceOutcome, SourceSession, SourceWork, TargetOutcome,
    TargetSession, TargetWork,
};
pub use stats::Stats;

/// Files move in segments of this many bytes: the unit of parallel reading, hashing, diffing
/// and compression, and of flow control. A power of two, so every full segment is a complete
/// BLAKE3 subtree.
pub const SEGMENT_LEN: usize = 8 << 20;
