//! Guards before a restore overwrites anything: confirmation on a terminal, and a safety dump
//! of what is about to be replaced (seed 002), so a wrong restore can itself be undone.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::patterns;
use crate::pgbin::{self, PgBin};

/// Folder of safety dumps under the backup directory when `--safety-dir` is not given.
pub const DEFAULT_SAFETY_SUBDIR: &str = "logical-safety";

/// Dumps `tables` of `database` (all of it when `tables` is empty) into a custom-format file
/// under `dir` before they are replaced; returns its path. The file is private (0600).
pub async fn safety_dump(
    bin: &PgBin,
    dir: &Path,
    database: &str,
    tables: &[(String, String)],
) -> anyhow::Result<PathBuf> {
    common::durable::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the safety-dump folder {} (set --safety-dir)",
            dir.display()
        )
    })?;
    let stamp = common::timefmt::id_string(common::timefmt::now());
    let mut taken = Default::default();
    let name = crate::details::file_name(database, &mut taken);
    let path = dir.join(format!("{name}-{stamp}-{}.dump", std::process::id()));
    let tmp = path.with_extension("dump.partial");
    let mut cmd = bin.command("pg_dump", database);
    cmd.args(["--format=custom", "--strict-names", "--file"])
        .arg(&tmp);
    for (schema, table) in tables {
        cmd.arg(format!("--table={}", patterns::qualified(schema, table)));
    }
    let result = pgbin::run(&mut cmd, &format!("safety dump of '{database}'")).await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context("nothing was restored"));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot move the safety dump to {}", path.display()))?;
    common::durable::fsync_dir(dir)?;
    Ok(path)
}
