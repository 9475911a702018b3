//! How hard the source compresses, round by round and during a round.
//!
//! `--compress-level N` fixes zstd's level. The default for network rounds is `auto`, which
//! adapts the level during the round to what limits it, the way `zstd --adapt` does:
//! - while the link is the bottleneck (more than [`LINK_BEHIND`] bytes wait for the writers
//!   most of the time), each step up spends idle CPU to put fewer bytes on the wire;
//! - while the CPU is (every worker busy encoding, and the writers have next to nothing
//!   queued), each step down frees CPU, down to no compression on a link faster than the
//!   compressor.
//!
//! Content that does not compress (media, encrypted or already compressed files) costs little
//! at any level: `ferry_core::compress` tries a sample first and sends such a segment raw.
//! The level applies to literal data only; the destination decodes any level. What was used is
//! reported per round ([`CompressionReport`]).
//!
//! The driver lets the writers fall up to `OUTGOING_QUEUE_BYTES` behind, so on a slow link
//! that much is encoded at the starting level before the level can matter: `auto` pays off
//! on rounds that move more than that.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `--compress-level auto`, as the round's options carry it (zstd levels are 0..=19).
pub const COMPRESS_AUTO: i32 = -1;

/// The levels `auto` moves between, cheapest first. It stops at 7: from level 8 zstd's
/// tables for large inputs grow towards tens of MiB per worker (zstd's parameter tables),
/// for a few percent of ratio.
const LADDER: [i32; 6] = [0, 1, 2, 3, 5, 7];
/// Where `auto` starts: level 3 (zstd's default), which a fast link's CPU bound soon lowers.
const START_STEP: usize = 3;
/// How often the level may change.
pub const ADJUST_EVERY: Duration = Duration::from_millis(100);
/// Bytes waiting for the link above which the link is behind: a few round trips of a fast
/// link, far below the backpressure limit (`OUTGOING_QUEUE_BYTES`), so a slow link is seen
/// long before the driver has to stop.
pub const LINK_BEHIND: u64 = 4 << 20;
/// Bytes waiting for the link below which the link is starved.
pub const LINK_STARVED: u64 = 1 << 20;

/// A round's compression: fixed or adaptive, and what it did.
#[derive(Debug)]
pub struct Compression {
    auto: bool,
    /// Index into [`LADDER`] (auto) or the fixed level.
    step: AtomicU32,
    fixed: i32,
    /// Literal bytes sent compressed at each level (index = level, 0..=19); index 0: sent
    /// raw because the level was 0.
    bytes_at: [AtomicU64; 20],
    /// Literal bytes tried at a level above 0 that did not compress (sent raw).
    bytes_incompressible: AtomicU64,
    /// Level changes made by `auto`.
    changes: AtomicU32,
    /// The controller's window (see [`Compression::adjust`]).
    window: std::sync::Mutex<Window>,
    last_level: AtomicI32,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    behind: u32,
    starved_busy: u32,
    samples: u32,
}

impl Window {
    fn new() -> Window {
        Window { since: Instant::now(), behind: 0, starved_busy: 0, samples: 0 }
    }
}

impl Compression {
    /// Compression as the round's `compress_level` says: [`COMPRESS_AUTO`] adapts, any other
    /// value is zstd's level (0: off).
    pub fn new(level: i32) -> Compression {
        let auto = level == COMPRESS_AUTO;
        Compression {
            auto,
            step: AtomicU32::new(START_STEP as u32),
            fixed: level.clamp(0, 19),
            bytes_at: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_incompressible: AtomicU64::new(0),
            changes: AtomicU32::new(0),
            window: std::sync::Mutex::new(Window::new()),
            last_level: AtomicI32::new(if auto { LADDER[START_STEP] } else { level.clamp(0, 19) }),
        }
    }

    /// Whether the level adapts.
    pub fn is_auto(&self) -> bool {
        self.auto
    }

