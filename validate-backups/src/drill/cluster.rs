//! The drill's throwaway PostgreSQL 15 cluster: initdb, a free port on 127.0.0.1, the socket
//! in the work directory, WAL archived through `wal-archive push`; stopped on drop.
//!
//! The server (through pg_ctl) inherits the drill's environment, so its archive_command
//! reaches an S3 repository with the drill's own `AWS_*` / `BACKUP_S3_*` settings, those of a
//! config file included (`common::entry` loads it into the environment): nothing secret is
//! written into the cluster's configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use common::cli::PgArgs;
use common::interrupt::Cleanup;
use common::os_user;
use common::storage::Location;

use crate::{scratch, tools};

/// A PostgreSQL server the drill started (or restored), stopped on drop.
#[derive(Debug)]
pub struct Server {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    /// Present while it runs: an interruption stops it too.
    running: Option<Cleanup>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn pg_command(program: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new(common::pgbin::program(program));
    os_user::as_db_user(&mut cmd)?;
    Ok(cmd)
}

impl Server {
    /// initdb + start with logical WAL and archiving into `backup_dir` (absolute).
    pub fn create(
        root: &Path,
        backup_dir: &Location,
        wal_archive: &Path,
    ) -> anyhow::Result<Server> {
        let data_dir = root.join("data");
        let mut initdb = pg_command("initdb")?;
        initdb.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        tools::checked(&mut initdb, "initdb")
            .map_err(|e| e.context(common::pgbin::missing_hint("initdb")))?;
        let port = free_port()?;
        let wal_archive = wal_archive.to_str().with_context(|| {
            format!(
                "{} is not valid UTF-8, which archive_command needs",
                wal_archive.display()
            )
        })?;
        let backup = match backup_dir {
            Location::Local(path) => path.to_str().map(str::to_string),
            s3 => Some(s3.to_string()),
        }
        .with_context(|| format!("{backup_dir} is not valid UTF-8, which archive_command needs"))?;
        let archive_command = format!(
            "{} push %p --backup-dir {} -q",
            command_word(wal_archive),
            command_word(&backup),
        );
        let conf = format!(
            "\n# validate-backups drill\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket}'\nwal_level = logical\nmax_wal_senders = 10\n\
             max_replication_slots = 10\narchive_mode = on\n\
             archive_command = '{archive_command}'\n\
             fsync = off\n",
            socket = root.display(),
            archive_command = archive_command.replace('\'', "''"),
        );
        append(&data_dir.join("postgresql.conf"), &conf)?;
        append(
            &data_dir.join("pg_hba.conf"),
            "local replication all trust\nhost replication all 127.0.0.1/32 trust\n",
        )?;
        let mut server = Server {
            data_dir,
            socket_dir: root.to_path_buf(),
            port,
            running: None,
        };
        server.start()?;
        Ok(server)
    }

    /// The server pitr-restore starts (or has started) on `data_dir`.
    pub fn adopt(data_dir: PathBuf, socket_dir: PathBuf, port: u16) -> Server {
        Server {
            running: Some(scratch::stop_server_on_interrupt(data_dir.clone())),
            data_dir,
            socket_dir,
            port,
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.running = Some(scratch::stop_server_on_interrupt(self.data_dir.clone()));
        // Inherits our environment: archive_command needs the repository's settings.
        let mut cmd = pg_command("pg_ctl")?;
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.socket_dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        tools::checked(&mut cmd, "pg_ctl start").with_context(|| {
            format!(
                "the drill's PostgreSQL did not start (log: {})",
                self.socket_dir.join("server.log").display()
            )
        })?;
        Ok(())
    }

    /// Stops the server: `fast` keeps it clean, `immediate` is the simulated crash.
    pub fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        if self.running.is_none() {
            return Ok(());
        }
        scratch::stop_server(&self.data_dir, mode)?;
        self.running = None;
        Ok(())
    }

    /// Connection settings for this server and database.
    pub fn pg_args(&self, dbname: &str) -> PgArgs {
        PgArgs {
            host: Some(self.socket_dir.display().to_string()),
            port: Some(self.port),
            user: Some("postgres".into()),
            dbname: Some(dbname.into()),
        }
    }

    /// Runs SQL and returns the first column of every row as text.
    pub fn query(&self, dbname: &str, sql: &str) -> anyhow::Result<Vec<String>> {
        query(&self.pg_args(dbname), sql)
    }

    /// The single value of a query.
    pub fn value(&self, dbname: &str, sql: &str) -> anyhow::Result<String> {
        self.query(dbname, sql)?
            .into_iter()
            .next()
            .with_context(|| format!("no row from: {sql}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        common::interrupt::checkpoint();
        if let Err(e) = self.stop("immediate") {
            tracing::warn!(
                "could not stop the drill's server on {}: {e:#}",
                self.data_dir.display()
            );
        }
    }
}

/// Runs SQL (simple protocol, several statements allowed) and returns the first column of
/// every row as text.
pub fn query(pg: &PgArgs, sql: &str) -> anyhow::Result<Vec<String>> {
    let runtime = common::postgres::runtime()?;
    runtime.block_on(async {
        let client = common::postgres::connect(pg, "validate-backups-drill").await?;
        let messages = client
            .simple_query(sql)
            .await
            .with_context(|| format!("query failed: {sql}"))?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).unwrap_or("").to_string())
                }
                _ => None,
            })
            .collect())
    })
}

/// One word of a shell command that PostgreSQL runs: shell-quoted unless plain, with `%`
/// doubled (PostgreSQL expands `%p`, `%f` and `%%` in archive_command).
fn command_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b));
    let quoted = if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    };
    quoted.replace('%', "%%")
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Switches to a new WAL segment and waits until the server has archived the one it left.
pub fn switch_and_wait(server: &Server) -> anyhow::Result<()> {
    let segment = server.value("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let archived = server.value(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )?;
        if archived.as_str() >= segment.as_str() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "WAL segment {segment} was not archived within 120s (see {})",
                server.socket_dir.join("server.log").display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_command_words_are_quoted_for_the_shell_and_postgresql() {
        assert_eq!(command_word("/work/backups"), "/work/backups");
        assert_eq!(command_word("s3://bucket/drill"), "s3://bucket/drill");
        assert_eq!(command_word("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(command_word("/tmp/100%"), "'/tmp/100%%'");
    }
}
