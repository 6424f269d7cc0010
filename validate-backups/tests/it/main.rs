//! validate-backups against real repositories: backups taken by the real tools from real
//! PostgreSQL 15 clusters and the test Kafka broker, damaged one way per test.

mod chains;
mod cli;
mod connectivity;
mod cut;
mod damage;
mod deep;
mod drill;
mod encryption;
mod health;
mod notify;
mod outputs;
mod repository;
mod s3;
mod support;
