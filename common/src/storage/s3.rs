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

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};

use super::{join, Location, ObjectInfo, UPLOADS_DIR};
use crate::interrupt;

/// Environment variable: size of one multipart upload part.
pub const PART_SIZE_ENV: &str = "BACKUP_S3_PART_SIZE";
/// Environment variable: parts uploaded at once per file.
pub const CONCURRENCY_ENV: &str = "BACKUP_S3_UPLOAD_CONCURRENCY";
/// Environment variable: how long a failing request is retried.
pub const RETRY_TIMEOUT_ENV: &str = "BACKUP_S3_RETRY_TIMEOUT";
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
            lock_ttl: duration(LOCK_TTL_ENV, 120)?.max(Duration::from_secs(3)),
        })
    }
}

/// The runtime S3 requests run on, separate from any runtime of the tools.
fn runtime() -> &'static tokio::runtime::Runtime {
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
fn block<F>(future: F) -> F::Output
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
fn explain(error: &object_store::Error) -> String {
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
    let hint = if line.contains("SignatureDoesNotMatch") || line.contains("InvalidAccessKeyId") {
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

fn to_io(error: object_store::Error, what: &str) -> io::Error {
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
            .with_timeout(Duration::from_secs(300))
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
        S3Writer {
            store: Arc::clone(&self.store),
            path: self.path(key),
            display: self.describe(key),
            marker: self.path(&upload_marker_key(key)),
            buf: Vec::new(),
            part_size: self.settings.part_size,
            concurrency: self.settings.concurrency,
            upload: None,
        }
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

/// Where the record of an open multipart upload for `key` is kept while it runs.
fn upload_marker_key(key: &str) -> String {
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    join(dir, &format!("{UPLOADS_DIR}/{name}.{}", std::process::id()))
}

/// The record of an open multipart upload, so that it can be aborted after a crash.
#[derive(Serialize, Deserialize)]
struct OpenUpload {
    path: String,
    upload_id: String,
}

struct Upload {
    id: String,
    parts: Vec<PartId>,
    pending: VecDeque<tokio::task::JoinHandle<object_store::Result<PartId>>>,
    next_index: usize,
    /// Aborts the upload if the process is interrupted first.
    _abort_on_interrupt: interrupt::Cleanup,
}

/// A streaming upload: one PUT when the object fits one part, else a multipart upload whose
/// parts go up while the next is filled.
pub(super) struct S3Writer {
    store: Arc<AmazonS3>,
    path: ObjectPath,
    display: String,
    marker: ObjectPath,
    buf: Vec<u8>,
    part_size: usize,
    concurrency: usize,
    upload: Option<Upload>,
}

impl S3Writer {
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.part_size.min(1 << 20));
        }
        let room = self.part_size - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.send_part()?;
        }
        Ok(n)
    }

    fn start_upload(&mut self) -> io::Result<()> {
        let store = Arc::clone(&self.store);
        let (path, marker) = (self.path.clone(), self.marker.clone());
        let id = block(async move {
            let id = store.create_multipart(&path).await?;
            let record = OpenUpload {
                path: path.to_string(),
                upload_id: id.clone(),
            };
            let body = serde_json::to_vec(&record).expect("serializable");
            store.put(&marker, body.into()).await?;
            Ok::<_, object_store::Error>(id)
        })
        .map_err(|e| to_io(e, &self.display))?;
        let (store, path, marker, upload_id) = (
            Arc::clone(&self.store),
            self.path.clone(),
            self.marker.clone(),
            id.clone(),
        );
        let cleanup = interrupt::on_interrupt(move || {
            let _ = block(abort(store, path, marker, upload_id));
        });
        self.upload = Some(Upload {
            id,
            parts: Vec::new(),
            pending: VecDeque::new(),
            next_index: 0,
            _abort_on_interrupt: cleanup,
        });
        Ok(())
    }

    fn send_part(&mut self) -> io::Result<()> {
        // Interrupted, no new part goes up while the cleanups abort the upload.
        interrupt::checkpoint();
        if self.upload.is_none() {
            self.start_upload()?;
        }
        let upload = self.upload.as_mut().expect("started above");
        let data = std::mem::take(&mut self.buf);
        let (store, path, id, index) = (
            Arc::clone(&self.store),
            self.path.clone(),
            upload.id.clone(),
            upload.next_index,
        );
        upload.next_index += 1;
        upload.pending.push_back(runtime().spawn(async move {
            store
                .put_part(&path, &id, index, PutPayload::from(data))
                .await
        }));
        while upload.pending.len() > self.concurrency {
            let handle = upload.pending.pop_front().expect("non-empty");
            upload.parts.push(join_part(handle, &self.display)?);
        }
        Ok(())
    }

    pub fn commit(mut self: Box<Self>, create_new: bool) -> io::Result<()> {
        if self.upload.is_none() {
            let store = Arc::clone(&self.store);
            let path = self.path.clone();
            let payload = PutPayload::from(std::mem::take(&mut self.buf));
            let opts = PutOptions {
                mode: if create_new {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                },
                ..PutOptions::default()
            };
            return block(async move { store.put_opts(&path, payload, opts).await })
                .map(|_| ())
                .map_err(|e| to_io(e, &self.display));
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let mut upload = self.upload.take().expect("checked above");
        while let Some(handle) = upload.pending.pop_front() {
            match join_part(handle, &self.display) {
                Ok(part) => upload.parts.push(part),
                Err(e) => {
                    self.upload = Some(upload);
                    return Err(e);
                }
            }
        }
        let store = Arc::clone(&self.store);
        let (path, marker, id, parts) = (
            self.path.clone(),
            self.marker.clone(),
            upload.id.clone(),
            std::mem::take(&mut upload.parts),
        );
        let result = block(async move {
            // Multipart uploads cannot be conditional: the check narrows the window only.
            if create_new && store.head(&path).await.is_ok() {
                return Err(object_store::Error::AlreadyExists {
                    path: path.to_string(),
                    source: "exists".into(),
                });
            }
            store.complete_multipart(&path, &id, parts).await?;
            let _ = store.delete(&marker).await;
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.upload = Some(upload);
                Err(to_io(e, &self.display))
            }
        }
    }
}

