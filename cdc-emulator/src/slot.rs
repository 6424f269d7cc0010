//! The logical replication slot, read through SQL with psql: create it (`test_decoding`),
//! peek the committed transactions it holds, look up primary keys, advance it.

use common::lsn::Lsn;
use serde_json::Value;

use std::process::Command;

use super::decoding::{parse_line, Change, Line};
use super::CdcError;

/// The server holding the slot, as psql reaches it: a Unix-socket directory (or host name),
/// a port and a role. psql runs as the database OS user when we are root, so a trusted
/// local socket lets it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// PGHOST: a socket directory or a host name.
    pub host: String,
    pub port: u16,
    /// PGUSER.
    pub user: String,
}

impl Endpoint {
    /// The server at `host` (a socket directory or host name) and `port`, as `postgres`.
    pub fn new(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            user: "postgres".to_string(),
        }
    }

    /// psql (from [`common::pgbin`]) with this server's libpq environment.
    fn psql(&self) -> Result<Command, CdcError> {
        let mut cmd = Command::new(common::pgbin::program("psql"));
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user);
        common::os_user::as_db_user(&mut cmd).map_err(|e| CdcError::Sql {
            what: "run psql".to_string(),
            message: format!("{e:#}"),
        })?;
        Ok(cmd)
    }
}

/// Where the slot lives.
#[derive(Debug, Clone)]
pub(crate) struct SlotDb<'a> {
    pub endpoint: &'a Endpoint,
    pub database: &'a str,
    pub slot: &'a str,
}

/// A committed transaction as decoded from the slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transaction {
    pub xid: u64,
    /// The end of its commit record: where the slot is advanced to after it.
    pub commit_lsn: Lsn,
    /// Commit time, microseconds since the epoch.
    pub commit_us: i64,
    /// Row changes in order, each with its own LSN.
    pub changes: Vec<(Lsn, Change)>,
}

/// One row of `pg_logical_slot_peek_changes`, with the commit time read from a COMMIT line.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub lsn: Lsn,
    pub xid: u64,
    pub data: String,
    pub commit_us: Option<i64>,
}

impl SlotDb<'_> {
    /// Runs SQL in the slot's database; psql's tuples-only output.
    fn sql(&self, sql: &str, what: &str) -> Result<String, CdcError> {
        let out = self
            .endpoint
            .psql()?
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-d",
                self.database,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| CdcError::Sql {
                what: what.to_string(),
                message: common::pgbin::missing_hint("psql") + &format!(" ({e})"),
            })?;
        if !out.status.success() {
            return Err(CdcError::Sql {
                what: what.to_string(),
                message: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Creates the slot with `test_decoding`; returns its consistent point.
    pub fn create(&self) -> Result<Lsn, CdcError> {
        let what = format!("create slot {}", self.slot);
        let out = self.sql(
            &format!(
                "SELECT lsn FROM pg_create_logical_replication_slot({}, 'test_decoding')",
                literal(self.slot)
            ),
            &what,
        )?;
        parse_lsn(&out, &what)
    }

    /// The complete transactions the slot holds, oldest first: all of them, or (with
    /// `max_rows`) those whose rows reach that count, whole transactions only.
    pub fn peek(&self, max_rows: Option<u64>) -> Result<Vec<Transaction>, CdcError> {
        let limit = max_rows.map_or("NULL".to_string(), |n| n.to_string());
        // JSON keeps text values with newlines and '|' intact through psql.
        let sql = format!(
            "SELECT coalesce(json_agg(json_build_array(lsn::text, xid::text, data, \
               CASE WHEN data LIKE 'COMMIT %' THEN (extract(epoch FROM \
                 substring(data FROM '\\(at (.+)\\)$')::timestamptz) * 1000000)::bigint END) \
               ORDER BY n), '[]') \
             FROM pg_logical_slot_peek_changes({}, NULL, {limit}, 'include-xids', '1', \
               'include-timestamp', '1') WITH ORDINALITY AS c(lsn, xid, data, n)",
            literal(self.slot)
        );
        let what = format!("peek slot {}", self.slot);
        let out = self.sql(&sql, &what)?;
        let rows: Vec<(String, String, String, Option<i64>)> =
            serde_json::from_str(&out).map_err(|e| CdcError::Sql {
                what,
                message: format!("unexpected output ({e}): {out:.200}"),
            })?;
        let rows = rows
            .into_iter()
            .map(|(lsn, xid, data, commit_us)| {
                Ok(Row {
                    lsn: parse_lsn(&lsn, "a slot row")?,
                    xid: xid.parse().map_err(|_| CdcError::Sql {
                        what: "a slot row".into(),
                        message: format!("xid '{xid}' is not a number"),
                    })?,
                    data,
                    commit_us,
                })
            })
            .collect::<Result<Vec<_>, CdcError>>()?;
        transactions(rows)
    }

    /// Moves the slot's confirmed position to `lsn` (the end of a commit record).
    pub fn advance(&self, lsn: Lsn) -> Result<(), CdcError> {
        self.sql(
            &format!(
                "SELECT pg_replication_slot_advance({}, '{lsn}')",
                literal(self.slot)
            ),
            &format!("advance slot {} to {lsn}", self.slot),
        )
        .map(drop)
    }

    /// The slot's `confirmed_flush_lsn`, `None` when there is no such slot.
    pub fn confirmed_flush(&self) -> Result<Option<Lsn>, CdcError> {
        let what = format!("read slot {}", self.slot);
        let out = self.sql(
            &format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {}",
                literal(self.slot)
            ),
            &what,
        )?;
        if out.is_empty() {
            return Ok(None);
        }
        parse_lsn(&out, &what).map(Some)
    }

    /// The table's primary key columns in key order (empty without one).
    pub fn primary_key(&self, schema: &str, table: &str) -> Result<Vec<String>, CdcError> {
        let sql = format!(
            "SELECT coalesce(json_agg(a.attname ORDER BY k.n), '[]') \
             FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indisprimary AND i.indrelid = format('%I.%I', {}, {})::regclass",
            literal(schema),
            literal(table)
        );
        let what = format!("primary key of {schema}.{table}");
        let out = self.sql(&sql, &what)?;
        serde_json::from_str(&out).map_err(|e| CdcError::Sql {
            what,
            message: format!("unexpected output ({e}): {out:.200}"),
        })
    }
}

/// A SQL string literal (standard_conforming_strings is on in PostgreSQL 15).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn parse_lsn(text: &str, what: &str) -> Result<Lsn, CdcError> {
    text.parse().map_err(|e| CdcError::Sql {
        what: what.to_string(),
        message: format!("{e}"),
    })
}

