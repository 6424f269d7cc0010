//! Base sets: details and PostgreSQL's backup_manifest (or, for sets read from the data
//! directory, their file list) are valid, every diff and incr set's chain is whole, the WAL
//! each set needs is archived; `--deep` extracts the newest set for pg_verifybackup and
//! test-restores it (with its chain) with pitr-restore.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use common::encryption::Identities;
use common::os_user;
use common::physical::chain::{self, Link};
use common::physical::filelist::{self, Stored, FILE_LIST, HASHES};
use common::physical::{
    BackupType, CaptureMethod, PgBackupManifest, PhysicalDetails, WalMethod, BASE_TAR,
    PG_BACKUP_MANIFEST,
};
use common::repo::SetInfo;
use common::wal::{segno_of, WalArchive};
use common::{Kind, Manifest, Repository};

use super::Problem;
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
    run.check(settings, "base.chain", || chains(sets));
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
) -> Result<String, Problem> {
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
    let listing = match details.method {
        CaptureMethod::PgBasebackup => backup_manifest_note(repo, set, m, identities),
        CaptureMethod::DataDir => file_list_note(repo, set, m, identities),
    };
    let note = listing.unwrap_or_else(|problem| {
        problems.push(problem.into());
        String::new()
    });
    if problems.is_empty() {
        Ok(format!(
            "{} backup, LSN {} .. {} on timeline {}, PostgreSQL {}, WAL {:?}{note}",
            details.backup_type.name(),
            details.start_lsn,
            details.stop_lsn,
            details.timeline,
            details.server_version,
            details.wal_method
        ))
    } else {
        Err(Problem::joined(&problems, "; "))
    }
}

/// Checks PostgreSQL's `backup_manifest` of a set taken with pg_basebackup parses; the note
/// says when its content was not read (encrypted, no key).
fn backup_manifest_note(
    repo: &Repository,
    set: &SetInfo,
    m: &Manifest,
    identities: Option<&Identities>,
) -> Result<String, Problem> {
    let entry = m
        .stored(PG_BACKUP_MANIFEST)
        .ok_or_else(|| format!("no {PG_BACKUP_MANIFEST} in the set"))?;
    // Without a key the files checks vouch for its stored bytes and age header.
    if entry.is_encrypted() && identities.is_none() {
        return Ok(" (backup_manifest encrypted: content not checked without a key)".into());
    }
    let shown = repo.describe(&set.key(&entry.path));
    let file = repo
        .open_plain(set, entry, identities)
        .map_err(|e| e.to_string())?;
    PgBackupManifest::read(file, &shown).map_err(|e| format!("{e:#}"))?;
    Ok(String::new())
}

/// A set read from the data directory has no PostgreSQL `backup_manifest` (so no
/// pg_verifybackup); its `files.json` (in clear) lists the data directory's files and its
/// `hashes.json` (encrypted with the set) the hashes of those it stored: checks both parse
/// and every stored file has its hash.
fn file_list_note(
    repo: &Repository,
    set: &SetInfo,
    m: &Manifest,
    identities: Option<&Identities>,
) -> Result<String, Problem> {
    let list = filelist::load(repo, set, m).map_err(|e| format!("{e:#}"))?;
    if list.files.is_empty() {
        return Err(format!("{FILE_LIST} of set {} lists no file", set.id).into());
    }
    let listed = format!(
        "; read from the data directory, so no PostgreSQL backup_manifest: {FILE_LIST} lists {} files",
        list.files.len()
    );
    let entry = m.stored(HASHES).ok_or_else(|| {
        format!("no {HASHES} in the set (a set read from the data directory has one)")
    })?;
    // Without a key the files checks vouch for its stored bytes and age header.
    if entry.is_encrypted() && identities.is_none() {
        return Ok(format!(
            "{listed} ({HASHES} encrypted: content not checked without a key)"
        ));
    }
    let hashes = filelist::load_hashes(repo, set, m, identities).map_err(|e| format!("{e:#}"))?;
    // A file stored whole is always hashed; one stored as pages is not when its pages were
    // found from the WAL (not read whole): a delta restore compares it with an earlier link.
    let unhashed: Vec<&str> = list
        .files
        .iter()
        .filter(|f| f.stored == Stored::Whole && !hashes.contains_key(&f.path))
        .map(|f| f.path.as_str())
        .collect();
    if let Some(first) = unhashed.first() {
        return Err(format!(
            "{HASHES} of set {} has no hash of {} file(s) stored whole, e.g. {first}: a delta restore cannot compare them",
            set.id,
            unhashed.len()
        )
        .into());
    }
    Ok(format!("{listed}, {HASHES} {} hashes", hashes.len()))
}

