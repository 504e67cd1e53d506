//! `tierlab report`: the results page anyone can regenerate (`docs/results.md`).
//!
//! Runs the seed lab's variants — every scenario file of `examples/results/`, embedded at
//! build time so the page and the files cannot drift apart — and the default suite, then
//! writes a Markdown page of tables (each naming the files and the seed that produced it)
//! and an SVG chart beside it. Same files and seeds → the same page, byte for byte, whatever
//! `--jobs` says.

mod chart;
mod explain;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;
use tierlab_l4::{L4Error, SchedFlags, SchedulerKind, Service, ServiceConfig, analysis};
use tierlab_l7::{ScriptedConfig, ScriptedStack, SmolConfig, SmolStack};
use tierlab_lab::ScenarioError;
use tierlab_lab::build::{LabError, core_v4, core_v6};
use tierlab_lab::report::{ClientRecords, EventReport, RunReport, percent, run, run_recorded};
use tierlab_lab::scenario::{EndpointKind, Scenario};
use tierlab_lab::suite::{SuiteRun, suite};
use tierlab_wire::IpProto;

use super::CliError;

/// Arguments of `tierlab report`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// Where to write the page (Markdown), e.g. docs/results.md. The chart is written to
    /// `results/proxy_added_then_ecmp_change.svg` beside it (the page links it there).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// A smoke test of the command: 40 clients, every run's timeline moved to start 3 s in
    /// and cut 5 s after its last event. The page says so; its numbers are not the published
    /// ones.
    #[arg(long)]
    pub(crate) quick: bool,
    /// How many runs to simulate at once (default: the machine's cores, at most 4). The page
    /// does not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: Option<u16>,
}

/// Why the page could not be made.
#[derive(Debug, Error)]
pub(crate) enum ReportError {
    /// An embedded scenario file does not load.
    #[error("{file}: {source}")]
    Scenario {
        /// The file.
        file: &'static str,
        /// What is wrong with it.
        source: ScenarioError,
    },
    /// A run could not be built or an event could not be applied.
    #[error("run {name}: {source}")]
    Run {
        /// The scenario file or suite run.
        name: String,
        /// The lab's error.
        source: LabError,
    },
    /// A run stopped abnormally (a bug in tierlab: please report it).
    #[error("run {0} stopped abnormally")]
    Crashed(String),
    /// A lookup table could not be built for the table-share figures.
    #[error("lookup table: {0}")]
    Table(#[from] L4Error),
    /// The page or the chart could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `--out` names a folder, not a file.
    #[error("{}: is a folder; --out takes the page's file name (e.g. docs/results.md)", .0.display())]
    OutIsFolder(PathBuf),
    /// The chart could not be drawn.
    #[error("chart: {0}")]
    Chart(String),
    /// The page refers to a scenario file that is not among the embedded ones (a bug).
    #[error("{0} is not among the embedded scenario files")]
    Missing(String),
}

impl From<ReportError> for CliError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Scenario { .. }
            | ReportError::Run { .. }
            | ReportError::Write { .. }
            | ReportError::OutIsFolder(_) => Self::BadInput(e.to_string()),
            _ => Self::Failed(e.to_string()),
        }
    }
}

/// Declares each scenario file of the page: a constant with its path, and `FILES`, every
/// path with the file's text embedded at build time.
macro_rules! scenario_files {
    ($($id:ident = $name:literal;)*) => {
        $(
            #[doc = concat!("`examples/results/", $name, ".toml`.")]
            const $id: &str = concat!("examples/results/", $name, ".toml");
        )*
        /// Every scenario file of the page: its path and its text.
        const FILES: &[(&str, &str)] = &[
            $((
                concat!("examples/results/", $name, ".toml"),
                include_str!(concat!("../../examples/results/", $name, ".toml")),
            )),*
        ];
    };
}

scenario_files! {
    MH_PROXY_LOST = "mh_proxy_lost";
    SH_PROXY_LOST = "sh_proxy_lost";
    MH_ADDED_ECMP = "mh_proxy_added_then_ecmp_change";
    SH_ADDED_ECMP = "sh_proxy_added_then_ecmp_change";
    POLICY0_ECMP = "policy0_ecmp_change";
    POLICY1_ECMP = "policy1_ecmp_change";
    POLICY0_ROUTER = "policy0_router_lost";
    POLICY1_ROUTER = "policy1_router_lost";
    MH251_ADDED_ECMP = "mh251_proxy_added_then_ecmp_change";
    MH65521_ADDED_ECMP = "mh65521_proxy_added_then_ecmp_change";
    DIRECTORS7 = "directors7_proxy_added_then_ecmp_change";
    DIRECTORS14 = "directors14_proxy_added_then_ecmp_change";
    DIRECTORS28 = "directors28_proxy_added_then_ecmp_change";
    DISAGREE_CHECK = "disagree_proxy_check_failed";
    DISAGREE_LOST = "disagree_proxy_lost";
    DIRECTOR_DIED = "director_died";
    DIRECTOR_REMOVED = "director_removed";
    DIRECTOR_DISABLED = "director_disabled";
    ICMP_POLICY0 = "icmp_policy0";
    ICMP_POLICY1 = "icmp_policy1";
    ICMP_POLICY2 = "icmp_policy2";
}

/// The run whose connections the chart shows.
const CHART_FILE: &str = DIRECTORS7;
/// Where the chart goes, relative to the page.
const CHART_PATH: &str = "results/proxy_added_then_ecmp_change.svg";
/// Width of the chart's buckets, seconds.
const BUCKET_S: f64 = 0.5;
/// `--quick`: clients, seconds of warm-up before the first event, seconds kept after the
/// last event.
const QUICK_CLIENTS: u32 = 40;
const QUICK_WARM_S: f64 = 3.0;
const QUICK_TAIL_S: f64 = 5.0;

