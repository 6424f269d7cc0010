//! Where a restore point or a transaction's end is in the WAL archive, found with `pg_waldump`.
//!
//! `--target-name` and `--target-xid` say nothing about a position, so the base backup to
//! restore cannot be told from its manifest: a backup that started after the target never
//! reaches it, and recovery fails at the end of the archive. This module reads the archived
//! segments one at a time (decrypted and decompressed into a temporary directory) with
//! PostgreSQL's `pg_waldump`, newest first, back to a floor (the start of the oldest base
//! backup), and returns the first hit. With several restore points of one name that is the
//! newest of them; recovery itself stops at the first of that name after the restored
//! backup's start, which is the same one unless an older namesake lies after that start.
//!
//! Timelines: recovery follows `recovery_target_timeline = 'latest'`, so the segments
//! searched are the newest timeline's and, through its history file, those of its ancestors
//! up to the point each one was left. A record past that point is on an abandoned branch.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use common::encryption::{self, Identities};
use common::lsn::Lsn;
use common::repo::Repository;
use common::wal::history::{self, MAX_HISTORY_BYTES};
use common::wal::{segment_name, segno_of, ArchivedFile, WalArchive, WalFile};

/// The WAL record that marks a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// `pg_create_restore_point(name)`.
    RestorePoint(&'a str),
    /// The commit or abort of a transaction (PostgreSQL compares 32-bit xids).
    Xid(u32),
}

impl Wanted<'_> {
    fn rmgr(&self) -> &'static str {
        match self {
            Wanted::RestorePoint(_) => "XLOG",
            Wanted::Xid(_) => "Transaction",
        }
    }

    fn matches(&self, record: &Record) -> bool {
        if record.rmgr != self.rmgr() {
            return false;
        }
        match *self {
            Wanted::RestorePoint(name) => record.desc.strip_prefix("RESTORE_POINT ") == Some(name),
            Wanted::Xid(xid) => {
                let word = record.desc.split(' ').next().unwrap_or("");
                match word {
                    "COMMIT" | "ABORT" => record.xid == xid,
                    // COMMIT PREPARED runs in another transaction: the prepared one's xid
                    // leads the description ("COMMIT_PREPARED 740: ...").
                    "COMMIT_PREPARED" | "ABORT_PREPARED" => {
                        record
                            .desc
                            .split(' ')
                            .nth(1)
                            .and_then(|x| x.strip_suffix(':'))
                            .and_then(|x| x.parse::<u32>().ok())
                            == Some(xid)
                    }
                    _ => false,
                }
            }
        }
    }

    /// What is looked for, for messages.
    pub fn describe(&self) -> String {
        match self {
            Wanted::RestorePoint(name) => format!("restore point '{name}'"),
            Wanted::Xid(xid) => format!("the commit or abort of transaction {xid}"),
        }
    }
}

/// Where the wanted record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Start of the record.
    pub lsn: Lsn,
    pub timeline: u32,
    /// The archived file it was read from.
    pub file: String,
}

/// One line of `pg_waldump` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record<'a> {
    rmgr: &'a str,
    xid: u32,
    lsn: Lsn,
    desc: &'a str,
}

/// Parses `rmgr: XLOG  len (rec/tot): 98/ 98, tx: 0, lsn: 0/015166C8, prev 0/01516680,
/// desc: RESTORE_POINT before_drop`; `None` for anything else (errors, statistics).
fn parse_record(line: &str) -> Option<Record<'_>> {
    let rest = line.strip_prefix("rmgr: ")?;
    let rmgr = rest.split_whitespace().next()?;
    let (_, after_tx) = rest.split_once(", tx:")?;
    let (xid, after_xid) = after_tx.split_once(',')?;
    let (_, after_lsn) = after_xid.split_once("lsn: ")?;
    let (lsn, after) = after_lsn.split_once(',')?;
    let (_, desc) = after.split_once(", desc: ")?;
    Some(Record {
        rmgr,
        xid: xid.trim().parse().ok()?,
        lsn: lsn.parse().ok()?,
        desc: desc.trim_end_matches(['\r', '\n']),
    })
}

/// A timeline on the path recovery follows and the WAL range it holds there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    timeline: u32,
    begin: Lsn,
    /// Where the next timeline branched off (`None` for the newest).
    end: Option<Lsn>,
}

impl Span {
    fn holds(&self, lsn: Lsn) -> bool {
        lsn >= self.begin && self.end.is_none_or(|end| lsn < end)
    }
}

