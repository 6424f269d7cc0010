//! Encryption at rest in the age format (age-encryption.org/v1), so that what the tools
//! store is unreadable and tamper-evident without the key, and anyone can decrypt it by hand
//! with the `age` or `rage` CLI.
//!
//! An age file is a text header (one stanza per recipient, wrapping a random file key, and a
//! MAC over the header) followed by the payload in 64 KiB ChaCha20-Poly1305 chunks, the last
//! one flagged: a flipped byte, a dropped chunk or a truncation is an error, never wrong data.
//! Files are compressed first, then encrypted, and their stored name ends in `.age`.
//!
//! Keys come from the environment (or the config file, which fills it) only, never from argv:
//! - writing: [`RECIPIENTS_ENV`] or [`RECIPIENTS_FILE_ENV`] (public keys), else
//!   [`PASSPHRASE_FILE_ENV`] (scrypt, about a second per file: for sets, not for WAL);
//! - reading: [`IDENTITY_FILE_ENV`] (secret keys, several allowed for rotation) and/or
//!   [`PASSPHRASE_FILE_ENV`].
//!
//! Errors name the variable or the file, never a key.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Comma-separated `age1...` public keys to encrypt to.
pub const RECIPIENTS_ENV: &str = "BACKUP_ENCRYPTION_RECIPIENTS";
/// A file of `age1...` public keys, one a line, `#` comments (as `age -R`).
pub const RECIPIENTS_FILE_ENV: &str = "BACKUP_ENCRYPTION_RECIPIENTS_FILE";
/// An age identity file (`age-keygen` output; several keys allowed) to decrypt with.
pub const IDENTITY_FILE_ENV: &str = "BACKUP_ENCRYPTION_IDENTITY_FILE";
/// A file whose first line is a passphrase (scrypt): encrypts when no recipients are set,
/// and decrypts.
pub const PASSPHRASE_FILE_ENV: &str = "BACKUP_ENCRYPTION_PASSPHRASE_FILE";

/// Suffix of an encrypted file's name, after the compression suffix: `base.tar.zst.age`.
pub const AGE_SUFFIX: &str = ".age";
/// The format name recorded in manifests.
pub const AGE_FORMAT: &str = "age";

/// `--help` text shared by the tools that write, for their `after_help`.
pub const ENCRYPTION_HELP: &str = "Encryption at rest (age format, compress then encrypt; files end in .age):\n  BACKUP_ENCRYPTION_RECIPIENTS       comma-separated age1... public keys, or\n  BACKUP_ENCRYPTION_RECIPIENTS_FILE  a file of them, one a line (as age -R)\n  BACKUP_ENCRYPTION_PASSPHRASE_FILE  else a passphrase (scrypt: about a second per file, so\n                                     suited to base backups and sets, not to WAL)\n  BACKUP_ENCRYPTION_IDENTITY_FILE    age identity file for reading (restore, fetch, verify)\nKeys are read from the environment or the --config file only, never from arguments.";

/// Why keys could not be loaded. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {var} file {}: {source}", path.display())]
    Read {
        var: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{shown}: entry {entry} is not an age X25519 recipient (age1...)")]
    BadRecipient { shown: String, entry: usize },
    #[error("{shown} holds no recipient")]
    NoRecipients { shown: String },
    #[error("{var} file {} is empty", path.display())]
    EmptyPassphrase { var: &'static str, path: PathBuf },
    #[error("{IDENTITY_FILE_ENV} file {} is not an age identity file: {reason}", path.display())]
    BadIdentities { path: PathBuf, reason: String },
}

/// What a set's manifest records in clear about its encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEncryption {
    /// Always `age`.
    pub format: String,
    /// The public keys the set's files were encrypted to (empty for a passphrase).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// True when encrypted with a passphrase (scrypt) instead of recipients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passphrase: bool,
}

/// Who new files are encrypted to: public keys, or a passphrase.
#[derive(Clone)]
pub enum Recipients {
    Keys(Vec<age::x25519::Recipient>),
    Passphrase(SecretString),
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipients::Keys(keys) => f.debug_tuple("Keys").field(&keys.len()).finish(),
            Recipients::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

fn env_path(var: &'static str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn read_key_file(var: &'static str, path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        var,
        path: path.to_path_buf(),
        source,
    })
}

