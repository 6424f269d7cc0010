//! Running as the database's OS user when the tests run as root.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

/// The name of the OS user servers run as when we are root.
pub const DB_OS_USER: &str = "postgres";

/// (uid, gid) of the database user, or None when we are not root (run as ourselves then).
pub fn db_user_ids() -> Option<(u32, u32)> {
    if current_uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(DB_OS_USER))
        .unwrap_or_else(|| {
            panic!("running as root needs a '{DB_OS_USER}' OS user for PostgreSQL (apt-get install postgresql-15 creates it)")
        });
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Makes `cmd` run as the database user (when we are root), with a HOME it can use.
pub fn as_db_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = db_user_ids() {
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp").env("USER", DB_OS_USER);
    }
    cmd
}

/// Hands a path to the database user (when we are root).
pub fn give_to_db_user(path: &Path) {
    if let Some((uid, gid)) = db_user_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// A temporary directory owned by the database user.
pub fn db_tempdir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory");
    give_to_db_user(dir.path());
    dir
}
