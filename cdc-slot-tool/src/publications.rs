//! Publications: the `CREATE PUBLICATION` that rebuilds a saved one, and creating those
//! missing on the server. They are created before the slots: pgoutput looks publications up
//! as of each decoded change, so a publication younger than its slot's start breaks it.

use std::collections::HashMap;

use serde::Serialize;
use tokio_postgres::Client;

use crate::inventory::Publication;
use crate::server::{quote_ident, quote_literal};

/// What happened to one saved publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicationAction {
    Created,
    WouldCreate,
    /// A publication of that name exists already; left as it is.
    Exists,
    Failed,
}

impl std::fmt::Display for PublicationAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::server::serde_name(self))
    }
}

/// The report line of one publication.
#[derive(Debug, Clone, Serialize)]
pub struct PublicationOutcome {
    pub database: String,
    pub name: String,
    pub action: PublicationAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    pub message: String,
}

/// The statement that recreates `p` on a server of version `version_num`.
pub fn create_statement(p: &Publication, version_num: u32) -> anyhow::Result<String> {
    let mut sql = format!("CREATE PUBLICATION {}", quote_ident(&p.name));
    if p.all_tables {
        sql.push_str(" FOR ALL TABLES");
    } else if !p.tables.is_empty() || !p.schemas.is_empty() {
        let modern = version_num >= 150000;
        let needs_modern = !p.schemas.is_empty()
            || p.tables
                .iter()
                .any(|t| t.columns.is_some() || t.row_filter.is_some());
        if needs_modern && !modern {
            anyhow::bail!(
                "publication {} uses schemas, column lists or row filters, which need \
                 PostgreSQL 15 or later on the server",
                p.name
            );
        }
        let mut objects = Vec::new();
        for table in &p.tables {
            let mut object = format!(
                "{}.{}",
                quote_ident(&table.schema),
                quote_ident(&table.name)
            );
            if let Some(columns) = &table.columns {
                let list: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
                object.push_str(&format!(" ({})", list.join(", ")));
            }
            if let Some(filter) = &table.row_filter {
                object.push_str(&format!(" WHERE ({filter})"));
            }
            objects.push(if modern {
                format!("TABLE {object}")
            } else {
                object
            });
        }
        for schema in &p.schemas {
            objects.push(format!("TABLES IN SCHEMA {}", quote_ident(schema)));
        }
        if modern {
            sql.push_str(&format!(" FOR {}", objects.join(", ")));
        } else {
            sql.push_str(&format!(" FOR TABLE {}", objects.join(", ")));
        }
    }
    let mut options = vec![format!(
        "publish = {}",
        quote_literal(&p.publish.join(", "))
    )];
    if let Some(via_root) = p.via_partition_root {
        if version_num >= 130000 {
            options.push(format!("publish_via_partition_root = {via_root}"));
        }
    }
    sql.push_str(&format!(" WITH ({})", options.join(", ")));
    Ok(sql)
}

/// How an existing publication differs from the saved one, in words.
pub fn differences(saved: &Publication, current: &Publication) -> Vec<String> {
    let mut found = Vec::new();
    if saved.all_tables != current.all_tables {
        found.push(format!(
            "FOR ALL TABLES is {} (saved {})",
            current.all_tables, saved.all_tables
        ));
    }
    if saved.publish != current.publish {
        found.push(format!(
            "publishes {} (saved {})",
            current.publish.join(", "),
            saved.publish.join(", ")
        ));
    }
    if saved.via_partition_root != current.via_partition_root {
        found.push("publish_via_partition_root differs".to_string());
    }
    if saved.tables != current.tables {
        let names = |p: &Publication| {
            p.tables
                .iter()
                .map(|t| format!("{}.{}", t.schema, t.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        found.push(format!(
            "tables, columns or row filters differ (now [{}], saved [{}])",
            names(current),
            names(saved)
        ));
    }
    if saved.schemas != current.schemas {
        found.push(format!(
            "schemas [{}] (saved [{}])",
            current.schemas.join(", "),
            saved.schemas.join(", ")
        ));
    }
    found
}

/// Creates (or, in a dry run, plans) every saved publication that the server lacks.
/// `clients` holds a connection per existing database; databases missing there fail.
pub async fn restore(
    saved: &[Publication],
    clients: &HashMap<String, Client>,
    version_num: u32,
    dry_run: bool,
) -> Vec<PublicationOutcome> {
    let mut outcomes = Vec::new();
    for p in saved {
        let mut outcome = PublicationOutcome {
            database: p.database.clone(),
            name: p.name.clone(),
            action: PublicationAction::Failed,
            statement: None,
            message: String::new(),
        };
        let Some(client) = clients.get(&p.database) else {
            outcome.message = format!(
                "database {} does not exist on this server; restore it first",
                p.database
            );
            outcomes.push(outcome);
            continue;
        };
        match restore_one(p, client, version_num, dry_run).await {
            Ok((action, statement, message)) => {
                outcome.action = action;
                outcome.statement = statement;
                outcome.message = message;
            }
            Err(e) => outcome.message = format!("{e:#}"),
        }
        outcomes.push(outcome);
    }
    outcomes
}

async fn restore_one(
    p: &Publication,
    client: &Client,
    version_num: u32,
    dry_run: bool,
) -> anyhow::Result<(PublicationAction, Option<String>, String)> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&p.name],
        )
        .await?
        .is_some();
    if exists {
        let current = crate::inventory::publications(client, &p.database, version_num)
            .await?
            .into_iter()
            .find(|c| c.name == p.name);
        let differences = current.map(|c| differences(p, &c)).unwrap_or_default();
        let message = if differences.is_empty() {
            "exists already, as saved".to_string()
        } else {
            tracing::warn!(
                "publication {} differs from the backup: {}",
                p.name,
                differences.join("; ")
            );
            format!(
                "exists already but differs from the backup ({}); left unchanged",
                differences.join("; ")
            )
        };
        return Ok((PublicationAction::Exists, None, message));
    }
    let statement = create_statement(p, version_num)?;
    if dry_run {
        return Ok((
            PublicationAction::WouldCreate,
            Some(statement),
            "missing; would be created".into(),
        ));
    }
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create publication {}: {e}", p.name))?;
    let mut message = "created".to_string();
    if let Some(owner_note) = restore_owner(p, client).await? {
        message = format!("created; {owner_note}");
    }
    tracing::info!("created publication {} in database {}", p.name, p.database);
    Ok((PublicationAction::Created, Some(statement), message))
}

