//! Whole rounds between two real agents: push and pull over QUIC, TCP and a remote shell,
//! `--bwlimit`, `ferry bench --peer`, the destination's signature cache.

use std::time::Duration;

use crate::common::{
    assert_same_tree, check_ok, creds, ferry, http, noise, s, sample, serve, serve_with, FERRY,
};

#[test]
fn push_and_pull_over_quic_tcp_and_rsh() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, a, b) = (t.path().join("src"), t.path().join("a"), t.path().join("b"));
    sample(&src);
    let srv = serve(&c.join("destination"), &[format!("a={}", s(&a)), format!("b={}", s(&b))]);
    let id = c.join("source");
    for (transport, module) in [("quic", "a"), ("tcp", "b")] {
        let url = format!("ferry://127.0.0.1:{}/{module}", srv.addr.port());
        let out = ferry(&[
            "push",
            s(&src),
            &url,
            "--identity",
            s(&id),
            "--transport",
            transport,
            "--json",
        ]);
        check_ok(&out);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = if transport == "quic" { "QUIC" } else { "TLS over TCP" };
        assert_eq!(r["transport"], want);
        // QUIC rounds spread files over data streams beside the control stream.
        assert_eq!(r["streams"], if transport == "quic" { 5 } else { 1 });
        assert_eq!(r["stats"]["files_new"], 51);
        assert_same_tree(&src, &t.path().join(module));
    }
    // An incremental push over `auto` moves only the change.
    let mut big = std::fs::read(src.join("db/data.bin")).unwrap();
    big[5_000_000..5_000_100].fill(7);
    std::fs::write(src.join("db/data.bin"), &big).unwrap();
    let url = format!("ferry://localhost:{}/a", srv.addr.port());
    let out = std::process::Command::new(FERRY)
        .args(["push", s(&src), &url, "--identity", s(&id), "--json"])
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .output()
        .unwrap();
    check_ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // `auto` raced the handshakes (QUIC first, nothing measured yet) and used the winner.
    let log = String::from_utf8_lossy(&out.stderr);
    let line =
        log.lines().find(|l| l.contains("transport auto:")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("QUIC first (no round measured yet)"), "{line}");
    let used = r["transport"].as_str().unwrap();
    assert!(line.ends_with(&format!("connected over {used}")), "{line}");
    assert_eq!(r["stats"]["files_changed"], 1);
    assert!(r["stats"]["literal_bytes"].as_u64().unwrap() < 200_000, "{r}");
    assert_same_tree(&src, &a);
    // Pull both modules back.
    for transport in ["quic", "tcp"] {
        let dst = t.path().join(format!("pulled-{transport}"));
        let url = format!("ferry://127.0.0.1:{}/b", srv.addr.port());
        check_ok(&ferry(&["pull", &url, s(&dst), "--identity", s(&id), "--transport", transport]));
        assert_same_tree(&b, &dst);
    }
    // Over a remote shell: the "remote" is a local sh -c running `ferry serve --stdio`.
    let via_rsh = t.path().join("rsh");
    let rsh = format!("{FERRY} serve --stdio --module m={}", s(&via_rsh));
    check_ok(&ferry(&["push", s(&src), "ferry://remote/m", "--rsh", &rsh]));
    assert_same_tree(&src, &via_rsh);
    let back = t.path().join("rsh-back");
    check_ok(&ferry(&["pull", "ferry://remote/m", s(&back), "--rsh", &rsh]));
    assert_same_tree(&src, &back);
}

/// `--bwlimit` caps what the sender puts on the wire: a round cannot finish faster than its
/// bytes at the cap allow (a lower bound only: a slow machine cannot make this fail).
#[test]
fn bwlimit_paces_the_sender() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let noise = noise(3 << 20, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(src.join("noise.bin"), &noise).unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    let start = std::time::Instant::now();
    check_ok(&ferry(&[
        "push",
        s(&src),
        &url,
        "--identity",
        s(&c.join("source")),
        "--bwlimit",
        "2M",
    ]));
    let took = start.elapsed();
    // 3 MiB at 2 MiB/s: at least 1.5 s once the pacing is right.
    assert!(took >= Duration::from_millis(1400), "3 MiB at 2 MiB/s took only {took:?}");
    assert_same_tree(&src, &dst);
}