/// One simulation to run.
struct Job {
    /// The scenario file, or `suite run NAME`.
    name: String,
    scenario: Scenario,
    /// Keep the client's connection records (for the chart).
    record: bool,
}

/// A finished run: its scenario and report.
struct Ran {
    scenario: Scenario,
    report: RunReport,
}

/// Everything the page is made of.
struct Ctx {
    quick: bool,
    files: BTreeMap<&'static str, Ran>,
    suite: Vec<(SuiteRun, Ran)>,
    chart_records: ClientRecords,
}

impl Ctx {
    fn file(&self, path: &str) -> Result<&Ran, ReportError> {
        self.files
            .get(path)
            .ok_or_else(|| ReportError::Missing(path.to_owned()))
    }
}

/// Runs everything and writes the page and the chart.
pub(crate) fn run_report(args: &ReportArgs) -> Result<(), CliError> {
    make(args).map_err(CliError::from)
}

fn make(args: &ReportArgs) -> Result<(), ReportError> {
    let mut jobs = Vec::new();
    for &(file, text) in FILES {
        let mut scenario = tierlab_lab::from_toml(text, file)
            .map_err(|source| ReportError::Scenario { file, source })?;
        if args.quick {
            quicken(&mut scenario);
        }
        jobs.push(Job {
            name: file.to_owned(),
            scenario,
            record: file == CHART_FILE,
        });
    }
    let plan = suite(&Scenario::default(), 10.0);
    for r in &plan {
        let mut scenario = r.scenario.clone();
        if args.quick {
            quicken(&mut scenario);
        }
        jobs.push(Job {
            name: format!("suite run {}", r.name),
            scenario,
            record: false,
        });
    }
    // Where the page and the chart go, checked before the runs.
    if args.out.is_dir() {
        return Err(ReportError::OutIsFolder(args.out.clone()));
    }
    let dir = args.out.parent().unwrap_or_else(|| Path::new(""));
    let svg_path = dir.join(CHART_PATH);
    if let Some(svg_dir) = svg_path.parent() {
        std::fs::create_dir_all(svg_dir).map_err(|source| ReportError::Write {
            path: svg_dir.to_path_buf(),
            source,
        })?;
    }
    let workers = args.jobs.map_or_else(
        || {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(4)
        },
        usize::from,
    );
    let mut done = run_all(&jobs, workers)?.into_iter();
    let mut files = BTreeMap::new();
    let mut chart_records = ClientRecords::default();
    for (&(file, _), job) in FILES.iter().zip(&jobs) {
        let (report, records) = done
            .next()
            .ok_or_else(|| ReportError::Crashed(file.to_owned()))?;
        if let Some(r) = records {
            chart_records = r;
        }
        files.insert(
            file,
            Ran {
                scenario: job.scenario.clone(),
                report,
            },
        );
    }
    let mut suite_runs = Vec::new();
    for (r, job) in plan.into_iter().zip(&jobs[FILES.len()..]) {
        let (report, _) = done
            .next()
            .ok_or_else(|| ReportError::Crashed(job.name.clone()))?;
        suite_runs.push((
            r,
            Ran {
                scenario: job.scenario.clone(),
                report,
            },
        ));
    }
    let ctx = Ctx {
        quick: args.quick,
        files,
        suite: suite_runs,
        chart_records,
    };
    let page = page(&ctx)?;
    let svg = chart_svg(&ctx)?;
    std::fs::write(&svg_path, svg).map_err(|source| ReportError::Write {
        path: svg_path.clone(),
        source,
    })?;
    std::fs::write(&args.out, page).map_err(|source| ReportError::Write {
        path: args.out.clone(),
        source,
    })?;
    Ok(())
}

/// `--quick`: fewer clients, a shorter warm-up (the timeline moved earlier, its spacing
/// kept) and the run cut short after its last event.
fn quicken(s: &mut Scenario) {
    s.workload.clients = s.workload.clients.min(QUICK_CLIENTS);
    let first = s
        .events
        .iter()
        .map(|e| e.at_s)
        .fold(f64::INFINITY, f64::min);
    let shift = if first.is_finite() {
        (first - QUICK_WARM_S).max(0.0)
    } else {
        0.0
    };
    for e in &mut s.events {
        e.at_s -= shift;
    }
    let last = s.events.iter().map(|e| e.at_s).fold(0.0, f64::max);
    s.duration_s = (s.duration_s - shift).min(last + QUICK_TAIL_S);
    s.window_s = s.window_s.min(QUICK_TAIL_S);
}

type Outcome = (RunReport, Option<ClientRecords>);

/// Runs `jobs` on `workers` threads; results in the order of `jobs`.
fn run_all(jobs: &[Job], workers: usize) -> Result<Vec<Outcome>, ReportError> {
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<Outcome, LabError>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let progress = std::io::stderr().is_terminal();
    let crashed = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.clamp(1, jobs.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let (Some(job), Some(slot)) = (jobs.get(i), slots.get(i)) else {
                            break;
                        };
                        let result = run_one(&job.scenario, job.record);
                        if let Ok(mut slot) = slot.lock() {
                            *slot = Some(result);
                        }
                        let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                        if progress {
                            eprint!("\rtierlab report: {n}/{} runs done", jobs.len());
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).any(|r| r.is_err())
    });
    if progress {
        eprintln!();
    }
    let mut out = Vec::with_capacity(jobs.len());
    for (job, slot) in jobs.iter().zip(slots) {
        let result = slot
            .into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| ReportError::Crashed(job.name.clone()))?;
        out.push(result.map_err(|source| ReportError::Run {
            name: job.name.clone(),
            source,
        })?);
    }
    if crashed {
        return Err(ReportError::Crashed("a worker".to_owned()));
    }
    Ok(out)
}

