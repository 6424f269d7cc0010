//! The recovery target and the base backup that can reach it.

use clap::ValueEnum;
use common::lsn::Lsn;
use common::physical::PhysicalDetails;
use common::repo::{Kind, Repository, SetInfo};
use common::Manifest;
use time::OffsetDateTime;

use crate::locate::{self, Wanted};

/// Named targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Named {
    /// Stop as soon as the base backup is consistent.
    Immediate,
    /// Replay all archived WAL.
    Latest,
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Time(OffsetDateTime),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
    Immediate,
    Latest,
}

impl Target {
    /// `postgresql.conf` settings for this target (values unquoted).
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Time(t) => vec![("recovery_target_time", postgres_time(*t))],
            Target::Lsn(lsn) => vec![("recovery_target_lsn", lsn.to_string())],
            Target::Xid(xid) => vec![("recovery_target_xid", xid.to_string())],
            Target::Name(name) => vec![("recovery_target_name", name.clone())],
            Target::Immediate => vec![("recovery_target", "immediate".to_string())],
            Target::Latest => vec![],
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Time(t) => format!("time {}", common::timefmt::rfc3339_string(*t)),
            Target::Lsn(lsn) => format!("lsn {lsn}"),
            Target::Xid(xid) => format!("xid {xid}"),
            Target::Name(name) => format!("restore point '{name}'"),
            Target::Immediate => "immediate".into(),
            Target::Latest => "latest".into(),
        }
    }

    /// Whether a backup can reach this target: it must have ended before it (before the
    /// `located` record, for a restore point or transaction found in the archive).
    fn reachable_from(&self, details: &PhysicalDetails, located: Option<Lsn>) -> bool {
        match self {
            Target::Time(t) => details.stop_time <= *t,
            Target::Lsn(lsn) => details.stop_lsn <= *lsn,
            _ => located.is_none_or(|lsn| details.stop_lsn <= lsn),
        }
    }

    /// The record to find in the archive for targets that name no position.
    fn wanted(&self) -> Option<Wanted<'_>> {
        match self {
            Target::Name(name) => Some(Wanted::RestorePoint(name)),
            // recovery_target_xid is read as a 32-bit xid (an epoch above is dropped).
            Target::Xid(xid) => Some(Wanted::Xid(*xid as u32)),
            _ => None,
        }
    }
}

/// PostgreSQL's own form with a numeric offset: time zone abbreviations such as `Z` are not
/// accepted in recovery_target_time (they are not loaded when the setting is checked).
fn postgres_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Picks the set to restore: the given id (checked against the target), or the newest
/// complete base backup that ended before the target. A restore point or transaction target
/// is first located in the WAL archive, and must be there.
pub fn choose(
    repo: &Repository,
    id: Option<&str>,
    target: &Target,
) -> anyhow::Result<(SetInfo, Manifest, PhysicalDetails)> {
    if let Some(id) = id {
        let (set, manifest) = repo.find(Kind::Base, Some(id))?;
        let details = PhysicalDetails::from_manifest(&manifest)?;
        let located = match target.wanted() {
            Some(_) => {
                let sets = repo.complete_sets(Kind::Base)?;
                let floor =
                    search_floor(&sets).map_or(details.start_lsn, |f| f.min(details.start_lsn));
                locate_target(repo, target, floor, details.wal_segment_size)?
            }
            None => None,
        };
        if !target.reachable_from(&details, located) {
            anyhow::bail!(
                "base backup {id} ended at {} (LSN {}), after the target {}; choose an older backup or omit --backup-id",
                common::timefmt::rfc3339_string(details.stop_time),
                details.stop_lsn,
                describe_located(target, located)
            );
        }
        return Ok((set, manifest, details));
    }
    let sets = repo.complete_sets(Kind::Base)?;
    let Some(newest) = sets.last().and_then(SetInfo::manifest) else {
        anyhow::bail!(
            "no complete base backup in {}; take one with pg-base-backup first",
            repo.describe(Kind::Base.name())
        );
    };
    let located = match (target.wanted(), search_floor(&sets)) {
        (Some(_), Some(floor)) => {
            let size = PhysicalDetails::from_manifest(newest)?.wal_segment_size;
            locate_target(repo, target, floor, size)?
        }
        _ => None,
    };
    let mut oldest = None;
    for set in sets.into_iter().rev() {
        let Some(manifest) = set.manifest().cloned() else {
            continue;
        };
        let details = PhysicalDetails::from_manifest(&manifest)?;
        if target.reachable_from(&details, located) {
            return Ok((set, manifest, details));
        }
        oldest = Some(details);
    }
    let oldest = oldest.expect("at least one set");
    anyhow::bail!(
        "the target {} is earlier than every base backup (the oldest ended at {}, LSN {}); nothing can restore to it",
        describe_located(target, located),
        common::timefmt::rfc3339_string(oldest.stop_time),
        oldest.stop_lsn
    )
}

/// How far back the archive is searched: the start of the oldest base backup (no backup can
/// reach a record before it). Sets whose details do not read are left out here.
fn search_floor(sets: &[SetInfo]) -> Option<Lsn> {
    sets.iter()
        .filter_map(SetInfo::manifest)
        .filter_map(|m| PhysicalDetails::from_manifest(m).ok())
        .map(|d| d.start_lsn)
        .min()
}

/// For a restore point or transaction target: the LSN of its record in the archive (an
/// error when it is not there, as recovery would then never reach it); `None` otherwise.
fn locate_target(
    repo: &Repository,
    target: &Target,
    floor: Lsn,
    segment_size: u64,
) -> anyhow::Result<Option<Lsn>> {
    let Some(wanted) = target.wanted() else {
        return Ok(None);
    };
    let archive = common::wal::WalArchive::new(repo).describe();
    match locate::locate(repo, wanted, floor, segment_size)? {
        Ok(found) => {
            tracing::info!(
                "found {} at LSN {} (timeline {}, WAL file {})",
                wanted.describe(),
                found.lsn,
                found.timeline,
                found.file
            );
            Ok(Some(found.lsn))
        }
        Err(searched) => {
            let unreadable = match &searched.complaint {
                Some(first) => format!(
                    "; pg_waldump could not read {} of {} segment(s), first {first}",
                    searched.unreadable, searched.segments
                ),
                None => String::new(),
            };
            let what = match wanted {
                Wanted::RestorePoint(name) => format!("restore point '{name}' is not"),
                Wanted::Xid(xid) => format!("transaction {xid} has no commit or abort record"),
            };
            anyhow::bail!(
                "{what} in the WAL archive {archive} (searched {} segment(s) back to LSN {floor}{unreadable}); check the target, and that the WAL holding it was archived (pg_switch_wal())",
                searched.segments
            )
        }
    }
}

fn describe_located(target: &Target, located: Option<Lsn>) -> String {
    match located {
        Some(lsn) => format!("{} (LSN {lsn})", target.describe()),
        None => target.describe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_target_uses_a_numeric_offset() {
        let t = common::timefmt::parse_timestamp("2026-11-21T03:04:05.5+01:00").unwrap();
        assert_eq!(postgres_time(t), "2026-11-21 02:04:05.500000+00");
    }
}
