//! `verify` and `list`: is the archive continuous and intact from the oldest base backup on?

use std::collections::BTreeMap;
use std::io::{self, Read};

use common::encryption::{self, Identities};
use common::lsn::Lsn;
use common::output::{self, OutputFormat};
use common::physical::PhysicalDetails;
use common::repo::{Kind, Repository, SetInfo};
use common::storage::Location;
use common::wal::history;
use common::wal::{segno_of, ArchivedFile, WalArchive, WalFile, DEFAULT_SEGMENT_SIZE};
use common::Status;
use serde::Serialize;

use crate::header::SegmentHeader;

#[derive(Debug, Serialize)]
struct Gap {
    timeline: u32,
    /// First missing segment.
    from: String,
    /// Last missing segment.
    to: String,
}

#[derive(Debug, Serialize)]
struct Damaged {
    file: String,
    problem: String,
}

#[derive(Debug, Serialize)]
struct VerifySummary {
    ok: bool,
    files: usize,
    timelines: Vec<u32>,
    /// First segment that must be there (oldest base backup's start), if any base backup.
    required_from: Option<String>,
    newest: Option<String>,
    gaps: Vec<Gap>,
    damaged: Vec<Damaged>,
    /// Encrypted files whose age header was checked but not their content (no identity set).
    encrypted_unchecked: usize,
}

/// Where the archive must start: the oldest complete base backup's first segment.
#[derive(Debug, Clone, Copy)]
struct RequiredStart {
    timeline: u32,
    start: Lsn,
    segment_size: u64,
}

impl RequiredStart {
    fn segno(&self) -> u64 {
        segno_of(self.start, self.segment_size)
    }
}

fn required_start(repo: &Repository) -> anyhow::Result<Option<RequiredStart>> {
    let sets = repo.complete_sets(Kind::Base)?;
    let Some(oldest) = sets.first().and_then(SetInfo::manifest) else {
        return Ok(None);
    };
    let details = PhysicalDetails::from_manifest(oldest)?;
    Ok(Some(RequiredStart {
        timeline: details.timeline,
        start: details.start_lsn,
        segment_size: details.wal_segment_size,
    }))
}

/// The switch point recorded for `timeline` in its history file, if archived.
fn switch_point(
    archive: &WalArchive,
    identities: Option<&Identities>,
    timeline: u32,
) -> Option<Lsn> {
    let (stored, key, compression) = archive.open(&history::file_name(timeline)).ok()??;
    let stored = encryption::reader(
        stored,
        encryption::is_encrypted_name(&key),
        identities,
        &key,
    )
    .ok()?;
    let mut text = Vec::new();
    compression
        .decoder(stored)
        .ok()?
        .take(history::MAX_HISTORY_BYTES)
        .read_to_end(&mut text)
        .ok()?;
    // Unreadable: the file's own check reports it; here the gap check falls back to the
    // first segment present.
    history::switch_point(&text, &archive.store().describe(&key))
        .inspect_err(|e| tracing::warn!("{e}"))
        .ok()?
}

/// What checking one file found.
enum Checked {
    /// A segment with this header.
    Segment(SegmentHeader),
    /// Not a segment (history, backup history): content readable.
    Other,
    /// Encrypted, no identity: only its age header was checked.
    HeaderOnly,
}

/// What is wrong with one archived file, as the report says it.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("unreadable: {0}")]
    Unreadable(io::Error),
    /// The age header or content does not decrypt; the message names the file.
    #[error("{0}")]
    Encryption(io::Error),
    #[error("cannot decompress: {0}")]
    Decompress(io::Error),
    #[error("damaged (decompression or checksum failed): {0}")]
    Damaged(io::Error),
    #[error("does not start with a WAL header")]
    NoHeader,
    /// The header belongs to another segment (or is implausible).
    #[error("{0}")]
    Mismatch(String),
}

