//! Finding and running the PostgreSQL client programs (pg_dump, pg_restore, pg_dumpall, psql).
//!
//! Connection settings reach the children only through `PG*` environment variables, so no
//! password (and no connection string) ever appears in a process list.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::cli::PgArgs;
use tokio::process::Command;

/// Where Debian's PostgreSQL 15 packages put the programs (tried first).
pub use common::pgbin::DEFAULT_PG_BIN_DIR;
/// Environment variable naming the directory of the PostgreSQL client programs.
pub use common::pgbin::PG_BIN_DIR;

/// Where the PostgreSQL client programs are.
#[derive(Debug, Clone, clap::Args)]
pub struct PgBinArgs {
    /// Directory of pg_dump, pg_restore, pg_dumpall and psql [default:
    /// /usr/lib/postgresql/15/bin when present, else the PATH].
    #[arg(long, env = PG_BIN_DIR)]
    pub pg_bin_dir: Option<PathBuf>,
}

/// The resolved location of the client programs, with the connection environment.
#[derive(Debug, Clone)]
pub struct PgBin {
    dir: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
}

impl PgBin {
    /// The flag or `PG_BIN_DIR`, else the PostgreSQL 15 directory when it exists (or another
    /// known install location, see [`common::pgbin::program`]), else PATH.
    pub fn resolve(args: &PgBinArgs, pg: &PgArgs) -> anyhow::Result<PgBin> {
        let dir = match &args.pg_bin_dir {
            Some(dir) => {
                if !dir.join("pg_dump").is_file() {
                    anyhow::bail!(
                        "--pg-bin-dir/{PG_BIN_DIR} {}: no pg_dump there; point it at PostgreSQL's bin directory, e.g. {DEFAULT_PG_BIN_DIR}",
                        dir.display()
                    );
                }
                Some(dir.clone())
            }
            None => {
                Some(PathBuf::from(DEFAULT_PG_BIN_DIR)).filter(|dir| dir.join("pg_dump").is_file())
            }
        };
        Ok(PgBin {
            dir,
            env: pg.libpq_env(),
        })
    }

    /// Path (or bare name, looked up in PATH) of a program.
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(name),
            None => common::pgbin::program(name),
        }
    }

    /// A command for `program` connecting to database `dbname` through the environment.
    /// Children die with us (`kill_on_drop`), so an aborted run leaves no pg_dump behind.
    /// They do not get the object-storage credentials (`AWS_*`): only this process talks to
    /// the repository.
    pub fn command(&self, program: &str, dbname: &str) -> Command {
        let mut cmd = Command::new(self.program(program));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PGDATABASE", dbname)
            .env("PGAPPNAME", crate::TOOL)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

/// Runs a command to the end, capturing stdout and stderr. A failure becomes an error that
/// names `what` and quotes the program's own message.
pub async fn run(cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = program_name(cmd.as_std().get_program());
    let output = cmd.output().await.map_err(|e| spawn_error(e, &program))?;
    check(&output, what)?;
    Ok(output)
}

/// Runs a command whose stdout is the data (pg_dump, pg_dumpall without `--file`) and
/// streams it into `sink` on a blocking thread, where writes may wait on disk or network.
/// Returns the sink holding everything the program wrote, for the caller to finish; after
/// a failure it is dropped unfinished. When the sink fails, the copy stops and closes the
/// pipe, which ends the program, and the sink's error is the one reported.
pub async fn run_into<W>(cmd: &mut Command, sink: W, what: &str) -> anyhow::Result<W>
where
    W: std::io::Write + Send + 'static,
{
    use anyhow::Context;
    use tokio::io::AsyncReadExt;

    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = program_name(cmd.as_std().get_program());
    let mut child = cmd.spawn().map_err(|e| spawn_error(e, &program))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stdout = std::fs::File::from(
        stdout
            .into_owned_fd()
            .with_context(|| format!("cannot read the output of {program}"))?,
    );
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let copying = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        let copied = copy_large(&mut stdout, &mut sink);
        // Closed before the sink goes back: a program still writing sees the pipe end.
        drop(stdout);
        (sink, copied)
    });
    let mut errors = Vec::new();
    let (status, _) = tokio::join!(child.wait(), stderr.read_to_end(&mut errors));
    let status = status.with_context(|| format!("cannot wait for {program}"))?;
    let (sink, copied) = copying.await.context("the copying task failed")?;
    copied.with_context(|| format!("cannot store the output of {what}"))?;
    check(
        &Output {
            status,
            stdout: Vec::new(),
            stderr: errors,
        },
        what,
    )?;
    Ok(sink)
}

/// `std::io::copy` with a 1 MiB buffer instead of 8 KiB: a dump passes through here once,
/// and the larger reads take whatever the pipe holds in one call, so the copy costs
/// fewer system calls and hashing/writing work on bigger slices.
fn copy_large(from: &mut impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Turns a spawn failure into an error with a hint.
pub fn spawn_error(e: std::io::Error, program: &str) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "cannot run {program}: not found (install the PostgreSQL client or set --pg-bin-dir / {PG_BIN_DIR})"
        )
    } else {
        anyhow::Error::new(e).context(format!("cannot run {program}"))
    }
}

/// Fails with the program's error (else its last stderr lines) when it did not exit
/// successfully.
pub fn check(output: &Output, what: &str) -> anyhow::Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        tracing::debug!("{what}: {}", stderr.trim());
    }
    if output.status.success() {
        return Ok(());
    }
    // Its error line names the cause; the last lines are often libpq's hint and the query.
    let message = common::pgbin::error_message(&stderr).unwrap_or_else(|| last_lines(&stderr, 3));
    anyhow::bail!("{what} failed ({}): {message}", output.status)
}

/// The last `n` non-empty lines of a program's stderr, joined into one line.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "no message".to_string();
    }
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// The file name of a program path, for messages.
pub fn program_name(program: &OsStr) -> String {
    Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy()
        .into_owned()
}

/// Checks that a path is usable as a libpq `dbname` argument: names with `=` would be read as
/// connection strings.
pub fn plain_dbname(name: &str) -> anyhow::Result<&str> {
    if name.contains('=') || name.is_empty() {
        anyhow::bail!("database name '{name}' cannot be used: it is empty or contains '='");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_joins_the_tail() {
        assert_eq!(last_lines("a\n\nb\nc\nd\n", 2), "c / d");
        assert_eq!(last_lines("  \n", 2), "no message");
    }

    #[test]
    fn missing_bin_dir_is_a_clear_error() {
        let args = PgBinArgs {
            pg_bin_dir: Some(PathBuf::from("/nonexistent/bin")),
        };
        let err = PgBin::resolve(&args, &PgArgs::default()).unwrap_err();
        assert!(format!("{err:#}").contains("no pg_dump there"));
    }
}
