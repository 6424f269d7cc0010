//! Integration tests of kafka-topic-backup against the real test broker
//! (`PIPELINE_BACKUP_TEST_KAFKA`): the set it writes, read back with the archive reader.

mod errors;
mod incremental;
mod set;
mod support;
