//! One replay: open the source, inspect the target, plan (resume, filters, group offsets),
//! check the whole archive before producing when it can be read twice, produce, verify the
//! target's watermarks, restore group offsets, report.

use anyhow::Context;
use common::repo::Repository;
use common::topic_archive::TopicMeta;
use common::Status;

use crate::filter::Filter;
use crate::partitioner::murmur2_partition;
use crate::plan::{Action, GroupPoint, PartitionPlan, Planner};
use crate::produce::{Replayer, TopicHints};
use crate::report::{self, GroupReport, PartitionReport, Summary};
use crate::source::Source;
use crate::target::{client_config, Target};
use crate::Args;

/// Runs a replay as the arguments say.
pub fn run(args: Args) -> anyhow::Result<Status> {
    if args.repartition && args.restore_group_offsets {
        anyhow::bail!(
            "--restore-group-offsets cannot be combined with --repartition: records change partitions, so offsets cannot be translated"
        );
    }
    let identities = common::encryption::Identities::from_env()?;
    let mut source = if args.stdin {
        Source::stdin(identities)?
    } else {
        let repo = Repository::open(&args.repo.backup_dir)?;
        let topic = args.topic.as_deref().context("--topic is required")?;
        Source::from_repo(
            &repo,
            args.backup_id.as_deref(),
            topic,
            args.only_set,
            identities,
        )?
    };
    let meta = source.meta().clone();
    if let Some(topic) = args.topic.as_deref().filter(|t| *t != meta.topic) {
        anyhow::bail!("the archive holds topic '{}', not '{topic}'", meta.topic);
    }
    let target_topic = args
        .target_topic
        .clone()
        .unwrap_or_else(|| meta.topic.clone());
    let config = client_config(&args.kafka, "kafka-replay")?;
    tracing::debug!("source opened: {}", source.description);
    // The producers start first: their connections and producer ids come up while the target
    // is inspected and the archive checked. One producer per partition at most (the target's
    // count is not known yet; the source's stands in for it).
    let replayer = if args.dry_run {
        None
    } else {
        let partitions = args.partitions.map_or(meta.partitions, |p| p.get());
        let producers = args.producers.get().min(partitions.max(1) as usize);
        Some(Replayer::start(
            &config,
            &target_topic,
            &TopicHints::from_configs(&meta.configs),
            producers,
            args.timeout,
        )?)
    };
    tracing::debug!("producers started");
    let (target, existing) =
        Target::connect(&config, &args.kafka.bootstrap_servers, &target_topic)?;
    tracing::debug!("target cluster answered");
    let target_partitions = existing
        .map(|t| t.partitions)
        .or(args.partitions.map(|p| p.get()))
        .unwrap_or(meta.partitions)
        .max(1);

    let mut planner = Planner {
        filter: Filter::new(
            args.from_time,
            args.to_time,
            &args.offset_ranges,
            &args.only_partitions,
        ),
        ..Planner::default()
    };
    let mut source_partitions: Vec<i32> = (0..meta.partitions).collect();
    source_partitions.extend(meta.ranges.iter().map(|r| r.partition));
    source_partitions.sort_unstable();
    source_partitions.dedup();
    for &partition in &source_partitions {
        if !planner.filter.wants_partition(partition) {
            continue;
        }
        if !args.repartition && partition >= target_partitions {
            anyhow::bail!(
                "source partition {partition} has no counterpart: the target topic {target_topic} has {target_partitions} partitions; use a topic with at least {} partitions, or --repartition",
                meta.partitions
            );
        }
        let target_partition = (!args.repartition).then_some(partition);
        let mut plan = PartitionPlan::new(partition, target_partition, 0);
        if let (Some(tp), Some(_)) = (target_partition, existing) {
            let (low, high) = target.watermarks(&target_topic, tp)?;
            if args.append {
                plan.base = high;
            } else {
                plan.base = low;
                plan.present = (high - low).max(0) as u64;
                if plan.present > 0 {
                    let first = target.read_record(&target_topic, tp, low)?;
                    let last = target.read_record(&target_topic, tp, high - 1)?;
                    plan.probes = vec![(0, first), (plan.present - 1, last)];
                }
            }
        }
        planner.partitions.insert(partition, plan);
    }
    if args.repartition && !args.append {
        if let Some(_existing) = existing {
            for partition in 0..target_partitions {
                let (low, high) = target.watermarks(&target_topic, partition)?;
                if high > low {
                    anyhow::bail!(
                        "--repartition cannot resume: target {target_topic}[{partition}] already holds records; replay into an empty topic, or pass --append"
                    );
                }
            }
        }
    }
    if args.restore_group_offsets {
        add_group_points(&mut planner, &meta, &args.groups)?;
    }

    tracing::debug!("plan made");
    let rereadable = source.rereadable();
    // A set's files are checked before anything is produced. When nothing needs the
    // records themselves beforehand (no resume to check, no dry run), the manifest's
    // checksums are enough; otherwise, or when they disagree, a first pass reads every chunk
    // (and names a damaged one).
    let needs_records = args.dry_run || planner.partitions.values().any(|p| p.present > 0);
    let checksums_ok = rereadable && {
        let problems = source.checksum_problems();
        for problem in &problems {
            tracing::debug!("checksum: {problem}");
        }
        problems.is_empty()
    };
    let counted = if (rereadable && (needs_records || !checksums_ok)) || args.dry_run {
        source.pass(&mut |chunk| {
            for record in chunk.iter() {
                planner.observe(chunk.partition(), &record, &target_topic)?;
            }
            Ok(())
        })?;
        planner.check_counts(&target_topic)?;
        if rereadable && !checksums_ok {
            anyhow::bail!(
                "the archive files of {} do not match their manifest (size or SHA-256) though every chunk reads; refusing to replay a modified set",
                source.description
            );
        }
        true
    } else {
        false
    };
    let mut summary = Summary {
        source: source.description.clone(),
        sets: source.set_ids.clone(),
        topic: meta.topic.clone(),
        target_topic: target_topic.clone(),
        created_topic: false,
        dry_run: args.dry_run,
        verified: false,
        records_selected: 0,
        records_present: 0,
        records_produced: 0,
        partitions: Vec::new(),
        groups: Vec::new(),
    };
    if args.dry_run {
        summary.created_topic = existing.is_none();
        fill_partitions(&mut summary, &planner, None, None);
        summary.groups = group_reports(&planner);
        report::print(args.global.output, &summary)?;
        return Ok(Status::Ok);
    }

    if existing.is_none() {
        create_target(&args, &target, &meta, &target_topic, target_partitions)?;
        summary.created_topic = true;
    }

    tracing::debug!("archive checked");
    planner.restart();
    let started = std::time::Instant::now();
    let mut replayer = replayer.context("no producers in a dry run")?;
    let total = counted.then(|| planner.partitions.values().map(|p| p.to_produce()).sum());
    let progress = common::progress::items(&args.global, total, &target_topic, "records");
    let mut produced: std::collections::BTreeMap<i32, u64> = Default::default();
    let mut picks = Vec::new();
    source.pass(&mut |chunk| {
        let partition = chunk.partition();
        picks.clear();
        for (index, record) in chunk.iter().enumerate() {
            if planner.observe(partition, &record, &target_topic)? != Action::Produce {
                continue;
            }
            let destination = if args.repartition {
                match record.key {
                    Some(key) => murmur2_partition(key, target_partitions),
                    None => partition % target_partitions,
                }
            } else {
                partition
            };
            picks.push((index as u32, destination));
        }
        let sent = picks.len() as u64;
        replayer.dispatch(chunk, &picks)?;
        // Counted per chunk: the progress bar reads the clock on every tick.
        *produced.entry(partition).or_default() += sent;
        progress.inc(sent);
        Ok(())
    })?;
    planner.check_counts(&target_topic)?;
    tracing::debug!("records queued after {:.3?}", started.elapsed());
    let failures = replayer.finish()?;
    progress.finish_and_clear();
    tracing::debug!("records delivered after {:.3?}", started.elapsed());
    if failures.count > 0 {
        anyhow::bail!(
            "{} record(s) could not be delivered to {target_topic}: {}; re-run the same replay to resume",
            failures.count,
            failures.first_error.unwrap_or_default()
        );
    }

    // Verification: the target's watermarks against the plan.
    let mut highs = std::collections::BTreeMap::new();
    for partition in 0..target_partitions {
        highs.insert(partition, target.watermarks(&target_topic, partition)?.1);
    }
    tracing::debug!("target watermarks read after {:.3?}", started.elapsed());
    fill_partitions(&mut summary, &planner, Some(&produced), Some(&highs));
    // Every record was delivered (a failure ends the run above): the plan's counts and the
    // target's watermarks say whether they all landed where they should.
    let verified = summary.partitions.iter().all(|p| p.ok);
    summary.verified = verified;
    if verified && args.restore_group_offsets {
        summary.groups = group_reports(&planner);
        for group in &mut summary.groups {
            let offsets: Vec<(i32, i64)> = group
                .offsets
                .iter()
                .map(|o| (o.partition, o.target_offset))
                .collect();
            target.commit_group(&group.group, &target_topic, &offsets)?;
            group.committed = true;
        }
    } else if args.restore_group_offsets {
        tracing::warn!("verification failed: consumer group offsets were not restored");
    }
    common::kafka::close_in_background(target);
    report::print(args.global.output, &summary)?;
    Ok(Status::from_passed(verified))
}

