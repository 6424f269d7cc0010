//! `fault-campaign`: runs the seeded fault scenarios against the workspace's tools.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    fault_campaign::main()
}
