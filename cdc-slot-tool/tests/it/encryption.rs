//! Encrypted slot sets (age): `backup` to a recipient stores `slots.json.age` and keeps slot
//! names out of manifest.json; `restore` with the identity recreates a dropped slot at its
//! saved position; missing and wrong identity, a flipped byte and a truncation change
//! nothing; passphrase mode; a plaintext set is refused into an encrypted repository unless
//! --allow-unencrypted, and a mixed repository restores both.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use test_support::age_keys::{cmdlines_containing, AgeKeys};
use test_support::os_user::{db_tempdir, give_to_db_user};

use crate::support::{Lab, Run, DECODING_SLOT, FILTERED_PUBLICATION, PGOUTPUT_SLOT};

/// The tool against the lab's cluster and repository, with extra environment (keys).
fn run_with(lab: &Lab, vars: &[(String, String)], args: &[&str]) -> Run {
    let env = lab.cluster.env().into_iter().chain(vars.iter().cloned());
    lab.tool_env(env.collect(), args)
}

fn set_dir(backup: &Value) -> &Path {
    Path::new(backup["path"].as_str().unwrap())
}

/// Drops the test_decoding slot, and checks it is gone.
fn drop_decoding_slot(lab: &Lab) {
    lab.sql(&format!(
        "SELECT pg_drop_replication_slot('{DECODING_SLOT}')"
    ));
    assert_eq!(lab.plugin(DECODING_SLOT), "");
}

fn assert_no_secret(runs: &[&Run], keys: &AgeKeys) {
    for run in runs {
        assert!(!run.stdout.contains(&keys.secret), "{}", run.stdout);
        assert!(!run.stderr.contains(&keys.secret), "{}", run.stderr);
        assert!(!run.stderr.contains("AGE-SECRET-KEY"), "{}", run.stderr);
    }
    assert!(cmdlines_containing(&keys.secret).is_empty());
}

