//! The S3 backend (AWS S3, MinIO, Ceph RGW, SeaweedFS, R2, GCS in S3 mode) through the
//! `object_store` crate: SigV4 with a signed payload (the server checks each request's
//! SHA-256), retries with backoff, conditional writes, streaming multipart uploads.
//!
//! Credentials and endpoint follow the AWS conventions, read from the environment only:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`),
//! container credentials (`AWS_CONTAINER_CREDENTIALS_*`) and instance metadata. Path-style
//! addressing when `AWS_ENDPOINT_URL` is set, virtual-hosted otherwise;
//! `AWS_S3_FORCE_PATH_STYLE=true|false` overrides. Plain HTTP only with `AWS_ALLOW_HTTP=true`.

use std::future::Future;
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use super::{join, Location, ObjectInfo, UPLOADS_DIR};

mod lock;
mod writer;

pub use lock::S3Lock;
use lock::{unix_now, LockRecord};
pub use writer::S3Writer;
use writer::{upload_marker_key, OpenUpload};

/// Environment variable: size of one multipart upload part.
pub const PART_SIZE_ENV: &str = "BACKUP_S3_PART_SIZE";
/// Environment variable: parts uploaded at once per file.
pub const CONCURRENCY_ENV: &str = "BACKUP_S3_UPLOAD_CONCURRENCY";
/// Environment variable: how long a failing request is retried.
pub const RETRY_TIMEOUT_ENV: &str = "BACKUP_S3_RETRY_TIMEOUT";
/// Environment variable: how long one request (one attempt, body included) may take.
pub const REQUEST_TIMEOUT_ENV: &str = "BACKUP_S3_REQUEST_TIMEOUT";
/// Environment variable: the lifetime of a lock object between renewals.
pub const LOCK_TTL_ENV: &str = "BACKUP_S3_LOCK_TTL";

/// Tuning of the S3 client, from the environment.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Bytes per multipart part (default 64 MiB: objects up to 625 GiB fit the 10,000-part
    /// limit). Objects smaller than one part go up in a single PUT.
    pub part_size: usize,
    /// Parts in flight per file besides the one being filled (default 2). Memory for part
    /// buffers is at most `(concurrency + 1) * part_size` per file being written.
    pub concurrency: usize,
    /// Transient errors (5xx, 429, timeouts, refused connections) are retried with
    /// exponential backoff for at most this long per request (default 60 s).
    pub retry_timeout: Duration,
    /// One attempt of a request, from connecting to the end of its body, fails after this
    /// long (default 5 min: a 64 MiB part at 220 KB/s). It bounds the wait on a service that
    /// stops answering; the attempt is then retried within `retry_timeout`.
    pub request_timeout: Duration,
    /// Lifetime of a lock object; a live run renews it every third of it (default 120 s).
    pub lock_ttl: Duration,
}

impl S3Settings {
    pub fn from_env() -> anyhow::Result<S3Settings> {
        S3Settings::from_env_with(&[])
    }

    /// From the environment, `overrides` winning.
    pub fn from_env_with(overrides: &[(String, String)]) -> anyhow::Result<S3Settings> {
        let var = |name: &str| setting(overrides, name).ok_or(());
        let part_size = match var(PART_SIZE_ENV) {
            Ok(v) => {
                crate::size::parse_bytes(&v).map_err(|e| anyhow::anyhow!("{PART_SIZE_ENV}: {e}"))?
            }
            Err(_) => 64 << 20,
        };
        if !(5 << 20..=5 << 30).contains(&part_size) {
            anyhow::bail!("{PART_SIZE_ENV} must be between 5 MiB and 5 GiB (S3's part limits)");
        }
        let concurrency = match var(CONCURRENCY_ENV) {
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .with_context(|| format!("{CONCURRENCY_ENV} must be a number from 1 to 64"))?,
            Err(_) => 2,
        };
        let duration = |name: &str, default: u64| -> anyhow::Result<Duration> {
            match var(name) {
                Ok(v) => humantime::parse_duration(&v)
                    .with_context(|| format!("{name}: '{v}' is not a duration (e.g. 60s, 5m)")),
                Err(_) => Ok(Duration::from_secs(default)),
            }
        };
        Ok(S3Settings {
            part_size: part_size as usize,
            concurrency,
            retry_timeout: duration(RETRY_TIMEOUT_ENV, 60)?,
            request_timeout: duration(REQUEST_TIMEOUT_ENV, 300)?.max(Duration::from_secs(1)),
            lock_ttl: duration(LOCK_TTL_ENV, 120)?.max(Duration::from_secs(3)),
        })
    }
}