    /// The level the next segment is encoded at.
    pub fn level(&self) -> i32 {
        if !self.auto {
            return self.fixed;
        }
        LADDER[(self.step.load(Ordering::Relaxed) as usize).min(LADDER.len() - 1)]
    }

    /// Accounts one encoded segment: `literal` bytes given to zstd at `level`, `shrunk`
    /// whether zstd made them smaller (so they went compressed).
    pub fn observe(&self, level: i32, literal: usize, shrunk: bool) {
        let lit = literal as u64;
        if level > 0 && !shrunk {
            self.bytes_incompressible.fetch_add(lit, Ordering::Relaxed);
        } else {
            self.bytes_at[level.clamp(0, 19) as usize].fetch_add(lit, Ordering::Relaxed);
        }
    }

    /// The driver's observation of one turn of its loop: `backlog` bytes waiting for the
    /// link's writers, and whether every worker was busy. Every [`ADJUST_EVERY`] the level
    /// moves one step: up when the link was behind in most observations, down when in three
    /// quarters of them the workers were all busy while the link was starved. Returns the new
    /// level when it changed.
    pub fn adjust(&self, backlog: u64, saturated: bool) -> Option<i32> {
        if !self.auto {
            return None;
        }
        let mut w = crate::lock(&self.window);
        w.samples += 1;
        w.behind += u32::from(backlog >= LINK_BEHIND);
        w.starved_busy += u32::from(saturated && backlog < LINK_STARVED);
        if w.since.elapsed() < ADJUST_EVERY {
            return None;
        }
        let link_bound = w.behind * 2 > w.samples;
        let cpu_bound = w.starved_busy * 4 >= w.samples * 3;
        *w = Window::new();
        drop(w);
        let step = self.step.load(Ordering::Relaxed) as usize;
        let next = if link_bound {
            (step + 1).min(LADDER.len() - 1)
        } else if cpu_bound {
            step.saturating_sub(1)
        } else {
            step
        };
        if next == step {
            return None;
        }
        self.step.store(next as u32, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.last_level.store(LADDER[next], Ordering::Relaxed);
        Some(LADDER[next])
    }

    /// What the round did.
    pub fn report(&self) -> CompressionReport {
        let by_level = self
            .bytes_at
            .iter()
            .enumerate()
            .filter_map(|(l, b)| {
                let b = b.load(Ordering::Relaxed);
                (b > 0).then_some(LevelBytes { level: l as i32, literal_bytes: b })
            })
            .collect();
        CompressionReport {
            mode: if self.auto { "auto".into() } else { format!("{}", self.fixed) },
            by_level,
            incompressible_bytes: self.bytes_incompressible.load(Ordering::Relaxed),
            level_changes: self.changes.load(Ordering::Relaxed),
            final_level: self.last_level.load(Ordering::Relaxed),
        }
    }
}

/// Literal bytes encoded at one zstd level.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LevelBytes {
    /// zstd level (0: not compressed).
    pub level: i32,
    /// Literal bytes given to it.
    pub literal_bytes: u64,
}

/// What compression a round's source used (in `--json` as `"compression"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompressionReport {
    /// `auto`, or the fixed level.
    pub mode: String,
    /// Literal bytes sent per level (level 0: sent raw because the level was 0).
    pub by_level: Vec<LevelBytes>,
    /// Literal bytes that did not compress at the level tried, and went raw.
    pub incompressible_bytes: u64,
    /// How many times `auto` changed the level.
    pub level_changes: u32,
    /// The level at the end of the round.
    pub final_level: i32,
}

