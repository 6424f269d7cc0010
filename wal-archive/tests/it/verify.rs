//! verify: continuous and intact archives pass; gaps and damage are named, exit 1.

use crate::{wal_archive, Archived};

fn summary(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("summary")).unwrap()
}

#[test]
fn verify_passes_then_reports_gap_and_damage() {
    let a = Archived::start();
    let out = wal_archive(&["verify", "--output", "json"], a.backups.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = summary(&out);
    assert_eq!(json["ok"], true);
    assert_eq!(json["timelines"], serde_json::json!([1]));

    let list = wal_archive(&["list", "--output", "json"], a.backups.path());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let segments = a.segments();
    assert_eq!(
        lines.len(),
        segments.len() + 1,
        "one line per file plus the summary"
    );
    assert_eq!(lines[0]["name"], segments[0].name.as_str());

    // Remove a middle segment: a gap, named.
    let victim = &segments[1];
    let saved = std::fs::read(a.backups.path().join(&victim.key)).unwrap();
    std::fs::remove_file(a.backups.path().join(&victim.key)).unwrap();
    let out = wal_archive(&["verify", "--output", "json"], a.backups.path());
    assert_eq!(out.status.code(), Some(1));
    let json = summary(&out);
    assert_eq!(json["gaps"][0]["from"], victim.name.as_str());
    std::fs::write(a.backups.path().join(&victim.key), &saved).unwrap();

    // Flip a byte: damaged, named.
    let mut bytes = saved.clone();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(a.backups.path().join(&victim.key), &bytes).unwrap();
    let out = wal_archive(&["verify", "--output", "json"], a.backups.path());
    assert_eq!(out.status.code(), Some(1));
    let json = summary(&out);
    assert_eq!(json["damaged"][0]["file"], victim.name.as_str());
    // --quick only looks at names, so it passes.
    let out = wal_archive(&["verify", "--quick"], a.backups.path());
    assert_eq!(out.status.code(), Some(0));
}
