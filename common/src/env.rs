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
/// The configuration file of `KEY=VALUE` lines (`--config`); see [`crate::config_file`].
pub const PIPELINE_BACKUP_CONFIG: &str = "PIPELINE_BACKUP_CONFIG";

// Notifications (see [`crate::notify`]): configured here only, never on argv.

/// A URL that receives each notification as a JSON POST (the run's summary and outcome).
pub const BACKUP_NOTIFICATION_WEBHOOK: &str = "BACKUP_NOTIFICATION_WEBHOOK";
/// A Slack incoming-webhook URL that receives each notification as a message.
pub const SLACK_WEBHOOK_URL: &str = "SLACK_WEBHOOK_URL";
/// Mail address(es), comma-separated, that receive each notification (needs `SMTP_HOST`).
pub const BACKUP_EMAIL_RECIPIENT: &str = "BACKUP_EMAIL_RECIPIENT";
/// The mail server that delivers notifications.
pub const SMTP_HOST: &str = "SMTP_HOST";
/// Its port [default: 465 with `SMTP_TLS=wrapper`, 587 with `required`, else 25].
pub const SMTP_PORT: &str = "SMTP_PORT";
/// User name for SMTP AUTH (with `SMTP_PASSWORD`).
pub const SMTP_USERNAME: &str = "SMTP_USERNAME";
/// Password for SMTP AUTH; sent only over TLS unless `SMTP_TLS=off`.
pub const SMTP_PASSWORD: &str = "SMTP_PASSWORD";
/// Sender address of notification mail [default: `pipeline-backup@<host name>`].
pub const SMTP_FROM: &str = "SMTP_FROM";
/// `opportunistic` (default: STARTTLS when offered), `required` (STARTTLS or fail),
/// `wrapper` (TLS from the first byte, SMTPS) or `off`.
pub const SMTP_TLS: &str = "SMTP_TLS";
/// `failure` (default) or `always` (successes too).
pub const BACKUP_NOTIFY_ON: &str = "BACKUP_NOTIFY_ON";
/// Shortest time between two notifications of a rate-limited run (`wal-archive push`,
/// `cdc-slot-tool status` and `heartbeat`) on one host [default: 10m].
pub const BACKUP_NOTIFY_INTERVAL: &str = "BACKUP_NOTIFY_INTERVAL";
/// Set by a tool for the tools it runs on throwaway data (validate-backups' drill and test
/// restores): they then send nothing, and the parent reports the outcome.
pub const BACKUP_NOTIFY_PARENT: &str = "BACKUP_NOTIFY_PARENT";
/// Directory of the rate limit's state [default: `$XDG_STATE_HOME/pipeline-backup`, else
/// `<temp dir>/pipeline-backup-<uid>`].
pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";

/// Default repository when neither `--backup-dir` nor `BACKUP_DIR` is given (where the shell
/// scripts these tools replace kept their backups).
pub const DEFAULT_BACKUP_DIR: &str = "/backups";

/// True when the variable is set to anything non-empty.
pub fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}
