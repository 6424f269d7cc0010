//! The replay's summary on stdout: a line per partition and a closing line, or one JSON line;
//! with `--list-txids`, the transaction ids below the cut.

use std::collections::BTreeSet;

use common::output::{self, OutputFormat};
use serde::Serialize;

use crate::connector::ConnectorOffsetReport;
use crate::lsn_cut::LsnCutReport;

/// One source partition's outcome.
#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub source_partition: i32,
    /// None when records were re-hashed (--repartition).
    pub target_partition: Option<i32>,
    /// Records the filters select.
    pub selected: u64,
    /// Of those, already in the target from an earlier run (resume).
    pub already_present: u64,
    pub produced: u64,
    /// Source offsets of the first and last selected record.
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    /// The target partition's high watermark the plan expects, and the one found.
    pub expected_high_watermark: Option<i64>,
    pub high_watermark: Option<i64>,
    pub ok: bool,
}

/// A consumer group's translated offsets.
#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// True once committed on the target.
    pub committed: bool,
    pub offsets: Vec<GroupOffsetReport>,
}

#[derive(Debug, Serialize)]
pub struct GroupOffsetReport {
    /// Target partition.
    pub partition: i32,
    pub source_offset: i64,
    pub target_offset: i64,
}

/// The whole replay.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `stdin` or `set ID + ID...`.
    pub source: String,
    pub sets: Vec<String>,
    pub topic: String,
    pub target_topic: String,
    /// The target topic was (or, with --dry-run, would be) created.
    pub created_topic: bool,
    pub dry_run: bool,
    /// Deliveries and watermarks matched the plan.
    pub verified: bool,
    pub records_selected: u64,
    pub records_present: u64,
    pub records_produced: u64,
    pub partitions: Vec<PartitionReport>,
    pub groups: Vec<GroupReport>,
    /// With --until-lsn: what the cut kept and left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsn_cut: Option<LsnCutReport>,
    /// With --connector-offset: the offset record written (or, in a dry run, to be written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_offset: Option<ConnectorOffsetReport>,
}

/// Prints the summary: in text, a line per partition, group, LSN cut and connector offset,
/// then the closing line; in JSON, one summary record.
pub fn print(format: OutputFormat, summary: &Summary) -> anyhow::Result<()> {
    if format == OutputFormat::Text {
        print_partitions(summary)?;
        print_groups(&summary.groups)?;
        if let Some(cut) = &summary.lsn_cut {
            print_lsn_cut(cut)?;
        }
        if let Some(offset) = &summary.connector_offset {
            print_connector_offset(offset)?;
        }
    }
    output::summary(format, summary, || closing_line(summary))
}

fn print_partitions(summary: &Summary) -> anyhow::Result<()> {
    let verb = if summary.dry_run {
        "would produce"
    } else {
        "produced"
    };
    for p in &summary.partitions {
        let target = match p.target_partition {
            Some(tp) => format!("{}[{tp}]", summary.target_topic),
            None => format!("{} (by key)", summary.target_topic),
        };
        let range = match (p.first_offset, p.last_offset) {
            (Some(first), Some(last)) => format!("source offsets {first}..={last}"),
            _ => "no records".to_string(),
        };
        let check = match (p.expected_high_watermark, p.high_watermark) {
            (Some(expected), Some(found)) if expected != found => {
                format!(", MISMATCH: high watermark {found}, expected {expected}")
            }
            _ if !p.ok => ", MISMATCH".to_string(),
            _ => String::new(),
        };
        output::text_line(&format!(
            "partition {} -> {target}: {} selected ({range}), {} already there, {verb} {}{check}",
            p.source_partition, p.selected, p.already_present, p.produced
        ))?;
    }
    Ok(())
}

fn print_groups(groups: &[GroupReport]) -> anyhow::Result<()> {
    for group in groups {
        let offsets: Vec<String> = group
            .offsets
            .iter()
            .map(|o| format!("{}:{}->{}", o.partition, o.source_offset, o.target_offset))
            .collect();
        let verb = if group.committed {
            "restored"
        } else {
            "would restore"
        };
        output::text_line(&format!(
            "group {}: {verb} offsets {}",
            group.group,
            offsets.join(" ")
        ))?;
    }
    Ok(())
}

fn print_lsn_cut(cut: &LsnCutReport) -> anyhow::Result<()> {
    let cut_off = match cut.skipped_cut_off_events {
        0 => String::new(),
        n => format!(", {n} below it of transactions the restore cut off left out"),
    };
    output::text_line(&format!(
        "LSN cut {}: {} records below it, {} at or after it left out{cut_off} (newest replayed {}, newest in the backup {})",
        cut.until_lsn,
        cut.replayed,
        cut.dropped_after_cut,
        cut.max_replayed_lsn.as_deref().unwrap_or("none"),
        cut.backup_newest_lsn.as_deref().unwrap_or("none")
    ))?;
    Ok(())
}

fn print_connector_offset(offset: &ConnectorOffsetReport) -> anyhow::Result<()> {
    let verb = if offset.partition.is_some() {
        "written"
    } else {
        "would be written"
    };
    output::text_line(&format!(
        "connector offset {} = {} {verb} to {}",
        offset.key,
        serde_json::to_string(&offset.value)?,
        offset.topic
    ))?;
    Ok(())
}

/// `--list-txids`: the distinct transaction ids of the events below the cut.
#[derive(Debug, Serialize)]
pub struct TxIdList {
    pub source: String,
    pub topic: String,
    pub txids: BTreeSet<u64>,
    /// The cut's counts (`replayed`: the events below it).
    pub lsn_cut: LsnCutReport,
}

/// Prints the list: in text, one id a line, then a closing line; in JSON, one summary record.
pub fn print_txids(format: OutputFormat, list: &TxIdList) -> anyhow::Result<()> {
    if format == OutputFormat::Text {
        for id in &list.txids {
            output::text_line(&id.to_string())?;
        }
    }
    output::summary(format, list, || {
        format!(
            "{} transaction id(s) among the {} event(s) of {} below LSN {}",
            list.txids.len(),
            list.lsn_cut.replayed,
            list.topic,
            list.lsn_cut.until_lsn
        )
    })
}

/// The text summary's last line.
fn closing_line(summary: &Summary) -> String {
    if summary.dry_run {
        format!(
            "dry run: {} of {} selected records would be produced to {}{}",
            summary.records_produced,
            summary.records_selected,
            summary.target_topic,
            if summary.created_topic {
                " (topic to be created)"
            } else {
                ""
            }
        )
    } else {
        format!(
            "replayed {} records from {} into {} ({} already there): {}",
            summary.records_produced,
            summary.source,
            summary.target_topic,
            summary.records_present,
            if summary.verified {
                "verified"
            } else {
                "VERIFICATION FAILED"
            }
        )
    }
}
