//! Mail to a real SMTP server (aiosmtpd): the message, AUTH, and no password in clear.

use std::time::Duration;

use test_support::notify::SmtpReceiver;

use super::{assert_no_secret, error_of, mail_env, readable, run, wal_push, SMTP_PASSWORD};

#[test]
fn mail_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("000000010000000000000002");
    let state = tempfile::tempdir().unwrap();

    let smtp = SmtpReceiver::start();
    let out = run(mail_env(&mut wal_push(&missing, dir.path()), &smtp)
        .env("XDG_STATE_HOME", state.path().join("a")));
    out.assert_code(2);
    let mails = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["ops@example.com"]);
    assert_eq!(mails[0].from, "backups@example.com");
    let text = readable(&mails[0]);
    assert!(
        text.contains("Subject: [pipeline-backup] FAILED: wal-archive push on "),
        "{text}"
    );
    let error = error_of(&out, "wal-archive");
    assert!(text.contains(&format!("Error: {error}")), "{error}\n{text}");

    // AUTH where the operator allowed plain text: the password works and shows nowhere.
    let smtp = SmtpReceiver::with_login("backup", SMTP_PASSWORD);
    let out = run(mail_env(&mut wal_push(&missing, dir.path()), &smtp)
        .env("SMTP_USERNAME", "backup")
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .env("SMTP_TLS", "off")
        .env("XDG_STATE_HOME", state.path().join("b")));
    out.assert_code(2);
    let mails = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(mails.len(), 1, "stderr: {}", out.stderr);
    assert_eq!(mails[0].login.as_deref(), Some("backup"));
    assert_no_secret(&[&mails[0].data, &out.stderr, &out.stdout]);

    // The same server offers no STARTTLS: by default the password is not sent in clear.
    let out = run(mail_env(&mut wal_push(&missing, dir.path()), &smtp)
        .env("SMTP_USERNAME", "backup")
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .env("XDG_STATE_HOME", state.path().join("c")));
    out.assert_code(2);
    assert_eq!(smtp.mails().len(), 1, "no second mail");
    let warning: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("notification not sent"))
        .collect();
    assert_eq!(warning.len(), 1, "{}", out.stderr);
    assert!(
        warning[0].contains(&format!("email (127.0.0.1:{})", smtp.port))
            && warning[0].contains("not sending SMTP_PASSWORD unencrypted"),
        "{}",
        warning[0]
    );
    assert_no_secret(&[&out.stderr]);
}
