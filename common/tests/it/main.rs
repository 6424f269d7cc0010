//! Integration tests of the backup repository on real directories.

mod damaged_input;
mod lock;
mod repository;
mod retention;
mod s3;
