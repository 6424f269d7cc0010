//! Integration tests of `pg-logical-backup`: the real binary, run as the database OS user,
//! against throwaway PostgreSQL 15 clusters.

mod backup;
mod bad_input;
mod encryption;
mod globals;
mod restore;
mod s3;
mod shapes;
mod support;
mod verify;
