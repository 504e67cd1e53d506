//! The `tierlab` command: see `tierlab --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// tierlab: packet-level simulator of multi-tier load balancers (ECMP routers, Maglev L4
/// directors over IPIP, stateful L7 proxies, backends).
///
/// With no subcommand, runs the default job (today: the demo; see `tierlab demo --help`).
#[derive(Debug, Parser)]
#[command(name = "tierlab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a TCP SYN, tunnel it as an IPVS director would, write demo.pcap and say what it did.
    Demo(cli::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => cli::demo::run(&cli::demo::DemoArgs::default()),
        Some(Command::Demo(args)) => cli::demo::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierlab: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
