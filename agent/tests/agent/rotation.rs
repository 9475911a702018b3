//! Rotated credentials are picked up without a restart (issue 14): `ferry serve` re-reads
//! `--identity` every `--identity-poll`, a scheduled push before each round. New connections
//! use the new material, a running round keeps its own, and a rotation that cannot be used
//! keeps the old material, logged once and counted. Real processes, real files, and the
//! layout Kubernetes gives a mounted Secret (`..data` symlink swapped atomically).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::net::credentials::{self as init, IdentityPem};

use super::common::{check_ok, http, s, Server, FERRY};

/// A fresh pair (its own CA) for `localhost`.
fn pair() -> init::Pair {
    init::generate_for_days(&["localhost".into(), "127.0.0.1".into()], 30).unwrap()
}

/// `ferry serve` of module `m` at `dst` with `--identity id`, re-read every 100 ms, its log in
/// `log`, with `extra` flags.
fn serve_logged(id: &Path, dst: &Path, log: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(FERRY)
        .args(["serve", "--listen", "127.0.0.1:0", "--identity-poll", "100ms", "--identity"])
        .arg(id)
        .args(["--module", &format!("m={}", s(dst))])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    Server { child, addr }
}

/// One push of `src` to the server's module `m` as `id`, over `transport`.
fn push(src: &Path, srv: &Server, id: &Path, transport: &str) -> Output {
    let url = format!("ferry://localhost:{}/m", srv.addr.port());
    Command::new(FERRY)
        .args(["push", s(src), &url, "--identity", s(id), "--transport", transport])
        .args(["--no-progress", "--connect-timeout", "5"])
        .output()
        .unwrap()
}

/// Waits until `f` holds, for at most 20 s.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `text` to `path` by a rename, as `install` or an editor replaces a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Replaces each of the three files of `dir` with `id`'s, one after another.
fn replace_files(dir: &Path, id: &IdentityPem) {
    std::fs::create_dir_all(dir).unwrap();
    replace(&dir.join("ca.pem"), &id.ca);
    replace(&dir.join("cert.pem"), &id.cert);
    replace(&dir.join("key.pem"), &id.key);
}

/// A directory laid out the way the kubelet mounts a Secret (its AtomicWriter): the data in a
/// timestamped hidden directory, `..data` a symlink to it, and each key a symlink through
/// `..data`. Each [`SecretVolume::update`] writes a new timestamped directory and renames a
/// new `..data` link over the old one, so a reader sees the old or the new set, never a mix.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn new(dir: &Path, id: &IdentityPem) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut v = SecretVolume { dir: dir.to_path_buf(), generation: 0 };
        v.update(id);
        for key in ["ca.pem", "cert.pem", "key.pem"] {
            std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).unwrap();
        }
        v
    }

    fn update(&mut self, id: &IdentityPem) {
        self.generation += 1;
        let old = format!("..2026_11_29_23_00_0{}.1234", self.generation - 1);
        let new = format!("..2026_11_29_23_00_0{}.1234", self.generation);
        let data = self.dir.join(&new);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("ca.pem"), &id.ca).unwrap();
        std::fs::write(data.join("cert.pem"), &id.cert).unwrap();
        std::fs::write(data.join("key.pem"), &id.key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
    }
}

