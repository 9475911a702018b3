//! Measuring a command: wall time, CPU time (user + sys) and peak RSS of its process tree.
//!
//! Every measured command runs under `ferry-bench measure`, a small wrapper process whose only
//! child is the command. After waiting for it, the wrapper calls
//! `getrusage(RUSAGE_CHILDREN)`, which is then exactly that command's account, and writes it
//! as JSON for the harness ([`run`], [`Held`]).
//!
//! Why not `wait4` straight from the harness: Linux seeds a process's peak RSS (`ru_maxrss`)
//! with the high-water mark of the memory map it had when it called `exec`, and a child spawned
//! by `ferry-bench` (vfork or fork) execs from `ferry-bench`'s map, whose high-water mark the
//! dataset generator drives up. The wrapper is a fresh process that stays at a few MiB, so the
//! measured command inherits only that: the floor of every peak-RSS figure, which `compare`
//! measures (the wrapper running `true`) and reports.
//!
//! What the figures mean for a tree of processes (local rsync runs as three processes, an rsync
//! daemon forks one per connection, and that one forks again):
//! - CPU time is summed over the command and every descendant that was waited for (rsync waits
//!   for its children, the daemon reaps its connection processes);
//! - peak RSS is `ru_maxrss`: the largest peak of any single process of the tree, not a sum.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;
use serde::{Deserialize, Serialize};

/// What a measured command used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time from spawn to exit, seconds.
    pub wall_secs: f64,
    /// User CPU time of the tree, seconds.
    pub user_secs: f64,
    /// System CPU time of the tree, seconds.
    pub sys_secs: f64,
    /// Largest peak resident set of any one process of the tree, bytes.
    pub max_rss_bytes: u64,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
}

impl Usage {
    /// User + system CPU time, seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.user_secs + self.sys_secs
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Two commands run one after the other on one side: wall and CPU times add up, the peak RSS is the
    /// larger, the exit status is the first failure's.
    pub fn plus(&self, other: &Usage) -> Usage {
        let failed = if self.success() { other } else { self };
        Usage {
            wall_secs: self.wall_secs + other.wall_secs,
            user_secs: self.user_secs + other.user_secs,
            sys_secs: self.sys_secs + other.sys_secs,
            max_rss_bytes: self.max_rss_bytes.max(other.max_rss_bytes),
            exit_code: failed.exit_code,
            signal: failed.signal,
        }
    }

    /// A helper that ran beside this command for its whole duration (a tunnel): its CPU time
    /// adds up, the wall time stays this command's, the peak RSS is the larger.
    pub fn beside(&self, helper: &Usage) -> Usage {
        Usage { wall_secs: self.wall_secs, ..self.plus(&Usage { wall_secs: 0.0, ..*helper }) }
    }

    /// "exit code N" or "signal N".
    pub fn describe_exit(&self) -> String {
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "unknown status".to_string(),
        }
    }
}

/// The wrapper itself (`ferry-bench measure --report FILE [--hold] -- COMMAND...`): runs
/// `command`, waits for it, writes its [`Usage`] as JSON to `report`.
///
/// With `hold` (long-running servers such as an rsync daemon), the command's stdin is
/// `/dev/null`, and the wrapper keeps it running until its own stdin reaches end of file (the
/// harness closes it, or dies). It then waits until the command has no child processes left,
/// so that every connection process has been reaped into its account, and kills it (SIGKILL).
/// If the command exits on its own first, that is reported as is.
///
/// # Errors
/// When the command cannot be started, or the report cannot be written.
pub fn wrapper_main(report: &Path, hold: bool, command: &[OsString]) -> Result<()> {
    let (program, args) = command.split_first().context("measure: no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if hold {
        cmd.stdin(Stdio::null());
    }
    let t = Instant::now();
    let mut child =
        cmd.spawn().with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let status = if hold { hold_until_stdin_closes(&mut child)? } else { child.wait()? };
    let wall_secs = t.elapsed().as_secs_f64();
    // The wrapper has had exactly one child, now waited for: RUSAGE_CHILDREN is its account.
    let ru = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let usage = Usage {
        wall_secs,
        user_secs: ru.user_time().num_microseconds() as f64 / 1e6,
        sys_secs: ru.system_time().num_microseconds() as f64 / 1e6,
        // Linux reports kilobytes.
        max_rss_bytes: u64::try_from(ru.max_rss()).unwrap_or(0) * 1024,
        exit_code: status.code(),
        signal: status.signal(),
    };
    fs::write(report, serde_json::to_vec(&usage)?)
        .with_context(|| format!("writing {}", report.display()))?;
    Ok(())
}

fn hold_until_stdin_closes(child: &mut Child) -> Result<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    // A child still listed (running or a zombie) is not yet in the command's account.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !children_of(child.id()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // It may have exited meanwhile; killing a zombie is harmless, and wait reports either way.
    let _ = child.kill();
    Ok(child.wait()?)
}

