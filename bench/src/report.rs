//! What `compare` prints and writes: the table on stdout, issue 5's goals, the markdown report
//! and its SVG chart (plotters, SVG backend only: no font or system libraries).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::compare::{Goal, GoalStatus, Results, Scenario, Summary};
use crate::tools::Tool;

/// Decimal units, three significant digits or so: "812 B", "12.4 kB", "5.01 MB", "1.07 GB".
pub fn human_bytes(b: u64) -> String {
    let f = b as f64;
    if b < 1000 {
        format!("{b} B")
    } else if f < 1e6 {
        format!("{:.1} kB", f / 1e3)
    } else if f < 1e9 {
        format!("{:.2} MB", f / 1e6)
    } else {
        format!("{:.2} GB", f / 1e9)
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / f64::from(1 << 20))
}

fn opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "–".to_string(), human_bytes)
}

const HEADER: [&str; 11] = [
    "scenario",
    "tool",
    "durable s: median (min–max)",
    "flush s",
    "MB/s",
    "veth bytes sent / recv",
    "tool's wire sent / recv",
    "literal",
    "CPU s src / dst",
    "CPU s/GiB src / dst",
    "peak RSS MiB src / dst",
];

/// CPU seconds per GiB of the scenario's source tree.
fn per_gib(cpu: f64, source_bytes: u64) -> f64 {
    if source_bytes == 0 {
        return 0.0;
    }
    cpu / (source_bytes as f64 / f64::from(1u32 << 30))
}

fn row(r: &Results, s: &Summary) -> Vec<String> {
    let t = &s.transfer;
    let pair = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{} / {}", human_bytes(a), human_bytes(b)),
        (Some(a), None) => format!("{} / –", human_bytes(a)),
        _ => "–".to_string(),
    };
    let bytes = r
        .runs
        .iter()
        .find(|x| x.scenario == s.scenario && x.tool == s.tool)
        .map_or(0, |x| x.source_bytes);
    let srv_cpu = s.server_cpu_secs;
    let cpu = match srv_cpu {
        Some(srv) => format!("{:.2} / {:.2}", s.client_cpu_secs, srv),
        None => format!("{:.2} (both)", s.client_cpu_secs),
    };
    let cpu_gib = match srv_cpu {
        Some(srv) => {
            format!("{:.2} / {:.2}", per_gib(s.client_cpu_secs, bytes), per_gib(srv, bytes))
        }
        None => format!("{:.2} (both)", per_gib(s.client_cpu_secs, bytes)),
    };
    let rss = match s.server_max_rss_bytes {
        Some(srv) => format!("{} / {}", mib(s.client_max_rss_bytes), mib(srv)),
        None => format!("{} (both)", mib(s.client_max_rss_bytes)),
    };
    vec![
        s.scenario.slug().to_string(),
        s.tool.label().to_string(),
        format!("{:.3} ({:.3}–{:.3})", s.durable.median, s.durable.min, s.durable.max),
        format!("{:.2}", s.flush_secs),
        format!("{:.1}", s.throughput_mb_s),
        pair(s.veth_sent, s.veth_received),
        pair(t.wire_sent, t.wire_received),
        opt_bytes(t.literal),
        cpu,
        cpu_gib,
        rss,
    ]
}

/// A plain-text table: first two columns left-aligned, the rest right-aligned.
fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if i < 2 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}

/// Ferry's figure in `scenario`: Ferry as deployed, one default `ferry push` per round to
/// `ferry serve --state-dir`, when it ran; else `ferry push` over QUIC, else `ferry sync`.
pub fn ferry_figure(r: &Results, scenario: Scenario) -> Option<&Summary> {
    [Tool::FerryPush, Tool::FerryPushQuic, Tool::FerrySync]
        .into_iter()
        .find_map(|t| r.summary(scenario, t))
}

