//! Integration tests of cdc-slot-tool: the real binary against real PostgreSQL 15 clusters
//! with wal_level = logical (and, for the drill, the physical backup tools), with the
//! repository in a local directory or on the S3 test service.

mod backup;
mod damaged_input;
mod drill;
mod encryption;
mod heartbeat;
mod prometheus;
mod restore;
mod s3;
mod status;
mod support;
