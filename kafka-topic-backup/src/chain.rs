//! Incremental chains and retention: an incremental set is useless without the sets it
//! continues, so retention keeps every predecessor of a set it keeps.

use common::repo::{Kind, Repository, SetInfo};
use common::retention::{Decision, RetentionPolicy};

use crate::backup::details_of;

/// Applies `policy` to the Kafka sets, keeping the predecessors of kept incremental sets.
/// Returns the ids deleted (or that would be, with `dry_run`).
pub fn apply_retention(
    repo: &Repository,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> anyhow::Result<Vec<String>> {
    let sets = repo.list(Kind::Kafka)?;
    let mut decisions = policy.plan(&sets, common::timefmt::now());
    keep_predecessors(&sets, &mut decisions);
    let mut deleted = Vec::new();
    for (set, decision) in sets.iter().zip(&decisions) {
        if decision.keep {
            continue;
        }
        if dry_run {
            tracing::info!(
                "retention would delete kafka set {} ({})",
                set.id,
                decision.reason
            );
        } else {
            tracing::info!(
                "retention deletes kafka set {} ({})",
                set.id,
                decision.reason
            );
            repo.delete_set(set).map_err(|e| {
                anyhow::anyhow!("cannot delete kafka set {}: {e}", set.dir.display())
            })?;
        }
        deleted.push(set.id.clone());
    }
    Ok(deleted)
}

fn keep_predecessors(sets: &[SetInfo], decisions: &mut [Decision]) {
    loop {
        let mut changed = false;
        for index in 0..sets.len() {
            if !decisions[index].keep {
                continue;
            }
            let Some(details) = details_of(&sets[index]) else {
                continue;
            };
            for topic in &details.topics {
                let Some(previous) = &topic.incremental_from else {
                    continue;
                };
                if let Some(at) = sets.iter().position(|s| &s.id == previous) {
                    if !decisions[at].keep {
                        decisions[at].keep = true;
                        decisions[at].reason =
                            format!("continued by incremental set {}", sets[index].id);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return;
        }
    }
}
