//! Entry point of `pg-logical-backup`: parses arguments and runs the tool.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    common::entry::main("pg-logical-backup", pg_logical_backup::run)
}
