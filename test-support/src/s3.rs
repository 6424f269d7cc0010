//! The S3-compatible test service (SeaweedFS, started by `scripts/services.sh`): repository
//! URLs under a unique prefix per test, the credentials for the tools' environment, a config
//! file for PostgreSQL's archive_command, and inspection of what the bucket holds.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::storage::{Location, Store};

/// The running test service, from `PIPELINE_BACKUP_TEST_S3_*`.
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    access_key: String,
    secret_key: String,
}

/// The test service; panics with what to do when it is not running.
pub fn env() -> S3Env {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: start the test services (eval \"$(scripts/services.sh start)\") or run scripts/test.sh")
        })
    };
    S3Env {
        endpoint: var("PIPELINE_BACKUP_TEST_S3_ENDPOINT"),
        bucket: var("PIPELINE_BACKUP_TEST_S3_BUCKET"),
        access_key: var("PIPELINE_BACKUP_TEST_S3_ACCESS_KEY"),
        secret_key: var("PIPELINE_BACKUP_TEST_S3_SECRET_KEY"),
    }
}

impl S3Env {
    /// A fresh repository URL: `s3://<bucket>/<unique prefix>`.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, crate::unique_name(name))
    }

    /// The secret key, for tests that check it never shows.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The tools' environment for this service.
    pub fn vars(&self) -> Vec<(String, String)> {
        tool_vars(&self.access_key, &self.secret_key, &self.endpoint)
    }

    /// Adds the credentials and endpoint to a tool's command.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.envs(self.vars())
    }

    /// Writes the settings as a config file (mode 0600, owned by the database user) for
    /// commands that run in PostgreSQL's environment: `--config FILE`.
    pub fn config_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pipeline-backup.env");
        crate::os_user::write_config_file(&path, self.vars());
        path
    }

    /// A store on the repository `url`, for inspecting or damaging what the tools wrote.
    pub fn store(&self, url: &str) -> Store {
        let location: Location = url.parse().expect("an s3:// URL");
        Store::open_with(&location, &self.vars()).expect("connect to the test S3 service")
    }

    /// Every key under the repository `url`, hidden ones included.
    pub fn keys(&self, url: &str) -> Vec<String> {
        self.store(url)
            .list("")
            .expect("list the test bucket")
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// The multipart uploads open under the repository `url` (S3 ListMultipartUploads, which
    /// object_store does not offer, signed by scripts/lib/s3req.py).
    pub fn open_uploads(&self, url: &str) -> Vec<String> {
        let prefix = url
            .strip_prefix(&format!("s3://{}/", self.bucket))
            .expect("a URL of the test bucket");
        let out = Command::new("python3")
            .arg(crate::workspace_root().join("scripts/lib/s3req.py"))
            .args(["GET", &format!("/{}", self.bucket)])
            .arg(format!("uploads=&prefix={}", prefix.replace('/', "%2F")))
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .output()
            .expect("run python3 scripts/lib/s3req.py");
        assert!(
            out.status.success(),
            "ListMultipartUploads failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body = String::from_utf8_lossy(&out.stdout);
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

/// Stops the S3 service abruptly (SIGKILL), keeping its data and port.
pub fn kill_service() {
    services("s3-kill");
}

/// Starts the S3 service again on the same port with the same data.
pub fn restart_service() {
    services("s3-start");
}

fn services(command: &str) {
    let status = Command::new(crate::workspace_root().join("scripts/services.sh"))
        .arg(command)
        .status()
        .expect("run scripts/services.sh");
    assert!(status.success(), "scripts/services.sh {command} failed");
}

/// The tools' environment for a local S3 service with this key and endpoint.
pub fn tool_vars(access_key: &str, secret_key: &str, endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", access_key),
        ("AWS_SECRET_ACCESS_KEY", secret_key),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
        ("BACKUP_S3_RETRY_TIMEOUT", "5s"),
        // Small parts, so that test-sized files go up as multipart uploads too.
        ("BACKUP_S3_PART_SIZE", "5MiB"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
