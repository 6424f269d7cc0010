//! The recovery configuration written into the restored data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::pgconf::quote_value;
use common::storage::Location;

use crate::target::Target;

/// The wal-archive binary used by restore_command: the flag, else the one next to this
/// program, else the one on PATH.
pub fn wal_archive_bin(flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(path) => path.to_path_buf(),
        None => common::toolbin::program("wal-archive"),
    }
}

/// Appends the recovery settings to postgresql.auto.conf (which wins over postgresql.conf)
/// and creates recovery.signal.
pub fn configure(
    pgdata: &Path,
    backup_dir: &Location,
    wal_archive: &Path,
    target: &Target,
    keep_archiving: bool,
    no_archive: bool,
) -> anyhow::Result<()> {
    // The server runs restore_command in its own environment: the config file this run
    // loaded (S3 credentials, endpoint) goes with it.
    let config = match common::config_file::loaded() {
        Some(file) => format!(" --config {}", path_word(file)?),
        None => {
            if backup_dir.is_s3() {
                tracing::warn!(
                    "restore_command reads {backup_dir}: a server started by --start inherits this run's AWS_* settings; one started otherwise needs them in its environment or in a config file (--config FILE / PIPELINE_BACKUP_CONFIG, default /etc/pipeline-backup/env)"
                );
            }
            String::new()
        }
    };
    // Without an archive (checked: only a restore to the backup's end gets here), recovery
    // still asks for timeline history files; "not archived" is the right answer then.
    let config = if no_archive {
        config + " --no-archive-is-empty"
    } else {
        config
    };
    let restore_command = format!(
        "{} fetch %f %p --backup-dir {}{config} -q",
        path_word(wal_archive)?,
        shell_word(&backup_dir.to_string())?
    );
    let mut lines = vec![
        format!(
            "\n# pitr-restore, {}",
            common::timefmt::rfc3339_string(common::timefmt::now())
        ),
        format!("restore_command = {}", quote_value(&restore_command)),
        "recovery_target_timeline = 'latest'".to_string(),
    ];
    for (key, value) in target.settings() {
        lines.push(format!("{key} = {}", quote_value(&value)));
    }
    if *target != Target::Latest {
        lines.push("recovery_target_action = 'promote'".to_string());
    }
    if !keep_archiving {
        // A restored copy must not push a new timeline into the production archive.
        lines.push("archive_mode = 'off'".to_string());
    }
    let auto_conf = pgdata.join("postgresql.auto.conf");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto_conf)
        .with_context(|| format!("cannot write {}", auto_conf.display()))?;
    file.write_all((lines.join("\n") + "\n").as_bytes())?;
    file.sync_all()?;
    let _ = std::fs::remove_file(pgdata.join("standby.signal"));
    common::durable::write_atomic(&pgdata.join("recovery.signal"), b"")?;
    Ok(())
}

/// One word of restore_command, quoted for PostgreSQL and the shell it runs the command with.
fn shell_word(word: &str) -> anyhow::Result<String> {
    common::pgconf::command_word(word)
        .with_context(|| format!("'{word}' cannot be written into restore_command"))
}

/// A path as a word of restore_command: it must be text to be written into postgresql.conf.
fn path_word(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| {
        format!(
            "{} is not valid UTF-8, which restore_command needs",
            path.display()
        )
    })?;
    shell_word(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_value("it's"), "'it''s'");
        assert_eq!(
            shell_word("/usr/bin/wal-archive").unwrap(),
            "/usr/bin/wal-archive"
        );
        assert_eq!(shell_word("/my dir").unwrap(), "'/my dir'");
        assert_eq!(shell_word("/backups/100%").unwrap(), "'/backups/100%%'");
        use std::os::unix::ffi::OsStrExt;
        let not_text = Path::new(std::ffi::OsStr::from_bytes(b"/x\xff"));
        let err = path_word(not_text).unwrap_err().to_string();
        assert!(
            err.ends_with("is not valid UTF-8, which restore_command needs"),
            "{err}"
        );
    }
}
