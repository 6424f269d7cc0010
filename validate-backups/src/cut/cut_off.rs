//! The transactions a restore cut off: begun before the cut, committed after it. Their
//! changes have LSNs below the cut (so `--until-lsn` alone keeps their events), but recovery
//! stopped before their commit and rolled them back, so the restored database does not hold
//! them. Under concurrent load at a time target there are usually some.
//!
//! How they are found, exactly for top-level transaction ids: `kafka-replay --list-txids`
//! lists the distinct transaction ids (Debezium's `source.txId`, the 32-bit xid of the
//! top-level transaction) of each CDC topic's events below the cut; the restored server then
//! says for each whether it committed (`pg_xact_status` on the xid8 made from the 32-bit xid
//! and the server's current epoch). Every event in a topic comes from a transaction that
//! committed on the original timeline, so one the restored server does not know as committed
//! committed after the cut: `aborted` (rolled back at the end of recovery), `in progress` (a
//! prepared transaction still pending), or an xid beyond the server's next one. NULL (older
//! than the server's commit log keeps) means committed long ago, so it stays.
//!
//! Memory: the ids are held as a set of the distinct transactions below the cut in the topic
//! backups (one u64 each, in kafka-replay and here), and checked on the server in batches.

use std::collections::BTreeSet;

use anyhow::Context;
use common::lsn::Lsn;
use serde_json::Value;
use tokio_postgres::Client;

use super::plan::Plan;
use super::steps::{kafka_replay, Tools};
use super::{Component, CutArgs, Missing};
use crate::tools;

/// Transaction ids checked on the server per query.
const BATCH: usize = 50_000;

/// What the search found.
pub enum CutOff {
    /// The transactions to leave out (possibly none), and the component reporting them.
    Found {
        txids: BTreeSet<u64>,
        component: Component,
    },
    /// A topic's transactions could not be listed: what is missing.
    Missing(Vec<String>),
}

/// Lists the transactions below the cut in every CDC topic, then asks the restored server
/// which of them it did not commit.
pub fn find(args: &CutArgs, plan: &Plan, bins: &Tools, cut: Lsn) -> anyhow::Result<CutOff> {
    let mut below = BTreeSet::new();
    let mut missing = Vec::new();
    for topic in &plan.cdc_topics {
        match list_txids(args, bins, topic, cut)? {
            Txids::Listed(ids) => below.extend(ids),
            Txids::Unlisted(problem) => missing.push(problem.into()),
        }
    }
    if !missing.is_empty() {
        return Ok(CutOff::Missing(missing));
    }
    let runtime = common::postgres::runtime()?;
    let client = runtime.block_on(super::prove::connect(args))?;
    let txids = runtime.block_on(not_committed(&client, &below))?;
    let component = Component::ok(
        "cut-off-transactions",
        Some(cut.to_string()),
        format!(
            "{} of the {} transaction(s) with events below the cut were not committed in the restored database (begun before the cut, committed after it): their events are left out{}",
            txids.len(),
            below.len(),
            if txids.is_empty() {
                String::new()
            } else {
                format!(
                    " (txId {})",
                    txids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )
            }
        ),
    );
    Ok(CutOff::Found { txids, component })
}

/// One topic's distinct transaction ids below the cut, or why they cannot be listed.
enum Txids {
    Listed(Vec<u64>),
    Unlisted(Missing),
}

/// `kafka-replay --list-txids` of one topic.
fn list_txids(args: &CutArgs, bins: &Tools, topic: &str, cut: Lsn) -> anyhow::Result<Txids> {
    let mut cmd = kafka_replay(args, bins, topic, cut)?;
    cmd.arg("--list-txids");
    let run = tools::capture(&mut cmd, "kafka-replay --list-txids")?;
    if run.code != Some(0) {
        return Ok(Txids::Unlisted(Missing(format!(
            "the transactions of CDC topic {topic} below LSN {cut} cannot be listed, so those the restore cut off cannot be told apart: {}",
            run.last_error()
        ))));
    }
    let summary = run.summary().unwrap_or_default();
    let ids = summary["txids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .with_context(|| {
            format!("kafka-replay --list-txids of {topic} printed no txids: {summary}")
        })?;
    Ok(Txids::Listed(ids))
}

/// The ids the restored server does not know as committed.
async fn not_committed(client: &Client, ids: &BTreeSet<u64>) -> anyhow::Result<BTreeSet<u64>> {
    let next: String = client
        .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
        .await
        .context("cannot read the restored server's next transaction id")?
        .get(0);
    let next: u64 = next
        .parse()
        .with_context(|| format!("the restored server's next transaction id '{next}'"))?;
    let mut cut_off = BTreeSet::new();
    let mut known = Vec::new();
    for &id in ids {
        match full_xid(id, next) {
            Some(full) => known.push((id, full)),
            None => {
                cut_off.insert(id);
            }
        }
    }
    for batch in known.chunks(BATCH) {
        let fulls: Vec<String> = batch.iter().map(|(_, full)| full.to_string()).collect();
        let rows = client
            .query(
                "SELECT ord::bigint, pg_xact_status(f::xid8) FROM unnest($1::text[]) WITH ORDINALITY AS t(f, ord)",
                &[&fulls],
            )
            .await
            .context("cannot ask the restored server which transactions committed")?;
        for row in rows {
            let index = row.get::<_, i64>(0) as usize - 1;
            let status: Option<String> = row.get(1);
            if is_cut_off(status.as_deref()) {
                cut_off.insert(batch[index].0);
            }
        }
    }
    Ok(cut_off)
}

/// The full (epoch-qualified) xid8 of a transaction id as Debezium gives it, relative to the
/// server's next xid8: a 32-bit xid is in the current epoch when below the next xid's low 32
/// bits, else in the one before. None for an id the server has not reached (never assigned
/// here: its transaction is not in the restored database). An id above 32 bits is an xid8.
fn full_xid(id: u64, next: u64) -> Option<u64> {
    let full = if id > u64::from(u32::MAX) {
        id
    } else if id < next & u64::from(u32::MAX) {
        (next & !u64::from(u32::MAX)) | id
    } else {
        (next >> 32).checked_sub(1)? << 32 | id
    };
    (full < next).then_some(full)
}

/// Whether a transaction the topic has events of was cut off, from `pg_xact_status`: NULL is
/// too old for the commit log, so committed long before the cut.
fn is_cut_off(status: Option<&str>) -> bool {
    matches!(status, Some("aborted" | "in progress"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids_get_the_epoch_of_the_servers_next_xid() {
        let next = (3 << 32) | 1000;
        assert_eq!(full_xid(999, next), Some((3 << 32) | 999));
        // At or above the low bits: from the epoch before (after a wraparound).
        assert_eq!(full_xid(1000, next), Some((2 << 32) | 1000));
        assert_eq!(
            full_xid(u64::from(u32::MAX), next),
            Some((2 << 32) | 0xFFFF_FFFF)
        );
        // In epoch 0 nothing is before it: never assigned on this server.
        assert_eq!(full_xid(1000, 1000), None);
        assert_eq!(full_xid(5, 1000), Some(5));
        // An xid8 already.
        assert_eq!(full_xid((3 << 32) | 7, next), Some((3 << 32) | 7));
        assert_eq!(full_xid((3 << 32) | 1000, next), None);
    }

    #[test]
    fn only_aborted_or_pending_transactions_are_cut_off() {
        assert!(is_cut_off(Some("aborted")));
        assert!(is_cut_off(Some("in progress")));
        assert!(!is_cut_off(Some("committed")));
        assert!(!is_cut_off(None));
    }
}
