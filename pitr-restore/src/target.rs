//! The recovery target and the base backup that can reach it.

use clap::ValueEnum;
use common::lsn::Lsn;
use common::physical::PhysicalDetails;
use common::repo::{Kind, Repository, SetInfo};
use common::Manifest;
use time::OffsetDateTime;

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

    /// Whether a backup can reach this target: it must have ended before it.
    fn reachable_from(&self, details: &PhysicalDetails) -> bool {
        match self {
            Target::Time(t) => details.stop_time <= *t,
            Target::Lsn(lsn) => details.stop_lsn <= *lsn,
            _ => true,
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
/// complete base backup that ended before the target.
pub fn choose(
    repo: &Repository,
    id: Option<&str>,
    target: &Target,
) -> anyhow::Result<(SetInfo, Manifest, PhysicalDetails)> {
    if let Some(id) = id {
        let (set, manifest) = repo.find(Kind::Base, Some(id))?;
        let details = PhysicalDetails::from_manifest(&manifest)?;
        if !target.reachable_from(&details) {
            anyhow::bail!(
                "base backup {id} ended at {} (LSN {}), after the target {}; choose an older backup or omit --backup-id",
                common::timefmt::rfc3339_string(details.stop_time),
                details.stop_lsn,
                target.describe()
            );
        }
        return Ok((set, manifest, details));
    }
    let sets = repo.complete_sets(Kind::Base)?;
    if sets.is_empty() {
        anyhow::bail!(
            "no complete base backup in {}; take one with pg-base-backup first",
            repo.describe(Kind::Base.name())
        );
    }
    let mut oldest = None;
    for set in sets.into_iter().rev() {
        let manifest = set.manifest.clone().expect("complete set");
        let details = PhysicalDetails::from_manifest(&manifest)?;
        if target.reachable_from(&details) {
            return Ok((set, manifest, details));
        }
        oldest = Some(details);
    }
    let oldest = oldest.expect("at least one set");
    anyhow::bail!(
        "the target {} is earlier than every base backup (the oldest ended at {}, LSN {}); nothing can restore to it",
        target.describe(),
        common::timefmt::rfc3339_string(oldest.stop_time),
        oldest.stop_lsn
    )
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
