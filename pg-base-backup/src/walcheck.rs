//! For `--wal-method archive`: the set is complete only once every WAL segment from the
//! backup's start to its stop LSN is in the repository's archive.

use std::time::{Duration, Instant};

use anyhow::Context;

use common::repo::Repository;
use common::wal::{segment_name, segno_of, WalArchive};
use tokio_postgres::Client;

use crate::capture::WalRange;

pub async fn wait_for_archive(
    client: &Client,
    repo: &Repository,
    range: WalRange,
    segment_size: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let archive = WalArchive::new(repo);
    let (first, last) = (
        segno_of(range.start, segment_size),
        segno_of(range.stop, segment_size),
    );
    let deadline = Instant::now() + timeout;
    let mut switched = false;
    // The archiver takes some tens of milliseconds for a segment: look often at first (a look
    // late by half a pause costs the backup that much), then back off (on S3 each look is one
    // listing request).
    let mut pause = Duration::from_millis(5);
    loop {
        // One listing per round (on S3 one request, not one per segment).
        let missing = archive
            .missing(range.timeline, first, last, segment_size)
            .with_context(|| format!("cannot list the WAL archive {}", archive.describe()))?;
        if missing.is_empty() {
            tracing::info!(
                "WAL {} .. {} archived",
                segment_name(range.timeline, first, segment_size),
                segment_name(range.timeline, last, segment_size)
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "WAL {} did not reach the archive {} within {}s; check archive_command and pg_stat_archiver (or use --wal-method fetch)",
                missing[0],
                archive.describe(),
                timeout.as_secs()
            );
        }
        if !switched {
            // The stop segment is archived only once it is full or switched away from.
            client.simple_query("SELECT pg_switch_wal()").await.ok();
            switched = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(200));
    }
}
