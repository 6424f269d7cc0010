//! Running a scenario's trials: one seed per trial (the campaign's seed plus the trial's
//! number), panics of the test helpers turned into failed trials, a progress line each.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::context::Ctx;
use crate::scenarios::Entry;

/// How one trial ended.
#[derive(Debug, Clone, Serialize)]
pub struct TrialResult {
    pub seed: u64,
    pub ok: bool,
    /// What happened (where the kill landed, what was checked) or what went wrong.
    pub detail: String,
    pub duration_s: f64,
}

/// Every trial of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    /// Set when preparing the scenario failed: no trial ran, and it counts as failed.
    pub setup_error: Option<String>,
    pub trials: Vec<TrialResult>,
    pub duration_s: f64,
}

impl ScenarioResult {
    pub fn ok_count(&self) -> usize {
        self.trials.iter().filter(|t| t.ok).count()
    }

    pub fn failed(&self) -> impl Iterator<Item = &TrialResult> {
        self.trials.iter().filter(|t| !t.ok)
    }

    pub fn all_ok(&self) -> bool {
        self.setup_error.is_none() && self.trials.iter().all(|t| t.ok)
    }
}

/// A seed from the clock, for a run that was given none.
pub fn seed_from_clock() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    now.as_secs() * 1000 + u64::from(now.subsec_millis())
}

/// Prepares a scenario and runs its trials; trial `n` uses `seed + n`.
pub fn run_scenario(ctx: &Ctx, entry: &Entry, seed: u64, trials: usize) -> ScenarioResult {
    let started = Instant::now();
    quiet_panics();
    let mut result = ScenarioResult {
        name: entry.name.clone(),
        setup_error: None,
        trials: Vec::new(),
        duration_s: 0.0,
    };
    let mut scenario = match guarded(|| (entry.make)(ctx)) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("[{}] setup failed: {error}", entry.name);
            result.setup_error = Some(error.to_string());
            result.duration_s = started.elapsed().as_secs_f64();
            return result;
        }
    };
    for n in 0..trials {
        let trial_seed = seed.wrapping_add(n as u64);
        let mut rng = fastrand::Rng::with_seed(trial_seed);
        let trial_started = Instant::now();
        let outcome = guarded(|| scenario.trial(ctx, &mut rng));
        let trial = TrialResult {
            seed: trial_seed,
            ok: outcome.is_ok(),
            detail: match outcome {
                Ok(note) => note,
                Err(error) => error.to_string(),
            },
            duration_s: trial_started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "[{}] trial {}/{trials} seed {}: {} ({:.1}s) {}",
            entry.name,
            n + 1,
            trial.seed,
            if trial.ok { "ok" } else { "FAILED" },
            trial.duration_s,
            trial.detail
        );
        result.trials.push(trial);
    }
    result.duration_s = started.elapsed().as_secs_f64();
    result
}

/// Why a scenario's setup or a trial failed; shown as one message (an error's whole chain).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0:#}")]
    Error(anyhow::Error),
    /// A panic of the test helpers, with its message.
    #[error("{0}")]
    Panic(String),
}

/// Runs `f`, catching a panic (the test helpers panic) as well as its error.
fn guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure::Error(error)),
        Err(panic) => Err(Failure::Panic(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
        )),
    }
}

/// Panics of the helpers become failed trials with their message; the default hook's
/// backtrace hint would only repeat it.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}
