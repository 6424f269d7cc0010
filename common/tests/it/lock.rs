//! Two runs of the same kind cannot write the repository at once; other kinds can.

use std::os::unix::process::CommandExt;
use std::sync::Mutex;

use common::repo::{Kind, Repository};

/// Spawning a child copies this process's descriptors until its exec closes them, which can
/// hold another test's lock for a moment: the lock tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn second_writer_of_a_kind_is_refused_until_the_first_ends() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let first = repo.lock(Kind::Base).unwrap();
    assert!(repo.is_locked(Kind::Base));
    let err = repo.lock(Kind::Base).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("another base run holds the repository lock"),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );

    // Another kind is independent.
    let other = repo.lock(Kind::Logical).unwrap();
    drop(other);

    drop(first);
    assert!(!repo.is_locked(Kind::Base));
    repo.lock(Kind::Base).unwrap();
}

#[test]
fn lock_held_by_another_process_is_seen() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    repo.lock(Kind::Slots).unwrap();
    let lock_path = dir.path().join(Kind::Slots.name()).join(".lock");
    // flock(1) from util-linux holds the same kind of lock from a separate process.
    let mut holder = std::process::Command::new("flock")
        .arg(&lock_path)
        .args(["sleep", "30"])
        .process_group(0)
        .spawn()
        .expect("flock(1) is in util-linux");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !repo.is_locked(Kind::Slots) {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(repo.lock(Kind::Slots).is_err());
    // sleep inherits the locked descriptor: end the whole group.
    std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", holder.id())])
        .status()
        .unwrap();
    holder.wait().unwrap();
    // `sleep` may take a moment to die after `flock` was reaped; its descriptor goes with it.
    test_support::process::wait_for(
        "the killed holder's lock to be released",
        std::time::Duration::from_secs(10),
        || repo.lock(Kind::Slots).is_ok(),
    );
}
