//! Where a repository is: `--backup-dir` / `BACKUP_DIR` as a local path or `s3://BUCKET[/PREFIX]`.

use std::path::PathBuf;
use std::str::FromStr;

/// A repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory (or a mounted volume).
    Local(PathBuf),
    /// A bucket and a key prefix (without leading or trailing `/`; empty for the bucket root).
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// How `key` under this location is shown in messages.
    pub fn join_display(&self, key: &str) -> String {
        match self {
            Location::Local(root) => {
                if key.is_empty() {
                    root.display().to_string()
                } else {
                    root.join(key).display().to_string()
                }
            }
            Location::S3 { .. } => {
                let base = self.to_string();
                if key.is_empty() {
                    base
                } else {
                    format!("{base}/{key}")
                }
            }
        }
    }

    /// The same location with a local path made absolute (for children started elsewhere,
    /// such as PostgreSQL's archive_command).
    pub fn absolute(&self) -> std::io::Result<Location> {
        match self {
            Location::Local(root) => Ok(Location::Local(std::path::absolute(root)?)),
            s3 => Ok(s3.clone()),
        }
    }

    /// The local directory, for a local location.
    pub fn local(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(root) => Some(root),
            Location::S3 { .. } => None,
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(root) => write!(f, "{}", root.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Why a repository location was refused.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("'{0}': an S3 location needs a bucket: s3://BUCKET[/PREFIX]")]
    NoBucket(String),
    #[error(
        "'{0}': '{1}' is not a valid S3 bucket name (3-63 lower-case letters, digits, '.', '-')"
    )]
    BadBucket(String, String),
    #[error("'{0}': the prefix may not contain '.' or '..' components or empty ones")]
    BadPrefix(String),
    #[error("'{0}': only s3:// URLs are supported as remote repositories")]
    Scheme(String),
    #[error("the backup directory is empty (set --backup-dir or BACKUP_DIR)")]
    Empty,
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Location, LocationError> {
        if s.is_empty() {
            return Err(LocationError::Empty);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        if !scheme.eq_ignore_ascii_case("s3") {
            return Err(LocationError::Scheme(s.to_string()));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::NoBucket(s.to_string()));
        }
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid_bucket {
            return Err(LocationError::BadBucket(s.to_string(), bucket.to_string()));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(LocationError::BadPrefix(s.to_string()));
        }
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_urls() {
        assert_eq!(
            "/backups".parse::<Location>().unwrap(),
            Location::Local("/backups".into())
        );
        assert_eq!(
            "s3://my-bucket/prod/pg/".parse::<Location>().unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "prod/pg".into()
            }
        );
        let root: Location = "s3://my-bucket".parse().unwrap();
        assert_eq!(root.to_string(), "s3://my-bucket");
        assert_eq!(root.join_display("wal/x"), "s3://my-bucket/wal/x");
        for bad in [
            "s3://",
            "s3:///x",
            "s3://UPPER/x",
            "s3://b/../x",
            "gs://b/x",
            "",
        ] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
    }
}