fn add_group_points(
    planner: &mut Planner,
    meta: &TopicMeta,
    only: &[String],
) -> anyhow::Result<()> {
    for name in only {
        if !meta.groups.iter().any(|g| &g.group == name) {
            anyhow::bail!(
                "the backup holds no offsets of group '{name}' (it holds: {})",
                meta.groups
                    .iter()
                    .map(|g| g.group.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for group in &meta.groups {
        if !only.is_empty() && !only.contains(&group.group) {
            continue;
        }
        for offset in &group.offsets {
            if let Some(plan) = planner.partitions.get_mut(&offset.partition) {
                plan.groups.push(GroupPoint {
                    group: group.group.clone(),
                    committed: offset.offset,
                    selected_before: None,
                });
            }
        }
    }
    for plan in planner.partitions.values_mut() {
        plan.groups.sort_by_key(|g| g.committed);
    }
    Ok(())
}

fn create_target(
    args: &Args,
    target: &Target,
    meta: &TopicMeta,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let brokers = target.brokers().max(1) as i32;
    let replication = match args.replication_factor {
        Some(rf) => rf.get(),
        None => {
            let saved = meta.replication_factor.max(1);
            if saved > brokers {
                tracing::warn!(
                    "the source had replication factor {saved}, the target has {brokers} broker(s): creating {topic} with {brokers}"
                );
            }
            saved.min(brokers)
        }
    };
    let mut configs: Vec<(String, String)> = Vec::new();
    if !args.no_topic_configs {
        for entry in meta.overrides() {
            let value = entry.value.clone().unwrap_or_default();
            if entry.name == "message.timestamp.type" && value == "LogAppendTime" {
                tracing::warn!(
                    "the source topic stamps records at append time; {topic} is created with CreateTime so the saved timestamps are kept"
                );
                continue;
            }
            configs.push((entry.name.clone(), value));
        }
    }
    tracing::info!(
        "creating topic {topic} with {partitions} partition(s), replication factor {replication}{}",
        if configs.is_empty() {
            String::new()
        } else {
            format!(
                ", configs {}",
                configs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    );
    target.create_topic(topic, partitions, replication, &configs)
}

fn fill_partitions(
    summary: &mut Summary,
    planner: &Planner,
    produced: Option<&std::collections::BTreeMap<i32, u64>>,
    highs: Option<&std::collections::BTreeMap<i32, i64>>,
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

fn group_reports(planner: &Planner) -> Vec<GroupReport> {
    let mut groups: std::collections::BTreeMap<String, GroupReport> = Default::default();
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
