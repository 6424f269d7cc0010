//! `wal-archive`: PostgreSQL's archive_command and restore_command.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    common::entry::main("wal-archive", wal_archive::run)
}