impl CompressionReport {
    /// One line for the summary: `auto (level 1 for 60%, 3 for 40%; 12 MiB incompressible)`.
    pub fn describe(&self) -> String {
        let total: u64 =
            self.by_level.iter().map(|l| l.literal_bytes).sum::<u64>() + self.incompressible_bytes;
        if total == 0 {
            return format!("{} (no literal data)", self.mode);
        }
        let pct = |b: u64| (b as f64 * 100.0 / total as f64).round();
        let mut parts: Vec<String> = self
            .by_level
            .iter()
            .map(|l| format!("level {} for {:.0}%", l.level, pct(l.literal_bytes)))
            .collect();
        if self.incompressible_bytes > 0 {
            parts.push(format!("{:.0}% incompressible", pct(self.incompressible_bytes)));
        }
        format!("{} ({})", self.mode, parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_window() {
        std::thread::sleep(ADJUST_EVERY + Duration::from_millis(5));
    }

    #[test]
    fn a_fixed_level_never_moves() {
        let c = Compression::new(3);
        assert!(!c.is_auto());
        wait_window();
        assert_eq!(c.adjust(LINK_BEHIND, false), None);
        assert_eq!(c.level(), 3);
        for _ in 0..100 {
            c.observe(3, 1 << 20, false);
        }
        assert_eq!(c.level(), 3, "a fixed level compresses everything it is given");
        assert_eq!(c.report().mode, "3");
    }

    #[test]
    fn auto_climbs_while_the_link_is_behind_and_falls_while_the_cpu_is() {
        let c = Compression::new(COMPRESS_AUTO);
        assert_eq!(c.level(), 3);
        // The link was behind on the writers for the whole window: step up, up to the top.
        let mut seen = vec![c.level()];
        for _ in 0..LADDER.len() + 2 {
            wait_window();
            c.adjust(LINK_BEHIND * 2, false);
            seen.push(c.level());
        }
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
        assert_eq!(c.level(), 7, "{seen:?}");
        // Never waiting, workers saturated: step down to off.
        for _ in 0..LADDER.len() + 2 {
            wait_window();
            c.adjust(0, true);
        }
        assert_eq!(c.level(), 0);
        // Neither: hold.
        wait_window();
        assert_eq!(c.adjust(0, false), None);
        // Busy workers but a link with plenty queued: not the CPU's fault.
        wait_window();
        assert_eq!(c.adjust(LINK_STARVED * 2, true), None);
        assert_eq!(c.level(), 0);
        let r = c.report();
        assert_eq!(r.mode, "auto");
        assert_eq!(r.final_level, 0);
        assert_eq!(r.level_changes as usize, 2 * (LADDER.len() - 1) - START_STEP);
    }

    #[test]
    fn within_a_window_nothing_moves() {
        let c = Compression::new(COMPRESS_AUTO);
        c.adjust(LINK_BEHIND * 10, false);
        assert_eq!(c.level(), 3, "no change before a whole window has passed");
    }

    #[test]
    fn what_did_not_compress_is_counted_apart() {
        let c = Compression::new(COMPRESS_AUTO);
        c.observe(3, 1000, false);
        c.observe(3, 500, true);
        c.observe(0, 250, false);
        let r = c.report();
        assert_eq!(r.incompressible_bytes, 1000);
        assert_eq!(
            r.by_level,
            vec![
                LevelBytes { level: 0, literal_bytes: 250 },
                LevelBytes { level: 3, literal_bytes: 500 }
            ]
        );
        assert_eq!(r.describe(), "auto (level 0 for 14%, level 3 for 29%, 57% incompressible)");
    }

    #[test]
    fn the_report_says_where_the_bytes_went() {
        let c = Compression::new(COMPRESS_AUTO);
        c.observe(1, 600, true);
        c.observe(3, 400, true);
        let r = c.report();
        assert_eq!(
            r.by_level,
            vec![
                LevelBytes { level: 1, literal_bytes: 600 },
                LevelBytes { level: 3, literal_bytes: 400 }
            ]
        );
        assert_eq!(r.describe(), "auto (level 1 for 60%, level 3 for 40%)");
        assert_eq!(Compression::new(0).report().describe(), "0 (no literal data)");
    }
}