/// "incremental: ferry push / rsync daemon 0.42x, ..." lines: the median time to a durable
/// copy of each Ferry tool over each other tool's.
fn ratios(r: &Results, scenario: Scenario) -> Vec<String> {
    let of = |ferry: bool| {
        r.summaries
            .iter()
            .filter(move |s| s.scenario == scenario && s.tool.is_ferry() == ferry)
            .filter(|s| s.durable.median > 0.0)
    };
    of(true)
        .filter_map(|f| {
            let parts: Vec<String> = of(false)
                .map(|s| {
                    format!("/ {} {:.2}x", s.tool.label(), f.durable.median / s.durable.median)
                })
                .collect();
            (!parts.is_empty())
                .then(|| format!("{}: {} {}", scenario.slug(), f.tool.label(), parts.join(", ")))
        })
        .collect()
}

/// How the check after every run differed for the VolSync-style mover, when it ran.
fn omit_note(r: &Results) -> &'static str {
    if r.runs.iter().any(|x| x.tool == Tool::VolsyncStyle) {
        " (VolSync-style with --omit-dir-times: its delete pass leaves directory times behind)"
    } else {
        ""
    }
}

fn mode_line(r: &Results) -> String {
    match (r.net, r.mtu) {
        (crate::compare::NetMode::Veth, mtu) => format!(
            "two network namespaces joined by a veth pair, MTU {}",
            mtu.map_or_else(|| "?".to_string(), |m| m.to_string())
        ),
        (crate::compare::NetMode::Loopback, _) => {
            let why = r.net_note.as_deref().map_or_else(String::new, |n| format!(" ({n})"));
            format!("loopback{why}")
        }
    }
}

fn status_word(s: GoalStatus) -> &'static str {
    match s {
        GoalStatus::Met => "met",
        GoalStatus::NotMet => "NOT met",
        GoalStatus::NotMeasured => "not measured",
    }
}

/// The table, ratios and goals, as printed on stdout.
pub fn text(r: &Results) -> String {
    let rows: Vec<Vec<String>> = r.summaries.iter().map(|s| row(r, s)).collect();
    let mut out = format!(
        "ferry-bench compare: {}; scale {}, {} repetition(s), destination on {} ({}), {} CPUs, \
         load average before {} / after {}\n\n",
        mode_line(r),
        r.scale,
        r.reps,
        r.dest_fs,
        r.dest_root.display(),
        r.host.cpus,
        r.host.loadavg_start,
        r.host.loadavg_end
    );
    out.push_str(&text_table(&HEADER, &rows));
    out.push('\n');
    for &sc in &r.scenarios {
        for line in ratios(r, sc) {
            let _ = writeln!(out, "{line}");
        }
    }
    for t in r.tools.iter().filter(|t| !t.available) {
        let _ = writeln!(out, "{}: not available ({})", t.label, t.note.as_deref().unwrap_or(""));
    }
    let _ = writeln!(
        out,
        "peak RSS floor (the measuring wrapper running `true`): {} MiB; every run verified with \
         rsync -aHAXnic --delete{}: {}",
        mib(r.rusage_floor.max_rss_bytes),
        omit_note(r),
        if r.all_verified { "yes" } else { "NO" }
    );
    out.push_str("\ngoals of issue 13 (reported, not asserted):\n");
    for g in &r.goals {
        let _ = writeln!(out, "  [{}] {}: {}", status_word(g.status), g.goal, g.measured);
    }
    out
}

