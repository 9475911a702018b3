//! The rsync-based movers users run today to replicate a volume between two pods, set up the
//! way those projects set them up, so `compare` can put Ferry next to them:
//!
//! - **VolSync-style** ([`volsync`]), after VolSync's `mover-rsync-tls` (its `client.sh` and
//!   `server.sh`): on the destination side, stunnel in server mode with a pre-shared key, which
//!   starts `rsync --server --daemon` for each connection (inetd style); on the source side,
//!   stunnel in client mode on 127.0.0.1, and two rsync passes through it: `rsync -aAhHSxz`
//!   (preserve everything, compress), then `rsync -rx --ignore-existing --ignore-non-existing
//!   --delete`, which only deletes.
//! - **pv-migrate-style** ([`pv_migrate`]), after pv-migrate's rsync strategy: `rsync -az
//!   --delete` over ssh, to an sshd on the destination side (a non-standard port, a host key and
//!   an authorized key generated for the comparison by [`make_keys`]).
//!
//! Differences from the originals, all about measuring rather than moving: the source is given
//! as `SRC/` (VolSync passes `SRC/*`, which leaves the destination root's own times alone and
//! would fail the check after every run); `--no-human-readable` and `--stats` are added so the
//! statistics parse (`-h` only formats numbers); VolSync's retry loop and its "control" module
//! that tells the server to exit are left out (one attempt, the server is stopped by the
//! harness).
//!
//! Each helper process is measured: the source side's account is the rsync passes plus the
//! stunnel client (or the ssh client, a child of rsync), the destination side's is the stunnel
//! server with the rsync processes it started (or sshd with its sessions).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::measure::{self, Held};
use crate::tools::{
    args, check, free_port, parse_rsync_stats, rsyncd_conf, slash, tail, unique, wait_listening,
    Env, Tool, ToolRun, Transfer, MODULE,
};

/// The VolSync-style command lines, for the report.
pub const VOLSYNC_COMMAND: &str = "rsync -aAhHSxz --no-human-readable --exclude=lost+found \
    --stats SRC/ rsync://127.0.0.1:PORT/ferrybench, then rsync -rx --exclude=lost+found \
    --ignore-existing --ignore-non-existing --delete --stats SRC/ \
    rsync://127.0.0.1:PORT/ferrybench, through stunnel (client, PSK) on the source side to \
    stunnel (server, PSK, exec rsync --server --daemon) on the destination side";

/// The pv-migrate-style command line, for the report.
pub const PV_MIGRATE_COMMAND: &str = "rsync -az --delete --stats -e 'ssh -p PORT -i KEY -o \
    StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null' SRC/ root@ADDR:DST/ (sshd -D on \
    the destination side)";

/// Which of the movers' programs are missing here, with how to install them.
pub fn missing(tool: Tool) -> Option<String> {
    let need: &[&str] = match tool {
        Tool::VolsyncStyle => &["stunnel"],
        Tool::PvMigrateStyle => &["ssh", "ssh-keygen", SSHD],
        _ => &[],
    };
    let gone: Vec<&str> = need.iter().copied().filter(|p| !on_path(p)).collect();
    (!gone.is_empty()).then(|| {
        format!(
            "{} not found (install: apt-get install -y {})",
            gone.join(", "),
            if tool == Tool::VolsyncStyle { "stunnel4" } else { "openssh-server openssh-client" }
        )
    })
}

const SSHD: &str = "/usr/sbin/sshd";

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Makes the movers' keys in `dir` (untimed, once per comparison): a pre-shared key for
/// stunnel, an ssh host key and a client key with its `authorized_keys`.
///
/// # Errors
/// When `ssh-keygen` fails (only when the pv-migrate-style mover runs) or on I/O errors.
pub fn make_keys(dir: &Path, ssh: bool) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&dir.join("psk.txt"), format!("volsync:{hex}\n").as_bytes())?;
    if ssh {
        for name in ["host_ed25519", "client_ed25519"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-bench", "-f"])
                .arg(dir.join(name))
                .output()
                .context("running ssh-keygen")?;
            if !out.status.success() {
                bail!("ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys"))?;
    }
    Ok(dir.to_path_buf())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::File::options().write(true).create_new(true).mode(0o600).open(path)?;
    std::io::Write::write_all(&mut f, bytes)?;
    Ok(())
}

