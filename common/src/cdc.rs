//! Change events of a CDC connector (Debezium's PostgreSQL connector and the like) as the
//! pipeline cut reads them: where an event's LSN is (Debezium's envelope `source.lsn`, with or
//! without the JsonConverter schema wrapper, or a JSON pointer or a record header the user
//! names), in which forms an LSN comes, where an event's transaction id is (Debezium's
//! `source.txId`, or a pointer or header, [`TxIdField`]), and the envelope's payload.
//! `kafka-replay --until-lsn` cuts topics with it; `validate-backups restore` proves the cut
//! with it.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::lsn::Lsn;

/// Debezium's envelope source block: with the JsonConverter schema wrapper, then without.
pub const ENVELOPE: [&str; 2] = ["/payload/source", "/source"];

/// Text that is an LSN in neither form a change event carries it in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN '{0}': expected PostgreSQL's form (0/16B3748) or a decimal number")]
pub struct ParseEventLsnError(String);

/// Parses an LSN as PostgreSQL prints it (`0/16B3748`) or as a decimal number.
pub fn parse_lsn(text: &str) -> Result<Lsn, ParseEventLsnError> {
    let text = text.trim();
    if let Ok(number) = text.parse::<u64>() {
        return Ok(Lsn(number));
    }
    text.parse::<Lsn>()
        .map_err(|_| ParseEventLsnError(text.to_string()))
}

/// Where a record's LSN is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LsnField {
    /// Debezium's `source.lsn`, with or without the schema wrapper.
    #[default]
    Envelope,
    /// A JSON pointer into the value (`/after/lsn`).
    Pointer(String),
    /// A record header, as text.
    Header(String),
}

/// A field spec that is neither a JSON pointer nor `header:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} field '{text}': expected a JSON pointer into the value ({example}) or header:NAME"
)]
pub struct ParseFieldError {
    what: &'static str,
    text: String,
    example: &'static str,
}

impl FromStr for LsnField {
    type Err = ParseFieldError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix("header:") {
            if !name.is_empty() {
                return Ok(LsnField::Header(name.to_string()));
            }
        } else if text.starts_with('/') {
            return Ok(LsnField::Pointer(text.to_string()));
        }
        Err(ParseFieldError {
            what: "LSN",
            text: text.to_string(),
            example: "/source/lsn",
        })
    }
}

impl fmt::Display for LsnField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LsnField::Envelope => write!(f, "{}/lsn or {}/lsn", ENVELOPE[0], ENVELOPE[1]),
            LsnField::Pointer(pointer) => write!(f, "{pointer}"),
            LsnField::Header(name) => write!(f, "header '{name}'"),
        }
    }
}

/// Why a record has no usable LSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    NotJson,
    Absent,
    NotAnLsn(String),
    /// A transaction id field holding something else than a non-negative integer.
    NotATxId(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::NotJson => f.write_str("the value is not JSON"),
            Missing::Absent => f.write_str("it is missing or null"),
            Missing::NotAnLsn(found) => write!(
                f,
                "it holds {found}, not an LSN (a number, or text like 0/16B3748)"
            ),
            Missing::NotATxId(found) => write!(
                f,
                "it holds {found}, not a transaction id (a non-negative integer)"
            ),
        }
    }
}

impl LsnField {
    /// The LSN of a record from its value or, for a header field, from `header(name)`; with
    /// the value parsed when the LSN came from it.
    pub fn read<'a>(
        &self,
        value: Option<&[u8]>,
        header: impl FnOnce(&str) -> Option<&'a [u8]>,
    ) -> Result<(Lsn, Option<Value>), Missing> {
        match self {
            LsnField::Header(name) => {
                let bytes = header(name).ok_or(Missing::Absent)?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| Missing::NotAnLsn("bytes that are not text".to_string()))?;
                let lsn = parse_lsn(text).map_err(|_| Missing::NotAnLsn(format!("'{text}'")))?;
                Ok((lsn, None))
            }
            LsnField::Envelope | LsnField::Pointer(_) => {
                let bytes = value.ok_or(Missing::Absent)?;
                let value: Value = serde_json::from_slice(bytes).map_err(|_| Missing::NotJson)?;
                let found = match self {
                    LsnField::Pointer(pointer) => value.pointer(pointer),
                    _ => source_field(&value, "lsn"),
                };
                let lsn = lsn_of(found.unwrap_or(&Value::Null))?;
                Ok((lsn, Some(value)))
            }
        }
    }
}

