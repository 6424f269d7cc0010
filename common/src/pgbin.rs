//! Finding PostgreSQL's client programs (pg_basebackup, pg_dump, pg_ctl, ...).

use std::path::{Path, PathBuf};

/// Overrides the directory of PostgreSQL programs.
pub const PG_BIN_DIR: &str = "PG_BIN_DIR";

/// Where Debian's PostgreSQL 15 packages put the programs: tried first.
pub const DEFAULT_PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Directories tried, newest major version first, before falling back to PATH.
const CANDIDATES: [&str; 3] = [
    DEFAULT_PG_BIN_DIR,
    "/usr/local/pgsql/bin",
    "/usr/pgsql-15/bin",
];

/// The path of a PostgreSQL program: `$PG_BIN_DIR/<program>`, else a known install location,
/// else the bare name for a PATH lookup.
pub fn program(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(PG_BIN_DIR).filter(|d| !d.is_empty()) {
        return Path::new(&dir).join(name);
    }
    CANDIDATES
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A hint for errors when a program cannot be started.
pub fn missing_hint(name: &str) -> String {
    format!("cannot run {name}: install the PostgreSQL 15 client tools or set {PG_BIN_DIR}")
}

/// The error a PostgreSQL program reported, as one line: its first `<program>: error: ...`
/// line with the lines that continue it (libpq's indented ones, `detail:` and `hint:`),
/// without the program's name. `None` when its stderr holds no such line.
///
/// The cause is there, not in the last lines: when the server goes away, libpq's message
/// ends with "before or while processing the request." and pg_dump's with the query it ran.
pub fn error_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines().map(str::trim_end);
    let first = lines.find_map(|line| {
        let (_, rest) = line.split_once(": error: ")?;
        (!line.starts_with(char::is_whitespace)).then_some(rest)
    })?;
    let mut message = first.trim().to_string();
    for line in lines {
        if line.starts_with(char::is_whitespace) {
            message.push(' ');
            message.push_str(line.trim());
            continue;
        }
        let Some((_, rest)) = line.split_once(": ") else {
            break;
        };
        if rest.starts_with("detail: ") || rest.starts_with("hint: ") {
            message.push_str(" / ");
            message.push_str(rest.trim());
        } else {
            break;
        }
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::error_message;

    #[test]
    fn error_message_is_the_error_line_with_its_continuations() {
        // pg_basebackup when the server restarts under it: the cause is on the first line.
        let basebackup = "pg_basebackup: error: could not read COPY data: server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.\n";
        assert_eq!(
            error_message(basebackup).as_deref(),
            Some("could not read COPY data: server closed the connection unexpectedly This probably means the server terminated abnormally before or while processing the request.")
        );
        // pg_dump: details follow, and a later unrelated line is left out.
        let dump = "pg_dump: warning: something first\npg_dump: error: Dumping the contents of table \"t\" failed: PQgetResult() failed.\npg_dump: detail: Error message from server: server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.\npg_dump: detail: Command was: COPY public.t (g) TO stdout;\npg_dump: removing something\n";
        assert_eq!(
            error_message(dump).as_deref(),
            Some("Dumping the contents of table \"t\" failed: PQgetResult() failed. / detail: Error message from server: server closed the connection unexpectedly This probably means the server terminated abnormally before or while processing the request. / detail: Command was: COPY public.t (g) TO stdout;")
        );
        assert_eq!(error_message("pg_dump: warning: only a warning\n"), None);
        assert_eq!(error_message(""), None);
    }
}
