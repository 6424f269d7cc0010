//! `pg-base-backup`: physical base backup into the backup repository.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    common::entry::main("pg-base-backup", pg_base_backup::run)
}
