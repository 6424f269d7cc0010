//! The test CDC connector against a real PostgreSQL 15 slot and the broker: Debezium's
//! events per table in commit order, the Connect offset, and a restart that neither
//! duplicates nor skips a change.

use std::collections::BTreeSet;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;
use test_support::cdc::{
    offset_key, read_events, read_offset, CdcConfig, CdcProducer, Event, OpCounts, PollStop,
    SourceOffset,
};
use test_support::kafka::{bootstrap, client_config};
use test_support::pg::{PgCluster, PgOptions};
use test_support::unique_name;

fn logical_cluster() -> PgCluster {
    PgCluster::start_with(PgOptions::default().setting("wal_level", "logical"))
}

/// Runs `sql` as one transaction in `db` (one query string); returns its xid.
fn tx(pg: &PgCluster, db: &str, sql: &str) -> u64 {
    let out = pg.psql_db(db, &format!("{sql}; SELECT txid_current()"));
    // psql 15 prints every statement's result; the xid comes last.
    out.lines()
        .last()
        .unwrap_or_default()
        .parse()
        .expect("an xid")
}

fn config(pg: &PgCluster, db: &str) -> CdcConfig {
    let mut config = test_support::cdc::config(pg, db, &unique_name("cdc"));
    config.offsets_topic = unique_name("cdc-offsets");
    config
}

fn ops(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.op.as_deref().unwrap_or("tombstone"))
        .collect()
}

fn tx_ids(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(|e| e.tx_id).collect()
}