/// Gives the publication back to its saved owner when that role exists.
async fn restore_owner(p: &Publication, client: &Client) -> anyhow::Result<Option<String>> {
    let row = client
        .query_one(
            "SELECT current_user::text, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&p.owner],
        )
        .await?;
    let current: String = row.get(0);
    let owner_exists: bool = row.get(1);
    if current == p.owner {
        return Ok(None);
    }
    if !owner_exists {
        return Ok(Some(format!(
            "saved owner {} does not exist, owned by {current}",
            p.owner
        )));
    }
    client
        .batch_execute(&format!(
            "ALTER PUBLICATION {} OWNER TO {}",
            quote_ident(&p.name),
            quote_ident(&p.owner)
        ))
        .await
        .map_err(|e| anyhow::anyhow!("cannot give publication {} to {}: {e}", p.name, p.owner))?;
    Ok(Some(format!("owner set to {}", p.owner)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::PublishedTable;

    fn publication() -> Publication {
        Publication {
            database: "app".into(),
            name: "cdc pub".into(),
            owner: "postgres".into(),
            all_tables: false,
            publish: vec!["insert".into(), "update".into()],
            via_partition_root: Some(false),
            tables: vec![
                PublishedTable {
                    schema: "public".into(),
                    name: "orders".into(),
                    columns: Some(vec!["id".into(), "total".into()]),
                    row_filter: Some("(total > 0)".into()),
                },
                PublishedTable {
                    schema: "public".into(),
                    name: "Customers".into(),
                    columns: None,
                    row_filter: None,
                },
            ],
            schemas: vec!["audit".into()],
            effective_tables: Vec::new(),
        }
    }

    #[test]
    fn pg15_statement_keeps_columns_filters_and_schemas() {
        let sql = create_statement(&publication(), 150004).unwrap();
        assert_eq!(
            sql,
            "CREATE PUBLICATION \"cdc pub\" FOR TABLE \"public\".\"orders\" (\"id\", \"total\") \
             WHERE ((total > 0)), TABLE \"public\".\"Customers\", TABLES IN SCHEMA \"audit\" \
             WITH (publish = 'insert, update', publish_via_partition_root = false)"
        );
    }

    #[test]
    fn older_servers_get_plain_table_lists_or_a_clear_error() {
        assert!(create_statement(&publication(), 140010).is_err());
        let mut p = publication();
        p.schemas.clear();
        p.tables.truncate(1);
        p.tables[0].columns = None;
        p.tables[0].row_filter = None;
        assert_eq!(
            create_statement(&p, 140010).unwrap(),
            "CREATE PUBLICATION \"cdc pub\" FOR TABLE \"public\".\"orders\" \
             WITH (publish = 'insert, update', publish_via_partition_root = false)"
        );
    }

    #[test]
    fn differences_are_named() {
        let saved = publication();
        assert!(differences(&saved, &saved).is_empty());
        let mut current = publication();
        current.publish.push("delete".into());
        current.tables.pop();
        let found = differences(&saved, &current);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("insert, update, delete"));
        assert!(found[1].contains("public.Customers"));
    }

    #[test]
    fn all_tables_and_empty_publications() {
        let mut p = publication();
        p.all_tables = true;
        assert!(create_statement(&p, 150000)
            .unwrap()
            .starts_with("CREATE PUBLICATION \"cdc pub\" FOR ALL TABLES WITH"));
        p.all_tables = false;
        p.tables.clear();
        p.schemas.clear();
        assert!(create_statement(&p, 150000)
            .unwrap()
            .starts_with("CREATE PUBLICATION \"cdc pub\" WITH"));
    }
}
