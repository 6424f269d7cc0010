//! The data the scenarios back up and restore: small PostgreSQL clusters and a topic, made
//! once and shared, with the reference (table digests, topic contents) restores must match.

use test_support::pg::{PgCluster, PgOptions};

use crate::sql;
use crate::topic::{self, Contents};

/// Tables of [`Cluster::with_app`]'s database.
pub const APP_TABLES: [&str; 3] = ["public.customers", "public.orders", "public.events"];
/// The application database.
pub const APP_DB: &str = "app";

/// A source cluster with an application database and the digests of its tables.
pub struct Cluster {
    pub pg: PgCluster,
    pub digests: Vec<String>,
}

impl Cluster {
    /// A cluster with `options` and database [`APP_DB`]: customers, orders (a foreign key to
    /// customers, an index), events (jsonb), a few thousand rows in all.
    pub fn with_app(options: PgOptions) -> anyhow::Result<Cluster> {
        let pg = PgCluster::start_with(options);
        pg.create_database(APP_DB);
        fill_app(&pg, 1)?;
        let digests = app_digests(&pg)?;
        Ok(Cluster { pg, digests })
    }

    /// Refreshes the reference after the data changed.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        self.digests = app_digests(&self.pg)?;
        Ok(())
    }
}

/// Creates the tables (first call) and adds rows numbered from `from`.
pub fn fill_app(pg: &PgCluster, from: i64) -> anyhow::Result<()> {
    let to = from + 1999;
    sql::query(
        pg,
        APP_DB,
        &format!(
            "CREATE TABLE IF NOT EXISTS customers (id bigint PRIMARY KEY, name text NOT NULL);
             CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY,
                 customer bigint NOT NULL REFERENCES customers(id), total numeric, note text);
             CREATE INDEX IF NOT EXISTS orders_customer ON orders(customer);
             CREATE TABLE IF NOT EXISTS events (id bigint PRIMARY KEY, payload jsonb);
             INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series({from}, {to}) g;
             INSERT INTO orders SELECT g, g, g * 1.5, md5(g::text) FROM generate_series({from}, {to}) g;
             INSERT INTO events SELECT g, jsonb_build_object('n', g, 'tag', md5(g::text))
                 FROM generate_series({from}, {to}) g;"
        ),
    )
    .map(drop)
}

fn app_digests(pg: &PgCluster) -> anyhow::Result<Vec<String>> {
    sql::digests(pg, APP_DB, &APP_TABLES)?
        .into_iter()
        .zip(APP_TABLES)
        .map(|(d, t)| d.ok_or_else(|| anyhow::anyhow!("source table {t} is missing")))
        .collect()
}

/// A source topic of three partitions and its records.
pub struct Topic {
    pub name: String,
    pub contents: Contents,
}

impl Topic {
    /// A fresh topic with `per_partition` numbered records in each of 3 partitions.
    pub fn new(prefix: &str, per_partition: u64) -> anyhow::Result<Topic> {
        let name = test_support::kafka::topic(prefix, 3);
        test_support::kafka::produce_numbered(&name, &[0, 1, 2], 0, per_partition);
        let contents = topic::read(&name)?;
        anyhow::ensure!(
            topic::count(&contents) == 3 * per_partition as usize,
            "source topic {name} holds {} records, not {}",
            topic::count(&contents),
            3 * per_partition
        );
        Ok(Topic { name, contents })
    }
}

/// Logical slots and publications of [`SlotCluster`].
pub const SLOTS: [(&str, &str); 2] = [
    ("fc_pgoutput", "pgoutput"),
    ("fc_decoding", "test_decoding"),
];
pub const PUBLICATIONS: [&str; 2] = ["fc_all", "fc_inserts"];

/// A logical-decoding cluster with two slots and two publications in [`APP_DB`].
pub struct SlotCluster {
    pub pg: PgCluster,
}

impl SlotCluster {
    pub fn new() -> anyhow::Result<SlotCluster> {
        let pg = PgCluster::start_with(PgOptions::default().setting("wal_level", "logical"));
        pg.create_database(APP_DB);
        fill_app(&pg, 1)?;
        let cluster = SlotCluster { pg };
        cluster.create_missing()?;
        Ok(cluster)
    }

    /// Creates the slots and publications that do not exist.
    pub fn create_missing(&self) -> anyhow::Result<()> {
        for (slot, plugin) in SLOTS {
            sql::query(
                &self.pg,
                APP_DB,
                &format!(
                    "SELECT pg_create_logical_replication_slot('{slot}', '{plugin}')
                     WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
                ),
            )?;
        }
        let [all, inserts] = PUBLICATIONS;
        if !self.publication_exists(all)? {
            sql::query(
                &self.pg,
                APP_DB,
                &format!("CREATE PUBLICATION {all} FOR TABLE orders, customers"),
            )?;
        }
        if !self.publication_exists(inserts)? {
            sql::query(
                &self.pg,
                APP_DB,
                &format!("CREATE PUBLICATION {inserts} FOR TABLE events WITH (publish = 'insert')"),
            )?;
        }
        Ok(())
    }

    /// Drops every slot and publication of the fixture that exists.
    pub fn drop_all(&self) -> anyhow::Result<()> {
        for (slot, _) in SLOTS {
            sql::query(
                &self.pg,
                APP_DB,
                &format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = '{slot}'"
                ),
            )?;
        }
        for publication in PUBLICATIONS {
            sql::query(
                &self.pg,
                APP_DB,
                &format!("DROP PUBLICATION IF EXISTS {publication}"),
            )?;
        }
        Ok(())
    }

    pub fn publication_exists(&self, name: &str) -> anyhow::Result<bool> {
        Ok(sql::query(
            &self.pg,
            APP_DB,
            &format!("SELECT count(*) FROM pg_publication WHERE pubname = '{name}'"),
        )? == "1")
    }

    /// "name plugin" of the fixture's slots that exist, sorted.
    pub fn slots(&self) -> anyhow::Result<Vec<String>> {
        let out = sql::query(
            &self.pg,
            APP_DB,
            "SELECT slot_name || ' ' || plugin FROM pg_replication_slots
             WHERE slot_name LIKE 'fc\\_%' ORDER BY 1",
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// The tables each publication of the fixture publishes: "pub: t1,t2 ops".
    pub fn publications(&self) -> anyhow::Result<String> {
        sql::query(
            &self.pg,
            APP_DB,
            "SELECT p.pubname || ': ' || coalesce((SELECT string_agg(tablename, ',' ORDER BY tablename)
                 FROM pg_publication_tables t WHERE t.pubname = p.pubname), '') || ' '
                 || p.pubinsert || p.pubupdate || p.pubdelete || p.pubtruncate
             FROM pg_publication p WHERE p.pubname LIKE 'fc\\_%' ORDER BY 1",
        )
    }
}