fn passphrase_from(var: &'static str, path: &Path) -> Result<SecretString, KeyError> {
    let text = read_key_file(var, path)?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(KeyError::EmptyPassphrase {
            var,
            path: path.to_path_buf(),
        });
    }
    Ok(SecretString::from(line.to_string()))
}

/// Parses recipients: entries split by `separator`, blank entries and `#` comments skipped.
fn parse_recipients(text: &str, lines: bool, shown: &str) -> Result<Recipients, KeyError> {
    let entries: Vec<&str> = if lines {
        text.lines().collect()
    } else {
        text.split(',').collect()
    };
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let key = age::x25519::Recipient::from_str(entry).map_err(|_| KeyError::BadRecipient {
            shown: shown.to_string(),
            entry: i + 1,
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyError::NoRecipients {
            shown: shown.to_string(),
        });
    }
    Ok(Recipients::Keys(keys))
}

impl Recipients {
    /// The recipients configured in the environment: [`RECIPIENTS_ENV`], else
    /// [`RECIPIENTS_FILE_ENV`], else a passphrase from [`PASSPHRASE_FILE_ENV`]; `None`
    /// when none is set (files are stored in plaintext).
    pub fn from_env() -> Result<Option<Recipients>, KeyError> {
        if let Some(list) = std::env::var(RECIPIENTS_ENV).ok().filter(|v| !v.is_empty()) {
            return parse_recipients(&list, false, RECIPIENTS_ENV).map(Some);
        }
        if let Some(path) = env_path(RECIPIENTS_FILE_ENV) {
            let text = read_key_file(RECIPIENTS_FILE_ENV, &path)?;
            let shown = format!("{RECIPIENTS_FILE_ENV} file {}", path.display());
            return parse_recipients(&text, true, &shown).map(Some);
        }
        if let Some(path) = env_path(PASSPHRASE_FILE_ENV) {
            return passphrase_from(PASSPHRASE_FILE_ENV, &path)
                .map(|p| Some(Recipients::Passphrase(p)));
        }
        Ok(None)
    }

    /// Parses a comma-separated list of `age1...` keys.
    pub fn parse(list: &str) -> Result<Recipients, KeyError> {
        parse_recipients(list, false, "recipient list")
    }

    /// What a manifest records about files encrypted to these recipients.
    pub fn describe(&self) -> SetEncryption {
        match self {
            Recipients::Keys(keys) => SetEncryption {
                format: AGE_FORMAT.to_string(),
                recipients: keys.iter().map(ToString::to_string).collect(),
                passphrase: false,
            },
            Recipients::Passphrase(_) => SetEncryption {
                format: AGE_FORMAT.to_string(),
                recipients: Vec::new(),
                passphrase: true,
            },
        }
    }

    /// Starts an age file on `output`: the header is written now, the payload as it comes.
    /// Call [`age::stream::StreamWriter::finish`] at the end, or the file is truncated (and
    /// unreadable, which is the point).
    pub fn encrypt<W: Write>(&self, output: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor = match self {
            Recipients::Keys(keys) => {
                age::Encryptor::with_recipients(keys.iter().map(|k| k as &dyn age::Recipient))
                    .map_err(io::Error::other)?
            }
            Recipients::Passphrase(pass) => age::Encryptor::with_user_passphrase(pass.clone()),
        };
        encryptor.wrap_output(output)
    }
}

/// A stored stream being written: plain, or an age file.
pub enum Sealed<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealed<W> {
    /// Encrypts to `recipients` when given (the age header is written now).
    pub fn new(inner: W, recipients: Option<&Recipients>) -> io::Result<Sealed<W>> {
        Ok(match recipients {
            Some(r) => Sealed::Age(r.encrypt(inner)?),
            None => Sealed::Plain(inner),
        })
    }

    /// Ends the stream (an age file's last, flagged chunk) and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealed::Plain(w) => Ok(w),
            Sealed::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

/// The keys to decrypt with.
pub struct Identities {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Where they came from, for messages.
    shown: String,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("count", &self.identities.len())
            .field("from", &self.shown)
            .finish()
    }
}

