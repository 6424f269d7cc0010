//! The `validate-backups` binary: everything lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    common::entry::main("validate-backups", validate_backups::run)
}
