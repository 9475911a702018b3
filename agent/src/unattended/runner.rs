//! The loop of an unattended `ferry push` / `ferry pull`: wait for the schedule or a trigger,
//! run the round's attempts (hooks around each, a source image when asked, retries with
//! backoff for transient failures), record the status, and decide when to stop.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ferry_core::rng::SplitMix64;
use ferry_transport::printable;

use super::schedule::{Backoff, Retries, Schedule};
use super::status::Agent;
use crate::fs::image::{ImageError, SourceSnapshot};
use crate::net::{Direction, RemoteError, Url};
use crate::round::Report;

/// When and how rounds run, validated from the flags before anything starts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `--every` or `--schedule`; `None` runs once.
    pub schedule: Option<Schedule>,
    /// `--once`: one round even with a schedule.
    pub once: bool,
    /// `--jitter`.
    pub jitter: Option<Duration>,
    /// `--retries`.
    pub retries: Retries,
    /// `--retry-base` (and the cap).
    pub backoff: Backoff,
    /// `--status-file`.
    pub status_file: Option<PathBuf>,
    /// `--pre-round`.
    pub pre_round: Option<String>,
    /// `--post-round`.
    pub post_round: Option<String>,
    /// `--source-snapshot` (push only) and where its images go.
    pub source_image: Option<(SourceSnapshot, PathBuf)>,
}

/// Why one attempt at a round failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The round itself failed.
    #[error(transparent)]
    Round(#[from] RemoteError),
    /// A `--pre-round` command failed: the round did not start.
    #[error("the --pre-round command failed ({0}); the round did not start")]
    PreRound(String),
    /// The source's point-in-time image could not be taken: the round did not start.
    #[error("taking the source's point-in-time image failed ({0}); the round did not start")]
    SourceImage(#[from] ImageError),
}

impl AttemptError {
    /// Whether retrying later may succeed. The user's commands (a quiesce step, a storage
    /// snapshot) may well work a moment later.
    pub fn is_transient(&self) -> bool {
        match self {
            AttemptError::Round(e) => e.is_transient(),
            AttemptError::PreRound(_) | AttemptError::SourceImage(_) => true,
        }
    }
}

/// Where a round goes and what to tell its hooks.
#[derive(Debug)]
pub struct Target<'a> {
    /// Push or pull.
    pub direction: Direction,
    /// The local directory (the source of a push, the destination of a pull).
    pub local: &'a Path,
    /// The server's module.
    pub url: &'a Url,
}

/// Runs rounds as `plan` says until it is done: `round` runs one attempt reading from (or
/// writing to) the directory it is given, `report` shows a successful round's report.
/// `triggered` delivers manual triggers (`POST /trigger`, SIGUSR1).
///
/// # Errors
/// The last attempt's [`AttemptError`] when a round fails fatally, or transiently with no
/// schedule to wait for; writing the status file.
pub fn run(
    plan: &Plan,
    target: &Target<'_>,
    agent: &Arc<Agent>,
    triggered: &Receiver<()>,
    round: &mut dyn FnMut(&Path) -> Result<Report, RemoteError>,
    report: &mut dyn FnMut(&Report) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Seeded from the clock and the process id, so agents started together differ.
    let mut rng = SplitMix64::new(
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()),
    );
    let once = plan.once || plan.schedule.is_none();
    let mut due = SystemTime::now();
    let mut rounds_started = 0u64;
    loop {
        // Sleep until the round is due or a trigger arrives; a trigger during a round runs one
        // more right after it.
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        let manual = matches!(triggered.recv_timeout(wait), Ok(()));
        while triggered.try_recv().is_ok() {}
        if let (Some(j), false) = (plan.jitter, manual) {
            std::thread::sleep(j.mul_f64(rng.next_unit()));
        }
        let start = SystemTime::now();
        agent.round_started(start);
        let mut attempt = 0;
        rounds_started += 1;
        let result = loop {
            let r = attempt_round(plan, target, rounds_started, attempt, round);
            match r {
                Err(e) if e.is_transient() && plan.retries.allows(attempt) => {
                    let d = plan.backoff.delay(attempt, rng.next_unit());
                    tracing::warn!(
                        "round failed ({}); retry {} in {:.1} s",
                        printable(&e.to_string()),
                        attempt + 1,
                        d.as_secs_f64()
                    );
                    std::thread::sleep(d);
                    attempt += 1;
                }
                r => break r,
            }
        };
        let end = SystemTime::now();
        let (next, missed) = match (&plan.schedule, once) {
            // A manual round before the scheduled time leaves that time as it was.
            (Some(_), false) if manual && end < due => (Some(due), 0),
            (Some(s), false) => s.after_round(due, end),
            _ => (None, 0),
        };
        if missed > 0 {
            tracing::warn!("the round overran {missed} scheduled time(s); they were skipped");
        }
        let status = agent.round_finished(
            start,
            end,
            attempt + 1,
            result.as_ref().map_err(|e| e.to_string()),
            next,
            missed,
        );
        if let Some(path) = &plan.status_file {
            status.write(path).with_context(|| format!("writing {}", path.display()))?;
        }
        match result {
            Ok(r) => report(&r)?,
            // Fatal errors fail fast even on a schedule: retrying cannot fix them.
            Err(e) if once || !e.is_transient() => return Err(e.into()),
            Err(e) => tracing::error!(
                "round failed after {} attempt(s): {}; waiting for the next one",
                attempt + 1,
                printable(&e.to_string())
            ),
        }
        match next {
            Some(n) if !once => due = n,
            _ => return Ok(()),
        }
    }
}

