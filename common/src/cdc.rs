//! Change events of a CDC connector (Debezium's PostgreSQL connector and the like) as the
//! pipeline cut reads them: where an event's LSN is (Debezium's envelope `source.lsn`, with or
//! without the JsonConverter schema wrapper, or a JSON pointer or a record header the user
//! names), and the envelope's payload.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::lsn::Lsn;

/// Where a record's LSN is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LsnField {
    /// Debezium's envelope: `/payload/source/lsn`, else `/source/lsn`.
    #[default]
    Debezium,
    /// A JSON pointer into the record's value (`/after/lsn`).
    Pointer(String),
    /// A record header (`header:NAME`), its value an LSN as text.
    Header(String),
}

impl FromStr for LsnField {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "debezium" {
            Ok(LsnField::Debezium)
        } else if let Some(name) = text.strip_prefix("header:") {
            if name.is_empty() {
                return Err("--lsn-field header: needs a header name (header:NAME)".into());
            }
            Ok(LsnField::Header(name.to_string()))
        } else if text.starts_with('/') {
            Ok(LsnField::Pointer(text.to_string()))
        } else {
            Err(format!(
                "invalid LSN field '{text}': expected a JSON pointer (/source/lsn), header:NAME or debezium"
            ))
        }
    }
}

impl fmt::Display for LsnField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LsnField::Debezium => f.write_str("/payload/source/lsn or /source/lsn"),
            LsnField::Pointer(pointer) => f.write_str(pointer),
            LsnField::Header(name) => write!(f, "header {name}"),
        }
    }
}

impl LsnField {
    /// The LSN of a record, from its value (JSON) or its headers; `None` when the field is
    /// absent or not an LSN.
    pub fn extract<'h>(
        &self,
        value: Option<&[u8]>,
        mut headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Option<Lsn> {
        match self {
            LsnField::Header(name) => {
                let (_, bytes) = headers.find(|(key, _)| key == name)?;
                lsn_of_text(std::str::from_utf8(bytes?).ok()?)
            }
            LsnField::Pointer(pointer) => {
                let json: Value = serde_json::from_slice(value?).ok()?;
                lsn_of_json(json.pointer(pointer)?)
            }
            LsnField::Debezium => {
                let json: Value = serde_json::from_slice(value?).ok()?;
                lsn_of_json(payload(&json).pointer("/source/lsn")?)
            }
        }
    }
}

/// An LSN given as a JSON number (Debezium's form), or as text (`0/16B3748` or decimal).
pub fn lsn_of_json(value: &Value) -> Option<Lsn> {
    match value {
        Value::Number(n) => n.as_u64().map(Lsn),
        Value::String(s) => lsn_of_text(s),
        _ => None,
    }
}

/// `0/16B3748` or a decimal number.
pub fn lsn_of_text(text: &str) -> Option<Lsn> {
    let text = text.trim();
    text.parse::<Lsn>()
        .ok()
        .or_else(|| text.parse::<u64>().ok().map(Lsn))
}

/// The payload of a JsonConverter record written with schemas (`{"schema": ..., "payload":
/// ...}`), else the value itself.
pub fn payload(value: &Value) -> &Value {
    match value {
        Value::Object(map) if map.contains_key("schema") && map.contains_key("payload") => {
            &map["payload"]
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> std::iter::Empty<(&'static str, Option<&'static [u8]>)> {
        std::iter::empty()
    }

    #[test]
    fn debezium_envelopes_with_and_without_schema() {
        let plain = br#"{"before":null,"after":{"id":1},"source":{"lsn":23456789,"txId":7},"op":"c"}"#;
        assert_eq!(LsnField::Debezium.extract(Some(plain), none()), Some(Lsn(23456789)));
        let wrapped = br#"{"schema":{"type":"struct"},"payload":{"source":{"lsn":"0/16B3748"}}}"#;
        assert_eq!(
            LsnField::Debezium.extract(Some(wrapped), none()),
            Some(Lsn(0x16B3748))
        );
        assert_eq!(LsnField::Debezium.extract(Some(b"{}"), none()), None);
        assert_eq!(LsnField::Debezium.extract(None, none()), None, "a tombstone");
        assert_eq!(LsnField::Debezium.extract(Some(b"not json"), none()), None);
    }

    #[test]
    fn pointers_and_headers() {
        let field: LsnField = "/meta/pos".parse().unwrap();
        assert_eq!(
            field.extract(Some(br#"{"meta":{"pos":"42"}}"#), none()),
            Some(Lsn(42))
        );
        let field: LsnField = "header:lsn".parse().unwrap();
        let headers = [("other", Some(&b"x"[..])), ("lsn", Some(&b"1/0"[..]))];
        assert_eq!(
            field.extract(None, headers.iter().copied()),
            Some(Lsn(1 << 32))
        );
        assert!("lsn".parse::<LsnField>().is_err());
        assert!("header:".parse::<LsnField>().is_err());
    }
}
