//! Checks of every set of a kind: the manifest parses, every file is there with its size and
//! SHA-256, and compressed files decompress (one read of each file serves both).

use std::io;

use common::manifest::FileEntry;
use common::repo::SetInfo;
use common::stream::{Compression, HashingReader};
use common::{Kind, Manifest, Repository};

use crate::check::{CheckResult, Run, Settings};

/// The check names of a kind's generic set checks.
pub fn names(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        Kind::Base => ("base.manifest", "base.files", "base.decompress"),
        Kind::Logical => ("logical.manifest", "logical.files", "logical.decompress"),
        Kind::Kafka => ("kafka.manifest", "kafka.files", "kafka.decompress"),
        Kind::Slots | Kind::Wal => ("slots.manifest", "slots.files", "slots.decompress"),
    }
}

/// What one read of a stored file found.
#[derive(Debug)]
struct FileCheck {
    /// Size or checksum problem (or missing/unreadable).
    stored: Option<String>,
    /// Decompression problem, None when fine or not compressed.
    decoded: Option<String>,
    compressed: bool,
}

/// Reads a file once, streaming it from the store: hashes the stored bytes and, when
/// compressed, decodes them completely.
fn check_file(repo: &Repository, set: &SetInfo, entry: &FileEntry) -> FileCheck {
    let compressed = entry.compression != Compression::None;
    let file = match repo.open_file(set, &entry.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return FileCheck {
                stored: Some(format!("{}: missing", entry.path)),
                decoded: compressed.then(|| format!("{}: missing", entry.path)),
                compressed,
            }
        }
        Err(e) => {
            return FileCheck {
                stored: Some(format!("{}: unreadable: {e}", entry.path)),
                decoded: compressed.then(|| format!("{}: unreadable: {e}", entry.path)),
                compressed,
            }
        }
    };
    let mut hashing = HashingReader::new(file);
    let mut decoded = None;
    if compressed {
        let result = entry
            .compression
            .decoder(&mut hashing)
            .and_then(|mut d| io::copy(&mut d, &mut io::sink()));
        match result {
            Err(e) => {
                decoded = Some(format!(
                    "{}: does not decompress as {} ({e})",
                    entry.path, entry.compression
                ))
            }
            Ok(n) => {
                if let Some(raw) = entry.raw_size.filter(|&raw| raw != n) {
                    decoded = Some(format!(
                        "{}: decompresses to {n} bytes, the manifest says {raw}",
                        entry.path
                    ));
                }
            }
        }
    }
    let stored = match hashing.finish() {
        Err(e) => Some(format!("{}: unreadable: {e}", entry.path)),
        Ok(sum) if sum.size != entry.size => Some(format!(
            "{}: size {} differs from the manifest's {} (truncated or replaced)",
            entry.path, sum.size, entry.size
        )),
        Ok(sum) if sum.sha256 != entry.sha256 => Some(format!(
            "{}: SHA-256 mismatch (file changed or corrupted)",
            entry.path
        )),
        Ok(_) => None,
    };
    FileCheck {
        stored,
        decoded,
        compressed,
    }
}

/// Problems of the manifest itself: it must describe the set it sits in.
pub fn manifest_problems(kind: Kind, set: &SetInfo, manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    if manifest.kind != kind.name() {
        problems.push(format!(
            "manifest says kind '{}' in the {kind} folder",
            manifest.kind
        ));
    }
    if manifest.id != set.id {
        problems.push(format!(
            "manifest id '{}' differs from its folder name (copied from another set?)",
            manifest.id
        ));
    }
    if manifest.finished_at < manifest.started_at {
        problems.push("finished before it started".to_string());
    }
    if manifest.files.is_empty() {
        problems.push("lists no files".to_string());
    }
    for f in &manifest.files {
        if f.path.starts_with('/') || f.path.split('/').any(|c| c == "..") {
            problems.push(format!("file path '{}' leaves the set folder", f.path));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!("{}: recorded SHA-256 is not 64 hex digits", f.path));
        }
    }
    problems
}

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository, kind: Kind, sets: &[SetInfo]) {
    let (manifest_name, files_name, decompress_name) = names(kind);
    let judged: Vec<&SetInfo> = sets
        .iter()
        .filter(|s| s.manifest.is_some() || s.manifest_error.is_some())
        .collect();
    let empty = |name: &'static str| {
        vec![CheckResult::skip(name, format!("no {kind} sets")).on(kind.name())]
    };
    run.check(settings, manifest_name, || {
        if judged.is_empty() {
            return empty(manifest_name);
        }
        judged
            .iter()
            .map(|set| {
                match (&set.manifest, &set.manifest_error) {
                    (Some(m), _) => CheckResult::from_problems(
                        manifest_name,
                        format!(
                            "{} files, written by {} {}",
                            m.files.len(),
                            m.tool,
                            m.tool_version
                        ),
                        &manifest_problems(kind, set, m),
                    ),
                    (None, error) => CheckResult::fail(
                        manifest_name,
                        format!(
                            "{}; the set cannot be restored",
                            error.as_deref().unwrap_or("manifest unreadable")
                        ),
                    ),
                }
                .on(&set.id)
            })
            .collect()
    });

    // One read per file for both checks.
    let complete: Vec<(&SetInfo, &Manifest)> = sets
        .iter()
        .filter_map(|s| s.manifest.as_ref().map(|m| (s, m)))
        .collect();
    // The files check times the reading; the decompress results come from the same pass.
    let mut decode_results = Vec::new();
    run.check(settings, files_name, || {
        let mut file_results = Vec::new();
        for (set, manifest) in &complete {
            let checks: Vec<FileCheck> = manifest
                .files
                .iter()
                .map(|f| check_file(repo, set, f))
                .collect();
            let stored: Vec<String> = checks.iter().filter_map(|c| c.stored.clone()).collect();
            file_results.push(
                CheckResult::from_problems(
                    files_name,
                    format!(
                        "{} files, {} bytes intact",
                        checks.len(),
                        manifest.total_size()
                    ),
                    &stored,
                )
                .on(&set.id),
            );
            let compressed = checks.iter().filter(|c| c.compressed).count();
            let decoded: Vec<String> = checks.iter().filter_map(|c| c.decoded.clone()).collect();
            decode_results.push(if compressed == 0 {
                CheckResult::skip(decompress_name, "no compressed files").on(&set.id)
            } else {
                CheckResult::from_problems(
                    decompress_name,
                    format!("{compressed} compressed files decompress"),
                    &decoded,
                )
                .on(&set.id)
            });
        }
        if file_results.is_empty() {
            empty(files_name)
        } else {
            file_results
        }
    });
    run.check(settings, decompress_name, || {
        if decode_results.is_empty() {
            empty(decompress_name)
        } else {
            decode_results
        }
    });
}
