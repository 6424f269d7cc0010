//! Asking before destructive work: on a terminal a `[y/N]` question, off a terminal the flags
//! alone decide (CronJobs and pipelines cannot answer).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;

/// What happens off a terminal when `--yes` was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unattended {
    /// Go ahead: the step is safe without an answer.
    Proceed,
    /// Refuse: the step destroys or replaces something.
    Refuse,
}

/// Asks `question` (without "?") unless `yes`; Ok means go ahead.
pub fn confirm(question: &str, yes: bool, unattended: Unattended) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return match unattended {
            Unattended::Proceed => Ok(()),
            Unattended::Refuse => anyhow::bail!(
                "{question}: refusing without confirmation; pass --yes when not on a terminal"
            ),
        };
    }
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question}? [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("cancelled, nothing was changed (pass --yes to skip the question)")
    }
}
