//! The damaged-input tier for the slot inventory (`slots.json`) reader: damaged copies of
//! inventories written as `backup` writes them: no panic, no hang, memory bounded, errors
//! naming the file.
//!
//! `PROPTEST_CASES=100000 cargo test -p cdc-slot-tool --test it damaged_input` is the full run.

use cdc_slot_tool::Inventory;
use proptest::prelude::*;
use test_support::damage::{self, bounded};

const SHOWN: &str = "/backups/slots/20260101T000000Z/slots.json";

/// Inventories as `cdc-slot-tool backup` writes them (pretty JSON), from a PostgreSQL 15
/// server with logical and physical slots, publications and slot statistics.
fn seeds() -> Vec<Vec<u8>> {
    let full = serde_json::json!({
        "format_version": 1,
        "taken_at": "2026-01-01T00:00:00Z",
        "server": {
            "system_identifier": "7312345678901234567", "timeline": 2,
            "current_lsn": "0/5000A28", "in_recovery": false, "server_version_num": 150018,
            "server_version": "15.18", "wal_level": "logical", "max_replication_slots": 10
        },
        "timeline_history": [
            {"timeline": 1, "switchpoint": "0/3000158", "reason": "no recovery target specified"}
        ],
        "slots": [
            {"slot_name": "debezium", "slot_type": "logical", "plugin": "pgoutput",
             "database": "shop", "temporary": false, "active": true, "active_pid": 4242,
             "two_phase": false, "restart_lsn": "0/4FFF000", "confirmed_flush_lsn": "0/5000A28",
             "wal_status": "reserved", "safe_wal_size": null, "lag_bytes": 0,
             "retained_wal_bytes": 6696},
            {"slot_name": "standby1", "slot_type": "physical", "restart_lsn": "0/5000000"}
        ],
        "publications": [
            {"database": "shop", "name": "orders_pub", "owner": "app", "all_tables": false,
             "publish": ["insert", "update", "delete", "truncate"], "via_partition_root": false,
             "tables": [{"schema": "public", "name": "orders", "columns": ["id", "total"],
                         "row_filter": "(total > 0)"}],
             "schemas": [], "effective_tables": [{"schema": "public", "name": "orders"}]}
        ],
        "slot_stats": [{"slot_name": "debezium", "spill_txns": 0, "total_bytes": 123456}],
        "skipped_databases": [{"database": "legacy", "error": "permission denied"}]
    });
    let minimal = serde_json::json!({
        "format_version": 1, "taken_at": "2026-01-01T00:00:00Z",
        "server": full["server"].clone(), "slots": [], "publications": []
    });
    [full, minimal]
        .iter()
        .map(|v| {
            let inventory: Inventory = serde_json::from_value(v.clone()).unwrap();
            let mut bytes = serde_json::to_vec_pretty(&inventory).unwrap();
            bytes.push(b'\n');
            bytes
        })
        .collect()
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn slots_json(input in damage::damaged(seeds())) {
        let (result, info) = bounded(&input, |b| {
            let mut out = None;
            let info = allocation_counter::measure(|| {
                out = Some(Inventory::parse(&b, SHOWN).map(|i| i.slots.len()).map_err(|e| format!("{e:#}")));
            });
            (out.expect("ran"), info)
        });
        if let Err(e) = &result {
            prop_assert!(e.contains(SHOWN), "error does not name the file: {e}");
        }
        // serde builds the inventory from the text: a bounded multiple of its size.
        prop_assert!(
            info.bytes_max <= (64 << 10) + 32 * input.len() as u64,
            "{info:?} for {} bytes", input.len()
        );
    }
}

#[test]
fn slots_json_of_a_newer_format_is_refused_naming_the_file() {
    let text = String::from_utf8(seeds().remove(1)).unwrap();
    let newer = text.replace("\"format_version\": 1", "\"format_version\": 2");
    let err = format!(
        "{:#}",
        Inventory::parse(newer.as_bytes(), SHOWN).unwrap_err()
    );
    assert!(err.contains(SHOWN) && err.contains("upgrade"), "{err}");
}