fn run_one(s: &Scenario, record: bool) -> Result<Outcome, LabError> {
    match (s.endpoint, record) {
        (EndpointKind::Scripted, false) => {
            run(s, || ScriptedStack::new(ScriptedConfig::default())).map(|r| (r, None))
        }
        (EndpointKind::Scripted, true) => {
            run_recorded(s, || ScriptedStack::new(ScriptedConfig::default()))
                .map(|(r, c)| (r, Some(c)))
        }
        (EndpointKind::Smoltcp, false) => {
            run(s, || SmolStack::new(SmolConfig::default())).map(|r| (r, None))
        }
        (EndpointKind::Smoltcp, true) => {
            run_recorded(s, || SmolStack::new(SmolConfig::default())).map(|(r, c)| (r, Some(c)))
        }
    }
}

// ---- Figures -----------------------------------------------------------------------------

fn broken_total(r: &RunReport) -> u64 {
    r.events.iter().map(|e| e.broken).sum()
}

fn later_total(r: &RunReport) -> u64 {
    r.events.iter().map(|e| e.broken_later).sum()
}

/// Connections open just before the first event.
fn active(r: &RunReport) -> u64 {
    r.events.first().map_or(0, |e| e.active_before)
}

/// One number per event, in time order (`0 + 38` for two events).
fn per_event(r: &RunReport, f: impl Fn(&EventReport) -> u64) -> String {
    let v: Vec<String> = r.events.iter().map(|e| f(e).to_string()).collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(" + ")
    }
}

/// The event of `r` whose action is `action`.
fn event<'a>(r: &'a RunReport, action: &str) -> Option<&'a EventReport> {
    r.events.iter().find(|e| e.action == action)
}

fn ratio(num: u64, den: u64) -> String {
    if den == 0 {
        if num == 0 {
            "- (nothing broke)".to_owned()
        } else {
            format!("∞ ({num} vs 0)")
        }
    } else {
        format!("{:.1}×", num as f64 / den as f64)
    }
}

/// A time in seconds as text (`10 s`, `2.5 s`).
fn secs_text(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{t:.0} s")
    } else {
        format!("{t:.1} s")
    }
}

/// When the `i`-th event (in time order) of a run came, as text.
fn at(ran: &Ran, i: usize) -> String {
    ran.report
        .events
        .get(i)
        .map_or_else(|| "-".to_owned(), |e| secs_text(e.at_s))
}

fn pct(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// `file` (seed N), as a table cell.
fn source(path: &str, ran: &Ran) -> String {
    format!("`{path}` (seed {})", ran.report.seed)
}

/// The cells most tables end with: connections active before the first event, broken at
/// each event, broken later, and the run's file and seed.
fn outcome_cells(path: &str, ran: &Ran) -> String {
    let r = &ran.report;
    format!(
        "{} | {} | {} | {}",
        active(r),
        per_event(r, |e| e.broken),
        per_event(r, |e| e.broken_later),
        source(path, ran)
    )
}

/// Escapes a text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// When the control plane's last decision after the last event came, relative to it.
fn settled(r: &RunReport) -> String {
    r.events
        .last()
        .and_then(|e| e.control.last().map(|c| c.at_s - e.at_s))
        .filter(|s| *s > 0.0)
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"))
}

/// How many different sets of tables the directors hold, from a `directors` control record.
fn views_in(what: &str) -> Option<usize> {
    if what == "all hold the same tables" {
        return Some(1);
    }
    what.strip_prefix("hold ")?
        .strip_suffix(" different sets of tables")?
        .parse()
        .ok()
}

/// How long the directors disagreed after `e` (until `end_s`): when they first disagreed
/// and when they last came to agree again (seconds after the event), the total time they
/// disagreed, and whether they still disagreed at `end_s`.
struct Disagreement {
    first: Option<f64>,
    agreed: Option<f64>,
    total_s: f64,
    at_end: bool,
}

fn disagreement(e: &EventReport, end_s: f64) -> Disagreement {
    let mut since = (e.director_views_before > 1).then_some(e.at_s);
    let mut d = Disagreement {
        first: since.map(|t| t - e.at_s),
        agreed: None,
        total_s: 0.0,
        at_end: false,
    };
    for c in e.control.iter().filter(|c| c.node == "directors") {
        let Some(views) = views_in(&c.what) else {
            continue;
        };
        match (views > 1, since) {
            (true, None) => {
                since = Some(c.at_s);
                d.first.get_or_insert(c.at_s - e.at_s);
            }
            (false, Some(s)) => {
                since = None;
                d.total_s += c.at_s - s;
                d.agreed = Some(c.at_s - e.at_s);
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        d.total_s += end_s - s;
        d.at_end = true;
    }
    d
}

/// Share of the lookup table that moves when proxy `proxies + 1` joins proxies 1..=`proxies`
/// (the lab's tunnel addresses, added in the lab's order: each at the head of the kernel's
/// list), and the share the newcomer takes (the least that must move).
fn join_shift(
    kind: SchedulerKind,
    table_size: Option<usize>,
    v6: bool,
    proxies: u32,
) -> Result<(f64, f64), L4Error> {
    let vip = if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xc633, 0x6401))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
    };
    let mut svc = Service::new(ServiceConfig {
        vip,
        port: 80,
        proto: IpProto::Tcp,
        scheduler: kind,
        table_size,
        flags: SchedFlags {
            port: true,
            fallback: false,
        },
    })?;
    let addr = |p: u32| -> IpAddr {
        if v6 {
            IpAddr::V6(core_v6(3, p))
        } else {
            IpAddr::V4(core_v4(3, p))
        }
    };
    let slots = |svc: &Service| -> Vec<Option<IpAddr>> {
        svc.table()
            .into_iter()
            .map(|d| d.and_then(|d| svc.dest(d)).map(|d| d.addr))
            .collect()
    };
    for p in 1..=proxies {
        svc.add_dest(addr(p), 80, 1)?;
    }
    let before = slots(&svc);
    let newcomer = addr(proxies + 1);
    svc.add_dest(newcomer, 80, 1)?;
    let after = slots(&svc);
    let taken =
        after.iter().filter(|a| **a == Some(newcomer)).count() as f64 / after.len().max(1) as f64;
    Ok((analysis::changed(&before, &after), taken))
}

