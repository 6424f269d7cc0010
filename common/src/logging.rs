//! Logging with `tracing` to stderr: `-v` raises the default level, `-q` lowers it, and
//! `RUST_LOG` overrides both.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::GlobalArgs;
use crate::env;

/// The default filter for a verbosity: `-q` errors only, none `info`, `-v` debug, `-vv` trace.
pub fn default_level(global: &GlobalArgs) -> &'static str {
    if global.quiet {
        return "error";
    }
    match global.verbose {
        // object_store reports every retry at info: one error line is what a user needs.
        0 => "info,object_store=warn",
        1 => "debug",
        _ => "trace",
    }
}

/// Installs the stderr subscriber once; later calls are ignored (tests call tools in-process).
pub fn init(global: &GlobalArgs) {
    let filter = std::env::var(env::RUST_LOG)
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level(global)));
    let ansi = std::io::stderr().is_terminal() && !env::is_set(env::NO_COLOR);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
