//! Base sets: details and PostgreSQL's backup_manifest are valid, the WAL each set needs is
//! archived; `--deep` extracts the newest set for pg_verifybackup and test-restores it with
//! pitr-restore.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use common::encryption::Identities;
use common::os_user;
use common::physical::{
    PgBackupManifest, PhysicalDetails, WalMethod, BASE_TAR, PG_BACKUP_MANIFEST,
};
use common::repo::SetInfo;
use common::wal::{segno_of, WalArchive};
use common::{Kind, Manifest, Repository};

use crate::check::{CheckResult, Run, Settings};

use crate::{scratch, tools};

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository, sets: &[SetInfo]) {
    run.check(settings, "base.details", || {
        super::per_set(
            "base.details",
            Kind::Base,
            sets,
            |set, m| match details_problems(repo, set, m, settings.identities.as_deref()) {
                Ok(text) => CheckResult::pass("base.details", text),
                Err(p) => CheckResult::fail("base.details", p),
            },
        )
    });
    let archive = WalArchive::new(repo);
    run.check(settings, "base.wal-present", || {
        super::per_set("base.wal-present", Kind::Base, sets, |_, m| {
            wal_present(&archive, m)
        })
    });
    let newest = super::complete(sets).pop();
    run.check(settings, "base.verifybackup", || {
        vec![match newest {
            None => CheckResult::skip("base.verifybackup", "no complete base sets").on("base"),
            Some((set, m)) => verifybackup(settings, repo, set, m).on(&set.id),
        }]
    });
    run.check(settings, "base.test-restore", || {
        vec![match newest {
            None => CheckResult::skip("base.test-restore", "no complete base sets").on("base"),
            Some((set, m)) => test_restore(settings, set, m).on(&set.id),
        }]
    });
}

fn tar_entry(m: &Manifest) -> Option<&common::FileEntry> {
    m.files.iter().find(|f| f.path.starts_with(BASE_TAR))
}

fn details_problems(
    repo: &Repository,
    set: &SetInfo,
    m: &Manifest,
    identities: Option<&Identities>,
) -> Result<String, String> {
    let details = PhysicalDetails::from_manifest(m).map_err(|e| format!("{e:#}"))?;
    let mut problems = Vec::new();
    if details.start_lsn > details.stop_lsn {
        problems.push(format!(
            "start LSN {} is after stop LSN {}",
            details.start_lsn, details.stop_lsn
        ));
    }
    if details.timeline == 0 {
        problems.push("timeline 0".to_string());
    }
    if !details.wal_segment_size.is_power_of_two() {
        problems.push(format!(
            "WAL segment size {} is not a power of two",
            details.wal_segment_size
        ));
    }
    match tar_entry(m) {
        None => problems.push(format!("no {BASE_TAR} file in the set")),
        Some(tar) if tar.compression != details.compression => problems.push(format!(
            "{} is {} but the details say {}",
            tar.path, tar.compression, details.compression
        )),
        Some(_) => {}
    }
    let mut sealed = "";
    match m.stored(PG_BACKUP_MANIFEST) {
        None => problems.push(format!("no {PG_BACKUP_MANIFEST} in the set")),
        // Without a key the files checks vouch for its stored bytes and age header.
        Some(entry) if entry.is_encrypted() && identities.is_none() => {
            sealed = " (backup_manifest encrypted: content not checked without a key)"
        }
        Some(entry) => {
            let shown = repo.describe(&set.key(&entry.path));
            let parsed = repo
                .open_plain(set, entry, identities)
                .map_err(|e| e.to_string())
                .and_then(|f| PgBackupManifest::read(f, &shown).map_err(|e| format!("{e:#}")));
            if let Err(e) = parsed {
                problems.push(e);
            }
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "LSN {} .. {} on timeline {}, PostgreSQL {}, WAL {:?}{sealed}",
            details.start_lsn,
            details.stop_lsn,
            details.timeline,
            details.server_version,
            details.wal_method
        ))
    } else {
        Err(problems.join("; "))
    }
}

fn wal_present(archive: &WalArchive, m: &Manifest) -> CheckResult {
    const NAME: &str = "base.wal-present";
    let details = match PhysicalDetails::from_manifest(m) {
        Ok(d) => d,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")),
    };
    if details.wal_method == WalMethod::Fetch {
        return CheckResult::pass(NAME, "WAL to consistency is inside the tarball (fetch)");
    }
    let size = details.wal_segment_size;
    let (from, to) = (
        segno_of(details.start_lsn, size),
        segno_of(details.stop_lsn, size),
    );
    match archive.missing(details.timeline, from, to, size) {
        Err(e) => CheckResult::fail(NAME, format!("cannot list the WAL archive: {e}")),
        Ok(missing) if missing.is_empty() => CheckResult::pass(
            NAME,
            format!("{} segment(s) to consistency archived", to - from + 1),
        ),
        Ok(missing) => CheckResult::fail(
            NAME,
            format!(
                "WAL needed to make the backup consistent is missing from the archive: {}; the set cannot be restored",
                missing.join(", ")
            ),
        ),
    }
}

/// Extracts a base set's tarball into `dest`, streaming it from the store as it unpacks.
/// Decrypted with `identities` when encrypted.
fn extract(
    repo: &Repository,
    set: &SetInfo,
    m: &Manifest,
    dest: &Path,
    identities: Option<&Identities>,
) -> anyhow::Result<()> {
    let entry = tar_entry(m).ok_or_else(|| anyhow::anyhow!("no {BASE_TAR} file in the set"))?;
    let plain = repo
        .open_plain(set, entry, identities)
        .with_context(|| format!("cannot read {}", repo.describe(&set.key(&entry.path))))?;
    let mut archive = tar::Archive::new(plain);
    archive.set_preserve_permissions(true);
    archive.unpack(dest)?;
    let manifest = dest.join(PG_BACKUP_MANIFEST);
    if !manifest.exists() {
        let entry = m
            .stored(PG_BACKUP_MANIFEST)
            .ok_or_else(|| anyhow::anyhow!("no {PG_BACKUP_MANIFEST} in the set"))?;
        let mut plain = repo.open_plain(set, entry, identities)?;
        std::io::copy(&mut plain, &mut std::fs::File::create(&manifest)?)
            .with_context(|| format!("cannot write {}", manifest.display()))?;
    }
    Ok(())
}

