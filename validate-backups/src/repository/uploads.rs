//! What interrupted writes leave on object storage: open multipart uploads, billed until
//! aborted. The store records each upload under `.open-uploads/` beside its key while it runs
//! (see `common::storage`); a killed run leaves its record behind.

use common::storage::{self, ObjectInfo, Store, UPLOADS_DIR};
use common::{Kind, Repository};

use super::LEFTOVER_AGE;
use crate::check::CheckResult;
use crate::health;
use crate::thresholds::human;

/// On S3, the left-overs of a killed write are open multipart uploads, billed until aborted.
/// The store records each one under `.open-uploads/` beside its key while it runs; a killed run
/// leaves its record behind: in the WAL archive (pushes take no lock) or in the incomplete
/// set it was writing.
pub(super) fn open_uploads(repo: &Repository) -> CheckResult {
    const NAME: &str = "repo.temp-files";
    let mut found = Vec::new();
    for kind in Kind::ALL {
        if repo.is_locked(kind) {
            continue;
        }
        let markers = match markers_of(repo, kind) {
            Ok(markers) => markers,
            Err(e) => {
                return CheckResult::fail(
                    NAME,
                    format!("cannot list {}: {e:#}", repo.describe(kind.name())),
                )
            }
        };
        for marker in markers {
            let age = marker.modified.map(health::age).unwrap_or_default();
            if age >= LEFTOVER_AGE {
                found.push(format!(
                    "{} (started {} ago)",
                    repo.describe(&upload_target(&marker.key)),
                    human(age)
                ));
            }
        }
    }
    if found.is_empty() {
        CheckResult::pass(NAME, "no open multipart uploads of interrupted writes")
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "open multipart uploads of interrupted writes (billed until aborted): {}; delete the incomplete set (retention does after its grace period) or add the bucket lifecycle rule AbortIncompleteMultipartUpload",
                found.join(", ")
            ),
        )
    }
}

/// The upload records of a kind: of its folder (the WAL archive's pushes) and of its
/// incomplete sets (a killed run never completes its set).
fn markers_of(repo: &Repository, kind: Kind) -> anyhow::Result<Vec<ObjectInfo>> {
    let store = repo.store();
    let mut markers = Vec::new();
    let (_, dirs) = store.list_dir(kind.name())?;
    if dirs.iter().any(|d| d == UPLOADS_DIR) {
        markers.extend(store.list_dir(&upload_dir(kind.name()))?.0);
    }
    if kind.has_sets() {
        for set in repo.list(kind)?.iter().filter(|s| !s.is_complete()) {
            markers.extend(markers_under(store, &set.prefix)?);
        }
    }
    Ok(markers)
}

fn upload_dir(prefix: &str) -> String {
    storage::join(prefix, UPLOADS_DIR)
}

/// The upload records at any depth under `prefix`.
fn markers_under(store: &Store, prefix: &str) -> std::io::Result<Vec<ObjectInfo>> {
    let (_, dirs) = store.list_dir(prefix)?;
    let mut markers = Vec::new();
    for dir in dirs {
        if dir == UPLOADS_DIR {
            markers.extend(store.list_dir(&upload_dir(prefix))?.0);
        } else if !dir.starts_with('.') {
            markers.extend(markers_under(store, &storage::join(prefix, &dir))?);
        }
    }
    Ok(markers)
}

/// The key an upload record stands for: `wal/.open-uploads/NAME.PID` is an upload of `wal/NAME`.
fn upload_target(marker: &str) -> String {
    let (dir, name) = marker.rsplit_once('/').unwrap_or(("", marker));
    let dir = dir.strip_suffix(UPLOADS_DIR).unwrap_or(dir);
    let name = name.rsplit_once('.').map_or(name, |(name, _pid)| name);
    storage::join(dir, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_records_name_their_target() {
        assert_eq!(
            upload_target("wal/.open-uploads/000000010000000000000003.zst.4242"),
            "wal/000000010000000000000003.zst"
        );
        assert_eq!(
            upload_target("base/20261121T020000Z/.open-uploads/base.tar.zst.17"),
            "base/20261121T020000Z/base.tar.zst"
        );
        assert_eq!(upload_target(".open-uploads/x.1"), "x");
    }
}
