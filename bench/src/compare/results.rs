//! What a comparison produced: each run, the summaries per scenario and tool, the tools, the
//! datasets, the machine and the goals; serialised as the JSON output, read back by `report`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{NetMode, Scenario, VethBytes};
use crate::gen::{MutateSummary, TreeStats};
use crate::measure::Usage;
use crate::tools::{Tool, Transfer};

/// A median and its spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }
}

/// One run of one tool in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The scenario.
    pub scenario: Scenario,
    /// The tool.
    pub tool: Tool,
    /// Repetition, from 0.
    pub rep: usize,
    /// Position of the tool in this repetition's order, from 0.
    pub position: usize,
    /// Wall time of the tool (the client, for client/server tools; the agent's own record of
    /// the round, for a round inside a long-running agent), seconds.
    pub wall_secs: f64,
    /// Time to a durable copy: `wall_secs` + `flush_secs` (the headline figure). Comparisons
    /// saved before it existed read as 0.
    #[serde(default)]
    pub durable_secs: f64,
    /// Bytes of regular files in the source tree.
    pub source_bytes: u64,
    /// Source bytes per second to a durable copy, MB/s (decimal).
    pub throughput_mb_s: f64,
    /// `syncfs()` of the destination right after the tool, seconds.
    pub flush_secs: f64,
    /// What the tool says it moved.
    pub transfer: Transfer,
    /// The source side's usage: the client (with its helpers, such as a stunnel client), or
    /// the whole of a local tool.
    pub client: Usage,
    /// The destination side's usage: the server, for client/server tools.
    pub server: Option<Usage>,
    /// Bytes that crossed the veth pair (network mode only).
    #[serde(default)]
    pub veth: Option<VethBytes>,
    /// The destination matched the source afterwards.
    pub verified: bool,
    /// `/proc/loadavg` just before the run.
    pub loadavg_before: String,
}

/// The runs of one tool in one scenario, summarised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The scenario.
    pub scenario: Scenario,
    /// The tool.
    pub tool: Tool,
    /// Number of runs.
    pub runs: usize,
    /// Wall time, seconds.
    pub wall: Spread,
    /// Time to a durable copy (wall + flush), seconds: the headline.
    #[serde(default)]
    pub durable: Spread,
    /// Median throughput, MB/s.
    pub throughput_mb_s: f64,
    /// Median flush time, seconds.
    pub flush_secs: f64,
    /// Median transfer figures.
    pub transfer: Transfer,
    /// Median CPU time of the client (local tool), seconds.
    pub client_cpu_secs: f64,
    /// Median CPU time of the server, seconds.
    pub server_cpu_secs: Option<f64>,
    /// Largest peak RSS of the client (local tool) over the runs, bytes.
    pub client_max_rss_bytes: u64,
    /// Largest peak RSS of the server over the runs, bytes.
    pub server_max_rss_bytes: Option<u64>,
    /// Median bytes over the veth pair, source to destination (network mode).
    #[serde(default)]
    pub veth_sent: Option<u64>,
    /// Median bytes over the veth pair, destination to source (network mode).
    #[serde(default)]
    pub veth_received: Option<u64>,
    /// All runs verified.
    pub verified: bool,
}

impl Summary {
    /// Median veth bytes both ways.
    pub fn veth_total(&self) -> Option<u64> {
        Some(self.veth_sent? + self.veth_received?)
    }
}

/// A tool as the report lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolInfo {
    /// The tool.
    pub tool: Tool,
    /// Its name.
    pub label: String,
    /// Whether it ran (every tool does now; comparisons saved before `ferry push` existed list
    /// it as not available).
    pub available: bool,
    /// `--version` first line.
    pub version: Option<String>,
    /// Its command line.
    pub command: String,
    /// Why it did not run.
    pub note: Option<String>,
}

/// A generated dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    /// `mixed`, `mutated` or `many`.
    pub name: String,
    /// Where it was.
    pub path: PathBuf,
    /// What it holds.
    pub stats: TreeStats,
    /// Generation time, seconds.
    pub gen_secs: f64,
    /// For `mutated`: what changed from `mixed`.
    pub mutate: Option<MutateSummary>,
}

