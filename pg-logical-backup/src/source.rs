//! Where pg_restore and psql read a dump of a set from.
//!
//! In a local repository they open the file themselves, by path, as they always did. On
//! object storage the object is streamed into their stdin: a custom-format dump and a plain
//! SQL script read sequentially, and `pg_restore --list` needs only the head of the stream
//! (it stops reading early, which ends the download). Only a real file or directory will do
//! for a directory-format dump and for parallel `pg_restore --jobs`: those are first
//! downloaded into a private temporary directory under `$TMPDIR` ([`Scratch`]), removed
//! afterwards and on interruption.
//!
//! An encrypted file (`.age`) is never opened by path: it is decrypted on its way into the
//! program's stdin, wherever the repository is, or into the scratch directory when a real
//! file is needed.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;

use anyhow::Context;
use common::encryption::{self, Identities};
use common::storage::Store;
use tokio::process::{Child, Command};

use crate::pgbin;

/// A dump (or script) of a set, as a program reads it.
#[derive(Debug, Clone)]
pub enum DumpSource {
    /// A file or directory the program opens itself.
    Path(PathBuf),
    /// A copy in a scratch directory, kept as long as this source.
    Staged {
        path: PathBuf,
        /// What it is a copy of, for messages.
        shown: String,
        scratch: Arc<Scratch>,
    },
    /// An object of the repository, streamed into the program's stdin; an age file is
    /// decrypted on the way with `identities`.
    Object {
        store: Store,
        key: String,
        encrypted: bool,
        identities: Option<Arc<Identities>>,
    },
}

impl DumpSource {
    /// The file `key` of `store`: its path in a local repository, else the streamed object.
    pub fn of(store: &Store, key: &str) -> DumpSource {
        match store.local_path(key) {
            Some(path) => DumpSource::Path(path),
            None => DumpSource::Object {
                store: store.clone(),
                key: key.to_string(),
                encrypted: false,
                identities: None,
            },
        }
    }

    /// The stored file `key` of `store` as the program reads it: an age file (its name ends
    /// in `.age`) streamed and decrypted with `identities`, anything else as [`DumpSource::of`].
    pub fn of_stored(store: &Store, key: &str, identities: Option<&Arc<Identities>>) -> DumpSource {
        if !encryption::is_encrypted_name(key) {
            return DumpSource::of(store, key);
        }
        DumpSource::Object {
            store: store.clone(),
            key: key.to_string(),
            encrypted: true,
            identities: identities.cloned(),
        }
    }

    /// How the dump is named in messages: its path or URL.
    pub fn shown(&self) -> String {
        match self {
            DumpSource::Path(path) => path.display().to_string(),
            DumpSource::Staged { shown, .. } => shown.clone(),
            DumpSource::Object { store, key, .. } => store.describe(key),
        }
    }

    /// The file the program opens, unless it reads stdin.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DumpSource::Path(path) | DumpSource::Staged { path, .. } => Some(path),
            DumpSource::Object { .. } => None,
        }
    }

    /// Gives the dump to `pg_restore`: the path as its last argument, or stdin (pg_restore
    /// reads stdin when no file is named).
    pub fn pg_restore_input(&self, cmd: &mut Command) {
        match self.path() {
            Some(path) => cmd.arg(path),
            None => cmd.stdin(Stdio::piped()),
        };
    }

    /// Gives the script to `psql`: `-f <path>`, or `-f -` and stdin.
    pub fn psql_input(&self, cmd: &mut Command) {
        cmd.arg("-f");
        match self.path() {
            Some(path) => cmd.arg(path),
            None => cmd.arg("-").stdin(Stdio::piped()),
        };
    }

    /// Spawns `cmd` (its input given by one of the methods above) and, for an object, starts
    /// feeding it into the child's stdin.
    pub fn spawn(&self, cmd: &mut Command) -> anyhow::Result<(Child, Feeder)> {
        let program = pgbin::program_name(cmd.as_std().get_program());
        let mut child = cmd.spawn().map_err(|e| pgbin::spawn_error(e, &program))?;
        let DumpSource::Object {
            store,
            key,
            encrypted,
            identities,
        } = self
        else {
            return Ok((child, Feeder(None)));
        };
        let stdin = child.stdin.take().context("no stdin pipe to the program")?;
        let mut stdin = std::fs::File::from(
            stdin
                .into_owned_fd()
                .context("cannot set up the program's stdin")?,
        );
        let (store, key, encrypted) = (store.clone(), key.clone(), *encrypted);
        let identities = identities.clone();
        let shown = self.shown();
        let feeding = tokio::task::spawn_blocking(move || {
            let object = store.open_read(&key)?;
            let mut plain = encryption::reader(object, encrypted, identities.as_deref(), &shown)?;
            io::copy(&mut plain, &mut stdin).map(drop)
        });
        Ok((child, Feeder(Some((feeding, self.shown())))))
    }

    /// Runs `cmd` to the end with the dump as input, capturing stdout and stderr; the exit
    /// status is the caller's to judge. A failed download is the error, whatever the program
    /// made of its cut-off input.
    pub async fn output(&self, cmd: &mut Command) -> anyhow::Result<Output> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (child, feeder) = self.spawn(cmd)?;
        let output = child
            .wait_with_output()
            .await
            .context("cannot wait for the program")?;
        feeder.finish().await?;
        Ok(output)
    }

    /// Like [`DumpSource::output`], failing with the program's message (naming `what`) when
    /// it did not succeed.
    pub async fn run(&self, cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
        let output = self.output(cmd).await?;
        pgbin::check(&output, what)?;
        Ok(output)
    }
}

/// The thread streaming an object into a program's stdin (nothing for a path).
#[derive(Debug)]
#[must_use = "a download error is only seen by finish()"]
pub struct Feeder(Option<(tokio::task::JoinHandle<io::Result<()>>, String)>);

impl Feeder {
    /// Waits for the download to end. A program that stopped reading early (it had what it
    /// needed, or it failed and says why itself) is not an error here.
    pub async fn finish(self) -> anyhow::Result<()> {
        let Some((feeding, shown)) = self.0 else {
            return Ok(());
        };
        match feeding.await.context("the download task failed")? {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            // Decryption errors name the file already.
            Err(e) if e.to_string().contains(&shown) => Err(e.into()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {shown}"))),
        }
    }
}

/// A private temporary directory under `$TMPDIR` for dumps that must be real files: removed
/// when dropped, and by the interrupt handler if the run is stopped first.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
    _cleanup: common::interrupt::Cleanup,
}

impl Scratch {
    pub fn new(what: &str) -> anyhow::Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{what}-", crate::TOOL))
            .tempdir()
            .with_context(|| {
                format!(
                    "cannot create a temporary directory for the {what} in {} (set TMPDIR to a place with room)",
                    std::env::temp_dir().display()
                )
            })?;
        let cleanup = common::interrupt::remove_dir_on_interrupt(dir.path().to_path_buf());
        Ok(Scratch {
            dir,
            _cleanup: cleanup,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
