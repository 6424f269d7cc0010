//! The full drill: base backup and WAL archive (pg-base-backup, wal-archive), slot backup,
//! point-in-time restore to a new cluster (pitr-restore), then `cdc-slot-tool restore` on it.
//! The restored server has no slots at all; afterwards they exist again, the report names
//! the window its consumers lost, and new changes stream through the new slots.

use std::process::Command;

use tempfile::TempDir;
use test_support::os_user::{as_db_user, db_tempdir};
use test_support::pg::{archiving_to, DataDirServer, PgCluster};
use test_support::{free_port, tool_bin};

use crate::support::{
    lsn, run, Lab, Repo, DECODING_SLOT, FILTERED_PUBLICATION, PGOUTPUT_SLOT, PUBLICATION,
};

/// A logical-decoding cluster archiving into the repository its slot backups also go to,
/// with a base backup taken before any CDC set-up. The repository is a local directory, or
/// with `s3` a fresh prefix on the S3 test service named after it (PostgreSQL's
/// archive_command gets the credentials from a config file in the lab's local directory).
pub fn archived_lab(s3: Option<&str>) -> Lab {
    let backups = db_tempdir("cdc-drill-repo-");
    let (repo, archive_to, config) = match s3 {
        None => (Repo::Local, backups.path().display().to_string(), None),
        Some(name) => {
            let s3 = test_support::s3::env();
            let config = s3.config_file(backups.path());
            let url = s3.url(name);
            (
                Repo::S3 {
                    url: url.clone(),
                    s3,
                },
                url,
                Some(config),
            )
        }
    };
    let cluster = PgCluster::start_with(
        archiving_to(&archive_to, config.as_deref()).setting("wal_level", "logical"),
    );
    let mut lab = Lab::with_parts(cluster, backups);
    lab.repo = repo;
    let mut cmd = lab.cluster.command(tool_bin("pg-base-backup"));
    cmd.arg("--backup-dir")
        .arg(lab.repo_arg())
        .args(["--output", "json", "--no-retention"]);
    let base = run(lab.apply_s3(&mut cmd));
    base.assert_code(0);
    assert!(base.summary()["stop_lsn"].is_string(), "{base:?}");
    lab
}

/// Restores the lab's base backup plus archived WAL to `target` into a new data directory,
/// started on a free port; the server is stopped on drop.
fn pitr(lab: &Lab, target: &[&str]) -> (TempDir, DataDirServer) {
    let dir = db_tempdir("cdc-drill-restore-");
    let pgdata = dir.path().join("pgdata");
    let port = free_port();
    let mut cmd = Command::new(tool_bin("pitr-restore"));
    cmd.arg("--backup-dir")
        .arg(lab.repo_arg())
        .arg("--pgdata")
        .arg(&pgdata)
        .args(["--output", "json", "--yes", "--timeout", "120s", "--start"])
        .args(["--port", &port.to_string()])
        .arg("--socket-dir")
        .arg(dir.path())
        .args(target);
    let restore = run(lab.apply_s3(as_db_user(&mut cmd)));
    let server = DataDirServer::new(pgdata, port, dir.path().to_path_buf());
    restore.assert_code(0);
    (dir, server)
}

fn restored_slot(server: &DataDirServer, slot: &str) -> String {
    server.psql(&format!(
        "SELECT plugin || ' ' || database || ' ' || confirmed_flush_lsn FROM pg_replication_slots
         WHERE slot_name = '{slot}'"
    ))
}

fn saved_confirmed(lab: &Lab, backup: &serde_json::Value, slot: &str) -> String {
    let saved = lab.saved_inventory(backup);
    let found = saved["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot_name"] == slot)
        .unwrap()["confirmed_flush_lsn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(found, lab.confirmed_flush(slot));
    found
}

#[test]
fn drill_pitr_to_latest_then_restore_slots_names_the_lost_window() {
    pitr_to_latest_then_restore_slots_names_the_lost_window(&archived_lab(None));
}

