//! Guards before a restore overwrites anything: confirmation on a terminal, and a safety dump
//! of what is about to be replaced (seed 002), so a wrong restore can itself be undone.
//!
//! The safety dump streams from pg_dump's stdout into the store, by default into the
//! repository itself (`logical-safety/`, a folder beside the kinds, on disk or on S3), or into
//! `--safety-dir` (a directory or an S3 URL). It appears whole under its name or not at all.

use anyhow::Context;
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

/// Dumps `tables` of `database` (all of it when `tables` is empty) in custom format into
/// `folder` of `store` before they are replaced; returns where it went (a path or URL). A
/// local file is private (0600).
pub async fn safety_dump(
    bin: &PgBin,
    store: &Store,
    folder: &str,
    database: &str,
    tables: &[(String, String)],
) -> anyhow::Result<String> {
    let stamp = common::timefmt::id_string(common::timefmt::now());
    let mut taken = Default::default();
    let name = crate::details::file_name(database, &mut taken);
    let key = storage::join(
        folder,
        &format!("{name}-{stamp}-{}.dump", std::process::id()),
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
    let object = pgbin::run_into(&mut cmd, object, &format!("safety dump of '{database}'"))
        .await
        .map_err(|e| e.context("nothing was restored"))?;
    object
        .commit()
        .with_context(|| format!("cannot store the safety dump {shown}; nothing was restored"))?;
    Ok(shown)
}