/// Where a record's transaction id is: Debezium's `source.txId` (the top-level transaction's
/// 32-bit xid, or a 64-bit xid8) by default, else a JSON pointer or a header, written as for
/// [`LsnField`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TxIdField {
    /// Debezium's `source.txId`, with or without the schema wrapper.
    #[default]
    Envelope,
    /// A JSON pointer into the value (`/source/xid`).
    Pointer(String),
    /// A record header, as decimal text.
    Header(String),
}

impl FromStr for TxIdField {
    type Err = ParseFieldError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // One syntax for both fields: an LSN field's spec is parsed, then taken over.
        match text.parse::<LsnField>() {
            Ok(LsnField::Pointer(pointer)) => Ok(TxIdField::Pointer(pointer)),
            Ok(LsnField::Header(name)) => Ok(TxIdField::Header(name)),
            _ => Err(ParseFieldError {
                what: "txId",
                text: text.to_string(),
                example: "/source/txId",
            }),
        }
    }
}

impl fmt::Display for TxIdField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxIdField::Envelope => write!(f, "{}/txId or {}/txId", ENVELOPE[0], ENVELOPE[1]),
            TxIdField::Pointer(pointer) => write!(f, "{pointer}"),
            TxIdField::Header(name) => write!(f, "header '{name}'"),
        }
    }
}

impl TxIdField {
    /// The transaction id of a record: from its value (`parsed`, when the caller has parsed
    /// it already, else `value`) or, for a header field, from `header(name)`.
    pub fn read<'a>(
        &self,
        parsed: Option<&Value>,
        value: Option<&[u8]>,
        header: impl FnOnce(&str) -> Option<&'a [u8]>,
    ) -> Result<u64, Missing> {
        let found = match self {
            TxIdField::Header(name) => {
                let bytes = header(name).ok_or(Missing::Absent)?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| Missing::NotATxId("bytes that are not text".to_string()))?;
                Value::String(text.to_string())
            }
            TxIdField::Envelope | TxIdField::Pointer(_) => {
                let owned;
                let value = match parsed {
                    Some(value) => value,
                    None => {
                        let bytes = value.ok_or(Missing::Absent)?;
                        owned =
                            serde_json::from_slice::<Value>(bytes).map_err(|_| Missing::NotJson)?;
                        &owned
                    }
                };
                let found = match self {
                    TxIdField::Pointer(pointer) => value.pointer(pointer),
                    _ => source_field(value, "txId"),
                };
                found.cloned().unwrap_or(Value::Null)
            }
        };
        tx_id_of(&found)
    }
}

/// A transaction id from a JSON number or decimal text.
pub fn tx_id_of(found: &Value) -> Result<u64, Missing> {
    match found {
        Value::Null => Err(Missing::Absent),
        Value::Number(n) => n.as_u64().ok_or_else(|| Missing::NotATxId(n.to_string())),
        Value::String(text) => text
            .trim()
            .parse()
            .map_err(|_| Missing::NotATxId(format!("'{text}'"))),
        other => Err(Missing::NotATxId(other.to_string())),
    }
}

/// A field of Debezium's `source` block, with or without the schema wrapper.
pub fn source_field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    ENVELOPE
        .iter()
        .find_map(|source| value.pointer(&format!("{source}/{name}")))
}