fn check_file(
    archive: &WalArchive,
    identities: Option<&Identities>,
    file: &ArchivedFile,
    segment_size: u64,
) -> Result<Checked, Problem> {
    let handle = archive
        .store()
        .open_read(&file.key)
        .map_err(Problem::Unreadable)?;
    let shown = archive.store().describe(&file.key);
    let handle = match (file.is_encrypted(), identities) {
        (false, _) => handle,
        (true, None) => {
            encryption::check_header(handle, &shown).map_err(Problem::Encryption)?;
            return Ok(Checked::HeaderOnly);
        }
        (true, Some(ids)) => Box::new(ids.decrypt(handle, &shown).map_err(Problem::Encryption)?),
    };
    let mut reader = file
        .compression
        .decoder(handle)
        .map_err(Problem::Decompress)?;
    let mut head = Vec::with_capacity(40);
    (&mut reader)
        .take(40)
        .read_to_end(&mut head)
        .map_err(Problem::Decompress)?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(Problem::Damaged)?;
    match file.kind {
        WalFile::Segment { .. } | WalFile::Partial { .. } => {
            let header = SegmentHeader::parse(&head).ok_or(Problem::NoHeader)?;
            let segno = file.kind.segno(segment_size).expect("segment");
            if let Some(problem) = header.mismatch(segno) {
                return Err(Problem::Mismatch(problem));
            }
            Ok(Checked::Segment(header))
        }
        _ => Ok(Checked::Other),
    }
}

pub fn verify(backup_dir: &Location, quick: bool, format: OutputFormat) -> anyhow::Result<Status> {
    let repo = Repository::open(backup_dir)?;
    let archive = WalArchive::new(&repo);
    let files = archive.list()?;
    let required = required_start(&repo)?;
    let segment_size = required.map_or(DEFAULT_SEGMENT_SIZE, |r| r.segment_size);
    let identities = Identities::from_env()?;
    let contents = if quick {
        Contents::default()
    } else {
        check_contents(&archive, identities.as_ref(), &files, segment_size)
    };
    let timelines = segments_by_timeline(&files, segment_size);
    let gaps = find_gaps(&timelines, required, segment_size, |timeline| {
        switch_point(&archive, identities.as_ref(), timeline)
    });
    let summary = VerifySummary {
        ok: gaps.is_empty() && contents.damaged.is_empty(),
        files: files.len(),
        timelines: timelines.keys().copied().collect(),
        required_from: required
            .map(|r| common::wal::segment_name(r.timeline, r.segno(), r.segment_size)),
        newest: files.last().map(|f| f.name.clone()),
        gaps,
        damaged: contents.damaged,
        encrypted_unchecked: contents.encrypted_unchecked,
    };
    report(format, &summary)?;
    Ok(Status::from_passed(summary.ok))
}

/// What reading every file found.
#[derive(Debug, Default)]
struct Contents {
    damaged: Vec<Damaged>,
    encrypted_unchecked: usize,
}

/// Reads every file whole: it must decrypt, decompress, and a segment must carry the header
/// of the segment its name says, of the same cluster as the others.
fn check_contents(
    archive: &WalArchive,
    identities: Option<&Identities>,
    files: &[ArchivedFile],
    segment_size: u64,
) -> Contents {
    let mut contents = Contents::default();
    let mut system_id = None;
    for file in files {
        let problem = match check_file(archive, identities, file, segment_size) {
            Err(problem) => Some(problem.to_string()),
            Ok(Checked::HeaderOnly) => {
                contents.encrypted_unchecked += 1;
                None
            }
            Ok(Checked::Segment(header)) => other_cluster(&mut system_id, &header),
            Ok(Checked::Other) => None,
        };
        if let Some(problem) = problem {
            contents.damaged.push(Damaged {
                file: file.name.clone(),
                problem,
            });
        }
    }
    contents
}

