//! `--delta`: restore into an existing data directory of the same database system, rewriting
//! only the files whose size or content differ from the backup's file list and removing the
//! files it does not have.
//!
//! Refused, with nothing changed, while a server runs on the directory, when it belongs to
//! another system (pg_control's system identifier) or when the backup has no file list. From
//! the first change on, `global/pg_control` is absent (the backup's is written under another
//! name and moved into place last), so an unfinished delta restore cannot be started by
//! mistake; a marker file keeps the system identifier so that running it again finishes.

mod compare;

use std::path::{Path, PathBuf};

use anyhow::Context;
use common::interrupt::Undo;
use common::physical::filelist::FileList;
use common::physical::PhysicalDetails;

use crate::conform;
use crate::extract::PG_CONTROL;

pub use compare::{compare, Compare, LinkState, Plan, Report};

/// Marker of an unfinished delta restore, holding the system identifier.
pub const PENDING: &str = "pitr-restore-delta.pending";
/// Where the backup's pg_control waits until the end.
const PG_CONTROL_NEW: &str = "global/pg_control.pitr-restore";

/// The system identifier of a data directory: the first 8 bytes of `global/pg_control`
/// (`ControlFileData.system_identifier`, little-endian), else the marker of an unfinished
/// delta restore.
pub fn system_identifier(pgdata: &Path) -> anyhow::Result<u64> {
    let control = pgdata.join(PG_CONTROL);
    match std::fs::read(&control) {
        Ok(bytes) => {
            let first: [u8; 8] = bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .with_context(|| {
                    format!("{} is too short to be a pg_control file", control.display())
                })?;
            return Ok(u64::from_le_bytes(first));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", control.display())),
    }
    let marker = pgdata.join(PENDING);
    match std::fs::read_to_string(&marker) {
        Ok(text) => text.trim().parse().with_context(|| {
            format!("{} does not hold a system identifier", marker.display())
        }),
        Err(_) => anyhow::bail!(
            "{} is not a data directory (it has no {PG_CONTROL}); --delta restores into an existing data directory of the backed-up system: omit it to restore into an empty directory",
            pgdata.display()
        ),
    }
}

/// Refuses a data directory that a delta restore must not touch; returns its system
/// identifier.
pub fn check(pgdata: &Path, set: &str, details: &PhysicalDetails) -> anyhow::Result<u64> {
    if !pgdata.is_dir() {
        anyhow::bail!(
            "{} is not an existing directory; --delta restores into an existing data directory: omit it to restore into a new one",
            pgdata.display()
        );
    }
    if crate::safety::server_running(pgdata) {
        anyhow::bail!(
            "a PostgreSQL server is running on {}; stop it first (pg_ctl -D {} stop): --delta never rewrites the files of a running server",
            pgdata.display(),
            pgdata.display()
        );
    }
    let local = system_identifier(pgdata)?;
    if local.to_string() != details.system_identifier {
        anyhow::bail!(
            "{} belongs to another database system (system identifier {local}; base backup {set} is of {}): --delta only restores into a data directory of the same system; restore into an empty directory instead",
            pgdata.display(),
            details.system_identifier
        );
    }
    Ok(local)
}

/// Takes an earlier restore's recovery settings out of postgresql.auto.conf, leaving the
/// backup's content (compared by [`local_state`]); the restore writes its own.
fn strip_recovery_block(pgdata: &Path) -> anyhow::Result<()> {
    let path = pgdata.join(crate::recovery::AUTO_CONF);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let own = crate::recovery::without_recovery_block(&text);
    if own.len() < text.len() {
        common::durable::write_atomic(&path, own)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A delta restore under way: the directory is being changed.
pub struct Pending {
    pgdata: PathBuf,
    unfinished: Undo,
}

/// The point of no return: marks the directory as being restored, takes its pg_control away
/// and removes what the backup does not have (or has as a file where a directory is).
pub fn begin(pgdata: &Path, system_identifier: u64, plan: &Plan) -> anyhow::Result<Pending> {
    common::durable::write_atomic(
        &pgdata.join(PENDING),
        format!("{system_identifier}\n").as_bytes(),
    )
    .with_context(|| format!("cannot write {}", pgdata.join(PENDING).display()))?;
    let shown = pgdata.display().to_string();
    let unfinished = Undo::new(move || {
        tracing::warn!(
            "the delta restore of {shown} is unfinished: it has no {PG_CONTROL}, so it cannot be started half-restored; run pitr-restore --delta again to finish"
        );
    });
    let control = pgdata.join(PG_CONTROL);
    match std::fs::remove_file(&control) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", control.display()))
        }
        _ => {}
    }
    if let Some(global) = control.parent().filter(|g| g.is_dir()) {
        common::durable::fsync_dir(global)?;
    }
    conform::remove(pgdata, &plan.unlisted)?;
    strip_recovery_block(pgdata)?;
    for path in plan.labels.iter().chain(&plan.in_the_way) {
        let path = pgdata.join(path);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => Ok(()),
        };
        removed.with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(Pending {
        pgdata: pgdata.to_path_buf(),
        unfinished,
    })
}

impl Pending {
    /// Every listed file is there with its size (pg_control still under its waiting name).
    pub fn verify(&self, list: &FileList, set: &str) -> anyhow::Result<()> {
        conform::verify(&self.pgdata, list, set, |path| {
            if path == PG_CONTROL {
                PG_CONTROL_NEW.to_string()
            } else {
                path.to_string()
            }
        })
    }

    /// Moves the backup's pg_control into place and removes the marker: the directory can
    /// start.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let pgdata = &self.pgdata;
        self.unfinished.done_if_ok(|| {
            let control = pgdata.join(PG_CONTROL);
            std::fs::rename(pgdata.join(PG_CONTROL_NEW), &control)
                .with_context(|| format!("cannot write {}", control.display()))?;
            common::durable::fsync_dir(control.parent().expect("global/"))?;
            std::fs::remove_file(pgdata.join(PENDING))
                .with_context(|| format!("cannot remove {}", pgdata.join(PENDING).display()))?;
            common::durable::fsync_dir(pgdata)?;
            anyhow::Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_identifier_of_an_initdb_data_directory_matches_pg_controldata() {
        let pg = test_support::pg::PgCluster::start();
        let mut cmd = std::process::Command::new(test_support::pg::pg_bin("pg_controldata"));
        cmd.arg(&pg.data_dir);
        let out = test_support::pg::run_checked(&mut cmd, "pg_controldata");
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("Database system identifier:"))
            .unwrap()
            .trim()
            .to_string();
        let found = system_identifier(&pg.data_dir).unwrap();
        assert_eq!(found.to_string(), expected);
    }

    #[test]
    fn a_directory_without_pg_control_is_not_a_data_directory_unless_a_delta_was_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let err = system_identifier(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a data directory"), "{err}");
        std::fs::write(dir.path().join(PENDING), "7365012345678901234\n").unwrap();
        assert_eq!(system_identifier(dir.path()).unwrap(), 7365012345678901234);
    }
}