/// `join_shift` for both families, as a table cell: `moved v4 / moved v6`, and the newcomer's
/// share (v4).
fn join_cells(
    kind: SchedulerKind,
    table_size: Option<usize>,
    proxies: u32,
) -> Result<(String, String), L4Error> {
    let (m4, t4) = join_shift(kind, table_size, false, proxies)?;
    let (m6, _) = join_shift(kind, table_size, true, proxies)?;
    Ok((format!("{} / {}", pct(m4), pct(m6)), pct(t4)))
}

// ---- The page ----------------------------------------------------------------------------

fn page(ctx: &Ctx) -> Result<String, ReportError> {
    let mut out = String::new();
    header(&mut out, ctx)?;
    schedulers(&mut out, ctx)?;
    hash_policy(&mut out, ctx)?;
    table_size(&mut out, ctx)?;
    directors(&mut out, ctx)?;
    disagreeing(&mut out, ctx)?;
    director_loss(&mut out, ctx)?;
    suite_table(&mut out, ctx);
    chart_section(&mut out, ctx)?;
    Ok(out)
}

fn header(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let _ = writeln!(
        out,
        "# Results\n\n\
         <!-- Written by `tierlab report --out docs/results.md`: edit the scenario files or the \
         command, not this page. -->\n\n\
         Written by `tierlab report --out docs/results.md` (`cargo run --release -- report --out \
         docs/results.md`). Every number comes from a simulated run of the seed lab or a variant \
         of it, with the lab's workload (parallel clients reading a large object slowly, scripted \
         TCP endpoints) and its control plane (BGP hold timers, ExaBGP and keepalived checks, \
         DNS). Each table names the scenario file and the seed of every row: `tierlab run FILE` \
         reruns a row and prints the same numbers. The files of `examples/results/` are the ones \
         this command loads (they are built into it); the suite's runs are \
         `examples/scenarios/NAME.toml`. Same files and seeds, same page, byte for byte.\n"
    );
    if ctx.quick {
        let _ = writeln!(
            out,
            "> **Quick mode** (`--quick`): {QUICK_CLIENTS} clients instead of the lab's 200 and \
             every run's timeline moved to start {QUICK_WARM_S} s in and cut {QUICK_TAIL_S} s after \
             its last event — a smoke test of the \
             command, not the published numbers. The scenario files give the full runs.\n"
        );
    }
    let _ = writeln!(
        out,
        "- **active**: connections open just before the (first) event.\n\
         - **broken**: connections open before an event that ended unsuccessfully within the \
         run's window after it (`window_s`; a connection counts against one event at most). For \
         runs with several events, one number per event in time order (`0 + 38`).\n\
         - **broken later**: connections opened after the event that ended unsuccessfully \
         within its window — what a transient costs new connections.\n\
         - docs/report.md defines every field of a run's report; docs/scenarios.md every key of \
         a scenario file.\n"
    );
    // Headlines, from the tables below.
    let mh = &ctx.file(MH_ADDED_ECMP)?.report;
    let sh = &ctx.file(SH_ADDED_ECMP)?.report;
    let d: Vec<u64> = [DIRECTORS7, DIRECTORS14, DIRECTORS28]
        .iter()
        .map(|f| ctx.file(f).map(|r| broken_total(&r.report)))
        .collect::<Result<_, _>>()?;
    let loss: Vec<(u64, u64)> = [DIRECTOR_DIED, DIRECTOR_REMOVED, DIRECTOR_DISABLED]
        .iter()
        .map(|f| {
            ctx.file(f)
                .map(|r| (broken_total(&r.report), later_total(&r.report)))
        })
        .collect::<Result<_, _>>()?;
    let _ = writeln!(
        out,
        "## Headlines\n\n\
         - Proxy added, then an ECMP change: `sh` breaks {} as many connections as `mh` \
         ({} vs {} of {} active; table 1).\n\
         - The same with 7, 14 and 28 directors (the lab's mix of `mh` and `sh` VIPs): {}, {} \
         and {} connections broken of {} (table 4).\n\
         - A director that dies breaks {} connections (+ {} opened later) until the routers' \
         BGP hold timers expire; removed gracefully: {} (+ {}); disabled (MED raised): {} \
         (+ {}) (table 6).\n",
        ratio(
            broken_total(sh) + later_total(sh),
            broken_total(mh) + later_total(mh)
        ),
        broken_total(sh),
        broken_total(mh),
        active(mh),
        d[0],
        d[1],
        d[2],
        ctx.file(DIRECTORS7).map(|r| active(&r.report))?,
        loss[0].0,
        loss[0].1,
        loss[1].0,
        loss[1].1,
        loss[2].0,
        loss[2].1,
    );
    Ok(())
}