#[test]
fn events_follow_the_slot_and_a_restart_neither_duplicates_nor_skips() {
    let pg = logical_cluster();
    let db = pg.create_database("shop");
    pg.psql_db(
        &db,
        "CREATE TABLE orders(id int PRIMARY KEY, note text, amount numeric); \
         CREATE TABLE items(order_id int, line int, sku text, PRIMARY KEY (order_id, line))",
    );
    let config = config(&pg, &db);
    let bootstrap = bootstrap();
    let mut producer = CdcProducer::new(config.clone()).unwrap();
    producer.create_slot().unwrap();

    let x1 = tx(&pg, &db, "INSERT INTO orders VALUES (1, 'it''s a test: [x]', 1.50), (2, 'two  spaces', 2), (3, NULL, 3)");
    let x2 = tx(
        &pg,
        &db,
        "UPDATE orders SET note = 'new | note' WHERE id = 1; DELETE FROM orders WHERE id = 3; \
                           INSERT INTO items VALUES (1, 1, 'a'), (1, 2, 'b')",
    );
    let x3 = tx(
        &pg,
        &db,
        "UPDATE items SET line = 3 WHERE order_id = 1 AND line = 2",
    );
    let stats = producer.poll().unwrap();
    assert_eq!(
        (stats.transactions, stats.skipped_transactions, stats.events),
        (3, 0, 9)
    );
    assert_eq!(
        stats.tables["public.orders"],
        OpCounts {
            created: 3,
            updated: 1,
            deleted: 1
        }
    );
    // The key change is a delete of (1,2) and a create of (1,3).
    assert_eq!(
        stats.tables["public.items"],
        OpCounts {
            created: 3,
            updated: 0,
            deleted: 1
        }
    );
    assert_eq!(stats.last_tx_id, Some(x3));
    let commit = stats.last_commit_lsn.unwrap();

    let orders = read_events(&bootstrap, &config.topic("public", "orders")).unwrap();
    assert_eq!(ops(&orders), ["c", "c", "c", "u", "d"]);
    assert_eq!(tx_ids(&orders), [x1, x1, x1, x2, x2]);
    let lsns: Vec<u64> = orders.iter().map(|e| e.lsn.unwrap()).collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
    assert!(lsns.iter().all(|&l| l < commit.0));
    assert_eq!(orders[0].key, Some(json!({"id": 1})));
    assert_eq!(
        orders[0].after(),
        Some(&json!({"id": 1, "note": "it's a test: [x]", "amount": "1.50"}))
    );
    assert_eq!(orders[1].after().unwrap()["note"], "two  spaces");
    assert_eq!(orders[2].after().unwrap()["note"], json!(null));
    // REPLICA IDENTITY DEFAULT: no old row for an update, only the key for a delete.
    assert_eq!(orders[3].before(), None);
    assert_eq!(
        orders[3].after(),
        Some(&json!({"id": 1, "note": "new | note", "amount": "1.50"}))
    );
    assert_eq!(orders[4].key, Some(json!({"id": 3})));
    assert_eq!(orders[4].before(), Some(&json!({"id": 3})));
    assert_eq!(orders[4].after(), None);
    let source = &orders[4].envelope().unwrap()["source"];
    assert_eq!(
        (
            &source["connector"],
            &source["name"],
            &source["db"],
            &source["schema"],
            &source["table"]
        ),
        (
            &json!("postgresql"),
            &json!(config.prefix),
            &json!(db),
            &json!("public"),
            &json!("orders")
        )
    );

    let items = read_events(&bootstrap, &config.topic("public", "items")).unwrap();
    assert_eq!(ops(&items), ["c", "c", "d", "c"]);
    assert_eq!(items[2].key, Some(json!({"order_id": 1, "line": 2})));
    assert_eq!(items[3].key, Some(json!({"order_id": 1, "line": 3})));
    assert_eq!(
        items[3].after(),
        Some(&json!({"order_id": 1, "line": 3, "sku": "b"}))
    );
    assert_eq!(tx_ids(&items), [x2, x2, x3, x3]);

    // The offset: the last commit, stored after the events; the slot stands at it.
    let stored = read_offset(
        &bootstrap,
        &config.offsets_topic,
        &config.connector,
        &config.prefix,
    )
    .unwrap()
    .expect("an offset");
    assert_eq!(stored.value["lsn"], json!(commit.0));
    assert_eq!(stored.value["txId"], json!(x3));
    assert!(stored.value["ts_usec"].as_i64().unwrap() > 1_600_000_000_000_000);
    assert_eq!(producer.slot_position().unwrap(), Some(commit));
    assert_eq!(producer.poll().unwrap().events, 0);

    // A crash after the offset was written but before the slot moved: the restarted
    // connector skips what the offset covers and carries on from there.
    let x4 = tx(&pg, &db, "INSERT INTO orders VALUES (4, 'four', 4)");
    let x5 = tx(&pg, &db, "UPDATE items SET sku = 'z' WHERE line = 1");
    let crashed = producer.poll_until(PollStop::AfterOffset).unwrap();
    assert_eq!((crashed.transactions, crashed.events), (2, 2));
    drop(producer);
    assert_eq!(
        read_events(&bootstrap, &config.topic("public", "orders"))
            .unwrap()
            .len(),
        6
    );
    let x6 = tx(
        &pg,
        &db,
        "DELETE FROM orders WHERE id = 2; INSERT INTO items VALUES (4, 1, 'q')",
    );
    let mut resumed = CdcProducer::resume(config.clone()).unwrap();
    assert_eq!(resumed.offset().map(|o| o.tx_id), Some(x5));
    let stats = resumed.poll().unwrap();
    assert_eq!(
        (stats.skipped_transactions, stats.transactions, stats.events),
        (2, 1, 2)
    );

    let orders = read_events(&bootstrap, &config.topic("public", "orders")).unwrap();
    let items = read_events(&bootstrap, &config.topic("public", "items")).unwrap();
    assert_eq!(tx_ids(&orders), [x1, x1, x1, x2, x2, x4, x6]);
    assert_eq!(tx_ids(&items), [x2, x2, x3, x3, x5, x6]);
    for events in [&orders, &items] {
        let unique: BTreeSet<_> = events
            .iter()
            .map(|e| (e.lsn, e.op.clone(), e.key.as_ref().map(ToString::to_string)))
            .collect();
        assert_eq!(unique.len(), events.len(), "no duplicate");
    }
    let offset = SourceOffset::from_json(
        &read_offset(
            &bootstrap,
            &config.offsets_topic,
            &config.connector,
            &config.prefix,
        )
        .unwrap()
        .unwrap()
        .value,
    )
    .unwrap();
    assert_eq!(
        (offset.tx_id, Some(offset.lsn)),
        (x6, stats.last_commit_lsn)
    );
    assert_eq!(resumed.slot_position().unwrap(), stats.last_commit_lsn);
}

