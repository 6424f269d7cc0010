//! Repository locks on S3: a lock object created conditionally, renewed by conditional
//! updates on its ETag, broken by the next run once it has expired (see `StoreLock`).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{block, explain, runtime};
use crate::interrupt;

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LockRecord {
    holder: String,
    /// Unix seconds after which the lock may be broken.
    pub expires_at: u64,
}

pub(super) fn unix_now() -> u64 {
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
    pub(super) fn acquire(
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