impl Identities {
    /// The identities configured in the environment: [`IDENTITY_FILE_ENV`] and/or
    /// [`PASSPHRASE_FILE_ENV`]; `None` when neither is set.
    pub fn from_env() -> Result<Option<Identities>, KeyError> {
        let mut identities: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        let mut shown = Vec::new();
        if let Some(path) = env_path(IDENTITY_FILE_ENV) {
            identities.extend(Identities::from_file(&path)?.identities);
            shown.push(format!("{IDENTITY_FILE_ENV} file {}", path.display()));
        }
        if let Some(path) = env_path(PASSPHRASE_FILE_ENV) {
            let pass = passphrase_from(PASSPHRASE_FILE_ENV, &path)?;
            identities.push(Box::new(age::scrypt::Identity::new(pass)));
            shown.push(format!("{PASSPHRASE_FILE_ENV} file {}", path.display()));
        }
        if identities.is_empty() {
            return Ok(None);
        }
        Ok(Some(Identities {
            identities,
            shown: shown.join(" and "),
        }))
    }

    /// Reads an age identity file (`AGE-SECRET-KEY-1...` lines, `#` comments).
    pub fn from_file(path: &Path) -> Result<Identities, KeyError> {
        let text = read_key_file(IDENTITY_FILE_ENV, path)?;
        let bad = |reason: String| KeyError::BadIdentities {
            path: path.to_path_buf(),
            reason,
        };
        // The parser's messages may quote the offending line: only a neutral reason is kept.
        let file = age::IdentityFile::from_buffer(text.as_bytes())
            .map_err(|_| bad("a line is neither a comment nor an age secret key".into()))?;
        let identities = file
            .into_identities()
            .map_err(|_| bad("unsupported identity type".into()))?;
        if identities.is_empty() {
            return Err(bad("no identity in it".into()));
        }
        Ok(Identities {
            identities,
            shown: format!("{IDENTITY_FILE_ENV} file {}", path.display()),
        })
    }

    /// Decrypts an age stream; `shown` names the file in errors. Reading the result fails
    /// (io `InvalidData`) on a damaged chunk and (`UnexpectedEof`) on a truncation.
    pub fn decrypt<R: Read>(&self, input: R, shown: &str) -> io::Result<Decrypted<R>> {
        let decryptor = age::Decryptor::new(input).map_err(|e| header_error(e, shown))?;
        decryptor
            .decrypt(
                self.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map(|inner| Decrypted {
                inner,
                shown: shown.to_string(),
            })
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{shown}: none of the keys in {} can decrypt it (wrong identity?)",
                        self.shown
                    ),
                ),
                other => header_error(other, shown),
            })
    }
}

/// The plaintext of an age file being read; a damaged chunk or a truncation is an error
/// naming the file, of the kind age gives (`InvalidData`, `UnexpectedEof`).
pub struct Decrypted<R: Read> {
    inner: age::stream::StreamReader<R>,
    shown: String,
}

impl<R: Read> Read for Decrypted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::Interrupted => e,
            kind => io::Error::new(kind, format!("{}: {e}", self.shown)),
        })
    }
}

fn header_error(e: age::DecryptError, shown: &str) -> io::Error {
    match e {
        age::DecryptError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{shown}: truncated age header"),
        ),
        age::DecryptError::Io(e) => io::Error::new(e.kind(), format!("{shown}: {e}")),
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{shown}: not a valid age file ({other})"),
        ),
    }
}

/// Whether a stored key or file name is an encrypted file.
pub fn is_encrypted_name(name: &str) -> bool {
    name.ends_with(AGE_SUFFIX)
}

/// What an age header says without a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Encrypted with a passphrase (scrypt) rather than to public keys.
    pub passphrase: bool,
}

/// Checks that `input` starts with a well-formed age header, without a key. (X25519 stanzas
/// do not name their recipient, by design; which recipients a set was encrypted to is in its
/// manifest.)
pub fn check_header<R: Read>(input: R, shown: &str) -> io::Result<HeaderInfo> {
    let decryptor = age::Decryptor::new(input).map_err(|e| header_error(e, shown))?;
    Ok(HeaderInfo {
        passphrase: decryptor.is_scrypt(),
    })
}

