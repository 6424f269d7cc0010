//! Runs `pg_basebackup` and streams its tarball into the set: one pass that compresses on
//! every core, checksums, and walks the tar headers to pick out PostgreSQL's `backup_manifest`
//! (injected into the stream when writing to stdout) and count the files.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStderr, Command, Stdio};

use anyhow::Context;
use common::lsn::Lsn;
use common::manifest::FileEntry;
use common::physical::{WalMethod, BASE_TAR, PG_BACKUP_MANIFEST};
use common::repo::{SetFile, SetWriter};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::Args;

/// The WAL range the backup needs, from PostgreSQL's backup manifest.
#[derive(Debug, Clone, Copy)]
pub struct WalRange {
    pub timeline: u32,
    pub start: Lsn,
    pub stop: Lsn,
}

/// What came out of one pg_basebackup run.
#[derive(Debug)]
pub struct Captured {
    pub tar_entry: FileEntry,
    pub pg_manifest: String,
    pub range: WalRange,
    pub file_count: u64,
    pub finished_at: OffsetDateTime,
}

#[derive(Deserialize)]
struct PgManifest {
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<PgWalRange>,
}

#[derive(Deserialize)]
struct PgWalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

/// Copies everything read into the set file, counting for the progress bar.
struct Tee<'a, R> {
    inner: R,
    sink: &'a mut SetFile,
    progress: &'a indicatif::ProgressBar,
    /// Why writing into the set failed: the cause to report, not pg_basebackup's SIGPIPE
    /// that follows when we stop reading.
    sink_error: &'a mut Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.sink.write_all(&buf[..n]) {
            let shown = io::Error::new(e.kind(), e.to_string());
            *self.sink_error = Some(e);
            return Err(shown);
        }
        self.progress.inc(n as u64);
        Ok(n)
    }
}

fn spawn(args: &Args, wal_method: WalMethod) -> anyhow::Result<Child> {
    let program = common::pgbin::program("pg_basebackup");
    let mut cmd = Command::new(&program);
    cmd.args(["-D", "-", "-F", "t", "-w", "--manifest-checksums=CRC32C"])
        .arg(match wal_method {
            WalMethod::Fetch => "--wal-method=fetch",
            WalMethod::Archive => "--wal-method=none",
        })
        .arg(format!("--checkpoint={}", args.checkpoint))
        .arg(format!("--label={}", args.label))
        .envs(args.pg.libpq_env())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .with_context(|| common::pgbin::missing_hint(&program.display().to_string()))
}

pub fn run_pg_basebackup(
    args: &Args,
    set: &SetWriter,
    wal_method: WalMethod,
    threads: u32,
    expected_bytes: u64,
) -> anyhow::Result<Captured> {
    let name = format!("{BASE_TAR}{}", args.compress.extension());
    let mut file = set.create_file(&name, args.compress, args.compress_level, threads)?;
    let mut child = spawn(args, wal_method)?;
    // Interrupted, we stop pg_basebackup (its backup ends on the server) before exiting.
    let stop_child = common::interrupt::kill_on_interrupt(child.id());
    let stderr_tail = stderr_tail(child.stderr.take().expect("piped stderr"));
    let progress = common::progress::bytes(&args.global, Some(expected_bytes), "base backup");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut sink_error = None;
    let walked = walk_tar(Tee {
        inner: BufReader::with_capacity(1 << 20, stdout),
        sink: &mut file,
        progress: &progress,
        sink_error: &mut sink_error,
    });
    // Its stream has ended (or our end of the pipe is closed): it is exiting, and from here
    // its pid may be reaped.
    drop(stop_child);
    let status = child.wait().context("waiting for pg_basebackup")?;
    progress.finish_and_clear();
    let tail = stderr_tail.join().unwrap_or_default();
    if let Some(error) = sink_error {
        anyhow::bail!(
            "cannot write {} (pg_basebackup was stopped): {error}",
            set.store()
                .describe(&common::storage::join(set.prefix(), &name))
        );
    }
    if !status.success() {
        // Its error line names the cause; the last line is often the end of libpq's hint.
        let message = common::pgbin::error_message(&tail.join("\n"))
            .or_else(|| tail.last().cloned())
            .unwrap_or_else(|| "no message".into());
        anyhow::bail!("pg_basebackup failed ({status}): {message}");
    }
    let (pg_manifest, file_count) = walked.context("reading pg_basebackup's tar stream")?;
    let finished_at = common::timefmt::now();
    let pg_manifest = pg_manifest.with_context(|| {
        format!("pg_basebackup's stream has no {PG_BACKUP_MANIFEST} (was --no-manifest set?)")
    })?;
    let range = wal_range(&pg_manifest)?;
    let tar_entry = file.finish().context("writing the tarball")?;
    Ok(Captured {
        tar_entry,
        pg_manifest,
        range,
        file_count,
        finished_at,
    })
}

