//! A finished run of one of our tools, and what every tool's tests read from it: the exit
//! code, JSON lines on stdout (data only), the summary line, the one error line on stderr.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A finished run of a program.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Runs `cmd` to completion with stdin closed.
    pub fn of(cmd: &mut Command) -> Run {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Run::from(out)
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts that `tool` ended on `signal` ("INT" or "TERM") as the tools do: exit 130 or
    /// 143, and `<tool>: interrupted by SIG<signal>` on stderr.
    pub fn assert_interrupted(&self, tool: &str, signal: &str) -> &Run {
        self.assert_code(match signal {
            "INT" => 130,
            "TERM" => 143,
            other => panic!("no exit code for SIG{other}"),
        });
        let said = format!("{tool}: interrupted by SIG{signal}");
        assert!(
            self.stderr.contains(&said),
            "no '{said}' in:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts exit 0 and passes the run on.
    pub fn ok(self) -> Run {
        self.assert_code(0);
        self
    }

    /// Every stdout line parsed as JSON (panics on a non-JSON line: stdout is data only).
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not JSON ({e}): {l}\nstderr:\n{}",
                        self.stderr
                    )
                })
            })
            .collect()
    }

    /// The last JSON line, which must be the summary (format version 1).
    pub fn summary(&self) -> Value {
        let last = self.json().pop().unwrap_or_else(|| {
            panic!(
                "no summary line (exit {})\nstderr:\n{}",
                self.code, self.stderr
            )
        });
        assert_eq!(last["type"], "summary", "{last}");
        assert_eq!(last["format_version"], 1, "{last}");
        last
    }

    /// The JSON lines of one type (`"type": kind`).
    pub fn records(&self, kind: &str) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v["type"] == kind)
            .collect()
    }

    /// The line of type `kind` whose `key` is `name`.
    pub fn record(&self, kind: &str, key: &str, name: &str) -> Value {
        self.records(kind)
            .into_iter()
            .find(|v| v[key] == name)
            .unwrap_or_else(|| panic!("no {kind} line with {key} = {name}: {self:?}"))
    }

    /// The error line `<tool>: ...` on stderr, which must be the only one.
    pub fn error_line(&self, tool: &str) -> String {
        let prefix = format!("{tool}: ");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one error line expected, stderr:\n{}",
            self.stderr
        );
        lines[0].to_string()
    }
}