/// One attempt: `--pre-round`, the source image, the round, then `--post-round` whenever
/// the pre-round command succeeded (or there is none), whatever happened in between.
fn attempt_round(
    plan: &Plan,
    target: &Target<'_>,
    round_no: u64,
    attempt: u32,
    round: &mut dyn FnMut(&Path) -> Result<Report, RemoteError>,
) -> Result<Report, AttemptError> {
    let env = [
        ("FERRY_ROOT", target.local.display().to_string()),
        (
            "FERRY_DIRECTION",
            if target.direction == Direction::Pull { "pull" } else { "push" }.into(),
        ),
        ("FERRY_URL", target.url.to_string()),
        ("FERRY_ROUND", round_no.to_string()),
        ("FERRY_ATTEMPT", (attempt + 1).to_string()),
    ];
    if let Some(pre) = &plan.pre_round {
        run_hook("--pre-round", pre, &env, None).map_err(AttemptError::PreRound)?;
    }
    let r = (|| {
        let image = match &plan.source_image {
            Some((how, dir)) => Some(how.take(target.local, dir)?),
            None => None,
        };
        let read_from = image.as_ref().map_or(target.local, |i| i.path.as_path());
        let r = round(read_from);
        // The image goes before --post-round: that command may clean up after it.
        drop(image);
        Ok(r?)
    })();
    if let Some(post) = &plan.post_round {
        let result = if r.is_ok() { "ok" } else { "error" };
        if let Err(e) = run_hook("--post-round", post, &env, Some(result)) {
            tracing::warn!("the --post-round command failed ({e})");
        }
    }
    r
}

/// Runs a `--pre-round`/`--post-round` command with `sh -c`; `Err` says how it failed.
pub(crate) fn run_hook(
    flag: &str,
    cmd: &str,
    env: &[(&str, String)],
    result: Option<&str>,
) -> Result<(), String> {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    if let Some(r) = result {
        c.env("FERRY_RESULT", r);
    }
    tracing::info!("running {flag}: {cmd}");
    match c.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(match s.code() {
            Some(code) => format!("{cmd:?} exited with {code}"),
            None => format!("{cmd:?} was killed by a signal"),
        }),
        Err(e) => Err(format!("{cmd:?} could not start: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue 10, defect 2: a source image that fails after `--pre-round` succeeded still runs
    /// `--post-round` (the application must not stay quiesced), and the failure is a failed
    /// attempt that a schedule survives, not an exit.
    #[test]
    fn post_round_runs_when_the_source_image_fails() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let url = Url::parse("ferry://127.0.0.1:1/m").unwrap();
        let plan = Plan {
            schedule: Some(Schedule::every("1h").unwrap()),
            once: false,
            jitter: None,
            retries: Retries::Count(1),
            backoff: Backoff { base: Duration::from_millis(1), max: Duration::from_millis(1) },
            status_file: None,
            pre_round: Some(format!("echo pre >> {}", log.display())),
            post_round: Some(format!("echo post $FERRY_RESULT >> {}", log.display())),
            source_image: Some((SourceSnapshot::Command("exit 3".into()), t.path().into())),
        };
        let target = Target { direction: Direction::Push, local: &src, url: &url };
        let mut rounds = 0;
        let r = attempt_round(&plan, &target, 1, 0, &mut |_| {
            rounds += 1;
            Ok(Report::default())
        });
        assert!(matches!(r, Err(AttemptError::SourceImage(_))), "{r:?}");
        assert!(r.as_ref().unwrap_err().is_transient(), "a schedule retries it");
        assert_eq!(rounds, 0, "no round without its image");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost error\n");
    }
}
