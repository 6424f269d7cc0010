//! A private S3 server for the scenarios that kill it: SeaweedFS's `weed mini` started as
//! `scripts/services.sh` starts the shared one (every port given, bound to 127.0.0.1, one
//! bucket, one access key in an identities file), but on ports and a data directory of its
//! own, so the shared server the other scenarios and the test suite use is never touched.
//! Killed with SIGKILL (a crash), started again on the same ports with the same data, and
//! killed for good when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::storage::{Location, Store};
use tempfile::TempDir;

/// The bucket the server creates.
const BUCKET: &str = "fault-campaign";
/// How long a start (or restart) may take until the objects written before are readable.
const READY_LIMIT: Duration = Duration::from_secs(90);
/// The object written at the first start and read back after each restart.
const PROBE_KEY: &str = "fc-ready";

/// A running (or killed) `weed mini`.
pub struct S3Server {
    dir: TempDir,
    args: Vec<String>,
    /// Master, volume, filer, S3 and admin ports (each gRPC port is the port + 10000).
    ports: [u16; 5],
    access_key: String,
    secret_key: String,
    child: Option<Child>,
}

impl S3Server {
    /// A fresh server: new ports, a new key, an empty data directory; returns once its bucket
    /// answers.
    pub fn start() -> anyhow::Result<S3Server> {
        let dir = tempfile::Builder::new()
            .prefix("fc-s3-server-")
            .tempdir()
            .context("cannot make the S3 server's directory")?;
        let ports = port_pairs()?;
        let access_key = format!("FC{}", hex::encode_upper(random_bytes(8)));
        let secret_key = hex::encode(random_bytes(20));
        let identities = dir.path().join("identities.json");
        write_private(
            &identities,
            &serde_json::json!({
                "identities": [{
                    "name": "fault-campaign",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]
                }]
            })
            .to_string(),
        )?;
        let [master, volume, filer, s3, admin] = ports;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
        ];
        for (name, port) in [
            ("master", master),
            ("volume", volume),
            ("filer", filer),
            ("s3", s3),
            ("admin", admin),
        ] {
            args.push(format!("-{name}.port={port}"));
            args.push(format!("-{name}.port.grpc={}", u32::from(port) + 10_000));
        }
        args.extend(
            [
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                "-s3.autoCreateBucket=false",
                "-volume.preStopSeconds=0",
            ]
            .map(String::from),
        );
        args.push(format!("-s3.config={}", identities.display()));
        args.push(format!("-bucket={BUCKET}"));
        let mut server = S3Server {
            dir,
            args,
            ports,
            access_key,
            secret_key,
            child: None,
        };
        server.launch()?;
        server.wait_ready(true)?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT` of the S3 API.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    /// A fresh repository URL on this server.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{BUCKET}/{}", test_support::unique_name(name))
    }

    /// The tools' environment for this server, reached at `endpoint` (this server's own, or a
    /// proxy's in front of it).
    pub fn vars(&self, endpoint: &str) -> Vec<(String, String)> {
        test_support::s3::tool_vars(&self.access_key, &self.secret_key, endpoint)
    }

    /// SIGKILL, as a crash would end it; waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.remove_sockets();
    }

    /// Starts it again on the same ports with the same key and data (a no-op while it runs),
    /// and waits until what was written before is readable again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.launch()?;
        self.wait_ready(false)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let weed = test_support::workspace_root().join(".cache/venv/bin/weed");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&weed)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (scripts/install-deps.sh installs it)",
                    weed.display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the bucket answers and (after a restart) the probe object written at the
    /// first start reads back: the volume server has registered its volumes again.
    fn wait_ready(&mut self, first: bool) -> anyhow::Result<()> {
        let mut vars = self.vars(&self.endpoint());
        // One attempt per poll: the loop here is the retry.
        vars.push(("BACKUP_S3_RETRY_TIMEOUT".into(), "0s".into()));
        let location: Location = format!("s3://{BUCKET}").parse()?;
        let store = Store::open_with(&location, &vars)?;
        let deadline = Instant::now() + READY_LIMIT;
        let mut last = String::from("nothing answered");
        while Instant::now() < deadline {
            anyhow::ensure!(
                self.is_running(),
                "weed exited; the end of its log: {}",
                tail(&self.log_path())
            );
            let outcome = if first {
                store
                    .put(PROBE_KEY, b"ready")
                    .and_then(|()| store.read(PROBE_KEY))
            } else {
                store.read(PROBE_KEY)
            };
            match outcome {
                Ok(body) if body == b"ready" => return Ok(()),
                Ok(_) => last = "the probe object reads back wrong".into(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!(
            "the private S3 server was not ready in {}s: {last}; the end of its log: {}",
            READY_LIMIT.as_secs(),
            tail(&self.log_path())
        )
    }

    /// weed leaves `/tmp/seaweedfs-*-PORT.sock` behind when it is killed.
    fn remove_sockets(&self) {
        let Ok(entries) = std::fs::read_dir("/tmp") else {
            return;
        };
        let ends: Vec<String> = self
            .ports
            .iter()
            .flat_map(|&p| [p as u32, u32::from(p) + 10_000])
            .map(|p| format!("-{p}.sock"))
            .collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-") && ends.iter().any(|e| name.ends_with(e)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Five ports, each free on 127.0.0.1 with its port + 10000 (weed's gRPC ports keep that
/// offset), all below the ephemeral range so no outgoing connection takes one while the
/// server is down.
fn port_pairs() -> anyhow::Result<[u16; 5]> {
    let mut found = Vec::new();
    let mut held = Vec::new();
    for _ in 0..400 {
        let port = test_support::broker::quiet_port();
        // Its gRPC port too must stay below the ephemeral range (32768 and up here).
        if port >= 22_000 || found.contains(&port) {
            continue;
        }
        let (Ok(a), Ok(b)) = (
            std::net::TcpListener::bind(("127.0.0.1", port)),
            std::net::TcpListener::bind(("127.0.0.1", port + 10_000)),
        ) else {
            continue;
        };
        held.push((a, b));
        found.push(port);
        if found.len() == 5 {
            return Ok([found[0], found[1], found[2], found[3], found[4]]);
        }
    }
    anyhow::bail!("found no five free port pairs on 127.0.0.1")
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::new();
    (0..n).map(|_| rng.u8(..)).collect()
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    crate::process::last_lines(&text, 5)
}
