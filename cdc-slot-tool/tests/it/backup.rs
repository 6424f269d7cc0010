//! `backup` records every slot with its positions, the server identity and publications.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use test_support::os_user::db_tempdir;
use test_support::pg::{pg_bin, run_checked, PgCluster, PgOptions};

use crate::support::{
    lsn, run, tool, Lab, DECODING_SLOT, FILTERED_PUBLICATION, PGOUTPUT_SLOT, PUBLICATION,
};

#[test]
fn backup_records_slots_positions_identity_and_publications() {
    let lab = Lab::new();
    let created_at = lsn(&lab.setup_cdc());
    // Both slots consumed changes: their confirmed positions moved past where they started.
    let decoding_confirmed = lab.confirmed_flush(DECODING_SLOT);
    let pgoutput_confirmed = lab.confirmed_flush(PGOUTPUT_SLOT);
    assert!(lsn(&decoding_confirmed) > created_at);
    assert!(lsn(&pgoutput_confirmed) > created_at);
    let system_identifier = lab
        .cluster
        .psql("SELECT system_identifier FROM pg_control_system()");

    let summary = lab.backup();
    assert_eq!(summary["slots"], 2);
    assert_eq!(summary["logical_slots"], 2);
    assert_eq!(summary["publications"], 2);
    assert_eq!(summary["timeline"], 1);
    assert_eq!(summary["system_identifier"], system_identifier.as_str());
    let server_lsn = lsn(summary["current_lsn"].as_str().unwrap());
    assert!(server_lsn >= lsn(&decoding_confirmed));

    let set = Path::new(summary["path"].as_str().unwrap());
    assert!(set.join("manifest.json").exists(), "manifest written");
    let mode = std::fs::metadata(set.join("slots.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(set.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "slots");
    assert_eq!(manifest["details"]["slots"].as_array().unwrap().len(), 2);

    let saved = lab.saved_inventory(&summary);
    assert_eq!(
        saved["server"]["system_identifier"],
        system_identifier.as_str()
    );
    assert_eq!(saved["server"]["timeline"], 1);
    assert_eq!(saved["timeline_history"], serde_json::json!([]));
    let slot = |name: &str| {
        saved["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slot_name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not saved"))
    };
    let decoding = slot(DECODING_SLOT);
    assert_eq!(decoding["plugin"], "test_decoding");
    assert_eq!(decoding["database"], lab.db.as_str());
    assert_eq!(decoding["slot_type"], "logical");
    assert_eq!(decoding["temporary"], false);
    assert_eq!(decoding["two_phase"], false);
    assert_eq!(decoding["active"], false);
    assert_eq!(decoding["wal_status"], "reserved");
    assert_eq!(decoding["confirmed_flush_lsn"], decoding_confirmed.as_str());
    assert_eq!(
        decoding["lag_bytes"].as_u64().unwrap(),
        server_lsn - lsn(&decoding_confirmed)
    );
    assert!(decoding["restart_lsn"].is_string());
    let pgoutput = slot(PGOUTPUT_SLOT);
    assert_eq!(pgoutput["plugin"], "pgoutput");
    assert_eq!(pgoutput["confirmed_flush_lsn"], pgoutput_confirmed.as_str());

    let stats = saved["slot_stats"]
        .as_array()
        .expect("pg_stat_replication_slots");
    assert!(stats.iter().any(|s| s["slot_name"] == DECODING_SLOT));

    let publications = saved["publications"].as_array().unwrap();
    let publication = |name: &str| {
        publications
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not saved"))
    };
    let plain = publication(PUBLICATION);
    assert_eq!(plain["database"], lab.db.as_str());
    assert_eq!(plain["owner"], "postgres");
    assert_eq!(
        plain["publish"],
        serde_json::json!(["insert", "update", "delete", "truncate"])
    );
    assert_eq!(
        plain["effective_tables"],
        serde_json::json!([{"schema": "public", "name": "orders"}])
    );
    let filtered = publication(FILTERED_PUBLICATION);
    assert_eq!(filtered["publish"], serde_json::json!(["insert", "update"]));
    assert_eq!(
        filtered["tables"][0]["columns"],
        serde_json::json!(["id", "total"])
    );
    assert_eq!(
        filtered["tables"][0]["row_filter"],
        "(total > (100)::numeric)"
    );
}

#[test]
fn password_authentication_keeps_the_secret_out_of_argv_logs_and_files() {
    let secret = "s3cret-Pa55word";
    let cluster = PgCluster::start_with(
        PgOptions {
            password: Some(secret.to_string()),
            ..Default::default()
        }
        .setting("wal_level", "logical"),
    );
    let mut psql = cluster.command(pg_bin("psql"));
    psql.env("PGPASSWORD", secret).args([
        "-X",
        "-c",
        "SELECT pg_create_logical_replication_slot('guarded', 'test_decoding')",
    ]);
    run_checked(&mut psql, "psql");
    let backups = db_tempdir("slots-backup-");
    let tool = |password: Option<&str>| {
        let mut cmd = cluster.command(tool());
        cmd.env("BACKUP_DIR", backups.path())
            .env("PGHOST", "127.0.0.1")
            .args(["backup", "--output", "json", "-v"]);
        if let Some(password) = password {
            cmd.env("PGPASSWORD", password);
        }
        run(&mut cmd)
    };
    // scram over TCP: without PGPASSWORD the server refuses, with it the backup works.
    let refused = tool(None);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("cannot connect"),
        "{}",
        refused.stderr
    );
    let done = tool(Some(secret));
    done.assert_code(0);
    assert_eq!(done.summary()["slots"], 1);
    assert!(!done.stdout.contains(secret) && !done.stderr.contains(secret));
    let set = Path::new(done.summary()["path"].as_str().unwrap()).to_path_buf();
    for file in ["slots.json", "manifest.json"] {
        let text = std::fs::read_to_string(set.join(file)).unwrap();
        assert!(!text.contains(secret), "{file} holds the password");
    }
}