/// The spans, newest first, from the newest timeline's history file text (`None` when it has
/// none: timeline 1, or history not archived). Lines are `<parent> <switch LSN> <reason>`.
fn spans(newest: u32, text: Option<&str>, shown: &str) -> anyhow::Result<Vec<Span>> {
    let entries = history::parse(text.unwrap_or("").as_bytes(), shown)?;
    let mut spans = Vec::with_capacity(entries.len() + 1);
    let mut end = None;
    let mut timeline = newest;
    for entry in entries.iter().rev() {
        spans.push(Span {
            timeline,
            begin: entry.switchpoint,
            end,
        });
        end = Some(entry.switchpoint);
        timeline = entry.timeline;
    }
    spans.push(Span {
        timeline,
        begin: Lsn(0),
        end,
    });
    Ok(spans)
}

/// The segments to read, newest first: per span, those from the floor (or the span's
/// begin) to its end; a full segment rather than the `.partial` of the same number.
fn candidates<'f>(
    files: &'f [ArchivedFile],
    spans: &[Span],
    floor: Lsn,
    segment_size: u64,
) -> Vec<(&'f ArchivedFile, Span)> {
    let mut out = Vec::new();
    for span in spans {
        let low = segno_of(floor.max(span.begin), segment_size);
        let high = span.end.map_or(u64::MAX, |end| segno_of(end, segment_size));
        let mut mine: Vec<(u64, bool, &ArchivedFile)> = files
            .iter()
            .filter(|f| f.kind.timeline() == span.timeline)
            .filter_map(|f| {
                let partial = match f.kind {
                    WalFile::Segment { .. } => false,
                    WalFile::Partial { .. } => true,
                    _ => return None,
                };
                let segno = f.kind.segno(segment_size)?;
                (low..=high).contains(&segno).then_some((segno, partial, f))
            })
            .collect();
        // Newest first; a full segment before its partial, which is then skipped.
        mine.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        mine.dedup_by_key(|(segno, _, _)| *segno);
        out.extend(mine.into_iter().map(|(_, _, f)| (f, *span)));
    }
    out
}

/// The stored file, decrypted and decompressed: the same path `wal-archive fetch` takes.
fn decoded<'a>(
    archive: &WalArchive,
    file: &ArchivedFile,
    identities: Option<&'a Identities>,
) -> anyhow::Result<Box<dyn Read + 'a>> {
    let shown = archive.store().describe(&file.key);
    let stored = archive
        .store()
        .open_read(&file.key)
        .with_context(|| format!("cannot read {shown}"))?;
    let plain = encryption::reader(stored, file.is_encrypted(), identities, &shown)?;
    Ok(file.compression.decoder(plain)?)
}

