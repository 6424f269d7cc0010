//! The kafka-replay binary: parse arguments and run the library.
#![forbid(unsafe_code)]

/// mimalloc, also behind librdkafka's malloc/free (the `override` feature): each record costs
/// several allocations freed on another thread, which glibc's allocator serves slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    common::entry::main("kafka-replay", kafka_replay::run)
}