/// `base.chain`: every diff and incr set's chain is present, complete and consistent.
fn chains(sets: &[SetInfo]) -> Vec<CheckResult> {
    const NAME: &str = "base.chain";
    let chained: Vec<(&SetInfo, PhysicalDetails)> = super::complete(sets)
        .into_iter()
        // Unreadable details fail base.details.
        .filter_map(|(set, m)| PhysicalDetails::from_manifest(m).ok().map(|d| (set, d)))
        .filter(|(_, d)| d.backup_type != BackupType::Full || !d.chain.is_empty())
        .collect();
    if chained.is_empty() {
        return vec![CheckResult::skip(NAME, "no diff or incr base sets").on("base")];
    }
    chained
        .into_iter()
        .map(|(set, details)| {
            match chain_problems(sets, set, &details) {
                Ok(text) => CheckResult::pass(NAME, text),
                Err(problem) => CheckResult::fail(NAME, problem),
            }
            .on(&set.id)
        })
        .collect()
}

/// The chain of one diff or incr set, described, or what is wrong with it.
fn chain_problems(
    sets: &[SetInfo],
    set: &SetInfo,
    details: &PhysicalDetails,
) -> Result<String, Problem> {
    let kind = details.backup_type.name();
    if details.chain.is_empty() {
        return Err(format!(
            "the details of this {kind} backup name no chain: it cannot be restored"
        )
        .into());
    }
    if details.backup_type == BackupType::Full {
        return Err(format!(
            "a full backup whose details name a chain ({})",
            details.chain.join(", ")
        )
        .into());
    }
    let links = chain::resolve(sets, set).map_err(|broken| broken.to_string())?;
    let mut problems = Vec::new();
    let first = &links[0];
    if first.details.backup_type != BackupType::Full {
        problems.push(format!(
            "its chain starts with {} backup {}, not a full",
            first.details.backup_type.name(),
            first.set.id
        ));
    }
    for pair in links.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        if earlier.details.system_identifier != details.system_identifier {
            problems.push(format!(
                "link {} is of database system {}, this set of {}",
                earlier.set.id, earlier.details.system_identifier, details.system_identifier
            ));
        }
        if earlier.details.start_lsn >= later.details.start_lsn {
            problems.push(format!(
                "link {} starts at LSN {}, not before {} at {}",
                earlier.set.id, earlier.details.start_lsn, later.set.id, later.details.start_lsn
            ));
        }
    }
    let reference: &Link = &links[links.len() - 2];
    if details.reference.as_deref() != Some(reference.set.id.as_str()) {
        problems.push(format!(
            "its reference {} is not the chain's last link {}",
            details.reference.as_deref().unwrap_or("(none)"),
            reference.set.id
        ));
    }
    if details
        .reference_lsn
        .is_some_and(|lsn| lsn != reference.details.start_lsn)
    {
        problems.push(format!(
            "its reference LSN {} is not the start LSN {} of reference {}",
            details.reference_lsn.expect("checked"),
            reference.details.start_lsn,
            reference.set.id
        ));
    }
    if !problems.is_empty() {
        return Err(format!("{kind} backup {}: {}", set.id, problems.join("; ")).into());
    }
    let names: Vec<String> = links
        .iter()
        .map(|l| format!("{} {}", l.details.backup_type.name(), l.set.id))
        .collect();
    Ok(format!(
        "chain of {} sets present and complete: {}",
        links.len(),
        names.join(" -> ")
    ))
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
    if PhysicalDetails::from_manifest(m).is_ok_and(|d| d.method == CaptureMethod::DataDir) {
        return CheckResult::skip(
            NAME,
            "the newest set was read from the data directory (--pgdata): it has no PostgreSQL \
             backup_manifest for pg_verifybackup (base.details checks its files.json, \
             base.test-restore restores it)",
        );
    }
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
