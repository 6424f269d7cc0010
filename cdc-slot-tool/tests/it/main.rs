//! Integration tests of cdc-slot-tool: the real binary against real PostgreSQL 15 clusters
//! with wal_level = logical (and, for the drill, the physical backup tools).

mod backup;
mod drill;
mod heartbeat;
mod prometheus;
mod restore;
mod status;
mod support;
