//! Where the archived records come from: a backup set (with the incremental sets it continues,
//! oldest first) or one archive stream on stdin.
//!
//! A set's files are read through the repository's storage layer, streamed as they are
//! decoded (on S3, one GET per pass over a file; nothing is staged on local disk).
//!
//! Encrypted files (`.age`, and an age stream on stdin) are decrypted as they are read, with
//! the identities from the environment. Every file's key and header are checked when the
//! source is opened, before anything is produced; damage further in is found by age's
//! authenticated chunks (and, for a set, first by the manifest's checksums of the stored
//! bytes, see [`Source::checksum_problems`]).

use std::io::{self, BufReader, Read};

use anyhow::Context;
use common::encryption::{self, Identities};
use common::repo::{Kind, Repository, SetInfo};
use common::topic_archive::{ArchiveReader, KafkaSetDetails, RecordsChunk, TopicCut, TopicMeta};

type Reader = ArchiveReader<Box<dyn Read>>;

/// The first bytes of an age file (its header's version line).
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

/// One archive file of a set.
#[derive(Debug, Clone)]
struct Part {
    set: SetInfo,
    /// The file's path in the set.
    file: String,
    /// Where the file is, for messages: a path or an s3:// URL.
    shown: String,
    /// Size and SHA-256 the manifest lists for the file.
    expected: Option<common::FileEntry>,
}

impl Part {
    fn is_encrypted(&self) -> bool {
        encryption::is_encrypted_name(&self.file)
    }
}

/// The archive(s) a replay reads.
pub struct Source {
    /// The repository the parts are in (none for stdin).
    repo: Option<Repository>,
    /// The keys encrypted parts are read with.
    identities: Option<Identities>,
    parts: Vec<Part>,
    stdin: Option<Reader>,
    meta: TopicMeta,
    /// For reports: `stdin` or the set ids, oldest first.
    pub description: String,
    pub set_ids: Vec<String>,
}

impl Source {
    /// The newest complete set holding `topic` (or set `id`), preceded by the sets its
    /// incremental export continues unless `only_set`. The sets are chosen from the cut each
    /// manifest keeps in clear; then every file is opened (with `identities` when encrypted)
    /// and its META checked.
    pub fn from_repo(
        repo: &Repository,
        id: Option<&str>,
        topic: &str,
        only_set: bool,
        identities: Option<Identities>,
    ) -> anyhow::Result<Source> {
        let sets = repo.complete_sets(Kind::Kafka)?;
        let chosen = choose_set(repo, &sets, id, topic)?;
        let parts = chain(repo, &sets, chosen, topic, only_set)?;
        let meta = open_all(repo, &parts, topic, identities.as_ref())?;
        let set_ids: Vec<String> = parts.iter().map(|p| p.set.id.clone()).collect();
        Ok(Source {
            description: format!("set {}", set_ids.join(" + ")),
            repo: Some(repo.clone()),
            identities,
            parts,
            stdin: None,
            meta,
            set_ids,
        })
    }

    /// The archive stream on stdin (written by `kafka-topic-backup --stdout`): decrypted with
    /// `identities` when it is an age stream. A pipe is read once, so its key, header and
    /// META are checked here but damage further in is found as the records are produced
    /// (the replay stops there, exit 2; re-running it resumes), as for a plain stream.
    pub fn stdin(identities: Option<Identities>) -> anyhow::Result<Source> {
        let mut stdin = BufReader::with_capacity(1 << 20, std::io::stdin());
        let mut head = vec![0u8; AGE_MAGIC.len()];
        let got = read_up_to(&mut stdin, &mut head).context("cannot read stdin")?;
        head.truncate(got);
        let encrypted = head == AGE_MAGIC;
        let input = io::Cursor::new(head).chain(stdin);
        let input = decrypted(input, encrypted, identities.as_ref(), "stdin")?;
        let reader = ArchiveReader::open(input).context("cannot read the archive on stdin")?;
        if encrypted {
            tracing::info!("stdin is an age stream, decrypted");
        }
        Ok(Source {
            repo: None,
            identities,
            parts: Vec::new(),
            meta: reader.meta().clone(),
            stdin: Some(reader),
            description: "stdin".to_string(),
            set_ids: Vec::new(),
        })
    }

