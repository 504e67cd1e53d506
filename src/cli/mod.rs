//! Subcommands of the `tierlab` binary, one module each.

pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod ecmp;
pub(crate) mod l4;
pub(crate) mod report;
pub(crate) mod run;

use thiserror::Error;

/// Why a subcommand failed. Bad input exits with status 2, other failures with 1.
#[derive(Debug, Error)]
pub(crate) enum CliError {
    /// The user's input (a flag, a line on stdin, a file) is wrong.
    #[error("{0}")]
    BadInput(String),
    /// Something failed while running (I/O...).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit status for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::BadInput(_) => 2,
            Self::Failed(_) => 1,
        }
    }
}
