//! The recovery configuration written into the restored data directory.

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

/// The file the recovery settings go into (it wins over postgresql.conf).
pub const AUTO_CONF: &str = "postgresql.auto.conf";
/// The line that starts the settings this tool appends.
const BLOCK_MARK: &str = "# pitr-restore, ";

/// postgresql.auto.conf without the recovery settings an earlier restore appended: the
/// content the backup had.
pub fn without_recovery_block(text: &[u8]) -> &[u8] {
    // The block is written as a blank line and the mark, after the file's own last line.
    let block = [b"\n", BLOCK_MARK.as_bytes()].concat();
    text.windows(block.len())
        .enumerate()
        .find(|&(at, w)| w == block && (at == 0 || text[at - 1] == b'\n'))
        .map_or(text, |(at, _)| &text[..at])
}

/// Writes the recovery settings into postgresql.auto.conf (in place of those an earlier
/// restore wrote: a delta restore keeps the file) and creates recovery.signal.
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
            "\n{BLOCK_MARK}{}",
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
    let auto_conf = pgdata.join(AUTO_CONF);
    let mut text = match std::fs::read(&auto_conf) {
        Ok(text) => without_recovery_block(&text).to_vec(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", auto_conf.display())),
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice((lines.join("\n") + "\n").as_bytes());
    common::durable::write_atomic(&auto_conf, &text)
        .with_context(|| format!("cannot write {}", auto_conf.display()))?;
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
    fn the_recovery_block_is_replaced_and_strips_back_to_the_backups_file() {
        let dir = tempfile::tempdir().unwrap();
        let original = b"# Do not edit this file manually!\nwork_mem = '8MB'\n";
        std::fs::write(dir.path().join(AUTO_CONF), original).unwrap();
        let location: Location = "/backups".parse().unwrap();
        let wal_archive = Path::new("/usr/bin/wal-archive");
        for target in [Target::Lsn("0/3000000".parse().unwrap()), Target::Latest] {
            configure(dir.path(), &location, wal_archive, &target, false, false).unwrap();
        }
        let text = std::fs::read(dir.path().join(AUTO_CONF)).unwrap();
        assert_eq!(without_recovery_block(&text), original);
        let shown = String::from_utf8_lossy(&text);
        assert_eq!(shown.matches(BLOCK_MARK).count(), 1, "{shown}");
        assert!(!shown.contains("recovery_target_lsn"), "{shown}");
        // No file before: the block alone, which strips to nothing.
        let empty = tempfile::tempdir().unwrap();
        configure(
            empty.path(),
            &location,
            wal_archive,
            &Target::Latest,
            false,
            false,
        )
        .unwrap();
        let text = std::fs::read(empty.path().join(AUTO_CONF)).unwrap();
        assert_eq!(without_recovery_block(&text), b"");
        assert_eq!(
            without_recovery_block(b"a = 1\n# pitr-restore, x"),
            b"a = 1\n# pitr-restore, x"
        );
    }

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