/// The value of `ferry_identity_reloads_total{result=...}` at the server's `--http`.
fn reloads(addr: &str, result: &str) -> u64 {
    let metrics = http(addr, "GET", "/metrics").1;
    let key = format!("ferry_identity_reloads_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.trim().parse().unwrap())
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

fn lines_with(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).unwrap().lines().filter(|l| l.contains(needle)).count()
}

/// A server whose files are replaced by a new pair (a new CA too) accepts the new client and
/// refuses the old one, over QUIC and TCP, without a restart; a round running through the
/// rotation is not cut.
#[test]
fn a_rotated_pair_is_used_without_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (pair(), pair());
    let (id, src, dst, log) =
        (t.path().join("id"), t.path().join("src"), t.path().join("dst"), t.path().join("log"));
    let (old_src, new_src) = (t.path().join("old-source"), t.path().join("new-source"));
    init::write_identity(&old_src, &old.source).unwrap();
    init::write_identity(&new_src, &new.source).unwrap();
    replace_files(&id, &old.destination);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), super::common::noise(6 << 20, 14)).unwrap();
    let mut srv = serve_logged(&id, &dst, &log, &[]);
    // A slow round (6 MiB at 2 MiB/s) that starts with the old credentials.
    let url = format!("ferry://localhost:{}/m", srv.addr.port());
    let slow: Child = Command::new(FERRY)
        .args(["push", s(&src), &url, "--identity", s(&old_src), "--transport", "tcp"])
        .args(["--no-progress", "--bwlimit", "2M"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the slow round to start", || lines_with(&log, "Push module") == 1);
    replace_files(&id, &new.destination);
    wait_for("the new pair to be taken", || push(&src, &srv, &new_src, "quic").status.success());
    for transport in ["quic", "tcp"] {
        let out = push(&src, &srv, &old_src, transport);
        assert_eq!(out.status.code(), Some(3), "{transport}: the old pair is refused: {out:?}");
        check_ok(&push(&src, &srv, &new_src, transport));
    }
    let out = slow.wait_with_output().unwrap();
    check_ok(&out);
    assert_eq!(std::fs::read(dst.join("big")).unwrap(), std::fs::read(src.join("big")).unwrap());
    assert!(srv.child.try_wait().unwrap().is_none(), "the server was not restarted");
    assert!(lines_with(&log, "credentials changed; new connections use them") >= 1);
}

/// A rotation that cannot be used (a key that is not the certificate's, a certificate that does
/// not parse, a missing file) keeps serving with the old credentials; each is logged once and
/// counted; the completed rotation is then taken.
#[test]
fn a_broken_rotation_keeps_the_old_credentials() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (pair(), pair());
    let (id, src, dst, log) =
        (t.path().join("id"), t.path().join("src"), t.path().join("dst"), t.path().join("log"));
    let (old_src, new_src) = (t.path().join("old-source"), t.path().join("new-source"));
    init::write_identity(&old_src, &old.source).unwrap();
    init::write_identity(&new_src, &new.source).unwrap();
    replace_files(&id, &old.destination);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let web = free_port();
    let srv = serve_logged(&id, &dst, &log, &["--http", &web]);
    check_ok(&push(&src, &srv, &old_src, "tcp"));

    // Half a rotation: the new certificate beside the old key.
    replace(&id.join("cert.pem"), &new.destination.cert);
    wait_for("the mismatch to be refused", || reloads(&web, "rejected") == 1);
    std::thread::sleep(Duration::from_millis(500)); // five more polls: still logged once
    assert_eq!(lines_with(&log, "key.pem is not the private key of cert.pem"), 1);
    assert_eq!(lines_with(&log, "still using the previous ones"), 1);
    for transport in ["quic", "tcp"] {
        check_ok(&push(&src, &srv, &old_src, transport));
    }

    // A certificate that does not parse, then no key at all.
    replace(&id.join("cert.pem"), "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n");
    wait_for("the unparsable PEM to be refused", || reloads(&web, "rejected") == 2);
    check_ok(&push(&src, &srv, &old_src, "quic"));
    std::fs::remove_file(id.join("key.pem")).unwrap();
    wait_for("the missing key to be refused", || reloads(&web, "rejected") == 3);
    replace(&id.join("cert.pem"), &new.destination.cert); // the same error: not counted again
    check_ok(&push(&src, &srv, &old_src, "tcp"));
    assert_eq!(reloads(&web, "ok"), 0);

    // The rotation completed.
    replace(&id.join("key.pem"), &new.destination.key);
    replace(&id.join("ca.pem"), &new.destination.ca);
    wait_for("the new pair to be taken", || push(&src, &srv, &new_src, "tcp").status.success());
    assert_eq!(push(&src, &srv, &old_src, "tcp").status.code(), Some(3));
    assert!(reloads(&web, "ok") >= 1);
}

