//! Integration tests of kafka-topic-backup against the real test broker
//! (`PIPELINE_BACKUP_TEST_KAFKA`) and, for `s3`, the S3 test service
//! (`PIPELINE_BACKUP_TEST_S3_*`): the set it writes, read back with the archive reader.

mod encryption;
mod errors;
mod incremental;
mod s3;
mod set;
mod support;
