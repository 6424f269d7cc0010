//! Hostile input, one case per trial:
//!
//! - `hostile:tarball`: a base set whose tarball (compressed as the repository stores it, its
//!   manifest checksums matching, so only the content is hostile) starts with a member that
//!   escapes the target: `../escape`, an absolute path, a symlink pointing outside followed
//!   by a file written through it, a hard link to a file outside followed by a write to it.
//!   `pitr-restore` must refuse, and nothing may change outside the target.
//! - `hostile:names`: set ids and topic names that try path traversal (a decoy copy of a real
//!   set waits where the traversal leads): refused with exit 2, nothing read or written
//!   outside the repository.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use anyhow::Context as _;
use common::repo::Kind;
use sha2::{Digest, Sha256};
use test_support::os_user::{db_tempdir, give_to_db_user};
use test_support::pg::PgOptions;

use super::sources::{self, Cluster, SlotCluster, APP_DB};
use super::{entry, Entry, Scenario};
use crate::context::{Backend, Ctx, Repo, Tier};
use crate::process;

/// The tarball cases.
const TAR_CASES: [&str; 4] = ["dotdot", "absolute", "symlink", "hardlink"];
/// The name cases.
const NAME_CASES: [&str; 7] = [
    "pitr-restore --backup-id",
    "pg-logical-backup restore --backup-id",
    "kafka-replay --backup-id",
    "kafka-replay --topic",
    "kafka-topic-backup --topic",
    "cdc-slot-tool restore --backup-id",
    "wal-archive fetch",
];

pub fn entries() -> Vec<Entry> {
    vec![
        entry(
            "hostile:tarball".into(),
            "base tarball members escaping the target (.., absolute, symlink, hard link): refused, nothing outside",
            |_: Tier| TAR_CASES.len(),
            Box::new(|ctx| Ok(Box::new(Tarball::new(ctx)?) as Box<dyn Scenario>)),
        ),
        entry(
            "hostile:names".into(),
            "set ids and topic names with path traversal: refused, nothing outside the repository",
            |_: Tier| NAME_CASES.len(),
            Box::new(|ctx| Ok(Box::new(Names::new(ctx)?) as Box<dyn Scenario>)),
        ),
    ]
}

/// Every file under `root` with a digest of its content (symlinks by their target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(path.clone());
                found.insert(path, "dir".into());
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap_or_default();
                found.insert(path, format!("-> {}", target.display()));
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                found.insert(path, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }
    found
}

/// What changed under `root` outside the `allowed` directories between two snapshots.
fn changes_outside(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
    allowed: &[&Path],
) -> Vec<String> {
    let inside = |p: &Path| allowed.iter().any(|a| p.starts_with(a));
    let mut changed = Vec::new();
    for (path, digest) in after {
        if inside(path) {
            continue;
        }
        match before.get(path) {
            None => changed.push(format!("new {}", path.display())),
            Some(old) if old != digest => changed.push(format!("changed {}", path.display())),
            _ => {}
        }
    }
    for path in before.keys() {
        if !inside(path) && !after.contains_key(path) {
            changed.push(format!("removed {}", path.display()));
        }
    }
    changed
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else if e.file_type()?.is_file() {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// A base set in a local repository whose tarball members the trials rewrite.
struct Tarball {
    pristine: Repo,
    set_id: String,
    tar_file: String,
    /// The original tarball's members: header and data.
    members: Vec<(tar::Header, Vec<u8>)>,
    /// Trials walk through [`TAR_CASES`] in order.
    case: usize,
}

impl Tarball {
    fn new(ctx: &Ctx) -> anyhow::Result<Tarball> {
        let source = ctx.shared("cluster:base", || Cluster::with_app(PgOptions::default()))?;
        let pristine = ctx.fresh_repo(Backend::Local, "hostile-tar")?;
        let mut cmd = ctx.tool("pg-base-backup");
        cmd.envs(source.pg.env())
            .args(["--backup-dir", &pristine.url, "--compress", "gzip"]);
        process::run_ok(&mut cmd, "pg-base-backup")?;
        let set = pristine
            .complete_sets(Kind::Base)?
            .pop()
            .context("no base set was written")?;
        let manifest = set.manifest().context("a complete set has no manifest")?;
        let tar_file = manifest
            .files
            .iter()
            .find(|f| f.path.starts_with("base.tar"))
            .context("the set has no base.tar")?
            .path
            .clone();
        anyhow::ensure!(
            tar_file == "base.tar.gz",
            "expected a gzip tarball, got {tar_file}"
        );
        let dir = Path::new(&pristine.url).join("base").join(&set.id);
        let gz = std::fs::File::open(dir.join(&tar_file))?;
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(gz));
        let mut members = Vec::new();
        for member in archive.entries()? {
            let mut member = member?;
            let header = member.header().clone();
            let mut data = Vec::new();
            member.read_to_end(&mut data)?;
            members.push((header, data));
        }
        Ok(Tarball {
            set_id: set.id.clone(),
            pristine,
            tar_file,
            members,
            case: 0,
        })
    }
}

/// A tar header with a name written as given (no validation: that is the point).
fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(1_700_000_000);
    let bytes = name.as_bytes();
    header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    if let Some(link) = link {
        header
            .set_link_name_literal(link.as_bytes())
            .expect("a short link name");
    }
    header.set_cksum();
    header
}

