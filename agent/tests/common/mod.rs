//! What the agent's integration tests share: the `ferry` binary, a `ferry serve` child and
//! fresh credentials.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
