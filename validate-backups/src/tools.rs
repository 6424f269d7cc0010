//! Running the other pipeline-backup tools (and PostgreSQL's programs) as child processes.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::Context;
use common::storage::Location;

/// Path of a workspace tool: `--bin-dir`, else next to this program, else on PATH.
pub fn program(name: &str, bin_dir: Option<&Path>) -> PathBuf {
    match bin_dir {
        Some(dir) => dir.join(name),
        None => common::toolbin::program(name),
    }
}

/// The `--backup-dir` value for a child tool: a local path made absolute (the child may run
/// elsewhere, as another user), kept as an `OsString`; an S3 location as its URL. The child
/// inherits this process's environment, so the same `AWS_*` settings reach the repository.
pub fn backup_dir_arg(location: &Location) -> anyhow::Result<OsString> {
    let location = location
        .absolute()
        .with_context(|| format!("cannot resolve the backup directory {location}"))?;
    Ok(match location {
        Location::Local(path) => path.into_os_string(),
        s3 => s3.to_string().into(),
    })
}

/// The result of a tool run: exit code, stdout, stderr.
#[derive(Debug)]
pub struct ToolRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    /// The last JSON line of stdout (the summary), if any.
    pub fn summary(&self) -> Option<serde_json::Value> {
        self.stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    }

    /// Every JSON line of stdout.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `"<name>: <problem>, ..."` for every JSON line `failed` picks, naming it by its
    /// `name_key` field and listing its `problems` array.
    pub fn failed_items(
        &self,
        name_key: &str,
        failed: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<String> {
        self.json_lines()
            .iter()
            .filter(|l| failed(l))
            .map(|l| {
                let problems = l["problems"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                format!("{}: {problems}", l[name_key].as_str().unwrap_or("?"))
            })
            .collect()
    }

    /// The last non-empty line of stderr, for messages.
    pub fn last_error(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error output")
            .trim()
            .to_string()
    }
}

/// Runs a prepared command to completion, capturing its output.
/// Interrupted meanwhile, the command is stopped (and waited for) before this tool exits.
pub fn capture(cmd: &mut Command, what: &str) -> anyhow::Result<ToolRun> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what} ({program}); install it or pass --bin-dir"))?;
    let stop_if_interrupted = common::interrupt::kill_on_interrupt(child.id());
    let out: Output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {what}"))?;
    drop(stop_if_interrupted);
    // The child may have died of the signal that interrupts us: leave the rest to the watcher.
    common::interrupt::checkpoint();
    Ok(ToolRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Like [`capture`], with what `feed` writes streamed to the command's stdin (a file of the
/// repository read through the store), from a thread of its own. The command may stop reading
/// early (`pg_restore --list` reads only the table of contents): the rest is then dropped.
pub fn capture_with_input(
    cmd: &mut Command,
    what: &str,
    feed: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
) -> anyhow::Result<ToolRun> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what} ({program}); install it or pass --bin-dir"))?;
    let stop_if_interrupted = common::interrupt::kill_on_interrupt(child.id());
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feeder = std::thread::spawn(move || match feed(&mut stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    });
    let out: Output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {what}"))?;
    drop(stop_if_interrupted);
    common::interrupt::checkpoint();
    let fed = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the input of {what} could not be streamed"))?;
    let mut run = ToolRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Input that could not be read explains whatever the command made of it.
    if let Err(e) = fed {
        run.code = run.code.filter(|&c| c != 0).or(Some(2));
        run.stderr
            .push_str(&format!("\ncannot read the input: {e}"));
    }
    Ok(run)
}

/// Runs a command that must succeed; the error carries its last stderr line.
pub fn checked(cmd: &mut Command, what: &str) -> anyhow::Result<ToolRun> {
    let run = capture(cmd, what)?;
    if run.code != Some(0) {
        anyhow::bail!(
            "{what} failed (exit {}): {}",
            run.code.map_or("signal".to_string(), |c| c.to_string()),
            run.last_error()
        );
    }
    Ok(run)
}

/// Like [`program`], but an absolute path, for commands another process runs
/// (archive_command, restore_command).
pub fn resolve(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let found = program(name, bin_dir);
    if found.is_absolute() {
        return Ok(found);
    }
    common::toolbin::find(name).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find {name}: install the pipeline-backup tools on PATH or pass --bin-dir"
        )
    })
}
