//! The configuration file: `KEY=VALUE` lines with the names of the environment variables.
//!
//! `--config FILE`, else `PIPELINE_BACKUP_CONFIG`, else `/etc/pipeline-backup/env` when it
//! exists. It is read before the arguments are parsed, so every `env =` fallback of a flag sees
//! its values, and it only fills in: a variable already in the environment wins.
//!
//! ```text
//! # /etc/pipeline-backup/env
//! BACKUP_DIR=/backups/repo
//! export PGHOST=db.internal
//! SMTP_PASSWORD='...'          # a secret: the file must then be mode 0600 (or 0400)
//! ```
//!
//! Blank lines and lines starting with `#` are skipped; `export ` before a key and one pair of
//! matching quotes around a value are removed. A file holding a secret (a password, token or
//! webhook URL) is refused when its group or others may read it, as ssh refuses a readable key.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::env;

/// Where the file is looked for when neither `--config` nor `PIPELINE_BACKUP_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/pipeline-backup/env";

/// Why the configuration file was not used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} line {line}: expected KEY=VALUE")]
    Syntax { path: PathBuf, line: usize },
    #[error(
        "config file {path} holds {key} but group or others may read it (mode {mode:03o}): \
         chmod 600 {path}"
    )]
    Exposed {
        path: PathBuf,
        key: String,
        mode: u32,
    },
    #[error("--config needs a file name")]
    MissingValue,
}

/// One `KEY=VALUE` setting of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

/// Finds the file (argv, then `PIPELINE_BACKUP_CONFIG`, then the default), checks it and sets
/// each of its variables that the environment does not already have. Returns the file used.
///
/// Call before any thread starts: it changes the process environment.
pub fn load(args: &[OsString]) -> Result<Option<PathBuf>, ConfigFileError> {
    let (path, explicit) = locate(args)?;
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigFileError::Read { path, source }),
    };
    let settings = parse(&text).map_err(|line| ConfigFileError::Syntax {
        path: path.clone(),
        line,
    })?;
    check_exposure(&path, &settings)?;
    for Setting { key, value } in settings {
        if std::env::var_os(&key).is_none() {
            std::env::set_var(&key, value);
        }
    }
    let _ = LOADED.set(std::path::absolute(&path).unwrap_or_else(|_| path.clone()));
    Ok(Some(path))
}

static LOADED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The config file this process loaded (absolute), if any: commands the tool writes for
/// other processes (PostgreSQL's restore_command) pass it on with `--config`.
pub fn loaded() -> Option<&'static std::path::Path> {
    LOADED.get().map(PathBuf::as_path)
}

/// The file to read and whether it was named (a named file must exist; the default need not).
fn locate(args: &[OsString]) -> Result<(PathBuf, bool), ConfigFileError> {
    if let Some(path) = from_args(args)? {
        return Ok((path, true));
    }
    if let Some(path) = std::env::var_os(env::PIPELINE_BACKUP_CONFIG).filter(|p| !p.is_empty()) {
        return Ok((PathBuf::from(path), true));
    }
    Ok((PathBuf::from(DEFAULT_PATH), false))
}

/// `--config FILE` or `--config=FILE` in argv (the last one wins, as clap's would), up to `--`.
fn from_args(args: &[OsString]) -> Result<Option<PathBuf>, ConfigFileError> {
    let mut found = None;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let Some(arg) = arg.to_str() else { continue };
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            let value = iter.next().ok_or(ConfigFileError::MissingValue)?;
            found = Some(PathBuf::from(value));
        } else if let Some(value) = arg.strip_prefix("--config=") {
            if value.is_empty() {
                return Err(ConfigFileError::MissingValue);
            }
            found = Some(PathBuf::from(value));
        }
    }
    Ok(found)
}

/// The settings of a file, or the number of the first line that is not one.
pub fn parse(text: &str) -> Result<Vec<Setting>, usize> {
    let mut settings = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = line.split_once('=').ok_or(index + 1)?;
        let key = key.trim_end();
        if !is_name(key) {
            return Err(index + 1);
        }
        settings.push(Setting {
            key: key.to_string(),
            value: unquote(value.trim()).to_string(),
        });
    }
    Ok(settings)
}

/// An environment variable name: a letter or `_`, then letters, digits or `_`.
fn is_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value without one pair of matching surrounding quotes.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// True for variables whose values are credentials: they may sit only in a private file.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN"]
        .iter()
        .any(|word| key.contains(word))
        || [
            env::SLACK_WEBHOOK_URL,
            env::BACKUP_NOTIFICATION_WEBHOOK,
            env::KAFKA_CLIENT_CONFIG,
        ]
        .contains(&key.as_str())
}

