//! kafka-topic-backup: exports Kafka topics with every record field (key, value, headers,
//! timestamp and its type), the topic configs, partition layout and consumer-group offsets
//! into a backup set under `BACKUP_DIR` (a directory, or `s3://BUCKET/PREFIX` where each
//! archive streams up as a multipart upload while it is written), or as one archive stream
//! on stdout. With recipients in the environment (`common::encryption`), every archive, and
//! the stdout stream, is an age file.
//!
//! The archive format is `common::topic_archive`, specified in `FORMAT.md`.
#![forbid(unsafe_code)]

mod backup;
mod chain;
mod cluster;
mod export;
mod plan;
mod report;

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use clap::Parser;
use common::cli::{GlobalArgs, KafkaArgs, RepoArgs, RetentionArgs};

pub use backup::run;

/// Export Kafka topics (records, configs, consumer-group offsets) into a backup set.
///
/// Each partition is exported from its low to its high watermark as they were at start: a
/// consistent cut. `--incremental` continues from the previous set's end offsets.
#[derive(Debug, Parser)]
#[command(
    name = "kafka-topic-backup",
    version,
    after_help = format!(
        "{}\n\n{}\nWith recipients set, each topic archive is stored as <topic>.kta.age, record counts and\nconsumer groups move into the set's encrypted private.json.age, and --stdout writes an\nage stream (kafka-replay --stdin decrypts it, as does `age -d -i IDENTITY`). Once the\nrepository holds encrypted kafka sets, a set without recipients is refused unless\n--allow-unencrypted.",
        common::exit::EXIT_CODES_HELP,
        common::encryption::ENCRYPTION_HELP
    )
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Topic to back up (repeatable).
    #[arg(
        long = "topic",
        short = 't',
        value_name = "TOPIC",
        required_unless_present = "topic_regex"
    )]
    pub topics: Vec<String>,
    /// Back up every topic whose whole name matches this regular expression (topics starting
    /// with "__" are internal and only match when the expression names them explicitly).
    #[arg(long, value_name = "REGEX", conflicts_with = "topics")]
    pub topic_regex: Option<String>,
    /// Continue from the end offsets of the newest complete set holding the same topic, so
    /// only new records are exported; records deleted by retention in between are recorded
    /// as gaps.
    #[arg(long)]
    pub incremental: bool,
    /// Write the archive stream of one topic to stdout instead of a backup set.
    #[arg(long, conflicts_with = "incremental")]
    pub stdout: bool,
    /// Export at most this many records per partition (default: every record of the cut).
    #[arg(long, value_name = "N")]
    pub max_messages: Option<NonZeroU64>,
    /// Partitions read at the same time.
    #[arg(long, value_name = "N", default_value = "4")]
    pub parallelism: NonZeroUsize,
    /// Zstandard level of the archive chunks (1-19).
    #[arg(long, value_name = "LEVEL", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// Uncompressed size at which a chunk is closed, in KiB.
    #[arg(long, value_name = "KIB", default_value = "1024")]
    pub chunk_kib: NonZeroUsize,
    /// Give up when a partition yields no record for this long (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Do not save the committed offsets of consumer groups.
    #[arg(long)]
    pub no_group_offsets: bool,
    /// Store the set in plaintext even though the repository's newest kafka set is encrypted
    /// (no recipients set). Without it such a set is refused.
    #[arg(long)]
    pub allow_unencrypted: bool,
}

impl common::entry::ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        &self.global
    }
}