/// Issue 13's goals, against this run, on the time to a durable copy. Ferry's figure is
/// [`ferry_figure`] (one default `ferry push` per round, as deployed), with the round inside a
/// long-running agent (`ferry --every round`) and the baseline reported alongside; the
/// reference is the rsync daemon's time (local rsync's when the daemon did not run), and for
/// the movers the faster of VolSync-style and pv-migrate-style.
pub fn goals(r: &Results) -> Vec<Goal> {
    let s = |sc, t| r.summary(sc, t);
    let fastest = |sc: Scenario, tools: &[Tool]| {
        tools
            .iter()
            .filter_map(|&t| s(sc, t))
            .min_by(|a, b| a.durable.median.total_cmp(&b.durable.median))
    };
    // The daemon (the issue's floor); local rsync only when the daemon did not run.
    let rsync_ref = |sc| s(sc, Tool::RsyncDaemon).or_else(|| s(sc, Tool::Rsync));
    let movers_ref = |sc| fastest(sc, &[Tool::VolsyncStyle, Tool::PvMigrateStyle]);
    // The other Ferry figures against the same reference.
    let alongside = |sc: Scenario, f: &Summary, reference: &Summary| {
        let parts: Vec<String> = [Tool::FerryEvery, Tool::FerryBaseline]
            .into_iter()
            .filter(|&t| t != f.tool)
            .filter_map(|t| s(sc, t))
            .map(|x| {
                format!(
                    "{} {:.3} s, {:.2}x",
                    x.tool.label(),
                    x.durable.median,
                    x.durable.median / reference.durable.median
                )
            })
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("; {}", parts.join("; "))
        }
    };
    let not_measured = |goal: &str| Goal {
        goal: goal.to_string(),
        measured: "scenario or tools not in this run".to_string(),
        status: GoalStatus::NotMeasured,
    };
    let verdict = |ok: bool| if ok { GoalStatus::Met } else { GoalStatus::NotMet };
    let time_goal = |goal: &str, sc: Scenario, limit: f64, reference: Option<&Summary>| match (
        ferry_figure(r, sc),
        reference,
    ) {
        (Some(f), Some(rs)) if rs.durable.median > 0.0 => {
            let ratio = f.durable.median / rs.durable.median;
            Goal {
                goal: goal.to_string(),
                measured: format!(
                    "{} {:.3} s vs {} {:.3} s: {ratio:.2}x{}",
                    f.tool.label(),
                    f.durable.median,
                    rs.tool.label(),
                    rs.durable.median,
                    alongside(sc, f, rs)
                ),
                status: verdict(ratio <= limit),
            }
        }
        _ => not_measured(goal),
    };
    let mut out = vec![time_goal(
        "incremental mixed: Ferry's time to a durable copy <= 0.5x the rsync daemon's",
        Scenario::Incremental,
        0.5,
        rsync_ref(Scenario::Incremental),
    )];

    // Wire bytes: the veth counters in the network mode, else what the tools report.
    let wire = |x: &Summary| x.veth_total().or_else(|| x.transfer.wire_total());
    let goal = "incremental mixed: Ferry's bytes on the wire <= 0.5x the rsync daemon's";
    out.push(match (ferry_figure(r, Scenario::Incremental), rsync_ref(Scenario::Incremental)) {
        (Some(f), Some(rs)) => match (wire(f), wire(rs)) {
            (Some(fw), Some(rw)) if rw > 0 => {
                let ratio = fw as f64 / rw as f64;
                let counted = if f.veth_total().is_some() {
                    "veth counters, both ways"
                } else {
                    "as the tools report them, both ways"
                };
                Goal {
                    goal: goal.to_string(),
                    measured: format!(
                        "{} {} vs {} {} ({counted}): {ratio:.2}x",
                        f.tool.label(),
                        human_bytes(fw),
                        rs.tool.label(),
                        human_bytes(rw)
                    ),
                    status: verdict(ratio <= 0.5),
                }
            }
            _ => not_measured(goal),
        },
        _ => not_measured(goal),
    });
    out.push(time_goal(
        "initial mixed: Ferry's time <= 0.8x the rsync daemon's",
        Scenario::InitialMixed,
        0.8,
        rsync_ref(Scenario::InitialMixed),
    ));
    out.push(time_goal(
        "no-change round on many: Ferry's time <= 0.25x the rsync daemon's",
        Scenario::NochangeMany,
        0.25,
        rsync_ref(Scenario::NochangeMany),
    ));
    out.push(time_goal(
        "initial many: Ferry's time <= 0.8x the rsync daemon's",
        Scenario::InitialMany,
        0.8,
        rsync_ref(Scenario::InitialMany),
    ));
    for &sc in &r.scenarios {
        out.push(time_goal(
            &format!(
                "{}: Ferry's time <= 0.5x the faster of VolSync-style and pv-migrate-style",
                sc.slug()
            ),
            sc,
            0.5,
            movers_ref(sc),
        ));
    }

    let goal = "peak RSS per agent on many <= 64 MiB";
    let many = [Scenario::InitialMany, Scenario::NochangeMany];
    let peaks = |tool: Tool| -> Option<(u64, Option<u64>)> {
        let v: Vec<&Summary> = many.iter().filter_map(|&sc| s(sc, tool)).collect();
        let cli = v.iter().map(|x| x.client_max_rss_bytes).max()?;
        Some((cli, v.iter().filter_map(|x| x.server_max_rss_bytes).max()))
    };
    let describe = |tool: Tool| {
        peaks(tool).map(|(cli, srv)| match srv {
            Some(srv) => {
                format!("{} {} / {} MiB source / destination", tool.label(), mib(cli), mib(srv))
            }
            None => format!("{} {} MiB, both sides in one process", tool.label(), mib(cli)),
        })
    };
    let ferry_tool = [Tool::FerryPush, Tool::FerryPushQuic, Tool::FerrySync]
        .into_iter()
        .find(|&t| peaks(t).is_some());
    out.push(match ferry_tool.and_then(|t| Some((t, peaks(t)?))) {
        Some((tool, (cli, srv))) => {
            let rss = cli.max(srv.unwrap_or(0));
            let others: Vec<String> = Tool::ALL
                .into_iter()
                .filter(|&t| t != tool && t != Tool::Cp)
                .filter_map(describe)
                .collect();
            Goal {
                goal: goal.to_string(),
                measured: format!(
                    "{}; {} (flatness over file counts: compare runs at several scales)",
                    describe(tool).unwrap_or_default(),
                    others.join("; ")
                ),
                status: verdict(rss <= 64 << 20),
            }
        }
        None => not_measured(goal),
    });
    out
}

