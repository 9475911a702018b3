//! `--transport auto`: which transport a client tries first, and what it remembers.
//!
//! No bytes are spent on measuring. The client races the two handshakes ([`HEAD_START`]: the
//! preferred transport alone first, then both) and keeps the link that comes up first. Which
//! transport is preferred comes from a small cache of what real rounds measured, one entry
//! per server (its `host:port` and the CA its certificate must chain to):
//!
//! ```text
//!   QUIC went unanswered < RETRY_AFTER ago      → TCP first (UDP is probably blocked)
//!   nothing measured                            → QUIC first
//!   one transport measured, the other not       → the other (measure it)
//!   both measured, the slower > RETRY_AFTER ago → the slower (measure it again)
//!   both measured                               → QUIC, unless TCP was > 10% faster
//! ```
//!
//! A measurement is a finished round's wire bytes over its wall time, kept only for rounds that
//! moved at least [`MIN_MEASURED_BYTES`], and forgotten after [`FORGET_AFTER`]. So once both
//! transports are measured, at most one round per [`RETRY_AFTER`] runs on the slower one.
//!
//! The cache is `$XDG_CACHE_HOME/ferry/transport.json` (`~/.cache/ferry/…` without it), and an
//! in-process copy when that cannot be written (a read-only home in a pod). It is a hint, never
//! trusted: read no-follow and bounded, any parse error makes it empty; written to a temp file
//! and renamed.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

/// How long the preferred transport's handshake runs alone before the other one starts too.
pub(crate) const HEAD_START: Duration = Duration::from_millis(250);

/// How long a choice stands before the other transport gets a round again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long a measurement is used at all.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Rounds that move less than this say more about the disk than the link: not measured.
pub(crate) const MIN_MEASURED_BYTES: u64 = 8 << 20;

/// The cache file's size limit; a larger file is ignored.
const MAX_FILE_BYTES: u64 = 64 << 10;

/// Servers remembered; the least recently used go first.
const MAX_SERVERS: usize = 64;

/// The cache file's name inside the `ferry` cache directory.
const FILE_NAME: &str = "transport.json";

/// One of the two transports `auto` chooses between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Transport {
    /// QUIC.
    Quic,
    /// TLS over TCP.
    Tcp,
}

impl Transport {
    /// The other one.
    pub(crate) fn other(self) -> Transport {
        match self {
            Transport::Quic => Transport::Tcp,
            Transport::Tcp => Transport::Quic,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Quic => "QUIC",
            Transport::Tcp => "TLS over TCP",
        })
    }
}

/// Which transport to try first, and why (for the log).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Tried first; the other starts after [`HEAD_START`] or when this one fails.
    pub(crate) first: Transport,
    /// Why, in words.
    pub(crate) why: String,
}

/// What the cache remembers about one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServerEntry {
    /// `host:port` as the user wrote it.
    server: String,
    /// blake3 of the CA certificates the server's certificate must chain to (hex).
    ca: String,
    /// The last round measured over QUIC.
    #[serde(default)]
    quic: Option<Measured>,
    /// The last round measured over TLS over TCP.
    #[serde(default)]
    tcp: Option<Measured>,
    /// When TLS over TCP came up while QUIC's handshake had no answer (seconds since the epoch).
    #[serde(default)]
    quic_unanswered_at: Option<u64>,
    /// When the entry was last used (seconds since the epoch), for eviction.
    #[serde(default)]
    used_at: u64,
}

/// One round's throughput over one transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Measured {
    /// Wire bytes (both ways) per second of the round's wall time.
    bytes_per_sec: f64,
    /// When (seconds since the epoch).
    at: u64,
}

impl ServerEntry {
    fn measured(&self, t: Transport) -> Option<Measured> {
        match t {
            Transport::Quic => self.quic,
            Transport::Tcp => self.tcp,
        }
    }