#[test]
fn unreachable_server_leaves_no_set_behind() {
    let lab = Lab::new();
    let mut cmd = std::process::Command::new(crate::support::tool());
    test_support::os_user::as_db_user(&mut cmd);
    cmd.env("BACKUP_DIR", lab.backup_dir.path())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", test_support::free_port().to_string())
        .env("PGUSER", "postgres")
        .args(["backup"]);
    let run = crate::support::run(&mut cmd);
    run.assert_code(2);
    assert!(run.stderr.starts_with("cdc-slot-tool: "), "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one-line error: {}",
        run.stderr
    );
    let sets: Vec<_> = std::fs::read_dir(lab.backup_dir.path().join("slots"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(sets.is_empty(), "no set directory: {sets:?}");
}

#[test]
fn retention_keeps_slot_sets_for_14_days_by_default() {
    let lab = Lab::with_cdc();
    let first = lab.backup();
    let set = Path::new(first["path"].as_str().unwrap()).to_path_buf();
    let slots_dir = set.parent().unwrap().to_path_buf();
    // Age copies of the set: one 20 days old, one 10 days old.
    let now = time::OffsetDateTime::now_utc();
    for days in [20, 10] {
        let when = now - time::Duration::days(days);
        let id = format!(
            "{:04}{:02}{:02}T000000Z",
            when.year(),
            u8::from(when.month()),
            when.day()
        );
        let copy = slots_dir.join(&id);
        std::fs::create_dir(&copy).unwrap();
        std::fs::copy(set.join("slots.json"), copy.join("slots.json")).unwrap();
        let mut manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(set.join("manifest.json")).unwrap())
                .unwrap();
        let stamp = when
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        manifest["id"] = id.clone().into();
        manifest["started_at"] = stamp.clone().into();
        manifest["finished_at"] = stamp.into();
        std::fs::write(copy.join("manifest.json"), manifest.to_string()).unwrap();
        test_support::os_user::give_to_db_user(&copy);
    }
    let second = lab.backup();
    let deleted = second["retention_deleted"].as_array().unwrap();
    assert_eq!(deleted.len(), 1, "{second}");
    let remaining: Vec<String> = std::fs::read_dir(&slots_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        remaining.len(),
        3,
        "two fresh sets and the 10-day-old one: {remaining:?}"
    );
    assert!(!remaining.contains(&deleted[0].as_str().unwrap().to_string()));

    // An explicit RETENTION_DAYS=5 removes the 10-day-old set too.
    let mut cmd = lab.cluster.command(tool());
    cmd.env("BACKUP_DIR", lab.backup_dir.path())
        .env("RETENTION_DAYS", "5")
        .args(["backup", "--output", "json"]);
    let third = run(&mut cmd);
    third.assert_code(0);
    assert_eq!(
        third.summary()["retention_deleted"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