/// Wraps a stored stream for reading: decrypted when `encrypted`, with `identities` (an
/// error naming `shown` and the variable to set when there are none), else as is.
pub fn reader<'a, R: Read + Send + 'a>(
    input: R,
    encrypted: bool,
    identities: Option<&Identities>,
    shown: &str,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    if !encrypted {
        return Ok(Box::new(input));
    }
    let identities = identities.ok_or_else(|| missing_identity(shown))?;
    Ok(Box::new(identities.decrypt(input, shown)?))
}

/// The error for an encrypted file met without a key.
pub fn missing_identity(shown: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{shown} is encrypted; set {IDENTITY_FILE_ENV} (or {PASSPHRASE_FILE_ENV}) to decrypt it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn round_trip(recipients: &Recipients, identities: &Identities, data: &[u8]) -> Vec<u8> {
        let mut w = recipients.encrypt(Vec::new()).unwrap();
        w.write_all(data).unwrap();
        let stored = w.finish().unwrap();
        let mut out = Vec::new();
        identities
            .decrypt(&stored[..], "f")
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn keypair() -> (Recipients, Identities, String) {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        let secret = id.to_string().expose_secret().to_string();
        let ids = Identities {
            identities: vec![Box::new(id)],
            shown: "test".into(),
        };
        (Recipients::parse(&public).unwrap(), ids, secret)
    }

    #[test]
    fn damage_and_truncation_are_errors() {
        let (r, ids, _) = keypair();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&r, &ids, &data), data);
        let mut w = r.encrypt(Vec::new()).unwrap();
        w.write_all(&data).unwrap();
        let stored = w.finish().unwrap();
        let read = |bytes: &[u8]| -> io::Result<Vec<u8>> {
            let mut out = Vec::new();
            ids.decrypt(bytes, "f")?.read_to_end(&mut out)?;
            Ok(out)
        };
        let mut flipped = stored.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(read(&flipped).is_err());
        // Cut at a chunk boundary (header + 64 KiB + tag): only the end marker tells.
        for cut in [stored.len() - 1, stored.len() - 30_000, 200] {
            assert!(read(&stored[..cut]).is_err(), "cut at {cut}");
        }
        assert!(check_header(&stored[..], "f").is_ok());
        assert!(check_header(&b"hello world"[..], "f").is_err());
    }

    #[test]
    fn wrong_key_is_named_and_key_never_shown() {
        let (r, _, _) = keypair();
        let (_, other, secret) = keypair();
        let mut w = r.encrypt(Vec::new()).unwrap();
        w.write_all(b"x").unwrap();
        let stored = w.finish().unwrap();
        let err = other.decrypt(&stored[..], "wal/X.zst.age").err().unwrap();
        let text = err.to_string();
        assert!(text.contains("wal/X.zst.age"), "{text}");
        assert!(!text.contains(&secret));
    }

    #[test]
    fn recipient_lists_parse() {
        let (a, _, _) = keypair();
        let (b, _, _) = keypair();
        let (a, b) = (
            a.describe().recipients[0].clone(),
            b.describe().recipients[0].clone(),
        );
        let two = parse_recipients(&format!(" {a} ,{b}"), false, "x").unwrap();
        assert_eq!(two.describe().recipients, vec![a.clone(), b.clone()]);
        let file = parse_recipients(&format!("# comment\n{a}\n\n{b}\n"), true, "x").unwrap();
        assert_eq!(file.describe().recipients.len(), 2);
        let bad = parse_recipients(&format!("{a},AGE-SECRET-KEY-1XYZ"), false, "x")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("entry 2") && !bad.contains("AGE-SECRET"),
            "{bad}"
        );
        assert!(parse_recipients("# only\n", true, "x").is_err());
    }

    #[test]
    fn identity_file_with_several_keys() {
        let (r, _, s1) = keypair();
        let (_, _, s2) = keypair();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        std::fs::write(&path, format!("# created: now\n{s2}\n{s1}\n")).unwrap();
        let ids = Identities::from_file(&path).unwrap();
        assert_eq!(round_trip(&r, &ids, b"rotated"), b"rotated");
        std::fs::write(&path, "not a key\n").unwrap();
        let err = Identities::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("keys.txt") && !err.contains("not a key"),
            "{err}"
        );
    }
}
