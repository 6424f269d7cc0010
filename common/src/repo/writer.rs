//! A set being written: its files (compressed, maybe encrypted, checksummed, invisible until
//! finished) and the manifest that marks it complete, written last.

use std::io::{self, BufWriter, Write};

use anyhow::Context;
use time::OffsetDateTime;

use super::private::{PrivateKeys, PRIVATE_FILE};
use super::{Kind, Repository, STARTED_MARKER};
use crate::encryption::{self, Recipients, Sealed};
use crate::interrupt;
use crate::manifest::{FileEntry, Manifest, SetStatus, MANIFEST_VERSION};
use crate::storage::{self, ObjectWriter, Store};
use crate::stream::{Compression, Encoder, HashingWriter};
use crate::timefmt;

/// A set being written. Nothing marks it complete until [`SetWriter::commit`]; a set dropped
/// before that (the run failed) or interrupted (SIGINT, SIGTERM) is removed, so nothing is
/// left that could be mistaken for a backup. A run killed outright (SIGKILL, power loss)
/// leaves a set without a manifest: incomplete, never chosen, and removed by retention after
/// its grace period (with any multipart upload it left open on S3).
#[derive(Debug)]
pub struct SetWriter {
    kind: Kind,
    id: String,
    /// Removes the set until its manifest is written.
    undo: interrupt::Undo,
    repo: Repository,
    prefix: String,
    started_at: OffsetDateTime,
    files: Vec<FileEntry>,
    /// Who the set's files are encrypted to; `None`: plaintext.
    recipients: Option<Recipients>,
    /// Manifest keys moved into the encrypted private part (see [`super::private`]).
    private: PrivateKeys,
}

/// What the tool tells the manifest about the set.
#[derive(Debug, Clone)]
pub struct SetMeta {
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub source: serde_json::Value,
    pub details: serde_json::Value,
}

