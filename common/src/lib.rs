//! Shared building blocks of the pipeline-backup tools: configuration, logging, exit codes,
//! the backup repository with its manifests, durable and checksummed streams, and retention.
//!
//! Each tool's own logic lives in that tool; only what two or more tools use belongs here.
#![forbid(unsafe_code)]

pub mod cdc;
pub mod cli;
pub mod config_file;
pub mod durable;
pub mod encryption;
pub mod entry;
pub mod env;
pub mod exit;
pub mod interrupt;
pub mod kafka;
pub mod logging;
pub mod lsn;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod os_user;
pub mod output;
pub mod pgbin;
pub mod pgconf;
pub mod pgpass;
pub mod physical;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod progress;
pub mod prompt;
pub mod repo;
pub mod retention;
pub mod size;
pub mod storage;
pub mod stream;
pub mod timefmt;
pub mod toolbin;
pub mod topic_archive;
pub mod wal;

pub use exit::{CodedError, Status};
pub use manifest::{FileEntry, Manifest};
pub use repo::{Kind, Repository};
