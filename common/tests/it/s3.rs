//! The storage layer against a real S3 service (SeaweedFS from scripts/services.sh):
//! streaming multipart uploads, conditional creates, aborted uploads, locks.

use std::io::{Read, Write};

use common::repo::{Kind, Repository};
use common::storage::Store;
use test_support::s3;

fn store_with(url: &str, extra: &[(&str, &str)]) -> Store {
    let env = s3::env();
    let mut vars = env.vars();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Store::open_with(&url.parse().unwrap(), &vars).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn multipart_upload_streams_and_reads_back_exactly() {
    let env = s3::env();
    let url = env.url("multipart");
    let store = env.store(&url);
    // 12 MiB + a bit with 5 MiB parts: three parts, the last one short.
    let data = pattern(12 * 1024 * 1024 + 12345);
    let mut writer = store.create("base/1/big.bin").unwrap();
    for chunk in data.chunks(100_000) {
        writer.write_all(chunk).unwrap();
    }
    assert_eq!(
        store.size("base/1/big.bin").unwrap(),
        None,
        "invisible before commit"
    );
    writer.commit().unwrap();
    assert_eq!(
        store.size("base/1/big.bin").unwrap(),
        Some(data.len() as u64)
    );
    let mut back = Vec::new();
    store
        .open_read("base/1/big.bin")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "the object read back differs");
    assert!(env.open_uploads(&url).is_empty());
    assert_eq!(env.keys(&url), vec!["base/1/big.bin".to_string()]);
}

#[test]
fn a_dropped_writer_aborts_its_upload_and_leaves_nothing() {
    let env = s3::env();
    let url = env.url("aborted");
    let store = env.store(&url);
    let mut writer = store.create("base/1/big.bin").unwrap();
    writer.write_all(&pattern(11 * 1024 * 1024)).unwrap();
    test_support::process::wait_for("parts going up", std::time::Duration::from_secs(10), || {
        !env.open_uploads(&url).is_empty()
    });
    drop(writer);
    assert!(env.open_uploads(&url).is_empty());
    assert!(env.keys(&url).is_empty(), "{:?}", env.keys(&url));
}

#[test]
fn put_new_never_replaces_and_identical_keys_race_to_one_winner() {
    let env = s3::env();
    let url = env.url("conditional");
    let store = env.store(&url);
    assert!(store.put_new("wal/seg", b"first").unwrap());
    assert!(!store.put_new("wal/seg", b"second").unwrap());
    assert_eq!(store.read("wal/seg").unwrap(), b"first");
    let winners: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                scope.spawn(move || {
                    store
                        .put_new("wal/race", format!("{i}").as_bytes())
                        .unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap() as usize)
            .sum()
    });
    assert_eq!(winners, 1);
}

#[test]
fn delete_prefix_aborts_uploads_a_killed_writer_left() {
    let env = s3::env();
    let url = env.url("stale");
    let store = env.store(&url);
    let mut writer = store.create("base/1/big.bin").unwrap();
    writer.write_all(&pattern(6 * 1024 * 1024)).unwrap();
    // A killed process never drops its writer.
    std::mem::forget(writer);
    // Its part is still going up in the background.
    test_support::process::wait_for(
        "the open upload",
        std::time::Duration::from_secs(10),
        || env.open_uploads(&url).len() == 1,
    );
    assert_eq!(store.abort_stale_uploads("base/1").unwrap(), 1);
    assert!(env.open_uploads(&url).is_empty());
    store.delete_prefix("base").unwrap();
    assert!(env.keys(&url).is_empty());
}

#[test]
fn locks_exclude_live_runs_and_expire_for_dead_ones() {
    let env = s3::env();
    let url = env.url("locks");
    let short = [("BACKUP_S3_LOCK_TTL", "3s")];
    let repo = Repository::with_store(store_with(&url, &short));
    let other = Repository::with_store(store_with(&url, &short));
    let held = repo.lock(Kind::Base).unwrap();
    assert!(other.is_locked(Kind::Base));
    let err = format!("{:#}", other.lock(Kind::Base).unwrap_err());
    assert!(
        err.contains("another base run holds the repository lock"),
        "{err}"
    );
    // A live holder renews: still refused after the lifetime has passed.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(other.lock(Kind::Base).is_err());
    held.check().unwrap();
    drop(held);
    assert!(!other.is_locked(Kind::Base));

    // A crashed holder (never released, never renewed) is broken once expired.
    let store = env.store(&url);
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let dead = format!(r#"{{"holder":"host gone pid 1 token 0","expires_at":{expires}}}"#);
    store.put("base/.lock", dead.as_bytes()).unwrap();
    let err = format!("{:#}", repo.lock(Kind::Base).unwrap_err());
    assert!(err.contains("host gone pid 1"), "{err}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let taken = repo.lock(Kind::Base).unwrap();
    taken.check().unwrap();
    assert!(other.lock(Kind::Base).is_err());
    drop(taken);
    assert!(env.keys(&url).is_empty(), "released: {:?}", env.keys(&url));
}
