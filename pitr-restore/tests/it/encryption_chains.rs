//! An encrypted chain (full -> incr -> incr, recipients only on the backup side): restored
//! with the identity, refused without it before anything is written, and restored again with
//! --delta (its hashes are encrypted too).

use std::path::Path;
use std::process::Output;

use test_support::age_keys::AgeKeys;
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_to, PgCluster};
use test_support::tool_bin;

use crate::{last_json, Restore};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A backup read from the data directory with only the recipients at hand (no identity).
fn backup(pg: &PgCluster, backups: &Path, keys: &AgeKeys, kind: &str) -> serde_json::Value {
    pg.switch_wal_and_wait_archived();
    let mut cmd = pg.command(tool_bin("pg-base-backup"));
    cmd.arg("--backup-dir")
        .arg(backups)
        .args(["--output", "json", "--no-retention", "--compress", "zstd"])
        .args(["--type", kind, "--pgdata"])
        .arg(&pg.data_dir)
        .envs(keys.recipients_env());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{kind}: {}", stderr(&out));
    let summary = last_json(&out);
    assert_eq!(summary["encrypted"], true, "{summary}");
    assert_eq!(summary["backup_type"], kind, "{summary}");
    summary
}

#[test]
fn an_encrypted_chain_restores_with_the_key_only_and_delta_restores() {
    let keys = AgeKeys::generate();
    let backups = db_tempdir("pitr-age-chain-repo-");
    let cfg_dir = db_tempdir("pitr-age-chain-cfg-");
    let config = keys.config_file(cfg_dir.path(), &[]);
    let config_s = config.display().to_string();
    let pg = PgCluster::start_with(archiving_to(
        &backups.path().display().to_string(),
        Some(&config),
    ));
    pg.psql("CREATE TABLE t(n int primary key, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    let full = crate::chains::id(&backup(&pg, backups.path(), &keys, "full"));
    pg.psql("UPDATE t SET v = 'one' WHERE n % 100 = 0");
    let incr1 = crate::chains::id(&backup(&pg, backups.path(), &keys, "incr"));
    pg.psql("UPDATE t SET v = 'two' WHERE n % 100 = 1; INSERT INTO t VALUES (20001, 'new')");
    let incr2 = crate::chains::id(&backup(&pg, backups.path(), &keys, "incr"));
    pg.psql("INSERT INTO t VALUES (20002, 'after')");
    pg.switch_wal_and_wait_archived();
    let state = "SELECT count(*), count(*) FILTER (WHERE v = 'one'), count(*) FILTER (WHERE v = 'two') FROM t";
    let expected = pg.psql(state);
    assert_eq!(expected, "20002|200|200");

    // Without the identity: refused naming the first link's tarball, nothing written.
    let restore = Restore::in_tempdir();
    let out = restore.run_only(backups.path(), &[], false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&full) && stderr(&out).contains("base.tar.zst.age"),
        "{}",
        stderr(&out)
    );
    assert!(!restore.pgdata.exists());

    // With it (the config file, which restore_command gets too).
    let (json, server) = restore.ok(backups.path(), &["--config", &config_s]);
    assert_eq!(json["chain"], serde_json::json!([&full, &incr1, &incr2]));
    assert_eq!(server.psql(state), expected);
    assert!(!json.to_string().contains(&keys.secret));
    drop(server);

    // The restored directory diverges, then a delta restore brings it back.
    let file = restore
        .pgdata
        .join(pg.psql("SELECT pg_relation_filepath('t')"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8100..8150].fill(b'Q');
    std::fs::write(&file, bytes).unwrap();
    let (json, server) = restore.ok(backups.path(), &["--config", &config_s, "--delta"]);
    assert!(json["delta"]["kept_files"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(server.psql(state), expected);
    assert_eq!(
        server.psql("SELECT count(*) FROM t WHERE v LIKE '%Q%'"),
        "0"
    );
}
