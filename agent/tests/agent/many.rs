//! Many volumes as one job: `ferry push|pull --list` against a real `ferry serve` whose
//! modules come from `--modules-from` or `--modules-dir`.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{assert_same_tree, creds, ferry, s, serve_with};

/// A small tree of a few files, different per `tag`.
fn tree(root: &Path, tag: &str) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), format!("{tag} a")).unwrap();
    std::fs::write(root.join("sub/b.bin"), tag.repeat(5000)).unwrap();
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Five modules, one read-only on the server and one whose local directory is missing: the
/// three others complete, each module says what happened, and the exit code is the worst (5,
/// the refusal, over 7, the local error). The server's modules come from `--modules-from`,
/// one of them with a space in its path and one with `:ro`.
#[test]
fn a_failed_module_does_not_stop_the_others_and_each_says_what_happened() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let dst = t.path().join("dst");
    let src = t.path().join("src");
    for m in ["alpha", "beta 2", "gamma", "locked", "delta"] {
        std::fs::create_dir_all(dst.join(m)).unwrap();
    }
    for m in ["alpha", "beta 2", "gamma", "locked"] {
        tree(&src.join(m), m);
    }
    let served = t.path().join("served");
    std::fs::write(
        &served,
        format!(
            "# the destination's volumes\nalpha {0}/alpha\nbeta {0}/beta 2\ngamma {0}/gamma\nlocked {0}/locked:ro\ndelta {0}/delta\n",
            s(&dst)
        ),
    )
    .unwrap();
    let srv = serve_with(&c.join("destination"), &[], &["--modules-from", s(&served)]);
    let list = t.path().join("list");
    std::fs::write(
        &list,
        format!(
            "# module  directory\r\nalpha  {0}/alpha\r\n\r\nbeta\t{0}/beta 2  \r\ngamma {0}/gamma\r\nlocked {0}/locked\r\ndelta {0}/not here\r\n",
            s(&src)
        ),
    )
    .unwrap();
    let server = format!("ferry://127.0.0.1:{}", srv.addr.port());
    let id = c.join("source");
    let out = ferry(&[
        "push",
        "--list",
        s(&list),
        &server,
        "--identity",
        s(&id),
        "--transport",
        "tcp",
        "--json",
        "--jobs",
        "3",
        "--retries",
        "0",
    ]);
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(5), "{doc}");
    assert_eq!(doc["exit_code"], 5);
    assert_eq!(doc["direction"], "push");
    let mods = doc["modules"].as_array().unwrap();
    let names: Vec<_> = mods.iter().map(|m| m["module"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma", "locked", "delta"], "in list order");
    for (m, dir) in [(&mods[0], "alpha"), (&mods[1], "beta 2"), (&mods[2], "gamma")] {
        assert_eq!(m["ok"], true, "{m}");
        assert_eq!(m["exit_code"], 0, "{m}");
        assert!(m.get("error").is_none(), "{m}");
        assert_eq!(m["report"]["stats"]["files_new"], 2, "{m}");
        assert_eq!(m["directory"], s(&src.join(dir)));
        assert_same_tree(&src.join(dir), &dst.join(dir));
    }
    let locked = &mods[3];
    assert_eq!((locked["ok"].as_bool(), locked["exit_code"].as_u64()), (Some(false), Some(5)));
    assert!(locked["error"].as_str().unwrap().contains("read-only"), "{locked}");
    assert!(locked.get("report").is_none());
    assert_eq!(std::fs::read_dir(dst.join("locked")).unwrap().count(), 0, "nothing pushed");
    let delta = &mods[4];
    assert_eq!((delta["ok"].as_bool(), delta["exit_code"].as_u64()), (Some(false), Some(7)));
    assert!(delta["error"].as_str().unwrap().contains("not here"), "{delta}");
    assert_eq!(delta["url"], format!("{server}/delta"));

    // The same modules pulled back (a read-only module can be pulled), as summary lines.
    let back = t.path().join("back");
    let pull_list = t.path().join("pull-list");
    std::fs::write(&pull_list, format!("alpha {0}/alpha\nlocked {0}/locked\n", s(&back))).unwrap();
    std::fs::write(dst.join("locked/served.txt"), b"from the server").unwrap();
    let out = ferry(&[
        "pull",
        "--list",
        s(&pull_list),
        &server,
        "--identity",
        s(&id),
        "--transport",
        "tcp",
        "--itemize",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // Itemized lines of modules running side by side say which module they belong to.
    let item = |module: &str, path: &str| {
        text.lines().any(|l| l.starts_with(&format!("{module}: ")) && l.ends_with(path))
    };
    assert!(item("alpha", "sub/b.bin") && item("locked", "served.txt"), "{text}");
    assert!(!item("alpha", "served.txt"), "{text}");
    // The summary comes last, in list order.
    let lines: Vec<_> = text.lines().collect();
    let lines = &lines[lines.len().saturating_sub(3)..];
    assert!(lines[0].starts_with("alpha: ok: 2 new"), "{text}");
    assert!(lines[1].starts_with("locked: ok: 1 new"), "{text}");
    assert_eq!(lines[2], "2 module(s): 2 ok, 0 not; exit code 0");
    assert_same_tree(&dst.join("alpha"), &back.join("alpha"));
    assert_same_tree(&dst.join("locked"), &back.join("locked"));
}

/// `--list-check` prints each module's direction, directory and URL and connects to nothing
/// (nothing listens on the port); a bad line stops everything with exit 2, naming the line.
#[test]
fn list_check_prints_the_plan_and_bad_lines_stop_everything() {
    let t = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("ferry://127.0.0.1:{free}");
    let run_stdin = |args: &[&str], input: &str| {
        let mut child = Command::new(crate::common::FERRY)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run_stdin(
        &["push", "--list", "-", &server, "--list-check", "--jobs", "4"],
        "data /mnt/data\nwal /mnt/my wal\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text,
        format!(
            "push data: /mnt/data -> {server}/data\npush wal: /mnt/my wal -> {server}/wal\n2 module(s), 2 at a time; nothing was run\n"
        )
    );
    let out = run_stdin(&["pull", "--list", "-", &server, "--list-check"], "data /mnt/data\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some(format!("pull data: {server}/data -> /mnt/data").as_str())
    );
    let dir = t.path().join("untouched");
    std::fs::create_dir(&dir).unwrap();
    for (input, says) in [
        (format!("ok {}\n# fine\nBad_Name /x\n", s(&dir)), "line 3"),
        (format!("a {0}\nb /y\na {0}\n", s(&dir)), "already on line 1"),
        ("# nothing\n\n".to_string(), "nothing to do"),
    ] {
        let out = run_stdin(&["push", "--list", "-", &server, "--retries", "0"], &input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {err}");
        assert!(err.contains(says), "{input:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing ran: {}", String::from_utf8_lossy(&out.stdout));
    }
    let out = ferry(&["push", "--list", "/dev/null", &format!("{server}/m")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the URL names the server only"));
    let out = ferry(&["pull", "--list", "/dev/null", &server, "--every", "1m"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--every/--schedule does not go"));
}

/// `--jobs N` bounds how many modules are between their `--pre-round` and `--post-round`
/// at once. The hooks keep a directory of active modules: each pre-round adds its module and
/// records how many are active, each post-round removes it. With `--jobs 2` the pre-round
/// also waits (at most 10 s) for a second active module, so the two workers are seen side by
/// side without relying on timing.
#[test]
fn jobs_bounds_the_modules_running_at_once() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    let names = ["m1", "m2", "m3", "m4", "m5", "m6"];
    let mut served = String::new();
    let mut list = String::new();
    for m in names {
        tree(&src.join(m), m);
        std::fs::create_dir_all(dst.join(m)).unwrap();
        served += &format!("{m} {}\n", s(&dst.join(m)));
        list += &format!("{m} {}\n", s(&src.join(m)));
    }
    std::fs::write(t.path().join("served"), served).unwrap();
    std::fs::write(t.path().join("list"), list).unwrap();
    let srv =
        serve_with(&c.join("destination"), &[], &["--modules-from", s(&t.path().join("served"))]);
    let server = format!("ferry://127.0.0.1:{}", srv.addr.port());
    for (jobs, wait_for) in [(1, 1), (2, 2)] {
        let active = t.path().join(format!("active{jobs}"));
        let counts = t.path().join(format!("counts{jobs}"));
        std::fs::create_dir(&active).unwrap();
        let a = s(&active);
        let pre = format!(
            "mkdir {a}/$(basename $FERRY_ROOT) && n=0; while [ $(ls {a} | wc -l) -lt {wait_for} ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done; ls {a} | wc -l >> {}",
            s(&counts)
        );
        let post = format!("rmdir {a}/$(basename $FERRY_ROOT)");
        let out = ferry(&[
            "push",
            "--list",
            s(&t.path().join("list")),
            &server,
            "--identity",
            s(&c.join("source")),
            "--transport",
            "tcp",
            "--jobs",
            &jobs.to_string(),
            "--pre-round",
            &pre,
            "--post-round",
            &post,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let seen: Vec<usize> = std::fs::read_to_string(&counts)
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(seen.len(), names.len(), "one pre-round per module");
        assert_eq!(seen.iter().max(), Some(&jobs), "--jobs {jobs}: {seen:?}");
    }
    for m in names {
        assert_same_tree(&src.join(m), &dst.join(m));
    }
}

/// `--modules-dir`: a subdirectory created after the server started is served (with its own
/// state and snapshot), one removed is refused, a symlinked or hidden one is never served,
/// and a `--module` of the same name wins over a subdirectory.
#[test]
fn modules_dir_follows_its_subdirectories_while_serving() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let vols = t.path().join("vols");
    let state = t.path().join("state");
    let elsewhere = t.path().join("elsewhere");
    for d in [&vols.join("shadow"), &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    let srv = serve_with(
        &c.join("destination"),
        &[format!("shadow={}", s(&elsewhere))],
        &["--modules-dir", s(&vols), "--state-dir", s(&state)],
    );
    let id = c.join("source");
    let src = t.path().join("src");
    tree(&src, "x");
    let push = |module: &str| {
        ferry(&[
            "push",
            s(&src),
            &format!("ferry://127.0.0.1:{}/{module}", srv.addr.port()),
            "--identity",
            s(&id),
            "--transport",
            "tcp",
            "--retries",
            "0",
        ])
    };
    // Created after the server started.
    std::fs::create_dir(vols.join("later")).unwrap();
    let out = push("later");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_tree(&src, &vols.join("later"));
    let snaps =
        ferry(&["snapshots", "list", "--state-dir", s(&state), "--module", "later", "--json"]);
    assert_eq!(json(&snaps).as_array().map(Vec::len), Some(1), "its own state and snapshot");
    // The explicit module wins over the subdirectory of the same name.
    let out = push("shadow");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_tree(&src, &elsewhere);
    assert_eq!(std::fs::read_dir(vols.join("shadow")).unwrap().count(), 0);
    // Removed while serving; a symlink to a real module; a hidden directory.
    std::fs::remove_dir_all(vols.join("later")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, vols.join("link")).unwrap();
    std::fs::create_dir(vols.join(".hidden")).unwrap();
    for module in ["later", "link", ".hidden"] {
        let out = push(module);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{module}: {err}");
        assert!(err.contains("no module named"), "{module}: {err}");
    }
    assert!(!vols.join("later").exists(), "a refused module is not created");
}

/// A subdirectory whose state cannot be kept (btrfs snapshots of a directory that is no
/// subvolume) is refused before its round, as a `--module` would be refused at start-up.
#[test]
fn a_modules_dir_module_whose_state_cannot_work_is_refused_before_the_round() {
    let t = tempfile::tempdir().unwrap();
    let c = creds(t.path());
    let vols = t.path().join("vols");
    std::fs::create_dir_all(vols.join("x")).unwrap();
    let state = t.path().join("state");
    let srv = serve_with(
        &c.join("destination"),
        &[],
        &["--modules-dir", s(&vols), "--state-dir", s(&state), "--snapshot", "btrfs"],
    );
    let src = t.path().join("src");
    tree(&src, "x");
    let out = ferry(&[
        "push",
        s(&src),
        &format!("ferry://127.0.0.1:{}/x", srv.addr.port()),
        "--identity",
        s(&c.join("source")),
        "--transport",
        "tcp",
        "--retries",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("cannot keep its state"), "{err}");
    assert_eq!(std::fs::read_dir(vols.join("x")).unwrap().count(), 0, "nothing moved");
}