fn verifybackup(
    settings: &Settings,
    repo: &Repository,
    set: &SetInfo,
    m: &Manifest,
) -> CheckResult {
    const NAME: &str = "base.verifybackup";
    let identities = settings.identities.as_deref();
    if m.encryption().is_some() && identities.is_none() {
        return CheckResult::skip(
            NAME,
            format!(
                "the set is encrypted: set {} to verify it",
                common::encryption::IDENTITY_FILE_ENV
            ),
        );
    }
    let scratch = match super::scratch(settings, "validate-verifybackup-") {
        Ok(s) => s,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")),
    };
    let dest = scratch.path().join("data");
    if let Err(e) = extract(repo, set, m, &dest, identities) {
        return CheckResult::fail(NAME, format!("cannot extract the base backup: {e:#}"));
    }
    let wal_in_archive = PhysicalDetails::from_manifest(m)
        .map(|d| d.wal_method == WalMethod::Archive)
        .unwrap_or(true);
    let mut cmd = Command::new(common::pgbin::program("pg_verifybackup"));
    if wal_in_archive {
        cmd.arg("--no-parse-wal");
    }
    cmd.arg(&dest);
    match tools::capture(&mut cmd, "pg_verifybackup") {
        Err(_) => CheckResult::fail(NAME, common::pgbin::missing_hint("pg_verifybackup")),
        Ok(run) if run.code == Some(0) => CheckResult::pass(
            NAME,
            format!(
                "pg_verifybackup: backup verified{}",
                if wal_in_archive {
                    " (WAL checked separately in the archive)"
                } else {
                    ", WAL included"
                }
            ),
        ),
        Ok(run) => CheckResult::fail(
            NAME,
            format!(
                "pg_verifybackup failed: {}",
                run.stderr.lines().take(3).collect::<Vec<_>>().join(" | ")
            ),
        ),
    }
    // The scratch directory is removed when `scratch` drops.
}

fn test_restore(settings: &Settings, set: &SetInfo, m: &Manifest) -> CheckResult {
    const NAME: &str = "base.test-restore";
    if m.encryption().is_some() && settings.identities.is_none() {
        return CheckResult::skip(
            NAME,
            format!(
                "the set is encrypted: set {} to test-restore it",
                common::encryption::IDENTITY_FILE_ENV
            ),
        );
    }
    match restore_and_check(settings, set, m) {
        Ok(text) => CheckResult::pass(NAME, text),
        Err(e) => CheckResult::fail(NAME, format!("{e:#}")),
    }
}

fn restore_and_check(settings: &Settings, set: &SetInfo, m: &Manifest) -> anyhow::Result<String> {
    let details = PhysicalDetails::from_manifest(m)?;
    let scratch = super::scratch(settings, "validate-pitr-")?;
    os_user::give_to_db_user(scratch.path())?;
    let pgdata = scratch.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(tools::program("pitr-restore", settings.bin_dir.as_deref()));
    cmd.arg("--backup-dir")
        .arg(tools::backup_dir_arg(&settings.backup_dir)?)
        .arg("--pgdata")
        .arg(&pgdata)
        .args([
            "--backup-id",
            &set.id,
            "--start",
            "--yes",
            "--output",
            "json",
            "-q",
        ])
        .args(["--port", &port.to_string()])
        .arg("--socket-dir")
        .arg(scratch.path());
    if let Some(dir) = &settings.bin_dir {
        cmd.arg("--wal-archive-bin").arg(dir.join("wal-archive"));
    }
    os_user::as_db_user(&mut cmd)?;
    // Interrupted, or whatever happened, a server started on the scratch copy is stopped.
    let _stop = scratch::stopped_at_the_end(pgdata.clone());
    let run = tools::capture(&mut cmd, "pitr-restore");
    let run = run?;
    if run.code != Some(0) {
        anyhow::bail!("pitr-restore failed: {}", run.last_error());
    }
    let summary = run
        .summary()
        .ok_or_else(|| anyhow::anyhow!("pitr-restore printed no summary"))?;
    let timeline = summary["timeline"].as_u64().unwrap_or(0);
    if timeline <= u64::from(details.timeline) {
        anyhow::bail!(
            "the restored server is on timeline {timeline}, expected a new one after {}",
            details.timeline
        );
    }
    // The restored server answers and is the cluster the manifest describes.
    let pg = common::cli::PgArgs {
        host: Some(scratch.path().display().to_string()),
        port: Some(port),
        user: Some("postgres".into()),
        dbname: Some("postgres".into()),
    };
    let system_identifier = common::postgres::runtime()?.block_on(async {
        let client = common::postgres::connect(&pg, "validate-backups").await?;
        let row = client
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .await?;
        anyhow::Ok(row.get::<_, String>(0))
    })?;
    if system_identifier != details.system_identifier {
        anyhow::bail!(
            "the restored server has system identifier {system_identifier}, the manifest says {}",
            details.system_identifier
        );
    }
    Ok(format!(
        "restored system {system_identifier} and promoted to timeline {timeline} at {} in {:.1}s",
        summary["current_lsn"].as_str().unwrap_or("?"),
        summary["rto_s"].as_f64().unwrap_or(0.0)
    ))
}
