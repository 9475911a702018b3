//! Consistency groups: `ferry push --list FILE --group NAME` against a real `ferry serve
//! --state-dir`, and `ferry snapshots list|restore --group` on what it recorded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_same_tree, copy_tree, creds, ferry, s, serve_with, Rng, Server};

/// The set-up: credentials, source trees `src/{data,wal}`, the server's modules
/// `dst/{data,wal}` and its state directory, and the list file naming both.
struct Group {
    t: tempfile::TempDir,
    creds: PathBuf,
    state: PathBuf,
    list: PathBuf,
}

impl Group {
    fn new() -> Group {
        let t = tempfile::tempdir().unwrap();
        let creds = creds(t.path());
        for m in ["data", "wal"] {
            std::fs::create_dir_all(t.path().join("dst").join(m)).unwrap();
        }
        let list = t.path().join("list");
        let src = t.path().join("src");
        std::fs::write(&list, format!("data {0}/data\nwal {0}/wal\n", s(&src))).unwrap();
        let state = t.path().join("state");
        Group { t, creds, state, list }
    }

    fn src(&self, m: &str) -> PathBuf {
        self.t.path().join("src").join(m)
    }

    fn serve(&self) -> Server {
        let dst = self.t.path().join("dst");
        let modules = [format!("data={}/data", s(&dst)), format!("wal={}/wal", s(&dst))];
        serve_with(&self.creds.join("destination"), &modules, &["--state-dir", s(&self.state)])
    }

