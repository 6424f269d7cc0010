//! Checks of every set of a kind: the manifest parses, every file is there with its size and
//! SHA-256, and compressed files decompress (one read of each file serves both).

use std::io::{self, Read};

use common::encryption::{self, Identities};
use common::manifest::FileEntry;
use common::repo::{SetInfo, SetState};
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
    /// Decryption or decompression problem, None when fine or not checked.
    decoded: Option<String>,
    compressed: bool,
    /// An age file whose content was not checked (no identity): header only.
    sealed: bool,
}

impl FileCheck {
    fn unreadable(entry: &FileEntry, why: &str) -> FileCheck {
        let compressed = entry.compression != Compression::None;
        FileCheck {
            stored: Some(format!("{}: {why}", entry.path)),
            decoded: compressed.then(|| format!("{}: {why}", entry.path)),
            compressed,
            sealed: false,
        }
    }
}

/// Reads a file once, streaming it from the store: hashes the stored bytes and, when
/// compressed, decodes them completely. An encrypted file is decrypted on the way with
/// `identities`; without them only its age header is checked (and the stored checksum).
fn check_file(
    repo: &Repository,
    set: &SetInfo,
    entry: &FileEntry,
    identities: Option<&Identities>,
) -> FileCheck {
    let compressed = entry.compression != Compression::None;
    let file = match repo.open_file(set, &entry.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return FileCheck::unreadable(entry, "missing")
        }
        Err(e) => return FileCheck::unreadable(entry, &format!("unreadable: {e}")),
    };
    let mut hashing = HashingReader::new(file);
    let (decoded, sealed) = match (entry.is_encrypted(), identities) {
        (true, None) => (sealed_header(&mut hashing, &entry.path), true),
        (true, Some(ids)) => (decode(ids.decrypt(&mut hashing, &entry.path), entry), false),
        (false, _) if compressed => (decode(Ok(&mut hashing), entry), false),
        (false, _) => (None, false),
    };
    // Whatever decoding left unread still counts for the checksum.
    let rest = io::copy(&mut hashing, &mut io::sink());
    let stored = match rest.and_then(|_| hashing.finish()) {
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
        compressed: compressed || entry.is_encrypted(),
        sealed,
    }
}

/// Without a key: the file must start with a well-formed age header.
fn sealed_header(input: &mut impl Read, path: &str) -> Option<String> {
    encryption::check_header(input, path)
        .err()
        .map(|e| e.to_string())
}

/// Decrypts (already done by `plain`'s producer) and decompresses a file to the end; the
/// problem found, if any.
fn decode<R: Read>(plain: io::Result<R>, entry: &FileEntry) -> Option<String> {
    let result = plain.and_then(|plain| {
        let mut decoder = entry.compression.decoder(plain)?;
        io::copy(&mut decoder, &mut io::sink())
    });
    match result {
        Err(e) if entry.is_encrypted() => Some(format!("{}: does not decrypt ({e})", entry.path)),
        Err(e) => Some(format!(
            "{}: does not decompress as {} ({e})",
            entry.path, entry.compression
        )),
        Ok(n) => entry.raw_size.filter(|&raw| raw != n).map(|raw| {
            format!(
                "{}: decodes to {n} bytes, the manifest says {raw}",
                entry.path
            )
        }),
    }
}

