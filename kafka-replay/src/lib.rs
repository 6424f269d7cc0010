//! kafka-replay: replays a Kafka topic backup (a set from `kafka-topic-backup`, with the
//! incremental sets before it, or an archive stream on stdin) into a topic, record for record:
//! same partition, key, value, headers and timestamp. Verified after producing, resumable
//! after an interruption, optionally restoring consumer-group offsets. Encrypted sets and
//! age streams on stdin are decrypted with the identity from the environment. A CDC topic can
//! be cut at the LSN a point-in-time restore of its database reached (`--until-lsn`), and the
//! connector's stored offset set to that cut (`--connector-offset`).
#![forbid(unsafe_code)]

mod connector;
mod destination;
mod filter;
mod lsn_cut;
mod partitioner;
mod plan;
mod produce;
mod replay;
mod report;
mod source;
mod target;
mod verify;

use std::num::NonZeroI32;
use std::time::Duration;

use clap::Parser;
use common::cli::{GlobalArgs, KafkaArgs, RepoArgs};
use common::lsn::Lsn;

pub use connector::ConnectorName;
pub use filter::OffsetRange;
pub use lsn_cut::{parse_lsn, LsnField, TxIdField};
pub use partitioner::murmur2_partition;
pub use replay::run;

/// Replay a Kafka topic backup into a topic, verified and resumable.
///
/// Records go to the same partition number with key, value, headers and timestamp (as
/// CreateTime) preserved, through idempotent producers working in parallel (each owns a share
/// of the partitions, so every partition keeps its order), in batches compressed with the
/// topic's own codec (its saved compression.type), else lz4; `-X compression.type=...` wins.
/// A replay that was interrupted can be
/// re-run: records the target already holds (its first `high - low` records, checked against
/// the archive) are skipped.
#[derive(Debug, Parser)]
#[command(
    name = "kafka-replay",
    version,
    after_help = format!(
        "{}\n\n{}",
        common::exit::EXIT_CODES_HELP,
        ENCRYPTION_HELP
    )
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Backup set to replay [default: the newest complete set holding the topic].
    #[arg(long, value_name = "ID", conflicts_with = "stdin")]
    pub backup_id: Option<String>,
    /// Source topic, as named in the backup.
    #[arg(long, value_name = "TOPIC", required_unless_present = "stdin")]
    pub topic: Option<String>,
    /// Topic to produce into [default: the source topic's name].
    #[arg(long, value_name = "TOPIC")]
    pub target_topic: Option<String>,
    /// Read an archive stream (from `kafka-topic-backup --stdout`) on stdin instead of a set.
    #[arg(long)]
    pub stdin: bool,
    /// Replay only the chosen set, not the incremental sets it continues.
    #[arg(long)]
    pub only_set: bool,
    /// Partition count when the target topic is created [default: the source's].
    #[arg(long, value_name = "N")]
    pub partitions: Option<NonZeroI32>,
    /// Replication factor when the target topic is created [default: the source's, at most
    /// the number of brokers].
    #[arg(long, value_name = "N")]
    pub replication_factor: Option<NonZeroI32>,
    /// Create the target topic with the broker's defaults instead of the saved configs.
    #[arg(long)]
    pub no_topic_configs: bool,
    /// Send keyed records to the partition Kafka's default partitioner (murmur2) picks,
    /// instead of the same partition number; for a target with another partition count.
    #[arg(long)]
    pub repartition: bool,
    /// Only records with a timestamp at or after this time: RFC 3339, a duration ago (2h,
    /// 3days) or epoch milliseconds.
    #[arg(long, value_name = "TIME", value_parser = filter::parse_time)]
    pub from_time: Option<i64>,
    /// Only records with a timestamp before this time (same forms as --from-time).
    #[arg(long, value_name = "TIME", value_parser = filter::parse_time)]
    pub to_time: Option<i64>,
    /// Only these source offsets of a partition, FROM inclusive, TO exclusive, e.g. 0:100..200,
    /// 1:500.. (repeatable; partitions not named are not replayed).
    #[arg(long = "offset-range", value_name = "P:FROM..TO")]
    pub offset_ranges: Vec<OffsetRange>,
    /// Only this source partition (repeatable; combines with --offset-range).
    #[arg(long = "partition", value_name = "P")]
    pub only_partitions: Vec<i32>,
    /// Set the committed offsets of the saved consumer groups on the target topic, translated
    /// from source offsets to target offsets. Not with --repartition: records change
    /// partitions there, so offsets cannot be translated.
    #[arg(long, conflicts_with = "repartition")]
    pub restore_group_offsets: bool,
    /// With --restore-group-offsets, only this group (repeatable).
    #[arg(
        long = "group",
        value_name = "GROUP",
        requires = "restore_group_offsets"
    )]
    pub groups: Vec<String>,
    /// Only records whose LSN is below this one (0/16B3748 or a decimal number): a CDC topic
    /// cut where a point-in-time restore of its database ended, since events at or after it
    /// are changes the restored database does not hold. A tombstone follows the record before
    /// it with the same key. Every selected record is checked first: one without an LSN stops
    /// the replay before anything is produced (exit 1). Needs a set (read twice), not --stdin.
    #[arg(long, value_name = "LSN", value_parser = lsn_cut::parse_lsn, conflicts_with = "stdin")]
    pub until_lsn: Option<Lsn>,
    /// Where each record's LSN is, for --until-lsn: a JSON pointer into the value
    /// (/after/lsn) or header:NAME; a JSON number or text (0/16B3748 or decimal) [default:
    /// Debezium's source.lsn, /payload/source/lsn or /source/lsn].
    #[arg(long, value_name = "SPEC", requires = "until_lsn")]
    pub lsn_field: Option<LsnField>,
    /// Leave out the events below --until-lsn of these transactions: those the restore cut off
    /// (begun before the cut, committed after it, so rolled back by recovery). FILE (- for
    /// stdin) holds decimal transaction ids separated by whitespace or commas, or a JSON
    /// array; they are counted as skipped_cut_off_events. Every event below the cut then
    /// needs a transaction id (--txid-field), else exit 1 before anything is produced.
    #[arg(long, value_name = "FILE", requires = "until_lsn")]
    pub skip_txids: Option<std::path::PathBuf>,
    /// Where each record's transaction id is, for --skip-txids and --list-txids: a JSON
    /// pointer into the value or header:NAME, as --lsn-field; a non-negative integer
    /// [default: Debezium's source.txId, /payload/source/txId or /source/txId].
    #[arg(long, value_name = "SPEC", requires = "until_lsn")]
    pub txid_field: Option<TxIdField>,
    /// Print the distinct transaction ids of the selected events below --until-lsn (JSON:
    /// a `txids` array) and replay nothing; no broker is contacted. A caller asks the
    /// restored server which of them it did not commit, and passes those to --skip-txids.
    #[arg(
        long,
        requires = "until_lsn",
        conflicts_with_all = ["skip_txids", "connector_offset", "dry_run", "restore_group_offsets"]
    )]
    pub list_txids: bool,
    /// After a verified --until-lsn replay, store Debezium's PostgreSQL source offset at the
    /// cut ({"lsn", "txId", "ts_usec"} under key ["CONNECTOR",{"server":"SERVER"}]) in Kafka
    /// Connect's offsets topic, so the connector named CONNECTOR (topic.prefix SERVER)
    /// resumes with the first change after the cut. Stop the connector first.
    #[arg(long, value_name = "CONNECTOR=SERVER", requires = "until_lsn")]
    pub connector_offset: Option<ConnectorName>,
    /// Kafka Connect's offsets topic (offset.storage.topic) for --connector-offset; created
    /// with cleanup.policy=compact when missing.
    #[arg(long, value_name = "NAME", default_value = connector::DEFAULT_OFFSETS_TOPIC)]
    pub offsets_topic: String,
    /// Produce every selected record after what the target holds, without resuming.
    #[arg(long)]
    pub append: bool,
    /// Print what would be produced where; create and produce nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Idempotent producers working in parallel, each owning a share of the target
    /// partitions (at most one per partition).
    #[arg(long, value_name = "N", default_value = "4")]
    pub producers: std::num::NonZeroUsize,
    /// How long to wait for the last deliveries, and for the broker to acknowledge anything
    /// while the producers' queues are full, before giving up (e.g. 2m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// How encrypted backups are read, for `--help`.
const ENCRYPTION_HELP: &str = "Encrypted backups (age): sets written with recipients (files ending in .age) and an\nage stream on --stdin (detected by its header) are decrypted with\n  BACKUP_ENCRYPTION_IDENTITY_FILE    an age identity file (several keys allowed, for rotation)\n  BACKUP_ENCRYPTION_PASSPHRASE_FILE  or the passphrase they were written with (scrypt: about a\n                                     second per file)\nKeys are read from the environment or the --config file only, never from arguments. A\nmissing or wrong key fails before anything is produced; so does a damaged set file (its\nstored bytes are checked against the manifest first). A pipe is read once: damage past\nits first 64 KiB stops the replay where it is found; re-running it resumes.";

impl common::entry::ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        &self.global
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[test]
    fn restore_group_offsets_conflicts_with_repartition() {
        let both = [
            "kafka-replay",
            "--bootstrap-servers",
            "localhost:9092",
            "--topic",
            "t",
            "--repartition",
        ];
        let err = Args::try_parse_from(both.iter().chain(&["--restore-group-offsets"]))
            .expect_err("the two flags must not combine");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(Args::try_parse_from(both).is_ok());
    }
}