/// Table 1: `mh` vs `sh`.
fn schedulers(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let lost = ctx.file(MH_PROXY_LOST)?;
    let added = ctx.file(MH_ADDED_ECMP)?;
    let _ = writeln!(
        out,
        "## 1. `mh` versus `sh`\n\n\
         All eight VIPs scheduled with `mh` (IPVS Maglev hashing, 4,093 slots) or all with `sh` \
         (source hashing, 256 buckets), port flag on; the rest is the seed lab. *Proxy lost*: \
         proxy13 dies at {}. *Proxy added, then ECMP change*: proxy14 joins every director at \
         {}, and the routers reverse the order of their ECMP groups at {}.\n\n\
         | disruption | VIPs | active | broken | broken later | scenario (seed) |\n\
         |---|---|---:|---:|---:|---|",
        at(lost, 0),
        at(added, 0),
        at(added, 1),
    );
    let rows = [
        ("proxy13 lost", "mh", MH_PROXY_LOST),
        ("proxy13 lost", "sh", SH_PROXY_LOST),
        ("proxy14 added, then ECMP change", "mh", MH_ADDED_ECMP),
        ("proxy14 added, then ECMP change", "sh", SH_ADDED_ECMP),
    ];
    for (what, sched, file) in rows {
        let ran = ctx.file(file)?;
        let _ = writeln!(
            out,
            "| {what} | all `{sched}` | {} |",
            outcome_cells(file, ran)
        );
    }
    let total = |f: &str| -> Result<u64, ReportError> {
        let r = &ctx.file(f)?.report;
        Ok(broken_total(r) + later_total(r))
    };
    let proxies = ctx.file(MH_ADDED_ECMP)?.scenario.topology.proxies;
    let (mh_moved, mh_taken) = join_cells(SchedulerKind::Mh, None, proxies)?;
    let (sh_moved, sh_taken) = join_cells(SchedulerKind::Sh, None, proxies)?;
    let _ = writeln!(
        out,
        "\n**Measured sh/mh ratio** (broken + broken later): proxy lost {}, proxy added then \
         ECMP change {}.\n\n\
         When proxy14 joins the {proxies} proxies, each director rebuilds its tables. The share \
         of each table that moves, computed from the lab's proxy addresses in the kernel's list \
         order (each new destination at the head) with `tierlab_l4::Service` and \
         `tierlab_l4::analysis::changed`:\n\n\
         | scheduler | table | slots that move (IPv4 / IPv6 VIPs) | proxy14's share |\n\
         |---|---|---:|---:|\n\
         | `mh` | 4,093 slots | {mh_moved} | {mh_taken} |\n\
         | `sh` | 256 buckets | {sh_moved} | {sh_taken} |\n\n\
         Directors keep their connection entries, so nothing breaks when the proxy is added. \
         The ECMP change then moves flows to directors that hold no entry for them; with \
         `sloppy_tcp=1`, `tcp_conn_schedule()` (net/netfilter/ipvs/ip_vs_proto_tcp.c) schedules \
         such a mid-connection packet anew, on the new table, and a flow whose slot moved \
         reaches a proxy that does not know it and answers with a RST. `sh` moves almost every \
         bucket, `mh` little more than proxy14's share. Only connections older than the proxy \
         change are exposed: those opened after it were scheduled on the new table by every \
         director. When a proxy is lost, both schedulers break the same kind of connections — \
         the dead proxy's, and new ones sent to it until each director's keepalived deletes it \
         — because directors keep their entries for the other proxies.\n",
        ratio(total(SH_PROXY_LOST)?, total(MH_PROXY_LOST)?),
        ratio(total(SH_ADDED_ECMP)?, total(MH_ADDED_ECMP)?),
    );
    Ok(())
}

/// Table 2: hash policy 0 vs 1, and the ICMP section to wire.
fn hash_policy(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let (ecmp, router) = (ctx.file(POLICY1_ECMP)?, ctx.file(POLICY1_ROUTER)?);
    let _ = writeln!(
        out,
        "## 2. Hash policy 0 versus 1\n\n\
         The routers' `fib_multipath_hash_policy`: 0 hashes source and destination addresses, \
         1 (the lab's) the 5-tuple; the lab's VIPs (.1/.2 `mh`, .3/.4 `sh`). *ECMP change*: the \
         routers reverse their groups at {}. *Router lost*: router2 disappears at {} and its \
         flows reach the directors through router1, which hashes with its own seed.\n\n\
         | policy | disruption | active | broken | broken later | director entries before (max / mean) | scenario (seed) |\n\
         |---:|---|---:|---:|---:|---:|---|",
        at(ecmp, 0),
        at(router, 0),
    );
    let rows = [
        (0u8, "ECMP change", POLICY0_ECMP),
        (1, "ECMP change", POLICY1_ECMP),
        (0, "router2 lost", POLICY0_ROUTER),
        (1, "router2 lost", POLICY1_ROUTER),
    ];
    for (policy, what, file) in rows {
        let ran = ctx.file(file)?;
        let r = &ran.report;
        let load = r
            .events
            .first()
            .map(|e| &e.load_before.directors)
            .map_or_else(|| "-".to_owned(), |l| format!("{} / {:.1}", l.max, l.mean));
        let _ = writeln!(
            out,
            "| {policy} | {what} | {} | {} | {} | {load} | {} |",
            active(r),
            per_event(r, |e| e.broken),
            per_event(r, |e| e.broken_later),
            source(file, ran)
        );
    }
    let _ = writeln!(
        out,
        "\nWith either policy every director holds the same tables, so a flow that changes \
         director is scheduled on the same proxy: the policy decides which director a flow \
         reaches (the spread of connection entries above), not whether it survives.\n"
    );
    let runs = [
        (0u8, ICMP_POLICY0, ctx.file(ICMP_POLICY0)?),
        (1, ICMP_POLICY1, ctx.file(ICMP_POLICY1)?),
        (2, ICMP_POLICY2, ctx.file(ICMP_POLICY2)?),
    ];
    icmp_section(out, &runs);
    Ok(())
}

