//! Every environment variable the tools read, one documented constant each.
//!
//! The names are those of the shell scripts the tools replace and of libpq, so existing
//! CronJob manifests and runbooks keep working unchanged.

/// Host name or Unix-socket directory of the PostgreSQL server (libpq).
pub const PGHOST: &str = "PGHOST";
/// TCP port of the PostgreSQL server, also the Unix-socket file suffix (libpq).
pub const PGPORT: &str = "PGPORT";
/// PostgreSQL role to connect as (libpq); defaults to the OS user name.
pub const PGUSER: &str = "PGUSER";
/// Password of the PostgreSQL role (libpq). Read from the environment only, never from argv.
pub const PGPASSWORD: &str = "PGPASSWORD";
/// Database to connect to (libpq); defaults to the role name.
pub const PGDATABASE: &str = "PGDATABASE";
/// Location of the libpq password file; defaults to `~/.pgpass`.
pub const PGPASSFILE: &str = "PGPASSFILE";
/// Root of the backup repository (one folder per backup kind beneath it).
pub const BACKUP_DIR: &str = "BACKUP_DIR";
/// Delete complete backup sets older than this many days (never the newest complete set).
pub const RETENTION_DAYS: &str = "RETENTION_DAYS";
/// Comma-separated `host:port` list of Kafka brokers.
pub const KAFKA_BOOTSTRAP_SERVERS: &str = "KAFKA_BOOTSTRAP_SERVERS";
/// Extra librdkafka client properties, `key=value` separated by newlines or `;`.
pub const KAFKA_CLIENT_CONFIG: &str = "KAFKA_CLIENT_CONFIG";
/// Set to any value to hide progress bars.
pub const BACKUP_NO_PROGRESS: &str = "BACKUP_NO_PROGRESS";
/// Set to any value to turn colour off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// Overrides the log filter (`tracing` `EnvFilter` syntax).
pub const RUST_LOG: &str = "RUST_LOG";

/// Default repository when neither `--backup-dir` nor `BACKUP_DIR` is given (seed 000's path).
pub const DEFAULT_BACKUP_DIR: &str = "/backups";

/// True when the variable is set to anything non-empty.
pub fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}