fn keys(env: &Env) -> Result<&Path> {
    env.keys.as_deref().context("the rsync-based movers need their keys (Env::keys)")
}

/// The stunnel options both ends share, VolSync's.
const STUNNEL_GLOBAL: &str = "foreground = yes\npid =\nsyslog = no\n\
    socket = l:SO_KEEPALIVE=1\nsocket = l:TCP_KEEPIDLE=180\n\
    socket = r:SO_KEEPALIVE=1\nsocket = r:TCP_KEEPIDLE=180\n";

/// Starts stunnel with `conf` in `netns`, under the wrapper in hold mode, and waits until it
/// listens on `port`.
fn stunnel(env: &Env, netns: Option<&str>, conf: &Path, port: u16) -> Result<Held> {
    let log = conf.with_extension("log");
    let a = vec![conf.as_os_str().to_owned()];
    let mut held = Held::start_in(netns, &env.wrapper, &env.scratch, "stunnel", &a, &[], &log)?;
    if !wait_listening(&mut held, port)? {
        bail!("stunnel exited at start:\n{}", tail(&crate::tools::read_log(&log), 20));
    }
    Ok(held)
}

/// The VolSync-style mover from `src` into `dst`.
///
/// # Errors
/// When a step fails.
pub fn volsync(env: &Env, src: &Path, dst: &Path) -> Result<ToolRun> {
    let keys = keys(env)?;
    let psk = keys.join("psk.txt");
    let stem = env.scratch.join(format!("volsync-{}-{}", std::process::id(), unique()));
    // The daemon's options VolSync sets (it runs the mover privileged here: uid 0).
    let (rsyncd, _) =
        rsyncd_conf(env, dst, "numeric ids = true\nopen noatime = true\nreverse lookup = false\n")?;
    let server_port = free_port()?;
    let server_conf = stem.with_extension("server.conf");
    fs::write(
        &server_conf,
        format!(
            "{STUNNEL_GLOBAL}[rsync]\nciphers = PSK\nPSKsecrets = {}\naccept = {}:{server_port}\n\
             client = no\nexec = {}\nexecargs = rsync --server --daemon --config={} .\n",
            psk.display(),
            env.server_ip(),
            which("rsync")?.display(),
            rsyncd.display()
        ),
    )?;
    let server = stunnel(env, env.dst_ns(), &server_conf, server_port)?;
    let client_port = free_port()?;
    let client_conf = stem.with_extension("client.conf");
    fs::write(
        &client_conf,
        format!(
            "{STUNNEL_GLOBAL}[rsync]\nciphers = PSK\nPSKsecrets = {}\n\
             accept = 127.0.0.1:{client_port}\nclient = yes\nconnect = {}:{server_port}\n",
            psk.display(),
            env.server_ip()
        ),
    )?;
    let client = stunnel(env, env.src_ns(), &client_conf, client_port)?;
    let url = format!("rsync://127.0.0.1:{client_port}/{MODULE}");
    let o = |s: &'static str| OsStr::new(s);
    let first = args([
        o("-aAhHSxz"),
        o("--no-human-readable"),
        o("--exclude=lost+found"),
        o("--stats"),
        &slash(src),
        OsStr::new(&url),
    ]);
    let second = args([
        o("-rx"),
        o("--exclude=lost+found"),
        o("--ignore-existing"),
        o("--ignore-non-existing"),
        o("--delete"),
        o("--stats"),
        &slash(src),
        OsStr::new(&url),
    ]);
    let run = |a: &[OsString]| {
        let m = measure::run_in(env.src_ns(), &env.wrapper, &env.scratch, "rsync", a)?;
        check(Tool::VolsyncStyle, &m)?;
        let t = parse_rsync_stats(&m.stdout)?;
        Ok::<_, anyhow::Error>((m.usage, t))
    };
    let passes = run(&first).and_then(|a| Ok((a, run(&second)?)));
    let client = client.finish();
    let server = server.finish();
    let ((u1, t1), (u2, t2)) = passes?;
    let source_side = u1.plus(&u2).beside(&client?);
    Ok(ToolRun { client: source_side, server: Some(server?), transfer: sum(&t1, &t2), veth: None })
}

