//! Connecting with tokio-postgres from the libpq settings of [`PgArgs`].

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

use crate::cli::PgArgs;

/// The tokio-postgres configuration for these settings (password from `PGPASSWORD` or the
/// password file, never from argv).
pub fn config(args: &PgArgs, application_name: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(args.host())
        .port(args.port())
        .user(args.user())
        .dbname(args.dbname())
        .application_name(application_name)
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(password) = args.password() {
        config.password(password);
    }
    config
}

/// Connects and drives the connection on a background task.
pub async fn connect(args: &PgArgs, application_name: &str) -> anyhow::Result<Client> {
    connect_config(&config(args, application_name), &args.describe()).await
}

/// Connects with an explicit configuration; `describe` names the server in errors.
pub async fn connect_config(
    config: &tokio_postgres::Config,
    describe: &str,
) -> anyhow::Result<Client> {
    let (client, connection) = config.connect(NoTls).await.with_context(|| {
        format!("cannot connect to PostgreSQL ({describe}); check PGHOST/PGPORT/PGUSER and that the server runs")
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// A current-thread tokio runtime for a tool's `run`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