/// The first segment read sets the archive's system identifier; a segment with another one
/// belongs to another cluster.
fn other_cluster(system_id: &mut Option<u64>, header: &SegmentHeader) -> Option<String> {
    match *system_id {
        None => {
            *system_id = Some(header.system_identifier);
            None
        }
        Some(id) if id != header.system_identifier => Some(format!(
            "belongs to another cluster (system identifier {} instead of {id})",
            header.system_identifier
        )),
        Some(_) => None,
    }
}

/// Segment numbers present per timeline, sorted, once each (a .partial counts for its
/// segment).
fn segments_by_timeline(files: &[ArchivedFile], segment_size: u64) -> BTreeMap<u32, Vec<u64>> {
    let mut timelines: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for file in files {
        if let WalFile::Segment { .. } | WalFile::Partial { .. } = file.kind {
            let segno = file.kind.segno(segment_size).expect("segment");
            timelines
                .entry(file.kind.timeline())
                .or_default()
                .push(segno);
        }
    }
    for segnos in timelines.values_mut() {
        segnos.sort_unstable();
        segnos.dedup();
    }
    timelines
}

/// The missing ranges of each timeline, from the segment it must start at to its newest,
/// and the base backup's start segment when its timeline has nothing archived.
fn find_gaps(
    timelines: &BTreeMap<u32, Vec<u64>>,
    required: Option<RequiredStart>,
    segment_size: u64,
    switch_point: impl Fn(u32) -> Option<Lsn>,
) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for (&timeline, segnos) in timelines {
        let first = first_needed(timeline, segnos[0], required, segment_size, &switch_point);
        let last = *segnos.last().expect("non-empty");
        let mut expected = first;
        for &segno in segnos.iter().filter(|&&s| s >= first) {
            if segno > expected {
                gaps.push(gap(timeline, expected, segno - 1, segment_size));
            }
            expected = segno + 1;
        }
        if first > last {
            // Nothing archived on this timeline at or after where it must start.
            gaps.push(gap(timeline, first, first, segment_size));
        }
    }
    if let Some(r) = required {
        if !timelines.contains_key(&r.timeline) {
            gaps.push(gap(r.timeline, r.segno(), r.segno(), r.segment_size));
        }
    }
    gaps
}

/// Where a timeline must start: the base backup's start on its timeline, else the switch
/// point its history file records, else its first archived segment; never before the base
/// backup's start.
fn first_needed(
    timeline: u32,
    first_present: u64,
    required: Option<RequiredStart>,
    segment_size: u64,
    switch_point: &impl Fn(u32) -> Option<Lsn>,
) -> u64 {
    let first = match required {
        Some(r) if r.timeline == timeline => r.segno(),
        _ => switch_point(timeline).map_or(first_present, |lsn| segno_of(lsn, segment_size)),
    };
    required.map_or(first, |r| first.max(r.segno()))
}

/// Logs each gap and damaged file, then prints the summary.
fn report(format: OutputFormat, summary: &VerifySummary) -> anyhow::Result<()> {
    if summary.encrypted_unchecked > 0 {
        tracing::info!(
            "{} encrypted files: age header checked, content not (set {} to decrypt and check them)",
            summary.encrypted_unchecked,
            encryption::IDENTITY_FILE_ENV
        );
    }
    for gap in &summary.gaps {
        tracing::warn!(
            "gap on timeline {}: {} .. {} missing",
            gap.timeline,
            gap.from,
            gap.to
        );
    }
    for d in &summary.damaged {
        tracing::warn!("{}: {}", d.file, d.problem);
    }
    output::summary(format, summary, || {
        format!(
            "{}: {} files, timelines {:?}, {} gaps, {} damaged",
            if summary.ok { "ok" } else { "FAILED" },
            summary.files,
            summary.timelines,
            summary.gaps.len(),
            summary.damaged.len()
        )
    })
}

fn gap(timeline: u32, from: u64, to: u64, size: u64) -> Gap {
    Gap {
        timeline,
        from: common::wal::segment_name(timeline, from, size),
        to: common::wal::segment_name(timeline, to, size),
    }
}

