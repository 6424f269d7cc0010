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
    let (client, connection) = match config.connect(NoTls).await {
        Ok(connected) => connected,
        Err(e) => {
            let hint = connect_hint(config, &e);
            return Err(anyhow::Error::new(e)
                .context(format!("cannot connect to PostgreSQL ({describe}); {hint}")));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// What to check after a failed connection: the password's sources when the server asked for
/// one we do not have (or refused the one we gave), else where the server is.
fn connect_hint(config: &tokio_postgres::Config, error: &tokio_postgres::Error) -> &'static str {
    let refused_password = error
        .as_db_error()
        .is_some_and(|e| *e.code() == tokio_postgres::error::SqlState::INVALID_PASSWORD);
    let asked_for_password = std::error::Error::source(error)
        .is_some_and(|cause| cause.to_string() == "password missing");
    let io_kind = std::error::Error::source(error)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    if config.get_password().is_none() && asked_for_password {
        "the server asks for a password: set PGPASSWORD, or put it in ~/.pgpass (PGPASSFILE names another file)"
    } else if refused_password {
        "the server refused the password: check PGPASSWORD, or ~/.pgpass (PGPASSFILE names another file)"
    } else if matches!(
        io_kind,
        Some(
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        )
    ) {
        "the server closed the connection during the handshake (is it restarting or shutting down?)"
    } else {
        "check PGHOST/PGPORT/PGUSER and that the server runs"
    }
}

/// A current-thread tokio runtime for a tool's `run`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `"name"` quoted as an SQL identifier: exact whatever its case or characters.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_exactly() {
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    /// A server that resets the connection during the startup handshake (as one does in the
    /// instant of an immediate restart) is named as such, not sent to check PGHOST.
    #[test]
    fn a_connection_reset_in_the_handshake_says_the_server_closed_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            // Closing with the startup packet unread makes the kernel send a reset.
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(stream);
        });
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(port).user("u").dbname("d");
        let error = runtime()
            .unwrap()
            .block_on(connect_config(&config, "test server"))
            .expect_err("the connection is reset");
        server.join().unwrap();
        let message = format!("{error:#}");
        assert!(
            message.contains("the server closed the connection"),
            "{message}"
        );
    }
}