impl SetWriter {
    /// A set just claimed at `prefix`; removed unless committed.
    pub(super) fn new(
        kind: Kind,
        id: String,
        repo: Repository,
        prefix: String,
        started_at: OffsetDateTime,
    ) -> SetWriter {
        SetWriter {
            kind,
            id,
            undo: remove_incomplete_set(repo.store().clone(), prefix.clone()),
            repo,
            prefix,
            started_at,
            files: Vec::new(),
            recipients: None,
            private: PrivateKeys::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The set's key prefix, `<kind>/<id>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the set is, for messages and summaries.
    pub fn describe(&self) -> String {
        self.repo.describe(&self.prefix)
    }

    pub fn store(&self) -> &Store {
        self.repo.store()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }

    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Encrypts every file created from now on to `recipients` (`None`: plaintext). Their
    /// stored names get [`encryption::AGE_SUFFIX`]; the manifest records the recipients.
    pub fn encrypt_to(&mut self, recipients: Option<Recipients>) {
        self.recipients = recipients;
    }

    /// Names the top-level keys of the manifest's `source` and `details` that tell about the
    /// content (table names, row counts, topic configs...): when the set is encrypted they
    /// are stored in its encrypted private part instead of `manifest.json`; readers get them
    /// back from [`Repository::reveal`]. A plain set keeps them in the manifest.
    pub fn keep_private(&mut self, source: &[&str], details: &[&str]) {
        self.private = PrivateKeys {
            source: source.iter().map(|k| k.to_string()).collect(),
            details: details.iter().map(|k| k.to_string()).collect(),
        };
    }

    /// Whether new files are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.recipients.is_some()
    }

    /// Opens a new file of the set that compresses, encrypts (see [`SetWriter::encrypt_to`])
    /// and checksums what is written to it. `path` is relative to the set (an encrypted file
    /// is stored as `path.age`: the entry [`SetFile::finish`] returns has the stored name);
    /// call [`SetFile::finish`] and then [`SetWriter::add`].
    pub fn create_file(
        &self,
        path: &str,
        compression: Compression,
        level: Option<i32>,
        threads: u32,
    ) -> io::Result<SetFile> {
        let path = match self.recipients {
            Some(_) => format!("{path}{}", encryption::AGE_SUFFIX),
            None => path.to_string(),
        };
        let object = self
            .repo
            .store
            .create(&storage::join(&self.prefix, &path))?;
        let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, object));
        // The checksum covers the stored bytes: checkable without a key.
        let sealed = Sealed::new(hashing, self.recipients.as_ref())?;
        Ok(SetFile {
            path,
            compression,
            encoder: compression.encoder(sealed, level, threads)?,
            raw_size: 0,
        })
    }

    /// Records a finished file in the set.
    pub fn add(&mut self, entry: FileEntry) {
        self.files.push(entry);
    }

    /// Stores a small file given whole (a manifest of PostgreSQL's, a list) and records it.
    pub fn put_file(&mut self, path: &str, bytes: &[u8]) -> io::Result<FileEntry> {
        let mut file = self.create_file(path, Compression::None, None, 1)?;
        file.write_all(bytes)?;
        let entry = file.finish()?;
        self.files.push(entry.clone());
        Ok(entry)
    }

    /// Stores a small file given whole in clear even in an encrypted set, and records it: for
    /// what the next backup must read without a key (a base backup's file list of paths,
    /// sizes and times). Never for content.
    pub fn put_clear_file(&mut self, path: &str, bytes: &[u8]) -> io::Result<FileEntry> {
        let recipients = self.recipients.take();
        let stored = self.put_file(path, bytes);
        self.recipients = recipients;
        stored
    }

    /// Verifies every file, then writes the manifest: from here on the set is complete.
    /// Local files are re-read and hashed; on S3 each object's size is checked against what
    /// was hashed while it streamed up (every request's payload SHA-256 was checked by the
    /// server through the SigV4 signature).
    pub fn commit(mut self, meta: SetMeta) -> anyhow::Result<Manifest> {
        let (mut source, mut details) = (meta.source, meta.details);
        if let Some(encryption) = self.recipients.as_ref().map(Recipients::describe) {
            if !self.private.is_empty() {
                let part = self.private.split(&mut source, &mut details);
                let text = serde_json::to_vec(&part)?;
                self.put_file(PRIVATE_FILE, &text).with_context(|| {
                    format!("cannot write the private part of {}", self.describe())
                })?;
            }
            crate::manifest::record_encryption(&mut source, &encryption);
        }
        let manifest = Manifest {
            format_version: MANIFEST_VERSION,
            kind: self.kind,
            id: self.id.clone(),
            tool: meta.tool.to_string(),
            tool_version: meta.tool_version.to_string(),
            started_at: self.started_at,
            finished_at: timefmt::now(),
            status: SetStatus::Complete,
            source,
            files: self.files,
            details,
        };
        let problems = if self.repo.store.is_local() {
            manifest.verify_files(&self.repo.store, &self.prefix)
        } else {
            manifest.verify_sizes(&self.repo.store, &self.prefix)
        };
        if !problems.is_empty() {
            anyhow::bail!(
                "set {} failed verification after writing and was removed: {}",
                self.id,
                problems.join("; ")
            );
        }
        self.repo.check_lock(self.kind)?;
        // Written while no interruption can remove the set: it ends whole or not at all.
        let (store, prefix) = (&self.repo.store, &self.prefix);
        let saved = self.undo.done_if_ok(|| manifest.save(store, prefix));
        if let Err(e) = saved.map_err(anyhow::Error::from) {
            let shown = store.describe(prefix);
            if store.is_local() {
                // A local manifest appears by a rename: it is there or not; the drop removes the set.
                return Err(e.context(format!("cannot write the manifest of {shown}")));
            }
            // An object store may have kept a manifest whose answer was lost: its outcome is
            // in doubt, so the set is removed here, and a failed removal said.
            let removal = remove_set(store, prefix);
            self.undo.done();
            return Err(match removal {
                Ok(()) => e.context(format!(
                    "cannot write the manifest of {shown}; the set was removed"
                )),
                Err(removal) => anyhow::anyhow!(
                    "cannot write the manifest of {shown} ({e:#}), nor remove the set ({removal:#}); if the store kept the manifest, the set is complete: its files were verified before it"
                ),
            });
        }
        if !store.is_local() {
            let _ = store.delete(&storage::join(prefix, STARTED_MARKER));
        }
        Ok(manifest)
    }
}

/// Deletes every object of the set at `prefix`.
fn remove_set(store: &Store, prefix: &str) -> anyhow::Result<()> {
    store
        .delete_prefix(prefix)
        .map(drop)
        .with_context(|| format!("cannot remove {}", store.describe(prefix)))
}

/// Removes a set that did not get its manifest (see [`SetWriter`]).
fn remove_incomplete_set(store: Store, prefix: String) -> interrupt::Undo {
    interrupt::Undo::new(move || {
        let shown = store.describe(&prefix);
        tracing::warn!("removing the incomplete set {shown}");
        if let Err(e) = remove_set(&store, &prefix) {
            tracing::warn!("{e:#}");
        }
    })
}

/// The stored stream of a set file: plain or an age file, over the checksum.
type Stored = HashingWriter<BufWriter<ObjectWriter>>;

/// A compressing, encrypting, checksumming file of a set, invisible until finished.
pub struct SetFile {
    path: String,
    compression: Compression,
    encoder: Encoder<Sealed<Stored>>,
    raw_size: u64,
}

impl SetFile {
    /// Bytes written so far, before compression.
    pub fn raw_size(&self) -> u64 {
        self.raw_size
    }

    /// Finishes compression, makes the file visible and returns its entry.
    pub fn finish(self) -> io::Result<FileEntry> {
        let hashing = self.encoder.finish()?.finish()?;
        let (buffered, sum) = hashing.finish();
        let object = buffered.into_inner().map_err(|e| e.into_error())?;
        object.commit()?;
        Ok(FileEntry {
            path: self.path,
            size: sum.size,
            sha256: sum.sha256,
            compression: self.compression,
            raw_size: Some(self.raw_size),
            xxh3: Some(sum.xxh3),
        })
    }
}

impl Write for SetFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.raw_size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}