/// An LSN from a JSON number or text.
pub fn lsn_of(found: &Value) -> Result<Lsn, Missing> {
    match found {
        Value::Null => Err(Missing::Absent),
        Value::Number(n) => n
            .as_u64()
            .map(Lsn)
            .ok_or_else(|| Missing::NotAnLsn(n.to_string())),
        Value::String(text) => parse_lsn(text).map_err(|_| Missing::NotAnLsn(format!("'{text}'"))),
        other => Err(Missing::NotAnLsn(other.to_string())),
    }
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

    fn no_header(_: &str) -> Option<&'static [u8]> {
        None
    }

    #[test]
    fn debezium_envelopes_with_and_without_schema() {
        let plain =
            br#"{"before":null,"after":{"id":1},"source":{"lsn":23456789,"txId":7},"op":"c"}"#;
        let (lsn, parsed) = LsnField::Envelope.read(Some(plain), no_header).unwrap();
        assert_eq!(lsn, Lsn(23456789));
        assert_eq!(
            source_field(&parsed.unwrap(), "txId"),
            Some(&Value::from(7))
        );
        let wrapped = br#"{"schema":{"type":"struct"},"payload":{"source":{"lsn":"0/16B3748"}}}"#;
        assert_eq!(
            LsnField::Envelope.read(Some(wrapped), no_header).unwrap().0,
            Lsn(0x16B3748)
        );
        assert_eq!(
            LsnField::Envelope.read(Some(b"{}"), no_header),
            Err(Missing::Absent)
        );
        assert_eq!(
            LsnField::Envelope.read(None, no_header),
            Err(Missing::Absent)
        );
        assert_eq!(
            LsnField::Envelope.read(Some(b"no"), no_header),
            Err(Missing::NotJson)
        );
    }

    #[test]
    fn pointers_headers_and_lsn_forms() {
        let field: LsnField = "/meta/pos".parse().unwrap();
        let read = field.read(Some(br#"{"meta":{"pos":"42"}}"#), no_header);
        assert_eq!(read.unwrap().0, Lsn(42));
        let field: LsnField = "header:lsn".parse().unwrap();
        let read = field.read(None, |name| (name == "lsn").then_some(&b"1/0"[..]));
        assert_eq!(read.unwrap().0, Lsn(1 << 32));
        assert!("lsn".parse::<LsnField>().is_err());
        assert!("header:".parse::<LsnField>().is_err());
        assert_eq!(parse_lsn("0/16B3748"), Ok(Lsn(0x16B3748)));
        assert!(parse_lsn("x").is_err());
        assert!(matches!(
            lsn_of(&Value::Bool(true)),
            Err(Missing::NotAnLsn(_))
        ));
    }

    #[test]
    fn transaction_ids_from_the_envelope_a_pointer_or_a_header() {
        let plain = br#"{"source":{"lsn":1,"txId":725}}"#;
        assert_eq!(
            TxIdField::Envelope.read(None, Some(plain), no_header),
            Ok(725)
        );
        let wrapped: Value =
            serde_json::from_str(r#"{"schema":{},"payload":{"source":{"txId":"4294967296"}}}"#)
                .unwrap();
        let read = TxIdField::Envelope.read(Some(&wrapped), None, no_header);
        assert_eq!(read, Ok(1 << 32));
        let field: TxIdField = "/meta/xid".parse().unwrap();
        let read = field.read(None, Some(br#"{"meta":{"xid":9}}"#), no_header);
        assert_eq!(read, Ok(9));
        let field: TxIdField = "header:xid".parse().unwrap();
        let read = field.read(None, None, |name| (name == "xid").then_some(&b"12"[..]));
        assert_eq!(read, Ok(12));
        assert_eq!(
            TxIdField::Envelope.read(None, Some(b"{}"), no_header),
            Err(Missing::Absent)
        );
        let negative =
            TxIdField::Envelope.read(None, Some(br#"{"source":{"txId":-1}}"#), no_header);
        assert_eq!(negative, Err(Missing::NotATxId("-1".into())));
        assert!("txId"
            .parse::<TxIdField>()
            .unwrap_err()
            .to_string()
            .contains("invalid txId field"));
        assert_eq!(
            TxIdField::Envelope.to_string(),
            "/payload/source/txId or /source/txId"
        );
    }
}
