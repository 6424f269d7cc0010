//! `verify` and `list`: is the archive continuous and intact from the oldest base backup on?

use std::collections::BTreeMap;
use std::io::Read;

use common::encryption::{self, Identities};
use common::lsn::Lsn;
use common::output::{self, OutputFormat};
use common::physical::PhysicalDetails;
use common::repo::{Kind, Repository};
use common::storage::Location;
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

/// Where the archive must start: the oldest complete base backup's start segment.
fn required_start(repo: &Repository) -> anyhow::Result<Option<(u32, Lsn, u64)>> {
    let sets = repo.complete_sets(Kind::Base)?;
    let Some(oldest) = sets.first() else {
        return Ok(None);
    };
    let details = PhysicalDetails::from_manifest(oldest.manifest.as_ref().expect("complete"))?;
    Ok(Some((
        details.timeline,
        details.start_lsn,
        details.wal_segment_size,
    )))
}

/// The switch point recorded for `timeline` in its history file, if archived.
fn switch_point(
    archive: &WalArchive,
    identities: Option<&Identities>,
    timeline: u32,
) -> Option<Lsn> {
    let (stored, key, compression) = archive.open(&format!("{timeline:08X}.history")).ok()??;
    let stored = encryption::reader(
        stored,
        encryption::is_encrypted_name(&key),
        identities,
        &key,
    )
    .ok()?;
    let mut text = String::new();
    compression
        .decoder(stored)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    // Lines: "<parent tli>\t<switch LSN>\t<reason>"; the last one leads to this timeline.
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|lsn| lsn.parse().ok())
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

fn check_file(
    archive: &WalArchive,
    identities: Option<&Identities>,
    file: &ArchivedFile,
    segment_size: u64,
) -> Result<Checked, String> {
    let handle = archive
        .store()
        .open_read(&file.key)
        .map_err(|e| format!("unreadable: {e}"))?;
    let shown = archive.store().describe(&file.key);
    let handle = match (file.is_encrypted(), identities) {
        (false, _) => handle,
        (true, None) => {
            encryption::check_header(handle, &shown).map_err(|e| e.to_string())?;
            return Ok(Checked::HeaderOnly);
        }
        (true, Some(ids)) => Box::new(ids.decrypt(handle, &shown).map_err(|e| e.to_string())?),
    };
    let mut reader = file
        .compression
        .decoder(handle)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    let mut head = Vec::with_capacity(40);
    (&mut reader)
        .take(40)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(|e| format!("damaged (decompression or checksum failed): {e}"))?;
    match file.kind {
        WalFile::Segment { .. } | WalFile::Partial { .. } => {
            let header = SegmentHeader::parse(&head).ok_or("does not start with a WAL header")?;
            let segno = file.kind.segno(segment_size).expect("segment");
            if let Some(problem) = header.mismatch(segno) {
                return Err(problem);
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
    let segment_size = required.map_or(DEFAULT_SEGMENT_SIZE, |(_, _, size)| size);
    let identities = Identities::from_env()?;
    let mut damaged = Vec::new();
    let mut system_id = None;
    let mut encrypted_unchecked = 0;
    if !quick {
        for file in &files {
            match check_file(&archive, identities.as_ref(), file, segment_size) {
                Err(problem) => damaged.push(Damaged {
                    file: file.name.clone(),
                    problem,
                }),
                Ok(Checked::HeaderOnly) => encrypted_unchecked += 1,
                Ok(Checked::Segment(header)) => match system_id {
                    None => system_id = Some(header.system_identifier),
                    Some(id) if id != header.system_identifier => damaged.push(Damaged {
                        file: file.name.clone(),
                        problem: format!(
                            "belongs to another cluster (system identifier {} instead of {id})",
                            header.system_identifier
                        ),
                    }),
                    Some(_) => {}
                },
                Ok(Checked::Other) => {}
            }
        }
    }

    // Segment numbers present per timeline (a .partial counts for its segment).
    let mut timelines: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for file in &files {
        if let WalFile::Segment { .. } | WalFile::Partial { .. } = file.kind {
            let segno = file.kind.segno(segment_size).expect("segment");
            timelines
                .entry(file.kind.timeline())
                .or_default()
                .push(segno);
        }
    }
    let mut gaps = Vec::new();
    for (&timeline, segnos) in &mut timelines {
        segnos.sort_unstable();
        segnos.dedup();
        let mut first = segnos[0];
        match required {
            Some((base_tli, start, size)) if base_tli == timeline => first = segno_of(start, size),
            _ => {
                if let Some(switch) = switch_point(&archive, identities.as_ref(), timeline) {
                    first = segno_of(switch, segment_size);
                }
            }
        }
        if let Some((_, start, size)) = required {
            first = first.max(segno_of(start, size));
        }
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
    if let Some((tli, start, size)) = required {
        if !timelines.contains_key(&tli) {
            let segno = segno_of(start, size);
            gaps.push(gap(tli, segno, segno, size));
        }
    }
    let summary = VerifySummary {
        ok: gaps.is_empty() && damaged.is_empty(),
        files: files.len(),
        timelines: timelines.keys().copied().collect(),
        required_from: required
            .map(|(tli, start, size)| common::wal::segment_name(tli, segno_of(start, size), size)),
        newest: files.last().map(|f| f.name.clone()),
        gaps,
        damaged,
        encrypted_unchecked,
    };
    if encrypted_unchecked > 0 {
        tracing::info!(
            "{encrypted_unchecked} encrypted files: age header checked, content not (set {} to decrypt and check them)",
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
    output::summary(format, &summary, || {
        format!(
            "{}: {} files, timelines {:?}, {} gaps, {} damaged",
            if summary.ok { "ok" } else { "FAILED" },
            summary.files,
            summary.timelines,
            summary.gaps.len(),
            summary.damaged.len()
        )
    })?;
    Ok(Status::from_passed(summary.ok))
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
