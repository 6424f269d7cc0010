//! After producing: the target's watermarks checked against the plan, the consumer-group
//! offsets committed once that holds, and the summary's partition and group rows.

use std::collections::BTreeMap;

use crate::destination::Destination;
use crate::plan::Planner;
use crate::replay::Delivered;
use crate::report::{self, GroupReport, PartitionReport, Summary};

/// Verification: the target's watermarks against the plan. Every record was delivered (a
/// failure ends the run before this): the plan's counts and the target's watermarks say
/// whether they all landed where they should.
pub fn verify(
    dest: &Destination,
    planner: &Planner,
    delivered: &Delivered,
    summary: &mut Summary,
) -> anyhow::Result<bool> {
    let mut highs = BTreeMap::new();
    for partition in 0..dest.partitions {
        highs.insert(partition, dest.target.watermarks(&dest.topic, partition)?.1);
    }
    tracing::debug!(
        "target watermarks read after {:.3?}",
        delivered.started.elapsed()
    );
    fill_partitions(
        summary,
        planner,
        Some(&delivered.per_partition),
        Some(&highs),
    );
    summary.verified = summary.partitions.iter().all(|p| p.ok);
    Ok(summary.verified)
}

/// Commits the translated consumer-group offsets, only once the replay is verified.
pub fn restore_group_offsets(
    dest: &Destination,
    planner: &Planner,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    if !summary.verified {
        tracing::warn!("verification failed: consumer group offsets were not restored");
        return Ok(());
    }
    summary.groups = group_reports(planner);
    for group in &mut summary.groups {
        let offsets: Vec<(i32, i64)> = group
            .offsets
            .iter()
            .map(|o| (o.partition, o.target_offset))
            .collect();
        dest.target
            .commit_group(&group.group, &dest.topic, &offsets)?;
        group.committed = true;
    }
    Ok(())
}

/// The summary's partition rows and totals; `produced` and `highs` are None before producing.
pub fn fill_partitions(
    summary: &mut Summary,
    planner: &Planner,
    produced: Option<&BTreeMap<i32, u64>>,
    highs: Option<&BTreeMap<i32, i64>>,
) {
    summary.partitions = planner
        .partitions
        .values()
        .map(|plan| {
            let produced_here = match produced {
                Some(map) => map.get(&plan.source_partition).copied().unwrap_or(0),
                None => plan.to_produce(),
            };
            let expected = plan
                .target_partition
                .map(|_| plan.base + plan.selected as i64);
            let high = match (highs, plan.target_partition) {
                (Some(highs), Some(tp)) => highs.get(&tp).copied(),
                _ => None,
            };
            let ok = produced_here == plan.to_produce()
                && match (expected, high) {
                    (Some(expected), Some(high)) => expected == high,
                    _ => true,
                };
            PartitionReport {
                source_partition: plan.source_partition,
                target_partition: plan.target_partition,
                selected: plan.selected,
                already_present: plan.present,
                produced: produced_here,
                first_offset: plan.first_offset,
                last_offset: plan.last_offset,
                expected_high_watermark: expected,
                high_watermark: high,
                ok,
            }
        })
        .collect();
    summary.records_selected = summary.partitions.iter().map(|p| p.selected).sum();
    summary.records_present = summary.partitions.iter().map(|p| p.already_present).sum();
    summary.records_produced = summary.partitions.iter().map(|p| p.produced).sum();
}

/// The translated offsets of each saved group, by target partition.
pub fn group_reports(planner: &Planner) -> Vec<GroupReport> {
    let mut groups: BTreeMap<String, GroupReport> = Default::default();
    for plan in planner.partitions.values() {
        let Some(target_partition) = plan.target_partition else {
            continue;
        };
        for point in &plan.groups {
            groups
                .entry(point.group.clone())
                .or_insert_with(|| GroupReport {
                    group: point.group.clone(),
                    committed: false,
                    offsets: Vec::new(),
                })
                .offsets
                .push(report::GroupOffsetReport {
                    partition: target_partition,
                    source_offset: point.committed,
                    target_offset: plan.translate(point),
                });
        }
    }
    groups.into_values().collect()
}
