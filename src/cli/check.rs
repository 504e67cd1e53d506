//! `tierlab check`: validate scenario files.

use std::path::PathBuf;

use super::CliError;

/// Arguments of `tierlab check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Scenario files to check (TOML; an empty file is the seed lab).
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
}

/// Checks each file; prints a one-line summary per valid file and stops at the first error.
pub(crate) fn run(args: &CheckArgs) -> Result<(), CliError> {
    for path in &args.files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::BadInput(format!("{name}: cannot read: {e}")))?;
        let s =
            tierlab_lab::from_toml(&text, &name).map_err(|e| CliError::BadInput(e.to_string()))?;
        let t = &s.topology;
        println!(
            "{name}: ok — \"{}\", seed {}, {} s, {} users, {} routers, {} directors, {} proxies, {} backends, {} VIPs, {} events",
            s.name,
            s.seed,
            s.duration_s,
            t.users,
            t.routers,
            t.directors,
            t.proxies,
            t.backends,
            t.vips.len(),
            s.events.len()
        );
    }
    Ok(())
}
