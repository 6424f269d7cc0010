//! Integration tests of cdc-slot-tool against real PostgreSQL clusters.
