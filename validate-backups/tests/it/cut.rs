//! `validate-backups restore`: PostgreSQL, its CDC topics and the connector's offset restored
//! to one point, with a real CDC leg (test-support's Debezium-shaped producer on a
//! test_decoding slot) producing the events and the offsets as Debezium does. A transaction
//! open across the restore point (its changes below the cut, its commit after it) is left out
//! of the topics as the restored database leaves it out.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use test_support::cdc::{self, read_events, read_offset, CdcProducer};
use test_support::os_user::db_tempdir;
use test_support::pg::{DataDirServer, PgCluster};

use crate::support::{self, tool};

/// validate-backups restore with the test broker and the workspace's tools.
fn restore(
    backups: &Path,
    pgdata: &Path,
    port: u16,
    extra: &[&str],
) -> (Option<i32>, Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_validate-backups"));
    cmd.args(["restore", "--output", "json", "--backup-dir"])
        .arg(backups)
        .arg("--pgdata")
        .arg(pgdata)
        .args(["--port", &port.to_string()])
        .arg("--socket-dir")
        .arg(pgdata.parent().unwrap())
        .arg("--bin-dir")
        .arg(test_support::tool_bin("wal-archive").parent().unwrap())
        .args(["--bootstrap-servers", &test_support::kafka::bootstrap()])
        .args(extra)
        .env_remove("PGHOST")
        .env_remove("BACKUP_DIR");
    let out = cmd.output().expect("run validate-backups restore");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (
        out.status.code(),
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn delete_topics(topics: &[String]) {
    test_support::kafka::delete_topics(topics);
    std::thread::sleep(std::time::Duration::from_secs(2));
}

/// A transaction left open in a psql session of its own; committed by [`Open::commit`].
struct Open {
    psql: std::process::Child,
    /// Its top-level xid, as pg_stat_activity shows it.
    xid: u64,
}

impl Open {
    fn begin(pg: &test_support::pg::Endpoint, sql: &str) -> Open {
        use std::io::Write;
        let mut psql = pg.command(test_support::pg::pg_bin("psql"));
        psql.args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-d", "postgres"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let mut psql = psql.spawn().expect("start psql");
        let stdin = psql.stdin.as_mut().unwrap();
        write!(stdin, "BEGIN;\n{sql}\n").unwrap();
        stdin.flush().unwrap();
        // Open once its changes are made: idle in a transaction that has an xid.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let xid = loop {
            let found = pg.psql(
                "SELECT backend_xid FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_xid IS NOT NULL",
            );
            if let Ok(xid) = found.trim().parse() {
                break xid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the transaction did not open"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        Open { psql, xid }
    }

    fn commit(mut self) {
        use std::io::Write;
        let mut stdin = self.psql.stdin.take().unwrap();
        stdin.write_all(b"COMMIT;\n").unwrap();
        drop(stdin);
        assert!(
            self.psql.wait().unwrap().success(),
            "the open transaction failed"
        );
    }
}

fn table_rows(pg: &test_support::pg::Endpoint, table: &str) -> String {
    let mut psql = pg.command(test_support::pg::pg_bin("psql"));
    psql.args(["-XAtq", "-d", "postgres", "-c"]).arg(format!(
        "SELECT string_agg(t::text, ',' ORDER BY id) FROM {table} t"
    ));
    String::from_utf8(test_support::pg::run_checked(&mut psql, "psql").stdout).unwrap()
}

#[test]
fn the_pipeline_comes_back_at_one_point_and_the_connector_resumes_without_gap_or_duplicate() {
    let backups = db_tempdir("cut-repo-");
    let d = backups.path().to_str().unwrap().to_string();
    let mut pg = support::archiving_cluster(backups.path());
    let prefix = test_support::unique_name("shop");
    pg.psql(
        "CREATE TABLE orders (id int PRIMARY KEY, v text);
         CREATE TABLE items (id int PRIMARY KEY, n int);",
    );
    // The slot first: the test connector takes no snapshot, every row comes as an event.
    let config = cdc::config(&pg, "postgres", &prefix);
    let mut cdc = CdcProducer::new(config.clone()).unwrap();
    cdc.create_slot().unwrap();
    pg.psql(
        "INSERT INTO orders SELECT g, 'o' || g FROM generate_series(1, 50) g;
         INSERT INTO items SELECT g, g FROM generate_series(1, 30) g;",
    );
    pg.psql("UPDATE orders SET v = 'first' WHERE id <= 10; DELETE FROM items WHERE id > 25");
    let first = cdc.poll().unwrap();
    pg.switch_wal_and_wait_archived();
    tool(&pg, "pg-base-backup", &["--backup-dir", &d, "-q"], &[]);
    tool(
        &pg,
        "cdc-slot-tool",
        &["backup", "--backup-dir", &d, "-q"],
        &[],
    );

    // Changes up to the restore point, then changes after it: the phantoms of a restore to it.
    pg.psql("INSERT INTO orders VALUES (100, 'kept'); UPDATE items SET n = -1 WHERE id = 3");
    pg.psql("DELETE FROM orders WHERE id = 2");
    // Begun before the restore point, committed after it: its changes are below the cut, its
    // commit is not, so the restored database does not hold it.
    let straddling = Open::begin(
        &pg,
        "INSERT INTO orders VALUES (150, 'straddling'); UPDATE items SET n = 99 WHERE id = 5;",
    );
    pg.psql("SELECT pg_create_restore_point('mid')");
    let (orders_mid, items_mid) = (table_rows(&pg, "orders"), table_rows(&pg, "items"));
    let kept = cdc.poll().unwrap();
    let straddling_xid = straddling.xid;
    straddling.commit();
    pg.psql("INSERT INTO orders VALUES (200, 'phantom'); DELETE FROM items WHERE id = 4");
    pg.psql("UPDATE orders SET v = 'phantom' WHERE id = 100");
    // The connector emits the open transaction at its commit, as Debezium does.
    let phantom = cdc.poll().unwrap();
    assert_eq!(phantom.events, 2 + 3);
    pg.switch_wal_and_wait_archived();
    let regex = format!("{prefix}\\..*");
    tool(
        &pg,
        "kafka-topic-backup",
        &[
            "--backup-dir",
            &d,
            "--topic-regex",
            &regex,
            "-q",
            "--bootstrap-servers",
            &test_support::kafka::bootstrap(),
        ],
        &[],
    );
    let topics = [
        config.topic("public", "orders"),
        config.topic("public", "items"),
    ];

    // Disaster: the database is lost, its CDC topics hold events the restore undoes.
    drop(cdc);
    pg.stop();
    delete_topics(&topics);

    let restored_dir = db_tempdir("cut-restore-");
    let pgdata = restored_dir.path().join("data");
    let port = test_support::free_port();
    let connector = format!("{}={prefix}", config.connector);
    let (code, summary, stderr) = restore(
        backups.path(),
        &pgdata,
        port,
        &[
            "--target-name",
            "mid",
            "--cdc-topic-regex",
            &regex,
            "--connector",
            &connector,
        ],
    );
    let restored = DataDirServer::new(pgdata.clone(), port, restored_dir.path().to_path_buf());
    assert_eq!(code, Some(0), "{summary:#}\n{stderr}");
    assert_eq!(summary["consistent"], true, "{summary:#}");
    let cut: common::lsn::Lsn = summary["cut_lsn"].as_str().unwrap().parse().unwrap();
    let components = summary["components"].as_array().unwrap();
    for name in ["postgres", "cdc-slots", "stream-probe"] {
        let c = components.iter().find(|c| c["component"] == name).unwrap();
        assert_eq!(c["status"], "ok", "{c}");
    }
    assert!(
        components
            .iter()
            .filter(|c| c["component"].as_str().unwrap().starts_with("proof:"))
            .all(|c| c["status"] == "ok"),
        "{summary:#}"
    );

    // The straddling transaction was cut off: both of its events left out, by its txId.
    assert_eq!(
        summary["cut_off_txids"],
        serde_json::json!([straddling_xid]),
        "{summary:#}"
    );
    assert_eq!(summary["skipped_cut_off_events"], 2, "{summary:#}");

    // The database is at the restore point; the topics hold exactly the events up to it.
    assert_eq!(table_rows(&restored, "orders"), orders_mid);
    assert_eq!(table_rows(&restored, "items"), items_mid);
    assert!(!orders_mid.contains("straddling"), "{orders_mid}");
    let events: usize = topics
        .iter()
        .map(|t| {
            read_events(&test_support::kafka::bootstrap(), t)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        events as u64,
        first.events + kept.events,
        "no phantom, none lost"
    );
    for topic in &topics {
        for event in read_events(&test_support::kafka::bootstrap(), topic).unwrap() {
            assert!(
                event.lsn.unwrap() < cut.0,
                "event at {:?} after the cut {cut}",
                event.lsn
            );
            assert_ne!(
                event.tx_id,
                Some(straddling_xid),
                "a cut-off event replayed"
            );
        }
    }
    // The connector's offset is at the cut.
    let offset = read_offset(
        &test_support::kafka::bootstrap(),
        &config.offsets_topic,
        &config.connector,
        &prefix,
    )
    .unwrap()
    .expect("an offset");
    assert_eq!(
        offset.value["lsn"].as_u64(),
        Some(cut.0),
        "{}",
        offset.value
    );

    // The connector restarted on the restored system continues: no gap, no duplicate.
    let mut resumed = CdcProducer::resume(cdc::config(&restored, "postgres", &prefix)).unwrap();
    restored.psql("INSERT INTO orders VALUES (300, 'after'); UPDATE items SET n = 7 WHERE id = 1");
    let after = resumed.poll().unwrap();
    assert_eq!(
        after.events, 2,
        "exactly the changes made after the restore"
    );
    let orders = read_events(&test_support::kafka::bootstrap(), &topics[0]).unwrap();
    let ids: Vec<i64> = orders
        .iter()
        .filter_map(|e| e.after().and_then(|a| a["id"].as_i64()))
        .collect();
    assert!(ids.contains(&300) && !ids.contains(&200), "{ids:?}");
    drop(restored);

    // Latest: the topic backup covers the end of the WAL, so the cut holds there too.
    let latest_dir = db_tempdir("cut-latest-");
    let (code, summary, stderr) = restore(
        backups.path(),
        &latest_dir.path().join("data"),
        test_support::free_port(),
        &[
            "--target",
            "latest",
            "--cdc-topic-regex",
            &regex,
            "--topic-suffix",
            ".latest",
        ],
    );
    let _latest = DataDirServer::new(
        latest_dir.path().join("data"),
        0,
        latest_dir.path().to_path_buf(),
    );
    assert_eq!(code, Some(0), "{summary:#}\n{stderr}");
    assert_eq!(summary["consistent"], true, "{summary:#}");
    let latest_events: usize = topics
        .iter()
        .map(|t| {
            read_events(&test_support::kafka::bootstrap(), &format!("{t}.latest"))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        latest_events as u64,
        first.events + kept.events + phantom.events
    );
}

#[test]
fn without_a_backup_of_the_cdc_topics_nothing_is_restored_and_the_window_is_named() {
    let backups = db_tempdir("cut-empty-");
    let mut pg: PgCluster = support::archiving_cluster(backups.path());
    pg.switch_wal_and_wait_archived();
    let d = backups.path().to_str().unwrap();
    tool(&pg, "pg-base-backup", &["--backup-dir", d, "-q"], &[]);
    pg.stop();
    let target = db_tempdir("cut-none-");
    let pgdata = target.path().join("data");
    let (code, summary, stderr) = restore(
        backups.path(),
        &pgdata,
        test_support::free_port(),
        &["--cdc-topic-regex", "nothing\\..*"],
    );
    assert_eq!(code, Some(1), "{summary:#}\n{stderr}");
    assert_eq!(summary["consistent"], false);
    let missing = summary["missing"].to_string();
    assert!(
        missing.contains("no backup of a CDC topic matching 'nothing\\\\..*'"),
        "{missing}"
    );
    assert!(missing.contains("no slot set"), "{missing}");
    assert!(!pgdata.exists(), "nothing restored");
}