/// Logs pg_basebackup's stderr at debug level from a thread of its own, keeping its last 20
/// lines for the error message.
fn stderr_tail(stderr: ChildStderr) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut tail: Vec<String> = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            tracing::debug!("pg_basebackup: {line}");
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        tail
    })
}

/// The WAL the backup needs, from PostgreSQL's backup manifest: from the first range's start
/// to the last range's end, on the last range's timeline.
fn wal_range(pg_manifest: &str) -> anyhow::Result<WalRange> {
    let parsed: PgManifest = serde_json::from_str(pg_manifest)
        .with_context(|| format!("cannot parse PostgreSQL's {PG_BACKUP_MANIFEST}"))?;
    let (Some(first), Some(last)) = (parsed.wal_ranges.first(), parsed.wal_ranges.last()) else {
        anyhow::bail!("{PG_BACKUP_MANIFEST} lists no WAL range");
    };
    let lsn = |text: &str| {
        text.parse::<Lsn>()
            .with_context(|| format!("{PG_BACKUP_MANIFEST} has a bad WAL range"))
    };
    Ok(WalRange {
        timeline: last.timeline,
        start: lsn(&first.start)?,
        stop: lsn(&last.end)?,
    })
}

/// Walks the tar stream to its end, returning the backup manifest's text and the number of
/// regular files; everything read passes through the tee into the set.
fn walk_tar<R: Read>(reader: R) -> anyhow::Result<(Option<String>, u64)> {
    let mut archive = tar::Archive::new(reader);
    let mut manifest = None;
    let mut files = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            files += 1;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") == PG_BACKUP_MANIFEST {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            manifest = Some(text);
        }
    }
    // The end-of-archive blocks and padding after them belong to the file too.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok((manifest, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg_manifest(ranges: &str) -> String {
        format!(
            r#"{{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [], "WAL-Ranges": [{ranges}]}}"#
        )
    }

    #[test]
    fn wal_range_spans_the_manifest_ranges() {
        let one =
            pg_manifest(r#"{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}"#);
        let range = wal_range(&one).unwrap();
        assert_eq!(
            (range.timeline, range.start, range.stop),
            (1, Lsn(0x200_0028), Lsn(0x200_0100))
        );
        // A backup taken across a promotion lists a range per timeline.
        let two = pg_manifest(concat!(
            r#"{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000"},"#,
            r#"{"Timeline": 2, "Start-LSN": "0/3000000", "End-LSN": "1/10"}"#
        ));
        let range = wal_range(&two).unwrap();
        assert_eq!(
            (range.timeline, range.start, range.stop),
            (2, Lsn(0x200_0028), Lsn(0x1_0000_0010))
        );
    }

    #[test]
    fn wal_range_names_what_is_wrong() {
        let none = wal_range(&pg_manifest("")).unwrap_err();
        assert_eq!(none.to_string(), "backup_manifest lists no WAL range");
        let bad = pg_manifest(r#"{"Timeline": 1, "Start-LSN": "nonsense", "End-LSN": "0/1"}"#);
        let err = format!("{:#}", wal_range(&bad).unwrap_err());
        assert!(
            err.contains("bad WAL range") && err.contains("'nonsense'"),
            "{err}"
        );
        let err = format!("{:#}", wal_range("{").unwrap_err());
        assert!(
            err.starts_with("cannot parse PostgreSQL's backup_manifest"),
            "{err}"
        );
    }

    /// Counts what is read through it: the walk must consume the whole stream.
    struct Counting<R> {
        inner: R,
        read: usize,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_dir("./base", ".").unwrap();
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        let mut bytes = builder.into_inner().unwrap();
        // pg_basebackup's stream may carry padding past the end-of-archive blocks.
        bytes.extend_from_slice(&[0; 4096]);
        bytes
    }

    #[test]
    fn walk_tar_finds_the_manifest_counts_files_and_reads_to_the_end() {
        let bytes = tarball(&[
            ("base/1/1259", b"heap"),
            ("./backup_manifest", b"{\"manifest\": true}"),
            ("global/pg_control", b"control"),
        ]);
        let mut reader = Counting {
            inner: &bytes[..],
            read: 0,
        };
        let (manifest, files) = walk_tar(&mut reader).unwrap();
        assert_eq!(manifest.as_deref(), Some("{\"manifest\": true}"));
        assert_eq!(files, 3, "regular files only, not the directory");
        assert_eq!(reader.read, bytes.len());
    }

    #[test]
    fn walk_tar_without_a_manifest_says_so() {
        let (manifest, files) = walk_tar(&tarball(&[("base/1/1259", b"heap")])[..]).unwrap();
        assert_eq!((manifest, files), (None, 1));
    }
}
