//! `restore-globals` brings back roles with their attributes and memberships after they were
//! dropped, and a table restore that needs them as owners then works.

use crate::support::*;

#[test]
fn dropped_roles_come_back_with_their_attributes() {
    let env = Env::new();
    env.pg.psql(
        "CREATE ROLE app_owner NOLOGIN; \
         CREATE ROLE app_reader LOGIN CONNECTION LIMIT 7 VALID UNTIL '2031-01-01'; \
         GRANT app_owner TO app_reader",
    );
    env.sql(
        "CREATE TABLE public.orders (id int PRIMARY KEY); \
         ALTER TABLE public.orders OWNER TO app_owner; \
         INSERT INTO public.orders SELECT generate_series(1, 50)",
    );
    let backup = env.backup(&[]);
    let id = backup["id"].as_str().unwrap().to_string();

    // Disaster: the table and the roles are gone.
    env.sql("DROP TABLE public.orders");
    env.pg.psql("DROP ROLE app_reader; DROP ROLE app_owner");
    assert_eq!(
        env.pg
            .psql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'app_%'"),
        "0"
    );

    // Not on a terminal and without --yes: refused, nothing changed.
    let refused = env.run(&["restore-globals"]);
    refused.assert_code(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(
        env.pg
            .psql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'app_%'"),
        "0"
    );

    let run = env.run(&["restore-globals", "--yes", "--output", "json"]);
    run.assert_code(0);
    let summary = run.summary();
    assert_eq!(summary["id"], id.as_str());
    assert_eq!(summary["errors"].as_array().unwrap().len(), 0);
    // The cluster's own superuser was in the script and already existed.
    assert!(summary["already_existing"].as_u64().unwrap() >= 1);
    assert_eq!(
        env.pg.psql(
            "SELECT rolcanlogin, rolconnlimit, rolvaliduntil::date FROM pg_roles WHERE rolname = 'app_reader'"
        ),
        "t|7|2031-01-01"
    );
    assert_eq!(
        env.pg.psql(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
             JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = 'app_owner' AND u.rolname = 'app_reader'"
        ),
        "1"
    );

    // The table comes back owned by its role.
    let db = env.db.clone();
    env.run(&[
        "restore",
        "--target-db",
        &db,
        "--table",
        "public.orders",
        "--yes",
    ])
    .assert_code(0);
    assert_eq!(env.count(&db, "public.orders"), 50);
    assert_eq!(
        env.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"),
        "app_owner"
    );

    // Running it again changes nothing and still succeeds.
    let again = env.run(&["restore-globals", "--yes", "--output", "json"]);
    again.assert_code(0);
    assert!(again.summary()["already_existing"].as_u64().unwrap() >= 3);
}

#[test]
fn a_set_without_globals_is_a_clear_error() {
    let env = Env::new();
    env.backup(&["--no-globals"]);
    let run = env.run(&["restore-globals", "--yes"]);
    run.assert_code(2);
    assert!(run.stderr.contains("no globals"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}