#[derive(Serialize)]
struct Listed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    timeline: u32,
    compression: common::stream::Compression,
    size: u64,
}

pub fn list(backup_dir: &Location, format: OutputFormat) -> anyhow::Result<Status> {
    let files = WalArchive::new(&Repository::open(backup_dir)?).list()?;
    for file in &files {
        match format {
            OutputFormat::Json => output::json_line(&Listed {
                kind: "wal_file",
                name: &file.name,
                timeline: file.kind.timeline(),
                compression: file.compression,
                size: file.size,
            })?,
            OutputFormat::Text => output::text_line(&format!(
                "{}\t{}\t{}",
                file.name, file.compression, file.size
            ))?,
        }
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    output::summary(
        format,
        &serde_json::json!({"files": files.len(), "bytes": total}),
        || format!("{} files, {total} bytes", files.len()),
    )?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = DEFAULT_SEGMENT_SIZE;

    fn required(timeline: u32, segno: u64) -> Option<RequiredStart> {
        Some(RequiredStart {
            timeline,
            start: Lsn(segno * SEG + 40),
            segment_size: SEG,
        })
    }

    fn ranges(gaps: &[Gap]) -> Vec<(u32, String, String)> {
        gaps.iter()
            .map(|g| (g.timeline, g.from.clone(), g.to.clone()))
            .collect()
    }

    fn name(timeline: u32, segno: u64) -> String {
        common::wal::segment_name(timeline, segno, SEG)
    }

    #[test]
    fn gaps_are_found_from_the_base_backups_start() {
        let timelines = BTreeMap::from([(1, vec![3, 4, 7, 9])]);
        let none = |_| None;
        // Before the backup's start (segment 4) nothing is needed.
        assert_eq!(
            ranges(&find_gaps(&timelines, required(1, 4), SEG, none)),
            vec![(1, name(1, 5), name(1, 6)), (1, name(1, 8), name(1, 8))]
        );
        // Without a base backup the archive is checked from its first segment.
        assert_eq!(find_gaps(&timelines, None, SEG, none).len(), 2);
        // A backup starting after everything archived: its start segment is missing.
        assert_eq!(
            ranges(&find_gaps(&timelines, required(1, 12), SEG, none)),
            vec![(1, name(1, 12), name(1, 12))]
        );
        // A backup on a timeline with nothing archived.
        assert_eq!(
            ranges(&find_gaps(&timelines, required(2, 9), SEG, none)),
            vec![(2, name(2, 9), name(2, 9))]
        );
    }

    #[test]
    fn a_later_timeline_starts_at_its_switch_point() {
        let timelines = BTreeMap::from([(1, vec![3, 4, 5]), (2, vec![6, 7])]);
        // Timeline 2 branched in segment 5: segment 5 of timeline 2 is missing.
        let switched = |tli| (tli == 2).then_some(Lsn(5 * SEG + 100));
        assert_eq!(
            ranges(&find_gaps(&timelines, required(1, 3), SEG, switched)),
            vec![(2, name(2, 5), name(2, 5))]
        );
        // Without its history file, timeline 2 is checked from its first segment.
        assert!(find_gaps(&timelines, required(1, 3), SEG, |_| None).is_empty());
    }

    #[test]
    fn a_segment_of_another_cluster_is_named() {
        let header = |system_identifier| SegmentHeader {
            magic: 0xD110,
            timeline: 1,
            page_address: 0,
            system_identifier,
            segment_size: SEG as u32,
            block_size: 8192,
        };
        let mut system_id = None;
        assert_eq!(other_cluster(&mut system_id, &header(7)), None);
        assert_eq!(other_cluster(&mut system_id, &header(7)), None);
        assert_eq!(
            other_cluster(&mut system_id, &header(8)).as_deref(),
            Some("belongs to another cluster (system identifier 8 instead of 7)")
        );
    }
}
