//! Repository checks: layout, writability, free space, permissions, locks, incomplete sets
//! and left-overs of interrupted writes.
//!
//! Layout, writability, locks and incomplete sets go through the store, so they work the same
//! on a local directory and on S3. Free space and file modes exist only on a file system: on
//! object storage those checks are skipped as not applicable. What an interrupted write leaves
//! differs: a temporary file on disk, an open multipart upload (recorded by a marker under
//! `.open-uploads/`) on S3.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::repo::LOCK_FILE;
use common::storage::{self, Store};
use common::{Kind, Repository};

use crate::check::{CheckResult, Run, Settings};
use crate::health;
use crate::thresholds::human;

mod uploads;

/// Folders besides the kinds that a file system may put in a repository root.
const TOLERATED: [&str; 1] = ["lost+found"];

/// A write in flight (a WAL push takes no lock) is young; only older left-overs count.
const LEFTOVER_AGE: Duration = Duration::from_secs(600);

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository) {
    run.check(settings, "repo.layout", || vec![layout(repo)]);
    run.check(settings, "repo.writable", || vec![writable(repo)]);
    run.check(settings, "repo.free-space", || {
        vec![free_space(repo, settings)]
    });
    run.check(settings, "repo.permissions", || vec![permissions(repo)]);
    run.check(settings, "repo.locks", || vec![locks(repo, settings)]);
    run.check(settings, "repo.incomplete-sets", || {
        vec![incomplete_sets(repo, settings)]
    });
    run.check(settings, "repo.temp-files", || vec![temp_files(repo)]);
}

/// A check that has no meaning without a file system.
fn not_applicable(name: &'static str, repo: &Repository, why: &str) -> CheckResult {
    CheckResult::skip(
        name,
        format!(
            "not applicable on object storage ({}): {why}",
            repo.location()
        ),
    )
}

fn layout(repo: &Repository) -> CheckResult {
    const NAME: &str = "repo.layout";
    let store = repo.store();
    let (files, dirs) = match store.list_dir("") {
        Ok(listed) => listed,
        Err(e) => {
            return CheckResult::fail(NAME, format!("cannot list {}: {e}", repo.describe("")))
        }
    };
    let mut problems = Vec::new();
    let mut present = Vec::new();
    let mut unknown = Vec::new();
    for name in dirs {
        if name.starts_with('.') || TOLERATED.contains(&name.as_str()) {
            continue;
        }
        match Kind::ALL.into_iter().find(|k| k.name() == name) {
            Some(kind) => {
                present.push(kind.name());
                if kind.has_sets() {
                    problems.extend(stray_files(store, kind));
                }
            }
            None => unknown.push(name),
        }
    }
    for file in files {
        let name = storage::file_name(&file.key);
        if name.starts_with('.') {
            continue;
        }
        match Kind::ALL.into_iter().find(|k| k.name() == name) {
            Some(kind) => problems.push(format!(
                "{} is not a directory (the {kind} backups belong in a folder of that name)",
                repo.describe(&file.key)
            )),
            None => unknown.push(name.to_string()),
        }
    }
    if !problems.is_empty() {
        return CheckResult::fail(NAME, problems.join("; "));
    }
    present.sort_unstable();
    let mut message = if present.is_empty() {
        "no backups yet (no kind folders)".to_string()
    } else {
        format!("kind folders: {}", present.join(", "))
    };
    if !unknown.is_empty() {
        unknown.sort();
        message.push_str(&format!("; other entries ignored: {}", unknown.join(", ")));
    }
    CheckResult::pass(NAME, message)
}

/// Files directly in a set kind's folder, where only set folders and the lock belong.
fn stray_files(store: &Store, kind: Kind) -> Vec<String> {
    let Ok((files, _)) = store.list_dir(kind.name()) else {
        return vec![format!("cannot list {}", store.describe(kind.name()))];
    };
    files
        .iter()
        .map(|f| storage::file_name(&f.key))
        .filter(|name| !name.starts_with('.'))
        .map(|name| {
            format!(
                "{}/{name} is a file where only {kind} set folders belong",
                kind.name()
            )
        })
        .collect()
}

