//! One run: connect, choose the topics, take the cut, export each topic into the set (or to
//! stdout), commit the manifest last, apply retention, report. With recipients set, the set's
//! files and the stdout stream are age files, and the manifest keeps in clear only the cut.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use anyhow::Context;
use common::encryption::{Recipients, Sealed};
use common::repo::{Kind, Repository, SetInfo, SetMeta, SetWriter};
use common::storage;
use common::stream::Compression;
use common::topic_archive::{
    ArchiveWriter, GroupOffsets, KafkaSetDetails, OffsetGap, SetPartition, SetTopic, StreamEnd,
    TopicCut, TopicMeta, ARCHIVE_EXTENSION, FORMAT_VERSION, PRIVATE_DETAILS,
};
use common::Status;

use crate::chain;
use crate::cluster::{client_config, Cluster, TopicInfo};
use crate::export::{export_topic, ExportOptions};
use crate::plan::{plan_partition, Note, Previous};
use crate::report::{self, Summary, TopicReport};
use crate::Args;

const TOOL: &str = "kafka-topic-backup";

/// Runs a backup as the arguments say.
pub fn run(args: Args) -> anyhow::Result<Status> {
    let config = client_config(&args.kafka, TOOL)?;
    let selection = Selection::connect(&args, &config)?;
    let export = Export::new(&args, &config);
    if args.stdout {
        // No repository at all: --stdout cannot be --incremental, so no chain is read.
        let recipients = Recipients::from_env()?;
        let Selection {
            cluster,
            topics,
            groups,
        } = selection;
        export.stream_to_stdout(cluster, &topics, groups, recipients.as_ref())?;
        return Ok(Status::Ok);
    }
    let repo = Repository::create(&args.repo.backup_dir)?;
    // Released on drop, and on an interrupt by the lock itself.
    let _lock = repo.lock(Kind::Kafka)?;
    let committed = backup_to_set(&export, &repo, selection)?;
    let retention =
        common::retention::after_commit(Kind::Kafka, &committed.id, apply_retention(&args, &repo))?;
    report::print(args.global.output, &committed.summary(&args, retention))?;
    Ok(Status::Ok)
}

/// What is backed up: the cluster, the chosen topics, and their groups' committed offsets.
struct Selection {
    cluster: Cluster,
    topics: Vec<TopicInfo>,
    /// Committed offsets by topic (empty with --no-group-offsets).
    groups: BTreeMap<String, Vec<GroupOffsets>>,
}

impl Selection {
    /// Connects, chooses the topics and reads the groups' offsets on them.
    fn connect(args: &Args, config: &rdkafka::ClientConfig) -> anyhow::Result<Selection> {
        let named: &[String] = if args.topic_regex.is_some() {
            &[]
        } else {
            &args.topics
        };
        let (cluster, all_topics) = Cluster::connect(config, &args.kafka.bootstrap_servers, named)?;
        let topics = select_topics(args, &all_topics)?;
        let groups = if args.no_group_offsets {
            BTreeMap::new()
        } else {
            cluster.group_offsets(&topics)?
        };
        Ok(Selection {
            cluster,
            topics,
            groups,
        })
    }
}

/// A committed set, as the report shows it.
struct Committed {
    id: String,
    /// Where the set is, for people.
    shown: String,
    encrypted: bool,
    topics: Vec<TopicReport>,
    bytes: u64,
}

impl Committed {
    /// The run's report: this set and what retention deleted.
    fn summary(self, args: &Args, retention_deleted: Vec<String>) -> Summary {
        Summary {
            id: Some(self.id),
            dir: Some(self.shown),
            incremental: args.incremental,
            encrypted: self.encrypted,
            records: self.topics.iter().map(|r| r.records).sum(),
            bytes: self.bytes,
            topics: self.topics,
            retention_deleted,
            retention_dry_run: args.retention.dry_run_retention,
        }
    }
}

