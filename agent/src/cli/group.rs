//! `ferry push --list FILE --group NAME`: the list's modules as one consistency group. One
//! `--pre-round`, every member's source image taken together, the member rounds (`--jobs` at
//! a time), and only when every member's round was recorded by the server, one request that
//! records the generation naming them all ([`crate::net::group`]). Anything less records no
//! generation, and the summary says why.

use std::path::PathBuf;
use std::process::ExitCode;

use super::config::NETWORK_COMPRESS_LEVEL;
use super::exit;
use super::flags::{NetFlags, RoundFlags};
use super::replicate::{run_modules, summary_line, worst, ManyResult, ModuleResult};
use crate::fs::image::{SourceImage, SourceSnapshot};
use crate::many::{module_url, ListEntry};
use crate::net::group::{record_group, GroupMember};
use crate::net::{Direction, RemoteOptions, Url};
use crate::round::CommitReport;
use crate::unattended::runner::{run_hook, Plan};

/// What became of a group: the `group` object of the `--json` document.
#[derive(Debug, serde::Serialize)]
pub(super) struct GroupResult {
    /// The group's name.
    pub name: String,
    /// Whether a generation was recorded.
    pub recorded: bool,
    /// Its id, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// Why no generation was recorded, when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `ferry push --list FILE --group NAME`. `plan` carries the hooks and retries (each member
/// round is retried as a single push would be; the hooks run once for the group); `images`
/// is each member's source image setting.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_group(
    server: &Url,
    list: &[ListEntry],
    group: &str,
    plan: &Plan,
    images: &[Option<(SourceSnapshot, PathBuf)>],
    jobs: usize,
    check: bool,
    net: &NetFlags,
    round: &RoundFlags,
) -> anyhow::Result<ExitCode> {
    if check {
        for e in list {
            println!("push {}: {} -> {}", e.name, e.dir.display(), module_url(server, &e.name));
        }
        println!(
            "{} module(s), {} at a time, as group {group:?}: one generation when every round is \
             recorded; nothing was run",
            list.len(),
            jobs.min(list.len())
        );
        return Ok(ExitCode::SUCCESS);
    }
    let opts = net.remote(round.options(NETWORK_COMPRESS_LEVEL));
    let round = RoundFlags { no_progress: true, ..round.clone() };
    let rt = super::runtime()?;
    super::exit_on_sigterm(&rt);
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    let env = [
        ("FERRY_GROUP", group.to_string()),
        ("FERRY_MODULES", names.join(" ")),
        ("FERRY_DIRECTION", "push".to_string()),
        ("FERRY_URL", server.to_string()),
        ("FERRY_ROUND", "1".to_string()),
        ("FERRY_ATTEMPT", "1".to_string()),
    ];
    let (results, outcome) =
        match plan.pre_round.as_deref().map(|c| run_hook("--pre-round", c, &env, None)) {
            Some(Err(e)) => {
                let why = format!("the --pre-round command failed ({e}); no round started");
                (not_started(list, server, &why), Err((exit::TRANSIENT, why)))
            }
            _ => {
                let r = members(&rt, server, list, group, plan, images, jobs, &opts, &round);
                if let Some(post) = &plan.post_round {
                    let result = if r.1.is_ok() { "ok" } else { "error" };
                    if let Err(e) = run_hook("--post-round", post, &env, Some(result)) {
                        tracing::warn!("the --post-round command failed ({e})");
                    }
                }
                r
            }
        };
    let mut code = results.iter().fold(0, |w, r| worst(w, r.exit_code));
    let result = match outcome {
        Ok(generation) => GroupResult {
            name: group.into(),
            recorded: true,
            generation: Some(generation),
            error: None,
        },
        Err((c, why)) => {
            code = worst(code, c);
            GroupResult { name: group.into(), recorded: false, generation: None, error: Some(why) }
        }
    };
    if round.json {
        let doc = ManyResult {
            direction: "push",
            exit_code: code,
            modules: &results,
            group: Some(&result),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &results {
            println!("{}", summary_line(r));
        }
        match (&result.generation, &result.error) {
            (Some(g), _) => {
                println!("group {group}: generation {g} recorded ({} modules)", list.len())
            }
            (None, Some(why)) => println!("group {group}: no generation recorded: {why}"),
            (None, None) => {}
        }
        let ok = results.iter().filter(|r| r.ok).count();
        println!(
            "{} module(s): {ok} ok, {} not; exit code {code}",
            results.len(),
            results.len() - ok
        );
    }
    Ok(ExitCode::from(code))
}

/// The source images, the member rounds and the group's record: the results, and the
/// generation's id or (an exit code and) why none was recorded.
#[allow(clippy::too_many_arguments)]
fn members(
    rt: &tokio::runtime::Runtime,
    server: &Url,
    list: &[ListEntry],
    group: &str,
    plan: &Plan,
    images: &[Option<(SourceSnapshot, PathBuf)>],
    jobs: usize,
    opts: &RemoteOptions,
    round: &RoundFlags,
) -> (Vec<ModuleResult>, Result<String, (u8, String)>) {
    let taken = match take_images(list, images) {
        Ok(t) => t,
        Err(why) => {
            let why = format!("taking the source images failed ({why}); no round started");
            return (not_started(list, server, &why), Err((exit::TRANSIENT, why)));
        }
    };
    let read_from: Vec<PathBuf> = list
        .iter()
        .zip(&taken)
        .map(|(e, t)| {
            t.as_ref()
                .and_then(|t| t.image.as_ref())
                .map_or_else(|| e.dir.clone(), |i| i.path.clone())
        })
        .collect();
    // The hooks and images are the group's, taken once above; each member keeps the retries.
    let member_plan =
        Plan { pre_round: None, post_round: None, source_image: None, ..plan.clone() };
    let plans = vec![member_plan; list.len()];
    let results =
        run_modules(rt, Direction::Push, server, list, &plans, Some(&read_from), jobs, opts, round);
    drop(taken);
    let outcome = generation(rt, server, group, &results, opts, round.dry_run);
    (results, outcome)
}

/// Asks the server to record the generation when every member's round was recorded.
fn generation(
    rt: &tokio::runtime::Runtime,
    server: &Url,
    group: &str,
    results: &[ModuleResult],
    opts: &RemoteOptions,
    dry_run: bool,
) -> Result<String, (u8, String)> {
    if dry_run {
        return Err((0, "a dry run records nothing".into()));
    }
    let mut members = Vec::with_capacity(results.len());
    for r in results {
        let not = |why: &str| format!("module {} {why}", r.module);
        match (&r.error, &r.report) {
            (Some(_), _) => {
                return Err((r.exit_code, not(&format!("failed (exit {})", r.exit_code))))
            }
            (None, Some(rep)) if rep.partial => return Err((r.exit_code, not("was partial"))),
            (None, Some(rep)) => match &rep.commit {
                Some(CommitReport::Recorded { snapshot, .. }) => members
                    .push(GroupMember { module: r.module.clone(), snapshot: snapshot.clone() }),
                _ => {
                    return Err((
                        exit::PEER,
                        not("was not recorded by the server (does it keep state, --state-dir?)"),
                    ))
                }
            },
            (None, None) => return Err((exit::PEER, not("has no report"))),
        }
    }
    match rt.block_on(record_group(server, opts, group, &members)) {
        Ok(g) => Ok(g),
        Err(e) => {
            let e = anyhow::Error::from(e);
            Err((exit::classify(&e), exit::explain(&e)))
        }
    }
}

/// A member's source image and the private directory that holds it.
struct Taken {
    image: Option<SourceImage>,
    holder: PathBuf,
}

impl Drop for Taken {
    fn drop(&mut self) {
        // The image first (its own drop removes it), then the emptied directory.
        drop(self.image.take());
        let _ = std::fs::remove_dir(&self.holder);
    }
}

/// Takes every member's source image, one after the other right after the `--pre-round`:
/// each in a directory of its own (members may share a parent directory). On a failure the
/// images already taken are removed.
fn take_images(
    list: &[ListEntry],
    images: &[Option<(SourceSnapshot, PathBuf)>],
) -> Result<Vec<Option<Taken>>, String> {
    let mut out = Vec::with_capacity(list.len());
    for (e, how) in list.iter().zip(images) {
        let Some((how, dir)) = how else {
            out.push(None);
            continue;
        };
        let holder = dir.join(format!(".ferry-group-{}-{}", std::process::id(), e.name));
        std::fs::create_dir_all(&holder)
            .map_err(|err| format!("module {}: {}: {err}", e.name, holder.display()))?;
        match how.take(&e.dir, &holder) {
            Ok(image) => out.push(Some(Taken { image: Some(image), holder })),
            Err(err) => {
                let _ = std::fs::remove_dir(&holder);
                return Err(format!("module {}: {err}", e.name));
            }
        }
    }
    Ok(out)
}

/// Every member's result when no round started.
fn not_started(list: &[ListEntry], server: &Url, why: &str) -> Vec<ModuleResult> {
    list.iter()
        .map(|e| ModuleResult {
            module: e.name.clone(),
            directory: e.dir.clone(),
            url: module_url(server, &e.name).to_string(),
            ok: false,
            exit_code: exit::TRANSIENT,
            error: Some(why.to_string()),
            report: None,
        })
        .collect()
}
