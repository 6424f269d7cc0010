//! Password lookup in libpq's password file (`PGPASSFILE` or `~/.pgpass`).
//!
//! Format: `hostname:port:database:username:password`, `*` matches anything, `\` escapes `:`
//! and `\`. Like libpq, the file is ignored when group or others can read it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::env;

fn passfile() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env::PGPASSFILE) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass"))
}

/// The password for these connection settings, if the password file has one.
pub fn lookup(host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let path = passfile()?;
    let meta = std::fs::metadata(&path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; ignoring it (chmod 0600)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    // libpq matches "localhost" for Unix-socket connections.
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    find(&text, host, &port.to_string(), dbname, user)
}

fn find(text: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let fields = split_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let wanted = [host, port, dbname, user];
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            matches.then(|| fields[4].clone())
        })
}

fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_wildcards_and_escapes() {
        let text = "# comment\ndb1:5432:app:bob:first\n*:*:*:alice:pa\\:ss\\\\w:rd\n";
        assert_eq!(
            find(text, "db1", "5432", "app", "bob").as_deref(),
            Some("first")
        );
        assert_eq!(
            find(text, "x", "1", "y", "alice").as_deref(),
            Some("pa:ss\\w:rd")
        );
        assert_eq!(find(text, "x", "1", "y", "carol"), None);
    }
}
