//! `restore` on the server the backup came from: recreating what was dropped, the lost
//! window, dry runs, existing slots, --force, advancing.

use crate::support::{lsn, Lab, DECODING_SLOT, FILTERED_PUBLICATION, PGOUTPUT_SLOT, PUBLICATION};

fn saved_position(lab: &Lab, backup: &serde_json::Value, slot: &str) -> String {
    lab.saved_inventory(backup)["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot_name"] == slot)
        .map(|s| s["confirmed_flush_lsn"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn restore_recreates_dropped_slot_and_publication_and_names_the_lost_window() {
    recreates_dropped_slot_and_publication_and_names_the_lost_window(&Lab::with_cdc());
}

/// Backs up `lab` (set up by [`Lab::with_cdc`]), drops a slot and a publication, restores
/// them with `--report-file` and checks the report and the server; returns the backup's
/// summary. Shared with the S3 tests.
pub fn recreates_dropped_slot_and_publication_and_names_the_lost_window(
    lab: &Lab,
) -> serde_json::Value {
    let backup = lab.backup();
    let saved = saved_position(lab, &backup, DECODING_SLOT);
    assert_eq!(saved, lab.confirmed_flush(DECODING_SLOT));

    // Changes after the backup, then the slot and a publication disappear.
    lab.insert_orders(21, 30);
    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{DECODING_SLOT}'); DROP PUBLICATION {FILTERED_PUBLICATION};
         ALTER PUBLICATION {PUBLICATION} SET (publish = 'insert')"
    ));
    let report_dir = test_support::os_user::db_tempdir("report-");
    let report_file = report_dir.path().join("report.json");

    let run = lab.tool(&[
        "restore",
        "--yes",
        "--output",
        "json",
        "--report-file",
        report_file.to_str().unwrap(),
    ]);
    run.assert_code(1);

    let created = lab.confirmed_flush(DECODING_SLOT);
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "created");
    assert_eq!(slot["verdict"], "gap");
    assert_eq!(slot["estimated"], false);
    assert_eq!(slot["saved_lsn"], saved.as_str());
    assert_eq!(slot["slot_lsn"], created.as_str());
    assert_eq!(slot["lost_window"]["from"], saved.as_str());
    assert_eq!(slot["lost_window"]["to"], created.as_str());
    assert_eq!(
        slot["lost_window"]["bytes"].as_u64().unwrap(),
        lsn(&created) - lsn(&saved)
    );
    assert!(run.stderr.contains("WARN"), "{}", run.stderr);
    assert!(run.stderr.contains(DECODING_SLOT), "{}", run.stderr);

    let kept = run.record("slot", "slot_name", PGOUTPUT_SLOT);
    assert_eq!(kept["action"], "kept");
    assert_eq!(kept["verdict"], "continuous");

    assert_eq!(
        run.record("publication", "name", FILTERED_PUBLICATION)["action"],
        "created"
    );
    let existing = run.record("publication", "name", PUBLICATION);
    assert_eq!(existing["action"], "exists");
    assert!(
        existing["message"]
            .as_str()
            .unwrap()
            .contains("publishes insert (saved insert, update, delete, truncate)"),
        "{existing}"
    );
    assert_eq!(
        lab.sql(&format!(
            "SELECT pubdelete FROM pg_publication WHERE pubname = '{PUBLICATION}'"
        )),
        "f",
        "an existing publication is left unchanged"
    );
    // The publication is back with its column list, row filter and operations.
    assert_eq!(
        lab.sql(&format!(
            "SELECT p.pubinsert, p.pubupdate, p.pubdelete, pg_get_expr(r.prqual, r.prrelid),
                    (SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
                     WHERE attrelid = r.prrelid AND attnum = ANY(r.prattrs::int2[]))
             FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid
             WHERE p.pubname = '{FILTERED_PUBLICATION}'"
        )),
        "t|t|f|(total > (100)::numeric)|id,total"
    );

    let summary = run.summary();
    assert_eq!(summary["slots_created"], 1);
    assert_eq!(summary["slots_kept"], 1);
    assert_eq!(summary["publications_created"], 1);
    assert_eq!(summary["needs_attention"], 1);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["dry_run"], false);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["summary"]["needs_attention"], 1);
    assert_eq!(report["slots"].as_array().unwrap().len(), 2);

    // The lost window is real: rows 21..30 never stream, new changes do.
    lab.insert_orders(31, 31);
    let changes = lab.consume_decoding(DECODING_SLOT).join("\n");
    assert!(changes.contains("id[integer]:31"), "{changes}");
    assert!(!changes.contains("id[integer]:25 "), "{changes}");
    backup
}

#[test]
fn dry_run_changes_nothing_and_a_real_run_needs_yes() {
    dry_run_and_a_run_without_yes_change_nothing(&Lab::with_cdc());
}

