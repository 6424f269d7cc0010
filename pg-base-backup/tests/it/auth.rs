//! Password authentication over TCP with a replication role, set up as for `pg_basebackup`.

use std::process::{Command, Output};

use common::repo::{Kind, Repository};
use test_support::os_user::{as_db_user, db_tempdir};
use test_support::pg::{pg_bin, run_checked, PgCluster, PgOptions};

use crate::summary;

#[test]
fn a_replication_role_without_a_database_of_its_own_backs_up_with_a_password() {
    let (superuser_secret, secret) = ("su-Pa55word", "repl-Pa55word");
    let pg = PgCluster::start_with(PgOptions {
        password: Some(superuser_secret.to_string()),
        ..Default::default()
    });
    let mut psql = pg.command(pg_bin("psql"));
    psql.env("PGPASSWORD", superuser_secret).args([
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        &format!("CREATE ROLE replicator REPLICATION LOGIN PASSWORD '{secret}'"),
    ]);
    run_checked(&mut psql, "psql");
    let backups = db_tempdir("bb-");
    // No PGDATABASE, no password file: only what an operator would give pg_basebackup.
    let tool = |password: Option<&str>| -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg-base-backup"));
        as_db_user(&mut cmd);
        for var in ["PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE"] {
            cmd.env_remove(var);
        }
        cmd.env("PGPASSFILE", backups.path().join("no-pgpass"))
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", pg.port.to_string())
            .args(["--user", "replicator", "--output", "json"])
            .arg("--backup-dir")
            .arg(backups.path());
        if let Some(password) = password {
            cmd.env("PGPASSWORD", password);
        }
        cmd.output().expect("run pg-base-backup")
    };

    let missing = tool(None);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("set PGPASSWORD, or put it in ~/.pgpass (PGPASSFILE"),
        "names where the password comes from: {stderr}"
    );
    let wrong = tool(Some("not-the-password"));
    assert_eq!(wrong.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("the server refused the password: check PGPASSWORD"),
        "{stderr}"
    );
    let repo =
        Repository::create(&common::storage::Location::Local(backups.path().into())).unwrap();
    assert!(repo.list(Kind::Base).unwrap().is_empty());

    let done = tool(Some(secret));
    let json = summary(&done);
    let (set, manifest) = repo.find(Kind::Base, None).unwrap();
    assert_eq!(set.id, json["id"].as_str().unwrap());
    assert_eq!(manifest.source["user"], "replicator");
    assert!(repo.verify_files(&set.prefix, &manifest).is_empty());
    for out in [&missing, &wrong, &done] {
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!shown.contains(secret), "the password leaked: {shown}");
    }
}
