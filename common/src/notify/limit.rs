//! The rate limit of rate-limited notifications (`wal-archive push`, `cdc-slot-tool status`):
//! at most one message per `BACKUP_NOTIFY_INTERVAL` per host and tool.
//!
//! PostgreSQL runs `archive_command` again about every minute while it fails, each time a new
//! process (and a CronJob runs status every 5 minutes), so the limit lives in a small file: `<state dir>/notify-<tool>` holds the time
//! of the last message and how many failures were held back since. The state dir is
//! `$XDG_STATE_HOME/pipeline-backup`, else `<temp dir>/pipeline-backup-<uid>` (mode 0700,
//! and only used when this user owns it). The next message reports how many were held back.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::env;

/// Whether to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send, mentioning the failures held back since the last message.
    Send { suppressed: u64 },
    /// A message went out less than the interval ago: hold this one back.
    Hold,
}

/// Where the limit's state lives; created (0700) if missing.
pub fn state_dir() -> io::Result<PathBuf> {
    let dir = match std::env::var_os(env::XDG_STATE_HOME).filter(|d| !d.is_empty()) {
        Some(base) => PathBuf::from(base).join("pipeline-backup"),
        None => std::env::temp_dir().join(format!(
            "pipeline-backup-{}",
            rustix::process::geteuid().as_raw()
        )),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    // In a shared temporary directory another user could have made it first.
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} is not a directory of this user",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Decides for `key` (the tool, e.g. `wal-archive push`) and records the decision.
pub fn claim(dir: &Path, key: &str, interval: Duration, now: SystemTime) -> io::Result<Decision> {
    let path = dir.join(format!("notify-{}", file_name(key)));
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (decision, state) = decide(previous, now_s, interval);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{} {}\n", state.0, state.1))?;
    std::fs::rename(&tmp, &path)?;
    Ok(decision)
}

/// The decision and the new state (last sent, held back) from the old state.
fn decide(previous: Option<(u64, u64)>, now_s: u64, interval: Duration) -> (Decision, (u64, u64)) {
    match previous {
        // A clock set back counts as the interval having passed.
        Some((last, held)) if now_s >= last && now_s - last < interval.as_secs() => {
            (Decision::Hold, (last, held + 1))
        }
        Some((_, held)) => (Decision::Send { suppressed: held }, (now_s, 0)),
        None => (Decision::Send { suppressed: 0 }, (now_s, 0)),
    }
}

fn parse(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let last = words.next()?.parse().ok()?;
    let held = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    Some((last, held))
}

fn file_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn one_message_per_interval_counting_the_rest() {
        assert_eq!(
            decide(None, 1000, TEN_MIN),
            (Decision::Send { suppressed: 0 }, (1000, 0))
        );
        assert_eq!(
            decide(Some((1000, 0)), 1060, TEN_MIN),
            (Decision::Hold, (1000, 1))
        );
        assert_eq!(
            decide(Some((1000, 1)), 1599, TEN_MIN),
            (Decision::Hold, (1000, 2))
        );
        assert_eq!(
            decide(Some((1000, 2)), 1600, TEN_MIN),
            (Decision::Send { suppressed: 2 }, (1600, 0))
        );
        assert_eq!(
            decide(Some((1000, 3)), 900, TEN_MIN),
            (Decision::Send { suppressed: 3 }, (900, 0))
        );
        assert_eq!(
            decide(Some((1000, 0)), 1000, Duration::ZERO),
            (Decision::Send { suppressed: 0 }, (1000, 0))
        );
    }

    #[test]
    fn the_state_survives_between_processes() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(10_000);
        let claim_at = |s: u64| {
            claim(
                dir.path(),
                "wal-archive push",
                TEN_MIN,
                t0 + Duration::from_secs(s),
            )
            .unwrap()
        };
        assert_eq!(claim_at(0), Decision::Send { suppressed: 0 });
        assert_eq!(claim_at(60), Decision::Hold);
        assert_eq!(claim_at(120), Decision::Hold);
        assert_eq!(claim_at(700), Decision::Send { suppressed: 2 });
        assert!(dir.path().join("notify-wal-archive-push").is_file());
        assert_eq!(file_name("a/../b c"), "a----b-c");
    }
}