/// Problems of the manifest itself: it must describe the set it sits in.
pub fn manifest_problems(kind: Kind, set: &SetInfo, manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    if manifest.kind != kind {
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

/// The generic checks of a kind's sets: manifests, files, decompression, encryption.
pub fn run(run: &mut Run, settings: &Settings, repo: &Repository, kind: Kind, sets: &[SetInfo]) {
    let (manifest_name, files_name, decompress_name) = names(kind);
    let judged: Vec<&SetInfo> = sets.iter().filter(|s| s.has_manifest_file()).collect();
    run.check(settings, manifest_name, || {
        or_no_sets(
            kind,
            manifest_name,
            manifest_results(manifest_name, kind, &judged),
        )
    });

    // One read per file for both checks.
    let complete: Vec<(&SetInfo, &Manifest)> = sets
        .iter()
        .filter_map(|s| s.manifest().map(|m| (s, m)))
        .collect();
    // The files check times the reading; the decompress results come from the same pass.
    let mut decode_results = Vec::new();
    run.check(settings, files_name, || {
        let (file_results, decoded) = read_files(kind, repo, settings, &complete);
        decode_results = decoded;
        or_no_sets(kind, files_name, file_results)
    });
    run.check(settings, decompress_name, || {
        or_no_sets(kind, decompress_name, decode_results)
    });
    let encryption_name = encryption_check_name(kind);
    run.check(settings, encryption_name, || {
        or_no_sets(
            kind,
            encryption_name,
            encryption_results(encryption_name, settings, &complete),
        )
    });
}

/// A check's results, or one skip when the kind has no sets to judge.
fn or_no_sets(kind: Kind, name: &'static str, results: Vec<CheckResult>) -> Vec<CheckResult> {
    if results.is_empty() {
        vec![CheckResult::skip(name, format!("no {kind} sets")).on(kind.name())]
    } else {
        results
    }
}

/// The manifest check of every set that has a manifest file.
fn manifest_results(name: &'static str, kind: Kind, judged: &[&SetInfo]) -> Vec<CheckResult> {
    judged
        .iter()
        .map(|set| {
            match set.state() {
                SetState::Complete(m) => CheckResult::from_problems(
                    name,
                    format!(
                        "{} files, written by {} {}",
                        m.files.len(),
                        m.tool,
                        m.tool_version
                    ),
                    &manifest_problems(kind, set, m),
                ),
                SetState::Broken(error) => {
                    CheckResult::fail(name, format!("{error}; the set cannot be restored"))
                }
                SetState::Incomplete => {
                    CheckResult::fail(name, "manifest unreadable; the set cannot be restored")
                }
            }
            .on(&set.id)
        })
        .collect()
}

/// Reads every file of every complete set once: the files check's results and the decompress
/// check's, a result per set each.
fn read_files(
    kind: Kind,
    repo: &Repository,
    settings: &Settings,
    complete: &[(&SetInfo, &Manifest)],
) -> (Vec<CheckResult>, Vec<CheckResult>) {
    let (_, files_name, decompress_name) = names(kind);
    let mut file_results = Vec::new();
    let mut decode_results = Vec::new();
    for (set, manifest) in complete {
        let checks: Vec<FileCheck> = manifest
            .files
            .iter()
            .map(|f| check_file(repo, set, f, settings.identities.as_deref()))
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
        decode_results.push(decode_result(decompress_name, &checks).on(&set.id));
    }
    (file_results, decode_results)
}

/// The encryption check of every complete set.
fn encryption_results(
    name: &'static str,
    settings: &Settings,
    complete: &[(&SetInfo, &Manifest)],
) -> Vec<CheckResult> {
    complete
        .iter()
        .map(|(set, manifest)| {
            let (summary, problems) =
                encryption_problems(manifest, settings.expect_recipients.as_deref());
            CheckResult::from_problems(name, summary, &problems).on(&set.id)
        })
        .collect()
}

/// The decompress check of one set from its files' reads.
fn decode_result(name: &'static str, checks: &[FileCheck]) -> CheckResult {
    let decoded: Vec<String> = checks.iter().filter_map(|c| c.decoded.clone()).collect();
    let compressed = checks.iter().filter(|c| c.compressed).count();
    let sealed = checks.iter().filter(|c| c.sealed).count();
    if compressed == 0 {
        return CheckResult::skip(name, "no compressed files");
    }
    if sealed == compressed && decoded.is_empty() {
        return CheckResult::skip(
            name,
            format!(
                "{sealed} encrypted files have valid age headers; set {} to check their content",
                encryption::IDENTITY_FILE_ENV
            ),
        );
    }
    let unchecked = match sealed {
        0 => String::new(),
        n => format!(" ({n} encrypted ones only by their age header: no identity)"),
    };
    CheckResult::from_problems(
        name,
        format!("{compressed} compressed or encrypted files decode{unchecked}"),
        &decoded,
    )
}

/// The encryption check's name for a kind.
pub fn encryption_check_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Base => "base.encryption",
        Kind::Logical => "logical.encryption",
        Kind::Kafka => "kafka.encryption",
        Kind::Slots | Kind::Wal => "slots.encryption",
    }
}