impl Tarball {
    /// Writes the hostile tarball for `case` into the set of `repo` and updates the
    /// manifest's size and SHA-256 for it.
    fn plant(&self, case: &str, repo: &Path, outside: &Path) -> anyhow::Result<()> {
        let set_dir = repo.join("base").join(&self.set_id);
        let path = set_dir.join(&self.tar_file);
        let hostile = hostile_members(case, outside)?;
        self.write_tarball(&path, hostile)?;
        let stored = std::fs::read(&path)?;
        self.record_in_manifest(&set_dir, &stored)
    }

    /// Writes `hostile` first, then the pristine members, as the gzip tarball at `path`.
    fn write_tarball(&self, path: &Path, hostile: Vec<(tar::Header, &[u8])>) -> anyhow::Result<()> {
        let out = std::fs::File::create(path)?;
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::fast(),
        ));
        for (header, bytes) in hostile {
            builder.append(&header, bytes)?;
        }
        for (header, bytes) in &self.members {
            builder.append(header, bytes.as_slice())?;
        }
        builder.into_inner()?.finish()?.sync_all()?;
        Ok(())
    }

    /// Gives the tarball's manifest entry the size and SHA-256 of `stored`, so only the
    /// content is hostile.
    fn record_in_manifest(&self, set_dir: &Path, stored: &[u8]) -> anyhow::Result<()> {
        let manifest_path = set_dir.join(common::manifest::MANIFEST_FILE);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
        for file in manifest["files"].as_array_mut().context("manifest files")? {
            if file["path"] == self.tar_file.as_str() {
                file["size"] = stored.len().into();
                file["sha256"] = hex::encode(Sha256::digest(stored)).into();
                if let Some(obj) = file.as_object_mut() {
                    obj.remove("raw_size");
                }
            }
        }
        std::fs::File::create(&manifest_path)?
            .write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
        Ok(())
    }
}

/// The members that open the tarball of `case`, each trying to escape to `outside`.
fn hostile_members(
    case: &str,
    outside: &Path,
) -> anyhow::Result<Vec<(tar::Header, &'static [u8])>> {
    let data: &'static [u8] = b"written by a hostile tarball\n";
    let outside_s = outside.display().to_string();
    Ok(match case {
        "dotdot" => vec![(
            raw_header(
                "../escape",
                tar::EntryType::Regular,
                data.len() as u64,
                None,
            ),
            data,
        )],
        "absolute" => vec![(
            raw_header(
                &format!("{outside_s}/absolute"),
                tar::EntryType::Regular,
                data.len() as u64,
                None,
            ),
            data,
        )],
        "symlink" => vec![
            (
                raw_header("pg_escape", tar::EntryType::Symlink, 0, Some(&outside_s)),
                b"",
            ),
            (
                raw_header(
                    "pg_escape/through-link",
                    tar::EntryType::Regular,
                    data.len() as u64,
                    None,
                ),
                data,
            ),
        ],
        "hardlink" => vec![
            (
                raw_header(
                    "pg_hard",
                    tar::EntryType::Link,
                    0,
                    Some(&format!("{outside_s}/victim")),
                ),
                b"",
            ),
            (
                raw_header("pg_hard", tar::EntryType::Regular, data.len() as u64, None),
                data,
            ),
        ],
        other => anyhow::bail!("unknown case {other}"),
    })
}

