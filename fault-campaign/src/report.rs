//! The campaign's figures: a table on stdout (scenario, trials, ok, failed, seeds of the
//! failures) and `fault-report.json` with every trial.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::context::Tier;
use crate::trial::ScenarioResult;

/// Version of the JSON report's layout.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub format_version: u32,
    pub tier: &'static str,
    pub seed: u64,
    pub passed: bool,
    pub trials: usize,
    pub ok: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    pub fn new(tier: Tier, seed: u64, scenarios: Vec<ScenarioResult>, took: Duration) -> Report {
        let trials = scenarios.iter().map(|s| s.trials.len()).sum();
        let ok = scenarios.iter().map(ScenarioResult::ok_count).sum();
        let setup_failures = scenarios.iter().filter(|s| s.setup_error.is_some()).count();
        Report {
            format_version: REPORT_VERSION,
            tier: tier.name(),
            seed,
            passed: scenarios.iter().all(ScenarioResult::all_ok),
            trials,
            ok,
            failed: trials - ok + setup_failures,
            duration_s: took.as_secs_f64(),
            scenarios,
        }
    }

    pub fn all_ok(&self) -> bool {
        self.passed
    }

    /// The table: one line per scenario, then the failures with their seeds and causes.
    pub fn table(&self) -> String {
        let width = self
            .scenarios
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<width$}  {:>6}  {:>4}  {:>6}  {:>7}  seeds of failures",
            "scenario", "trials", "ok", "failed", "time"
        );
        for s in &self.scenarios {
            let failed = s.trials.len() - s.ok_count() + usize::from(s.setup_error.is_some());
            let seeds: Vec<String> = if s.setup_error.is_some() {
                vec!["setup failed".into()]
            } else {
                s.failed().map(|t| t.seed.to_string()).collect()
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>6}  {:>4}  {:>6}  {:>6.0}s  {}",
                s.name,
                s.trials.len(),
                s.ok_count(),
                failed,
                s.duration_s,
                seeds.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "{}: {} trials, {} ok, {} failed in {:.0}s (seed {}, {} tier)",
            if self.passed { "PASSED" } else { "FAILED" },
            self.trials,
            self.ok,
            self.failed,
            self.duration_s,
            self.seed,
            self.tier
        );
        for s in &self.scenarios {
            if let Some(error) = &s.setup_error {
                let _ = writeln!(out, "  {} setup: {}", s.name, shorten(error));
            }
            for t in s.failed() {
                let _ = writeln!(
                    out,
                    "  {} seed {}: {}\n    again: scripts/fault-campaign.sh --scenario {} --seed {} --trials 1",
                    s.name,
                    t.seed,
                    shorten(&t.detail),
                    s.name,
                    t.seed
                );
            }
        }
        out
    }

    /// Writes the JSON report (to a temporary name, then renamed).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// One line of at most 400 characters.
fn shorten(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= 400 {
        line
    } else {
        format!("{}...", line.chars().take(400).collect::<String>())
    }
}
