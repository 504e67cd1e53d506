//! The `tierlab` command: see `tierlab --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// tierlab: packet-level simulator of multi-tier load balancers (ECMP routers, Maglev L4
/// directors over IPIP, stateful L7 proxies, backends).
///
/// With no subcommand, runs the default suite: the seed lab, and each disruption of its README
/// on a freshly warmed lab, with a table of what broke (same as `tierlab run --suite`).
#[derive(Debug, Parser)]
#[command(name = "tierlab", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a TCP SYN, tunnel it as an IPVS director would, write demo.pcap and say what it did.
    Demo(cli::demo::DemoArgs),
    /// Check scenario files (TOML): every error is reported as FILE:LINE:COLUMN: what is wrong.
    /// See docs/scenarios.md for every key and its default.
    Check(cli::check::CheckArgs),
    /// Run a scenario file through the simulated lab and report what each disruption broke.
    Run(cli::run::RunArgs),
    /// Which next hop a Linux router picks for each flow read on stdin (multipath hash policy,
    /// fields, seed, weights), bit for bit as the kernel does.
    ///
    /// Reads one JSON object per line on stdin, with keys `src`, `dst`, `proto`, `sport`,
    /// `dport` and optional `flowlabel`, and writes one line per flow, `{"nexthop": I}`, I the
    /// 0-based index of the next hop in the order given. A bad line stops the run with a
    /// message naming its line number and exit status 2. See docs/ecmp.md.
    Ecmp(cli::ecmp::EcmpArgs),
    /// Which destination an IPVS director (mh, sh) or the Maglev paper's table picks for each
    /// flow read on stdin, or the whole lookup table (--dump-table).
    L4(cli::l4::L4Args),
    /// Run the lab and its variants and write the results page (Markdown tables and an SVG
    /// chart), e.g. `tierlab report --out docs/results.md`.
    ///
    /// The page compares `mh` and `sh`, hash policies 0 and 1, `mh` table sizes, 7, 14 and 28
    /// directors, directors whose health checks disagree, a director lost abruptly or
    /// gracefully, and the default suite next to what the lab's README and the kernel's rules
    /// expect (explaining each difference from the kernel and daemon sources); the chart shows
    /// connections active and broken over time when a proxy is added and the ECMP layer then
    /// changes. Every table names the scenario files of examples/results/ (built into the
    /// command) and the seed that produced it: `tierlab run FILE` reruns a row. Same files,
    /// same seeds: the same page, byte for byte. --quick runs 40 clients and short runs (a
    /// smoke test, seconds); the full page takes a minute or two in a release build.
    Report(cli::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => cli::run::run(&cli::run::RunArgs {
            suite: true,
            ..cli::run::RunArgs::default()
        }),
        Some(Command::Demo(args)) => cli::demo::run(&args),
        Some(Command::Check(args)) => cli::check::run(&args),
        Some(Command::Run(args)) => cli::run::run(&args),
        Some(Command::Ecmp(args)) => cli::ecmp::run(&args),
        Some(Command::L4(args)) => cli::l4::run(&args),
        Some(Command::Report(args)) => cli::report::run_report(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierlab: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