/// The machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
    /// Memory, bytes.
    pub mem_total_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg` before the first dataset was generated.
    pub loadavg_start: String,
    /// `/proc/loadavg` at the end.
    pub loadavg_end: String,
}

/// How a goal of issue 5 stands in this run (a report, never a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoalStatus {
    /// Reached.
    Met,
    /// Not reached.
    NotMet,
    /// Not measured in this run (scenario or tool missing).
    NotMeasured,
}

/// A goal of issue 5 and where this run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goal {
    /// The goal.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// Met or not.
    pub status: GoalStatus,
}

/// Everything a comparison produced (the JSON output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// `ferry-bench` version.
    pub ferry_bench_version: String,
    /// The command line.
    pub command: String,
    /// Start, seconds since the epoch.
    pub started_unix: u64,
    /// Total duration, seconds.
    pub duration_secs: f64,
    /// The machine.
    pub host: Host,
    /// Scale.
    pub scale: f64,
    /// Repetitions.
    pub reps: usize,
    /// Seed.
    pub seed: u64,
    /// Scenarios run.
    pub scenarios: Vec<Scenario>,
    /// Where destinations were.
    pub dest_root: PathBuf,
    /// Filesystem of the destinations.
    pub dest_fs: String,
    /// Filesystem of the sources.
    pub source_fs: String,
    /// Where the client/server tools ran (comparisons saved before the network mode: loopback).
    #[serde(default = "loopback")]
    pub net: NetMode,
    /// The veth pair's MTU, in the network mode.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Why the network mode was asked for and not used.
    #[serde(default)]
    pub net_note: Option<String>,
    /// Tools asked for.
    pub tools: Vec<ToolInfo>,
    /// The wrapper running `true`: the floor of every peak-RSS figure.
    pub rusage_floor: Usage,
    /// The datasets.
    pub datasets: Vec<Dataset>,
    /// Every run.
    pub runs: Vec<Run>,
    /// Per scenario and tool.
    pub summaries: Vec<Summary>,
    /// Issue 5's goals.
    pub goals: Vec<Goal>,
    /// Every run verified (a failed check stops the comparison, so this is true when present).
    pub all_verified: bool,
}

impl Results {
    /// The summary of `tool` in `scenario`.
    pub fn summary(&self, scenario: Scenario, tool: Tool) -> Option<&Summary> {
        self.summaries.iter().find(|s| s.scenario == scenario && s.tool == tool)
    }
}

fn loopback() -> NetMode {
    NetMode::Loopback
}

fn median_u64(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let v: Vec<f64> = values.flatten().map(|x| x as f64).collect();
    (!v.is_empty()).then(|| Spread::of(&v).median.round() as u64)
}

/// Per scenario and tool, in scenario order then tool order.
pub fn summarise(scenarios: &[Scenario], tools: &[Tool], runs: &[Run]) -> Vec<Summary> {
    let mut out = Vec::new();
    for &scenario in scenarios {
        for &tool in tools {
            let rs: Vec<&Run> =
                runs.iter().filter(|r| r.scenario == scenario && r.tool == tool).collect();
            if rs.is_empty() {
                continue;
            }
            let med = |f: &dyn Fn(&Run) -> f64| {
                Spread::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>()).median
            };
            let tr =
                |f: fn(&Transfer) -> Option<u64>| median_u64(rs.iter().map(|r| f(&r.transfer)));
            let has_server = rs.iter().all(|r| r.server.is_some());
            out.push(Summary {
                scenario,
                tool,
                runs: rs.len(),
                wall: Spread::of(&rs.iter().map(|r| r.wall_secs).collect::<Vec<_>>()),
                durable: Spread::of(
                    &rs.iter()
                        .map(|r| {
                            if r.durable_secs > 0.0 {
                                r.durable_secs
                            } else {
                                r.wall_secs + r.flush_secs
                            }
                        })
                        .collect::<Vec<_>>(),
                ),
                throughput_mb_s: med(&|r| r.throughput_mb_s),
                flush_secs: med(&|r| r.flush_secs),
                transfer: Transfer {
                    wire_sent: tr(|t| t.wire_sent),
                    wire_received: tr(|t| t.wire_received),
                    literal: tr(|t| t.literal),
                    matched: tr(|t| t.matched),
                    payload: tr(|t| t.payload),
                    signature: tr(|t| t.signature),
                    files_transferred: tr(|t| t.files_transferred),
                },
                client_cpu_secs: med(&|r| r.client.cpu_secs()),
                server_cpu_secs: has_server
                    .then(|| med(&|r| r.server.map_or(0.0, |s| s.cpu_secs()))),
                client_max_rss_bytes: rs.iter().map(|r| r.client.max_rss_bytes).max().unwrap_or(0),
                server_max_rss_bytes: has_server.then(|| {
                    rs.iter().filter_map(|r| r.server.map(|s| s.max_rss_bytes)).max().unwrap_or(0)
                }),
                veth_sent: median_u64(rs.iter().map(|r| r.veth.map(|v| v.sent))),
                veth_received: median_u64(rs.iter().map(|r| r.veth.map(|v| v.received))),
                verified: rs.iter().all(|r| r.verified),
            });
        }
    }
    out
}