/// Where ICMP "fragmentation needed" errors land, per hash policy (the report's `icmp`
/// section of the `icmp_policy*` scenarios).
fn icmp_section(out: &mut String, runs: &[(u8, &str, &Ran)]) {
    let _ = writeln!(
        out,
        "### Where ICMP fragmentation-needed errors land\n\n\
         The link from `internet` to the clients has an MTU of 1400: every full-size segment a \
         proxy sends straight back to a client (DF set, as Linux sends it) gets an ICMP \
         \"fragmentation needed\" (IPv6: \"packet too big\") from `internet`, addressed to the \
         segment's source: the VIP. The routers hash that error onto a director, which forwards \
         it to a proxy only if it holds a connection entry for the flow the error quotes \
         (`ip_vs_in_icmp`); otherwise it is dropped, the proxy never lowers its path MTU, and the \
         connection stalls until the client's timeout (`icmp_misrouted`). Policy 0 hashes an \
         ICMP error by the header it quotes, so it follows its flow; policies 1 and 2 hash the \
         error's own header (`internet` → VIP, no ports): one director per router and VIP gets \
         them all (net/ipv4/route.c `fib_multipath_hash`, `ip_multipath_l3_keys`).\n\n\
         | policy | errors sent | reached the flow's proxy | flows with errors | flows whose proxy got one | broken by `icmp_misrouted` | scenario (seed) |\n\
         |---:|---:|---:|---:|---:|---:|---|"
    );
    for &(policy, file, ran) in runs {
        let i = &ran.report.icmp;
        let share = |a: u64, b: u64| {
            if b == 0 {
                "-".to_owned()
            } else {
                format!("{a} ({:.1} %)", 100.0 * a as f64 / b as f64)
            }
        };
        let _ = writeln!(
            out,
            "| {policy} | {} | {} | {} | {} | {} | {} |",
            i.sent,
            share(i.reached_owner, i.sent),
            i.flows,
            share(i.flows_reached_owner, i.flows),
            i.broken_misrouted,
            source(file, ran)
        );
    }
    let _ = writeln!(
        out,
        "\nWith 7 directors, about 1 flow in 7 reaches the one director its errors hash to under \
         policies 1 and 2: the share of flows whose proxy ever learns the smaller MTU. Policy 2 \
         looks inside an ICMP error only for tunnelled packets (the flow dissector stops at the \
         ICMP header), so it behaves as policy 1.\n"
    );
}

/// Table 3: `mh` table size.
fn table_size(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let added = ctx.file(MH_ADDED_ECMP)?;
    let _ = writeln!(
        out,
        "## 3. `mh` table size\n\n\
         All eight VIPs on `mh` with 251, 4,093 (the kernel's default) or 65,521 slots; \
         proxy14 joins at {}, the routers reverse their ECMP groups at {}. The share of the \
         table that moves when proxy14 joins is computed as in table 1.\n\n\
         | slots | slots that move (IPv4 / IPv6 VIPs) | proxy14's share | active | broken | broken later | scenario (seed) |\n\
         |---:|---:|---:|---:|---:|---:|---|",
        at(added, 0),
        at(added, 1),
    );
    for (size, file) in [
        (251usize, MH251_ADDED_ECMP),
        (4093, MH_ADDED_ECMP),
        (65521, MH65521_ADDED_ECMP),
    ] {
        let ran = ctx.file(file)?;
        let (moved, taken) =
            join_cells(SchedulerKind::Mh, Some(size), ran.scenario.topology.proxies)?;
        let _ = writeln!(
            out,
            "| {size} | {moved} | {taken} | {} |",
            outcome_cells(file, ran)
        );
    }
    let _ = writeln!(
        out,
        "\nMaglev's promise — only the newcomer's share of the slots moves — needs many slots \
         per destination: with 251 slots for 14 proxies the preference lists collide often and \
         more of the table moves, so more of the flows that change director change proxy.\n"
    );
    Ok(())
}

/// Table 4: 7, 14, 28 directors.
fn directors(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let seven = ctx.file(DIRECTORS7)?;
    let _ = writeln!(
        out,
        "## 4. Number of directors\n\n\
         The seed lab (VIPs .1/.2 `mh`, .3/.4 `sh`) with 7, 14 or 28 directors; proxy14 joins \
         at {}, the routers reverse their ECMP groups at {}. The 7-director file is the \
         suite's `proxy_added_then_ecmp_change`.\n\n\
         | directors | active | broken at the proxy / the ECMP change | broken % | broken later | scenario (seed) |\n\
         |---:|---:|---:|---:|---:|---|",
        at(seven, 0),
        at(seven, 1),
    );
    for file in [DIRECTORS7, DIRECTORS14, DIRECTORS28] {
        let ran = ctx.file(file)?;
        let r = &ran.report;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} % | {} | {} |",
            ran.scenario.topology.directors,
            active(r),
            per_event(r, |e| e.broken),
            percent(broken_total(r), active(r)),
            per_event(r, |e| e.broken_later),
            source(file, ran)
        );
    }
    let _ = writeln!(
        out,
        "\n`ecmp_reordered` reverses the order of the routers' next hops. Linux's hash-threshold \
         multipath gives each next hop an equal range of the hash space, in list order; \
         reversed, the range of director *i* goes to director *N + 1 − i*, the same director \
         only for the middle range when *N* is odd. With 14 and 28 directors every flow \
         therefore changes director, with 7 all but one in seven: what breaks is set by how many \
         connections predate proxy14 and by the share of the tables that moved, and hardly by \
         the number of directors.\n"
    );
    Ok(())
}