    /// What to try first at `now` (seconds since the epoch); see the module docs.
    pub(crate) fn plan(&self, now: u64) -> Plan {
        let age = |at: u64| now.checked_sub(at).map(Duration::from_secs);
        let within = |at: u64, limit: Duration| age(at).is_some_and(|a| a < limit);
        if let Some(at) = self.quic_unanswered_at.filter(|&at| within(at, RETRY_AFTER)) {
            return Plan {
                first: Transport::Tcp,
                why: format!("QUIC went unanswered {}s ago", now - at),
            };
        }
        // A measurement from the future (a clock set back, a forged file) counts as none.
        let fresh = |t| {
            self.measured(t).filter(|m| within(m.at, FORGET_AFTER) && m.bytes_per_sec.is_finite())
        };
        let show = |m: Measured| format!("{:.0} MB/s {}s ago", m.bytes_per_sec / 1e6, now - m.at);
        match (fresh(Transport::Quic), fresh(Transport::Tcp)) {
            (None, None) => Plan { first: Transport::Quic, why: "no round measured yet".into() },
            (Some(q), None) => Plan {
                first: Transport::Tcp,
                why: format!("QUIC measured ({}), TLS over TCP not yet", show(q)),
            },
            (None, Some(t)) => Plan {
                first: Transport::Quic,
                why: format!("TLS over TCP measured ({}), QUIC not yet", show(t)),
            },
            (Some(q), Some(t)) => {
                // QUIC is kept unless TCP is clearly faster: it recovers from loss per stream.
                let best = if t.bytes_per_sec > q.bytes_per_sec * 1.1 {
                    Transport::Tcp
                } else {
                    Transport::Quic
                };
                let other = if best == Transport::Quic { t } else { q };
                let measured = format!("QUIC {}, TLS over TCP {}", show(q), show(t));
                if within(other.at, RETRY_AFTER) {
                    Plan { first: best, why: measured }
                } else {
                    Plan {
                        first: best.other(),
                        why: format!("measuring {} again ({measured})", best.other()),
                    }
                }
            }
        }
    }

    /// Remembers a finished round: `bytes` both ways in `secs` over `t`.
    pub(crate) fn record_round(&mut self, t: Transport, bytes: u64, secs: f64, now: u64) -> bool {
        let mut changed = false;
        if t == Transport::Quic && self.quic_unanswered_at.take().is_some() {
            changed = true;
        }
        if bytes >= MIN_MEASURED_BYTES && secs > 0.0 && secs.is_finite() {
            let m = Some(Measured { bytes_per_sec: bytes as f64 / secs, at: now });
            match t {
                Transport::Quic => self.quic = m,
                Transport::Tcp => self.tcp = m,
            }
            changed = true;
        }
        changed
    }

    /// Remembers that TLS over TCP came up while QUIC had no answer.
    pub(crate) fn record_quic_unanswered(&mut self, now: u64) {
        self.quic_unanswered_at = Some(now);
    }
}

/// The cache file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CacheFile {
    servers: Vec<ServerEntry>,
}

/// The cache: the file if there is one, else this process's copy.
static MEMORY: Mutex<Option<CacheFile>> = Mutex::new(None);

/// The key's CA half: blake3 over the CA certificates.
pub(crate) fn ca_key<'a>(ca: impl Iterator<Item = &'a [u8]>) -> String {
    let mut h = blake3::Hasher::new();
    for c in ca {
        h.update(&(c.len() as u64).to_le_bytes());
        h.update(c);
    }
    h.finalize().to_hex().to_string()
}

/// Seconds since the epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cache directory's parent: `$XDG_CACHE_HOME`, else `$HOME/.cache` (absolute paths only,
/// as the XDG spec says).
fn cache_home() -> Option<PathBuf> {
    let abs = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    abs(std::env::var_os("XDG_CACHE_HOME"))
        .or_else(|| abs(std::env::var_os("HOME")).map(|h| h.join(".cache")))
}