fn join_part(
    handle: tokio::task::JoinHandle<object_store::Result<PartId>>,
    display: &str,
) -> io::Result<PartId> {
    match block(handle) {
        Ok(Ok(part)) => Ok(part),
        Ok(Err(e)) => Err(to_io(e, display)),
        Err(e) => Err(io::Error::other(format!(
            "{display}: upload task failed: {e}"
        ))),
    }
}

async fn abort(
    store: Arc<AmazonS3>,
    path: ObjectPath,
    marker: ObjectPath,
    upload_id: String,
) -> object_store::Result<()> {
    store.abort_multipart(&path, &upload_id).await?;
    store.delete(&marker).await
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            for handle in &upload.pending {
                handle.abort();
            }
            let _ = block(abort(
                Arc::clone(&self.store),
                self.path.clone(),
                self.marker.clone(),
                upload.id.clone(),
            ));
        }
    }
}

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
struct LockRecord {
    holder: String,
    /// Unix seconds after which the lock may be broken.
    expires_at: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct LockShared {
    e_tag: Option<String>,
    lost: Option<String>,
    stop: bool,
}

/// A lock object held and renewed by this run (see [`super::StoreLock`]).
pub struct S3Lock {
    store: Arc<AmazonS3>,
    path: ObjectPath,
    display: String,
    shared: Arc<(Mutex<LockShared>, Condvar)>,
    renewer: Option<std::thread::JoinHandle<()>>,
    /// An interrupted run exits without dropping its lock: this releases it first.
    _release_on_interrupt: interrupt::Cleanup,
}

impl std::fmt::Debug for S3Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Lock")
            .field("key", &self.display)
            .finish()
    }
}

fn lock_body(holder: &str, ttl: Duration) -> PutPayload {
    let record = LockRecord {
        holder: holder.to_string(),
        expires_at: unix_now() + ttl.as_secs(),
    };
    PutPayload::from(serde_json::to_vec(&record).expect("serializable"))
}

fn update(e_tag: Option<String>) -> PutOptions {
    PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag,
            version: None,
        }),
        ..PutOptions::default()
    }
}

