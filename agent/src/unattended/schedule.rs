//! Unattended rounds: when to run (an interval or a cron expression, with jitter), how to retry
//! (exponential backoff with jitter, transient errors only), and what missed. Jitter draws from
//! the workspace's one generator, [`ferry_core::rng::SplitMix64`].
//!
//! Everything here takes the time as an argument and reads no clock, so schedules are tested
//! with fixed times.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// When rounds run.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every `Duration` after the previous scheduled time.
    Every(Duration),
    /// At the times a cron expression matches (UTC; 5 fields, or 6 with seconds).
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// `--every 30s|5m|1h30m`.
    ///
    /// # Errors
    /// A message for an unparsable or zero duration.
    pub fn every(s: &str) -> Result<Schedule, String> {
        let d = humantime::parse_duration(s).map_err(|e| format!("--every {s:?}: {e}"))?;
        if d.is_zero() {
            return Err(format!("--every {s:?}: the interval must be positive"));
        }
        Ok(Schedule::Every(d))
    }

    /// `--schedule '*/15 * * * *'` (UTC).
    ///
    /// # Errors
    /// A message for an invalid expression.
    pub fn cron(s: &str) -> Result<Schedule, String> {
        let c = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(s)
            .map_err(|e| format!("--schedule {s:?}: {e}"))?;
        Ok(Schedule::Cron(Box::new(c)))
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Every(d) => t.checked_add(*d),
            Schedule::Cron(c) => {
                let dt: DateTime<Utc> = t.into();
                c.find_next_occurrence(&dt, false).ok().map(SystemTime::from)
            }
        }
    }

    /// After a round that was due at `due` and ended at `end`: the next time to run, and how
    /// many scheduled times between them were skipped because the round overran them.
    pub fn after_round(&self, due: SystemTime, end: SystemTime) -> (Option<SystemTime>, u64) {
        let mut next = self.next_after(due);
        let mut missed = 0;
        // Bounded: a round that overran more than 100,000 intervals skips the count's tail.
        while let Some(n) = next.filter(|n| *n <= end) {
            missed += 1;
            next = self.next_after(n);
            if missed >= 100_000 {
                next = self.next_after(end);
                break;
            }
        }
        (next, missed)
    }
}

/// How many times a failing round is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// At most this many retries after the first attempt.
    Count(u32),
    /// Until it succeeds or fails fatally.
    Forever,
}

impl Retries {
    /// `--retries N|forever`.
    ///
    /// # Errors
    /// A message for anything else.
    pub fn parse(s: &str) -> Result<Retries, String> {
        if s == "forever" {
            return Ok(Retries::Forever);
        }
        s.parse().map(Retries::Count).map_err(|_| format!("--retries {s:?}: a number or `forever`"))
    }

    /// Whether attempt number `attempt` (0 = the first retry) is allowed.
    pub fn allows(self, attempt: u32) -> bool {
        match self {
            Retries::Forever => true,
            Retries::Count(n) => attempt < n,
        }
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (0-based), `u` in [0, 1) choosing the jitter: half the
    /// exponential delay, plus up to the other half at random, so many agents that failed
    /// together do not retry together.
    pub fn delay(&self, attempt: u32, u: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX));
        let d = exp.min(self.max);
        d / 2 + d.mul_f64(u.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    // 2026-11-20T12:03:10Z
    const T: u64 = 1_795_176_190;

    #[test]
    fn intervals_and_cron_find_the_next_time() {
        let every = Schedule::every("5m").unwrap();
        assert_eq!(every.next_after(at(T)), Some(at(T + 300)));
        let cron = Schedule::cron("*/15 * * * *").unwrap();
        // 12:03:10 -> 12:15:00
        assert_eq!(cron.next_after(at(T)), Some(at(T - 190 + 900)));
        assert!(Schedule::every("0s").is_err());
        assert!(Schedule::every("soon").is_err());
        assert!(Schedule::cron("not cron").is_err());
    }

    #[test]
    fn a_round_that_overruns_counts_the_intervals_it_missed() {
        let every = Schedule::every("60s").unwrap();
        // Due at T, finished 10 s later: nothing missed, next at T+60.
        assert_eq!(every.after_round(at(T), at(T + 10)), (Some(at(T + 60)), 0));
        // Finished 200 s later: T+60, T+120, T+180 were missed; next at T+240.
        assert_eq!(every.after_round(at(T), at(T + 200)), (Some(at(T + 240)), 3));
        let cron = Schedule::cron("0 * * * *").unwrap();
        // Due at 12:00, ran until 14:30: 13:00 and 14:00 missed, next 15:00.
        let noon = T - 190;
        assert_eq!(cron.after_round(at(noon), at(noon + 9000)), (Some(at(noon + 10_800)), 2));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let b = Backoff { base: Duration::from_secs(2), max: Duration::from_secs(60) };
        assert_eq!(b.delay(0, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0.999_999), Duration::from_secs(2) - Duration::from_nanos(1000));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(8));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(30));
        assert!(b.delay(40, 0.5) <= Duration::from_secs(60));
    }

    #[test]
    fn retries_parse_and_allow() {
        assert_eq!(Retries::parse("forever"), Ok(Retries::Forever));
        assert_eq!(Retries::parse("3"), Ok(Retries::Count(3)));
        assert!(Retries::parse("-1").is_err());
        assert!(Retries::Count(2).allows(1) && !Retries::Count(2).allows(2));
        assert!(Retries::Forever.allows(1_000_000));
    }
}