    fn push_args(&self, srv: &Server) -> Vec<String> {
        let id = self.creds.join("source");
        [
            "push",
            "--list",
            s(&self.list),
            &format!("ferry://127.0.0.1:{}", srv.addr.port()),
            "--group",
            "db",
            "--identity",
            s(&id),
            "--transport",
            "tcp",
            "--json",
            "--retries",
            "0",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    /// Pushes the group; returns the exit code and the JSON document.
    fn push(&self, srv: &Server) -> (Option<i32>, serde_json::Value) {
        let args = self.push_args(srv);
        let out = ferry(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), doc)
    }

    /// The generations of group `db`, as `ferry snapshots list --group --json` prints them.
    fn generations(&self) -> Vec<serde_json::Value> {
        let out =
            ferry(&["snapshots", "list", "--state-dir", s(&self.state), "--group", "db", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Restores generation `id` into `to/{data,wal}`.
    fn restore(&self, id: &str, to: &Path) {
        let out = ferry(&[
            "snapshots",
            "restore",
            "--state-dir",
            s(&self.state),
            "--group",
            "db",
            "--generation",
            id,
            "--to",
            s(to),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Keeps a copy of both source trees as they are now, at `to/{data,wal}`.
    fn keep(&self, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for m in ["data", "wal"] {
            copy_tree(&self.src(m), &to.join(m));
        }
    }
}

/// Writes version `v` of both source trees: data and WAL files that only make sense together.
fn write_version(g: &Group, v: u32, files: u32) {
    for m in ["data", "wal"] {
        let d = g.src(m);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for i in 0..files {
            std::fs::write(d.join(format!("sub/{i:03}")), format!("{m} v{v} {i}\n").repeat(200))
                .unwrap();
        }
        std::fs::write(d.join("version"), format!("{v}")).unwrap();
    }
}

fn members(gen: &serde_json::Value) -> Vec<(String, String)> {
    gen["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["module"].as_str().unwrap().to_string(), m["snapshot"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Two pushes of a group of two modules: two generations, each restoring both modules as
/// they were together at its push.
#[test]
fn each_push_of_a_group_records_a_generation_that_restores_both_modules() {
    let g = Group::new();
    let srv = g.serve();
    write_version(&g, 1, 5);
    let (code, doc) = g.push(&srv);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["group"]["name"], "db");
    assert_eq!(doc["group"]["recorded"], true, "{doc}");
    let first = doc["group"]["generation"].as_str().unwrap().to_string();
    g.keep(&g.t.path().join("was1"));
    write_version(&g, 2, 7);
    let (code, doc) = g.push(&srv);
    assert_eq!(code, Some(0), "{doc}");
    let second = doc["group"]["generation"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let gens = g.generations();
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[0]["generation"], first.as_str());
    assert_eq!(gens[1]["generation"], second.as_str());
    for gen in &gens {
        let names: Vec<String> = members(gen).into_iter().map(|(m, _)| m).collect();
        assert_eq!(names, ["data", "wal"]);
    }
    // Each member's snapshot is the one its round reported.
    for (m, snap) in members(&gens[1]) {
        let r =
            doc["modules"].as_array().unwrap().iter().find(|r| r["module"] == m.as_str()).unwrap();
        assert_eq!(r["report"]["commit"]["snapshot"], snap.as_str(), "{r}");
    }
    let (r1, r2) = (g.t.path().join("r1"), g.t.path().join("r2"));
    g.restore(&first, &r1);
    g.restore(&second, &r2);
    for m in ["data", "wal"] {
        assert_same_tree(&g.t.path().join("was1").join(m), &r1.join(m));
        assert_same_tree(&g.src(m), &r2.join(m));
    }
    // A snapshot a generation names cannot be deleted.
    let (m, snap) = members(&gens[0]).remove(0);
    let out = ferry(&[
        "snapshots",
        "delete",
        "--state-dir",
        s(&g.state),
        "--module",
        &m,
        "--snapshot",
        &snap,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("consistency group"));
    // A generation that does not exist is a usage error.
    let out = ferry(&[
        "snapshots",
        "restore",
        "--state-dir",
        s(&g.state),
        "--group",
        "db",
        "--generation",
        "000099-20260101T000000Z",
        "--to",
        s(&g.t.path().join("r3")),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The second member's round fails on the server (its directory became a file): the first
/// member's round is recorded, but no generation is; the previous generation still restores
/// both modules as they were together.
#[test]
fn a_failed_member_records_no_generation_and_the_previous_one_still_restores() {
    let g = Group::new();
    let srv = g.serve();
    write_version(&g, 1, 5);
    let (code, doc) = g.push(&srv);
    assert_eq!(code, Some(0), "{doc}");
    let first = doc["group"]["generation"].as_str().unwrap().to_string();
    g.keep(&g.t.path().join("was1"));
    // The server's wal module cannot be opened any more.
    let wal = g.t.path().join("dst/wal");
    std::fs::rename(&wal, g.t.path().join("wal-aside")).unwrap();
    std::fs::write(&wal, b"not a directory").unwrap();
    write_version(&g, 2, 7);
    let (code, doc) = g.push(&srv);
    assert_eq!(code, Some(5), "the server's refusal: {doc}");
    assert_eq!(doc["exit_code"], 5);
    assert_eq!(doc["group"]["recorded"], false, "{doc}");
    assert!(doc["group"].get("generation").is_none(), "{doc}");
    let why = doc["group"]["error"].as_str().unwrap();
    assert!(why.contains("module wal failed"), "{why}");
    let data = &doc["modules"][0];
    assert_eq!(
        (data["module"].as_str(), data["ok"].as_bool()),
        (Some("data"), Some(true)),
        "{doc}"
    );
    assert_eq!(doc["modules"][1]["ok"], false);
    let gens = g.generations();
    assert_eq!(gens.len(), 1, "no new generation: {gens:?}");
    assert_eq!(gens[0]["generation"], first.as_str());
    let r = g.t.path().join("r");
    g.restore(&first, &r);
    for m in ["data", "wal"] {
        assert_same_tree(&g.t.path().join("was1").join(m), &r.join(m));
    }
}

/// `kill -9` of the server or of the pushing source (alternately) at random points of group
/// pushes, 20 times (bounded in time): after each, every generation recorded names both
/// members, and each member's snapshot exists and verifies.
#[test]
fn kill_9_during_group_rounds_never_leaves_a_partial_generation() {
    let g = Group::new();
    let mut rng = Rng::new(0x9e0_c0de);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut kills, mut cut, mut recorded) = (0, 0, 0);
    for v in 1..=20u32 {
        if Instant::now() > deadline {
            break;
        }
        write_version(&g, v, 40);
        let mut srv = g.serve();
        let args = g.push_args(&srv);
        let mut child = Command::new(crate::common::FERRY)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A group push here takes a few hundred milliseconds: kill inside it most times. The
        // first kills come within 50 ms of the start, so some surely cut a push however fast
        // or slow the machine is.
        let delay = if v <= 4 { rng.below(50) } else { rng.below(600) };
        std::thread::sleep(Duration::from_millis(delay));
        if v % 2 == 0 {
            let _ = child.kill();
        } else {
            let _ = srv.child.kill();
        }
        kills += 1;
        if !child.wait().unwrap().success() {
            cut += 1;
        }
        drop(srv);
        let gens = g.generations();
        recorded = gens.len();
        for gen in &gens {
            let m = members(gen);
            assert_eq!(
                m.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                ["data", "wal"],
                "{gen}"
            );
            for (module, snap) in m {
                let out = ferry(&[
                    "snapshots",
                    "verify",
                    "--state-dir",
                    s(&g.state),
                    "--module",
                    &module,
                    "--snapshot",
                    &snap,
                ]);
                assert!(
                    out.status.success(),
                    "after kill {kills}: generation {} names {module} {snap}: {}",
                    gen["generation"],
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert!(kills >= 10, "only {kills} kills in the time");
    // The kills must test something: some cut a push, and some pushes finished first.
    assert!(cut > 0, "no kill cut a push in {kills}");
    assert!(recorded > 0, "no generation was ever recorded in {kills} pushes");
}
