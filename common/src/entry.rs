//! The shared `main`: parse arguments, set up logging, run, print an error once, exit.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::GlobalArgs;
use crate::exit::{self, Status};
use crate::logging;

/// What a tool's `Args` must offer so the shared entry can set up logging.
pub trait ToolArgs: Parser {
    fn global(&self) -> &GlobalArgs;
}

/// Runs a tool: `fn main() -> ExitCode { common::entry::main("pg-base-backup", tool::run) }`.
///
/// Errors print once to stderr as `<tool>: <error chain>`; the exit code follows
/// [`crate::exit`].
pub fn main<A, F>(tool: &'static str, run: F) -> ExitCode
where
    A: ToolArgs,
    F: FnOnce(A) -> anyhow::Result<Status>,
{
    let args = A::parse();
    logging::init(args.global());
    crate::interrupt::install(tool);
    finish(tool, run(args))
}

/// Turns a run's result into the process exit code, printing the error chain if any.
pub fn finish(tool: &str, result: anyhow::Result<Status>) -> ExitCode {
    // A run cut short by a signal (its children stopped under it) ends with the signal's
    // code, from the watcher, not with the error that followed.
    crate::interrupt::checkpoint();
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(error) => match exit::code_for(&error) {
            None => ExitCode::SUCCESS,
            Some(code) => {
                eprintln!("{tool}: {error:#}");
                ExitCode::from(code)
            }
        },
    }
}