/// Exports the selected topics into a new set of `repo` and commits its manifest last.
fn backup_to_set(
    export: &Export<'_>,
    repo: &Repository,
    selection: Selection,
) -> anyhow::Result<Committed> {
    let args = export.args;
    let recipients = repo.recipients_for(Kind::Kafka, args.allow_unencrypted)?;
    let previous = previous_cuts(args, repo)?;
    let mut set = repo.create_set(Kind::Kafka)?;
    let encrypted = recipients.is_some();
    set.encrypt_to(recipients);
    set.keep_private(&[], PRIVATE_DETAILS);
    let shown = set.describe();
    // A failed set is removed as its writer is dropped (see common::repo::SetWriter).
    let Selection {
        cluster,
        topics,
        groups,
    } = selection;
    let (set, reports, details) = export.write_set(set, &cluster, &topics, groups, &previous)?;
    common::kafka::close_in_background(cluster);
    let id = set.id().to_string();
    tracing::debug!("committing set {id}");
    let manifest = set.commit(SetMeta {
        tool: TOOL,
        tool_version: env!("CARGO_PKG_VERSION"),
        source: serde_json::json!({
            "bootstrap_servers": args.kafka.bootstrap_servers,
            "topics": topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        }),
        details: serde_json::to_value(&details)?,
    })?;
    tracing::debug!("set {} committed", manifest.id);
    Ok(Committed {
        id,
        shown,
        encrypted,
        topics: reports,
        bytes: manifest.total_size(),
    })
}

/// The cuts of the complete sets an incremental backup continues (none otherwise). Only the
/// cut is read: it is in clear, encrypted sets or not.
fn previous_cuts(args: &Args, repo: &Repository) -> anyhow::Result<Vec<(String, Vec<TopicCut>)>> {
    if !args.incremental {
        return Ok(Vec::new());
    }
    Ok(repo
        .complete_sets(Kind::Kafka)?
        .iter()
        .filter_map(|set| details_of(set).map(|d| (set.id.clone(), d.cuts())))
        .collect())
}

/// Deletes (or, on a dry run, lists) the sets retention no longer keeps.
fn apply_retention(args: &Args, repo: &Repository) -> anyhow::Result<Vec<String>> {
    if args.retention.no_retention {
        return Ok(Vec::new());
    }
    let policy = args.retention.policy(30);
    chain::apply_retention(repo, &policy, args.retention.dry_run_retention)
}

/// How the topics are exported: the run's arguments and client settings.
struct Export<'a> {
    args: &'a Args,
    config: &'a rdkafka::ClientConfig,
    options: ExportOptions,
}

