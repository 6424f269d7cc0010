//! Integration tests of kafka-replay with kafka-topic-backup against the real test broker
//! (`PIPELINE_BACKUP_TEST_KAFKA`; build kafka-topic-backup first, as scripts/test.sh does) and,
//! for `s3`, the S3 test service (`PIPELINE_BACKUP_TEST_S3_*`).

mod chain;
mod damaged;
mod encryption;
mod filters;
mod groups;
mod lsn_cut;
mod pipeline;
mod repartition;
mod resume;
mod round_trip;
mod s3;
mod support;