#[test]
fn encrypted_slot_set_round_trip_keys_damage_and_mixing() {
    let lab = Lab::with_cdc();
    let keys = AgeKeys::generate();
    let other = AgeKeys::generate();
    let ident = keys.identity_env();

    // A plain set from before encryption, then an encrypted one.
    let plain = run_with(&lab, &[], &["backup", "--output", "json"]).ok();
    let plain_id = plain.summary()["id"].as_str().unwrap().to_string();
    assert_eq!(plain.summary()["encrypted"], false);
    let saved = lab.confirmed_flush(DECODING_SLOT);
    let backup = run_with(
        &lab,
        &keys.recipients_env(),
        &["backup", "--output", "json"],
    )
    .ok();
    let summary = backup.summary();
    assert_eq!(summary["encrypted"], true, "{summary}");
    assert_eq!(summary["logical_slots"], 2);
    let id = summary["id"].as_str().unwrap().to_string();

    // Stored: the inventory and the private part, encrypted; the manifest names no slot,
    // no plugin, no publication, and keeps the positions and recipients in clear.
    let set = set_dir(&summary);
    let mut names: Vec<String> = std::fs::read_dir(set)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["manifest.json", "private.json.age", "slots.json.age"]
    );
    let manifest_text = std::fs::read_to_string(set.join("manifest.json")).unwrap();
    for hidden in [
        DECODING_SLOT,
        PGOUTPUT_SLOT,
        FILTERED_PUBLICATION,
        "test_decoding",
        "pgoutput",
    ] {
        assert!(
            !manifest_text.contains(hidden),
            "{hidden} in clear:\n{manifest_text}"
        );
    }
    let manifest: Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(manifest["details"]["timeline"], 1);
    assert!(manifest["details"]["current_lsn"].is_string());
    assert_eq!(
        manifest["source"]["encryption"]["recipients"][0],
        keys.recipient.as_str()
    );
    let stored = std::fs::read(set.join("slots.json.age")).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert!(!String::from_utf8_lossy(&stored).contains(DECODING_SLOT));

    // The Debian age CLI opens the inventory.
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&keys.identity_file)
        .arg(set.join("slots.json.age"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let inventory: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(inventory["slots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["slot_name"] == DECODING_SLOT));

    drop_decoding_slot(&lab);

    // Missing and wrong identity: exit 2, one line naming the file, the slot still absent.
    for vars in [Vec::new(), other.identity_env()] {
        let run = run_with(&lab, &vars, &["restore", "--backup-id", &id, "--yes"]);
        run.assert_code(2);
        let line = run.error_line("cdc-slot-tool");
        assert!(line.contains("slots.json.age"), "{line}");
        assert!(!run.stderr.contains(&other.secret));
        assert_eq!(lab.plugin(DECODING_SLOT), "");
    }

    // A flipped byte in the middle, then a truncation: the same.
    let file = set.join("slots.json.age");
    let mut flipped = stored.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    for damaged in [flipped, stored[..stored.len() - 20].to_vec()] {
        std::fs::write(&file, &damaged).unwrap();
        let run = run_with(&lab, &ident, &["restore", "--backup-id", &id, "--yes"]);
        run.assert_code(2);
        let line = run.error_line("cdc-slot-tool");
        assert!(line.contains("slots.json.age"), "{line}");
        assert_eq!(lab.plugin(DECODING_SLOT), "");
    }
    std::fs::write(&file, &stored).unwrap();

    // With the identity: the slot comes back, and the report compares it with the position
    // saved in the encrypted inventory.
    let restored = run_with(
        &lab,
        &ident,
        &["restore", "--backup-id", &id, "--yes", "--output", "json"],
    );
    assert!(restored.code == 0 || restored.code == 1, "{restored:?}");
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
    let slot = restored.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["action"], "created");
    assert_eq!(slot["saved_lsn"], saved.as_str());
    assert_eq!(
        restored.record("slot", "slot_name", PGOUTPUT_SLOT)["action"],
        "kept"
    );

    // Recipients gone from the environment: a plaintext set is refused, unless asked for.
    let refused = run_with(&lab, &[], &["backup"]);
    refused.assert_code(2);
    assert!(refused
        .error_line("cdc-slot-tool")
        .contains("--allow-unencrypted"));
    let allowed = run_with(
        &lab,
        &[],
        &["backup", "--allow-unencrypted", "--output", "json"],
    )
    .ok();
    assert_eq!(allowed.summary()["encrypted"], false);

    // The old plain set still restores without a key.
    drop_decoding_slot(&lab);
    let from_plain = run_with(
        &lab,
        &[],
        &[
            "restore",
            "--backup-id",
            &plain_id,
            "--yes",
            "--output",
            "json",
        ],
    );
    assert!(
        from_plain.code == 0 || from_plain.code == 1,
        "{from_plain:?}"
    );
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
    assert_eq!(
        from_plain.record("slot", "slot_name", DECODING_SLOT)["saved_lsn"],
        saved.as_str()
    );

    assert_no_secret(
        &[&plain, &backup, &restored, &refused, &allowed, &from_plain],
        &keys,
    );
}

#[test]
fn passphrase_slot_set() {
    let lab = Lab::with_cdc();
    let dir = db_tempdir("slots-pass-");
    let pass_file = dir.path().join("passphrase");
    std::fs::write(&pass_file, "correct horse battery staple\n").unwrap();
    give_to_db_user(&pass_file);
    let pass = vec![(
        "BACKUP_ENCRYPTION_PASSPHRASE_FILE".to_string(),
        pass_file.display().to_string(),
    )];
    let saved = lab.confirmed_flush(DECODING_SLOT);
    let backup = run_with(&lab, &pass, &["backup", "--output", "json"]).ok();
    let summary = backup.summary();
    assert_eq!(summary["encrypted"], true);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(set_dir(&summary).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["source"]["encryption"]["passphrase"], true);
    drop_decoding_slot(&lab);

    // An identity file is not the passphrase.
    let keys = AgeKeys::generate();
    let wrong = run_with(&lab, &keys.identity_env(), &["restore", "--yes"]);
    wrong.assert_code(2);
    assert!(wrong.error_line("cdc-slot-tool").contains("slots.json.age"));
    assert_eq!(lab.plugin(DECODING_SLOT), "");

    let restored = run_with(&lab, &pass, &["restore", "--yes", "--output", "json"]);
    assert!(restored.code == 0 || restored.code == 1, "{restored:?}");
    assert_eq!(lab.plugin(DECODING_SLOT), "test_decoding");
    assert_eq!(
        restored.record("slot", "slot_name", DECODING_SLOT)["saved_lsn"],
        saved.as_str()
    );
}
