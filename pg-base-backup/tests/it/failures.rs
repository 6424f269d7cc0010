//! Failures leave nothing that looks like a good backup.

use std::process::Command;
use std::time::Duration;

use common::repo::{Kind, Repository};
use test_support::os_user::{as_db_user, db_tempdir};
use test_support::pg::PgCluster;

use crate::{base_backup, summary};

#[test]
fn unreachable_server_exits_2_without_a_set() {
    let backups = db_tempdir("bb-");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg-base-backup"));
    cmd.arg("--backup-dir")
        .arg(backups.path())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &test_support::free_port().to_string(),
        ])
        .args(["--user", "postgres"]);
    let out = as_db_user(&mut cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("pg-base-backup: cannot connect"),
        "{stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one-line error: {stderr}"
    );
    let repo =
        Repository::create(&common::storage::Location::Local(backups.path().into())).unwrap();
    assert!(repo.list(Kind::Base).unwrap().is_empty());
}

#[test]
fn kill_9_mid_run_leaves_no_complete_set_and_the_next_run_works() {
    let (pg, backups, mut child) = slow_backup_under_way();
    let repo = Repository::open(&common::storage::Location::Local(backups.path().into())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let sets = repo.list(Kind::Base).unwrap();
    assert_eq!(sets.len(), 1);
    assert!(
        !sets[0].is_complete(),
        "a killed run must not look complete"
    );
    assert!(repo.find(Kind::Base, None).is_err());

    let json = summary(&base_backup(&pg, backups.path(), &[]));
    let (good, _) = repo.find(Kind::Base, None).unwrap();
    assert_eq!(good.id, json["id"].as_str().unwrap());
    // The leftover is still there (younger than the grace period) and still incomplete.
    assert_eq!(repo.list(Kind::Base).unwrap().len(), 2);
    let _ = as_db_user;
}

#[test]
fn sigterm_mid_run_removes_the_set_stops_pg_basebackup_and_exits_143() {
    let (pg, backups, child) = slow_backup_under_way();
    let repo = Repository::open(&common::storage::Location::Local(backups.path().into())).unwrap();
    let walsenders = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'";
    // The set's folder is made before pg_basebackup connects.
    test_support::process::wait_for("pg_basebackup to stream", Duration::from_secs(30), || {
        pg.psql(walsenders) == "1"
    });

    test_support::process::signal_and_wait(child, "TERM")
        .assert_interrupted("pg-base-backup", "TERM");
    // Nothing is left: neither an incomplete set nor a temporary file.
    assert!(repo.list(Kind::Base).unwrap().is_empty());
    let leftovers: Vec<_> = walkdir::WalkDir::new(backups.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // pg_basebackup was stopped with us: its replication connection goes away.
    test_support::process::wait_for("pg_basebackup to end", Duration::from_secs(20), || {
        pg.psql(walsenders) == "0"
    });
    // And the next run works.
    let json = summary(&base_backup(&pg, backups.path(), &[]));
    assert_eq!(
        repo.find(Kind::Base, None).unwrap().0.id,
        json["id"].as_str().unwrap()
    );
}

/// A cluster with enough data that a backup takes a moment, and a backup of it (stderr
/// piped) that has begun writing its set.
fn slow_backup_under_way() -> (PgCluster, tempfile::TempDir, std::process::Child) {
    let backups = db_tempdir("bb-");
    let (pg, child) = slow_backup_into(&backups.path().display().to_string(), &[]);
    (pg, backups, child)
}

/// The same into any repository (`backup_dir` a path or an s3:// URL, `env` its settings).
pub fn slow_backup_into(
    backup_dir: &str,
    env: &[(String, String)],
) -> (PgCluster, std::process::Child) {
    let pg = PgCluster::start();
    pg.psql("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 8) AS v FROM generate_series(1, 400000) g");
    let mut cmd = pg.command(env!("CARGO_BIN_EXE_pg-base-backup"));
    cmd.args(["--backup-dir", backup_dir])
        .args(["--compress-level", "9", "--jobs", "1"])
        .envs(env.iter().cloned())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let location: common::storage::Location = backup_dir.parse().unwrap();
    let store = common::storage::Store::open_with(&location, env).unwrap();
    test_support::process::wait_for("the backup to write", Duration::from_secs(60), || {
        store
            .list("base")
            .unwrap()
            .iter()
            .any(|o| o.key.ends_with(".started") || !common::storage::is_hidden(&o.key))
            || store.local_path("base").is_some_and(|dir| {
                std::fs::read_dir(dir).is_ok_and(|d| {
                    d.filter_map(Result::ok).any(|e| {
                        e.path().is_dir()
                            && std::fs::read_dir(e.path()).is_ok_and(|mut f| f.next().is_some())
                    })
                })
            })
    });
    (pg, child)
}

/// A repository on a filesystem that fills up mid-backup: one line naming the cause and the
/// file (not pg_basebackup's SIGPIPE), exit 2, nothing complete; with room, the next run works.
#[test]
fn a_full_repository_disk_is_named_and_the_next_run_works() {
    let mount = db_tempdir("bb-full-");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs"])
        .arg(mount.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (not root?)");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mount.path());
    let pg = PgCluster::start();
    let out = base_backup(&pg, mount.path(), &["--compress", "none"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("pg-base-backup: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(line.contains("No space left on device"), "{line}");
    assert!(line.contains("base.tar"), "names the file: {line}");
    assert!(!line.contains("SIGPIPE"), "{line}");
    let repo = Repository::open(&common::storage::Location::Local(mount.path().into())).unwrap();
    assert!(repo.find(Kind::Base, None).is_err(), "nothing complete");
    // Space freed (a bigger filesystem), the next run succeeds.
    let _ = Command::new("mount")
        .args(["-o", "remount,size=200m"])
        .arg(mount.path())
        .status();
    let json = summary(&base_backup(&pg, mount.path(), &["--compress", "zstd"]));
    assert_eq!(
        repo.find(Kind::Base, None).unwrap().0.id,
        json["id"].as_str().unwrap()
    );
}

/// The server restarted under a backup (found by the fault campaign): the one error line
/// carries pg_basebackup's own error, not the last line of libpq's hint ("before or while
/// processing the request."); nothing looks complete and the next run works.
#[test]
fn a_server_restarted_mid_backup_is_named_and_the_next_run_works() {
    let (mut pg, backups, child) = slow_backup_under_way();
    // While pg_basebackup streams: the connection drops under it.
    let walsenders = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'";
    test_support::process::wait_for("pg_basebackup to stream", Duration::from_secs(60), || {
        pg.psql(walsenders) == "1"
    });
    pg.restart();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pg-base-backup: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(
        lines[0].starts_with("pg-base-backup: pg_basebackup failed")
            && ["server closed the connection", "terminating connection"]
                .iter()
                .any(|cause| lines[0].contains(cause)),
        "the cause is named: {stderr}"
    );
    let repo = Repository::open(&common::storage::Location::Local(backups.path().into())).unwrap();
    assert!(repo
        .list(Kind::Base)
        .unwrap()
        .iter()
        .all(|s| !s.is_complete()));

    let json = summary(&base_backup(&pg, backups.path(), &[]));
    let (good, _) = repo.find(Kind::Base, None).unwrap();
    assert_eq!(good.id, json["id"].as_str().unwrap());
}
