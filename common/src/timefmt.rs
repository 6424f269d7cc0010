//! Timestamps: RFC 3339 in manifests and JSON, compact UTC in backup-set ids.

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Serde for `OffsetDateTime` as RFC 3339.
pub use time::serde::rfc3339;

/// Now, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// RFC 3339 text, e.g. `2026-11-21T02:00:00.5Z`.
pub fn rfc3339_string(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// A timestamp that is not in a form we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// A date and time without an offset: ambiguous, so refused.
    #[error("timestamp '{0}' has no time zone; add one, e.g. '{0}Z' or '{0}+00:00'")]
    NoTimeZone(String),
    #[error(
        "invalid timestamp '{0}': expected RFC 3339 (2026-11-21T02:00:00Z) or PostgreSQL's form (2026-11-21 02:00:00.5+00)"
    )]
    Invalid(String),
}

/// RFC 3339 with a space or `T` between date and time, and PostgreSQL's offsets: `+HH`,
/// `+HHMM` or `+HH:MM`.
const WITH_OFFSET: &[BorrowedFormatItem<'_>] = format_description!(
    "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][optional [[optional [:]][offset_minute]]]"
);
/// The same in UTC, written `Z`.
const UTC: &[BorrowedFormatItem<'_>] = format_description!(
    "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]][first [Z][z]]"
);
/// The same without a time zone: understood, but refused as ambiguous.
const NO_ZONE: &[BorrowedFormatItem<'_>] = format_description!(
    "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
);

/// Parses RFC 3339, or PostgreSQL's `2026-11-21 02:00:00.5+00` style.
pub fn parse_timestamp(text: &str) -> Result<OffsetDateTime, TimestampError> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    if let Ok(t) = OffsetDateTime::parse(text, WITH_OFFSET) {
        return Ok(t);
    }
    if let Ok(t) = PrimitiveDateTime::parse(text, UTC) {
        return Ok(t.assume_utc());
    }
    if PrimitiveDateTime::parse(text, NO_ZONE).is_ok() {
        return Err(TimestampError::NoTimeZone(text.to_string()));
    }
    Err(TimestampError::Invalid(text.to_string()))
}

/// The compact UTC form used in backup-set ids: `20261121T020000Z`.
pub fn id_string(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .expect("formatting a UTC time")
}

/// Parses the time at the start of a backup-set id (`20261121T020000Z`, optional suffix).
pub fn parse_id_time(id: &str) -> Option<OffsetDateTime> {
    let head = id.get(..16)?;
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(head, format)
        .ok()
        .map(|t| t.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_postgres_styles() {
        let a = parse_timestamp("2026-11-21T02:00:00.5Z").unwrap();
        let b = parse_timestamp("2026-11-21 02:00:00.5+00").unwrap();
        let c = parse_timestamp("2026-11-21 03:00:00.5+0100").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(parse_timestamp("2026-11-21 02:00:00").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn every_accepted_form_means_the_same_instant() {
        let want = parse_timestamp("2026-11-21T02:00:00Z").unwrap();
        for text in [
            "2026-11-21 02:00:00Z",
            "2026-11-21 02:00:00+00",
            "2026-11-21T02:00:00+00",
            "2026-11-21 03:00:00+01:00",
            "2026-11-21 03:30:00+0130",
            "2026-11-20 21:00:00-05",
            "  2026-11-21T02:00:00.000000+00:00 ",
        ] {
            assert_eq!(parse_timestamp(text), Ok(want), "{text}");
        }
        let micro = parse_timestamp("2026-11-21 02:00:00.123456+00").unwrap();
        assert_eq!(micro.microsecond(), 123_456);
    }

    #[test]
    fn refusals_say_which_forms_are_accepted() {
        let no_zone = parse_timestamp("2026-11-21 02:00:00").unwrap_err();
        assert_eq!(
            no_zone.to_string(),
            "timestamp '2026-11-21 02:00:00' has no time zone; add one, e.g. '2026-11-21 02:00:00Z' or '2026-11-21 02:00:00+00:00'"
        );
        for bad in [
            "yesterday",
            "2026-11-21",
            "2026-13-01 00:00:00Z",
            "02:00:00+00",
            "",
        ] {
            let err = parse_timestamp(bad).unwrap_err();
            assert_eq!(err, TimestampError::Invalid(bad.to_string()));
            let text = err.to_string();
            assert!(text.contains("RFC 3339 (2026-11-21T02:00:00Z)"), "{text}");
            assert!(text.contains("2026-11-21 02:00:00.5+00"), "{text}");
            assert!(
                !text.contains(&format!("{bad}Z")) || bad.is_empty(),
                "{text}"
            );
        }
    }

    #[test]
    fn id_round_trip() {
        let t = parse_timestamp("2026-11-21T02:03:04Z").unwrap();
        assert_eq!(id_string(t), "20261121T020304Z");
        assert_eq!(parse_id_time("20261121T020304Z-2"), Some(t));
        assert_eq!(parse_id_time("junk"), None);
    }
}
