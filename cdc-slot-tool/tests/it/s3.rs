//! The repository on S3 (the SeaweedFS test service): slot backups go up as objects, restore
//! reads them back and recreates what was dropped (also after a point-in-time restore from
//! the same bucket), bad credentials fail cleanly, and `status`/`heartbeat` never touch the
//! repository.

use std::process::Command;

use serde_json::Value;
use test_support::os_user::as_db_user;

use crate::support::{
    run, tool, Lab, Repo, DECODING_SLOT, FILTERED_PUBLICATION, PGOUTPUT_SLOT, PUBLICATION,
};
use crate::{drill, restore};

/// The S3 URL and service of a lab made with [`Lab::on_s3`].
fn s3_of(lab: &Lab) -> (&str, &test_support::s3::S3Env) {
    match &lab.repo {
        Repo::S3 { url, s3 } => (url, s3),
        Repo::Local => panic!("the lab is not on S3"),
    }
}

#[test]
fn slot_backup_goes_to_s3_and_restore_recreates_from_it_with_a_local_report() {
    let lab = Lab::with_cdc().on_s3("cdc-slots");
    // The same checks as with a local repository (the report file is a local path).
    let backup = restore::recreates_dropped_slot_and_publication_and_names_the_lost_window(&lab);

    let (url, s3) = s3_of(&lab);
    let id = backup["id"].as_str().unwrap();
    assert_eq!(backup["path"], format!("{url}/slots/{id}").as_str());
    let keys = s3.keys(url);
    for file in ["slots.json", "manifest.json"] {
        assert!(
            keys.contains(&format!("slots/{id}/{file}")),
            "{file} in {keys:?}"
        );
    }
    assert!(
        !keys.iter().any(|k| k.ends_with("/.started")),
        "the set's start marker is gone once complete: {keys:?}"
    );
    let manifest: Value = serde_json::from_slice(&lab.set_file(&backup, "manifest.json")).unwrap();
    assert_eq!(manifest["kind"], "slots");
    assert_eq!(manifest["id"], id);
    let entry = &manifest["files"][0];
    assert_eq!(entry["path"], "slots.json");
    assert_eq!(
        entry["size"].as_u64().unwrap(),
        lab.set_file(&backup, "slots.json").len() as u64
    );
    assert_eq!(
        lab.saved_inventory(&backup)["slots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        std::fs::read_dir(lab.backup_dir.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing written to the local directory"
    );
}

#[test]
fn dry_run_then_yes_from_s3_bring_back_every_slot_and_publication() {
    let lab = Lab::with_cdc().on_s3("cdc-dry");
    // Dry run and a run without --yes change nothing (as with a local repository)...
    let backup = restore::dry_run_and_a_run_without_yes_change_nothing(&lab);
    // ...then the rest goes too: the server has no slot and no publication left.
    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{PGOUTPUT_SLOT}'); DROP PUBLICATION {PUBLICATION}"
    ));
    assert_eq!(
        lab.cluster
            .psql("SELECT count(*) FROM pg_replication_slots"),
        "0"
    );

    let dry = lab.tool(&["restore", "--dry-run", "--output", "json"]);
    dry.assert_code(1);
    assert_eq!(dry.summary()["slots_created"], 2);
    assert_eq!(dry.summary()["publications_created"], 2);
    assert_eq!(
        lab.cluster
            .psql("SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert!(!lab.publication_exists(PUBLICATION));

    let id = backup["id"].as_str().unwrap();
    let run = lab.tool(&["restore", "--yes", "--backup-id", id, "--output", "json"]);
    run.assert_code(1);
    let summary = run.summary();
    assert_eq!(summary["backup_id"], id);
    assert_eq!(summary["slots_created"], 2);
    assert_eq!(summary["publications_created"], 2);
    assert_eq!(summary["failed"], 0);
    for slot in [DECODING_SLOT, PGOUTPUT_SLOT] {
        assert_eq!(run.record("slot", "slot_name", slot)["action"], "created");
    }
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
    assert_eq!(lab.plugin(PGOUTPUT_SLOT), "pgoutput");
    for publication in [PUBLICATION, FILTERED_PUBLICATION] {
        assert!(lab.publication_exists(publication), "{publication}");
    }
    // New changes stream through the recreated slots.
    lab.insert_orders(100, 100);
    let changes = lab.consume_decoding(DECODING_SLOT).join("\n");
    assert!(changes.contains("id[integer]:100"), "{changes}");
    assert!(lab.consume_pgoutput(PGOUTPUT_SLOT) >= 3);

    // status and heartbeat read no repository: BACKUP_DIR on S3 changes nothing for them.
    lab.tool(&["status", "--output", "json"]).assert_code(0);
    let beat = lab.tool(&["heartbeat", "--output", "json"]);
    beat.assert_code(0);
    assert_eq!(beat.summary()["databases"], 1);

    // A damaged object is found before anything is restored.
    let (url, s3) = s3_of(&lab);
    s3.store(url)
        .put(&format!("slots/{id}/slots.json"), b"{}\n")
        .unwrap();
    let damaged = lab.tool(&["restore", "--dry-run"]);
    damaged.assert_code(2);
    let line = damaged.error_line("cdc-slot-tool");
    assert!(
        line.contains(&format!("slots set {id} is damaged")),
        "{line}"
    );
}

/// Runs the tool on `lab`'s cluster and S3 repository `url` with `vars` over the service's
/// credentials.
fn tool_with(lab: &Lab, url: &str, vars: &[(&str, &str)], args: &[&str]) -> crate::support::Run {
    let (_, s3) = s3_of(lab);
    let mut cmd = Command::new(tool());
    as_db_user(&mut cmd);
    cmd.envs(lab.cluster.env())
        .env("BACKUP_DIR", url)
        .env_remove("RUST_LOG");
    s3.apply(&mut cmd);
    cmd.envs(vars.iter().copied()).args(args);
    run(&mut cmd)
}

#[test]
fn wrong_secret_or_missing_bucket_fails_in_one_line_without_the_secret() {
    let lab = Lab::with_cdc().on_s3("cdc-creds");
    let backup = lab.backup();
    let (url, s3) = s3_of(&lab);
    let keys = s3.keys(url);
    let wrong = "WrongSecretKey0123456789abcdefWRONG";
    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{DECODING_SLOT}')"
    ));

    for args in [
        &["backup"][..],
        &["restore", "--dry-run"],
        &["restore", "--yes"],
    ] {
        let run = tool_with(&lab, url, &[("AWS_SECRET_ACCESS_KEY", wrong)], args);
        run.assert_code(2);
        let line = run.error_line("cdc-slot-tool");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        for secret in [wrong, s3.secret_key()] {
            assert!(
                !run.stderr.contains(secret) && !run.stdout.contains(secret),
                "{args:?}: the secret shows: {line}"
            );
        }
    }
    assert_eq!(s3.keys(url), keys, "nothing written or removed");
    assert_eq!(lab.confirmed_flush(DECODING_SLOT), "", "nothing restored");

    let missing = format!("s3://no-such-bucket-{}/repo", std::process::id());
    for args in [&["backup"][..], &["restore", "--yes"]] {
        let run = tool_with(&lab, &missing, &[], args);
        run.assert_code(2);
        let line = run.error_line("cdc-slot-tool");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(line.contains("no-such-bucket-"), "{args:?}: {line}");
        assert!(!run.stderr.contains(s3.secret_key()), "{line}");
    }

    // With the right settings, the same backup restores.
    let run = lab.tool(&[
        "restore",
        "--yes",
        "--backup-id",
        backup["id"].as_str().unwrap(),
    ]);
    run.assert_code(1);
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
}