/// The runtime S3 requests run on, separate from any runtime of the tools.
pub(super) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .expect("cannot start the S3 I/O runtime")
    })
}

/// Runs a future to completion from blocking code, also when called inside another
/// runtime's task (then on a scoped thread, since a runtime cannot be entered twice).
pub(super) fn block<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime().block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        runtime().block_on(future)
    }
}

/// One line for an S3 error: the service's error code and message instead of its XML, never
/// a credential (object_store puts none in its errors).
pub(super) fn explain(error: &object_store::Error) -> String {
    let text = error.to_string();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    let line = match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => text,
    };
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let hint = if timed_out(error) {
        // The message says only "error sending request": the cause is further down the chain.
        " (the request timed out: no answer within BACKUP_S3_REQUEST_TIMEOUT; check that the S3 service is up and not overloaded)"
    } else if line.contains("SignatureDoesNotMatch") || line.contains("InvalidAccessKeyId") {
        " (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    } else if line.contains("NoSuchBucket") {
        " (create the bucket, or check the URL in --backup-dir / BACKUP_DIR)"
    } else if line.contains("error sending request") || line.contains("connect") {
        " (check AWS_ENDPOINT_URL and that the S3 service is up)"
    } else {
        ""
    };
    format!("{line}{hint}")
}

/// Whether a request failed for running out of time ([`REQUEST_TIMEOUT_ENV`]), found in the
/// error's chain of causes.
fn timed_out(error: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        let http = e.downcast_ref::<HttpError>();
        let io = e.downcast_ref::<io::Error>();
        if http.is_some_and(|h| h.kind() == HttpErrorKind::Timeout)
            || io.is_some_and(|i| i.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

pub(super) fn to_io(error: object_store::Error, what: &str) -> io::Error {
    match error {
        object_store::Error::NotFound { .. } => {
            io::Error::new(io::ErrorKind::NotFound, format!("{what}: not found"))
        }
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{what}: already exists"),
            )
        }
        other => io::Error::other(format!("{what}: {}", explain(&other))),
    }
}

pub(super) struct S3Store {
    location: Location,
    store: Arc<AmazonS3>,
    /// Key prefix inside the bucket, without trailing `/`.
    prefix: String,
    settings: S3Settings,
}

/// Reads a setting: the overrides first, then the environment.
fn setting(overrides: &[(String, String)], name: &str) -> Option<String> {
    overrides
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(name).ok())
}

fn env_flag(overrides: &[(String, String)], name: &str) -> anyhow::Result<Option<bool>> {
    match setting(overrides, name).ok_or(()) {
        Ok(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => anyhow::bail!("{name} must be true or false, not '{v}'"),
        },
        Err(_) => Ok(None),
    }
}

