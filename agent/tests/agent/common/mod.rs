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
