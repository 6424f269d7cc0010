//! Running a tool as a child in its own process group: to completion within a bound, or
//! stopped at a chosen moment with SIGKILL (the tool's own pid only, as the OOM killer or a
//! crash would) or SIGTERM (as Kubernetes ends a job past its deadline), then waiting for
//! whatever it left running in its group.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use test_support::run::Run;

/// How long a tool may run before the campaign gives up on it.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// How long children of a killed tool may outlive it before that counts as a failure.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// How long a tool may take to exit after SIGTERM (its clean-up included).
pub const TERM_LIMIT: Duration = Duration::from_secs(30);

/// The signal that stops a run at its moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: the tool has no say (a crash, the OOM killer).
    Kill,
    /// SIGTERM: the tool may clean up, then exits 143.
    Term,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Kill => "SIGKILL",
            Stop::Term => "SIGTERM",
        }
    }
}

/// A tool under way.
pub struct Running {
    child: Child,
    what: String,
    started: Instant,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

/// A finished (or killed) run.
#[derive(Debug)]
pub struct Ended {
    pub run: Run,
    pub elapsed: Duration,
    /// When the SIGKILL (or [`Ended::stop`]) was sent, if the tool was still running then.
    pub killed_at: Option<Duration>,
    /// The signal sent at `killed_at`.
    pub stop: Stop,
    /// Processes of its group still running [`ORPHAN_GRACE`] after the kill (then killed).
    pub orphans: Vec<String>,
}

impl Ended {
    /// Fails unless the run exited with `code`, quoting its stderr.
    pub fn expect_code(&self, code: i32, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.run.code == code,
            "{what} exited {} (wanted {code}): {}",
            self.run.code,
            last_lines(&self.run.stderr, 3)
        );
        Ok(())
    }

    pub fn ok(&self, what: &str) -> anyhow::Result<()> {
        self.expect_code(0, what)
    }

    /// The id of the set a backup run wrote, from its JSON summary.
    pub fn set_id(&self) -> anyhow::Result<String> {
        self.run.summary()["id"]
            .as_str()
            .map(str::to_string)
            .context("the backup's summary names no set id")
    }

    /// The run's last lines on stderr and on stdout, for a report that must show what the
    /// run said.
    pub fn output_tail(&self) -> String {
        format!(
            "stderr: {}; stdout: {}",
            last_lines(&self.run.stderr, 3),
            last_lines(&self.run.stdout, 3)
        )
    }

    /// A short description of when the kill landed.
    pub fn kill_note(&self) -> String {
        match self.killed_at {
            Some(at) if self.stop == Stop::Kill => format!("killed at {:.2}s", at.as_secs_f64()),
            Some(at) => format!(
                "{} at {:.2}s (exit {})",
                self.stop.name(),
                at.as_secs_f64(),
                self.run.code
            ),
            None => format!(
                "ended on its own after {:.2}s (exit {})",
                self.elapsed.as_secs_f64(),
                self.run.code
            ),
        }
    }
}

/// The last `n` non-empty lines of a text, joined by " | ".
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join(" | ")
}

impl Running {
    /// Starts `cmd` in a process group of its own, stdin closed, output captured.
    pub fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Running> {
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdout = drain(child.stdout.take().expect("piped"));
        let stderr = drain(child.stderr.take().expect("piped"));
        Ok(Running {
            child,
            what: what.to_string(),
            started: Instant::now(),
            stdout,
            stderr,
        })
    }

    fn pgid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(&self.child)
    }

    /// Whether the tool is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the end, within `limit` (then the group is killed and it is an error).
    pub fn wait(mut self, limit: Duration) -> anyhow::Result<Ended> {
        let deadline = self.started + limit;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(self.collect(None));
            }
            if Instant::now() >= deadline {
                let _ =
                    rustix::process::kill_process_group(self.pgid(), rustix::process::Signal::KILL);
                let what = self.what.clone();
                let ended = self.collect(None);
                anyhow::bail!(
                    "{what} did not finish within {}s: {}",
                    limit.as_secs(),
                    last_lines(&ended.run.stderr, 3)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGKILL to the tool `at` after its start if it still runs, then waits for it
    /// and for its group to empty.
    pub fn kill_at(self, at: Duration) -> anyhow::Result<Ended> {
        self.stop_at(at, Stop::Kill)
    }

    /// Sends `stop` to the tool `at` after its start if it still runs, then waits for it (after
    /// SIGTERM up to [`TERM_LIMIT`], else it is an error) and for its group to empty.
    pub fn stop_at(mut self, at: Duration, stop: Stop) -> anyhow::Result<Ended> {
        let deadline = self.started + at;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(self.collect(None));
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
        }
        let at = self.started.elapsed();
        match stop {
            // The tool only: its children live on as a crash would leave them.
            Stop::Kill => {
                let _ = self.child.kill();
            }
            Stop::Term => {
                let _ = rustix::process::kill_process(self.pgid(), rustix::process::Signal::TERM);
                let deadline = Instant::now() + TERM_LIMIT;
                while self.child.try_wait()?.is_none() {
                    if Instant::now() >= deadline {
                        let _ = rustix::process::kill_process_group(
                            self.pgid(),
                            rustix::process::Signal::KILL,
                        );
                        let what = self.what.clone();
                        let ended = self.collect(Some(at));
                        anyhow::bail!(
                            "{what} did not exit within {}s of SIGTERM: {}",
                            TERM_LIMIT.as_secs(),
                            last_lines(&ended.run.stderr, 3)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let _ = self.child.wait();
        let orphans = settle_group(self.pgid(), ORPHAN_GRACE);
        let mut ended = self.collect(Some(at));
        ended.stop = stop;
        ended.orphans = orphans;
        Ok(ended)
    }

    fn collect(mut self, killed_at: Option<Duration>) -> Ended {
        let status = self.child.wait().ok();
        let elapsed = self.started.elapsed();
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.join().unwrap_or_default();
        Ended {
            run: Run {
                code: status.and_then(|s| s.code()).unwrap_or(-1),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            },
            elapsed,
            killed_at,
            stop: Stop::Kill,
            orphans: Vec::new(),
        }
    }
}

/// Runs `cmd` to completion within [`RUN_LIMIT`].
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<Ended> {
    Running::spawn(cmd, what)?.wait(RUN_LIMIT)
}

/// Runs `cmd` and fails unless it exits 0.
pub fn run_ok(cmd: &mut Command, what: &str) -> anyhow::Result<Ended> {
    let ended = run(cmd, what)?;
    ended.ok(what)?;
    Ok(ended)
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits up to `grace` for every process of group `pgid` to end; returns the command lines
/// of those still running then, after killing them.
fn settle_group(pgid: rustix::process::Pid, grace: Duration) -> Vec<String> {
    let deadline = Instant::now() + grace;
    loop {
        let members = group_members(pgid.as_raw_nonzero().get());
        if members.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            return members;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live (not zombie) processes whose process group is `pgid`: "pid command line".
fn group_members(pgid: i32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 || fields[0] == "Z" || fields[2] != pgid.to_string() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        found.push(format!("{pid} {}", cmdline.trim()));
    }
    found
}
