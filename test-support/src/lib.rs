//! Real services for integration tests, shared by every crate: throwaway PostgreSQL 15
//! clusters ([`pg::PgCluster`]) and the Kafka-protocol broker started by `scripts/services.sh`
//! ([`kafka`]), or a private one a test may kill ([`broker::PrivateBroker`]).
//!
//! PostgreSQL refuses to run as root, and CI runs as root: servers and the tools that touch
//! their files run as the `postgres` OS user ([`os_user`]).
#![forbid(unsafe_code)]

pub mod age_keys;
pub mod broker;
#[cfg(feature = "kafka")]
pub mod cdc;
#[cfg(feature = "damage")]
pub mod damage;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod notify;
pub mod os_user;
pub mod pg;
pub mod process;
pub mod run;
pub mod s3;
pub mod stall;

use std::path::PathBuf;

/// The workspace root (for `target/` binaries and `.cache/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace")
        .to_path_buf()
}

/// A name unique within this test run, for databases, topics and slots.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// A free TCP port on 127.0.0.1 (free when asked; bind soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Path of a workspace tool's binary in the same target directory as the running test, for
/// tests that drive another crate's tool (`cargo test --workspace` builds every binary).
pub fn tool_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build -p {name}` (scripts/test.sh builds every tool)",
        path.display()
    );
    path
}
