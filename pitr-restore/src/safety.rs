//! Checks before anything is written: the data directory is empty (or `--force`), no server
//! runs on it, the user agreed, and the disk has room.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use common::interrupt::Undo;

/// Whether a postmaster is running on `pgdata` (pg_ctl status exits 0 then).
pub fn server_running(pgdata: &Path) -> bool {
    pgdata.join("postmaster.pid").exists()
        && Command::new(common::pgbin::program("pg_ctl"))
            .arg("status")
            .arg("-D")
            .arg(pgdata)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Makes sure `pgdata` can receive the restore: created if missing, refused if it holds
/// anything unless `force` (then a running server on it is stopped and the contents removed).
pub fn prepare_pgdata(pgdata: &Path, force: bool) -> anyhow::Result<()> {
    if !pgdata.exists() {
        common::durable::create_dir_all(pgdata)
            .with_context(|| format!("cannot create {}", pgdata.display()))?;
        return Ok(());
    }
    if !pgdata.is_dir() {
        anyhow::bail!("{} exists and is not a directory", pgdata.display());
    }
    let entries: Vec<_> = std::fs::read_dir(pgdata)
        .with_context(|| format!("cannot read {}", pgdata.display()))?
        .collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Ok(());
    }
    let running = server_running(pgdata);
    if !force {
        if running {
            anyhow::bail!(
                "a PostgreSQL server is running on {}; stop it first (pg_ctl -D {} stop) or pass --force to stop it and replace its data",
                pgdata.display(),
                pgdata.display()
            );
        }
        anyhow::bail!(
            "{} is not empty; pass --force to replace its contents, or restore into an empty directory",
            pgdata.display()
        );
    }
    if running {
        tracing::warn!(
            "--force: stopping the server running on {}",
            pgdata.display()
        );
        let status = Command::new(common::pgbin::program("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(pgdata)
            .stdout(Stdio::null())
            .status()
            .context("cannot run pg_ctl stop")?;
        if !status.success() {
            anyhow::bail!(
                "pg_ctl stop failed on {}; stop the server by hand",
                pgdata.display()
            );
        }
    }
    tracing::warn!("--force: removing the contents of {}", pgdata.display());
    clear(pgdata)
}

/// Removes everything inside `dir`, keeping `dir` itself (it may be a mount point).
fn clear(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// A data directory being restored into: until the returned guard is done, a failure (drop)
/// or an interruption empties it again, so no half-restored cluster is left that a later start
/// could take for a whole one, and a re-run needs no `--force`. It was empty, or emptied with
/// the user's `--force`, before the restore began.
pub fn emptied_unless_done(pgdata: &Path) -> Undo {
    let dir = pgdata.to_path_buf();
    Undo::new(move || {
        tracing::warn!("emptying the unfinished restore in {}", dir.display());
        if let Err(e) = clear(&dir) {
            tracing::warn!("{e:#}");
        }
    })
}

/// Fails when the file system of `dir` has less than `needed` bytes available.
pub fn check_space(dir: &Path, needed: u64) -> anyhow::Result<()> {
    let stat = rustix::fs::statvfs(dir)
        .with_context(|| format!("cannot read free space of {}", dir.display()))?;
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    if available < needed {
        anyhow::bail!(
            "{} has {} MiB free, the restore needs about {} MiB; free space or choose another --pgdata",
            dir.display(),
            available >> 20,
            needed >> 20
        );
    }
    Ok(())
}
