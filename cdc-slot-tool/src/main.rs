//! The `cdc-slot-tool` binary: everything lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    common::entry::main("cdc-slot-tool", cdc_slot_tool::run)
}