/// The layout Kubernetes mounts a Secret with: the `..data` symlink swapped to a new
/// directory. Taken once, never seen half done, and the old pair refused after it.
#[test]
fn a_kubernetes_secret_swap_is_picked_up() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (pair(), pair());
    let (id, src, dst, log) =
        (t.path().join("id"), t.path().join("src"), t.path().join("dst"), t.path().join("log"));
    let (old_src, new_src) = (t.path().join("old-source"), t.path().join("new-source"));
    init::write_identity(&old_src, &old.source).unwrap();
    init::write_identity(&new_src, &new.source).unwrap();
    let mut volume = SecretVolume::new(&id, &old.destination);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let web = free_port();
    let srv = serve_logged(&id, &dst, &log, &["--http", &web]);
    check_ok(&push(&src, &srv, &old_src, "quic"));
    volume.update(&new.destination);
    wait_for("the new pair to be taken", || reloads(&web, "ok") == 1);
    check_ok(&push(&src, &srv, &new_src, "quic"));
    check_ok(&push(&src, &srv, &new_src, "tcp"));
    assert_eq!(push(&src, &srv, &old_src, "quic").status.code(), Some(3));
    assert_eq!(push(&src, &srv, &old_src, "tcp").status.code(), Some(3));
    assert_eq!((reloads(&web, "ok"), reloads(&web, "rejected")), (1, 0));
}

/// A scheduled push re-reads its credentials before each round: an unusable rotation keeps the
/// old ones (rounds go on), a good one is used from the next round, which the server proves by
/// then trusting only the new CA (a round with the old certificate would end the agent with
/// exit 3).
#[test]
fn a_scheduled_push_takes_rotated_credentials_before_a_round() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (pair(), pair());
    let (src, dst, log) = (t.path().join("src"), t.path().join("dst"), t.path().join("log"));
    // During the rotation the server trusts both CAs, then only the new one.
    let both = IdentityPem {
        ca: format!("{}{}", old.destination.ca, new.destination.ca),
        ..old.destination.clone()
    };
    let mut server_id = SecretVolume::new(&t.path().join("server-id"), &both);
    let client_dir = t.path().join("client-id");
    let mut client_id = SecretVolume::new(&client_dir, &old.source);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let srv = serve_logged(&server_id.dir, &dst, &log, &[]);
    let status = t.path().join("status.json");
    let client_log = t.path().join("client-log");
    let url = format!("ferry://localhost:{}/m", srv.addr.port());
    let web = free_port();
    let mut agent = Command::new(FERRY)
        .args(["push", s(&src), &url, "--identity", s(&client_dir), "--every", "200ms"])
        .args(["--no-progress", "--transport", "tcp", "--status-file", s(&status)])
        .args(["--http", &web])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&client_log).unwrap())
        .spawn()
        .unwrap();
    let rounds_ok = || -> u64 {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["rounds_ok"].as_u64())
            .unwrap_or(0)
    };
    wait_for("a first round", || rounds_ok() >= 1);

    // Half a rotation on the client: the new certificate with the old key.
    client_id.update(&IdentityPem { cert: new.source.cert.clone(), ..old.source.clone() });
    let before = rounds_ok();
    wait_for("two more rounds with the old credentials", || rounds_ok() >= before + 2);
    assert_eq!(lines_with(&client_log, "key.pem is not the private key of cert.pem"), 1);
    assert_eq!((reloads(&web, "ok"), reloads(&web, "rejected")), (0, 1));

    // The whole rotation (the client keeps trusting the server's certificate, from the old CA).
    client_id.update(&IdentityPem { ca: old.source.ca.clone(), ..new.source.clone() });
    let before = rounds_ok();
    wait_for("two rounds after the rotation", || rounds_ok() >= before + 2);
    assert_eq!((reloads(&web, "ok"), reloads(&web, "rejected")), (1, 1));
    server_id.update(&IdentityPem { ca: new.destination.ca.clone(), ..old.destination.clone() });
    wait_for("the server to drop the old CA", || lines_with(&log, "credentials changed") == 1);
    let before = rounds_ok();
    wait_for("two rounds trusted by the new CA only", || rounds_ok() >= before + 2);
    assert!(agent.try_wait().unwrap().is_none(), "the agent is still running");
    let _ = agent.kill();
    let _ = agent.wait();
}
