//! Waiting on and signalling the tools a test runs as child processes.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::run::Run;

/// Polls `ready` every 10 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` ("TERM", "STOP", ...) to `child` with kill(1).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// Sends `signal` ("TERM", "INT", ...) to `child`, then collects its output.
pub fn signal_and_wait(child: Child, signal: &str) -> Run {
    self::signal(&child, signal);
    Run::from(child.wait_with_output().expect("wait for the child"))
}

/// The processes whose command line matches `pattern` (pgrep -f), one `pid command` a line.
pub fn matching(pattern: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
