//! Replaying an incremental set replays its whole chain (full set first), each record once;
//! `--only-set` replays the one set.

use crate::support::*;

#[test]
fn incremental_chain_replays_every_record_once() {
    let source = topic("chain_src", 2);
    produce(&source, (0..300u64).map(|i| ((i % 2) as i32, varied(i))));
    let dir = tempfile::tempdir().unwrap();
    let full = backup(dir.path(), &["--topic", &source, "--incremental"])
        .ok()
        .summary();
    produce(&source, (300..500u64).map(|i| ((i % 2) as i32, varied(i))));
    let second = backup(dir.path(), &["--topic", &source, "--incremental"])
        .ok()
        .summary();
    assert_eq!(second["records"], 200);

    let target = test_support::unique_name("chain_dst");
    let run = replay(dir.path(), &["--topic", &source, "--target-topic", &target])
        .ok()
        .summary();
    let sets: Vec<&str> = run["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        sets,
        vec![full["id"].as_str().unwrap(), second["id"].as_str().unwrap()]
    );
    assert_eq!(run["records_produced"], 500);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&source)));

    let only = test_support::unique_name("chain_only");
    let run = replay(
        dir.path(),
        &["--topic", &source, "--target-topic", &only, "--only-set"],
    )
    .ok()
    .summary();
    assert_eq!(run["records_produced"], 200);
    let original = read_all(&source);
    let restored = read_all(&only);
    for p in 0..2 {
        let tail: Vec<Rec> = original[&p][150..].iter().map(|r| r.rec.clone()).collect();
        assert_eq!(recs(&restored)[&p], tail);
    }
}
