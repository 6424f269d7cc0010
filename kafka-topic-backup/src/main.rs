//! The kafka-topic-backup binary: parse arguments and run the library.
#![forbid(unsafe_code)]

/// mimalloc, also behind librdkafka's malloc/free (the `override` feature): each record costs
/// allocations made on the fetch thread and freed on the exporting one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    common::entry::main("kafka-topic-backup", kafka_topic_backup::run)
}
