//! Integration tests of the backup repository on real directories.

mod lock;
mod repository;
mod retention;
mod s3;
