//! The private part of an encrypted set's manifest. `manifest.json` stays in clear so that
//! `validate-backups`, retention and incremental runs work without a key (ids, times, sizes,
//! checksums, positions, recipients); what tells about the content (table names, row counts,
//! topic configs, slot details) moves into `private.json.age`, an encrypted file of the set
//! listed and checksummed like the others. A tool names the keys it keeps private with
//! [`super::SetWriter::keep_private`]; readers get the whole manifest back with
//! [`super::Repository::reveal`]. Plain sets keep everything in the manifest, as before.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::manifest::Manifest;

/// Name of the private part in a set (stored as `private.json.age`).
pub const PRIVATE_FILE: &str = "private.json";

/// Largest private part read back; a bigger one is damage, not a manifest.
pub(super) const MAX_PRIVATE_BYTES: u64 = 256 << 20;

/// Which top-level keys of the manifest's `source` and `details` are private.
#[derive(Debug, Clone, Default)]
pub(super) struct PrivateKeys {
    pub source: Vec<String>,
    pub details: Vec<String>,
}

/// The keys taken out of a manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct PrivatePart {
    #[serde(default)]
    pub source: Map<String, Value>,
    #[serde(default)]
    pub details: Map<String, Value>,
}

impl PrivateKeys {
    pub fn is_empty(&self) -> bool {
        self.source.is_empty() && self.details.is_empty()
    }

    /// Moves the private keys out of `source` and `details` (objects; anything else has no
    /// keys to move).
    pub fn split(&self, source: &mut Value, details: &mut Value) -> PrivatePart {
        PrivatePart {
            source: take(source, &self.source),
            details: take(details, &self.details),
        }
    }
}

fn take(value: &mut Value, keys: &[String]) -> Map<String, Value> {
    let mut taken = Map::new();
    if let Value::Object(map) = value {
        for key in keys {
            if let Some(v) = map.remove(key) {
                taken.insert(key.clone(), v);
            }
        }
    }
    taken
}

impl PrivatePart {
    /// Puts the private keys back into a manifest read from storage.
    pub fn merge_into(self, manifest: &mut Manifest) {
        give(&mut manifest.source, self.source);
        give(&mut manifest.details, self.details);
    }
}

fn give(value: &mut Value, part: Map<String, Value>) {
    if part.is_empty() {
        return;
    }
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    if let Value::Object(map) = value {
        map.extend(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_then_merge_gives_the_manifest_back() {
        let keys = PrivateKeys {
            source: vec!["database".into()],
            details: vec!["tables".into(), "absent".into()],
        };
        let mut source = json!({"host": "h", "database": "shop"});
        let mut details = json!({"lsn": "0/1", "tables": [{"name": "orders", "rows": 3}]});
        let part = keys.split(&mut source, &mut details);
        assert_eq!(source, json!({"host": "h"}));
        assert_eq!(details, json!({"lsn": "0/1"}));
        assert_eq!(part.details.len(), 1);
        let text = serde_json::to_vec(&part).unwrap();
        let back: PrivatePart = serde_json::from_slice(&text).unwrap();
        let mut manifest: Manifest = serde_json::from_value(json!({
            "format_version": 1, "kind": "logical", "id": "x", "tool": "t", "tool_version": "0",
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:00Z",
            "status": "complete", "source": source, "files": [], "details": details
        }))
        .unwrap();
        back.merge_into(&mut manifest);
        assert_eq!(manifest.source, json!({"host": "h", "database": "shop"}));
        assert_eq!(
            manifest.details,
            json!({"lsn": "0/1", "tables": [{"name": "orders", "rows": 3}]})
        );
    }
}
