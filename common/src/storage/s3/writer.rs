//! Streaming uploads to S3: one PUT when the object fits one part, else a multipart upload
//! whose parts go up while the next fills, recorded under `.open-uploads/` until it ends.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{block, join, runtime, to_io, S3Settings, UPLOADS_DIR};
use crate::interrupt;

/// Where the record of an open multipart upload for `key` is kept while it runs.
pub(super) fn upload_marker_key(key: &str) -> String {
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    join(dir, &format!("{UPLOADS_DIR}/{name}.{}", std::process::id()))
}

/// The record of an open multipart upload, so that it can be aborted after a crash.
#[derive(Serialize, Deserialize)]
pub(super) struct OpenUpload {
    pub path: String,
    pub upload_id: String,
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
pub struct S3Writer {
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
    pub(super) fn new(
        store: Arc<AmazonS3>,
        path: ObjectPath,
        display: String,
        marker: ObjectPath,
        settings: &S3Settings,
    ) -> S3Writer {
        S3Writer {
            store,
            path,
            display,
            marker,
            buf: Vec::new(),
            part_size: settings.part_size,
            concurrency: settings.concurrency,
            upload: None,
        }
    }

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
