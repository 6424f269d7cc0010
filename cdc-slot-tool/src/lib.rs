//! cdc-slot-tool: back up logical replication slots and publications, recreate them after a
//! restore (telling consumers exactly which changes they can no longer stream), watch slot
//! lag and WAL retention, and keep idle slots moving with heartbeats.
//!
//! A physical base backup never carries usable slots, so after a point-in-time restore every
//! CDC consumer either loses or duplicates changes unless someone works out where its slot
//! stood and what the restored server's history looks like. That is this tool's job.
#![forbid(unsafe_code)]

mod backup;
mod continuity;
mod heartbeat;
mod history;
mod inventory;
mod metrics;
mod publications;
mod recreate;
mod restore;
mod server;
mod size;
mod status;

use clap::{Parser, Subcommand};
use common::cli::GlobalArgs;
use common::Status;

pub use backup::{BackupArgs, INVENTORY_FILE};
pub use common::lsn::Lsn;
pub use continuity::Verdict;
pub use heartbeat::HeartbeatArgs;
pub use inventory::Inventory;
pub use restore::RestoreArgs;
pub use status::StatusArgs;

/// Back up, restore and monitor PostgreSQL logical replication slots for CDC pipelines.
///
/// Connections use libpq settings: flags or PGHOST, PGPORT, PGUSER, PGDATABASE; the password
/// comes only from PGPASSWORD or the password file.
#[derive(Debug, Parser)]
#[command(name = "cdc-slot-tool", version, after_help = common::exit::EXIT_CODES_HELP)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save every replication slot, the server's WAL position and identity, and the
    /// publications of every database as a backup set in BACKUP_DIR/slots.
    #[command(after_help = with_encryption(common::exit::EXIT_CODES_HELP))]
    Backup(BackupArgs),
    /// Recreate saved logical slots and publications that are missing (typically after
    /// pitr-restore), advance them where possible, and report what consumers lost.
    #[command(after_help = with_encryption(restore::EXIT_CODES_HELP))]
    Restore(RestoreArgs),
    /// Show each slot's lag, WAL status and inactivity; exit 1 when one needs attention.
    #[command(after_help = status::EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// Emit a logical decoding message so slots on quiet databases keep advancing.
    #[command(after_help = common::exit::EXIT_CODES_HELP)]
    Heartbeat(HeartbeatArgs),
}

/// `exit_codes` and the encryption settings, for `--help` of the commands that touch sets.
fn with_encryption(exit_codes: &str) -> String {
    format!(
        "{exit_codes}\n\n{}\nbackup: without recipients, a repository whose newest slots set is encrypted is\nrefused unless --allow-unencrypted. restore: an encrypted set (slots.json.age) needs\nthe identity; slot names are not in its manifest.json.",
        common::encryption::ENCRYPTION_HELP
    )
}

impl common::entry::ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        &self.global
    }

    /// `status` and `heartbeat` run every few minutes: failures only, rate-limited, so a
    /// lagging slot is one message per BACKUP_NOTIFY_INTERVAL rather than one per run.
    fn notify_policy(&self) -> common::notify::Policy {
        use common::notify::Policy;
        match self.command {
            Command::Status(_) | Command::Heartbeat(_) => Policy::FAILURES_RATE_LIMITED,
            Command::Backup(_) | Command::Restore(_) => Policy::CONFIGURED,
        }
    }
}

/// Runs one subcommand.
pub fn run(args: Args) -> anyhow::Result<Status> {
    match &args.command {
        Command::Backup(backup) => backup::run(backup, &args.global),
        Command::Restore(restore) => restore::run(restore, &args.global),
        Command::Status(status) => status::run(status, &args.global),
        Command::Heartbeat(heartbeat) => heartbeat::run(heartbeat, &args.global),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }
}
