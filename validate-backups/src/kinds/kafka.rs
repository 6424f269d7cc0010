//! Kafka sets: every topic archive decodes with valid chunk checksums and holds exactly the
//! records the manifest promises; `--deep` replays the newest set into a scratch topic.

use std::collections::BTreeMap;

use common::repo::SetInfo;
use common::topic_archive::{ArchiveReader, KafkaSetDetails, SetTopic};
use common::{Kind, Manifest, Repository};

use super::Problem;
use crate::check::{CheckResult, Run, Settings};

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository, sets: &[SetInfo]) {
    const NAME: &str = "kafka.archive";
    run.check(settings, NAME, || {
        super::per_set_content(NAME, Kind::Kafka, sets, settings, repo, |set, manifest| {
            match check_set(repo, settings, set, manifest) {
                Ok((topics, records)) => CheckResult::pass(
                    NAME,
                    format!("{topics} topic archives decode, {records} records as recorded"),
                ),
                Err(problems) => CheckResult::fail(NAME, problems),
            }
        })
    });
    run.check(settings, "kafka.test-replay", || {
        vec![test_replay(settings, repo, sets)]
    });
}

fn check_set(
    repo: &Repository,
    settings: &Settings,
    set: &SetInfo,
    manifest: &Manifest,
) -> Result<(usize, u64), Problem> {
    let details: KafkaSetDetails = serde_json::from_value(manifest.details.clone())
        .map_err(|e| format!("unreadable Kafka details in the manifest: {e}"))?;
    if details.topics.is_empty() {
        return Err("the manifest lists no topics".into());
    }
    let mut problems = Vec::new();
    let mut total = 0;
    for topic in &details.topics {
        match check_topic(repo, settings, set, manifest, topic) {
            Ok(n) => total += n,
            Err(p) => problems.push(format!("{}: {p}", topic.file)),
        }
    }
    if problems.is_empty() {
        Ok((details.topics.len(), total))
    } else {
        Err(Problem::joined(&problems, "; "))
    }
}

/// Decodes one archive completely; returns its record count.
pub fn check_topic(
    repo: &Repository,
    settings: &Settings,
    set: &SetInfo,
    manifest: &Manifest,
    topic: &SetTopic,
) -> Result<u64, Problem> {
    let decoded = super::open_plain(repo, settings, set, manifest, &topic.file)?;
    let mut reader = ArchiveReader::open(decoded).map_err(|e| e.to_string())?;
    if reader.meta().topic != topic.topic {
        return Err(format!(
            "holds topic '{}', the manifest says '{}'",
            reader.meta().topic,
            topic.topic
        )
        .into());
    }
    let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
    while let Some(chunk) = reader.next_records().map_err(|e| e.to_string())? {
        *per_partition.entry(chunk.partition()).or_default() += u64::from(chunk.len());
    }
    let counted: u64 = per_partition.values().sum();
    let end = reader.end().ok_or("no END chunk")?;
    let mut problems = Vec::new();
    if end.records != counted {
        problems.push(format!("END says {} records, {counted} read", end.records));
    }
    if topic.records != counted {
        problems.push(format!(
            "{counted} records read, the manifest says {}",
            topic.records
        ));
    }
    for p in &topic.partitions {
        let got = per_partition.get(&p.partition).copied().unwrap_or(0);
        if got != p.records {
            problems.push(format!(
                "partition {}: {got} records read, the manifest says {}",
                p.partition, p.records
            ));
        }
    }
    if problems.is_empty() {
        Ok(counted)
    } else {
        Err(Problem::joined(&problems, ", "))
    }
}

/// Replays each topic of the newest set into a scratch topic with kafka-replay, compares what
/// arrived with the manifest, and deletes the scratch topics.
fn test_replay(settings: &Settings, repo: &Repository, sets: &[SetInfo]) -> CheckResult {
    const NAME: &str = "kafka.test-replay";
    let Some((set, manifest)) = super::complete(sets).pop() else {
        return CheckResult::skip(NAME, "no complete Kafka sets").on("kafka");
    };
    if let Some(skip) = super::sealed_skip(NAME, settings, manifest) {
        return skip.on(&set.id);
    }
    let Some((servers, props)) = &settings.kafka else {
        return CheckResult::skip(
            NAME,
            "needs a Kafka broker to replay into (--bootstrap-servers/KAFKA_BOOTSTRAP_SERVERS)",
        )
        .on(&set.id);
    };
    let manifest = match repo.reveal(set, manifest, settings.identities.as_deref()) {
        Ok(whole) => whole,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")).on(&set.id),
    };
    let details: KafkaSetDetails = match serde_json::from_value(manifest.details.clone()) {
        Ok(d) => d,
        Err(e) => {
            return CheckResult::fail(NAME, format!("unreadable Kafka details: {e}")).on(&set.id)
        }
    };
    let config = crate::broker::config(servers, props);
    let mut problems = Vec::new();
    let mut replayed = 0u64;
    for topic in &details.topics {
        let scratch = format!("validate-backups-{}-{}", std::process::id(), topic.topic);
        let result = replay_one(settings, servers, props, &set.id, topic, &scratch);
        let cleanup =
            crate::broker::block_on(crate::broker::delete_topic(&config, &scratch)).and_then(|r| r);
        match result {
            Ok(n) => replayed += n,
            Err(e) => problems.push(format!("{}: {e:#}", topic.topic)),
        }
        if let Err(e) = cleanup {
            problems.push(format!("scratch topic {scratch} not deleted: {e:#}"));
        }
    }
    CheckResult::from_problems(
        NAME,
        format!(
            "{} topics replayed into scratch topics, {replayed} records verified",
            details.topics.len()
        ),
        &problems,
    )
    .on(&set.id)
}

fn replay_one(
    settings: &Settings,
    servers: &str,
    props: &[(String, String)],
    id: &str,
    topic: &SetTopic,
    scratch: &str,
) -> anyhow::Result<u64> {
    let mut cmd = std::process::Command::new(crate::tools::program(
        "kafka-replay",
        settings.bin_dir.as_deref(),
    ));
    cmd.arg("--backup-dir")
        .arg(crate::tools::backup_dir_arg(&settings.backup_dir)?)
        .args([
            "--backup-id",
            id,
            "--topic",
            &topic.topic,
            "--target-topic",
            scratch,
        ])
        .args(["--bootstrap-servers", servers, "--output", "json", "-q"]);
    for (k, v) in props {
        cmd.arg("-X").arg(format!("{k}={v}"));
    }
    let run = crate::tools::checked(&mut cmd, "kafka-replay")?;
    let summary = run
        .summary()
        .ok_or_else(|| anyhow::anyhow!("kafka-replay printed no summary"))?;
    if summary["verified"] != true {
        anyhow::bail!("kafka-replay could not verify the deliveries");
    }
    let selected = summary["records_selected"].as_u64().unwrap_or(0);
    if topic.incremental_from.is_none() && selected != topic.records {
        anyhow::bail!(
            "replayed {selected} records, the manifest holds {}",
            topic.records
        );
    }
    let config = crate::broker::config(servers, props);
    let present = crate::broker::topic_records(&config, scratch)?.unwrap_or(0);
    if present != selected {
        anyhow::bail!("the scratch topic holds {present} records, {selected} were replayed");
    }
    Ok(present)
}