/// The pv-migrate-style mover from `src` into `dst`.
///
/// # Errors
/// When a step fails.
pub fn pv_migrate(env: &Env, src: &Path, dst: &Path) -> Result<ToolRun> {
    let keys = keys(env)?;
    // sshd insists on its privilege separation directory.
    fs::create_dir_all("/run/sshd").context("creating /run/sshd for sshd")?;
    let stem = env.scratch.join(format!("sshd-{}-{}", std::process::id(), unique()));
    let conf = stem.with_extension("conf");
    let log = stem.with_extension("log");
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress {}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
                env.server_ip(),
                keys.join("host_ed25519").display(),
                keys.join("authorized_keys").display()
            ),
        )?;
        let a: Vec<OsString> = ["-D", "-e", "-f"]
            .into_iter()
            .map(OsString::from)
            .chain([conf.as_os_str().to_owned()])
            .collect();
        let mut held =
            Held::start_in(env.dst_ns(), &env.wrapper, &env.scratch, SSHD, &a, &[], &log)?;
        if !wait_listening(&mut held, port)? {
            last = tail(&crate::tools::read_log(&log), 10);
            continue;
        }
        let ssh = format!(
            "ssh -p {port} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o BatchMode=yes -o LogLevel=ERROR",
            keys.join("client_ed25519").display()
        );
        let mut target = OsString::from(format!("root@{}:", env.server_ip()));
        target.push(slash(dst));
        let o = |s: &'static str| OsStr::new(s);
        let a = args([
            o("-az"),
            o("--delete"),
            o("--stats"),
            o("-e"),
            OsStr::new(&ssh),
            &slash(src),
            &target,
        ]);
        let m = measure::run_in(env.src_ns(), &env.wrapper, &env.scratch, "rsync", &a);
        let server = held.finish();
        let m = m?;
        if !m.usage.success() {
            bail!(
                "pv-migrate-style failed ({}):\n{}\nsshd's log:\n{}",
                m.usage.describe_exit(),
                tail(&m.stderr, 20),
                tail(&crate::tools::read_log(&log), 20)
            );
        }
        return Ok(ToolRun {
            client: m.usage,
            server: Some(server?),
            transfer: parse_rsync_stats(&m.stdout)?,
            veth: None,
        });
    }
    bail!("sshd exited at start five times; last log:\n{last}")
}

fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found on PATH"))
}

fn sum(a: &Transfer, b: &Transfer) -> Transfer {
    let add = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    Transfer {
        wire_sent: add(a.wire_sent, b.wire_sent),
        wire_received: add(a.wire_received, b.wire_received),
        literal: add(a.literal, b.literal),
        matched: add(a.matched, b.matched),
        payload: None,
        signature: None,
        files_transferred: add(a.files_transferred, b.files_transferred),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_passes_add_up() {
        let a = Transfer { wire_sent: Some(10), wire_received: Some(1), ..Transfer::default() };
        let b = Transfer { wire_sent: Some(5), wire_received: None, ..Transfer::default() };
        let s = sum(&a, &b);
        assert_eq!((s.wire_sent, s.wire_received), (Some(15), Some(1)));
    }
}