impl<'a> Export<'a> {
    /// The export settings the arguments ask for.
    fn new(args: &'a Args, config: &'a rdkafka::ClientConfig) -> Export<'a> {
        Export {
            args,
            config,
            options: ExportOptions {
                parallelism: args.parallelism.get(),
                chunk_bytes: args.chunk_kib.get() * 1024,
                level: args.compression_level,
                idle_timeout: args.timeout,
            },
        }
    }

    /// Streams the one selected topic's archive to stdout: an age stream when `recipients`
    /// are given.
    fn stream_to_stdout(
        &self,
        cluster: Cluster,
        topics: &[TopicInfo],
        mut groups: BTreeMap<String, Vec<GroupOffsets>>,
        recipients: Option<&Recipients>,
    ) -> anyhow::Result<()> {
        let [topic] = topics else {
            anyhow::bail!(
                "--stdout writes one topic, {} were selected; name one with --topic",
                topics.len()
            );
        };
        let groups = groups.remove(&topic.name).unwrap_or_default();
        let meta = topic_meta(&cluster, topic, None, groups, self.args.max_messages)?;
        let out = BufWriter::with_capacity(1 << 20, common::output::stdout());
        let out = Sealed::new(out, recipients).context("cannot write to stdout")?;
        common::kafka::close_in_background(cluster);
        let (end, out) = self.topic(&meta, out)?;
        // An age stream is complete only with its last, flagged chunk.
        out.finish()
            .and_then(|mut out| out.flush())
            .context("cannot write to stdout")?;
        tracing::info!(
            "{}: {} records from {} partitions written to stdout{}",
            topic.name,
            end.records,
            end.partitions.len(),
            if recipients.is_some() {
                " (age-encrypted)"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// Exports every topic into a file of `set` (streamed: to S3 as a multipart upload while
    /// it is written), continuing `previous` sets when incremental.
    fn write_set(
        &self,
        mut set: SetWriter,
        cluster: &Cluster,
        topics: &[TopicInfo],
        mut groups: BTreeMap<String, Vec<GroupOffsets>>,
        previous: &[(String, Vec<TopicCut>)],
    ) -> anyhow::Result<(SetWriter, Vec<TopicReport>, KafkaSetDetails)> {
        let mut details = KafkaSetDetails {
            archive_version: FORMAT_VERSION,
            ..KafkaSetDetails::default()
        };
        let mut reports = Vec::new();
        for topic in topics {
            let previous = previous.iter().rev().find_map(|(id, cuts)| {
                cuts.iter()
                    .find(|c| c.topic == topic.name)
                    .map(|cut| Previous {
                        set_id: id.clone(),
                        topic: cut,
                    })
            });
            if self.args.incremental && previous.is_none() {
                tracing::info!(
                    "{}: no previous set holds it, exporting in full",
                    topic.name
                );
            }
            let groups = groups.remove(&topic.name).unwrap_or_default();
            let meta = topic_meta(
                cluster,
                topic,
                previous.as_ref(),
                groups,
                self.args.max_messages,
            )?;
            let set_topic = self.write_topic(&mut set, &meta)?;
            reports.push(TopicReport::new(&set_topic));
            details.topics.push(set_topic);
        }
        if set.is_encrypted() {
            // `topics` goes into the private part: the cut stays readable without a key.
            details.cut = details.topics.iter().map(TopicCut::from).collect();
        }
        Ok((set, reports, details))
    }

    /// Exports one topic into its file of `set`; returns the topic's entry in the set details.
    fn write_topic(&self, set: &mut SetWriter, meta: &TopicMeta) -> anyhow::Result<SetTopic> {
        let file_name = format!("{}{ARCHIVE_EXTENSION}", meta.topic);
        let stored_name = match set.is_encrypted() {
            true => format!("{file_name}{}", common::encryption::AGE_SUFFIX),
            false => file_name.clone(),
        };
        let shown = set
            .store()
            .describe(&storage::join(set.prefix(), &stored_name));
        let file = set
            .create_file(&file_name, Compression::None, None, 1)
            .with_context(|| format!("cannot create {shown}"))?;
        let (end, file) = self.topic(meta, file)?;
        tracing::debug!("{}: {} records exported", meta.topic, end.records);
        let entry = file
            .finish()
            .with_context(|| format!("cannot finish {shown}"))?;
        // The stored name: `<topic>.kta.age` when encrypted.
        let set_topic = set_topic(meta, &end, entry.path.clone());
        set.add(entry);
        Ok(set_topic)
    }

    /// Writes one topic's archive stream into `out`; returns the END summary and `out`.
    fn topic<W: Write>(&self, meta: &TopicMeta, out: W) -> anyhow::Result<(StreamEnd, W)> {
        let total: i64 = meta
            .ranges
            .iter()
            .map(|r| r.end_offset - r.start_offset)
            .sum();
        let progress = common::progress::items(
            &self.args.global,
            Some(total.max(0) as u64),
            &meta.topic,
            "records",
        );
        let mut writer = ArchiveWriter::new(out, meta).context("cannot write the archive")?;
        let ends = export_topic(
            self.config,
            &meta.topic,
            &meta.ranges,
            &self.options,
            &mut writer,
            &progress,
        )?;
        progress.finish_and_clear();
        let end = StreamEnd {
            chunks: writer.chunks() - 1,
            records: ends.iter().map(|e| e.records).sum(),
            partitions: ends,
        };
        let out = writer.finish(&end).context("cannot write the archive")?;
        Ok((end, out))
    }
}

pub(crate) fn details_of(set: &SetInfo) -> Option<KafkaSetDetails> {
    let manifest = set.manifest()?;
    serde_json::from_value(manifest.details.clone()).ok()
}

fn select_topics(args: &Args, all: &[TopicInfo]) -> anyhow::Result<Vec<TopicInfo>> {
    if let Some(pattern) = &args.topic_regex {
        let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
            .with_context(|| format!("invalid --topic-regex '{pattern}'"))?;
        let internal_ok = pattern.trim_start_matches('^').starts_with("__");
        let mut chosen: Vec<TopicInfo> = all
            .iter()
            .filter(|t| regex.is_match(&t.name) && (internal_ok || !t.name.starts_with("__")))
            .cloned()
            .collect();
        chosen.sort_by(|a, b| a.name.cmp(&b.name));
        if chosen.is_empty() {
            anyhow::bail!(
                "no topic matches --topic-regex '{pattern}' on {} ({} topics exist)",
                args.kafka.bootstrap_servers,
                all.len()
            );
        }
        return Ok(chosen);
    }
    let mut chosen = Vec::new();
    for name in &args.topics {
        let topic = all.iter().find(|t| &t.name == name).with_context(|| {
            format!(
                "topic '{name}' does not exist on {} (check the name, or use --topic-regex)",
                args.kafka.bootstrap_servers
            )
        })?;
        if !chosen.iter().any(|t: &TopicInfo| t.name == topic.name) {
            chosen.push(topic.clone());
        }
    }
    Ok(chosen)
}

/// Describes a topic and takes its cut (watermarks now), before any record is read.
fn topic_meta(
    cluster: &Cluster,
    topic: &TopicInfo,
    previous: Option<&Previous<'_>>,
    groups: Vec<GroupOffsets>,
    max_messages: Option<std::num::NonZeroU64>,
) -> anyhow::Result<TopicMeta> {
    let configs = cluster.configs(&topic.name)?;
    let mut ranges = Vec::new();
    let mut partitions = topic.partitions.clone();
    partitions.sort_unstable();
    for &partition in &partitions {
        let (low, high) = cluster.watermarks(&topic.name, partition)?;
        let (range, note) = plan_partition(
            partition,
            low,
            high,
            previous,
            max_messages.map(|m| m.get()),
        );
        match note {
            Some(Note::NewPartition) => {
                tracing::info!("{}[{partition}]: new since the previous set", topic.name)
            }
            Some(Note::OffsetsWentBack { previous_end }) => tracing::warn!(
                "{}[{partition}]: the high watermark {high} is below the previous set's end {previous_end} (topic recreated or truncated?); exporting it in full",
                topic.name
            ),
            None => {}
        }
        if let Some(gap) = range.gap {
            tracing::warn!(
                "{}[{partition}]: offsets {}..{} were deleted (retention) before this backup could read them; recorded as a gap",
                topic.name,
                gap.from,
                gap.to
            );
        }
        ranges.push(range);
    }
    Ok(TopicMeta {
        topic: topic.name.clone(),
        partitions: partitions.len() as i32,
        replication_factor: topic.replication_factor,
        configs,
        ranges,
        groups,
        incremental_from: previous.map(|p| p.set_id.clone()),
        captured_at: Some(common::timefmt::now()),
        writer: format!("{TOOL} {}", env!("CARGO_PKG_VERSION")),
    })
}

fn set_topic(meta: &TopicMeta, end: &StreamEnd, file: String) -> SetTopic {
    let partitions = meta
        .ranges
        .iter()
        .map(|range| {
            let done = end
                .partitions
                .iter()
                .find(|e| e.partition == range.partition);
            SetPartition {
                partition: range.partition,
                start_offset: range.start_offset,
                end_offset: done.map_or(range.end_offset, |d| d.next_offset),
                records: done.map_or(0, |d| d.records),
                first_offset: done.and_then(|d| d.first_offset),
                last_offset: done.and_then(|d| d.last_offset),
                gap: merge_gaps(range.gap, done.and_then(|d| d.lost)),
            }
        })
        .collect();
    SetTopic {
        topic: meta.topic.clone(),
        file,
        partition_count: meta.partitions,
        replication_factor: meta.replication_factor,
        incremental_from: meta.incremental_from.clone(),
        records: end.records,
        partitions,
        groups: meta.groups.iter().map(|g| g.group.clone()).collect(),
    }
}

/// The gap between the previous set and this cut, and offsets of the cut lost while reading,
/// are contiguous when both exist: one gap.
fn merge_gaps(before: Option<OffsetGap>, lost: Option<OffsetGap>) -> Option<OffsetGap> {
    match (before, lost) {
        (Some(before), Some(lost)) => Some(OffsetGap {
            from: before.from.min(lost.from),
            to: before.to.max(lost.to),
        }),
        (gap, None) | (None, gap) => gap,
    }
}
