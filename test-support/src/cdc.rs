//! The CDC connector emulator (crate `cdc-emulator`) for tests: everything it exports, and
//! [`config`], its settings for a test server and the test broker.

pub use cdc_emulator::*;

use crate::pg::Endpoint as Server;

/// [`CdcConfig::new`] for a test server (a [`crate::pg::PgCluster`] or restored server derefs
/// to its endpoint) and the test broker.
pub fn config(server: &Server, database: &str, prefix: &str) -> CdcConfig {
    CdcConfig::new(
        Endpoint::from(server),
        database,
        prefix,
        &crate::kafka::bootstrap(),
    )
}

impl From<&Server> for Endpoint {
    fn from(server: &Server) -> Endpoint {
        Endpoint::new(server.socket_dir.display().to_string(), server.port)
    }
}