impl S3Store {
    /// Connects with the AWS settings of the environment; `overrides` (`AWS_*` names) win
    /// over it.
    pub fn connect(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
        overrides: &[(String, String)],
    ) -> anyhow::Result<S3Store> {
        let endpoint_set = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"]
            .iter()
            .any(|v| setting(overrides, v).is_some_and(|s| !s.is_empty()));
        let path_style = env_flag(overrides, "AWS_S3_FORCE_PATH_STYLE")?.unwrap_or(endpoint_set);
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(settings.request_timeout)
            .with_allow_http(env_flag(overrides, "AWS_ALLOW_HTTP")?.unwrap_or(false));
        let retry = RetryConfig {
            retry_timeout: settings.retry_timeout,
            max_retries: 10,
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env();
        for (name, value) in overrides {
            if let Ok(key) = name.to_ascii_lowercase().parse() {
                builder = builder.with_config(key, value);
            }
        }
        let mut builder = builder
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(!path_style)
            .with_client_options(client)
            .with_retry(retry);
        if setting(overrides, "AWS_REGION").is_none()
            && setting(overrides, "AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().map_err(|e| {
            anyhow::anyhow!(
                "cannot set up the S3 client for s3://{bucket}: {}",
                explain(&e)
            )
        })?;
        Ok(S3Store {
            location: Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            },
            store: Arc::new(store),
            prefix: prefix.to_string(),
            settings: settings.clone(),
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from(join(&self.prefix, key))
    }

    /// The repository key of an object path.
    fn key_of(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
                .to_string()
        }
    }

    fn describe(&self, key: &str) -> String {
        self.location.join_display(key)
    }

