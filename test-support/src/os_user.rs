//! Running as the database's OS user when the tests run as root: `common::os_user`, with
//! failures as panics.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

pub use common::os_user::DB_OS_USER;

/// (uid, gid) of the database user, or None when we are not root (run as ourselves then).
pub fn db_user_ids() -> Option<(u32, u32)> {
    common::os_user::db_user_ids().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Makes `cmd` run as the database user (when we are root), with a HOME it can use.
pub fn as_db_user(cmd: &mut Command) -> &mut Command {
    common::os_user::as_db_user(cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Hands a path (recursively) to the database user (when we are root).
pub fn give_to_db_user(path: &Path) {
    common::os_user::give_to_db_user(path).unwrap_or_else(|e| panic!("{e:#}"));
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

/// Writes `KEY=VALUE` lines as a config file for `--config FILE`: mode 0600, owned by the
/// database user, so commands PostgreSQL runs (archive_command, restore_command) can read it.
pub fn write_config_file(path: &Path, vars: impl IntoIterator<Item = (String, String)>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    for (k, v) in vars {
        writeln!(file, "{k}={v}").unwrap();
    }
    give_to_db_user(path);
}
