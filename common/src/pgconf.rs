//! Values written into `postgresql.conf`: quoted strings, and the words of the shell commands
//! PostgreSQL runs (`archive_command`, `restore_command`).

/// A string value for `postgresql.conf`: single-quoted, quotes doubled.
pub fn quote_value(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One word of a command PostgreSQL runs through the shell: quoted for `sh` when it is not
/// plain, and `%` doubled, since PostgreSQL expands `%p`, `%f`, `%r` and `%%` before the shell
/// sees the command. Fails only on a NUL byte, which no shell word can hold.
pub fn command_word(word: &str) -> Result<String, shlex::QuoteError> {
    Ok(shlex::try_quote(word)?.replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_double_their_quotes() {
        assert_eq!(quote_value("it's"), "'it''s'");
        assert_eq!(quote_value(""), "''");
    }

    #[test]
    fn command_words_survive_postgresql_and_the_shell() {
        assert_eq!(
            command_word("/usr/bin/wal-archive").unwrap(),
            "/usr/bin/wal-archive"
        );
        assert_eq!(
            command_word("s3://bucket/pitr").unwrap(),
            "s3://bucket/pitr"
        );
        assert_eq!(command_word("/my dir").unwrap(), "'/my dir'");
        assert_eq!(command_word("/tmp/100%").unwrap(), "'/tmp/100%%'");
        assert!(command_word("a\0b").is_err());
        // What sh makes of the quoted words is the words themselves.
        for word in ["/a b/it's", "$(reboot)", "x;y", "`id`", "\"q\"", "", "née"] {
            let quoted = command_word(word).unwrap();
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {quoted}")])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{quoted}");
        }
    }
}
