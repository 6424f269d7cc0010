//! Running PostgreSQL as its own OS user: servers refuse root, so a tool (or a test) that
//! runs as root starts them, and the tools that touch their files, as `postgres`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// The OS user servers run as when we are root.
pub const DB_OS_USER: &str = "postgres";

/// The name `/etc/passwd` gives the user with this uid, if it lists one. Reading the file
/// (rather than `getpwuid`, whose result lives in static storage) is safe from any thread.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    name_of_uid(&passwd, uid)
}

/// The name of the first `/etc/passwd` entry with this uid.
fn name_of_uid(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next().filter(|n| !n.is_empty())?;
        let entry_uid: u32 = fields.nth(1)?.parse().ok()?;
        (entry_uid == uid).then(|| name.to_string())
    })
}

/// (uid, gid) of the database OS user when we are root, None otherwise (run as ourselves).
pub fn db_user_ids() -> anyhow::Result<Option<(u32, u32)>> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(DB_OS_USER))
        .with_context(|| {
            format!("running as root needs a '{DB_OS_USER}' OS user to run PostgreSQL (install postgresql-15, or run as a non-root user)")
        })?;
    let fields: Vec<&str> = line.split(':').collect();
    let uid = fields.get(2).and_then(|f| f.parse().ok());
    let gid = fields.get(3).and_then(|f| f.parse().ok());
    match (uid, gid) {
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => anyhow::bail!("malformed /etc/passwd entry for {DB_OS_USER}"),
    }
}

/// Makes `cmd` run as the database OS user when we are root.
pub fn as_db_user(cmd: &mut Command) -> anyhow::Result<&mut Command> {
    if let Some((uid, gid)) = db_user_ids()? {
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", "/tmp")
            .env("USER", DB_OS_USER);
    }
    Ok(cmd)
}

/// Gives a path (recursively) to the database OS user when we are root.
pub fn give_to_db_user(path: &Path) -> anyhow::Result<()> {
    if let Some((uid, gid)) = db_user_ids()? {
        for entry in walkdir::WalkDir::new(path) {
            let entry = entry?;
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_names_come_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\nbroken\npostgres:x:105:110::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(name_of_uid(passwd, 0).as_deref(), Some("root"));
        assert_eq!(name_of_uid(passwd, 105).as_deref(), Some("postgres"));
        assert_eq!(name_of_uid(passwd, 1000), None);
    }
}
