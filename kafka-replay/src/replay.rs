//! One replay: open the source, inspect the target, plan (resume, filters, LSN cut, group
//! offsets), check the whole archive before producing when it can be read twice, produce,
//! verify the target's watermarks, restore group offsets, write the connector's offset,
//! report; or, with `--list-txids`, only list the transactions below the cut. The target
//! topic is a
//! [`Destination`]; verification and the summary's rows are in `verify`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use common::repo::Repository;
use common::topic_archive::TopicMeta;
use common::Status;

use rdkafka::ClientConfig;

use crate::connector;
use crate::destination::Destination;
use crate::filter::Filter;
use crate::lsn_cut::{self as cut, LsnCut, TxIds};
use crate::plan::{Action, GroupPoint, PartitionPlan, Planner};
use crate::produce::{Replayer, TopicHints};
use crate::report::{self, Summary, TxIdList};
use crate::source::Source;
use crate::target::client_config;
use crate::verify::{fill_partitions, group_reports, restore_group_offsets, verify};
use crate::Args;

/// Runs a replay as the arguments say.
pub fn run(args: Args) -> anyhow::Result<Status> {
    if args.list_txids {
        return list_txids(&args);
    }
    let mut source = open_source(&args)?;
    let meta = source.meta().clone();
    let target_topic = target_topic(&args, &meta)?;
    let config = client_config(&args.kafka, "kafka-replay")?;
    tracing::debug!("source opened: {}", source.description);
    // The producers start first: their connections and producer ids come up while the target
    // is inspected and the archive checked.
    let replayer = start_producers(&args, &config, &target_topic, &meta)?;
    tracing::debug!("producers started");
    let dest = Destination::connect(&args, &config, target_topic, &meta)?;
    let mut planner = plan(&args, &dest, &meta)?;
    tracing::debug!("plan made");
    let counted = check_archive(&args, &mut source, &mut planner, &dest.topic)?;
    let mut summary = new_summary(&source, &meta, &dest, args.dry_run);
    if args.dry_run {
        return dry_run(&args, &dest, &planner, summary);
    }
    if dest.existing.is_none() {
        dest.create(&args, &meta)?;
        summary.created_topic = true;
    }
    tracing::debug!("archive checked");
    let replayer = replayer.context("no producers in a dry run")?;
    let delivered = produce(&args, &mut source, &mut planner, replayer, &dest, counted)?;
    let verified = verify(&dest, &planner, &delivered, &mut summary)?;
    if args.restore_group_offsets {
        restore_group_offsets(&dest, &planner, &mut summary)?;
    }
    summary.lsn_cut = planner.cut.as_ref().map(LsnCut::report);
    write_connector_offset(&args, &config, &dest, &planner, &mut summary)?;
    common::kafka::close_in_background(dest.target);
    report::print(args.global.output, &summary)?;
    Ok(Status::from_passed(verified))
}

/// The archive to read: a stream on stdin, or the chosen set (and the sets it continues).
fn open_source(args: &Args) -> anyhow::Result<Source> {
    let identities = common::encryption::Identities::from_env()?;
    if args.stdin {
        return Source::stdin(identities);
    }
    let repo = Repository::open(&args.repo.backup_dir)?;
    let topic = args.topic.as_deref().context("--topic is required")?;
    Source::from_repo(
        &repo,
        args.backup_id.as_deref(),
        topic,
        args.only_set,
        identities,
    )
}

/// The topic to produce into, once the archive is known to hold the one asked for.
fn target_topic(args: &Args, meta: &TopicMeta) -> anyhow::Result<String> {
    if let Some(topic) = args.topic.as_deref().filter(|t| *t != meta.topic) {
        anyhow::bail!("the archive holds topic '{}', not '{topic}'", meta.topic);
    }
    Ok(args
        .target_topic
        .clone()
        .unwrap_or_else(|| meta.topic.clone()))
}

/// The producers, unless this is a dry run. One per partition at most (the target's count is
/// not known yet; the source's stands in for it).
fn start_producers(
    args: &Args,
    config: &ClientConfig,
    topic: &str,
    meta: &TopicMeta,
) -> anyhow::Result<Option<Replayer>> {
    if args.dry_run {
        return Ok(None);
    }
    let partitions = args.partitions.map_or(meta.partitions, |p| p.get());
    let producers = args.producers.get().min(partitions.max(1) as usize);
    Ok(Some(Replayer::start(
        config,
        topic,
        &TopicHints::from_configs(&meta.configs),
        producers,
        args.timeout,
    )?))
}