/// Writes and removes a probe: on disk a file in the root, on S3 a hidden object.
fn writable(repo: &Repository) -> CheckResult {
    const NAME: &str = "repo.writable";
    let store = repo.store();
    let probe = format!(".validate-backups-probe.{}", std::process::id());
    let result = store
        .put(&probe, b"probe")
        .and_then(|()| store.delete(&probe));
    let root = repo.describe("");
    match result {
        Ok(()) => CheckResult::pass(NAME, format!("{root} is writable")),
        Err(e) => {
            let _ = store.delete(&probe);
            let hint = if store.is_local() {
                "check the mount and its owner"
            } else {
                "check the credentials' permissions on the bucket (s3:PutObject, s3:DeleteObject)"
            };
            CheckResult::fail(
                NAME,
                format!("cannot write in {root}: {e} (backups would fail; {hint})"),
            )
        }
    }
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn available_bytes(path: &Path) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(path)?;
    Ok((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

fn free_space(repo: &Repository, settings: &Settings) -> CheckResult {
    const NAME: &str = "repo.free-space";
    let Some(root) = repo.local_root() else {
        return not_applicable(
            NAME,
            repo,
            "a bucket has no free space to measure (watch its quota with the provider's tools)",
        );
    };
    match available_bytes(&root) {
        Err(e) => CheckResult::fail(NAME, format!("cannot read free space: {e}")),
        Ok((free, total)) => {
            let text = format!(
                "{} free of {} (minimum {})",
                bytes(free),
                bytes(total),
                bytes(settings.min_free_space)
            );
            if free < settings.min_free_space {
                CheckResult::fail(NAME, format!("{text}: free space or apply retention"))
            } else {
                CheckResult::pass(NAME, text)
            }
        }
    }
}

/// `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn permissions(repo: &Repository) -> CheckResult {
    const NAME: &str = "repo.permissions";
    let Some(root) = repo.local_root() else {
        return not_applicable(
            NAME,
            repo,
            "objects have no file modes (access is the bucket policy's and the credentials')",
        );
    };
    let mut open = Vec::new();
    let mut checked = 0usize;
    for entry in walkdir::WalkDir::new(&root).follow_links(false) {
        let Ok(entry) = entry else { continue };
        if entry.path_is_symlink() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        checked += 1;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            open.push(format!("{} (mode {mode:03o})", entry.path().display()));
        }
    }
    if open.is_empty() {
        return CheckResult::pass(NAME, format!("{checked} entries, none open to other users"));
    }
    let total = open.len();
    open.truncate(5);
    CheckResult::fail(
        NAME,
        format!(
            "{total} entries readable or writable by other users (backups hold the database's data): {}{}; fix with chmod -R o-rwx {}",
            open.join(", "),
            if total > 5 { ", ..." } else { "" },
            root.display()
        ),
    )
}

fn locks(repo: &Repository, settings: &Settings) -> CheckResult {
    const NAME: &str = "repo.locks";
    let mut held = Vec::new();
    let mut stale = Vec::new();
    for kind in Kind::ALL {
        if !repo.is_locked(kind) {
            continue;
        }
        let key = storage::join(kind.name(), LOCK_FILE);
        let holder = lock_holder(repo.store(), &key);
        let Some(age) = lock_age(repo, kind, &key) else {
            held.push(format!(
                "{kind} held by {holder} (writing no set, age unknown)"
            ));
            continue;
        };
        let text = format!("{kind} held for {} by {holder}", human(age));
        if age > settings.max_lock_age {
            stale.push(text);
        } else {
            held.push(text);
        }
    }
    if !stale.is_empty() {
        return CheckResult::fail(
            NAME,
            format!(
                "lock held longer than {}: {} (a hung run; inspect and stop it)",
                human(settings.max_lock_age),
                stale.join(", ")
            ),
        );
    }
    if held.is_empty() {
        CheckResult::pass(NAME, "no run in progress")
    } else {
        CheckResult::pass(NAME, format!("run in progress: {}", held.join(", ")))
    }
}

/// Who holds a lock: the lock file's text, or the `holder` of an S3 lock object.
fn lock_holder(store: &Store, key: &str) -> String {
    let body = store.read(key).unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["holder"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string())
}

/// How long a run has held a kind's lock. A lock file is written when it is taken; an S3 lock
/// object is rewritten at every renewal, so there the run's age is that of the set it is
/// writing (set ids are start times), unknown when it writes none.
fn lock_age(repo: &Repository, kind: Kind, key: &str) -> Option<Duration> {
    if let Some(path) = repo.store().local_path(key) {
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        return Some(age);
    }
    let sets = repo.list(kind).ok()?;
    let writing = sets.iter().rev().find(|s| !s.is_complete())?;
    writing.started.map(health::age)
}

fn incomplete_sets(repo: &Repository, settings: &Settings) -> CheckResult {
    const NAME: &str = "repo.incomplete-sets";
    let mut found = Vec::new();
    let mut in_progress = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.has_sets()) {
        if !settings.wants(kind) {
            continue;
        }
        let sets = match repo.list(kind) {
            Ok(sets) => sets,
            Err(e) => return CheckResult::fail(NAME, format!("{e:#}")),
        };
        let locked = repo.is_locked(kind);
        let last = sets.len().saturating_sub(1);
        for (i, set) in sets.iter().enumerate() {
            if set.has_manifest_file() {
                continue;
            }
            let name = format!("{kind}/{}", set.id);
            if locked && i == last {
                in_progress.push(name);
            } else {
                found.push(name);
            }
        }
    }
    if !found.is_empty() {
        return CheckResult::fail(
            NAME,
            format!(
                "{} set folder(s) without manifest.json (a failed or interrupted run; never used for restore): {}; delete them once investigated",
                found.len(),
                found.join(", ")
            ),
        );
    }
    if in_progress.is_empty() {
        CheckResult::pass(NAME, "every set folder has its manifest")
    } else {
        CheckResult::pass(NAME, format!("being written: {}", in_progress.join(", ")))
    }
}

fn temp_files(repo: &Repository) -> CheckResult {
    match repo.local_root() {
        Some(root) => temp_files_on_disk(repo, &root),
        None => uploads::open_uploads(repo),
    }
}

fn temp_files_on_disk(repo: &Repository, root: &Path) -> CheckResult {
    const NAME: &str = "repo.temp-files";
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        let name = entry.file_name().to_string_lossy();
        if !(name.starts_with('.') && name.contains(".tmp.")) {
            continue;
        }
        // Files of a run in progress are expected.
        let kind = entry
            .path()
            .strip_prefix(root)
            .ok()
            .and_then(|rel| rel.components().next())
            .and_then(|c| Kind::ALL.into_iter().find(|k| k.name() == c.as_os_str()));
        if kind.is_some_and(|k| repo.is_locked(k)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if age < LEFTOVER_AGE {
            continue;
        }
        let size = meta.size();
        found.push(format!("{} ({})", entry.path().display(), bytes(size)));
    }
    if found.is_empty() {
        CheckResult::pass(NAME, "no left-over temporary files")
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "temporary files of interrupted writes: {}; delete them",
                found.join(", ")
            ),
        )
    }
}
