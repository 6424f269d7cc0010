//! Smoke tests of the real services every other crate's tests rely on.

mod broker;
mod cdc;
mod cluster;