/// The plan: which source partitions are replayed, where each resumes, and the group offsets
/// to translate.
fn plan(args: &Args, dest: &Destination, meta: &TopicMeta) -> anyhow::Result<Planner> {
    let mut planner = Planner {
        filter: Filter::new(
            args.from_time,
            args.to_time,
            &args.offset_ranges,
            &args.only_partitions,
        ),
        cut: lsn_cut(args, meta)?,
        ..Planner::default()
    };
    let mut source_partitions: Vec<i32> = (0..meta.partitions).collect();
    source_partitions.extend(meta.ranges.iter().map(|r| r.partition));
    source_partitions.sort_unstable();
    source_partitions.dedup();
    for partition in source_partitions {
        if planner.filter.wants_partition(partition) {
            let plan = partition_plan(args, dest, meta, partition)?;
            planner.partitions.insert(partition, plan);
        }
    }
    if args.repartition && !args.append {
        dest.check_empty()?;
    }
    if args.restore_group_offsets {
        add_group_points(&mut planner, meta, &args.groups)?;
    }
    Ok(planner)
}

/// The `--until-lsn` cut, with the transactions to skip (`--skip-txids`) or list
/// (`--list-txids`).
fn lsn_cut(args: &Args, meta: &TopicMeta) -> anyhow::Result<Option<LsnCut>> {
    let Some(until) = args.until_lsn else {
        return Ok(None);
    };
    let field = args.lsn_field.clone().unwrap_or_default();
    let mut lsn_cut = LsnCut::new(until, field, meta.topic.clone());
    let txid_field = args.txid_field.clone().unwrap_or_default();
    if let Some(path) = &args.skip_txids {
        let skip = cut::read_skip_list(path)?;
        lsn_cut = lsn_cut.with_txids(TxIds::Skip(txid_field, skip));
    } else if args.list_txids {
        lsn_cut = lsn_cut.with_txids(TxIds::List(txid_field, Default::default()));
    }
    Ok(Some(lsn_cut))
}

/// `--list-txids`: one pass over the archive (every chunk checked as it is read), then the
/// distinct transaction ids of the selected events below the cut. Nothing is produced.
fn list_txids(args: &Args) -> anyhow::Result<Status> {
    let mut source = open_source(args)?;
    let meta = source.meta().clone();
    target_topic(args, &meta)?;
    if source.rereadable() && !source.checksum_problems().is_empty() {
        anyhow::bail!(
            "the archive files of {} do not match their manifest (size or SHA-256); refusing to read a modified set",
            source.description
        );
    }
    let filter = Filter::new(
        args.from_time,
        args.to_time,
        &args.offset_ranges,
        &args.only_partitions,
    );
    let mut lsn_cut = lsn_cut(args, &meta)?.context("--list-txids needs --until-lsn")?;
    source.pass(&mut |chunk| {
        let partition = chunk.partition();
        for record in chunk.iter() {
            if filter.selects(partition, &record) {
                lsn_cut.keeps(partition, &record)?;
            }
        }
        Ok(())
    })?;
    let list = TxIdList {
        source: source.description.clone(),
        topic: meta.topic.clone(),
        txids: lsn_cut.listed_txids().cloned().unwrap_or_default(),
        lsn_cut: lsn_cut.report(),
    };
    report::print_txids(args.global.output, &list)?;
    Ok(Status::Ok)
}

/// One source partition's plan: its target partition and, in an existing topic, where the
/// replay starts (after what the target holds with --append; else resuming over it, with the
/// first and last records it holds to check against the archive).
fn partition_plan(
    args: &Args,
    dest: &Destination,
    meta: &TopicMeta,
    partition: i32,
) -> anyhow::Result<PartitionPlan> {
    if !args.repartition && partition >= dest.partitions {
        anyhow::bail!(
            "source partition {partition} has no counterpart: the target topic {} has {} partitions; use a topic with at least {} partitions, or --repartition",
            dest.topic,
            dest.partitions,
            meta.partitions
        );
    }
    let target_partition = (!args.repartition).then_some(partition);
    let mut plan = PartitionPlan::new(partition, target_partition, 0);
    let (Some(tp), Some(_)) = (target_partition, dest.existing) else {
        return Ok(plan);
    };
    let (low, high) = dest.target.watermarks(&dest.topic, tp)?;
    if args.append {
        plan.base = high;
        return Ok(plan);
    }
    plan.base = low;
    plan.present = (high - low).max(0) as u64;
    if plan.present > 0 {
        let first = dest.target.read_record(&dest.topic, tp, low)?;
        let last = dest.target.read_record(&dest.topic, tp, high - 1)?;
        plan.probes = vec![(0, first), (plan.present - 1, last)];
    }
    Ok(plan)
}

