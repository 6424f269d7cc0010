//! The `cdc-slot-tool` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    common::entry::main("cdc-slot-tool", cdc_slot_tool::run)
}