/// Groups the slot's rows into transactions (BEGIN, changes, COMMIT).
pub(crate) fn transactions(rows: Vec<Row>) -> Result<Vec<Transaction>, CdcError> {
    let mut done = Vec::new();
    let mut open: Option<Transaction> = None;
    for row in rows {
        let line = parse_line(&row.data).map_err(|error| CdcError::Decode {
            lsn: row.lsn,
            line: row.data.clone(),
            error,
        })?;
        let unexpected = |what: &str| CdcError::Stream {
            lsn: row.lsn,
            message: format!("{what}: {}", Value::String(row.data.clone())),
        };
        match (line, &mut open) {
            (Line::Begin { .. }, None) => {
                open = Some(Transaction {
                    xid: row.xid,
                    commit_lsn: row.lsn,
                    commit_us: 0,
                    changes: Vec::new(),
                });
            }
            (Line::Change(change), Some(tx)) => tx.changes.push((row.lsn, change)),
            (Line::Commit { .. }, Some(_)) => {
                let mut tx = open.take().expect("matched Some");
                tx.commit_lsn = row.lsn;
                tx.commit_us = row
                    .commit_us
                    .ok_or_else(|| unexpected("COMMIT without (at <time>)"))?;
                done.push(tx);
            }
            (Line::Message, _) => {}
            (Line::Begin { .. }, Some(_)) => return Err(unexpected("BEGIN inside a transaction")),
            (Line::Change(_), None) => return Err(unexpected("change outside a transaction")),
            (Line::Commit { .. }, None) => return Err(unexpected("COMMIT without BEGIN")),
        }
    }
    match open {
        Some(tx) => Err(CdcError::Stream {
            lsn: tx.commit_lsn,
            message: format!("transaction {} has no COMMIT", tx.xid),
        }),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lsn: u64, xid: u64, data: &str, commit_us: Option<i64>) -> Row {
        Row {
            lsn: Lsn(lsn),
            xid,
            data: data.into(),
            commit_us,
        }
    }

    #[test]
    fn rows_group_into_committed_transactions() {
        let rows = vec![
            row(10, 7, "BEGIN 7", None),
            row(10, 7, "table public.t: INSERT: id[integer]:1", None),
            row(20, 7, "table public.t: DELETE: id[integer]:1", None),
            row(
                30,
                7,
                "COMMIT 7 (at 2026-01-01 00:00:00+00)",
                Some(1_767_225_600_000_000),
            ),
            row(
                31,
                0,
                "message: transactional: 0 prefix: p, sz: 1 content:x",
                None,
            ),
            row(30, 8, "BEGIN 8", None),
            row(
                40,
                8,
                "COMMIT 8 (at 2026-01-01 00:00:01+00)",
                Some(1_767_225_601_000_000),
            ),
        ];
        let txs = transactions(rows).unwrap();
        assert_eq!(txs.len(), 2);
        assert_eq!(
            (txs[0].xid, txs[0].commit_lsn, txs[0].commit_us),
            (7, Lsn(30), 1_767_225_600_000_000)
        );
        let lsns: Vec<Lsn> = txs[0].changes.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(lsns, [Lsn(10), Lsn(20)]);
        assert_eq!(
            (txs[1].xid, txs[1].commit_lsn, txs[1].changes.len()),
            (8, Lsn(40), 0)
        );
    }

    #[test]
    fn broken_streams_are_refused_with_the_lsn() {
        let err = transactions(vec![row(
            5,
            1,
            "table public.t: INSERT: id[integer]:1",
            None,
        )])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "slot stream at 0/5: change outside a transaction: \"table public.t: INSERT: id[integer]:1\""
        );
        let err = transactions(vec![row(5, 1, "BEGIN 1", None)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "slot stream at 0/5: transaction 1 has no COMMIT"
        );
        let err = transactions(vec![
            row(6, 1, "BEGIN 1", None),
            row(7, 1, "table x: INSERT:", None),
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("cannot decode slot row at 0/7"),
            "{err}"
        );
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }
}
