//! What checks and drills make for a while and must not leave behind: scratch directories and
//! the PostgreSQL servers started on them. Both are undone when dropped, and also when the
//! run is interrupted (SIGINT, SIGTERM), through `common::interrupt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::interrupt::{self, Cleanup, Undo};
use common::os_user;

use crate::tools;

/// A temporary directory, removed on drop or interruption.
#[derive(Debug)]
pub struct ScratchDir {
    /// Taken out by [`ScratchDir::keep`].
    dir: Option<tempfile::TempDir>,
    _cleanup: Cleanup,
}

impl ScratchDir {
    /// A fresh directory named `<prefix>XXXX` in `parent`, or in the system's temp dir.
    pub fn create(parent: Option<&Path>, prefix: &str) -> std::io::Result<ScratchDir> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent)?,
            None => builder.tempdir()?,
        };
        let cleanup = interrupt::remove_dir_on_interrupt(dir.path().to_path_buf());
        Ok(ScratchDir {
            dir: Some(dir),
            _cleanup: cleanup,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("kept only by keep(self)").path()
    }

    /// Keeps the directory (`--keep`): it is neither removed on drop nor on interruption.
    pub fn keep(mut self) -> PathBuf {
        self.dir.take().expect("kept once").keep()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Interrupted, the watcher removes it, after stopping the servers that use it.
        interrupt::checkpoint();
    }
}

/// `pg_ctl stop` in `mode` (fast keeps it clean, immediate throws it away) as the database OS
/// user, when a server runs on `data_dir`.
pub fn stop_server(data_dir: &Path, mode: &str) -> anyhow::Result<()> {
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    let mut cmd = Command::new(common::pgbin::program("pg_ctl"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-w", "-t", "60", "-m", mode, "stop"]);
    os_user::as_db_user(&mut cmd)?;
    tools::checked(&mut cmd, "pg_ctl stop")?;
    Ok(())
}

/// An interruption stops the server on `data_dir` (immediate mode) until this is dropped.
pub fn stop_server_on_interrupt(data_dir: PathBuf) -> Cleanup {
    interrupt::on_interrupt(move || stop_immediately(&data_dir))
}

/// A server on `data_dir` (started or not yet) is stopped (immediate mode) when this is
/// dropped, or when the run is interrupted.
pub fn stopped_at_the_end(data_dir: PathBuf) -> Undo {
    Undo::new(move || stop_immediately(&data_dir))
}

fn stop_immediately(data_dir: &Path) {
    if let Err(e) = stop_server(data_dir, "immediate") {
        tracing::warn!("cannot stop the server on {}: {e:#}", data_dir.display());
    }
}
