//! The agent's integration tests, one binary: real `ferry` processes, real files, real
//! sockets. Each module below is one topic; `common` is all they share.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test, with its message.

// The `ferry` binary and its server, credentials, sample trees, the PRNG, the judge of tree
// equality (common::tree), crafted peers and bad links (common::peer).
mod common;

// Who may talk to whom: credentials, certificates, protocol versions, module modes.
mod handshake;
// Authenticated peers that lie: bad frames, escaping paths, abused data streams.
mod hostile;
// Whole rounds: push and pull over QUIC, TCP and rsh; pacing; bench; the signature cache.
mod rounds;
// --transport auto: the handshake race past blocked UDP, no probe bytes, the choice cache.
mod autotransport;
// What a committed round leaves: snapshots of each kind, verify, restore, promote.
mod snapshots;
// A pushed round ends when the destination has recorded it: the commit result.
mod commit;
// `--compress-level auto`: harder on a slow link, off for what does not compress.
mod compression;
// The snapshot store: diff and ls, a no-change round's cost, a damaged or hostile store.
mod storesafe;
// Unattended pushes: retries, the status file, --http, --every, pre/post-round hooks.
mod unattended;
// A large file cut part way resumes from its journaled segments.
mod resume;
// Bad links: a cut connection, loss and delay, a blackhole past the idle timeout.
mod faults;
// `kill -9` either side at random points of a round, many times.
mod crash;
// What a hostile or confused peer cannot make the destination do, in process.
mod safety;
// What a hostile peer can make `ferry serve` hold (peak RSS under the budget).
mod memory;
// The `ferry` binary as a user runs it: flags, output, exit codes.
mod cli;
// `ferry k8s render`: the same objects and refusals as Helm (deploy/check-render), and the
// pair's flags.
mod render;
// A local user racing the destination's temp names: metadata never follows a swapped symlink.
mod races;
// Bind mounts of the same filesystem: --delete and -x stop at them.
mod mounts;
// The receiving side's policy: specials, setuid/setgid and capabilities, id maps.
mod policy;
// What a network peer cannot do: hold a module with a silent link, pass a refused
// certificate off as a hiccup, forge log lines.
mod netlimits;
// --http on an open network: the trigger's token and rate, idle connections.
mod httpsafe;
// What a local user with write access to the state directory cannot make Ferry do.
mod statesafe;
// Source read errors make a partial round (no deletes, exit 23); deep trees with few fds.
mod partial;
// --snapshot csi against an in-process stand-in of the Kubernetes API server.
mod csi;
// Many volumes as one job: --list, --jobs, --modules-from, --modules-dir.
mod many;
// `ferry pull --state-dir`: a pulling destination keeps what a served one keeps.
mod pullstate;
// Rotated credentials taken without a restart, a broken rotation refused, a Secret's swap.
mod rotation;
// The Helm chart's rendered destination runs: batch mode's one `ferry serve --modules-dir`.
mod chart;
// Consistency groups: --group, generations, restore of a generation, kill -9 during them.
mod groups;
