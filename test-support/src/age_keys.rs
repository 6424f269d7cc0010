//! age keys for the encryption tests, made by the Debian `age-keygen` CLI (so the tests also
//! show our files interoperate with it), in a directory the database user can read, and a
//! config file carrying them to PostgreSQL's archive_command / restore_command.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// One age key pair in files.
#[derive(Debug)]
pub struct AgeKeys {
    pub dir: TempDir,
    /// `age-keygen` output: the secret key with a `# public key:` comment.
    pub identity_file: PathBuf,
    /// The public key, `age1...`.
    pub recipient: String,
    /// The secret key line, `AGE-SECRET-KEY-1...`, for tests that check it never shows.
    pub secret: String,
}

impl AgeKeys {
    /// A new key pair from `age-keygen`.
    pub fn generate() -> AgeKeys {
        let dir = crate::os_user::db_tempdir("age-keys-");
        let identity_file = dir.path().join("identity.txt");
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&identity_file)
            .output()
            .expect("run age-keygen (Debian package age: scripts/install-deps.sh)");
        assert!(
            out.status.success(),
            "age-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&identity_file).unwrap();
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("age-keygen writes the public key as a comment")
            .trim()
            .to_string();
        let secret = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("a secret key line")
            .to_string();
        crate::os_user::give_to_db_user(dir.path());
        AgeKeys {
            dir,
            identity_file,
            recipient,
            secret,
        }
    }

    /// The environment of a tool that writes encrypted.
    pub fn recipients_env(&self) -> Vec<(String, String)> {
        vec![(
            "BACKUP_ENCRYPTION_RECIPIENTS".to_string(),
            self.recipient.clone(),
        )]
    }

    /// The environment of a tool that reads encrypted files.
    pub fn identity_env(&self) -> Vec<(String, String)> {
        vec![(
            "BACKUP_ENCRYPTION_IDENTITY_FILE".to_string(),
            self.identity_file.display().to_string(),
        )]
    }

    /// A config file (mode 0600, owned by the database user) in `dir` with the recipient, the
    /// identity file and `extra` settings: what archive_command and restore_command read.
    pub fn config_file(&self, dir: &Path, extra: &[(String, String)]) -> PathBuf {
        let path = dir.join("pipeline-backup-age.env");
        let vars = self
            .recipients_env()
            .into_iter()
            .chain(self.identity_env())
            .chain(extra.iter().cloned());
        crate::os_user::write_config_file(&path, vars);
        path
    }
}

/// The command lines of every process now running whose command line mentions `needle`
/// (a key must never be on one: `/proc/*/cmdline`).
pub fn cmdlines_containing(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if line.contains(needle) {
                found.push(line);
            }
        }
    }
    found
}
