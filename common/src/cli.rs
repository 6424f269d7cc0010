//! Argument groups shared by the tools, flattened into each tool's clap `Args`.
//!
//! Every connection flag falls back to the environment variable libpq and the shell scripts
//! these tools replace use. Passwords are never flags: only `PGPASSWORD` or the password file.

use std::path::PathBuf;

use clap::Args;

use crate::env;
use crate::output::OutputFormat;
use crate::retention::{Gfs, RetentionPolicy};
use crate::storage::Location;

/// Verbosity and output format, accepted by every tool and subcommand.
#[derive(Debug, Clone, Args, Default)]
pub struct GlobalArgs {
    /// More log detail on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr, no progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Format of the results on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,
    /// File of KEY=VALUE lines with the environment variables' names, read first; variables
    /// already set win [default: /etc/pipeline-backup/env when it exists].
    #[arg(long, global = true, env = env::PIPELINE_BACKUP_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where the PostgreSQL server is, libpq style.
#[derive(Debug, Clone, Args, Default)]
pub struct PgArgs {
    /// Server host name, or a Unix-socket directory when it starts with '/'.
    #[arg(long, env = env::PGHOST)]
    pub host: Option<String>,
    /// Server port.
    #[arg(long, env = env::PGPORT)]
    pub port: Option<u16>,
    /// Role to connect as [default: the OS user name].
    #[arg(long, short = 'U', env = env::PGUSER)]
    pub user: Option<String>,
    /// Database to connect to [default: the role name; `postgres` for work that needs no
    /// particular database, such as a base backup or slot status].
    #[arg(long, short = 'd', env = env::PGDATABASE)]
    pub dbname: Option<String>,
}

/// The database of server-wide work when none is named, as `pg_basebackup` and `psql -l` use.
pub const SERVER_DBNAME: &str = "postgres";

impl PgArgs {
    /// These settings for work that needs no particular database (a base backup, slot status):
    /// without `--dbname` or `PGDATABASE` they name [`SERVER_DBNAME`] rather than libpq's
    /// default, the role name, which a replication role seldom has a database of.
    pub fn for_server_work(&self) -> PgArgs {
        let mut pg = self.clone();
        if pg.dbname.as_deref().is_none_or(str::is_empty) {
            pg.dbname = Some(SERVER_DBNAME.to_string());
        }
        pg
    }

    /// The host to use: the flag, else the first libpq default socket directory that exists,
    /// else `localhost`.
    pub fn host(&self) -> String {
        if let Some(host) = self.host.as_deref().filter(|h| !h.is_empty()) {
            return host.to_string();
        }
        for dir in ["/var/run/postgresql", "/tmp"] {
            let socket = format!("{dir}/.s.PGSQL.{}", self.port());
            if std::path::Path::new(&socket).exists() {
                return dir.to_string();
            }
        }
        "localhost".to_string()
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(5432)
    }

    pub fn user(&self) -> String {
        self.user
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(os_user_name)
    }

    pub fn dbname(&self) -> String {
        self.dbname
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.user())
    }

    /// The password from `PGPASSWORD`, else from the password file, else none.
    pub fn password(&self) -> Option<String> {
        if let Ok(password) = std::env::var(env::PGPASSWORD) {
            return Some(password);
        }
        crate::pgpass::lookup(&self.host(), self.port(), &self.dbname(), &self.user())
    }

    /// Environment for a libpq child process (pg_dump, pg_basebackup, psql): the resolved
    /// connection settings as `PG*` variables, so nothing secret lands in argv.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            (env::PGHOST, self.host()),
            (env::PGPORT, self.port().to_string()),
            (env::PGUSER, self.user()),
            (env::PGDATABASE, self.dbname()),
        ];
        if let Ok(password) = std::env::var(env::PGPASSWORD) {
            vars.push((env::PGPASSWORD, password));
        }
        vars
    }

    /// A short description for logs and manifests, never containing the password.
    pub fn describe(&self) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.host(),
            self.port(),
            self.user(),
            self.dbname()
        )
    }
}

/// The OS user name, libpq's default role.
pub fn os_user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(current_uid_name)
        .unwrap_or_else(|| "postgres".to_string())
}

