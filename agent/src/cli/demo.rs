//! `ferry demo`: a sample tree generated on the spot and pushed three times to a destination
//! agent on loopback, so a new user sees Ferry work with no setup.

use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ferry_core::rng::SplitMix64;
use ferry_transport::tls::Identity;

use super::output::{print_summary, Progress};
use crate::net::{
    credentials, run_client, serve, Access, Direction, Module, RemoteError, RemoteOptions,
    ServeConfig, Url, Via,
};
use crate::round::{RoundOptions, SyncOptions};
use crate::state::snapshot::{Retention, Snapshotter};
use crate::state::{ModuleState, StateConfig};

/// Writes the sample tree: `files` small files (half random, half log-like text) over a few
/// directories, one larger file of `big` bytes, a symlink and a hard link.
///
/// # Errors
/// Any I/O error creating the tree.
pub fn generate(root: &Path, files: usize, big: usize, seed: u64) -> io::Result<()> {
    let mut rng = SplitMix64::new(seed);
    std::fs::create_dir_all(root)?;
    for i in 0..files {
        let dir = root.join(format!("dir{:02}", i % 16));
        std::fs::create_dir_all(&dir)?;
        let size = 1024 + (rng.next_u64() % (32 << 10)) as usize;
        let data = if i % 2 == 0 {
            let mut v = vec![0; size];
            rng.fill(&mut v);
            v
        } else {
            log_text(&mut rng, size)
        };
        std::fs::write(dir.join(format!("file{i:05}.dat")), data)?;
    }
    let mut v = vec![0; big];
    rng.fill(&mut v);
    std::fs::write(root.join("big.bin"), v)?;
    let _ = std::fs::remove_file(root.join("link-to-big"));
    std::os::unix::fs::symlink("big.bin", root.join("link-to-big"))?;
    let _ = std::fs::remove_file(root.join("dir00/hardlink.dat"));
    std::fs::hard_link(root.join("dir00/file00000.dat"), root.join("dir00/hardlink.dat"))?;
    Ok(())
}

/// Changes the sample the way an application would between two rounds: overwrites and
/// inserts in the big file, appends to some logs, adds and removes files.
///
/// # Errors
/// Any I/O error.
pub fn mutate(root: &Path, seed: u64) -> io::Result<()> {
    use std::io::Write;
    let mut rng = SplitMix64::new(seed ^ 0xABCD);
    let big = root.join("big.bin");
    let mut data = std::fs::read(&big)?;
    for _ in 0..8 {
        if data.len() < 8192 {
            break;
        }
        let at = (rng.next_u64() as usize) % (data.len() - 4096);
        rng.fill(&mut data[at..at + 4096]);
    }
    if !data.is_empty() {
        let at = (rng.next_u64() as usize) % data.len();
        data.splice(at..at, b"an insert shifts everything after it".iter().copied());
    }
    std::fs::write(&big, data)?;
    for i in (1..200).step_by(40) {
        let p = root.join(format!("dir{:02}/file{i:05}.dat", i % 16));
        if p.exists() {
            let mut f = std::fs::OpenOptions::new().append(true).open(p)?;
            f.write_all(b"2026-11-20T00:00:00Z INFO appended after the first round\n")?;
        }
    }
    std::fs::write(root.join("dir01/new-after-round-1.txt"), b"hello from round two\n")?;
    let _ = std::fs::remove_file(root.join("dir02/file00002.dat"));
    Ok(())
}