/// `to` relative to the directory `from_dir` when it is below it, else `to` as given.
fn relative(from_dir: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (d, t) = (abs(from_dir), abs(to));
    t.strip_prefix(&d).map(Path::to_path_buf).unwrap_or(t)
}

/// The markdown report; `chart` is the SVG's path, `report` the markdown's (for the link).
pub fn markdown(r: &Results, report: &Path, chart: Option<&Path>) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Ferry vs rsync\n");
    let _ = writeln!(
        m,
        "<!-- Generated by `ferry-bench compare` (bench/src/report.rs): regenerate, do not edit. -->\n"
    );
    let _ = writeln!(
        m,
        "Command: `{}`, run {} ({:.0} s in all).\n",
        r.command,
        crate::gen::utc(r.started_unix),
        r.duration_secs
    );
    let tools: Vec<String> = r
        .tools
        .iter()
        .filter(|t| t.available)
        .map(|t| format!("{} (`{}`)", t.label, t.version.as_deref().unwrap_or("?")))
        .collect();
    let _ = writeln!(
        m,
        "- Machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}; load average before `{}`, after `{}`.",
        r.host.cpus,
        r.host.cpu_model,
        r.host.mem_total_bytes as f64 / f64::from(1 << 30),
        r.host.kernel,
        r.host.loadavg_start,
        r.host.loadavg_end
    );
    let _ = writeln!(m, "- Network: {}.", mode_line(r));
    let _ = writeln!(m, "- Tools: {}.", tools.join(", "));
    let _ =
        writeln!(
        m,
        "- Data: scale {}, seed {:#x}; sources on {} (in the page cache), destinations on {}{}.",
        r.scale,
        r.seed,
        r.source_fs,
        r.dest_fs,
        if r.dest_fs == r.source_fs && r.dest_fs != "tmpfs" { " (the same filesystem)" } else { "" }
    );
    let _ = writeln!(
        m,
        "- {} repetition(s) per tool and scenario, tools alternating (order rotated each \
         repetition); every run checked with `rsync -aHAXnic --delete SRC/ DST/`{}: {}.\n",
        r.reps,
        omit_note(r),
        if r.all_verified { "all identical" } else { "DIFFERENCES FOUND" }
    );
    if let Some(chart) = chart {
        let dir = report.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let _ = writeln!(
            m,
            "![Time to a durable copy per scenario (median, whiskers min–max)]({})\n",
            relative(dir, chart).display()
        );
    }
    let _ = writeln!(m, "## Results\n");
    let _ = writeln!(m, "Median of {} run(s); min–max in parentheses.\n", r.reps);
    let rows: Vec<Vec<String>> = r.summaries.iter().map(|s| row(r, s)).collect();
    m.push_str(&md_table(&HEADER, &rows));
    m.push('\n');
    for &sc in &r.scenarios {
        for line in ratios(r, sc) {
            let _ = writeln!(m, "- {line} (median time to a durable copy)");
        }
    }
    m.push('\n');

    let _ = writeln!(m, "## Against the goals of issue 13\n");
    let _ = writeln!(m, "Reported, never asserted: no test depends on timing.\n");
    let grows: Vec<Vec<String>> = r
        .goals
        .iter()
        .map(|g| vec![g.goal.clone(), g.measured.clone(), status_word(g.status).to_string()])
        .collect();
    m.push_str(&md_table(&["goal", "this run", "status"], &grows));
    m.push('\n');

    let _ = writeln!(m, "## Not measured here\n");
    for t in r.tools.iter().filter(|t| !t.available) {
        let _ =
            writeln!(m, "- **{}** ({}): {}.", t.label, t.command, t.note.as_deref().unwrap_or(""));
    }
    let _ = writeln!(
        m,
        "- Two machines: every figure here is on one machine, both sides sharing its CPUs \
         (over a veth pair between two network namespaces in the network mode, over loopback \
         otherwise).\n\
         - The transport alone (QUIC vs TLS over TCP vs plain TCP, no files): \
         `ferry-bench transport`.\n"
    );

    let _ = writeln!(m, "## Datasets\n");
    let drows: Vec<Vec<String>> = r
        .datasets
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.stats.files.to_string(),
                d.stats.dirs.to_string(),
                d.stats.symlinks.to_string(),
                human_bytes(d.stats.bytes),
                format!("{:.1} s", d.gen_secs),
            ]
        })
        .collect();
    m.push_str(&md_table(
        &["dataset", "files", "dirs", "symlinks", "bytes", "generated in"],
        &drows,
    ));
    if let Some(mu) = r.datasets.iter().find_map(|d| d.mutate) {
        let _ = writeln!(
            m,
            "\n`mutated` = `mixed` + one round: big file {} overwrites and {} inserts ({}), {} small \
             files edited ({}) and {} appended to ({}), {} added ({}), {} deleted, {} renamed; \
             changed bytes {} (the least any tool must send).",
            mu.big_overwrites,
            mu.big_inserts,
            human_bytes(mu.big_changed_bytes),
            mu.small_edited,
            human_bytes(mu.edited_bytes),
            mu.small_appended,
            human_bytes(mu.appended_bytes),
            mu.added,
            human_bytes(mu.added_bytes),
            mu.deleted,
            mu.renamed,
            human_bytes(mu.changed_bytes())
        );
    }
    m.push('\n');

    let _ = writeln!(m, "## What the columns mean\n");
    let _ = writeln!(
        m,
        "- **Ferry's figure** in the goals is `ferry push` as deployed: one default `ferry \
         push` process per round (no `--transport`: what users get), to `ferry serve \
         --state-dir` (a fresh state directory on the destination's filesystem, the default \
         snapshotter). **ferry --every round** is a round inside a long-running `ferry push \
         --every` agent: a warm-up round first, then the measured one started by SIGUSR1, its \
         time the agent's own record (`last_duration_secs` of its status file), its CPU times \
         the agent's and server's `/proc` times over the round. **ferry (baseline)** is \
         `ferry push` as deployed with the `--ferry-baseline` binary.\n\
         - **Network mode** (`--net veth`, the default): the destination side (servers, \
         destination directories) runs in one network namespace, the source side in another, \
         joined by a veth pair at MTU 1500, as two pods on a pod network; both see the same \
         filesystem. Loopback (`--net loopback`) runs both sides on 127.0.0.1 (MTU 65,536).\n\
         - **durable**: the time to a durable copy, the headline: the tool's wall time (spawn to \
         exit of the client, for client/server tools; servers start before, fresh for every \
         run, and stop after) plus **flush**, `syncfs()` of the destination's filesystem right \
         after it. Ferry's destination side fsyncs what it writes before a round ends; rsync \
         and `cp -a` leave their writes to the kernel, so flush is their remaining cost.\n\
         - **MB/s**: bytes of regular files in the source tree / durable time (for incremental \
         and no-change rounds: how fast a tree of that size is brought up to date).\n\
         - **veth bytes**: every byte that crossed the veth pair during the run (headers, \
         handshakes, acknowledgements, probes), from the interfaces' counters read before and \
         after; sent = source side to destination side. Network mode only.\n\
         - **tool's wire**: what the tool says it moved: Ferry's framed protocol bytes before \
         TLS or QUIC framing, rsync's \"Total bytes sent/received\" (for VolSync-style, both \
         passes).\n\
         - **literal**: file data sent as new bytes (Ferry counts them before compression).\n\
         - **CPU** (user + sys) per side, and per GiB of the scenario's source tree, and **peak \
         RSS** per side: src = the source side (the client's process tree, with the stunnel \
         client for VolSync-style and the ssh client for pv-migrate-style), dst = the \
         destination side (the server's process tree: `ferry serve`, the rsync daemon and its \
         connection processes, stunnel with the rsync it starts, sshd with its sessions). \
         Measured by `getrusage(RUSAGE_CHILDREN)` in a small wrapper whose only child is the \
         command: CPU summed over the tree, peak RSS the largest single process of it (the \
         wrapper accounts for a floor of {} MiB). A server's account runs from its start to \
         its stop, so it includes start-up. Local tools (`ferry sync`, rsync, `cp -a`, \
         loopback only) hold both sides: one figure.\n",
        mib(r.rusage_floor.max_rss_bytes)
    );

    let _ = writeln!(m, "## Reproduce\n");
    let _ = writeln!(
        m,
        "```sh\ncargo build --release -p ferry-agent -p ferry-bench\n\
         sudo target/release/ferry-bench compare --scale {} --reps {}{}{} --json compare.json \\\n    \
         --report BENCHMARKS.md --chart bench/BENCHMARKS.svg\n\
         # or, from a saved run: target/release/ferry-bench report --json compare.json \
         --report BENCHMARKS.md --chart bench/BENCHMARKS.svg\n```\n\n\
         `--scale 0.05 --reps 3` runs every scenario in about a minute; \
         `ferry-bench gen --kind mixed|mutate|many --out DIR` makes the datasets alone.",
        r.scale,
        r.reps,
        if r.net == crate::compare::NetMode::Loopback { " --net loopback" } else { "" },
        if r.dest_fs == "tmpfs" { " --dest-tmpfs" } else { "" }
    );
    m
}

