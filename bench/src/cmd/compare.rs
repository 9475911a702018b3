//! `compare` and `report`: running the comparison, and writing its table, JSON, markdown report
//! and chart (again, for `report`, from a saved JSON file).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use ferry_bench::{compare, report};

use crate::{CompareArgs, ReportArgs};

pub(crate) fn compare_cmd(a: CompareArgs) -> Result<()> {
    let exe = std::env::current_exe().context("locating the ferry-bench executable")?;
    let ferry = a.ferry.clone().unwrap_or_else(|| exe.with_file_name("ferry"));
    let command_line = std::iter::once("ferry-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let opts = compare::Options {
        scale: a.scale,
        reps: a.reps,
        dest_tmpfs: a.dest_tmpfs,
        scenarios: a.scenarios,
        tools: a.tools,
        net: a.net,
        ferry,
        ferry_baseline: a.ferry_baseline,
        wrapper: exe,
        work: a.work,
        keep: a.keep,
        seed: a.seed,
        command_line,
    };
    let results = compare::run(&opts)?;
    println!();
    print!("{}", report::text(&results));
    if let Some(p) = &a.json {
        let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), &results)?;
        println!("JSON written to {}", p.display());
    }
    write_report(&results, a.report.as_deref(), a.chart.as_deref())
}

pub(crate) fn report_cmd(a: &ReportArgs) -> Result<()> {
    let bytes = std::fs::read(&a.json).with_context(|| format!("reading {}", a.json.display()))?;
    let mut results: compare::Results = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not the JSON of ferry-bench compare", a.json.display()))?;
    // Summaries again from the runs: a comparison saved before the time to a durable copy
    // existed has none in its summaries, and its runs give it (wall + flush).
    let tools: Vec<_> = results.tools.iter().map(|t| t.tool).collect();
    results.summaries = compare::summarise(&results.scenarios, &tools, &results.runs);
    results.goals = report::goals(&results);
    print!("{}", report::text(&results));
    write_report(&results, a.report.as_deref(), a.chart.as_deref())
}

fn write_report(results: &compare::Results, md: Option<&Path>, chart: Option<&Path>) -> Result<()> {
    if let Some(p) = md {
        let chart = chart.map_or_else(|| p.with_extension("svg"), Path::to_path_buf);
        report::chart(results, &chart)?;
        std::fs::write(p, report::markdown(results, p, Some(&chart)))
            .with_context(|| format!("writing {}", p.display()))?;
        println!("report written to {} (chart: {})", p.display(), chart.display());
    } else if let Some(chart) = chart {
        report::chart(results, chart)?;
        println!("chart written to {}", chart.display());
    }
    Ok(())
}
