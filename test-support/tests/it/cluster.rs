//! The throwaway cluster is a real PostgreSQL 15 server with the settings asked for.

use test_support::pg::{PgCluster, PgOptions};

#[test]
fn cluster_accepts_sql_with_requested_settings() {
    let mut pg = PgCluster::start_with(PgOptions::default().setting("wal_level", "logical"));
    assert_eq!(pg.psql("SHOW wal_level"), "logical");
    assert!(pg.psql("SELECT version()").contains("PostgreSQL 15"));
    pg.psql("CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 10)");
    assert_eq!(pg.psql("SELECT sum(x) FROM t"), "55");
    pg.restart();
    assert_eq!(pg.psql("SELECT count(*) FROM t"), "10");
}

#[test]
fn two_clusters_run_side_by_side() {
    let a = PgCluster::start();
    let b = PgCluster::start();
    assert_ne!(a.port, b.port);
    a.psql("CREATE TABLE only_in_a(x int)");
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"),
        "0"
    );
}
