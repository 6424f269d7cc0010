//! The kafka-topic-backup binary: parse arguments and run the library.

fn main() -> std::process::ExitCode {
    common::entry::main("kafka-topic-backup", kafka_topic_backup::run)
}