fn log_text(rng: &mut SplitMix64, size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "INFO",
        "WARN",
        "request",
        "served",
        "in",
        "ms",
        "user",
        "cache",
        "miss",
        "hit",
        "GET",
        "/api/v1/items",
    ];
    let mut out = Vec::with_capacity(size + 100);
    while out.len() < size {
        let ts = 1_700_000_000 + rng.next_u64() % 1_000_000;
        out.extend_from_slice(format!("{ts} ").as_bytes());
        for _ in 0..8 {
            out.extend_from_slice(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out.truncate(size);
    out
}

/// `ferry demo`: a sample tree, a destination and a source agent on loopback with fresh
/// credentials, three rounds over QUIC with a snapshot after each.
///
/// # Errors
/// Any failure of the demo's steps, saying which.
pub fn run(dir: &Path, files: usize, big_mib: usize) -> anyhow::Result<ExitCode> {
    let src = dir.join("source");
    let dst = dir.join("destination");
    let state = dir.join("state");
    let creds = dir.join("creds");
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    eprintln!(
        "ferry demo: generating a sample tree in {} ({files} files + a {big_mib} MiB file)",
        src.display()
    );
    generate(&src, files, big_mib << 20, 42)
        .with_context(|| format!("generating the sample tree in {}", src.display()))?;
    // Fresh credentials, a destination agent and a source agent, on loopback, over QUIC.
    let pair = credentials::generate_for_days(&["127.0.0.1".to_string()], 1)?;
    credentials::write_identity(&creds.join("destination"), &pair.destination)?;
    credentials::write_identity(&creds.join("source"), &pair.source)?;
    let server_id = Identity::load(&creds.join("destination")).map_err(RemoteError::Identity)?;
    let cfg = ServeConfig {
        modules: vec![Module { name: "data".into(), path: dst.clone(), access: Access::ReadWrite }],
        modules_dir: None,
        threads: 0,
        bwlimit: 0,
        state: Some(StateConfig {
            dir: state.clone(),
            snapshotter: Snapshotter::Hardlink,
            retention: Retention::default(),
            signature_cache: true,
        }),
        agent: None,
        policy: ferry_core::ReceivePolicy::default(),
        idle_timeout: ferry_transport::net::IDLE_TIMEOUT,
        max_connections: ferry_transport::net::DEFAULT_MAX_CONNECTIONS,
    };
    let module = ModuleState::new(&state, "data");
    module.prepare(&dst, &Snapshotter::Hardlink)?;
    let rt = super::runtime()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    rt.spawn(async move {
        let r = serve(any, &server_id, cfg, move |addr| {
            let _ = tx.send(addr);
        })
        .await;
        if let Err(e) = r {
            tracing::error!("demo destination agent: {e}");
        }
    });
    let addr =
        rx.recv_timeout(Duration::from_secs(10)).context("starting the destination agent")?;
    println!(
        "destination agent listening on {addr} (QUIC and TLS over TCP), module data -> {}",
        dst.display()
    );
    let url = Url { host: "127.0.0.1".into(), port: addr.port(), module: "data".into() };
    let opts = RemoteOptions {
        sync: SyncOptions {
            round: RoundOptions { delete: true, compress_level: 3, ..RoundOptions::default() },
            ..SyncOptions::default()
        },
        via: Via::Quic,
        identity: Some(credentials::IdentityDir::new(creds.join("source"))),
        bwlimit: 0,
        connect_timeout: Duration::from_secs(10),
        idle_timeout: ferry_transport::net::IDLE_TIMEOUT,
        state: None,
    };
    let snaps = module.snapshots();
    let round = |title: &str, n: u64| -> anyhow::Result<()> {
        println!("\n== round {n}: {title}");
        let progress = Progress::new(true);
        let r = rt.block_on(run_client(
            Direction::Push,
            &src,
            &url,
            &opts,
            Box::new(|_| {}),
            progress.callback(),
            progress.every,
        ));
        progress.finish();
        print_summary(&r?, false);
        // The destination snapshots before it tells the source the round is done.
        if snaps.list()?.last().is_some_and(|s| s.round == n) {
            return Ok(());
        }
        anyhow::bail!("the destination took no snapshot of round {n}")
    };
    round("initial push into an empty destination", 1)?;
    mutate(&src, 42).context("changing the sample tree")?;
    round(
        "after overwrites and an insert in the big file, appends, one new and one deleted file",
        2,
    )?;
    round("nothing changed", 3)?;
    println!("\n== snapshots of module data (one per round, in the store: each costs what its round changed)");
    println!("{:<24} {:>6} {:>10} {:>12}", "id", "round", "entries", "bytes");
    for r in snaps.list()? {
        println!("{:<24} {:>6} {:>10} {:>12}", r.id, r.round, r.entries, r.bytes);
    }
    println!(
        "\neverything is in {}: source/, destination/, state/store/data/, creds/",
        dir.display()
    );
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}