/// Checks a set's files before anything is produced. When nothing needs the records
/// themselves beforehand (no resume to check, no LSN cut, no dry run), the manifest's
/// checksums are enough; otherwise, or when they disagree, a first pass reads every chunk
/// (and names a damaged one, or a record without an LSN). Returns whether that pass counted
/// the records to produce.
fn check_archive(
    args: &Args,
    source: &mut Source,
    planner: &mut Planner,
    topic: &str,
) -> anyhow::Result<bool> {
    let rereadable = source.rereadable();
    let needs_records =
        args.dry_run || planner.cut.is_some() || planner.partitions.values().any(|p| p.present > 0);
    let checksums_ok = rereadable && {
        let problems = source.checksum_problems();
        for problem in &problems {
            tracing::debug!("checksum: {problem}");
        }
        problems.is_empty()
    };
    if !((rereadable && (needs_records || !checksums_ok)) || args.dry_run) {
        return Ok(false);
    }
    source.pass(&mut |chunk| {
        for record in chunk.iter() {
            planner.observe(chunk.partition(), &record, topic)?;
        }
        Ok(())
    })?;
    planner.check_counts(topic)?;
    if rereadable && !checksums_ok {
        anyhow::bail!(
            "the archive files of {} do not match their manifest (size or SHA-256) though every chunk reads; refusing to replay a modified set",
            source.description
        );
    }
    Ok(true)
}

/// The report before anything is produced or verified.
fn new_summary(source: &Source, meta: &TopicMeta, dest: &Destination, dry_run: bool) -> Summary {
    Summary {
        source: source.description.clone(),
        sets: source.set_ids.clone(),
        topic: meta.topic.clone(),
        target_topic: dest.topic.clone(),
        created_topic: false,
        dry_run,
        verified: false,
        records_selected: 0,
        records_present: 0,
        records_produced: 0,
        partitions: Vec::new(),
        groups: Vec::new(),
        lsn_cut: None,
        connector_offset: None,
    }
}

/// A dry run reports the plan: what would be produced where, and the group offsets.
fn dry_run(
    args: &Args,
    dest: &Destination,
    planner: &Planner,
    mut summary: Summary,
) -> anyhow::Result<Status> {
    summary.created_topic = dest.existing.is_none();
    fill_partitions(&mut summary, planner, None, None);
    summary.groups = group_reports(planner);
    summary.lsn_cut = planner.cut.as_ref().map(LsnCut::report);
    if let (Some(name), Some(cut)) = (&args.connector_offset, &planner.cut) {
        let value = connector::offset_value(cut.until, cut.last_event());
        summary.connector_offset = Some(connector::planned(&args.offsets_topic, name, value));
    }
    report::print(args.global.output, &summary)?;
    Ok(Status::Ok)
}

/// With --connector-offset: stores the connector's offset at the cut, once the replay is
/// verified (the connector must not resume past records that did not land).
fn write_connector_offset(
    args: &Args,
    config: &ClientConfig,
    dest: &Destination,
    planner: &Planner,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let (Some(name), Some(cut)) = (&args.connector_offset, &planner.cut) else {
        return Ok(());
    };
    if !summary.verified {
        tracing::warn!("verification failed: the connector offset was not written");
        return Ok(());
    }
    let value = connector::offset_value(cut.until, cut.last_event());
    summary.connector_offset = Some(connector::write(
        &dest.target,
        config,
        &args.offsets_topic,
        name,
        value,
        args.timeout,
    )?);
    Ok(())
}

/// What the producing phase delivered.
pub struct Delivered {
    /// Records produced, by source partition.
    pub per_partition: BTreeMap<i32, u64>,
    /// When producing started, for the timings in the debug log.
    pub started: Instant,
}

/// Produces every selected record to its target partition and waits for the deliveries.
/// `counted` says whether the archive check counted the records (for the progress bar).
fn produce(
    args: &Args,
    source: &mut Source,
    planner: &mut Planner,
    mut replayer: Replayer,
    dest: &Destination,
    counted: bool,
) -> anyhow::Result<Delivered> {
    planner.restart();
    let started = Instant::now();
    let total = counted.then(|| planner.partitions.values().map(|p| p.to_produce()).sum());
    let progress = common::progress::items(&args.global, total, &dest.topic, "records");
    let mut per_partition: BTreeMap<i32, u64> = Default::default();
    let mut picks = Vec::new();
    source.pass(&mut |chunk| {
        let partition = chunk.partition();
        picks.clear();
        for (index, record) in chunk.iter().enumerate() {
            if planner.observe(partition, &record, &dest.topic)? == Action::Produce {
                picks.push((index as u32, dest.partition_of(partition, record.key)));
            }
        }
        let sent = picks.len() as u64;
        replayer.dispatch(chunk, &picks)?;
        // Counted per chunk: the progress bar reads the clock on every tick.
        *per_partition.entry(partition).or_default() += sent;
        progress.inc(sent);
        Ok(())
    })?;
    planner.check_counts(&dest.topic)?;
    tracing::debug!("records queued after {:.3?}", started.elapsed());
    let failures = replayer.finish()?;
    progress.finish_and_clear();
    tracing::debug!("records delivered after {:.3?}", started.elapsed());
    if failures.count > 0 {
        anyhow::bail!(
            "{} record(s) could not be delivered to {}: {}; re-run the same replay to resume",
            failures.count,
            dest.topic,
            failures.first_error.unwrap_or_default()
        );
    }
    Ok(Delivered {
        per_partition,
        started,
    })
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