fn current_uid_name() -> Option<String> {
    crate::os_user::user_name(rustix::process::geteuid().as_raw())
}

/// The backup repository location.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// Root of the backup repository: a local directory, or s3://BUCKET[/PREFIX] (credentials
    /// and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    /// AWS_REGION, AWS_ENDPOINT_URL, web identity, container credentials or instance
    /// metadata; see the README). Uploads stream in parts of BACKUP_S3_PART_SIZE (default
    /// 64 MiB), BACKUP_S3_UPLOAD_CONCURRENCY (default 2) in flight: part buffers take up to
    /// (concurrency + 1) x part size, 192 MiB by default, on top of the tool's own memory.
    /// A request fails after BACKUP_S3_REQUEST_TIMEOUT (default 5m) without an answer and is
    /// retried for up to BACKUP_S3_RETRY_TIMEOUT (default 60s).
    #[arg(long, env = env::BACKUP_DIR, default_value = env::DEFAULT_BACKUP_DIR)]
    pub backup_dir: Location,
}

/// Retention of complete backup sets. A set is deleted only when no rule keeps it, and the
/// newest complete set is always kept.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Keep sets younger than this many days (0 turns the age rule off).
    #[arg(long, env = env::RETENTION_DAYS)]
    pub retention_days: Option<u32>,
    /// Always keep at least this many newest complete sets.
    #[arg(long)]
    pub keep_count: Option<usize>,
    /// Grandfather-father-son: keep the newest set of each of the last N days.
    #[arg(long)]
    pub keep_daily: Option<usize>,
    /// ... of each of the last N ISO weeks.
    #[arg(long)]
    pub keep_weekly: Option<usize>,
    /// ... of each of the last N months.
    #[arg(long)]
    pub keep_monthly: Option<usize>,
    /// ... of each of the last N years.
    #[arg(long)]
    pub keep_yearly: Option<usize>,
    /// Do not apply retention after the backup.
    #[arg(long)]
    pub no_retention: bool,
    /// Print what retention would delete, delete nothing.
    #[arg(long)]
    pub dry_run_retention: bool,
    /// Incomplete sets (left by a killed run, with any S3 upload it left open) are removed
    /// once older than this; younger ones may still be running.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub incomplete_grace: std::time::Duration,
}

impl RetentionArgs {
    /// The policy, with `default_days` when neither the flag nor `RETENTION_DAYS` is set.
    pub fn policy(&self, default_days: u32) -> RetentionPolicy {
        let days = self.retention_days.unwrap_or(default_days);
        let gfs = Gfs {
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            yearly: self.keep_yearly.unwrap_or(0),
        };
        RetentionPolicy {
            max_age_days: (days > 0).then_some(days),
            keep_count: self.keep_count,
            gfs,
            incomplete_grace: self.incomplete_grace,
        }
    }
}

/// Where the Kafka cluster is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Comma-separated host:port list of brokers.
    #[arg(long, short = 'b', env = env::KAFKA_BOOTSTRAP_SERVERS)]
    pub bootstrap_servers: String,
    /// Extra librdkafka property as key=value (repeatable), e.g. -X security.protocol=SASL_SSL.
    /// Secrets are better given in KAFKA_CLIENT_CONFIG, which is not visible in the process list.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = crate::kafka::parse_key_value)]
    pub client_config: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_defaults_follow_libpq() {
        let args = PgArgs {
            user: Some("alice".into()),
            ..PgArgs::default()
        };
        assert_eq!(args.dbname(), "alice");
        assert_eq!(args.port(), 5432);
        assert!(!args.describe().contains("password"));
    }

    #[test]
    fn server_work_defaults_to_the_postgres_database() {
        let args = PgArgs {
            user: Some("replicator".into()),
            ..PgArgs::default()
        };
        assert_eq!(args.for_server_work().dbname(), "postgres");
        assert_eq!(args.for_server_work().user(), "replicator");
        let named = PgArgs {
            dbname: Some("app".into()),
            ..args
        };
        assert_eq!(named.for_server_work().dbname(), "app");
    }
}