fn tool_color(t: Tool) -> RGBColor {
    match t {
        Tool::FerryPush => RGBColor(0, 90, 50),
        Tool::FerryEvery => RGBColor(65, 171, 93),
        Tool::FerryBaseline => RGBColor(161, 217, 155),
        Tool::VolsyncStyle => RGBColor(117, 107, 177),
        Tool::PvMigrateStyle => RGBColor(188, 189, 220),
        Tool::FerrySync => RGBColor(27, 158, 119),
        Tool::FerryPushQuic => RGBColor(16, 104, 78),
        Tool::FerryPushTcp => RGBColor(102, 194, 165),
        Tool::Rsync => RGBColor(217, 95, 2),
        Tool::RsyncDaemon => RGBColor(166, 86, 40),
        Tool::Cp => RGBColor(150, 150, 150),
    }
}

/// Writes the SVG chart: one panel per scenario, a bar per tool (median wall time) with a
/// min–max whisker, the median and the tool's name written above it.
///
/// # Errors
/// When the file cannot be written.
pub fn chart(r: &Results, path: &Path) -> Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let scenarios: Vec<Scenario> = r
        .scenarios
        .iter()
        .copied()
        .filter(|&sc| r.summaries.iter().any(|s| s.scenario == sc))
        .collect();
    let n = scenarios.len().max(1);
    let size = (300 * n as u32 + 20, 430);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "Time to a durable copy, s: median, whiskers min–max (lower is better). {}, scale {}, {} CPUs, destination {}",
        r.net.slug(), r.scale, r.host.cpus, r.dest_fs
    );
    let root = root.titled(&title, ("sans-serif", 16)).map_err(|e| err(&e))?;
    let above = |size| {
        TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom))
    };
    for (panel, &sc) in root.split_evenly((1, n)).iter().zip(&scenarios) {
        let bars: Vec<&Summary> = r.summaries.iter().filter(|s| s.scenario == sc).collect();
        let top = bars.iter().map(|b| b.durable.max).fold(0.0, f64::max).max(1e-3) * 1.3;
        // Plain numeric x: bar i spans i+0.15..i+0.85; its name is written above it instead of
        // on an x axis (plotters' category axes have no labels for a single bar).
        let mut c = ChartBuilder::on(panel)
            .caption(sc.slug(), ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(6)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..bars.len() as f64, 0f64..top)
            .map_err(|e| err(&e))?;
        c.configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(|e| err(&e))?;
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, b.durable.median)],
                tool_color(b.tool).filled(),
            )
        }))
        .map_err(|e| err(&e))?;
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64 + 0.5;
            PathElement::new(vec![(x, b.durable.min), (x, b.durable.max)], BLACK.stroke_width(2))
        }))
        .map_err(|e| err(&e))?;
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("{:.2}", b.durable.median),
                (i as f64 + 0.5, b.durable.max + top * 0.01),
                above(12),
            )
        }))
        .map_err(|e| err(&e))?;
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(b.tool.short(), (i as f64 + 0.5, b.durable.max + top * 0.08), above(13))
        }))
        .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(12_400), "12.4 kB");
        assert_eq!(human_bytes(5_012_345), "5.01 MB");
        assert_eq!(human_bytes(1_073_741_824), "1.07 GB");
    }

    /// A comparison with the given (tool, scenario, wall s, flush s, veth bytes both ways).
    fn results(runs: &[(Tool, Scenario, f64, f64, u64)]) -> Results {
        use crate::compare::{summarise, Host, NetMode, Run, VethBytes};
        use crate::measure::Usage;
        let runs: Vec<Run> = runs
            .iter()
            .map(|&(tool, scenario, wall, flush, veth)| Run {
                scenario,
                tool,
                rep: 0,
                position: 0,
                wall_secs: wall,
                durable_secs: wall + flush,
                source_bytes: 1 << 30,
                throughput_mb_s: 0.0,
                flush_secs: flush,
                transfer: crate::tools::Transfer::default(),
                client: Usage { max_rss_bytes: 20 << 20, ..Usage::default() },
                server: Some(Usage { max_rss_bytes: 30 << 20, ..Usage::default() }),
                veth: Some(VethBytes { sent: veth / 2, received: veth / 2, dst_total: veth }),
                verified: true,
                loadavg_before: String::new(),
            })
            .collect();
        let scenarios = vec![Scenario::Incremental, Scenario::NochangeMany];
        let tools: Vec<Tool> = Tool::ALL.to_vec();
        Results {
            ferry_bench_version: String::new(),
            command: String::new(),
            started_unix: 0,
            duration_secs: 0.0,
            host: Host {
                cpus: 2,
                cpu_model: String::new(),
                mem_total_bytes: 0,
                kernel: String::new(),
                loadavg_start: String::new(),
                loadavg_end: String::new(),
            },
            scale: 1.0,
            reps: 1,
            seed: 0,
            summaries: summarise(&scenarios, &tools, &runs),
            scenarios,
            dest_root: PathBuf::new(),
            dest_fs: "ext4".into(),
            source_fs: "ext4".into(),
            net: NetMode::Veth,
            mtu: Some(1500),
            net_note: None,
            tools: Vec::new(),
            rusage_floor: Usage::default(),
            datasets: Vec::new(),
            runs,
            goals: Vec::new(),
            all_verified: true,
        }
    }

    #[test]
    fn goals_are_judged_on_the_time_to_a_durable_copy_and_the_veth_bytes() {
        use Scenario::{Incremental, NochangeMany};
        let r = results(&[
            // Ferry is faster by wall time alone (0.9 s vs 2 s) but not once rsync's flush is
            // counted: 1.0 s vs 2.1 s is <= 0.5x, just.
            (Tool::FerryPush, Incremental, 0.9, 0.1, 400),
            (Tool::RsyncDaemon, Incremental, 2.0, 0.1, 1000),
            (Tool::VolsyncStyle, Incremental, 3.0, 0.1, 900),
            (Tool::PvMigrateStyle, Incremental, 2.5, 0.1, 900),
            (Tool::FerryEvery, Incremental, 0.5, 0.1, 300),
            (Tool::FerryPush, NochangeMany, 1.0, 0.0, 10),
            (Tool::RsyncDaemon, NochangeMany, 1.0, 0.5, 10),
        ]);
        let g = goals(&r);
        let find = |needle: &str| {
            g.iter().find(|x| x.goal.contains(needle)).unwrap_or_else(|| panic!("{needle}: {g:?}"))
        };
        let time = find("incremental mixed: Ferry's time");
        assert_eq!(time.status, GoalStatus::Met, "{time:?}");
        assert!(time.measured.contains("0.48x") && time.measured.contains("ferry --every round"));
        let wire = find("bytes on the wire");
        assert_eq!(wire.status, GoalStatus::Met, "400 of 1000 bytes: {wire:?}");
        assert!(wire.measured.contains("veth counters"), "{wire:?}");
        // 1.0 s against 1.5 s to a durable copy: 0.67x, not 0.25x.
        assert_eq!(find("no-change round on many").status, GoalStatus::NotMet);
        // The faster mover (pv-migrate-style, 2.6 s): 1.0 / 2.6 <= 0.5.
        let movers = find("incremental: Ferry's time <= 0.5x the faster");
        assert_eq!(movers.status, GoalStatus::Met, "{movers:?}");
        assert!(movers.measured.contains("pv-migrate-style"), "{movers:?}");
        // No mover ran in the no-change scenario.
        assert_eq!(find("nochange-many: Ferry's time <= 0.5x").status, GoalStatus::NotMeasured);
        assert_eq!(find("initial many").status, GoalStatus::NotMeasured);
        assert_eq!(find("peak RSS").status, GoalStatus::Met);
    }

    #[test]
    fn tables_align() {
        let t = text_table(&["a", "b", "c"], &[vec!["x".into(), "yy".into(), "1".into()]]);
        assert_eq!(t, "a  b   c\nx  yy  1\n");
        let m = md_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(m, "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }
}
