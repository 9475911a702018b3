//! A round inside a long-running agent (`Tool::FerryEvery`): what a sidecar running
//! `ferry push --every` costs per round, as opposed to one `ferry push` process per round.
//!
//! The agent pushes from a fixed directory, the *slot* (in the scratch directory, on the same
//! filesystem as the datasets), to a fresh `ferry serve --state-dir`:
//!
//! 1. the slot holds what the destination already holds (the scenario's `basis`, moved in by
//!    `rename`; an empty directory for an initial round), and the agent starts with `--every
//!    24h`, so its first round, the warm-up, finds nothing to do but set up the connection and
//!    the server's state;
//! 2. the slot's tree is swapped for the scenario's source (two renames, no copying), and
//!    `SIGUSR1` starts the measured round (the agent's manual trigger);
//! 3. the round's time is the agent's own, `last_duration_secs` of its `--status-file` (the
//!    runner's record of the round, from its start to its end); CPU times are the agent's and
//!    the server's `/proc/PID/stat` times read before the trigger and after the round, peak RSS
//!    their `VmHWM` (over their lifetime), wire bytes the veth counters around the round;
//! 4. the agent and server stop, and the trees move back where they came from.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::measure::{children_of, Held, Usage};
use crate::tools::{
    args, read_log, state_dir_for, tail, unique, Env, FerryServe, ToolRun, Transfer, MODULE,
};

/// How long a round may take before the comparison gives up on it.
const ROUND_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs the scenario from `src` into `dst` (which holds `basis`, or is empty) as the second
/// round of a long-running agent.
///
/// # Errors
/// When the agent or server fails, or a round does not end within half an hour.
pub(crate) fn run(env: &Env, src: &Path, dst: &Path, basis: Option<&Path>) -> Result<ToolRun> {
    let creds = env.creds.as_deref().context("ferry --every needs Env::creds")?;
    let slot = env.scratch.join("every-source");
    ensure!(!slot.exists(), "{} is left from an earlier run", slot.display());
    // Step 1: the slot holds what the destination holds.
    match basis {
        Some(b) => fs::rename(b, &slot).with_context(|| format!("moving {} in", b.display()))?,
        None => fs::create_dir(&slot)?,
    }
    let swapped = Swap { slot: slot.clone(), basis: basis.map(Path::to_path_buf), src: None };
    let state = state_dir_for(dst);
    let _ = fs::remove_dir_all(&state);
    let extra = vec![OsString::from("--state-dir"), state.as_os_str().to_owned()];
    let server = FerryServe::start_with(env, &env.ferry, creds, dst, &extra)?;
    let result = measured_round(env, creds, &server, swapped, src);
    let server_usage = server.finish_after(if result.is_ok() { 2 } else { 0 });
    let _ = fs::remove_dir_all(&state);
    let (client, server_round, transfer, veth) = result?;
    server_usage?;
    Ok(ToolRun { client, server: Some(server_round), transfer, veth })
}

type Round = (Usage, Usage, Transfer, Option<crate::compare::VethBytes>);

