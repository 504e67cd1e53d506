//! `tierlab run`: run a scenario file, or the default suite, and report.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde::Serialize;
use tierlab_l7::{ScriptedConfig, ScriptedStack, SmolConfig, SmolStack};
use tierlab_lab::report::{RunReport, Trace, percent, run_traced};
use tierlab_lab::scenario::{EndpointKind, Scenario};
use tierlab_lab::suite::{SuiteRun, suite};

use super::CliError;

/// Arguments of `tierlab run`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct RunArgs {
    /// The scenario (TOML; see docs/scenarios.md; an empty file is the seed lab). With
    /// --suite, the base lab of every run (default: the seed lab).
    pub(crate) file: Option<PathBuf>,
    /// Run the default suite: each disruption of the seed README on a freshly warmed lab.
    #[arg(long)]
    pub(crate) suite: bool,
    /// With --suite: run only the run of this name (e.g. `director_died`) and print its
    /// full report, with the control plane's decisions.
    #[arg(long, requires = "suite")]
    pub(crate) only: Option<String>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Override the endpoint kind.
    #[arg(long, value_parser = ["scripted", "smoltcp"])]
    pub(crate) endpoint: Option<String>,
    /// Print the report as JSON (schema: docs/report.md) instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print the events as CSV (one line per event, every cause a column) instead of a table.
    #[arg(long)]
    pub(crate) csv: bool,
    /// Write the run's packets to this pcap file (link type RAW; timestamps are virtual time).
    /// Not with --suite.
    #[arg(long)]
    pub(crate) pcap: Option<PathBuf>,
    /// With --pcap: only the packets these nodes send or receive, comma-separated
    /// (`clients`, `internet`, `router1`, `director3`, `proxy14`, `backend2`…).
    #[arg(long, value_delimiter = ',')]
    pub(crate) pcap_nodes: Vec<String>,
}

/// Runs the scenario or the suite.
pub(crate) fn run(args: &RunArgs) -> Result<(), CliError> {
    let (mut base, name) = match &args.file {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::BadInput(format!("{name}: cannot read: {e}")))?;
            (
                tierlab_lab::from_toml(&text, &name)
                    .map_err(|e| CliError::BadInput(e.to_string()))?,
                name,
            )
        }
        None if args.suite => (Scenario::default(), "the seed lab".to_owned()),
        None => {
            return Err(CliError::BadInput(
                "give a scenario file, or --suite".into(),
            ));
        }
    };
    if let Some(seed) = args.seed {
        base.seed = seed;
    }
    match args.endpoint.as_deref() {
        Some("smoltcp") => base.endpoint = EndpointKind::Smoltcp,
        Some(_) => base.endpoint = EndpointKind::Scripted,
        None => {}
    }
    if args.suite && args.pcap.is_some() {
        return Err(CliError::BadInput(
            "--pcap records one run: give a scenario file, not --suite".into(),
        ));
    }
    if !args.suite {
        let trace = match &args.pcap {
            Some(path) => {
                let f = std::fs::File::create(path).map_err(|e| {
                    CliError::BadInput(format!("{}: cannot create: {e}", path.display()))
                })?;
                Some(Trace {
                    out: Box::new(std::io::BufWriter::new(f)),
                    nodes: args.pcap_nodes.clone(),
                })
            }
            None => None,
        };
        let report =
            one_traced(&base, trace).map_err(|e| CliError::BadInput(format!("{name}: {e}")))?;
        if args.json {
            print_json(&report)?;
        } else if args.csv {
            print!("{}", report.csv());
        } else {
            print_table(&report);
        }
        return Ok(());
    }
    let progress = std::io::stderr().is_terminal();
    let mut runs = Vec::new();
    let plan = suite(&base, 10.0);
    if let Some(only) = &args.only {
        let names: Vec<&str> = plan.iter().map(|r| r.name).collect();
        let Some(r) = plan.iter().find(|r| r.name == only) else {
            return Err(CliError::BadInput(format!(
                "no suite run named {only:?} (runs: {})",
                names.join(", ")
            )));
        };
        let report =
            one(&r.scenario).map_err(|e| CliError::BadInput(format!("suite run {only}: {e}")))?;
        if args.json {
            return print_json(&report);
        }
        if args.csv {
            print!("{}", report.csv());
            return Ok(());
        }
        print_table(&report);
        println!("the lab's README expects: {}", r.expects);
        if let Some(k) = r.kernel {
            println!("kernel rules and timers: {k}");
        }
        return Ok(());
    }
    for r in &plan {
        if progress {
            eprint!("\rrunning {:<32}", r.name);
        }
        let report = one(&r.scenario)
            .map_err(|e| CliError::BadInput(format!("suite run {}: {e}", r.name)))?;
        runs.push((r, report));
    }
    if progress {
        eprint!("\r{:<40}\r", "");
    }
    if args.csv {
        for (i, (_, r)) in runs.iter().enumerate() {
            let csv = r.csv();
            // One header line for the whole suite.
            print!(
                "{}",
                if i == 0 {
                    csv.as_str()
                } else {
                    csv.split_once('\n').map_or("", |(_, rest)| rest)
                }
            );
        }
        return Ok(());
    }
    if args.json {
        #[derive(Serialize)]
        struct Suite<'a> {
            suite: Vec<&'a RunReport>,
        }
        print_json(&Suite {
            suite: runs.iter().map(|(_, r)| r).collect(),
        })
    } else {
        print_suite(&runs);
        Ok(())
    }
}

