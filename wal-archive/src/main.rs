//! `wal-archive`: PostgreSQL's archive_command and restore_command.

fn main() -> std::process::ExitCode {
    common::entry::main("wal-archive", wal_archive::run)
}