/// Files an encrypted set stores in clear by design: a base set's list of data-directory files
/// (paths, sizes and times, no content), which the next incremental backup reads without a
/// key.
fn clear_by_design(manifest: &Manifest, path: &str) -> bool {
    manifest.kind == Kind::Base && path == common::physical::filelist::FILE_LIST
}

/// Whether a set's files agree with the encryption its manifest records, and its recipients
/// with `expected` (when given). Returns a summary and the problems.
pub fn encryption_problems(
    manifest: &Manifest,
    expected: Option<&[String]>,
) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let encryption = manifest.encryption();
    for f in &manifest.files {
        match (&encryption, f.is_encrypted()) {
            (Some(_), false) if clear_by_design(manifest, &f.path) => {}
            (Some(_), false) => problems.push(format!(
                "{} is stored in plaintext in an encrypted set",
                f.path
            )),
            (None, true) => problems.push(format!(
                "{} is encrypted but the manifest records no recipients",
                f.path
            )),
            _ => {}
        }
    }
    let summary = match &encryption {
        None => "plaintext".to_string(),
        Some(e) if e.passphrase => "age, passphrase".to_string(),
        Some(e) => format!("age, {} recipients", e.recipients.len()),
    };
    if let Some(expected) = expected {
        match &encryption {
            None => {
                problems.push("stored in plaintext, not encrypted to --expect-recipients".into())
            }
            Some(e) if e.passphrase => {
                problems.push("encrypted with a passphrase, not to --expect-recipients".into())
            }
            Some(e) => {
                let other: Vec<&str> = e
                    .recipients
                    .iter()
                    .filter(|r| !expected.contains(r))
                    .map(String::as_str)
                    .collect();
                if !other.is_empty() {
                    problems.push(format!(
                        "encrypted to keys not in --expect-recipients: {} (retire them only after this set expires)",
                        other.join(", ")
                    ));
                }
            }
        }
    }
    (summary, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypted(kind: Kind, files: &[&str]) -> Manifest {
        let now = common::timefmt::now();
        Manifest {
            format_version: 1,
            kind,
            id: common::timefmt::id_string(now),
            tool: "test".into(),
            tool_version: "0".into(),
            started_at: now,
            finished_at: now,
            status: common::manifest::SetStatus::Complete,
            source: serde_json::json!({"encryption": {"format": "age", "recipients": ["age1x"]}}),
            files: files
                .iter()
                .map(|path| FileEntry {
                    path: (*path).into(),
                    size: 1,
                    sha256: "0".repeat(64),
                    compression: Compression::None,
                    raw_size: None,
                    xxh3: None,
                })
                .collect(),
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn only_a_base_sets_file_list_may_be_in_clear_in_an_encrypted_set() {
        let files = ["base.tar.zst.age", "hashes.json.age", "files.json"];
        let (summary, problems) = encryption_problems(&encrypted(Kind::Base, &files), None);
        assert_eq!(summary, "age, 1 recipients");
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = encryption_problems(
            &encrypted(Kind::Base, &["base.tar.zst", "files.json"]),
            None,
        );
        assert_eq!(
            problems,
            ["base.tar.zst is stored in plaintext in an encrypted set"]
        );
        let (_, problems) = encryption_problems(&encrypted(Kind::Logical, &["files.json"]), None);
        assert_eq!(
            problems,
            ["files.json is stored in plaintext in an encrypted set"]
        );
    }
}
