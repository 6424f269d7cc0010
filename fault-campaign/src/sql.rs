//! Talking to PostgreSQL with psql, as errors rather than panics: queries, table digests
//! (row count and an md5 over every row in order), `pg_dumpall` references and database
//! clean-up.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use test_support::pg::{pg_bin, Endpoint};

/// Runs SQL in database `db`; tuples only, unaligned.
pub fn query(endpoint: &Endpoint, db: &str, sql: &str) -> anyhow::Result<String> {
    let mut cmd = endpoint.command(pg_bin("psql"));
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", db, "-c", sql]);
    let out = cmd.output().context("cannot run psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql in {db} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// `count:md5` of a table's rows in a stable order, or None when the table does not exist.
pub fn digest(endpoint: &Endpoint, db: &str, table: &str) -> anyhow::Result<Option<String>> {
    let exists = query(
        endpoint,
        db,
        &format!("SELECT to_regclass('{table}') IS NOT NULL"),
    )?;
    if exists != "t" {
        return Ok(None);
    }
    query(
        endpoint,
        db,
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        ),
    )
    .map(Some)
}

/// Digests of `tables` in `db` (None for a missing table).
pub fn digests(
    endpoint: &Endpoint,
    db: &str,
    tables: &[&str],
) -> anyhow::Result<Vec<Option<String>>> {
    tables.iter().map(|t| digest(endpoint, db, t)).collect()
}

/// Fails unless every table of `db` has the digest in `want`, naming the first that differs.
pub fn expect_tables(
    endpoint: &Endpoint,
    db: &str,
    tables: &[&str],
    want: &[String],
) -> anyhow::Result<()> {
    for (table, want) in tables.iter().zip(want) {
        match digest(endpoint, db, table)? {
            Some(got) if &got == want => {}
            Some(got) => anyhow::bail!("table {table} in {db} holds {got}, the source {want}"),
            None => anyhow::bail!("table {table} is missing from {db}"),
        }
    }
    Ok(())
}

/// Drops a database, ending its sessions.
pub fn drop_database(endpoint: &Endpoint, db: &str) -> anyhow::Result<()> {
    query(
        endpoint,
        "postgres",
        &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
    )
    .map(drop)
}

/// Waits until `sql` in `db` answers `want` (e.g. an archiver catching up).
pub fn wait_for(
    endpoint: &Endpoint,
    db: &str,
    sql: &str,
    want: impl Fn(&str) -> bool,
    limit: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let got = query(endpoint, db, sql)?;
        if want(&got) {
            return Ok(got);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "waited {}s for `{sql}`, last answer '{got}'",
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Switches to a new WAL segment and waits until the one holding everything so far is
/// archived; fails if the archiver does not get there.
pub fn switch_wal_and_wait(endpoint: &Endpoint, limit: Duration) -> anyhow::Result<String> {
    let current = query(
        endpoint,
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_lsn())",
    )?;
    query(endpoint, "postgres", "SELECT pg_switch_wal()")?;
    wait_for(
        endpoint,
        "postgres",
        "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        |got| got.len() >= 24 && got[..24] >= *current,
        limit,
    )
    .with_context(|| format!("segment {current} not archived"))?;
    Ok(current)
}

/// Waits until no session but this one's queries runs on the server: what a killed client
/// left running server-side has finished.
pub fn wait_until_idle(endpoint: &Endpoint, limit: Duration) -> anyhow::Result<()> {
    wait_for(
        endpoint,
        "postgres",
        "SELECT count(*) FROM pg_stat_activity
         WHERE backend_type IN ('client backend', 'walsender') AND pid <> pg_backend_pid()
           AND state IS DISTINCT FROM 'idle'",
        |n| n == "0",
        limit,
    )
    .context("sessions of the killed run are still working")
    .map(drop)
}

/// `pg_dumpall` of a server (roles without passwords), without the lines that differ from
/// one run to the next.
pub fn dumpall(endpoint: &Endpoint) -> anyhow::Result<String> {
    let mut cmd = endpoint.command(pg_bin("pg_dumpall"));
    cmd.arg("--no-role-passwords");
    let out = cmd.output().context("cannot run pg_dumpall")?;
    anyhow::ensure!(
        out.status.success(),
        "pg_dumpall failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // `\restrict KEY` / `\unrestrict KEY` (newer minor releases) carry a random key per run.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(|l| format!("{l}\n"))
        .collect())
}

/// The first line where two dumps differ.
pub fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(n, (x, y))| format!("line {}: restored '{x}', reference '{y}'", n + 1))
        .unwrap_or_else(|| {
            format!(
                "lengths differ: {} and {} lines",
                a.lines().count(),
                b.lines().count()
            )
        })
}