    /// The topic description of the newest archive.
    pub fn meta(&self) -> &TopicMeta {
        &self.meta
    }

    /// Compares every archive file with the size and SHA-256 its manifest lists: a quick
    /// whole-file check (the files are compressed) that finds damage before anything is
    /// produced. Returns the problems found; reading the records names the damaged chunk.
    pub fn checksum_problems(&self) -> Vec<String> {
        let Some(repo) = &self.repo else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for part in &self.parts {
            let Some(expected) = &part.expected else {
                problems.push(format!("{}: not listed in its manifest", part.shown));
                continue;
            };
            let sum = repo
                .open_file(&part.set, &part.file)
                .and_then(|r| common::stream::HashingReader::new(r).finish());
            match sum {
                Ok(sum) if sum.size == expected.size && sum.sha256 == expected.sha256 => {}
                Ok(_) => problems.push(format!(
                    "{}: size or SHA-256 differs from the manifest of set {}",
                    part.shown, part.set.id
                )),
                Err(e) => problems.push(format!("{}: {e}", part.shown)),
            }
        }
        problems
    }

    /// True when the records can be read more than once (files, not a pipe).
    pub fn rereadable(&self) -> bool {
        self.stdin.is_none()
    }

    /// Reads every RECORDS chunk in order, checking every checksum on the way. A stdin source
    /// can be read once.
    pub fn pass(
        &mut self,
        visit: &mut dyn FnMut(RecordsChunk) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if let Some(mut reader) = self.stdin.take() {
            while let Some(chunk) = reader
                .next_records()
                .context("cannot read the archive on stdin")?
            {
                visit(chunk)?;
            }
            return Ok(());
        }
        let Some(repo) = self.repo.as_ref().filter(|_| !self.parts.is_empty()) else {
            anyhow::bail!("the archive on stdin can be read only once");
        };
        for part in &self.parts {
            let mut reader = open_file(repo, part, self.identities.as_ref())?;
            if reader.meta().topic != self.meta.topic {
                anyhow::bail!(
                    "{} holds topic '{}', not '{}'",
                    part.shown,
                    reader.meta().topic,
                    self.meta.topic
                );
            }
            while let Some(chunk) = reader
                .next_records()
                .with_context(|| format!("archive {} is damaged", part.shown))?
            {
                visit(chunk)?;
            }
        }
        Ok(())
    }
}

/// The topic cuts a set's manifest keeps in clear; `None` when it has no readable ones.
fn cuts(set: &SetInfo) -> Option<Vec<TopicCut>> {
    serde_json::from_value::<KafkaSetDetails>(set.manifest()?.details.clone())
        .ok()
        .map(|d| d.cuts())
}

fn cut_of(cuts: &[TopicCut], topic: &str) -> Option<TopicCut> {
    cuts.iter().find(|c| c.topic == topic).cloned()
}

/// Set `id`, or else the newest complete set holding `topic`.
fn choose_set(
    repo: &Repository,
    sets: &[SetInfo],
    id: Option<&str>,
    topic: &str,
) -> anyhow::Result<SetInfo> {
    if let Some(id) = id {
        let (set, _) = repo.find(Kind::Kafka, Some(id))?;
        return Ok(set);
    }
    sets.iter()
        .rev()
        .find(|s| cuts(s).is_some_and(|c| cut_of(&c, topic).is_some()))
        .cloned()
        .with_context(|| {
            format!(
                "no complete kafka backup set in {} holds topic '{topic}'; take one with kafka-topic-backup first",
                repo.describe(Kind::Kafka.name())
            )
        })
}

