//! Freshness, set counts and size anomalies.

use common::stream::Compression;
use common::Kind;

use crate::repository::synthetic_set;
use crate::support::{edit_manifest, empty_repo, good_repo, only_set, validate, Checks};

#[test]
fn stale_backup_fails_freshness() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "logical");
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    let text = old
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    edit_manifest(&set, |m| {
        m["started_at"] = text.clone().into();
        m["finished_at"] = text.clone().into();
    });
    let run = validate(&dir, &["--only", "logical"]);
    run.assert_fails("logical.freshness", "not running");
    // A looser threshold accepts it.
    let run = validate(&dir, &["--only", "logical", "--max-age", "logical=4d"]);
    assert_eq!(
        run.status("logical.freshness"),
        "pass",
        "{}",
        run.message("logical.freshness")
    );
}

#[test]
fn too_few_sets_fail_count() {
    let (_h, dir) = empty_repo();
    synthetic_set(&dir, Kind::Slots, 1000, Compression::None);
    let run = validate(&dir, &["--only", "slots", "--min-sets", "slots=2"]);
    run.assert_fails("slots.count", "1 complete sets (minimum 2)");
    let run = validate(&dir, &["--only", "slots", "--min-sets", "all=1"]);
    assert_eq!(run.status("slots.count"), "pass");
}

#[test]
fn size_jump_fails_size_change() {
    let (_h, dir) = empty_repo();
    synthetic_set(&dir, Kind::Slots, 10_000, Compression::None);
    synthetic_set(&dir, Kind::Slots, 10_500, Compression::None);
    let run = validate(&dir, &["--only", "slots"]);
    assert_eq!(
        run.status("slots.size-change"),
        "pass",
        "{}",
        run.message("slots.size-change")
    );
    synthetic_set(&dir, Kind::Slots, 30_000, Compression::None);
    let run = validate(&dir, &["--only", "slots"]);
    run.assert_fails("slots.size-change", "+185.");
    let run = validate(&dir, &["--only", "slots", "--max-size-change", "300"]);
    assert_eq!(run.status("slots.size-change"), "pass");
}

#[test]
fn compressed_file_that_does_not_decompress_fails() {
    use std::io::Write;
    let (_h, dir) = empty_repo();
    let repo = common::Repository::create(&common::storage::Location::Local(dir.clone())).unwrap();
    let mut set = repo.create_set(Kind::Slots).unwrap();
    let mut file = set
        .create_file("data.gz", Compression::None, None, 1)
        .unwrap();
    file.write_all(b"this is not gzip at all").unwrap();
    let mut entry = file.finish().unwrap();
    // Recorded as gzip: the checksum matches, the content does not decode.
    entry.compression = Compression::Gzip;
    entry.raw_size = None;
    set.add(entry);
    set.commit(common::repo::SetMeta {
        tool: "test",
        tool_version: "0",
        source: serde_json::json!({}),
        details: serde_json::json!({}),
    })
    .unwrap();
    let run = validate(&dir, &["--only", "slots"]);
    assert_eq!(run.status("slots.files"), "pass");
    run.assert_fails("slots.decompress", "does not decompress as gzip");
}
