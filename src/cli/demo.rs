//! `tierlab demo`.

use super::CliError;

/// Arguments of `tierlab demo`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct DemoArgs {}

/// Runs the demo.
pub(crate) fn run(_args: &DemoArgs) -> Result<(), CliError> {
    Err(CliError::Failed("demo not written yet".into()))
}