/// The drill on a lab from [`archived_lab`]: CDC set-up, slot backup, more changes, PITR to
/// the latest point, `restore`, and the checks. Shared with the S3 tests.
pub fn pitr_to_latest_then_restore_slots_names_the_lost_window(lab: &Lab) {
    lab.setup_cdc();
    let backup = lab.backup();
    let saved = saved_confirmed(lab, &backup, DECODING_SLOT);

    // Life goes on after the slot backup: the consumer reads on, a publication is dropped,
    // more changes arrive that nobody consumes, then the disaster.
    lab.insert_orders(21, 30);
    lab.consume_decoding(DECODING_SLOT);
    lab.sql(&format!("DROP PUBLICATION {FILTERED_PUBLICATION}"));
    lab.insert_orders(31, 40);
    lab.cluster.switch_wal_and_wait_archived();

    let (_dir, restored) = pitr(lab, &["--target", "latest"]);
    assert_eq!(
        restored.psql("SELECT count(*) FROM pg_replication_slots"),
        "0",
        "a base backup carries no slots"
    );
    assert_eq!(
        restored.psql_db(&lab.db, "SELECT count(*) FROM orders"),
        "40"
    );

    let report = lab.tool_env(restored.env(), &["restore", "--yes", "--output", "json"]);
    report.assert_code(1);

    // Slots and publications exist again.
    let decoding = restored_slot(&restored, DECODING_SLOT);
    let pgoutput = restored_slot(&restored, PGOUTPUT_SLOT);
    assert!(
        decoding.starts_with(&format!("test_decoding {} ", lab.db)),
        "{decoding}"
    );
    assert!(
        pgoutput.starts_with(&format!("pgoutput {} ", lab.db)),
        "{pgoutput}"
    );
    for publication in [PUBLICATION, FILTERED_PUBLICATION] {
        assert_eq!(
            restored.psql_db(
                &lab.db,
                &format!("SELECT count(*) FROM pg_publication WHERE pubname = '{publication}'")
            ),
            "1"
        );
    }
    assert_eq!(
        report.record("publication", "name", FILTERED_PUBLICATION)["action"],
        "created"
    );
    assert_eq!(
        report.record("publication", "name", PUBLICATION)["action"],
        "exists"
    );

    // The report names the right lost window: from the saved position to the new start.
    let new_start = decoding.rsplit(' ').next().unwrap().to_string();
    let slot = report.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "created");
    assert_eq!(slot["verdict"], "gap", "{slot}");
    assert_eq!(slot["lost_window"]["from"], saved.as_str());
    assert_eq!(slot["lost_window"]["to"], new_start.as_str());
    assert_eq!(
        slot["lost_window"]["bytes"].as_u64().unwrap(),
        lsn(&new_start) - lsn(&saved)
    );
    assert!(slot["orphaned_window"].is_null());
    let summary = report.summary();
    assert_eq!(summary["saved"]["timeline"], 1);
    assert_eq!(summary["server"]["timeline"], 2);
    assert_eq!(
        summary["saved"]["system_identifier"],
        summary["server"]["system_identifier"]
    );
    assert_eq!(summary["slots_created"], 2);
    assert_eq!(summary["needs_attention"], 2);
    assert!(report.stderr.contains("WARN"), "{}", report.stderr);

    // Changes after the restore stream through the new slots; the window does not.
    restored.psql_db(
        &lab.db,
        "INSERT INTO orders VALUES (1000, 'after restore', 5000)",
    );
    let changes = restored.psql_db(
        &lab.db,
        &format!("SELECT data FROM pg_logical_slot_get_changes('{DECODING_SLOT}', NULL, NULL)"),
    );
    assert!(changes.contains("id[integer]:1000"), "{changes}");
    assert!(!changes.contains("id[integer]:35 "), "{changes}");
    let messages: u32 = restored
        .psql_db(
            &lab.db,
            &format!(
                "SELECT count(*) FROM pg_logical_slot_get_binary_changes('{PGOUTPUT_SLOT}',
                 NULL, NULL, 'proto_version', '1', 'publication_names', '{PUBLICATION}')"
            ),
        )
        .parse()
        .unwrap();
    assert!(
        messages >= 3,
        "BEGIN, RELATION/INSERT, COMMIT: got {messages}"
    );

    // Running it again (no --yes needed: nothing to create) finds everything in place and
    // changes nothing.
    let before = restored_slot(&restored, DECODING_SLOT);
    let again = lab.tool_env(restored.env(), &["restore", "--output", "json"]);
    assert_eq!(
        again.record("slot", "slot_name", DECODING_SLOT)["action"],
        "kept"
    );
    assert_eq!(again.summary()["slots_created"], 0);
    assert_eq!(restored_slot(&restored, DECODING_SLOT), before);
}

#[test]
fn drill_pitr_before_the_saved_position_reports_diverged_history() {
    let lab = archived_lab(None);
    lab.setup_cdc();
    let pgoutput_saved = lab.confirmed_flush(PGOUTPUT_SLOT);
    let target = lab.sql("SELECT pg_current_wal_lsn()");
    // The consumer reads changes that the restore to `target` will not have.
    lab.insert_orders(21, 30);
    lab.consume_decoding(DECODING_SLOT);
    let backup = lab.backup();
    let saved = saved_confirmed(&lab, &backup, DECODING_SLOT);
    assert!(lsn(&saved) > lsn(&target));
    lab.cluster.switch_wal_and_wait_archived();

    let (_dir, restored) = pitr(&lab, &["--target-lsn", &target]);
    assert_eq!(
        restored.psql_db(&lab.db, "SELECT count(*) FROM orders"),
        "20",
        "restored to before rows 21..30"
    );
    let history = restored.psql("SELECT pg_read_file('pg_wal/00000002.history')");
    let switchpoint = history
        .lines()
        .find(|l| l.starts_with("1\t"))
        .and_then(|l| l.split('\t').nth(1))
        .unwrap_or_else(|| panic!("no timeline 1 in {history}"))
        .to_string();
    assert!(lsn(&switchpoint) < lsn(&saved));

    let dry = lab.tool_env(
        restored.env(),
        &["restore", "--dry-run", "--output", "json"],
    );
    dry.assert_code(1);
    assert_eq!(
        dry.record("slot", "slot_name", DECODING_SLOT)["verdict"],
        "diverged"
    );
    assert_eq!(
        restored.psql("SELECT count(*) FROM pg_replication_slots"),
        "0"
    );

    let report = lab.tool_env(restored.env(), &["restore", "--yes", "--output", "json"]);
    report.assert_code(1);
    let new_start = restored_slot(&restored, DECODING_SLOT)
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let slot = report.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "created");
    assert_eq!(slot["verdict"], "diverged", "{slot}");
    assert_eq!(slot["switchpoint"], switchpoint.as_str());
    assert_eq!(slot["orphaned_window"]["from"], switchpoint.as_str());
    assert_eq!(slot["orphaned_window"]["to"], saved.as_str());
    assert_eq!(slot["lost_window"]["from"], switchpoint.as_str());
    assert_eq!(slot["lost_window"]["to"], new_start.as_str());
    assert!(
        slot["message"].as_str().unwrap().contains("rewind"),
        "{slot}"
    );

    // The pgoutput consumer had not read past the restore point: only a gap for it.
    let pgoutput = report.record("slot", "slot_name", PGOUTPUT_SLOT);
    assert_eq!(pgoutput["verdict"], "gap", "{pgoutput}");
    assert_eq!(pgoutput["lost_window"]["from"], pgoutput_saved.as_str());
}
