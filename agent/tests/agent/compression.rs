//! `--compress-level auto` (the network default) as a user sees it in the push's JSON: more
//! compression when the link is the bottleneck, incompressible content sent without trying,
//! and a fixed level that stays fixed.

use crate::common::{assert_same_tree, check_ok, json, noise, Pair, Rng};

fn report(out: &std::process::Output) -> serde_json::Value {
    check_ok(out);
    json(out)["compression"].clone()
}

fn bytes_at(c: &serde_json::Value, pred: impl Fn(i64) -> bool) -> u64 {
    c["by_level"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| pred(l["level"].as_i64().unwrap()))
        .map(|l| l["literal_bytes"].as_u64().unwrap())
        .sum()
}

/// Bytes from a 64-character alphabet: about 6 bits of entropy per byte, as base64 of
/// random data has.
fn base64ish(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Rng::bytes(seed, len).into_iter().map(|b| ALPHABET[usize::from(b & 63)]).collect()
}

/// Text that compresses about 3:1 (words drawn from a small vocabulary).
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["replica", "volume", "snapshot", "ferry", "round", "delta", "block", "the"];
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(words[(rng.next_u64() % words.len() as u64) as usize].as_bytes());
        out.push(if rng.next_u64() % 9 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// On a link held to 16 MB/s, data piles up for the writers: `auto` climbs past its starting
/// level 3. The driver lets the writers fall behind by up to 32 MiB, encoded at the level of
/// its time, so the round must move more than that for the level to matter: 80 MiB of text
/// that compresses about 4:3.
#[test]
fn auto_compresses_harder_when_the_link_is_the_bottleneck() {
    let p = Pair::new();
    for i in 0..10 {
        std::fs::write(p.src.join(format!("b64-{i}.txt")), base64ish(8 << 20, i)).unwrap();
    }
    let out = p.push(&["--json", "--bwlimit", "16M"]);
    let comp = report(&out);
    assert_eq!(comp["mode"], "auto", "{comp}");
    assert!(comp["level_changes"].as_u64().unwrap() >= 1, "{comp}");
    assert!(comp["final_level"].as_i64().unwrap() > 3, "climbed on a slow link: {comp}");
    assert_same_tree(&p.src, &p.dst);
}

/// Random bytes do not compress: they go raw (a sample is tried first, so little CPU is
/// spent on them), the report says so, and the copy is exact.
#[test]
fn content_that_does_not_compress_goes_raw_and_is_reported() {
    let p = Pair::new();
    std::fs::write(p.src.join("video.bin"), noise(24 << 20, 7)).unwrap();
    let out = p.push(&["--json"]);
    let comp = report(&out);
    assert_eq!(comp["incompressible_bytes"].as_u64(), Some(24 << 20), "{comp}");
    assert_eq!(bytes_at(&comp, |l| l > 0), 0, "{comp}");
    assert_same_tree(&p.src, &p.dst);
}

/// A fixed level is used for every byte, whatever the link; `--compress-level` takes 0..=19
/// or `auto` and nothing else (exit 2).
#[test]
fn a_fixed_level_is_used_throughout_and_bad_levels_are_refused() {
    let p = Pair::new();
    std::fs::write(p.src.join("a.txt"), text(6 << 20, 1)).unwrap();
    let out = p.push(&["--json", "--bwlimit", "4M", "--compress-level", "2"]);
    let comp = report(&out);
    assert_eq!(comp["mode"], "2", "{comp}");
    assert_eq!(comp["level_changes"], 0, "{comp}");
    assert_eq!(bytes_at(&comp, |l| l != 2), 0, "{comp}");
    assert!(bytes_at(&comp, |l| l == 2) >= 6 << 20, "{comp}");
    assert_same_tree(&p.src, &p.dst);
    for bad in ["20", "-1", "fast"] {
        let out = p.push(&["--compress-level", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
