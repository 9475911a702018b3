//! File contents: random bytes, or log-like text with UTC timestamps.

use std::fmt::Write as _;

use ferry_core::rng::SplitMix64;

/// `len` bytes of content: random bytes, or log lines.
pub(super) fn content(len: usize, text: bool, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    if text {
        let start_ms = (1_704_067_200 + rng.below(365 * 86_400)) * 1000;
        log_lines(&mut rng, len, start_ms)
    } else {
        let mut v = vec![0; len];
        rng.fill(&mut v);
        v
    }
}

/// Log-like text: timestamped lines with a few repeating fields and random ids, so it
/// compresses roughly like real service logs (about 3-4x with zstd -1), cut to `len` bytes.
pub(super) fn log_lines(rng: &mut SplitMix64, len: usize, start_ms: u64) -> Vec<u8> {
    const LEVELS: [&str; 8] = ["INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"];
    const PARTS: [&str; 6] = ["api", "scheduler", "volume", "snapshot", "auth", "gc"];
    const ROUTES: [&str; 6] =
        ["/v1/volumes", "/v1/snapshots", "/v1/nodes", "/v1/claims", "/healthz", "/metrics"];
    const METHODS: [&str; 4] = ["GET", "GET", "PUT", "POST"];
    const STATUS: [u16; 6] = [200, 200, 200, 201, 404, 500];
    let pick = |rng: &mut SplitMix64, n: usize| rng.below(n as u64) as usize;
    let mut s = String::with_capacity(len + 200);
    let mut ms = start_ms;
    while s.len() < len {
        ms += rng.below(2_000);
        let (secs, milli) = (ms / 1000, ms % 1000);
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let sod = secs % 86_400;
        let _ = writeln!(
            s,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z {:<5} [{}-{}] {} {}/{:08x} \
             status={} bytes={} latency_ms={} req={:016x}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
            LEVELS[pick(rng, LEVELS.len())],
            PARTS[pick(rng, PARTS.len())],
            rng.below(8),
            METHODS[pick(rng, METHODS.len())],
            ROUTES[pick(rng, ROUTES.len())],
            rng.below(1 << 20),
            STATUS[pick(rng, STATUS.len())],
            rng.below(1 << 16),
            rng.below(250),
            rng.next_u64(),
        );
    }
    let mut v = s.into_bytes();
    v.truncate(len);
    v
}

/// `secs` since the epoch as "YYYY-MM-DD HH:MM UTC".
pub fn utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", sod / 3600, sod / 60 % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
