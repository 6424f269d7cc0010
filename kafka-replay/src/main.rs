//! The kafka-replay binary: parse arguments and run the library.

fn main() -> std::process::ExitCode {
    common::entry::main("kafka-replay", kafka_replay::run)
}