    pub fn probe(&self) -> anyhow::Result<()> {
        let store = Arc::clone(&self.store);
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        block(async move { store.list_with_delimiter(prefix.as_ref()).await })
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("cannot use {}: {}", self.location, explain(&e)))
    }

    pub fn create(&self, key: &str) -> S3Writer {
        S3Writer::new(
            Arc::clone(&self.store),
            self.path(key),
            self.describe(key),
            self.path(&upload_marker_key(key)),
            &self.settings,
        )
    }

    pub fn open_read(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        let store = Arc::clone(&self.store);
        let path = self.path(key);
        let display = self.describe(key);
        let result =
            block(async move { store.get(&path).await }).map_err(|e| to_io(e, &display))?;
        // A pump thread keeps a few chunks ahead of the reader (bounded memory).
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Bytes>>(32);
        let what = self.describe(key);
        std::thread::Builder::new()
            .name("s3-read".into())
            .spawn(move || {
                let mut stream = result.into_stream();
                loop {
                    let next = runtime().block_on(stream.next());
                    let Some(chunk) = next else { break };
                    let failed = chunk.is_err();
                    if tx.send(chunk.map_err(|e| to_io(e, &what))).is_err() || failed {
                        break;
                    }
                }
            })?;
        Ok(Box::new(S3Reader {
            rx,
            current: Bytes::new(),
        }))
    }

    pub fn read(&self, key: &str) -> io::Result<Vec<u8>> {
        let store = Arc::clone(&self.store);
        let path = self.path(key);
        let display = self.describe(key);
        block(async move {
            let got = store.get(&path).await?;
            got.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(|e| to_io(e, &display))
    }

    pub fn size(&self, key: &str) -> io::Result<Option<u64>> {
        let store = Arc::clone(&self.store);
        let path = self.path(key);
        match block(async move { store.head(&path).await }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(to_io(e, &self.describe(key))),
        }
    }

    fn info(&self, meta: &object_store::ObjectMeta) -> ObjectInfo {
        ObjectInfo {
            key: self.key_of(&meta.location),
            size: meta.size,
            modified: time::OffsetDateTime::from_unix_timestamp(meta.last_modified.timestamp())
                .ok(),
        }
    }

    fn list_all(&self, prefix: &str) -> io::Result<Vec<object_store::ObjectMeta>> {
        let store = Arc::clone(&self.store);
        let path = self.path(prefix);
        block(async move {
            let listed: Vec<_> = store.list(Some(&path)).collect().await;
            listed.into_iter().collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| to_io(e, &self.describe(prefix)))
    }

    pub fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        Ok(self
            .list_all(prefix)?
            .iter()
            .map(|m| self.info(m))
            .filter(|o| !o.key.contains(&format!("/{UPLOADS_DIR}/")))
            .collect())
    }

    pub fn list_dir(&self, prefix: &str) -> io::Result<(Vec<ObjectInfo>, Vec<String>)> {
        let store = Arc::clone(&self.store);
        let path = self.path(prefix);
        let listed = block(async move { store.list_with_delimiter(Some(&path)).await })
            .map_err(|e| to_io(e, &self.describe(prefix)))?;
        let files = listed.objects.iter().map(|m| self.info(m)).collect();
        let dirs = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        Ok((files, dirs))
    }

    pub fn delete(&self, key: &str) -> io::Result<()> {
        let store = Arc::clone(&self.store);
        let path = self.path(key);
        match block(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(to_io(e, &self.describe(key))),
        }
    }

    pub fn delete_prefix(&self, prefix: &str) -> io::Result<usize> {
        self.abort_uploads_under(prefix)?;
        let objects = self.list_all(prefix)?;
        let count = objects.len();
        let store = Arc::clone(&self.store);
        let paths: Vec<ObjectPath> = objects.into_iter().map(|m| m.location).collect();
        block(async move {
            let results: Vec<_> = futures::stream::iter(paths)
                .map(|path| {
                    let store = Arc::clone(&store);
                    async move {
                        match store.delete(&path).await {
                            Err(object_store::Error::NotFound { .. }) => Ok(()),
                            other => other,
                        }
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<()>, _>>()
        })
        .map_err(|e| to_io(e, &self.describe(prefix)))?;
        Ok(count)
    }

    pub fn abort_uploads_under(&self, prefix: &str) -> io::Result<usize> {
        let markers: Vec<object_store::ObjectMeta> = self
            .list_all(prefix)?
            .into_iter()
            .filter(|m| m.location.as_ref().contains(&format!("/{UPLOADS_DIR}/")))
            .collect();
        let mut aborted = 0;
        for marker in markers {
            let store = Arc::clone(&self.store);
            let location = marker.location.clone();
            let result = block(async move {
                let body = store.get(&location).await?.bytes().await?;
                if let Ok(open) = serde_json::from_slice::<OpenUpload>(&body) {
                    let path = ObjectPath::from(open.path.as_str());
                    match store.abort_multipart(&path, &open.upload_id).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                store.delete(&location).await
            });
            match result {
                Ok(()) => aborted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(to_io(e, &self.describe(&self.key_of(&marker.location)))),
            }
        }
        Ok(aborted)
    }

    pub fn lock(&self, key: &str, holder: &str, what: &str) -> anyhow::Result<S3Lock> {
        S3Lock::acquire(
            Arc::clone(&self.store),
            self.path(key),
            self.describe(key),
            holder,
            what,
            self.settings.lock_ttl,
        )
    }

    pub fn is_locked(&self, key: &str) -> bool {
        let store = Arc::clone(&self.store);
        let path = self.path(key);
        match block(async move { store.get(&path).await?.bytes().await }) {
            Ok(body) => serde_json::from_slice::<LockRecord>(&body)
                .map(|r| r.expires_at > unix_now())
                .unwrap_or(true),
            Err(_) => false,
        }
    }
}

/// Streams the chunks the pump thread receives.
struct S3Reader {
    rx: std::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::{HttpError, HttpErrorKind};

    fn failed(kind: HttpErrorKind, io_kind: io::ErrorKind) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(kind, io::Error::new(io_kind, "the cause"))),
        }
    }

    #[test]
    fn a_request_that_timed_out_says_so_and_names_its_setting() {
        let line = explain(&failed(HttpErrorKind::Timeout, io::ErrorKind::TimedOut));
        assert!(
            line.contains("timed out") && line.contains(REQUEST_TIMEOUT_ENV),
            "{line}"
        );
        let refused = explain(&failed(
            HttpErrorKind::Connect,
            io::ErrorKind::ConnectionRefused,
        ));
        assert!(!refused.contains("timed out"), "{refused}");
    }

    #[test]
    fn the_request_timeout_is_a_setting() {
        let set = |value: &str| {
            S3Settings::from_env_with(&[(REQUEST_TIMEOUT_ENV.to_string(), value.to_string())])
        };
        assert_eq!(set("7s").unwrap().request_timeout, Duration::from_secs(7));
        let bad = format!("{:#}", set("soon").unwrap_err());
        assert!(bad.contains(REQUEST_TIMEOUT_ENV), "{bad}");
    }
}
