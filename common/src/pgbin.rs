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
