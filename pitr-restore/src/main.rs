//! `pitr-restore`: point-in-time restore of a base backup plus archived WAL.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    common::entry::main("pitr-restore", pitr_restore::run)
}