fn check_exposure(path: &Path, settings: &[Setting]) -> Result<(), ConfigFileError> {
    let Some(secret) = settings.iter().find(|s| is_secret_key(&s.key)) else {
        return Ok(());
    };
    let mode = std::fs::metadata(path)
        .map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigFileError::Exposed {
            path: path.to_path_buf(),
            key: secret.key.clone(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_comments_exports_and_quotes() {
        let text = "# comment\n\n  BACKUP_DIR=/backups/repo\nexport PGHOST = db.internal\n\
                    A='single # kept'\nB=\"double\"\nC=\"unbalanced'\nD=a=b\nE=\n";
        let got = parse(text).unwrap();
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("BACKUP_DIR", "/backups/repo"),
                ("PGHOST", "db.internal"),
                ("A", "single # kept"),
                ("B", "double"),
                ("C", "\"unbalanced'"),
                ("D", "a=b"),
                ("E", ""),
            ]
        );
    }

    #[test]
    fn rejects_lines_that_are_not_settings() {
        assert_eq!(parse("A=1\njust words\n"), Err(2));
        assert_eq!(parse("1A=x"), Err(1));
        assert_eq!(parse("=x"), Err(1));
        assert_eq!(parse("A B=x"), Err(1));
    }

    #[test]
    fn finds_the_file_in_argv() {
        assert_eq!(from_args(&args(&["tool", "list"])).unwrap(), None);
        assert_eq!(
            from_args(&args(&["tool", "--config", "/a", "push"])).unwrap(),
            Some(PathBuf::from("/a"))
        );
        assert_eq!(
            from_args(&args(&["tool", "--config=/a", "--config=/b"])).unwrap(),
            Some(PathBuf::from("/b"))
        );
        assert_eq!(
            from_args(&args(&["tool", "--", "--config=/a"])).unwrap(),
            None
        );
        assert!(matches!(
            from_args(&args(&["tool", "--config"])),
            Err(ConfigFileError::MissingValue)
        ));
    }

    #[test]
    fn secret_keys() {
        for key in [
            "PGPASSWORD",
            "SMTP_PASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "SLACK_WEBHOOK_URL",
            "BACKUP_NOTIFICATION_WEBHOOK",
            "KAFKA_CLIENT_CONFIG",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "PGHOST",
            "BACKUP_DIR",
            "SMTP_HOST",
            "BACKUP_EMAIL_RECIPIENT",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    fn file_with(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_readable_file_may_not_hold_secrets() {
        let (_dir, path) = file_with("PGHOST=x\nSMTP_PASSWORD=hunter2\n", 0o644);
        let settings = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let error = check_exposure(&path, &settings).unwrap_err();
        let line = error.to_string();
        assert!(
            line.contains("SMTP_PASSWORD") && line.contains("644"),
            "{line}"
        );
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(!line.contains("hunter2"), "{line}");

        let (_dir, private) = file_with("SMTP_PASSWORD=hunter2\n", 0o600);
        check_exposure(&private, &parse("SMTP_PASSWORD=x").unwrap()).unwrap();
        let (_dir, public) = file_with("PGHOST=x\n", 0o644);
        check_exposure(&public, &parse("PGHOST=x").unwrap()).unwrap();
    }

    #[test]
    fn loads_without_overriding_the_environment() {
        let (_dir, path) = file_with(
            "PIPELINE_BACKUP_CONFIG_TEST_NEW=from-file\nPIPELINE_BACKUP_CONFIG_TEST_SET=from-file\n",
            0o600,
        );
        std::env::set_var("PIPELINE_BACKUP_CONFIG_TEST_SET", "from-env");
        let argv = vec![
            OsString::from("tool"),
            OsString::from("--config"),
            path.clone().into_os_string(),
        ];
        assert_eq!(load(&argv).unwrap(), Some(path.clone()));
        assert_eq!(
            std::env::var("PIPELINE_BACKUP_CONFIG_TEST_NEW").unwrap(),
            "from-file"
        );
        assert_eq!(
            std::env::var("PIPELINE_BACKUP_CONFIG_TEST_SET").unwrap(),
            "from-env"
        );

        let missing = vec![
            OsString::from("tool"),
            OsString::from(format!(
                "--config={}",
                path.with_extension("nope").display()
            )),
        ];
        let error = load(&missing).unwrap_err().to_string();
        assert!(error.starts_with("cannot read config file "), "{error}");
    }
}
