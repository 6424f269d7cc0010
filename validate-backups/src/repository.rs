//! Repository checks: layout, writability, free space, permissions, locks, incomplete sets
//! and left-over temporary files.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use common::repo::LOCK_FILE;
use common::{Kind, Repository};

use crate::check::{CheckResult, Run, Settings};
use crate::thresholds::human;

/// Folders besides the kinds that a file system may put in a repository root.
const TOLERATED: [&str; 1] = ["lost+found"];

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

fn layout(repo: &Repository) -> CheckResult {
    const NAME: &str = "repo.layout";
    let mut problems = Vec::new();
    let mut present = Vec::new();
    let mut unknown = Vec::new();
    let entries = match std::fs::read_dir(repo.root()) {
        Ok(e) => e,
        Err(e) => {
            return CheckResult::fail(NAME, format!("cannot list {}: {e}", repo.root().display()))
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || TOLERATED.contains(&name.as_str()) {
            continue;
        }
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        match Kind::ALL.iter().find(|k| k.name() == name) {
            Some(kind) if is_dir => {
                present.push(kind.name());
                if kind.has_sets() {
                    problems.extend(stray_files(&entry.path(), *kind));
                }
            }
            Some(kind) => problems.push(format!(
                "{} is not a directory (the {kind} backups belong in a folder of that name)",
                entry.path().display()
            )),
            None => unknown.push(name),
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

/// Regular files directly in a set kind's folder, where only set folders and the lock belong.
fn stray_files(dir: &Path, kind: Kind) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![format!("cannot list {}", dir.display())];
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| !e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| {
            format!(
                "{}/{} is a file where only {kind} set folders belong",
                kind.name(),
                e.file_name().to_string_lossy()
            )
        })
        .collect()
}

fn writable(repo: &Repository) -> CheckResult {
    const NAME: &str = "repo.writable";
    let probe = repo
        .root()
        .join(format!(".validate-backups-probe.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        file.write_all(b"probe")?;
        file.sync_all()?;
        std::fs::remove_file(&probe)
    })();
    match result {
        Ok(()) => CheckResult::pass(NAME, format!("{} is writable", repo.root().display())),
        Err(e) => {
            let _ = std::fs::remove_file(&probe);
            CheckResult::fail(
                NAME,
                format!(
                    "cannot write in {}: {e} (backups would fail; check the mount and its owner)",
                    repo.root().display()
                ),
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
    match available_bytes(repo.root()) {
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
    let mut open = Vec::new();
    let mut checked = 0usize;
    for entry in walkdir::WalkDir::new(repo.root()).follow_links(false) {
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
            repo.root().display()
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
        let path = repo.kind_dir(kind).join(LOCK_FILE);
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        let text = format!("{kind} held for {} by {}", human(age), holder.trim());
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
            if set.manifest.is_some() || set.manifest_error.is_some() {
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
    const NAME: &str = "repo.temp-files";
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(repo.root()).into_iter().flatten() {
        let name = entry.file_name().to_string_lossy();
        if !(name.starts_with('.') && name.contains(".tmp.")) {
            continue;
        }
        // Files of a run in progress are expected.
        let kind = entry
            .path()
            .strip_prefix(repo.root())
            .ok()
            .and_then(|rel| rel.components().next())
            .and_then(|c| Kind::ALL.into_iter().find(|k| k.name() == c.as_os_str()));
        if kind.is_some_and(|k| repo.is_locked(k)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        // A write in flight (a WAL push has no lock) is young; only old leftovers count.
        let age = meta
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if age < std::time::Duration::from_secs(600) {
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
