//! The exit-code scheme shared by every tool.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | ran fine, but the answer is "no": a check failed, a gap was found, lag over threshold |
//! | 2    | error: bad input, unreachable server, I/O failure |
//! | 130  | interrupted (SIGINT) |
//! | 143  | terminated (SIGTERM, e.g. a Kubernetes job past its deadline) |
//!
//! A tool may need a different code at one boundary (`wal-archive fetch` must tell PostgreSQL
//! "not in the archive" from "archive broken"); it returns a [`CodedError`] for that.

use std::fmt;

/// Text for the `after_help` of every tool's `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0    success\n  1    a check failed (the tool ran, the answer is no)\n  2    error (bad input, unreachable service, I/O failure)\n  130  interrupted (SIGINT)\n  143  terminated (SIGTERM); an unfinished backup set is removed first";

/// The outcome of a run that did not fail with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything asked for was done and every check passed.
    Ok,
    /// The run completed but a check failed; exit code 1.
    CheckFailed,
}

impl Status {
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::CheckFailed => 1,
        }
    }

    /// `Ok` when `passed`, otherwise `CheckFailed`.
    pub fn from_passed(passed: bool) -> Status {
        if passed {
            Status::Ok
        } else {
            Status::CheckFailed
        }
    }
}

/// Exit code for an error.
pub const ERROR: u8 = 2;
/// Exit code after SIGINT.
pub const INTERRUPTED: u8 = 130;
/// Exit code after SIGTERM.
pub const TERMINATED: u8 = 143;

/// An error that must leave the process with a specific exit code.
#[derive(Debug)]
pub struct CodedError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CodedError {
    pub fn new(code: u8, error: anyhow::Error) -> Self {
        CodedError { code, error }
    }
}

impl fmt::Display for CodedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for CodedError {}

/// The reader of the tool's own stdout went away (`tool | head`): a normal end. Only writes
/// through [`crate::output::stdout`] say so; a broken pipe anywhere else (a socket to
/// PostgreSQL or S3, a child's stdin) is an error like any other.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

impl StdoutClosed {
    /// `error` as a broken pipe on stdout when it is a broken pipe, else unchanged.
    pub fn mark(error: std::io::Error) -> std::io::Error {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
        } else {
            error
        }
    }

    fn is_in(cause: &(dyn std::error::Error + 'static)) -> bool {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    }
}

/// The exit code for an error chain: a [`CodedError`] anywhere in it wins, a broken pipe on
/// stdout ([`StdoutClosed`]) is a normal end (the reader went away), anything else is
/// [`ERROR`].
pub fn code_for(error: &anyhow::Error) -> Option<u8> {
    for cause in error.chain() {
        if let Some(coded) = cause.downcast_ref::<CodedError>() {
            return Some(coded.code);
        }
        if StdoutClosed::is_in(cause) {
            return None;
        }
    }
    Some(ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn coded_error_survives_context() {
        let e: anyhow::Error = CodedError::new(1, anyhow::anyhow!("not archived")).into();
        let e = e.context("fetching WAL");
        assert_eq!(code_for(&e), Some(1));
    }

    #[test]
    fn a_broken_pipe_on_stdout_is_not_an_error() {
        let io = StdoutClosed::mark(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        let e = Err::<(), _>(io).context("writing").unwrap_err();
        assert_eq!(code_for(&e), None);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), Some(ERROR));
    }

    /// A connection to a server that went away during a backup ends in EPIPE too: that
    /// backup failed, and must not exit 0 with nothing written.
    #[test]
    fn a_broken_pipe_elsewhere_is_an_error() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e = Err::<(), _>(io)
            .context("cannot connect to PostgreSQL")
            .unwrap_err();
        assert_eq!(code_for(&e), Some(ERROR));
        let other = StdoutClosed::mark(std::io::Error::other("disk full"));
        let e = Err::<(), _>(other).context("writing").unwrap_err();
        assert_eq!(code_for(&e), Some(ERROR));
    }
}