fn measured_round(
    env: &Env,
    creds: &Path,
    server: &FerryServe,
    mut swap: Swap,
    src: &Path,
) -> Result<Round> {
    let status = env.scratch.join(format!("every-status-{}-{}.json", std::process::id(), unique()));
    let log = status.with_extension("log");
    let url = format!("ferry://{}/{MODULE}", server.addr);
    let o = |s: &'static str| OsStr::new(s);
    let a = args([
        o("push"),
        o("--every"),
        o("24h"),
        o("--delete"),
        o("--json"),
        o("--no-progress"),
        o("--status-file"),
        status.as_os_str(),
        o("--identity"),
        creds.join("source").as_os_str(),
        swap.slot.as_os_str(),
        OsStr::new(&url),
    ]);
    let mut agent = Held::start_in(
        env.src_ns(),
        &env.wrapper,
        &env.scratch,
        &env.ferry,
        &a,
        &[("RUST_LOG", "info")],
        &log,
    )?;
    let fail = |what: &str| {
        format!(
            "ferry --every: {what}\nagent's log:\n{}\nferry serve's log:\n{}",
            tail(&read_log(&log), 20),
            tail(&read_log(&server.log), 20)
        )
    };
    wait_round(&mut agent, &status, 1).map_err(|e| anyhow::anyhow!(fail(&format!("{e:#}"))))?;
    // Step 2: the source replaces the basis in the slot.
    swap.bring_in(src)?;
    let agent_pid = only_child(agent.wrapper_pid()).context("the agent's process")?;
    let server_pid = only_child(server.held.wrapper_pid()).context("the server's process")?;
    let ticks = clock_ticks();
    let veth_before = env.net.as_ref().map(|n| n.counters()).transpose()?;
    let (a0, s0) = (cpu_secs(agent_pid, ticks)?, cpu_secs(server_pid, ticks)?);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agent_pid as i32).context("agent pid")?,
        rustix::process::Signal::USR1,
    )
    .context("sending SIGUSR1 to the agent")?;
    let v =
        wait_round(&mut agent, &status, 2).map_err(|e| anyhow::anyhow!(fail(&format!("{e:#}"))))?;
    // The server's account of the round ends when it logs the round's end.
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_log(&server.log).matches(": round complete: ").count() < 2 {
        if Instant::now() > deadline {
            bail!(fail("the server did not log the measured round's end"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (a1, s1) = (cpu_secs(agent_pid, ticks)?, cpu_secs(server_pid, ticks)?);
    let veth = match (&env.net, veth_before) {
        (Some(n), Some(b)) => Some(n.since(b)?),
        _ => None,
    };
    let (agent_rss, server_rss) = (peak_rss(agent_pid), peak_rss(server_pid));
    drop(agent.finish());
    let wall = v.pointer("/last_duration_secs").and_then(Value::as_f64).unwrap_or(0.0);
    let usage = |(u0, k0): (f64, f64), (u1, k1): (f64, f64), rss: u64| Usage {
        wall_secs: wall,
        user_secs: u1 - u0,
        sys_secs: k1 - k0,
        max_rss_bytes: rss,
        exit_code: Some(0),
        signal: None,
    };
    let u = |p: &str| v.pointer(p).and_then(Value::as_u64);
    let transfer = Transfer {
        wire_sent: u("/last_wire_bytes_sent"),
        wire_received: None,
        literal: u("/last_stats/literal_bytes"),
        matched: u("/last_stats/matched_bytes"),
        payload: u("/last_stats/payload_bytes"),
        signature: u("/last_stats/signature_bytes"),
        files_transferred: Some(
            u("/last_stats/files_new").unwrap_or(0) + u("/last_stats/files_changed").unwrap_or(0),
        ),
    };
    swap.restore()?;
    Ok((usage(a0, a1, agent_rss), usage(s0, s1, server_rss), transfer, veth))
}

/// Waits until the agent's status file records `n` successful rounds; returns the status.
fn wait_round(agent: &mut Held, status: &Path, n: u64) -> Result<Value> {
    let deadline = Instant::now() + ROUND_LIMIT;
    loop {
        if let Ok(bytes) = fs::read(status) {
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                let count = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
                if count("rounds_failed") > 0 {
                    bail!(
                        "round {n} failed: {}",
                        v.get("last_result").and_then(Value::as_str).unwrap_or("?")
                    );
                }
                if count("rounds_ok") >= n {
                    return Ok(v);
                }
            }
        }
        if agent.ended()? {
            bail!("the agent exited before round {n} ended");
        }
        if Instant::now() > deadline {
            bail!("round {n} did not end within {} s", ROUND_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Moves trees in and out of the slot, and back where they came from on drop (also after an
/// error, so the datasets stay where the comparison expects them).
struct Swap {
    slot: PathBuf,
    /// Where the slot's first tree came from (`None`: an empty directory made for it).
    basis: Option<PathBuf>,
    /// Where the slot's current tree came from, once swapped.
    src: Option<PathBuf>,
}

impl Swap {
    fn bring_in(&mut self, src: &Path) -> Result<()> {
        if self.basis.as_deref() == Some(src) {
            // A no-change round: the slot already holds the source.
            return Ok(());
        }
        self.put_back_basis()?;
        fs::rename(src, &self.slot).with_context(|| format!("moving {} in", src.display()))?;
        self.src = Some(src.to_path_buf());
        Ok(())
    }

    fn put_back_basis(&mut self) -> Result<()> {
        match self.basis.take() {
            Some(b) => fs::rename(&self.slot, &b)
                .with_context(|| format!("moving {} back", b.display()))?,
            None => fs::remove_dir(&self.slot)?,
        }
        Ok(())
    }

    fn restore(&mut self) -> Result<()> {
        if let Some(s) = self.src.take() {
            fs::rename(&self.slot, &s).with_context(|| format!("moving {} back", s.display()))?;
        } else if self.slot.exists() {
            self.put_back_basis()?;
        }
        Ok(())
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

fn only_child(pid: u32) -> Result<u32> {
    let c = children_of(pid);
    match c.as_slice() {
        [one] => Ok(*one),
        _ => bail!("expected one child of process {pid}, found {c:?}"),
    }
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// (user, system) CPU seconds of process `pid`, all its threads.
fn cpu_secs(pid: u32, ticks: f64) -> Result<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_times(&stat)
        .map(|(u, s)| (u as f64 / ticks, s as f64 / ticks))
        .with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))
}

/// utime and stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name in
/// parentheses may hold spaces, so fields are counted after its last `)`.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// `VmHWM` of `pid`, bytes (0 when unreadable).
fn peak_rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let stat = "4242 (ferry (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 731 92 0 0 20 0 9 0";
        assert_eq!(parse_stat_times(stat), Some((731, 92)));
        assert_eq!(parse_stat_times("garbage"), None);
    }

    #[test]
    fn the_slot_gives_trees_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (basis, src, slot) =
            (tmp.path().join("basis"), tmp.path().join("src"), tmp.path().join("slot"));
        fs::create_dir(&basis).expect("basis");
        fs::create_dir(&src).expect("src");
        fs::write(src.join("f"), b"x").expect("file");
        fs::rename(&basis, &slot).expect("in");
        let mut swap = Swap { slot: slot.clone(), basis: Some(basis.clone()), src: None };
        swap.bring_in(&src).expect("swap");
        assert!(basis.is_dir() && !src.exists() && slot.join("f").is_file());
        drop(swap);
        assert!(basis.is_dir() && src.join("f").is_file() && !slot.exists());
    }
}
