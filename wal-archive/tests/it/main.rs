//! wal-archive with real WAL from a real cluster.

mod damaged_input;
mod encryption;
mod fetch;
mod push;
mod s3;
mod verify;

use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_options, PgCluster};

/// The repository in a local directory.
pub fn local_repo(dir: &Path) -> common::Repository {
    common::Repository::open(&common::storage::Location::Local(dir.into())).unwrap()
}

pub fn wal_archive(args: &[&str], backup_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wal-archive"))
        .args(args)
        .arg("--backup-dir")
        .arg(backup_dir)
        .output()
        .expect("run wal-archive")
}

/// A cluster archiving through wal-archive, with a few segments archived.
pub struct Archived {
    pub pg: PgCluster,
    pub backups: TempDir,
}

impl Archived {
    pub fn start() -> Archived {
        let backups = db_tempdir("wal-repo-");
        let pg = PgCluster::start_with(archiving_options(backups.path()));
        for n in 0..3 {
            pg.psql(&format!(
                "CREATE TABLE t{n} AS SELECT generate_series(1, 1000) AS x"
            ));
            pg.switch_wal_and_wait_archived();
        }
        Archived { pg, backups }
    }

    /// Archived full segments, oldest first.
    pub fn segments(&self) -> Vec<common::wal::ArchivedFile> {
        common::wal::WalArchive::new(&local_repo(self.backups.path()))
            .list()
            .unwrap()
            .into_iter()
            .filter(|f| matches!(f.kind, common::wal::WalFile::Segment { .. }))
            .collect()
    }
}