#[test]
fn a_crash_before_the_offset_resends_and_schemas_wrap_the_same_events() {
    let pg = logical_cluster();
    let db = pg.create_database("audit");
    pg.psql_db(
        &db,
        "CREATE TABLE t(id bigint PRIMARY KEY, ok boolean); CREATE TABLE log(msg text)",
    );
    let mut config = config(&pg, &db);
    config.with_schema = true;
    config.tombstones = true;
    // One transaction per pass: the crash comes after the first.
    config.batch_rows = 1;
    let bootstrap = bootstrap();
    let mut producer = CdcProducer::new(config.clone()).unwrap();
    producer.create_slot().unwrap();
    tx(
        &pg,
        &db,
        "INSERT INTO t VALUES (1, true); INSERT INTO log VALUES ('no key')",
    );
    tx(&pg, &db, "DELETE FROM t WHERE id = 1");

    let first = producer.poll_until(PollStop::AfterProduce).unwrap();
    assert_eq!(
        (first.transactions, first.events, first.tombstones),
        (1, 2, 0)
    );
    drop(producer);
    let mut resumed = CdcProducer::resume(config.clone()).unwrap();
    assert_eq!(resumed.offset(), None);
    let again = resumed.poll().unwrap();
    assert_eq!(
        (again.skipped_transactions, again.transactions, again.events),
        (0, 2, 3)
    );
    assert_eq!(again.tombstones, 1);

    // At least once: the first transaction twice, nothing lost; a tombstone follows the delete.
    let events = read_events(&bootstrap, &config.topic("public", "t")).unwrap();
    assert_eq!(ops(&events), ["c", "c", "d", "tombstone"]);
    let topic = config.topic("public", "t");
    let value = events[0].value.as_ref().unwrap();
    assert_eq!(value["schema"]["name"], json!(format!("{topic}.Envelope")));
    assert_eq!(
        events[0].key.as_ref().unwrap()["schema"]["name"],
        json!(format!("{topic}.Key"))
    );
    assert_eq!(events[0].key_fields(), Some(&json!({"id": 1})));
    assert_eq!(events[0].after(), Some(&json!({"id": 1, "ok": true})));
    assert_eq!(
        events[1].value,
        events[0].value.as_ref().map(|v| {
            let mut v = v.clone();
            v["payload"]["ts_ms"] = events[1].envelope().unwrap()["ts_ms"].clone();
            v
        })
    );
    assert_eq!(events[2].before(), Some(&json!({"id": 1})));
    assert_eq!(
        (events[3].key_fields(), &events[3].value),
        (Some(&json!({"id": 1})), &None)
    );
    assert!(events[0].lsn.unwrap() < events[2].lsn.unwrap());
    let log = read_events(&bootstrap, &config.topic("public", "log")).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (&log[0].key, log[0].after()),
        (&None, Some(&json!({"msg": "no key"})))
    );

    // Connect keeps a key in one partition; a copy elsewhere makes the offset ambiguous.
    let stored = read_offset(
        &bootstrap,
        &config.offsets_topic,
        &config.connector,
        &config.prefix,
    )
    .unwrap()
    .unwrap();
    let other = (stored.partition + 1) % config.offsets_partitions;
    let key = offset_key(&config.connector, &config.prefix);
    let stray: BaseProducer = client_config().create().unwrap();
    stray
        .send(
            BaseRecord::to(&config.offsets_topic)
                .partition(other)
                .key(&key)
                .payload("{\"lsn\":1}"),
        )
        .unwrap();
    stray.flush(std::time::Duration::from_secs(30)).unwrap();
    let err = read_offset(
        &bootstrap,
        &config.offsets_topic,
        &config.connector,
        &config.prefix,
    )
    .unwrap_err()
    .to_string();
    let (low, high) = (stored.partition.min(other), stored.partition.max(other));
    assert!(
        err.contains(&format!("partitions {low} and {high}")),
        "{err}"
    );
}
