//! Timestamps: RFC 3339 in manifests and JSON, compact UTC in backup-set ids.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

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

/// Parses RFC 3339, or PostgreSQL's `2026-11-21 02:00:00.5+00` style.
pub fn parse_timestamp(text: &str) -> anyhow::Result<OffsetDateTime> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    // PostgreSQL output: space separator, optional fraction, offset as +HH or +HH:MM.
    let mut normal = text.replacen(' ', "T", 1);
    if let Some(pos) = normal.rfind(['+', '-']).filter(|&p| p > 10) {
        let offset = &normal[pos + 1..];
        if offset.len() == 2 {
            normal.push_str(":00");
        } else if offset.len() == 4 && !offset.contains(':') {
            normal.insert(pos + 3, ':');
        }
    } else if !normal.ends_with('Z') {
        anyhow::bail!(
            "timestamp '{text}' has no time zone; add one, e.g. '{text}Z' or '{text}+00:00'"
        );
    }
    OffsetDateTime::parse(&normal, &Rfc3339).map_err(|_| {
        anyhow::anyhow!("invalid timestamp '{text}': expected RFC 3339, e.g. 2026-11-21T02:00:00Z")
    })
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
    fn id_round_trip() {
        let t = parse_timestamp("2026-11-21T02:03:04Z").unwrap();
        assert_eq!(id_string(t), "20261121T020304Z");
        assert_eq!(parse_id_time("20261121T020304Z-2"), Some(t));
        assert_eq!(parse_id_time("junk"), None);
    }
}