impl Scenario for Tarball {
    fn trial(&mut self, ctx: &Ctx, _rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let case = TAR_CASES[self.case % TAR_CASES.len()];
        self.case += 1;
        let root = db_tempdir("fc-hostile-");
        let repo = root.path().join("repo");
        let outside = root.path().join("outside");
        let target = root.path().join("target");
        copy_tree(Path::new(&self.pristine.url), &repo)?;
        std::fs::create_dir_all(&outside)?;
        std::fs::write(outside.join("victim"), b"the original content\n")?;
        self.plant(case, &repo, &outside)?;
        give_to_db_user(root.path());
        let before = snapshot(root.path());
        let mut cmd = ctx.tool("pitr-restore");
        cmd.args(["--backup-dir"])
            .arg(&repo)
            .args(["--target", "immediate", "--pgdata"])
            .arg(target.join("pgdata"))
            .args(["--yes", "--output", "json"]);
        let ended = process::run(&mut cmd, "pitr-restore")?;
        let after = snapshot(root.path());
        let changed = changes_outside(&before, &after, &[&target]);
        // Also outside the whole trial directory: the parent of the root.
        let escaped = root
            .path()
            .parent()
            .map(|p| p.join("escape"))
            .filter(|p| p.exists());
        anyhow::ensure!(
            changed.is_empty() && escaped.is_none(),
            "{case}: written outside the target: {:?} {:?} (exit {})",
            changed,
            escaped,
            ended.run.code
        );
        anyhow::ensure!(
            ended.run.code == 2,
            "{case}: pitr-restore did not refuse the hostile member: exit {} ({})",
            ended.run.code,
            process::last_lines(&ended.run.stderr, 2)
        );
        Ok(format!(
            "{case}: refused (\"{}\"), nothing outside the target",
            process::last_lines(&ended.run.stderr, 1)
        ))
    }
}

/// A local repository holding one set of every kind, copied per trial next to decoys.
struct Names {
    pristine: Repo,
    topic: Rc<sources::Topic>,
    logical: Rc<Cluster>,
    slots: Rc<SlotCluster>,
    case: usize,
}

impl Names {
    fn new(ctx: &Ctx) -> anyhow::Result<Names> {
        let base = ctx.shared("cluster:base", || Cluster::with_app(PgOptions::default()))?;
        let logical = ctx.shared(
            "cluster:logical",
            || Cluster::with_app(PgOptions::default()),
        )?;
        let slots = ctx.shared("cluster:slots", SlotCluster::new)?;
        let topic = ctx.shared("topic:source", || sources::Topic::new("fc_source", 1000))?;
        let pristine = ctx.fresh_repo(Backend::Local, "hostile-names")?;
        let url = pristine.url.clone();
        let runs: Vec<(&str, Command)> = vec![
            ("pg-base-backup", {
                let mut c = ctx.tool("pg-base-backup");
                c.envs(base.pg.env()).args(["--backup-dir", &url]);
                c
            }),
            ("pg-logical-backup", {
                let mut c = ctx.tool("pg-logical-backup");
                c.envs(logical.pg.env())
                    .args(["backup", "--backup-dir", &url, "--dbname", APP_DB]);
                c
            }),
            ("kafka-topic-backup", {
                let mut c = ctx.tool("kafka-topic-backup");
                c.args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", &url])
                    .args(["--topic", &topic.name]);
                c
            }),
            ("cdc-slot-tool", {
                let mut c = ctx.tool("cdc-slot-tool");
                c.envs(slots.pg.env())
                    .args(["backup", "--backup-dir", &url]);
                c
            }),
        ];
        for (what, mut cmd) in runs {
            process::run_ok(&mut cmd, what)?;
        }
        Ok(Names {
            pristine,
            topic,
            logical,
            slots,
            case: 0,
        })
    }
}

