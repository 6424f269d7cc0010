//! Continuous WAL archiving into the backup repository.
//!
//! `push` is PostgreSQL's `archive_command`, `fetch` its `restore_command`; `verify` checks the
//! archive is continuous from the oldest base backup on, and `list` shows what is there.
//! Beside each full segment `push` stores its block summary (`<segment>.blocks.zst`: which
//! relation blocks its records change), which incremental base backups read instead of the
//! WAL itself.
#![forbid(unsafe_code)]

mod fetch;
mod header;
mod push;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use common::cli::{GlobalArgs, RepoArgs};
use common::stream::Compression;
use common::Status;

pub use header::SegmentHeader;

/// Archive and restore PostgreSQL WAL files in the backup repository.
#[derive(Debug, Parser)]
#[command(
    name = "wal-archive",
    version,
    after_help = "In postgresql.conf:\n  archive_mode = on\n  archive_command = 'wal-archive push %p --backup-dir /backups'\n  restore_command = 'wal-archive fetch %f %p --backup-dir /backups'\n\nExit codes:\n  0    success\n  1    fetch: the file is not in the archive; verify: a gap or a damaged file\n  2    error (bad input, unreadable repository, different content already archived)\n  126  fetch: the archive copy is damaged or unreadable (recovery must stop, not end)\n  130  interrupted\n\nNotifications (BACKUP_NOTIFICATION_WEBHOOK, SLACK_WEBHOOK_URL, BACKUP_EMAIL_RECIPIENT; test them\nwith validate-backups --notify-test): push reports failures only, at most one message per\nBACKUP_NOTIFY_INTERVAL (default 10m) per host, the next one counting those held back; fetch never.\n\nEncryption at rest (age; push writes <name>.zst.age):\n  BACKUP_ENCRYPTION_RECIPIENTS       push: comma-separated age1... public keys, or\n  BACKUP_ENCRYPTION_RECIPIENTS_FILE  push: a file of them, one a line (as age -R)\n  BACKUP_ENCRYPTION_IDENTITY_FILE    fetch, verify: age identity file (several keys allowed)\n  BACKUP_ENCRYPTION_PASSPHRASE_FILE  passphrase (scrypt): about a second per file, so not for WAL\nPut them in the --config file that archive_command and restore_command use; never on argv."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive one WAL file (archive_command = 'wal-archive push %p'); of a full segment, also
    /// its block summary (`<segment>.blocks.zst`) for incremental base backups.
    Push {
        /// The file to archive (PostgreSQL's %p, relative to the data directory).
        path: PathBuf,
        #[command(flatten)]
        repo: RepoArgs,
        /// Compression of the archived copy.
        #[arg(long, value_enum, default_value_t = Compression::Zstd)]
        compress: Compression,
        /// Compression level [default: the format's default].
        #[arg(long)]
        compress_level: Option<i32>,
        /// Archive in plaintext even though the archive holds encrypted files (no recipients
        /// set). Without it such a push is refused.
        #[arg(long)]
        allow_unencrypted: bool,
    },
    /// Restore one WAL file (restore_command = 'wal-archive fetch %f %p').
    Fetch {
        /// The WAL file name PostgreSQL asks for (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        #[command(flatten)]
        repo: RepoArgs,
        /// Treat a repository without a WAL archive as an empty archive (exit 1) instead of
        /// a broken one (126). pitr-restore sets it for a backup that holds its own WAL and
        /// is restored to its end (--target immediate) from a repository without an archive.
        #[arg(long)]
        no_archive_is_empty: bool,
    },
    /// Check the archive is continuous from the oldest base backup's start on each timeline,
    /// and that every file decompresses and has a valid WAL header. Exit 1 on a gap.
    /// Encrypted files are decrypted with BACKUP_ENCRYPTION_IDENTITY_FILE when it is set;
    /// without it only their age header is checked.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        /// Check names only: skip decompressing and reading every file.
        #[arg(long)]
        quick: bool,
    },
    /// List the archived files.
    List {
        #[command(flatten)]
        repo: RepoArgs,
    },
}

impl common::entry::ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        &self.global
    }

    /// PostgreSQL retries a failed push every minute: failures only, rate-limited. A fetch
    /// answers "not archived" many times in every recovery, so it never notifies.
    fn notify_policy(&self) -> common::notify::Policy {
        use common::notify::Policy;
        match self.command {
            Command::Push { .. } => Policy::FAILURES_RATE_LIMITED,
            Command::Fetch { .. } => Policy::NEVER,
            Command::Verify { .. } | Command::List { .. } => Policy::CONFIGURED,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let output = args.global.output;
    match args.command {
        Command::Push {
            path,
            repo,
            compress,
            compress_level,
            allow_unencrypted,
        } => push::push(
            &path,
            &repo.backup_dir,
            compress,
            compress_level,
            allow_unencrypted,
        ),
        Command::Fetch {
            name,
            dest,
            repo,
            no_archive_is_empty,
        } => fetch::fetch(&name, &dest, &repo.backup_dir, no_archive_is_empty),
        Command::Verify { repo, quick } => verify::verify(&repo.backup_dir, quick, output),
        Command::List { repo } => verify::list(&repo.backup_dir, output),
    }
}
