//! A private Kafka-protocol broker for tests that kill the broker and start it again: noida-db
//! started as `scripts/services.sh` starts the shared one, but on a port and a data directory
//! of its own, so the shared broker every other test talks to is never touched. Killed when
//! dropped.
//!
//! noida-db writes its data (`kafka.json` in the data directory) about once a second when it
//! changed: a SIGKILL loses what was written since, as a crash of a broker without fsync would.
//! [`PrivateBroker::wait_saved`] waits until a write would survive one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// How long a start may take before it counts as failed.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a restart waits for the port: after a SIGKILL the broker's side of each connection
/// lingers in TIME_WAIT for up to a minute, and noida-db does not bind over it.
const PORT_LIMIT: Duration = Duration::from_secs(90);

/// A noida-db broker with only Kafka enabled, on 127.0.0.1.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Starts a broker on a free port below the ephemeral range (so that no outgoing connection
    /// takes the port while the broker is down) with an empty data directory.
    pub fn start() -> PrivateBroker {
        let dir = tempfile::Builder::new()
            .prefix("private-broker-")
            .tempdir()
            .expect("a temporary directory for the private broker");
        let mut broker = PrivateBroker {
            port: quiet_port(),
            dir,
            child: None,
        };
        broker.launch();
        broker
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash or the OOM killer would end it; waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data (a no-op when it runs), waiting
    /// while the port is still held after a kill.
    pub fn restart(&mut self) {
        if !self.is_running() {
            self.launch();
        }
    }

    /// Waits until noida-db has written its data after `since` (a topic created or records
    /// produced before then survive a kill from now on).
    pub fn wait_saved(&self, since: SystemTime) {
        let file = self.data_dir().join("kafka.json");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let saved = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > since);
            if saved {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private broker did not save its data to {} within 10 s",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn launch(&mut self) {
        let deadline = Instant::now() + PORT_LIMIT;
        loop {
            let log_start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len()) as usize;
            self.child = Some(self.spawn());
            let outcome = self.wait_ready();
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let this_run = log.get(log_start..).unwrap_or(&log);
            match outcome {
                Ready::Up => return,
                Ready::Exited
                    if this_run.contains("already in use") && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
                outcome => {
                    self.kill();
                    panic!(
                        "the private broker on port {} did not start ({outcome:?}); its log:\n{this_run}",
                        self.port
                    );
                }
            }
        }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("the private broker's log file");
        let err = log.try_clone().expect("the private broker's log file");
        Command::new(noida_db())
            .args(["start", "--only", "kafka", "--host", "127.0.0.1"])
            .args(["--kafka-port", &self.port.to_string(), "--data-dir"])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start noida-db (scripts/install-deps.sh installs it in .cache/venv)")
    }

    /// Waits until the port accepts connections, or the broker exits.
    fn wait_ready(&mut self) -> Ready {
        let deadline = Instant::now() + START_LIMIT;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if !self.is_running() {
                self.child = None;
                return Ready::Exited;
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ready::Up;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ready::TimedOut
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug)]
enum Ready {
    Up,
    Exited,
    TimedOut,
}

/// The noida-db program of the workspace's `.cache/venv` (as `scripts/services.sh` finds it).
fn noida_db() -> PathBuf {
    let site = crate::workspace_root().join(".cache/venv/lib");
    std::fs::read_dir(&site)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/noida_db/noida-db"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "noida-db not found under {}: run scripts/install-deps.sh",
                site.display()
            )
        })
}

/// A port free on 127.0.0.1 below the ephemeral range, picked at random.
pub fn quiet_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(12_000, 65_535);
    let mut state = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..1000 {
        // xorshift: no random crate in this one.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 10_000 + (state % u64::from(low - 10_000)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 below {low}")
}
