//! What a person sees: the progress display, itemized changes and the round summary.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use ferry_core::session::{Action, Itemized};

use crate::round::driver::Progress as DriverProgress;
use crate::round::{self, CommitReport, Report, SyncError, SyncOptions};

/// A progress display: a spinner line on a terminal, periodic log lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// How often the display wants progress.
    pub every: Duration,
}

impl Progress {
    /// A display; `enabled` false never draws a bar.
    pub fn new(enabled: bool) -> Progress {
        let tty = std::io::stderr().is_terminal() && enabled;
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let every = if tty { Duration::from_millis(150) } else { Duration::from_secs(5) };
        Progress { bar, every }
    }

    /// A progress callback that updates the display.
    pub fn callback(&self) -> Box<dyn FnMut(&DriverProgress) + Send> {
        let bar = self.bar.clone();
        Box::new(move |p: &DriverProgress| {
            let msg = format!(
                "{} entries listed{}, {} files written, {} rebuilt",
                p.entries,
                if p.scan_done { "" } else { " (scanning)" },
                p.files_done,
                human_bytes(p.bytes_done)
            );
            match &bar {
                Some(b) => b.set_message(msg),
                None => tracing::info!("progress: {msg}"),
            }
        })
    }

    /// Prints each itemized line (above the progress line on a terminal) when `itemize`,
    /// after `prefix` (`MODULE: ` when modules of a `--list` run side by side).
    pub fn item_printer(
        &self,
        itemize: bool,
        prefix: String,
    ) -> impl FnMut(&Itemized) + Send + 'static {
        let bar = self.bar.clone();
        move |it: &Itemized| {
            if itemize {
                let line = format!("{prefix}{} {:<8} {}", action_code(it.action), it.kind, it.path);
                match &bar {
                    Some(b) => b.println(line),
                    None => println!("{line}"),
                }
            }
        }
    }

    /// Clears the display.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `ferry sync` with a progress display and, when `itemize`, each change printed.
///
/// # Errors
/// As [`round::run`].
pub fn sync_with_progress(
    src: &Path,
    dst: &Path,
    opts: &SyncOptions,
    itemize: bool,
    progress: bool,
) -> Result<Report, SyncError> {
    let progress = Progress::new(progress);
    let mut on_item = progress.item_printer(itemize, String::new());
    let mut on_progress = progress.callback();
    let r = round::run_with(src, dst, opts, &mut on_item, &mut *on_progress, progress.every);
    progress.finish();
    r
}

/// The itemized column for an action.
fn action_code(a: Action) -> &'static str {
    match a {
        Action::New => "+new    ",
        Action::Changed => ">changed",
        Action::Metadata => ".meta   ",
        Action::Delete => "-delete ",
        Action::Unchanged => "=same   ",
        Action::Refused => "!refused",
    }
}

/// Prints a round's summary on stdout.
pub fn print_summary(r: &Report, dry_run: bool) {
    let s = &r.stats;
    let p = &r.phases;
    let partial =
        format!("round PARTIAL: {} error(s) reading the source, nothing deleted", s.source_errors);
    let head = match (dry_run, r.partial) {
        (true, _) => "dry run (nothing written)",
        (false, true) => partial.as_str(),
        (false, false) => "round complete",
    };
    match &r.transport {
        Some(t) if r.streams > 1 => {
            println!("{head} in {:.2}s over {t} ({} streams)", r.elapsed_secs, r.streams)
        }
        Some(t) => println!("{head} in {:.2}s over {t}", r.elapsed_secs),
        None => println!("{head} in {:.2}s", r.elapsed_secs),
    }
    // The peer's words: shown printable, never sliced at a byte that could split a character.
    use ferry_transport::printable;
    if let Some(c) = &r.compression {
        println!("  compression {}", c.describe());
    }
    match &r.commit {
        Some(CommitReport::Recorded { round, snapshot, root_hash }) => println!(
            "  recorded by the destination: round {round}, snapshot {}, root {}",
            printable(snapshot),
            printable(&root_hash.chars().take(16).collect::<String>())
        ),
        Some(CommitReport::Unrecorded) if !dry_run => {
            println!("  not recorded: the destination keeps no state directory (no snapshot)")
        }
        Some(CommitReport::Failed { reason }) => {
            println!("  NOT recorded by the destination: {}", printable(reason))
        }
        _ => {}
    }
    println!(
        "  entries scanned {:>9}   files {:>9}   ({} in source)",
        s.entries_scanned,
        s.files_scanned,
        human_bytes(s.source_bytes)
    );
    println!(
        "  new {:>9}   changed {:>9}   metadata-only {:>9}   unchanged {:>9}   deleted {:>9}",
        s.files_new, s.files_changed, s.files_metadata, s.files_unchanged, s.files_deleted
    );
    println!(
        "  dirs created {:>6}   links created {:>6}   failed {:>6}   resent after verify {:>4}",
        s.dirs_created, s.links_created, s.files_failed, s.files_resent
    );
    println!(
        "  literal {:>10}   matched {:>10}   after compression {:>10}   signatures {:>10}",
        human_bytes(s.literal_bytes),
        human_bytes(s.matched_bytes),
        human_bytes(s.payload_bytes),
        human_bytes(s.signature_bytes)
    );
    println!(
        "  wire {:>10} sent, {:>10} received",
        human_bytes(r.wire_bytes_sent),
        human_bytes(r.wire_bytes_received)
    );
    println!(
        "  thread-seconds: scan {:.2}  signature {:.2}  delta {:.2}  read {:.2}  apply {:.2}",
        p.scan, p.signature, p.delta, p.read, p.apply
    );
    if s.resumed_bytes > 0 {
        println!(
            "  resumed {:>10} of files cut mid-way by an interrupted round (not sent again)",
            human_bytes(s.resumed_bytes)
        );
    }
    if s.ownership_skipped > 0 {
        println!(
            "  note: ownership of {} entries not set (not running as root)",
            s.ownership_skipped
        );
    }
    if s.specials_refused > 0 {
        println!(
            "  refused: {} fifos/device nodes from the source (this side has no --specials)",
            s.specials_refused
        );
    }
    if s.privileged_dropped > 0 {
        println!(
            "  dropped: setuid/setgid or capabilities of {} entries (no --keep-privileged)",
            s.privileged_dropped
        );
    }
    if s.files_failed > 0 {
        println!(
            "  note: {} files changed while being read; they will be retried next round",
            s.files_failed
        );
    }
}

/// `n` bytes in binary units.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}
