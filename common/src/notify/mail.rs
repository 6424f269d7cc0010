//! Sending a notification as a plain-text mail over SMTP with lettre.
//!
//! The connection is driven step by step (connect, STARTTLS, AUTH, send) rather than through
//! lettre's transport, so that the password is never sent over a connection left unencrypted
//! because the server offered no STARTTLS, unless `SMTP_TLS=off` says so.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;

use super::config::{MailSettings, SmtpTls};
use super::message::Report;
use super::SendError;

/// Sends `report` to every recipient. `timeout` bounds each network step.
pub fn send(mail: &MailSettings, report: &Report, timeout: Duration) -> Result<(), SendError> {
    let mut message = Message::builder()
        .from(mail.from.clone())
        .subject(report.subject())
        .header(ContentType::TEXT_PLAIN);
    for to in &mail.to {
        message = message.to(to.clone());
    }
    let message = message
        .body(report.mail_body())
        .map_err(|e| format!("cannot build the mail: {e}"))?;

    let hello = ClientId::Domain(super::message::host_name());
    let tls = || TlsParameters::new(mail.host.clone()).map_err(|e| format!("TLS setup: {e}"));
    let wrapper = match mail.tls {
        SmtpTls::Wrapper => Some(tls()?),
        _ => None,
    };
    let mut conn = SmtpConnection::connect(
        (mail.host.as_str(), mail.port),
        Some(timeout),
        &hello,
        wrapper.as_ref(),
        None,
    )
    .map_err(|e| format!("cannot connect: {e}"))?;
    let result = (|| -> Result<(), SendError> {
        match mail.tls {
            SmtpTls::Opportunistic if conn.can_starttls() => starttls(&mut conn, &tls()?, &hello)?,
            SmtpTls::Required => {
                if !conn.can_starttls() {
                    return Err("the server offers no STARTTLS (SMTP_TLS=required)".into());
                }
                starttls(&mut conn, &tls()?, &hello)?;
            }
            _ => {}
        }
        if let Some((user, password)) = &mail.credentials {
            if !conn.is_encrypted() && mail.tls != SmtpTls::Off {
                return Err("the server offers no STARTTLS: not sending SMTP_PASSWORD \
                            unencrypted (SMTP_TLS=off would)"
                    .into());
            }
            conn.auth(
                &[Mechanism::Plain, Mechanism::Login],
                &Credentials::new(user.clone(), password.clone()),
            )
            .map_err(|e| format!("authentication failed: {e}"))?;
        }
        conn.send(message.envelope(), &message.formatted())
            .map_err(|e| format!("the server refused the mail: {e}"))?;
        Ok(())
    })();
    match &result {
        Ok(()) => {
            let _ = conn.quit();
        }
        Err(_) => conn.abort(),
    }
    result
}

fn starttls(
    conn: &mut SmtpConnection,
    tls: &TlsParameters,
    hello: &ClientId,
) -> Result<(), SendError> {
    conn.starttls(tls, hello)
        .map_err(|e| SendError(format!("STARTTLS failed: {e}")))
}