fn one(s: &Scenario) -> Result<RunReport, tierlab_lab::build::LabError> {
    one_traced(s, None)
}

fn one_traced(
    s: &Scenario,
    trace: Option<Trace>,
) -> Result<RunReport, tierlab_lab::build::LabError> {
    match s.endpoint {
        EndpointKind::Scripted => {
            run_traced(s, || ScriptedStack::new(ScriptedConfig::default()), trace)
        }
        EndpointKind::Smoltcp => run_traced(s, || SmolStack::new(SmolConfig::default()), trace),
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn print_suite(runs: &[(&SuiteRun, RunReport)]) {
    println!(
        "{:<30} {:>6} {:>6} {:>8} {:>6}  {:<14} {:>8}  what the lab's README expects",
        "disruption", "active", "broken", "broken %", "later", "main cause", "settled"
    );
    for (run, r) in runs {
        let active = r.events.last().map_or(0, |e| e.active_before);
        let broken: u64 = r.events.iter().map(|e| e.broken).sum();
        let later: u64 = r.events.iter().map(|e| e.broken_later).sum();
        let cause = r
            .events
            .iter()
            .rev()
            .map(|e| e.broken_by_cause.main())
            .find(|c| *c != "-")
            .unwrap_or("-");
        // The control plane's last decision after the last event: how long the lab took to
        // settle ("-" when it acted at once or not at all).
        let settled = r
            .events
            .last()
            .and_then(|e| e.control.last().map(|c| c.at_s - e.at_s))
            .filter(|s| *s > 0.0)
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        println!(
            "{:<30} {:>6} {:>6} {:>7.1}% {:>6}  {:<14} {:>8}  {}",
            r.scenario,
            active,
            broken,
            percent(broken, active),
            later,
            cause,
            settled,
            run.expects
        );
        if let Some(k) = run.kernel {
            println!("{:<30} kernel rules and timers: {k}", "");
        }
    }
    if let Some((_, r)) = runs.first() {
        println!(
            "\nseed {}, {:?} endpoints; broken = connections open before the disruption that ended unsuccessfully within the run's window after it (10 s; longer for runs that wait on health checks or DNS); later = connections opened after it that did the same; settled = when the control plane made its last change after the disruption.",
            r.seed, r.endpoint
        );
    }
}

fn print_table(r: &RunReport) {
    print!("{}", r.summary());
}