impl Scenario for Names {
    fn trial(&mut self, ctx: &Ctx, _rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let case = NAME_CASES[self.case % NAME_CASES.len()];
        self.case += 1;
        let root = db_tempdir("fc-names-");
        let repo = root.path().join("repo");
        copy_tree(Path::new(&self.pristine.url), &repo)?;
        // Decoys where `<kind>/../../decoy` leads: a copy of a real set of that kind.
        for kind in [Kind::Base, Kind::Logical, Kind::Kafka, Kind::Slots] {
            let set = std::fs::read_dir(repo.join(kind.name()))?
                .filter_map(Result::ok)
                .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .context("a set to copy")?;
            copy_tree(
                &set.path(),
                &root.path().join(format!("decoy-{}", kind.name())),
            )?;
        }
        // An (empty) WAL archive, so that a fetch reaches the name check.
        std::fs::create_dir_all(repo.join("wal"))?;
        let target = root.path().join("target");
        std::fs::create_dir_all(&target)?;
        give_to_db_user(root.path());
        let before = snapshot(root.path());
        let url = repo.display().to_string();
        let scratch_topic = test_support::unique_name("fc_hostile");
        let mut cmd = self.command(ctx, case, &url, &target, &scratch_topic);
        let ended = process::run(&mut cmd, case)?;
        let after = snapshot(root.path());
        let changed = changes_outside(&before, &after, &[&repo]);
        let created_topic = crate::topic::read(&scratch_topic).is_ok();
        crate::topic::delete(&[scratch_topic]);
        let db_created = crate::sql::query(
            &self.logical.pg,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'fc_hostile_target'",
        )? != "0";
        let _ = crate::sql::drop_database(&self.logical.pg, "fc_hostile_target");
        anyhow::ensure!(
            changed.is_empty() && !created_topic && !db_created,
            "{case}: wrote where it should not (exit {}): files {changed:?}, target topic created: {created_topic}, target database created: {db_created}",
            ended.run.code
        );
        // wal-archive fetch answers PostgreSQL: 1 (not there) is a refusal too.
        let refused = ended.run.code == 2 || (case == "wal-archive fetch" && ended.run.code == 1);
        anyhow::ensure!(
            refused,
            "{case}: not refused: exit {} ({})",
            ended.run.code,
            process::last_lines(&ended.run.stderr, 2)
        );
        Ok(format!(
            "{case}: refused (\"{}\")",
            process::last_lines(&ended.run.stderr, 1)
        ))
    }
}

impl Names {
    fn command(&self, ctx: &Ctx, case: &str, url: &str, target: &Path, topic: &str) -> Command {
        let traversal = |kind: Kind| format!("../../decoy-{}", kind.name());
        match case {
            "pitr-restore --backup-id" => {
                let mut c = ctx.tool("pitr-restore");
                c.args(["--backup-dir", url, "--backup-id", &traversal(Kind::Base)])
                    .args(["--target", "immediate", "--yes", "--pgdata"])
                    .arg(target.join("pgdata"));
                c
            }
            "pg-logical-backup restore --backup-id" => {
                let mut c = ctx.tool("pg-logical-backup");
                c.envs(self.logical.pg.env())
                    .args([
                        "restore",
                        "--backup-dir",
                        url,
                        "--backup-id",
                        &traversal(Kind::Logical),
                    ])
                    .args(["--target-db", "fc_hostile_target", "--yes"]);
                c
            }
            "kafka-replay --backup-id" => {
                let mut c = ctx.tool("kafka-replay");
                c.args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", url])
                    .args([
                        "--backup-id",
                        &traversal(Kind::Kafka),
                        "--topic",
                        &self.topic.name,
                    ])
                    .args(["--target-topic", topic]);
                c
            }
            "kafka-replay --topic" => {
                let mut c = ctx.tool("kafka-replay");
                c.args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", url])
                    .args(["--topic", &format!("../../decoy-kafka/{}", self.topic.name)])
                    .args(["--target-topic", topic]);
                c
            }
            "kafka-topic-backup --topic" => {
                let mut c = ctx.tool("kafka-topic-backup");
                c.args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", url])
                    .args(["--topic", "../../../escape"]);
                c
            }
            "cdc-slot-tool restore --backup-id" => {
                let mut c = ctx.tool("cdc-slot-tool");
                c.envs(self.slots.pg.env())
                    .args([
                        "restore",
                        "--backup-dir",
                        url,
                        "--backup-id",
                        &traversal(Kind::Slots),
                    ])
                    .args(["--dry-run"]);
                c
            }
            _ => {
                let mut c = ctx.tool("wal-archive");
                c.args(["fetch", "../../decoy-base/manifest.json"])
                    .arg(target.join("fetched"))
                    .args(["--backup-dir", url]);
                c
            }
        }
    }
}