/// Table 5: health-check disagreement between directors.
fn disagreeing(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let _ = writeln!(
        out,
        "## 5. Directors that disagree\n\n\
         Each director runs its own keepalived: directors change their tables at different \
         moments, and a director that deletes and re-adds a proxy puts it back at the head of \
         its list. After every change the control log records how many different sets of \
         lookup tables the live directors hold (node `directors`: \"hold N different sets of \
         tables\" / \"all hold the same tables\"). Times are seconds after the event.\n\n\
         | run | first disagree | agree again | disagreeing for | sets of tables at the end | broken | broken later | scenario (seed) |\n\
         |---|---:|---:|---:|---:|---:|---:|---|"
    );
    for (what, file) in [
        ("director1 cannot check proxy1 for 20 s", DISAGREE_CHECK),
        ("proxy13 dies", DISAGREE_LOST),
    ] {
        let ran = ctx.file(file)?;
        let r = &ran.report;
        let Some(e) = r.events.last() else {
            continue;
        };
        let d = disagreement(e, ran.scenario.duration_s);
        let secs = |t: Option<f64>| t.map_or_else(|| "-".to_owned(), |t| format!("{t:.1} s"));
        let agreed = if d.at_end {
            format!("not by the end ({:.0} s)", ran.scenario.duration_s - e.at_s)
        } else {
            secs(d.agreed)
        };
        let _ = writeln!(
            out,
            "| {what} | {} | {agreed} | {}{:.1} s | {} | {} | {} | {} |",
            secs(d.first),
            if d.at_end { "≥ " } else { "" },
            d.total_s,
            e.director_views_after,
            e.broken,
            e.broken_later,
            source(file, ran)
        );
    }
    let _ = write!(
        out,
        "\nWhile directors disagree, a flow that changes director may change proxy."
    );
    if let Some(e) = ctx.file(DISAGREE_LOST)?.report.events.last() {
        let d = disagreement(e, ctx.file(DISAGREE_LOST)?.scenario.duration_s);
        if !d.at_end && d.agreed.is_some() {
            let _ = write!(
                out,
                " After a failed proxy, every director deleted it within its own check cycle and \
                 they agreed again."
            );
        }
    }
    if let Some(e) = ctx.file(DISAGREE_CHECK)?.report.events.last()
        && e.director_views_after > 1
    {
        let _ = write!(
            out,
            " After the check flap, the director that re-added the proxy holds it at the head of \
             its list and keeps a different table until the others rebuild from the same order \
             (section 7 explains why, from the sources)."
        );
    }
    let _ = writeln!(out, "\n");
    Ok(())
}

