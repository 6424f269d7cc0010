//! The shared `main`: read the config file, parse arguments, set up logging, run, print an
//! error once, notify, exit.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::cli::GlobalArgs;
use crate::exit::{self, Status};
use crate::logging;
use crate::notify::{self, Policy};

/// What a tool's `Args` must offer so the shared entry can set up logging and notifications.
pub trait ToolArgs: Parser {
    fn global(&self) -> &GlobalArgs;

    /// How this run reports its end ([`crate::notify`]); by default as `BACKUP_NOTIFY_ON`
    /// says.
    fn notify_policy(&self) -> Policy {
        Policy::CONFIGURED
    }
}

/// Runs a tool: `fn main() -> ExitCode { common::entry::main("pg-base-backup", tool::run) }`.
///
/// The config file ([`crate::config_file`]) is loaded before the arguments are parsed, so
/// flags fall back to its values. Errors print once to stderr as `<tool>: <error chain>`;
/// the exit code follows [`crate::exit`]. The run is reported as its notification policy
/// says, under the tool's name and subcommand (`wal-archive push`).
pub fn main<A, F>(tool: &'static str, run: F) -> ExitCode
where
    A: ToolArgs,
    F: FnOnce(A) -> anyhow::Result<Status>,
{
    let started = Instant::now();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(error) = crate::config_file::load(&argv) {
        eprintln!("{tool}: {error}");
        return ExitCode::from(exit::ERROR);
    }
    let args = match parse::<A>(argv) {
        Ok(parsed) => parsed,
        Err(error) => return usage_error(tool, error, started),
    };
    let (args, subcommand) = args;
    logging::init(args.global());
    let label = match subcommand {
        Some(sub) => format!("{tool} {sub}"),
        None => tool.to_string(),
    };
    notify::arm(&label, args.notify_policy(), started);
    crate::interrupt::install(tool);
    finish(tool, run(args))
}

/// The parsed arguments and the subcommand's name, if any.
fn parse<A: ToolArgs>(argv: Vec<std::ffi::OsString>) -> Result<(A, Option<String>), clap::Error> {
    let mut matches = A::command().try_get_matches_from(argv)?;
    let subcommand = matches.subcommand_name().map(str::to_string);
    let args = A::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut A::command()))?;
    Ok((args, subcommand))
}

/// `--help` and `--version` print and exit 0; a usage error exits 2 and is reported like a
/// failed run, rate-limited (a wrong archive_command fails every minute).
fn usage_error(tool: &str, error: clap::Error, started: Instant) -> ExitCode {
    if !error.use_stderr() {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    logging::init(&GlobalArgs::default());
    let _ = error.print();
    let rendered = error.render().to_string();
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    notify::arm(tool, Policy::FAILURES_RATE_LIMITED, started);
    notify::finished(exit::ERROR, Some(&line));
    ExitCode::from(exit::ERROR)
}

/// Turns a run's result into the process exit code, printing the error chain if any, and
/// sends the run's notification.
pub fn finish(tool: &str, result: anyhow::Result<Status>) -> ExitCode {
    // A run cut short by a signal (its children stopped under it) ends with the signal's
    // code, from the watcher, not with the error that followed.
    crate::interrupt::checkpoint();
    let (code, error) = match result {
        Ok(status) => (status.code(), None),
        Err(error) => match exit::code_for(&error) {
            None => (0, None),
            Some(code) => {
                let line = format!("{error:#}");
                eprintln!("{tool}: {line}");
                (code, Some(line))
            }
        },
    };
    notify::finished(code, error.as_deref());
    ExitCode::from(code)
}