/// `ferry bench --peer` measures a real link both ways, over each transport, and touches no
/// file of the module it names.
#[test]
fn bench_peer_measures_both_ways_and_touches_nothing() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("keep"), b"keep").unwrap();
    let srv = serve(&c.join("destination"), &[format!("m={}", s(&dst))]);
    let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
    for transport in ["quic", "tcp"] {
        let out = ferry(&[
            "bench",
            "--peer",
            &url,
            "--identity",
            s(&c.join("source")),
            "--transport",
            transport,
            "--size-mib",
            "8",
            "--sync-mib",
            "6",
            "--json",
        ]);
        check_ok(&out);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["bytes"], 8 << 20);
        for k in ["rtt_ms", "upload_gbps", "download_gbps"] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{transport}: {k} in {r}");
        }
        // The synthetic round ran through the sessions: all its bytes crossed, the text files
        // compressed (so fewer bytes on the wire than in the tree, but more than the half
        // that is random).
        let sync = &r["sync"];
        assert_eq!(sync["bytes"], 6 << 20, "{r}");
        assert!(sync["files"].as_u64().unwrap() > 50, "{r}");
        let wire = sync["wire_bytes"].as_u64().unwrap();
        assert!(wire > 4 << 20 && wire < 6 << 20, "{r}");
        assert!(sync["secs"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Neither side leaves its scratch tree behind.
    for dir in [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        let pid = srv.child.id();
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let server_left = format!("ferry-bench-dst-{pid}-");
        assert!(
            !left.iter().any(|n| n.to_string_lossy().starts_with(&server_left)),
            "{}: {left:?}",
            dir.display()
        );
    }
    let out = ferry(&[
        "bench",
        "--peer",
        &format!("ferry://127.0.0.1:{}/nope", srv.addr.port()),
        "--identity",
        s(&c.join("source")),
        "--sync-mib",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let names: Vec<_> = std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["keep"]);
}

/// The destination keeps the signatures of the large files it writes: the next round that
/// finds such a file changed on the source signs its basis from the cache (counted in
/// /metrics), not by reading it, and the result is the same tree. A server run with
/// `--no-signature-cache` reads and signs every basis.
#[test]
fn the_signature_cache_answers_for_large_files_written_by_the_last_round() {
    for cached in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let c = creds(t.path());
        let (src, dst, state) =
            (t.path().join("src"), t.path().join("dst"), t.path().join("state"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        let big = noise(6 << 20, 11);
        std::fs::write(src.join("d/big"), &big).unwrap();
        std::fs::write(src.join("mid"), noise(2 << 20, 12)).unwrap();
        std::fs::write(src.join("small"), b"below the cache's threshold").unwrap();
        let http_addr =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let mut extra = vec!["--state-dir", s(&state), "--http", &http_addr];
        if !cached {
            extra.push("--no-signature-cache");
        }
        let srv = serve_with(&c.join("destination"), &[format!("m={}", s(&dst))], &extra);
        let url = format!("ferry://127.0.0.1:{}/m", srv.addr.port());
        let push = || {
            check_ok(&ferry(&[
                "push",
                s(&src),
                &url,
                "--identity",
                s(&c.join("source")),
                "--delete",
                "--transport",
                "tcp",
            ]))
        };
        push();
        // Change a few bytes inside both large files, same sizes, new mtimes.
        let mut b2 = big.clone();
        b2[3 << 20..(3 << 20) + 100].fill(7);
        std::fs::write(src.join("d/big"), &b2).unwrap();
        let mut m2 = std::fs::read(src.join("mid")).unwrap();
        m2[1000] ^= 0xff;
        std::fs::write(src.join("mid"), &m2).unwrap();
        push();
        assert_same_tree(&src, &dst);
        // The server finishes its round (snapshot, cache) after the client has its answer:
        // wait for the counter to get there, then assert it is exactly that.
        let metric = |name: &str, want: u64| {
            let read = || -> u64 {
                let (_, body) = http(&http_addr, "GET", "/metrics");
                body.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .map_or(0, |v| v.parse().unwrap())
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while read() < want && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert_eq!(read(), want, "{name}");
        };
        if cached {
            metric("ferry_signature_cache_total{event=\"hit\"}", 2);
            metric("ferry_signature_cache_hit_bytes_total", (6 << 20) + (2 << 20));
            // Round one stored both, round two stored their new versions.
            metric("ferry_signature_cache_total{event=\"stored\"}", 4);
            // A third round after the second's change reads from the cache again.
            b2[100] ^= 1;
            std::fs::write(src.join("d/big"), &b2).unwrap();
            push();
            assert_same_tree(&src, &dst);
            metric("ferry_signature_cache_total{event=\"hit\"}", 3);
        } else {
            metric("ferry_signature_cache_total{event=\"miss\"}", 0);
            metric("ferry_signature_cache_total{event=\"hit\"}", 0);
            assert!(!state.join("signatures").exists());
        }
    }
}
