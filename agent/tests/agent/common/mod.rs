//! What the agent's integration tests share: the `ferry` binary, a `ferry serve` child,
//! fresh credentials, sample trees and the judge of tree equality.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub(crate) mod peer;
mod tree;

pub(crate) use tree::{assert_same_tree, Tree};

use ferry_agent::net::credentials as init;

/// The `ferry` binary of this workspace.
pub(crate) const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A `ferry serve` child process, killed on drop.
pub(crate) struct Server {
    /// The process.
    pub(crate) child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials in `dir/{destination,source}`, valid now.
pub(crate) fn creds(dir: &Path) -> PathBuf {
    let pair = init::generate_for_days(&["localhost".into(), "127.0.0.1".into()], 30).unwrap();
    init::write_identity(&dir.join("destination"), &pair.destination).unwrap();
    init::write_identity(&dir.join("source"), &pair.source).unwrap();
    dir.to_path_buf()
}

/// Starts `ferry serve` on a free loopback port with `modules` and `extra` flags.
pub(crate) fn serve_with(identity: &Path, modules: &[String], extra: &[&str]) -> Server {
    let mut cmd = Command::new(FERRY);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--identity"]).arg(identity).args(extra);
    for m in modules {
        cmd.args(["--module", m]);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    Server { child, addr }
}

pub(crate) fn serve(identity: &Path, modules: &[String]) -> Server {
    serve_with(identity, modules, &[])
}

pub(crate) fn ferry(args: &[&str]) -> Output {
    Command::new(FERRY).args(args).output().expect("ferry runs")
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub(crate) fn check_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn sample(root: &Path) {
    std::fs::create_dir_all(root.join("db/wal")).unwrap();
    let big: Vec<u8> =
        (0..(9u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(root.join("db/data.bin"), &big).unwrap();
    for i in 0..50 {
        std::fs::write(root.join(format!("db/wal/{i:04}.log")), format!("entry {i}\n").repeat(100))
            .unwrap();
    }
    std::os::unix::fs::symlink("data.bin", root.join("db/current")).unwrap();
}

/// The workspace's one pseudo-random generator: the same seed, the same numbers, so a failure
/// replays.
pub(crate) use ferry_core::rng::SplitMix64 as Rng;

/// `len` incompressible bytes from `seed`: zstd cannot shrink them.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    Rng::bytes(seed, len)
}

/// A copy of the tree under `from` as it is now, at `to`, to compare with later: rsync -aHAX
/// keeps everything the judge compares, and with `--modify-window=-1` it sets every mtime to
/// the nanosecond (by default it leaves one that is already right to the second).
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("rsync")
        .args(["-aHAX", "--modify-window=-1"])
        .arg(format!("{}/", from.display()))
        .arg(to)
        .output()
        .expect("rsync is installed (apt-get install rsync); the tests copy trees with it");
    check_ok(&out);
}

/// One HTTP/1.1 request; returns the status code and the body.
pub(crate) fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, "")
}

/// One HTTP/1.1 request with `headers` (each ending in CRLF); returns the status code and the
/// body.
pub(crate) fn http_with(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// The set-up most push tests share: credentials, a source directory, and `ferry serve` of
/// one module `m` (the destination directory), all in one temp directory kept alive here.
pub(crate) struct Pair {
    /// The temp directory holding everything below.
    pub(crate) t: tempfile::TempDir,
    /// `creds(t)`: `destination/` and `source/` identities.
    pub(crate) creds: PathBuf,
    /// The source tree (created empty).
    pub(crate) src: PathBuf,
    /// The module's directory on the server.
    pub(crate) dst: PathBuf,
    /// The server's state directory, when it was given one ([`Pair::with_state`]).
    pub(crate) state: PathBuf,
    /// The server.
    pub(crate) srv: Server,
}

impl Pair {
    /// Serves `m=DST` plus `suffix` (`""`, `":ro"`, `":wo"`) with `extra` serve flags; `prepare`
    /// runs on `(src, dst)` before the server starts.
    pub(crate) fn start(
        suffix: &str,
        extra: &[&str],
        state: bool,
        prepare: impl FnOnce(&Path, &Path),
    ) -> Pair {
        let t = tempfile::tempdir().unwrap();
        let c = creds(t.path());
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        let state_dir = t.path().join("state");
        std::fs::create_dir_all(&src).unwrap();
        prepare(&src, &dst);
        let mut flags: Vec<&str> = Vec::new();
        if state {
            flags.extend(["--state-dir", s(&state_dir)]);
        }
        flags.extend_from_slice(extra);
        let srv = serve_with(&c.join("destination"), &[format!("m={}{suffix}", s(&dst))], &flags);
        Pair { t, creds: c, src, dst, state: state_dir, srv }
    }

    /// A served module without a state directory.
    pub(crate) fn new() -> Pair {
        Pair::start("", &[], false, |_, _| {})
    }

    /// A served module with a state directory and `extra` serve flags.
    pub(crate) fn with_state(extra: &[&str]) -> Pair {
        Pair::start("", extra, true, |_, _| {})
    }

    /// `ferry://127.0.0.1:PORT/m`.
    pub(crate) fn url(&self) -> String {
        format!("ferry://127.0.0.1:{}/m", self.srv.addr.port())
    }

    /// `ferry push SRC URL --identity SOURCE` with `extra` flags.
    pub(crate) fn push(&self, extra: &[&str]) -> Output {
        let url = self.url();
        let id = self.creds.join("source");
        ferry(&[&["push", s(&self.src), &url, "--identity", s(&id)][..], extra].concat())
    }

    /// `ferry snapshots ARGS[0] --state-dir STATE --module m ARGS[1..]`.
    pub(crate) fn snapshots(&self, args: &[&str]) -> Output {
        let base = ["snapshots", args[0], "--state-dir", s(&self.state), "--module", "m"];
        ferry(&[&base[..], &args[1..]].concat())
    }

    /// The module's snapshot records, oldest first (`snapshots list --json`).
    pub(crate) fn snapshot_list(&self) -> Vec<serde_json::Value> {
        let out = self.snapshots(&["list", "--json"]);
        check_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A command's standard output as JSON (panics with the output when it is not).
pub(crate) fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
