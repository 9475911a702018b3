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

const HEADER: [&str; 10] = [
    "scenario",
    "tool",
    "wall s: median (min–max)",
    "MB/s",
    "wire sent / recv",
    "literal",
    "matched",
    "CPU s cli / srv",
    "peak RSS MiB cli / srv",
    "flush s",
];

fn row(s: &Summary) -> Vec<String> {
    let t = &s.transfer;
    let wire = match (t.wire_sent, t.wire_received) {
        (Some(a), Some(b)) => format!("{} / {}", human_bytes(a), human_bytes(b)),
        _ => "–".to_string(),
    };
    let cpu = match s.server_cpu_secs {
        Some(srv) => format!("{:.2} / {:.2}", s.client_cpu_secs, srv),
        None => format!("{:.2} / –", s.client_cpu_secs),
    };
    let rss = match s.server_max_rss_bytes {
        Some(srv) => format!("{} / {}", mib(s.client_max_rss_bytes), mib(srv)),
        None => format!("{} / –", mib(s.client_max_rss_bytes)),
    };
    vec![
        s.scenario.slug().to_string(),
        s.tool.label().to_string(),
        format!("{:.3} ({:.3}–{:.3})", s.wall.median, s.wall.min, s.wall.max),
        format!("{:.1}", s.throughput_mb_s),
        wire,
        opt_bytes(t.literal),
        opt_bytes(t.matched),
        cpu,
        rss,
        format!("{:.2}", s.flush_secs),
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

/// Ferry's figure in `scenario`: `ferry push` over QUIC, two agents on loopback (what issue 5's
/// goals are about), when it ran; else `ferry sync` (both sides in one process).
pub fn ferry_figure(r: &Results, scenario: Scenario) -> Option<&Summary> {
    r.summary(scenario, Tool::FerryPushQuic).or_else(|| r.summary(scenario, Tool::FerrySync))
}

/// "incremental: ferry push QUIC / rsync 0.42x, ..." lines: the median wall time of Ferry's
/// figure ([`ferry_figure`]) over each non-Ferry tool's.
fn ratios(r: &Results, scenario: Scenario) -> Option<String> {
    let ferry = ferry_figure(r, scenario)?;
    let parts: Vec<String> = r
        .summaries
        .iter()
        .filter(|s| s.scenario == scenario && !s.tool.is_ferry() && s.wall.median > 0.0)
        .map(|s| format!("/ {} {:.2}x", s.tool.label(), ferry.wall.median / s.wall.median))
        .collect();
    (!parts.is_empty())
        .then(|| format!("{}: {} {}", scenario.slug(), ferry.tool.label(), parts.join(", ")))
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
    let rows: Vec<Vec<String>> = r.summaries.iter().map(row).collect();
    let mut out = format!(
        "ferry-bench compare: scale {}, {} repetition(s), destination on {} ({}), {} CPUs, load \
         average before {} / after {}\n\n",
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
        if let Some(line) = ratios(r, sc) {
            let _ = writeln!(out, "{line}");
        }
    }
    for t in r.tools.iter().filter(|t| !t.available) {
        let _ = writeln!(out, "{}: not available ({})", t.label, t.note.as_deref().unwrap_or(""));
    }
    let _ = writeln!(
        out,
        "peak RSS floor (the measuring wrapper running `true`): {} MiB; every run verified with \
         rsync -aHAXnic --delete: {}",
        mib(r.rusage_floor.max_rss_bytes),
        if r.all_verified { "yes" } else { "NO" }
    );
    out.push_str("\ngoals of issue 5 (reported, not asserted):\n");
    for g in &r.goals {
        let _ = writeln!(out, "  [{}] {}: {}", status_word(g.status), g.goal, g.measured);
    }
    out
}

/// Issue 5's goals, against this run. Ferry's figure is `ferry push` over QUIC when it ran
/// ([`ferry_figure`]), with `ferry sync` reported alongside; rsync's is the daemon's on
/// loopback, else local rsync's.
pub fn goals(r: &Results) -> Vec<Goal> {
    let s = |sc, t| r.summary(sc, t);
    let rsync_ref = |sc| s(sc, Tool::RsyncDaemon).or_else(|| s(sc, Tool::Rsync));
    // What follows Ferry's figure: `ferry sync`'s, or why that is Ferry's figure.
    let sync_extra =
        |f: &Summary, reference: Option<&Summary>, what: &dyn Fn(&Summary) -> String| {
            if f.tool == Tool::FerrySync {
                return " (ferry sync, local: ferry push QUIC was not in this run)".to_string();
            }
            let Some(sync) = s(f.scenario, Tool::FerrySync) else { return String::new() };
            let ratio = reference
                .filter(|rs| rs.wall.median > 0.0)
                .map(|rs| format!(", {:.2}x", sync.wall.median / rs.wall.median))
                .unwrap_or_default();
            format!("; ferry sync (local, one process) {}{ratio}", what(sync))
        };
    let secs = |x: &Summary| format!("{:.3} s", x.wall.median);
    let mut out = Vec::new();
    let not_measured = |goal: &str| Goal {
        goal: goal.to_string(),
        measured: "scenario or tools not in this run".to_string(),
        status: GoalStatus::NotMeasured,
    };
    // Ferry's time at most `limit` times rsync's.
    let time_goal =
        |goal: &str, sc: Scenario, limit: f64| match (ferry_figure(r, sc), rsync_ref(sc)) {
            (Some(f), Some(rs)) => {
                let ratio = f.wall.median / rs.wall.median;
                Goal {
                    goal: goal.to_string(),
                    measured: format!(
                        "{} {} vs {} {}: {ratio:.2}x{}",
                        f.tool.label(),
                        secs(f),
                        rs.tool.label(),
                        secs(rs),
                        sync_extra(f, Some(rs), &secs)
                    ),
                    status: if ratio <= limit { GoalStatus::Met } else { GoalStatus::NotMet },
                }
            }
            _ => not_measured(goal),
        };

    out.push(time_goal(
        "incremental round mixed -> mutate: Ferry's time <= 1/3 of rsync's",
        Scenario::Incremental,
        1.0 / 3.0,
    ));

    let goal = "incremental round: <= 6 MB on the wire (times the scale)";
    out.push(
        match ferry_figure(r, Scenario::Incremental)
            .and_then(|f| Some((f, f.transfer.wire_total()?)))
        {
            Some((f, wire)) => {
                let limit = 6e6 * r.scale;
                let changed = r
                    .datasets
                    .iter()
                    .find_map(|d| d.mutate.map(|m| m.changed_bytes()))
                    .map_or_else(String::new, |c| format!("; changed bytes {}", human_bytes(c)));
                let rsync = rsync_ref(Scenario::Incremental)
                    .and_then(|rs| {
                        Some(format!(
                            "; {} {}",
                            rs.tool.label(),
                            human_bytes(rs.transfer.wire_total()?)
                        ))
                    })
                    .unwrap_or_default();
                let sync = sync_extra(f, None, &|x| opt_bytes(x.transfer.wire_total()));
                Goal {
                    goal: goal.to_string(),
                    measured: format!(
                        "{} {} sent + received (limit at scale {}: {}){rsync}{sync}{changed}",
                        f.tool.label(),
                        human_bytes(wire),
                        r.scale,
                        human_bytes(limit as u64)
                    ),
                    status: if (wire as f64) <= limit {
                        GoalStatus::Met
                    } else {
                        GoalStatus::NotMet
                    },
                }
            }
            None => not_measured(goal),
        },
    );

    out.push(time_goal(
        "no-change round on many: Ferry's time <= 1/4 of rsync's",
        Scenario::NochangeMany,
        0.25,
    ));

    let goal = "initial sync of mixed (destination on tmpfs): faster than rsync, approaching cp -a";
    let fastest_rsync = [Tool::Rsync, Tool::RsyncDaemon]
        .into_iter()
        .filter_map(|t| s(Scenario::InitialMixed, t))
        .min_by(|a, b| a.wall.median.total_cmp(&b.wall.median));
    out.push(match (ferry_figure(r, Scenario::InitialMixed), fastest_rsync) {
        (Some(f), Some(rs)) => {
            let cp = s(Scenario::InitialMixed, Tool::Cp)
                .map(|c| {
                    format!(
                        "; cp -a {:.3} s ({:.2}x of it)",
                        c.wall.median,
                        f.wall.median / c.wall.median
                    )
                })
                .unwrap_or_default();
            let where_ = if r.dest_fs == "tmpfs" {
                String::new()
            } else {
                format!(" (destination on {}, not tmpfs: see --dest-tmpfs)", r.dest_fs)
            };
            Goal {
                goal: goal.to_string(),
                measured: format!(
                    "{} {} vs fastest rsync ({}) {}: {:.2}x{cp}{}{where_}",
                    f.tool.label(),
                    secs(f),
                    rs.tool.label(),
                    secs(rs),
                    f.wall.median / rs.wall.median,
                    sync_extra(f, Some(rs), &secs)
                ),
                status: if f.wall.median < rs.wall.median {
                    GoalStatus::Met
                } else {
                    GoalStatus::NotMet
                },
            }
        }
        _ => not_measured(goal),
    });

    let goal = "peak RSS per agent on many <= 64 MiB";
    let many = [Scenario::InitialMany, Scenario::NochangeMany];
    // The largest client and server peaks of `tool` over the `many` scenarios.
    let peaks = |tool: Tool| -> Option<(u64, Option<u64>)> {
        let v: Vec<&Summary> = many.iter().filter_map(|&sc| s(sc, tool)).collect();
        let cli = v.iter().map(|x| x.client_max_rss_bytes).max()?;
        Some((cli, v.iter().filter_map(|x| x.server_max_rss_bytes).max()))
    };
    let describe = |tool: Tool| {
        peaks(tool).map(|(cli, srv)| match srv {
            Some(srv) => {
                format!("{} {} / {} MiB client / server", tool.label(), mib(cli), mib(srv))
            }
            None if tool == Tool::FerrySync => {
                format!("{} {} MiB, both sides in one process", tool.label(), mib(cli))
            }
            None => format!("{} {} MiB", tool.label(), mib(cli)),
        })
    };
    let ferry_tool =
        [Tool::FerryPushQuic, Tool::FerrySync].into_iter().find(|&t| peaks(t).is_some());
    out.push(match ferry_tool.and_then(|t| Some((t, peaks(t)?))) {
        Some((tool, (cli, srv))) => {
            let rss = cli.max(srv.unwrap_or(0));
            let others: Vec<String> = [Tool::FerrySync, Tool::Rsync, Tool::RsyncDaemon]
                .into_iter()
                .filter(|&t| t != tool)
                .filter_map(describe)
                .collect();
            Goal {
                goal: goal.to_string(),
                measured: format!(
                    "{}; {} (flatness over file counts: compare runs at several scales)",
                    describe(tool).unwrap_or_default(),
                    others.join("; ")
                ),
                status: if rss <= 64 << 20 { GoalStatus::Met } else { GoalStatus::NotMet },
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
         repetition); every run checked with `rsync -aHAXnic --delete SRC/ DST/`: {}.\n",
        r.reps,
        if r.all_verified { "all identical" } else { "DIFFERENCES FOUND" }
    );
    if let Some(chart) = chart {
        let dir = report.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let _ = writeln!(
            m,
            "![Wall time per scenario, Ferry vs rsync (median, whiskers min–max)]({})\n",
            relative(dir, chart).display()
        );
    }
    let _ = writeln!(m, "## Results\n");
    let _ = writeln!(m, "Median of {} run(s); min–max in parentheses.\n", r.reps);
    let rows: Vec<Vec<String>> = r.summaries.iter().map(row).collect();
    m.push_str(&md_table(&HEADER, &rows));
    m.push('\n');
    for &sc in &r.scenarios {
        if let Some(line) = ratios(r, sc) {
            let _ = writeln!(m, "- {line} (median wall time)");
        }
    }
    m.push('\n');

    let _ = writeln!(m, "## Against the goals of issue 5\n");
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
        "- Two machines: every figure here is on one machine, client and server sharing its \
         CPUs over loopback; `ferry bench --peer` is not built yet.\n\
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
        "- **Ferry's figure** in the ratios and goals is `ferry push` over QUIC to `ferry serve` \
         on loopback (two agents, as deployed), when it ran; `ferry sync` (both sides in one \
         process) is reported alongside.\n\
         - **wall**: spawn to exit of the tool (of the client, for the client/server tools: rsync \
         against its daemon, `ferry push` against `ferry serve`; the server is started before, \
         fresh for every run, and stopped after).\n\
         - **MB/s**: bytes of regular files in the source tree / wall time (for incremental and \
         no-change rounds: how fast a tree of that size is brought up to date).\n\
         - **wire**: `ferry sync`: framed protocol bytes between its two sides (one process, an \
         in-memory pipe); `ferry push`: the same framed bytes as written to and read from the \
         connection (TLS records, QUIC packets and acknowledgements not counted); rsync: \"Total \
         bytes sent/received\" of `--stats` (a pipe between local processes, or TCP to the \
         daemon). Sent = source side to destination side.\n\
         - **literal / matched**: file data sent as new bytes / rebuilt from the destination's \
         old copy (Ferry counts literals before its zstd compression: level 1 for `ferry sync`, \
         3 for `ferry push`; rsync runs without `-z`).\n\
         - **CPU** (user + sys) and **peak RSS**: `getrusage(RUSAGE_CHILDREN)` in a small \
         wrapper process whose only child is the tool, so the figures are the tool's whole \
         process tree: CPU summed over it, peak RSS the largest single process of it (local \
         rsync is three processes). `ferry sync` holds both sides in one process. For `ferry \
         push`, server = the `ferry serve` process from its start (credentials, sockets) to the \
         end of the round (it is stopped once it has logged it). For the daemon, server = the \
         daemon plus the connection processes it forked and reaped. The \
         wrapper itself accounts for a floor of {} MiB in every peak-RSS figure. Resident pages \
         of mapped files count too: Ferry's destination side maps the old copy of a changed \
         file to rebuild it, so the incremental round's peak includes the big file's page-cache \
         pages (shared with the cache, not allocated).\n\
         - **flush**: `syncfs()` of the destination right after the tool. Ferry's destination \
         side (`ferry sync`, `ferry serve`) fsyncs every file and directory it writes before the \
         round ends; rsync leaves its writes to the kernel, so rsync's wall + flush is its time \
         to a durable copy.\n",
        mib(r.rusage_floor.max_rss_bytes)
    );

    let _ = writeln!(m, "## Reproduce\n");
    let _ = writeln!(
        m,
        "```sh\ncargo build --release -p ferry-agent -p ferry-bench\n\
         target/release/ferry-bench compare --scale {} --reps {}{} --json compare.json \\\n    \
         --report BENCHMARKS.md --chart bench/BENCHMARKS.svg\n\
         # or, from a saved run: target/release/ferry-bench report --json compare.json \
         --report BENCHMARKS.md --chart bench/BENCHMARKS.svg\n```\n\n\
         `--scale 0.05 --reps 3` runs every scenario in about a minute; \
         `ferry-bench gen --kind mixed|mutate|many --out DIR` makes the datasets alone.",
        r.scale,
        r.reps,
        if r.dest_fs == "tmpfs" { " --dest-tmpfs" } else { "" }
    );
    m
}

fn tool_color(t: Tool) -> RGBColor {
    match t {
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
        "Wall time, s: median, whiskers min–max (lower is better). Scale {}, {} CPUs, destination {}",
        r.scale, r.host.cpus, r.dest_fs
    );
    let root = root.titled(&title, ("sans-serif", 16)).map_err(|e| err(&e))?;
    let above = |size| {
        TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom))
    };
    for (panel, &sc) in root.split_evenly((1, n)).iter().zip(&scenarios) {
        let bars: Vec<&Summary> = r.summaries.iter().filter(|s| s.scenario == sc).collect();
        let top = bars.iter().map(|b| b.wall.max).fold(0.0, f64::max).max(1e-3) * 1.3;
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
                [(x + 0.15, 0.0), (x + 0.85, b.wall.median)],
                tool_color(b.tool).filled(),
            )
        }))
        .map_err(|e| err(&e))?;
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64 + 0.5;
            PathElement::new(vec![(x, b.wall.min), (x, b.wall.max)], BLACK.stroke_width(2))
        }))
        .map_err(|e| err(&e))?;
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("{:.2}", b.wall.median),
                (i as f64 + 0.5, b.wall.max + top * 0.01),
                above(12),
            )
        }))
        .map_err(|e| err(&e))?;
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(b.tool.short(), (i as f64 + 0.5, b.wall.max + top * 0.08), above(13))
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

    #[test]
    fn tables_align() {
        let t = text_table(&["a", "b", "c"], &[vec!["x".into(), "yy".into(), "1".into()]]);
        assert_eq!(t, "a  b   c\nx  yy  1\n");
        let m = md_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(m, "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }
}