/// Opens (creating it if `create`) the `ferry` directory under [`cache_home`], never following
/// a symlink at that last step.
fn open_dir(create: bool) -> std::io::Result<OwnedFd> {
    let home = cache_home().ok_or_else(|| std::io::Error::other("no cache directory"))?;
    if create {
        std::fs::create_dir_all(&home)?;
    }
    let base = rustix::fs::open(&home, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    if create {
        return crate::fs::make_dir_at(&base, "ferry");
    }
    Ok(rustix::fs::openat(
        &base,
        "ferry",
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Reads the cache file: at most [`MAX_FILE_BYTES`], no symlink, regular files only.
fn read_file() -> std::io::Result<CacheFile> {
    use std::io::Read;
    let dir = open_dir(false)?;
    let fd = rustix::fs::openat(
        &dir,
        FILE_NAME,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other("too large"));
    }
    Ok(parse(&bytes))
}

/// Parses the cache; anything malformed is an empty cache, and it is cut to [`MAX_SERVERS`].
fn parse(bytes: &[u8]) -> CacheFile {
    let mut c: CacheFile = serde_json::from_slice(bytes).unwrap_or_default();
    c.servers.truncate(MAX_SERVERS);
    c
}

/// Replaces the cache file: a temp file beside it, renamed over it (a symlink there is
/// replaced, never followed).
fn write_file(c: &CacheFile) -> std::io::Result<()> {
    use std::io::Write;
    let dir = open_dir(true)?;
    let tmp = format!("{FILE_NAME}.{}.tmp", std::process::id());
    let fd = rustix::fs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let r = std::fs::File::from(fd)
        .write_all(&serde_json::to_vec(c).map_err(std::io::Error::other)?)
        .and_then(|()| Ok(rustix::fs::renameat(&dir, tmp.as_str(), &dir, FILE_NAME)?));
    if r.is_err() {
        let _ = rustix::fs::unlinkat(dir.as_fd(), tmp.as_str(), rustix::fs::AtFlags::empty());
    }
    r
}

/// What the cache says about `server` with CA key `ca` (an empty entry if nothing).
pub(crate) fn load(server: &str, ca: &str) -> ServerEntry {
    let cache = match read_file() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("transport cache: {e}; using this process's copy");
            crate::lock(&MEMORY).clone().unwrap_or_default()
        }
    };
    cache.servers.into_iter().find(|e| e.server == server && e.ca == ca).unwrap_or_else(|| {
        ServerEntry { server: server.into(), ca: ca.into(), ..Default::default() }
    })
}

/// Stores `entry` (replacing the server's old one), in the file if it can, in memory always.
pub(crate) fn store(mut entry: ServerEntry, now: u64) {
    entry.used_at = now;
    let mut cache =
        read_file().unwrap_or_else(|_| crate::lock(&MEMORY).clone().unwrap_or_default());
    cache.servers.retain(|e| !(e.server == entry.server && e.ca == entry.ca));
    cache.servers.push(entry);
    if cache.servers.len() > MAX_SERVERS {
        cache.servers.sort_by_key(|e| std::cmp::Reverse(e.used_at));
        cache.servers.truncate(MAX_SERVERS);
    }
    if let Err(e) = write_file(&cache) {
        tracing::debug!("transport cache not written: {e}");
    }
    *crate::lock(&MEMORY) = Some(cache);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const H: u64 = 3600;

    fn entry() -> ServerEntry {
        ServerEntry { server: "h:1".into(), ca: "x".into(), ..Default::default() }
    }

    #[test]
    fn plan_follows_the_documented_policy() {
        let mut e = entry();
        assert_eq!(e.plan(NOW).first, Transport::Quic, "nothing measured");
        // A small round measures nothing.
        assert!(!e.record_round(Transport::Quic, MIN_MEASURED_BYTES - 1, 1.0, NOW));
        assert_eq!(e.plan(NOW).first, Transport::Quic);
        assert!(e.record_round(Transport::Quic, 100 << 20, 1.0, NOW));
        assert_eq!(e.plan(NOW + 1).first, Transport::Tcp, "TCP not measured yet");
        // TCP within 10% of QUIC: QUIC stays.
        e.record_round(Transport::Tcp, 105 << 20, 1.0, NOW + 10);
        assert_eq!(e.plan(NOW + 20).first, Transport::Quic);
        // TCP clearly faster: TCP, until QUIC's measurement is an hour old.
        e.record_round(Transport::Tcp, 200 << 20, 1.0, NOW + 30);
        assert_eq!(e.plan(NOW + 40).first, Transport::Tcp);
        let p = e.plan(NOW + H + 1);
        assert_eq!(p.first, Transport::Quic, "{p:?}");
        assert!(p.why.contains("again"), "{p:?}");
        // After a day nothing is remembered.
        assert_eq!(e.plan(NOW + 30 * H).first, Transport::Quic);
        assert!(e.plan(NOW + 30 * H).why.contains("no round"));
    }

    #[test]
    fn unanswered_quic_means_tcp_first_for_an_hour() {
        let mut e = entry();
        e.record_quic_unanswered(NOW);
        assert_eq!(e.plan(NOW + 5).first, Transport::Tcp);
        assert_eq!(e.plan(NOW + H).first, Transport::Quic);
        // A QUIC round that worked clears it.
        e.record_quic_unanswered(NOW);
        assert!(e.record_round(Transport::Quic, 0, 1.0, NOW + 1));
        assert_eq!(e.plan(NOW + 2).first, Transport::Quic);
    }

    #[test]
    fn forged_values_are_harmless() {
        // From the future, NaN, infinite: none of them decides anything or panics.
        let mut e = entry();
        e.quic = Some(Measured { bytes_per_sec: f64::NAN, at: NOW });
        e.tcp = Some(Measured { bytes_per_sec: 1e9, at: u64::MAX });
        e.quic_unanswered_at = Some(u64::MAX);
        assert_eq!(e.plan(NOW).first, Transport::Quic);
        e.tcp = Some(Measured { bytes_per_sec: f64::INFINITY, at: NOW });
        let _ = e.plan(NOW);
        for junk in [&b"{"[..], b"null", b"[]", b"{\"servers\":7}", &[0xff; 100]] {
            assert_eq!(parse(junk), CacheFile::default());
        }
        let many = CacheFile { servers: vec![entry(); 1000] };
        assert_eq!(parse(&serde_json::to_vec(&many).unwrap()).servers.len(), MAX_SERVERS);
    }
}