/// The parts to read, oldest first: `chosen`'s, preceded (unless `only_set`) by those of
/// the sets its incremental export continues.
fn chain(
    repo: &Repository,
    sets: &[SetInfo],
    chosen: SetInfo,
    topic: &str,
    only_set: bool,
) -> anyhow::Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut current = chosen;
    loop {
        let (part, previous) = part_of(repo, current, topic)?;
        let Some(previous) = previous.filter(|_| !only_set) else {
            parts.push(part);
            break;
        };
        current = sets.iter().find(|s| s.id == previous).cloned().with_context(|| {
            format!(
                "set {} continues set {previous}, which is missing or incomplete; replay with --only-set to replay {} alone",
                part.set.id, part.set.id
            )
        })?;
        parts.push(part);
    }
    parts.reverse();
    Ok(parts)
}

/// The part of `set` that holds `topic`, and the set its export continues, if any.
fn part_of(repo: &Repository, set: SetInfo, topic: &str) -> anyhow::Result<(Part, Option<String>)> {
    let set_cuts =
        cuts(&set).with_context(|| format!("set {} has no readable kafka details", set.id))?;
    let set_topic = cut_of(&set_cuts, topic).with_context(|| {
        format!(
            "backup set {} does not hold topic '{topic}' (it holds: {})",
            set.id,
            set_cuts
                .iter()
                .map(|t| t.topic.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    // A name from the manifest: a file of the set, nothing outside it (a topic may
    // start with '.', so its file may too).
    if set_topic.file.contains(['/', '\\', '\0'])
        || matches!(set_topic.file.as_str(), "" | "." | "..")
    {
        anyhow::bail!(
            "set {} lists '{}' as the archive of topic '{topic}', which is not a file name",
            set.id,
            set_topic.file
        );
    }
    let part = Part {
        shown: repo.describe(&set.key(&set_topic.file)),
        expected: set
            .manifest()
            .and_then(|m| m.file(&set_topic.file))
            .cloned(),
        file: set_topic.file,
        set,
    };
    Ok((part, set_topic.incremental_from))
}

/// Opens every part (the key fits, the header and META read) before anything else, so a
/// chain mixing plain and encrypted sets, or keys, fails here rather than midway: the META
/// of the newest.
fn open_all(
    repo: &Repository,
    parts: &[Part],
    topic: &str,
    identities: Option<&Identities>,
) -> anyhow::Result<TopicMeta> {
    let mut meta = None;
    for part in parts {
        let opened = open_file(repo, part, identities)?.meta().clone();
        if opened.topic != topic {
            anyhow::bail!(
                "{} holds topic '{}', not '{topic}'",
                part.shown,
                opened.topic
            );
        }
        meta = Some(opened);
    }
    Ok(meta.expect("at least the chosen set"))
}

fn open_file(
    repo: &Repository,
    part: &Part,
    identities: Option<&Identities>,
) -> anyhow::Result<Reader> {
    let file = repo
        .open_file(&part.set, &part.file)
        .with_context(|| format!("cannot open {} of set {}", part.shown, part.set.id))?;
    // Buffered already: a local file in 1 MiB reads, an S3 body in the chunks it arrives in.
    let input = decrypted(file, part.is_encrypted(), identities, &part.shown)?;
    ArchiveReader::open(input).with_context(|| format!("archive {} is damaged", part.shown))
}

/// `input` as is, or decrypted when `encrypted`: the header is read and the key checked now
/// (errors name `shown`: no identity, none that fits, not an age header).
fn decrypted<'a, R: Read + Send + 'a>(
    input: R,
    encrypted: bool,
    identities: Option<&Identities>,
    shown: &str,
) -> anyhow::Result<Box<dyn Read + 'a>> {
    let plain = encryption::reader(input, encrypted, identities, shown)?;
    Ok(if encrypted {
        Box::new(Authenticated(plain))
    } else {
        plain
    })
}

/// A decrypting reader whose failures say what they mean: an age chunk that does not
/// authenticate is damage or tampering, not a wrong key (that fails at the header).
struct Authenticated<R>(R);

impl<R: Read> Read for Authenticated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "encrypted data fails authentication: damaged, modified or truncated ({e})"
                ),
            ),
            _ => e,
        })
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