/// Backs up `lab` (set up by [`Lab::with_cdc`]), drops the test_decoding slot and the
/// filtered publication, and checks that neither `--dry-run` nor a run without `--yes`
/// changes anything; returns the backup's summary. Shared with the S3 tests, which then
/// restore for real.
pub fn dry_run_and_a_run_without_yes_change_nothing(lab: &Lab) -> serde_json::Value {
    let backup = lab.backup();
    lab.insert_orders(21, 25);
    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{DECODING_SLOT}'); DROP PUBLICATION {FILTERED_PUBLICATION}"
    ));

    let run = lab.tool(&["restore", "--dry-run", "--output", "json"]);
    run.assert_code(1);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "would_create");
    assert_eq!(slot["estimated"], true);
    assert_eq!(slot["verdict"], "gap");
    let publication = run.record("publication", "name", FILTERED_PUBLICATION);
    assert_eq!(publication["action"], "would_create");
    assert!(publication["statement"]
        .as_str()
        .unwrap()
        .starts_with("CREATE PUBLICATION"));
    assert_eq!(run.summary()["dry_run"], true);
    assert_eq!(lab.confirmed_flush(DECODING_SLOT), "", "no slot created");
    assert!(!lab.publication_exists(FILTERED_PUBLICATION));

    // Without --yes and without a terminal to ask on, nothing happens either.
    let run = lab.tool(&["restore"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert_eq!(lab.confirmed_flush(DECODING_SLOT), "");
    assert!(!lab.publication_exists(FILTERED_PUBLICATION));
    backup
}

#[test]
fn existing_slot_is_left_alone_without_force_and_replaced_with_it() {
    let lab = Lab::with_cdc();
    lab.backup();
    // Someone recreated the slot with another plugin.
    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{DECODING_SLOT}');
         SELECT pg_create_logical_replication_slot('{DECODING_SLOT}', 'pgoutput')"
    ));
    let before = lab.confirmed_flush(DECODING_SLOT);

    let run = lab.tool(&["restore", "--yes", "--output", "json"]);
    run.assert_code(0);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "kept");
    assert!(slot["note"].as_str().unwrap().contains("--force"), "{slot}");
    assert_eq!(lab.plugin(DECODING_SLOT), "pgoutput", "untouched");
    assert_eq!(lab.confirmed_flush(DECODING_SLOT), before);

    let run = lab.tool(&["restore", "--yes", "--force", "--output", "json"]);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "replaced", "{run:?}");
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
    // The replacement starts later than the saved position: a gap, so exit 1.
    assert_eq!(slot["verdict"], "gap");
    run.assert_code(1);
}

#[test]
fn force_advances_an_existing_slot_that_is_behind_the_saved_position() {
    let lab = Lab::new();
    lab.sql("CREATE TABLE orders (id int PRIMARY KEY, item text, total numeric)");
    lab.sql(&format!(
        "SELECT pg_create_logical_replication_slot('{DECODING_SLOT}', 'test_decoding');
         SELECT pg_copy_logical_replication_slot('{DECODING_SLOT}', 'old_copy')"
    ));
    lab.insert_orders(1, 10);
    assert_eq!(
        lab.consume_decoding(DECODING_SLOT).len(),
        12,
        "BEGIN, 10 rows, COMMIT"
    );
    lab.backup();
    let saved = lab.confirmed_flush(DECODING_SLOT);
    // The slot comes back from an older copy (say a volume snapshot): behind the backup.
    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{DECODING_SLOT}');
         SELECT pg_copy_logical_replication_slot('old_copy', '{DECODING_SLOT}')"
    ));
    assert!(lsn(&lab.confirmed_flush(DECODING_SLOT)) < lsn(&saved));

    let run = lab.tool(&[
        "restore",
        "--yes",
        "--output",
        "json",
        "--slot",
        DECODING_SLOT,
    ]);
    run.assert_code(0);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "kept");
    assert_eq!(slot["verdict"], "replay");
    assert_eq!(slot["advance_to"], saved.as_str());

    let run = lab.tool(&[
        "restore",
        "--yes",
        "--force",
        "--output",
        "json",
        "--slot",
        DECODING_SLOT,
    ]);
    run.assert_code(0);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "advanced");
    assert_eq!(slot["verdict"], "continuous");
    assert_eq!(lab.confirmed_flush(DECODING_SLOT), saved);
    // Rows 1..10 were consumed before the backup: they are not sent again.
    lab.insert_orders(11, 11);
    let changes = lab.consume_decoding(DECODING_SLOT).join("\n");
    assert!(changes.contains("id[integer]:11"), "{changes}");
    assert!(!changes.contains("id[integer]:5 "), "{changes}");
}

#[test]
fn unknown_slot_or_backup_is_a_clear_error() {
    let lab = Lab::with_cdc();
    lab.backup();
    let run = lab.tool(&["restore", "--yes", "--slot", "nope"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("'nope' is not in the backup"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(DECODING_SLOT), "{}", run.stderr);
    let run = lab.tool(&["restore", "--yes", "--backup-id", "19990101T000000Z"]);
    run.assert_code(2);
    assert!(run.stderr.contains("19990101T000000Z"), "{}", run.stderr);
}
