//! The recovery configuration written into the restored data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::storage::Location;

use crate::target::Target;

/// Quotes a value for postgresql.conf.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The wal-archive binary used by restore_command: the flag, else the one next to this
/// program, else a PATH lookup.
pub fn wal_archive_bin(flag: Option<&Path>) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("wal-archive")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("wal-archive"))
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
        Some(file) => format!(" --config {}", shell_word(&file.display().to_string())),
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
        shell_word(&wal_archive.display().to_string()),
        shell_word(&backup_dir.to_string())
    );
    let mut lines = vec![
        format!(
            "\n# pitr-restore, {}",
            common::timefmt::rfc3339_string(common::timefmt::now())
        ),
        format!("restore_command = {}", quote(&restore_command)),
        "recovery_target_timeline = 'latest'".to_string(),
    ];
    for (key, value) in target.settings() {
        lines.push(format!("{key} = {}", quote(&value)));
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

/// Single-quotes a word for the shell PostgreSQL runs restore_command with.
fn shell_word(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(shell_word("/usr/bin/wal-archive"), "/usr/bin/wal-archive");
        assert_eq!(shell_word("/my dir"), "'/my dir'");
    }
}