/// Table 6: abrupt vs graceful director loss.
fn director_loss(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let died = ctx.file(DIRECTOR_DIED)?;
    let _ = writeln!(
        out,
        "## 6. A director lost abruptly or gracefully\n\n\
         director7 leaves at {}: it dies without withdrawing (`director_failed`), stops \
         ExaBGP gracefully (`director_removed`: the VIPs are withdrawn), or gets its \
         `/etc/lb/disable` file (`director_disabled`: its healthcheck announces MED 500 at its \
         next iteration and the routers prefer the directors announcing MED 100). Each run \
         counts what broke in the {} after the event; *settled* is when the routers' last \
         ECMP group change came.\n\n\
         | how director7 leaves | broken | broken later | routers' ECMP changes | settled after | scenario (seed) |\n\
         |---|---:|---:|---|---:|---|",
        at(died, 0),
        secs_text(died.scenario.window_s),
    );
    let mut graceful_cost = 0;
    for (what, file) in [
        ("dies (`director_failed`)", DIRECTOR_DIED),
        ("removed (`director_removed`)", DIRECTOR_REMOVED),
        ("disabled (`director_disabled`)", DIRECTOR_DISABLED),
    ] {
        let ran = ctx.file(file)?;
        let r = &ran.report;
        let Some(e) = r.events.last() else {
            continue;
        };
        let changes: Vec<(String, f64)> = e
            .control
            .iter()
            .filter(|c| c.node == "routers")
            .map(|c| {
                let family = c.what.split_whitespace().next().unwrap_or("").to_owned();
                (family, c.at_s - e.at_s)
            })
            .collect();
        let listed = if changes.is_empty() {
            "none".to_owned()
        } else {
            changes
                .iter()
                .map(|(f, t)| format!("{f} +{t:.3} s"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let settle = changes
            .iter()
            .map(|(_, t)| *t)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
            .map_or_else(|| "-".to_owned(), |t| format!("{t:.1} s"));
        if file != DIRECTOR_DIED {
            graceful_cost += e.broken + e.broken_later;
        }
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {listed} | {settle} | {} |",
            e.broken,
            e.broken_later,
            source(file, ran)
        );
    }
    if graceful_cost == 0 {
        let _ = write!(
            out,
            "\nA graceful exit cost nothing here: the routers moved the director's flows to \
             directors that hold no entry for them but compute the same tables."
        );
    } else {
        let _ = write!(
            out,
            "\nThe graceful exits cost {graceful_cost} connections here."
        );
    }
    let _ = writeln!(
        out,
        " A death costs every connection the routers keep sending to the dead director until \
         their BGP hold timers expire (IPv6 peer group 3 s, IPv4 6 s, counted from the last \
         keepalive).\n"
    );
    Ok(())
}

/// Table 7: the suite, next to the README's and the kernel's expectations.
fn suite_table(out: &mut String, ctx: &Ctx) {
    let seed = ctx.suite.first().map_or(1, |(_, r)| r.report.seed);
    let warm = ctx
        .suite
        .first()
        .map_or_else(|| "-".to_owned(), |(_, r)| at(r, 0));
    let _ = writeln!(
        out,
        "## 7. The suite: what the README expects, what the kernel's rules produce, what was \
         measured\n\n\
         `tierlab run --suite` on the seed lab (seed {seed}): each disruption of the lab's \
         README, and the control-plane runs, on a lab warmed for {warm}. *README expects* is the \
         lab's README (`SuiteRun::expects`); *kernel rules and timers* is what the kernel's and \
         the daemons' rules and timers produce, for the runs where the README says something \
         else or less (`SuiteRun::kernel`). *Settled*: when the control plane made its last \
         change after the event. Rerun a row with `tierlab run examples/scenarios/NAME.toml` or \
         `tierlab run --suite --only NAME` (which also prints every decision of the control \
         plane).\n\n\
         | run | README expects | kernel rules and timers | active | broken | broken later | main cause | settled |\n\
         |---|---|---|---:|---:|---:|---|---:|"
    );
    for (run, ran) in &ctx.suite {
        let r = &ran.report;
        let cause = r
            .events
            .iter()
            .rev()
            .map(|e| e.broken_by_cause.main())
            .chain(
                r.events
                    .iter()
                    .rev()
                    .map(|e| e.broken_later_by_cause.main()),
            )
            .find(|c| *c != "-")
            .unwrap_or("-");
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {cause} | {} |",
            run.name,
            cell(run.expects),
            cell(run.kernel.unwrap_or("-")),
            active(r),
            per_event(r, |e| e.broken),
            per_event(r, |e| e.broken_later),
            settled(r)
        );
    }
    let _ = writeln!(
        out,
        "\n### Where the numbers differ from the README, and why\n\n\
         Each paragraph is printed only when the run above measured the difference it explains. \
         Kernel functions are those of torvalds/linux (net/netfilter/ipvs unless said \
         otherwise), daemon functions those of acassen/keepalived.\n"
    );
    let mut any = false;
    for (run, ran) in &ctx.suite {
        if let Some(p) = explain::why(run, &ran.report) {
            let _ = writeln!(out, "{p}\n");
            any = true;
        }
    }
    if !any {
        let _ = writeln!(out, "*No run differed from the README in this page.*\n");
    }
}

/// Section 8: the chart.
fn chart_section(out: &mut String, ctx: &Ctx) -> Result<(), ReportError> {
    let ran = ctx.file(CHART_FILE)?;
    let r = &ran.report;
    let peak = tierlab_lab::report::timeline(&ctx.chart_records, BUCKET_S)
        .iter()
        .map(|b| b.broken)
        .max()
        .unwrap_or(0);
    let change = event(r, "ecmp_reordered").map_or_else(|| "-".to_owned(), |e| secs_text(e.at_s));
    let _ = writeln!(
        out,
        "## 8. Connections over time: proxy added, then ECMP change\n\n\
         ![Connections active and broken per {BUCKET_S} s bucket over the run; dashed lines mark \
         the events]({CHART_PATH})\n\n\
         The run of {}, table 4's 7-director row: connections active at the end of each \
         {BUCKET_S} s bucket, and connections broken during it, as the lab's client chart \
         shows successes and failures; dashed lines mark the events. The clients reconnect at \
         once, so the active count barely dips; the {} connections broken by the ECMP change \
         at {} (at most {peak} in one bucket) are reset by proxies that do not know them. \
         The SVG is written beside this page by the same command.",
        source(CHART_FILE, ran),
        event(r, "ecmp_reordered").map_or(0, |e| e.broken),
        change,
    );
    Ok(())
}

fn chart_svg(ctx: &Ctx) -> Result<String, ReportError> {
    let ran = ctx.file(CHART_FILE)?;
    let buckets = tierlab_lab::report::timeline(&ctx.chart_records, BUCKET_S);
    let markers: Vec<chart::Marker> = ran
        .report
        .events
        .iter()
        .map(|e| chart::Marker {
            at_s: e.at_s,
            label: match &e.target {
                Some(t) => format!("{} {t}", e.action),
                None => e.action.clone(),
            },
        })
        .collect();
    let title = format!(
        "{} (seed {}{})",
        ran.report.scenario,
        ran.report.seed,
        if ctx.quick { ", --quick" } else { "" }
    );
    chart::svg(
        &title,
        &buckets,
        BUCKET_S,
        ran.scenario.duration_s,
        &markers,
    )
    .map_err(ReportError::Chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_loads() {
        for &(file, text) in FILES {
            let s = tierlab_lab::from_toml(text, file).unwrap_or_else(|e| panic!("{e}"));
            assert!(file.ends_with(&format!("/{}.toml", s.name)), "{file}");
        }
    }

    #[test]
    fn views_are_read_from_the_control_log() {
        assert_eq!(views_in("all hold the same tables"), Some(1));
        assert_eq!(views_in("hold 3 different sets of tables"), Some(3));
        assert_eq!(views_in("keepalived deleted proxy13"), None);
        assert_eq!(views_in("hold many different sets of tables"), None);
    }

    #[test]
    fn quick_keeps_the_spacing_of_the_timeline() {
        let text = FILES
            .iter()
            .find(|(f, _)| *f == DIRECTORS7)
            .map(|(_, t)| *t)
            .unwrap();
        let mut s = tierlab_lab::from_toml(text, DIRECTORS7).unwrap();
        quicken(&mut s);
        let at: Vec<f64> = s.events.iter().map(|e| e.at_s).collect();
        assert_eq!(at, [QUICK_WARM_S, QUICK_WARM_S + 5.0]);
        assert_eq!(s.duration_s, QUICK_WARM_S + 5.0 + QUICK_TAIL_S);
        assert_eq!(s.workload.clients, QUICK_CLIENTS);
        // A scenario already shorter is left as it is.
        let mut short = Scenario {
            duration_s: 4.0,
            ..Scenario::default()
        };
        quicken(&mut short);
        assert_eq!(short.duration_s, 4.0);
    }

    /// Adding a 14th proxy moves at least its own share of an `mh` table and not much more
    /// (docs/l4.md: 8.65 % moved, 7.16 % taken on test addresses), and almost all of `sh`.
    #[test]
    fn a_new_proxy_moves_its_share_of_mh_and_almost_all_of_sh() {
        let (moved, taken) = join_shift(SchedulerKind::Mh, None, false, 13).unwrap();
        assert!(taken > 0.06 && taken < 0.085, "{taken}");
        assert!(moved >= taken && moved < 0.11, "{moved}");
        let (moved_sh, _) = join_shift(SchedulerKind::Sh, None, false, 13).unwrap();
        assert!(moved_sh > 0.85, "{moved_sh}");
        let (small, _) = join_shift(SchedulerKind::Mh, Some(251), false, 13).unwrap();
        assert!(small > moved, "{small} vs {moved}");
    }
}
