//! Guards before a restore overwrites anything: confirmation on a terminal, and a safety dump
//! of what is about to be replaced, so a wrong restore can itself be undone.
//!
//! The safety dump streams from pg_dump's stdout into the store, by default into the
//! repository itself (`logical-safety/`, a folder beside the kinds, on disk or on S3), or into
//! `--safety-dir` (a directory or an S3 URL). It appears whole under its name or not at all.
//! Restoring from an encrypted set, the safety dump is encrypted too (`.dump.age`).

use anyhow::Context;
use common::encryption::{Recipients, Sealed, AGE_SUFFIX};
use common::storage::{self, Location, Store};

use crate::patterns;
use crate::pgbin::{self, PgBin};

/// Folder of safety dumps in the repository when `--safety-dir` is not given.
pub const DEFAULT_SAFETY_SUBDIR: &str = "logical-safety";

/// The store of a `--safety-dir`: a local directory (created if missing) or an S3 prefix
/// (its bucket must exist and accept the credentials).
pub fn open_dir(location: &Location) -> anyhow::Result<Store> {
    let store = Store::open(location)?;
    store.create_root().with_context(|| {
        format!("cannot create the safety-dump folder {location} (set --safety-dir)")
    })?;
    store.probe()?;
    Ok(store)
}

/// Who a safety dump is encrypted to when restoring from `manifest`'s set: the recipients
/// in the environment, else those the set was encrypted to; `None` (plaintext) for a plain
/// set restored without recipients.
pub fn recipients(manifest: &common::Manifest) -> anyhow::Result<Option<Recipients>> {
    if let Some(recipients) = Recipients::from_env()? {
        return Ok(Some(recipients));
    }
    match manifest.encryption() {
        Some(e) if !e.recipients.is_empty() => {
            Ok(Some(Recipients::parse(&e.recipients.join(","))?))
        }
        // A passphrase set is only readable with the passphrase file, which also encrypts.
        _ => Ok(None),
    }
}

/// Dumps `tables` of `database` (all of it when `tables` is empty) in custom format into
/// `folder` of `store` before they are replaced, encrypted to `recipients` when given;
/// returns where it went (a path or URL). A local file is private (0600).
pub async fn safety_dump(
    bin: &PgBin,
    store: &Store,
    folder: &str,
    database: &str,
    tables: &[(String, String)],
    recipients: Option<&Recipients>,
) -> anyhow::Result<String> {
    let stamp = common::timefmt::id_string(common::timefmt::now());
    let mut taken = Default::default();
    let name = crate::details::file_name(database, &mut taken);
    let suffix = if recipients.is_some() { AGE_SUFFIX } else { "" };
    let key = storage::join(
        folder,
        &format!("{name}-{stamp}-{}.dump{suffix}", std::process::id()),
    );
    let shown = store.describe(&key);
    let object = store.create(&key).with_context(|| {
        format!("cannot create the safety dump {shown} (set --safety-dir); nothing was restored")
    })?;
    let mut cmd = bin.command("pg_dump", database);
    cmd.args(["--format=custom", "--strict-names"]);
    for (schema, table) in tables {
        cmd.arg(format!("--table={}", patterns::qualified(schema, table)));
    }
    let sealed = Sealed::new(object, recipients)
        .with_context(|| format!("cannot encrypt the safety dump {shown}; nothing was restored"))?;
    let sealed = pgbin::run_into(&mut cmd, sealed, &format!("safety dump of '{database}'"))
        .await
        .map_err(|e| e.context("nothing was restored"))?;
    sealed
        .finish()
        .and_then(|object| object.commit())
        .with_context(|| format!("cannot store the safety dump {shown}; nothing was restored"))?;
    Ok(shown)
}
