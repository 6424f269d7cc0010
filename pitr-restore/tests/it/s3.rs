//! Point-in-time recovery with the repository on S3: WAL pushed by PostgreSQL's own
//! archive_command (credentials from a config file), a base backup streamed up, the restore
//! streamed down and recovery fetching WAL from the bucket.

use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_to, PgCluster};
use test_support::{s3, tool_bin};

use crate::{last_json, Restore};

#[test]
fn restore_to_a_time_from_s3_brings_back_exactly_that_point() {
    let env = s3::env();
    let url = env.url("pitr");
    let config_dir = db_tempdir("pitr-s3-config-");
    let config = env.config_file(config_dir.path());
    let pg = PgCluster::start_with(archiving_to(&url, Some(&config)));
    pg.psql("CREATE TABLE t(id int primary key, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g");

    let mut cmd = pg.command(tool_bin("pg-base-backup"));
    cmd.args([
        "--backup-dir",
        &url,
        "--output",
        "json",
        "--no-retention",
        "--compress",
        "zstd",
        "--wal-method",
        "archive",
    ]);
    let out = env.apply(&mut cmd).output().unwrap();
    assert!(
        out.status.success(),
        "pg-base-backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup = last_json(&out);
    assert_eq!(backup["wal_method"], "archive", "{backup}");
    assert!(
        backup["path"].as_str().unwrap().starts_with(&url),
        "{backup}"
    );

    pg.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(1001, 1500) g");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let point = pg.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    pg.psql("DELETE FROM t WHERE id <= 500");
    pg.switch_wal_and_wait_archived();
    let keys = env.keys(&url);
    assert!(
        keys.iter()
            .any(|k| k.starts_with("wal/") && k.ends_with(".zst")),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|k| !k.starts_with('/')),
        "same layout as on disk: {keys:?}"
    );

    let restore = Restore::in_tempdir();
    let out = restore.run_with(&url, &["--target-time", &point], true, &env.vars());
    let server = test_support::pg::DataDirServer::new(
        restore.pgdata.clone(),
        restore.port,
        restore.dir.path().to_path_buf(),
    );
    assert!(
        out.status.success(),
        "pitr-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = last_json(&out);
    assert_eq!(json["timeline"], 2, "{json}");
    assert_eq!(
        server.psql("SELECT count(*), sum(id) FROM t"),
        "1500|1125750"
    );
    assert_eq!(
        server.psql("SELECT count(*) FROM t WHERE v = 'after'"),
        "500"
    );
    // No secret in what the restore printed or wrote into the data directory.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(env.secret_key()));
    let auto_conf = std::fs::read_to_string(restore.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(!auto_conf.contains(env.secret_key()), "{auto_conf}");
    assert!(auto_conf.contains(&url), "{auto_conf}");
}