/// Processes whose parent is `pid` (zombies included), from `/proc`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let child: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(e.path().join("stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
        let rest = &stat[stat.rfind(')')? + 1..];
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}

/// The wrapper's command line, in network namespace `netns` when given: `ip netns exec NETNS
/// WRAPPER` (`ip` enters the namespace and execs the wrapper in the same process, so the
/// wrapper's process is still the one the harness waits for and signals).
fn wrapper_command(wrapper: &Path, netns: Option<&str>) -> Command {
    match netns {
        None => Command::new(wrapper),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(wrapper);
            c
        }
    }
}

static NEXT_REPORT: AtomicU64 = AtomicU64::new(0);

fn report_path(scratch: &Path) -> PathBuf {
    let n = NEXT_REPORT.fetch_add(1, Ordering::Relaxed);
    scratch.join(format!("rusage-{}-{n}.json", std::process::id()))
}

fn read_report(report: &Path) -> Result<Usage> {
    let bytes = fs::read(report).with_context(|| format!("reading {}", report.display()))?;
    let _ = fs::remove_file(report);
    Ok(serde_json::from_slice(&bytes)?)
}

/// A command's output and usage.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What it used.
    pub usage: Usage,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `program args` under the wrapper `wrapper` (the `ferry-bench` executable), capturing
/// its output; report files go to `scratch`. A command that fails is not an error here: see
/// [`Usage::success`].
///
/// # Errors
/// When the wrapper cannot run or cannot start the command.
pub fn run(
    wrapper: &Path,
    scratch: &Path,
    program: impl AsRef<OsStr>,
    args: &[OsString],
) -> Result<Measured> {
    run_in(None, wrapper, scratch, program, args)
}

/// [`run`] in network namespace `netns` when given.
///
/// # Errors
/// When the wrapper cannot run or cannot start the command.
pub fn run_in(
    netns: Option<&str>,
    wrapper: &Path,
    scratch: &Path,
    program: impl AsRef<OsStr>,
    args: &[OsString],
) -> Result<Measured> {
    let program = program.as_ref();
    let report = report_path(scratch);
    let out = wrapper_command(wrapper, netns)
        .arg("measure")
        .arg("--report")
        .arg(&report)
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", wrapper.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("could not measure {}: {}", program.to_string_lossy(), stderr.trim());
    }
    Ok(Measured {
        usage: read_report(&report)?,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    })
}

/// A long-running command (a server) under the wrapper in hold mode: it runs until
/// [`Held::finish`] (or drop), then reports its whole account.
#[derive(Debug)]
pub struct Held {
    wrapper: Child,
    report: PathBuf,
}

impl Held {
    /// Starts `program args` under the wrapper, with `env` added to its environment and its
    /// output (stdout and stderr) appended to `log`.
    ///
    /// # Errors
    /// When the wrapper cannot start.
    pub fn start(
        wrapper: &Path,
        scratch: &Path,
        program: impl AsRef<OsStr>,
        args: &[OsString],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Held> {
        Held::start_in(None, wrapper, scratch, program, args, env, log)
    }

    /// [`Held::start`] in network namespace `netns` when given.
    ///
    /// # Errors
    /// When the wrapper cannot start.
    pub fn start_in(
        netns: Option<&str>,
        wrapper: &Path,
        scratch: &Path,
        program: impl AsRef<OsStr>,
        args: &[OsString],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Held> {
        let report = report_path(scratch);
        let out = File::options().create(true).append(true).open(log)?;
        let child = wrapper_command(wrapper, netns)
            .arg("measure")
            .arg("--hold")
            .arg("--report")
            .arg(&report)
            .arg("--")
            .arg(program.as_ref())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("running {}", wrapper.display()))?;
        Ok(Held { wrapper: child, report })
    }

    /// The wrapper's process id (the command is its only child).
    pub fn wrapper_pid(&self) -> u32 {
        self.wrapper.id()
    }

    /// Whether the command has already ended (the wrapper exits right after it).
    ///
    /// # Errors
    /// When the wrapper's status cannot be read.
    pub fn ended(&mut self) -> Result<bool> {
        Ok(self.wrapper.try_wait()?.is_some())
    }

    /// Stops the command (after its children are gone) and returns its account.
    ///
    /// # Errors
    /// When the wrapper failed or wrote no report.
    pub fn finish(mut self) -> Result<Usage> {
        drop(self.wrapper.stdin.take());
        let status = self.wrapper.wait()?;
        if !status.success() {
            bail!("the measuring wrapper of a server failed ({status})");
        }
        read_report(&self.report)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Closing the wrapper's stdin is what stops the server: never leave one behind.
        drop(self.wrapper.stdin.take());
        let _ = self.wrapper.wait();
    }
}