#[test]
fn drill_slots_after_a_pitr_from_s3() {
    // Base backup, WAL (pushed by PostgreSQL's archive_command) and slot backup all in the
    // bucket; the same drill and checks as with a local repository.
    let lab = drill::archived_lab(Some("cdc-drill"));
    drill::pitr_to_latest_then_restore_slots_names_the_lost_window(&lab);

    let (url, s3) = s3_of(&lab);
    let keys = s3.keys(url);
    for kind in ["base", "slots"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{kind}/")) && k.ends_with("/manifest.json")),
            "a complete {kind} set in {keys:?}"
        );
    }
    assert!(keys.iter().any(|k| k.starts_with("wal/")), "{keys:?}");
    let local: Vec<_> = std::fs::read_dir(lab.backup_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        local,
        ["pipeline-backup.env"],
        "only the archive_command's config file is local"
    );
}

#[test]
fn encrypted_slot_set_on_s3() {
    let lab = Lab::with_cdc().on_s3("cdc-age");
    let keys = test_support::age_keys::AgeKeys::generate();
    let with = |vars: Vec<(String, String)>, args: &[&str]| {
        lab.tool_env(lab.cluster.env().into_iter().chain(vars).collect(), args)
    };
    let saved = lab.confirmed_flush(DECODING_SLOT);
    let backup = with(keys.recipients_env(), &["backup", "--output", "json"]).ok();
    let summary = backup.summary();
    assert_eq!(summary["encrypted"], true);
    let (url, s3) = s3_of(&lab);
    let id = summary["id"].as_str().unwrap();
    let mut stored = s3.keys(url);
    stored.sort();
    assert_eq!(
        stored,
        [
            format!("slots/{id}/manifest.json"),
            format!("slots/{id}/private.json.age"),
            format!("slots/{id}/slots.json.age"),
        ]
    );
    let manifest = String::from_utf8(lab.set_file(&summary, "manifest.json")).unwrap();
    assert!(!manifest.contains(DECODING_SLOT), "{manifest}");

    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{DECODING_SLOT}')"
    ));
    with(Vec::new(), &["restore", "--yes"]).assert_code(2);
    assert_eq!(lab.plugin(DECODING_SLOT), "");
    let restored = with(
        keys.identity_env(),
        &["restore", "--yes", "--output", "json"],
    );
    assert!(restored.code == 0 || restored.code == 1, "{restored:?}");
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
    assert_eq!(
        restored.record("slot", "slot_name", DECODING_SLOT)["saved_lsn"],
        saved.as_str()
    );
}