impl S3Lock {
    fn acquire(
        store: Arc<AmazonS3>,
        path: ObjectPath,
        display: String,
        holder: &str,
        what: &str,
        ttl: Duration,
    ) -> anyhow::Result<S3Lock> {
        let created = {
            let (store, path) = (Arc::clone(&store), path.clone());
            let body = lock_body(holder, ttl);
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            block(async move { store.put_opts(&path, body, opts).await })
        };
        let e_tag = match created {
            Ok(put) => put.e_tag,
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                Self::break_expired(&store, &path, &display, holder, what, ttl)?
            }
            Err(e) => anyhow::bail!("cannot create the lock {display}: {}", explain(&e)),
        };
        let shared = Arc::new((
            Mutex::new(LockShared {
                e_tag,
                lost: None,
                stop: false,
            }),
            Condvar::new(),
        ));
        let renewer = {
            let (store, path, shared, holder) = (
                Arc::clone(&store),
                path.clone(),
                Arc::clone(&shared),
                holder.to_string(),
            );
            std::thread::Builder::new()
                .name("s3-lock".into())
                .spawn(move || renew(store, path, shared, holder, ttl))?
        };
        let release = {
            let (store, path, shared, display) = (
                Arc::clone(&store),
                path.clone(),
                Arc::clone(&shared),
                display.clone(),
            );
            interrupt::on_interrupt(move || release(&store, &path, &shared, &display))
        };
        Ok(S3Lock {
            store,
            path,
            display,
            shared,
            renewer: Some(renewer),
            _release_on_interrupt: release,
        })
    }

    /// The lock exists: take it over if it expired (one contender wins the conditional
    /// update), else report who holds it.
    fn break_expired(
        store: &Arc<AmazonS3>,
        path: &ObjectPath,
        display: &str,
        holder: &str,
        what: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<String>> {
        let current = {
            let (store, path) = (Arc::clone(store), path.clone());
            block(async move {
                let got = store.get(&path).await?;
                let e_tag = got.meta.e_tag.clone();
                Ok::<_, object_store::Error>((got.bytes().await?, e_tag))
            })
        };
        let (body, e_tag) = match current {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => {
                anyhow::bail!("the lock {display} changed hands while taking it; try again")
            }
            Err(e) => anyhow::bail!("cannot read the lock {display}: {}", explain(&e)),
        };
        let record: Option<LockRecord> = serde_json::from_slice(&body).ok();
        let now = unix_now();
        if let Some(record) = &record {
            if record.expires_at > now {
                anyhow::bail!(
                    "another {what} run holds the repository lock {display} ({}, expires in {} s unless renewed); wait for it to finish",
                    record.holder,
                    record.expires_at - now
                );
            }
        }
        let taken = {
            let (store, path) = (Arc::clone(store), path.clone());
            let body = lock_body(holder, ttl);
            block(async move { store.put_opts(&path, body, update(e_tag)).await })
        };
        match taken {
            Ok(put) => {
                let previous = record.map_or_else(|| "an unknown run".to_string(), |r| r.holder);
                let lock_name = display;
                tracing::warn!("broke the expired lock {lock_name} of {previous}");
                Ok(put.e_tag)
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => {
                anyhow::bail!("another {what} run took the expired lock {display} first; wait for it to finish")
            }
            Err(e) => anyhow::bail!("cannot take over the lock {display}: {}", explain(&e)),
        }
    }

    pub fn check(&self) -> anyhow::Result<()> {
        match &self.shared.0.lock().expect("lock state").lost {
            Some(why) => anyhow::bail!("lost the repository lock {}: {why}", self.display),
            None => Ok(()),
        }
    }

    pub fn describe(&self) -> String {
        self.display.clone()
    }
}

/// Renews the lock every third of its lifetime until told to stop.
fn renew(
    store: Arc<AmazonS3>,
    path: ObjectPath,
    shared: Arc<(Mutex<LockShared>, Condvar)>,
    holder: String,
    ttl: Duration,
) {
    let (state, wake) = &*shared;
    let mut valid_until = unix_now() + ttl.as_secs();
    loop {
        let guard = state.lock().expect("lock state");
        let (guard, _) = wake
            .wait_timeout_while(guard, ttl / 3, |s| !s.stop)
            .expect("lock state");
        if guard.stop || guard.lost.is_some() {
            return;
        }
        let e_tag = guard.e_tag.clone();
        drop(guard);
        let (s, p) = (Arc::clone(&store), path.clone());
        let body = lock_body(&holder, ttl);
        let result = runtime().block_on(async move { s.put_opts(&p, body, update(e_tag)).await });
        let mut guard = state.lock().expect("lock state");
        match result {
            Ok(put) => {
                guard.e_tag = put.e_tag;
                valid_until = unix_now() + ttl.as_secs();
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => {
                guard.lost = Some("another run took it over".into());
            }
            Err(e) => {
                tracing::warn!("cannot renew the repository lock: {}", explain(&e));
                if unix_now() >= valid_until {
                    guard.lost = Some("it expired while it could not be renewed".into());
                }
            }
        }
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        {
            let mut guard = self.shared.0.lock().expect("lock state");
            guard.stop = true;
            self.shared.1.notify_all();
        }
        if let Some(thread) = self.renewer.take() {
            let _ = thread.join();
        }
        release(&self.store, &self.path, &self.shared, &self.display);
    }
}

/// Deletes the lock object if it is still ours (its ETag is the one we last wrote) and stops
/// the renewals.
fn release(
    store: &Arc<AmazonS3>,
    path: &ObjectPath,
    shared: &Arc<(Mutex<LockShared>, Condvar)>,
    display: &str,
) {
    let e_tag = {
        let mut guard = shared.0.lock().expect("lock state");
        guard.stop = true;
        shared.1.notify_all();
        if guard.lost.is_some() {
            None
        } else {
            guard.lost = Some("released".into());
            guard.e_tag.clone()
        }
    };
    let Some(ours) = e_tag else { return };
    let (store, path) = (Arc::clone(store), path.clone());
    let result = block(async move {
        let meta = store.head(&path).await?;
        if meta.e_tag.as_deref() == Some(ours.as_str()) {
            store.delete(&path).await?;
        }
        Ok::<_, object_store::Error>(())
    });
    if let Err(e) = result {
        let lock_name = display;
        tracing::warn!("cannot release the lock {lock_name}: {}", explain(&e));
    }
}
