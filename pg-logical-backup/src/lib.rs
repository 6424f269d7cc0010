//! `pg-logical-backup`: logical backups of PostgreSQL databases with pg_dump, all parts of a
//! set taken from one exported snapshot, plus table-level restore and restore verification.
//!
//! Replaces `postgresql-logical-backup.sh` and the dump/restore/verify scripts of the seeds.
//! A set holds, per database, one dump of the whole database (custom format, or directory
//! format with `--jobs`), and once per set the globals (roles, tablespaces). Table and
//! schema restores select their entries from that dump with pg_restore; per-table and
//! schema-only dumps are written only with `--table-dumps` (older sets always have them,
//! and still restore from them). The manifest records the snapshot and the exact row count
//! of every table in that snapshot, so restores and `verify` can prove they got everything
//! back.
//!
//! The repository is a local directory or `s3://BUCKET[/PREFIX]`, both through
//! [`common::storage`]. Dumps stream from pg_dump's stdout into the set's files, and back
//! into pg_restore's stdin on restore (in a local repository pg_restore reads the files by
//! path); only directory-format dumps and parallel restores go through a temporary directory
//! when the repository is on S3 ([`source`], [`dump`]).
//!
//! With recipients in the environment (`BACKUP_ENCRYPTION_RECIPIENTS`...) every file of a set
//! is encrypted (age) and the manifest keeps in clear only what needs no key; restore,
//! verify and restore-globals decrypt with `BACKUP_ENCRYPTION_IDENTITY_FILE` as they read.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

use common::cli::GlobalArgs;
use common::entry::ToolArgs;
use common::Status;

pub mod backup;
pub mod catalog;
pub mod details;
pub mod dump;
pub mod globals;
pub mod integrity;
pub mod list;
pub mod load;
pub mod patterns;
pub mod pgbin;
pub mod restore;
mod restored;
pub mod safety;
pub mod snapshot;
pub mod source;
pub mod target;
pub mod toc;
pub mod verify;

/// Name of the tool, also its `application_name` on the server.
pub const TOOL: &str = "pg-logical-backup";

/// Logical backups of PostgreSQL (pg_dump from one exported snapshot), table-level restore
/// and verification.
///
/// Without a subcommand it takes a backup, like `pg-logical-backup backup`.
#[derive(Debug, Parser)]
#[command(
    name = "pg-logical-backup",
    version,
    after_help = help_with_encryption(),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Backup settings when no subcommand is given.
    #[command(flatten)]
    pub backup: backup::BackupArgs,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a backup (the default).
    #[command(after_help = help_with_encryption())]
    Backup(backup::BackupArgs),
    /// Restore a whole database or selected tables from a backup set.
    #[command(after_help = help_with_encryption())]
    Restore(restore::RestoreArgs),
    /// Check a backup set: checksums and dump lists, a test restore, integrity checks.
    #[command(after_help = help_with_encryption())]
    Verify(verify::VerifyArgs),
    /// List the logical backup sets of the repository (an encrypted set's contents only
    /// with its identity).
    #[command(after_help = help_with_encryption())]
    List(list::ListArgs),
    /// Restore the roles and tablespaces of a set (its `pg_dumpall --globals-only` script),
    /// e.g. before restoring databases onto a new cluster. Exit 1 when a statement failed for
    /// another reason than the object already existing.
    #[command(after_help = help_with_encryption())]
    RestoreGlobals(globals::RestoreGlobalsArgs),
}

/// The exit codes and the encryption settings, for `--help`.
fn help_with_encryption() -> String {
    format!(
        "{}\n\n{}\nA backup without recipients into a repository whose newest logical set is encrypted\nis refused unless --allow-unencrypted. An encrypted set's manifest.json names no\ndatabase or table: restore, verify and restore-globals need the identity.",
        common::exit::EXIT_CODES_HELP,
        common::encryption::ENCRYPTION_HELP
    )
}

impl ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        &self.global
    }
}

/// Runs the tool; see [`common::exit`] for what the result means as an exit code.
pub fn run(args: Args) -> anyhow::Result<Status> {
    let global = args.global;
    match args.command {
        None => backup::run(args.backup, &global),
        Some(Command::Backup(backup)) => backup::run(backup, &global),
        Some(Command::Restore(restore)) => restore::run(restore, &global),
        Some(Command::Verify(verify)) => verify::run(verify, &global),
        Some(Command::List(list)) => list::run(list, &global),
        Some(Command::RestoreGlobals(args)) => globals::run(args, &global),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_backup() {
        let args = Args::try_parse_from(["pg-logical-backup", "--table", "public.a"]).unwrap();
        assert!(args.command.is_none());
        assert_eq!(args.backup.table, vec!["public.a".to_string()]);
        let args = Args::try_parse_from([
            "pg-logical-backup",
            "restore",
            "--target-db",
            "x",
            "--table",
            "t",
            "--yes",
        ])
        .unwrap();
        assert!(matches!(args.command, Some(Command::Restore(_))));
    }
}