/// The newest timeline in the archive and the text of its history file, if archived.
fn newest_timeline(
    archive: &WalArchive,
    files: &[ArchivedFile],
    identities: Option<&Identities>,
) -> anyhow::Result<(u32, Option<(String, String)>)> {
    let newest = files.iter().map(|f| f.kind.timeline()).max().unwrap_or(1);
    let Some(file) = files
        .iter()
        .find(|f| f.kind == WalFile::History { timeline: newest })
    else {
        return Ok((newest, None));
    };
    let shown = archive.store().describe(&file.key);
    let mut text = String::new();
    decoded(archive, file, identities)?
        .take(MAX_HISTORY_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the timeline history file {shown}"))?;
    Ok((newest, Some((text, shown))))
}

/// How reading the segments went, for the message when nothing is found.
#[derive(Debug, Default)]
pub struct Searched {
    pub segments: usize,
    /// Segments pg_waldump could not read at all, and its first complaint.
    pub unreadable: usize,
    pub complaint: Option<String>,
}

/// Searches the archive for `wanted`, back to `floor`: where it is, or (`Err`) what was
/// read when it is not there.
pub fn locate(
    repo: &Repository,
    wanted: Wanted,
    floor: Lsn,
    segment_size: u64,
) -> anyhow::Result<Result<Located, Searched>> {
    let archive = WalArchive::new(repo);
    let identities = Identities::from_env()?;
    let files = archive
        .list()
        .with_context(|| format!("cannot list the WAL archive {}", archive.describe()))?;
    let (newest, history) = newest_timeline(&archive, &files, identities.as_ref())?;
    let spans = match &history {
        Some((text, shown)) => spans(newest, Some(text), shown)?,
        None => spans(newest, None, "")?,
    };
    let todo = candidates(&files, &spans, floor, segment_size);
    tracing::info!(
        "searching {} archived WAL segment(s) for {}, back to LSN {floor}",
        todo.len(),
        wanted.describe()
    );
    let scratch = tempfile::Builder::new()
        .prefix("pitr-restore-waldump-")
        .tempdir()
        .context("cannot create a temporary directory for pg_waldump")?;
    let mut searched = Searched::default();
    for (file, span) in todo {
        let segno = file.kind.segno(segment_size).expect("a segment");
        // pg_waldump takes the timeline and position from the name: a `.partial` is given
        // its segment's name.
        let name = segment_name(span.timeline, segno, segment_size);
        let path = scratch.path().join(&name);
        copy_decoded(&archive, file, identities.as_ref(), &path)?;
        let dumped = waldump(scratch.path(), &name, wanted.rmgr());
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        let (records, complaint) = dumped?;
        searched.segments += 1;
        // The newest hit of the segment: its last line.
        let hit = records
            .iter()
            .rev()
            .filter_map(|line| parse_record(line))
            .find(|r| wanted.matches(r) && span.holds(r.lsn) && r.lsn >= floor)
            .map(|r| r.lsn);
        if let Some(lsn) = hit {
            return Ok(Ok(Located {
                lsn,
                timeline: span.timeline,
                file: file.name.clone(),
            }));
        }
        if let Some(complaint) = complaint {
            tracing::debug!("pg_waldump on {}: {complaint}", file.name);
            searched.unreadable += 1;
            searched
                .complaint
                .get_or_insert_with(|| format!("{}: {complaint}", file.name));
        }
    }
    Ok(Err(searched))
}

fn copy_decoded(
    archive: &WalArchive,
    file: &ArchivedFile,
    identities: Option<&Identities>,
    path: &Path,
) -> anyhow::Result<()> {
    let shown = archive.store().describe(&file.key);
    let mut reader = decoded(archive, file, identities)?;
    let mut out =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    std::io::copy(&mut reader, &mut out)
        .with_context(|| format!("cannot decode the archived copy {shown}"))?;
    Ok(())
}

/// Runs `pg_waldump --rmgr=<rmgr>` on one segment: its output lines, and its complaint when
/// it failed without printing any record. A failure after records were printed (the end of
/// the WAL in a partial segment, a record continued in a segment not at hand) is normal.
fn waldump(dir: &Path, segment: &str, rmgr: &str) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let program = common::pgbin::program("pg_waldump");
    let out = Command::new(&program)
        .arg(format!("--path={}", dir.display()))
        .arg(format!("--rmgr={rmgr}"))
        .arg(segment)
        .stdin(Stdio::null())
        .output()
        .with_context(|| common::pgbin::missing_hint("pg_waldump"))?;
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let parsed = lines.iter().any(|l| parse_record(l).is_some());
    let complaint = (!out.status.success() && !parsed).then(|| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        format!("{} ({})", first.trim(), out.status)
    });
    Ok((lines, complaint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::stream::Compression;

    const DUMP: &str = "\
rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/01500718, prev 0/015006D0, desc: CHECKPOINT_SHUTDOWN redo 0/1500718; tli 1; prev tli 1; fpw true; xid 0:724; oid 13572; multi 1; offset 0; oldest xid 716 in DB 1; oldest multi 1 in DB 1; oldest/newest commit timestamp xid: 0/0; oldest running xid 0; shutdown
rmgr: XLOG        len (rec/tot):     98/    98, tx:        724, lsn: 0/015165D8, prev 0/01516598, desc: RESTORE_POINT A
rmgr: XLOG        len (rec/tot):     98/    98, tx:          0, lsn: 0/015166C8, prev 0/01516680, desc: RESTORE_POINT two words
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/01516758, prev 0/01516730, desc: SWITCH 
rmgr: Transaction len (rec/tot):     66/    66, tx:        723, lsn: 0/015006D0, prev 0/01500630, desc: COMMIT 2026-12-03 09:11:38.996543 UTC; inval msgs: snapshot 2396
rmgr: Transaction len (rec/tot):     70/    70, tx:        724, lsn: 0/01516680, prev 0/01516640, desc: ABORT 2026-12-03 09:11:39.204477 UTC; rels: base/5/16384; dropped stats: 2/5/16384
rmgr: Transaction len (rec/tot):     34/    34, tx:        725, lsn: 1/01516730, prev 1/015166C8, desc: COMMIT 2026-12-03 09:11:39.205338 UTC
rmgr: Transaction len (rec/tot):     90/    90, tx:          0, lsn: 0/02000110, prev 0/020000D8, desc: COMMIT_PREPARED 740: 2026-12-03 09:11:40.1 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        726, lsn: 0/02000200, prev 0/02000110, desc: PREPARE gid t1: 2026-12-03 09:11:41.1 UTC
pg_waldump: error: error in WAL record at 0/1516758: invalid record length at 0/15167D0: wanted 24, got 0
";

    fn hits(wanted: Wanted) -> Vec<String> {
        DUMP.lines()
            .filter_map(parse_record)
            .filter(|r| wanted.matches(r))
            .map(|r| r.lsn.to_string())
            .collect()
    }

    #[test]
    fn parses_real_pg_waldump_lines() {
        let line = DUMP.lines().nth(1).unwrap();
        assert_eq!(
            parse_record(line),
            Some(Record {
                rmgr: "XLOG",
                xid: 724,
                lsn: "0/015165D8".parse().unwrap(),
                desc: "RESTORE_POINT A",
            })
        );
        assert_eq!(DUMP.lines().filter_map(parse_record).count(), 9);
        assert_eq!(parse_record(DUMP.lines().last().unwrap()), None);
        assert_eq!(parse_record(""), None);
        assert_eq!(parse_record("rmgr: XLOG tx: x"), None);
    }

    #[test]
    fn matches_restore_points_by_whole_name_and_xids_by_commit_or_abort() {
        assert_eq!(hits(Wanted::RestorePoint("A")), ["0/15165D8"]);
        assert_eq!(hits(Wanted::RestorePoint("two words")), ["0/15166C8"]);
        assert!(hits(Wanted::RestorePoint("two")).is_empty());
        assert!(hits(Wanted::RestorePoint("")).is_empty());
        assert_eq!(hits(Wanted::Xid(723)), ["0/15006D0"]);
        // The restore point record carries xid 724 too; only its abort counts.
        assert_eq!(hits(Wanted::Xid(724)), ["0/1516680"]);
        assert_eq!(hits(Wanted::Xid(725)), ["1/1516730"]);
        assert_eq!(hits(Wanted::Xid(740)), ["0/2000110"]);
        assert!(hits(Wanted::Xid(726)).is_empty(), "PREPARE is no end");
        assert!(hits(Wanted::Xid(0)).is_empty());
    }

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    #[test]
    fn history_gives_the_ranges_of_the_ancestors() {
        assert_eq!(
            spans(1, None, "").unwrap(),
            [Span {
                timeline: 1,
                begin: Lsn(0),
                end: None
            }]
        );
        let text =
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        let s = spans(3, Some(text), "wal/00000003.history").unwrap();
        assert_eq!(
            s,
            [
                Span {
                    timeline: 3,
                    begin: lsn("0/5000000"),
                    end: None
                },
                Span {
                    timeline: 2,
                    begin: lsn("0/3000158"),
                    end: Some(lsn("0/5000000"))
                },
                Span {
                    timeline: 1,
                    begin: Lsn(0),
                    end: Some(lsn("0/3000158"))
                },
            ]
        );
        assert!(!s[1].holds(lsn("0/5000000")));
        assert!(s[1].holds(lsn("0/4FFFFFF")));
        let err = spans(2, Some("1\tnope\tx\n"), "wal/00000002.history").unwrap_err();
        assert!(err.to_string().contains("wal/00000002.history"), "{err}");
    }

    fn archived(name: &str) -> ArchivedFile {
        ArchivedFile {
            name: name.to_string(),
            kind: WalFile::parse(name).unwrap(),
            key: format!("wal/{name}.zst"),
            compression: Compression::Zstd,
            size: 1,
        }
    }

    #[test]
    fn candidates_are_newest_first_on_the_followed_timelines_above_the_floor() {
        let files: Vec<ArchivedFile> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000003.partial",
            "000000010000000000000004",
            "00000002.history",
            "000000020000000000000003",
            "000000020000000000000004",
            "000000010000000000000002.00000028.backup",
        ]
        .iter()
        .map(|n| archived(n))
        .collect();
        let size = common::wal::DEFAULT_SEGMENT_SIZE;
        let spans = spans(2, Some("1\t0/3000100\tx\n"), "h").unwrap();
        let names: Vec<&str> = candidates(&files, &spans, lsn("0/2000028"), size)
            .into_iter()
            .map(|(f, _)| f.name.as_str())
            .collect();
        // Timeline 1's segment 4 lies past the switch: an abandoned branch.
        assert_eq!(
            names,
            [
                "000000020000000000000004",
                "000000020000000000000003",
                "000000010000000000000003",
                "000000010000000000000002",
            ]
        );
    }
}
