//! `backup`: saves the slot inventory as a set in BACKUP_DIR/slots (`slots.json`, then the
//! manifest), applies retention, and loads such a set back for `restore`. BACKUP_DIR may be
//! a local directory or `s3://BUCKET/PREFIX`: everything goes through the repository.
//!
//! With recipients in the environment the inventory is stored encrypted (`slots.json.age`)
//! and the slot list (names, plugins, databases) moves from `manifest.json` into the set's
//! encrypted private part; the positions and the server's identity stay in clear.

use std::io::Read;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use common::cli::{GlobalArgs, PgArgs, RepoArgs, RetentionArgs};
use common::encryption::Identities;
use common::output::{self, OutputFormat};
use common::repo::{Kind, Repository, SetInfo, SetMeta};
use common::Status;

use crate::inventory::{self, Inventory, Slot};
use crate::server::Server;
use crate::size;
use common::lsn::Lsn;

/// The file of a slots set holding the whole inventory.
pub const INVENTORY_FILE: &str = "slots.json";

/// Slot backups are kept this many days unless `--retention-days`/`RETENTION_DAYS` says
/// otherwise (the schedule of the shell scripts this tool replaces).
pub const DEFAULT_RETENTION_DAYS: u32 = 14;

/// Options of `cdc-slot-tool backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Store the set in plaintext even though the repository's newest slots set is encrypted
    /// (no recipients set). Without it such a backup is refused.
    #[arg(long)]
    pub allow_unencrypted: bool,
}

/// The manifest's `details` of a slots set: enough to choose a set without opening it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotsDetails {
    pub system_identifier: String,
    pub timeline: u32,
    pub current_lsn: Lsn,
    pub server_version: String,
    pub slots: Vec<SlotSummary>,
    pub publications: usize,
}

/// One slot in the manifest's details.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotSummary {
    pub name: String,
    pub slot_type: String,
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
}

/// The last JSON line of a backup.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    id: &'a str,
    path: String,
    system_identifier: &'a str,
    timeline: u32,
    current_lsn: Lsn,
    slots: usize,
    logical_slots: usize,
    publications: usize,
    bytes: u64,
    retention_deleted: Vec<String>,
    /// Whether the set is encrypted (age).
    encrypted: bool,
}

pub fn run(args: &BackupArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let repo = Repository::create(&args.repo.backup_dir)?;
    let recipients = repo.recipients_for(Kind::Slots, args.allow_unencrypted)?;
    let _lock = repo.lock(Kind::Slots)?;
    let server = Server::new(&args.pg);
    // Read everything first: an unreachable server leaves no set directory behind.
    let inventory = common::postgres::runtime()?.block_on(inventory::collect(&server))?;

    let mut set = repo.create_set(Kind::Slots)?;
    let encrypted = recipients.is_some();
    set.encrypt_to(recipients);
    // Slot names, plugins and databases tell about the pipelines: kept in the encrypted part.
    set.keep_private(&[], &["slots"]);
    let mut bytes = serde_json::to_vec_pretty(&inventory)?;
    bytes.push(b'\n');
    set.put_file(INVENTORY_FILE, &bytes)
        .with_context(|| format!("cannot write {INVENTORY_FILE} in {}", set.describe()))?;
    let id = set.id().to_string();
    let path = set.describe();
    let details = SlotsDetails {
        system_identifier: inventory.server.system_identifier.clone(),
        timeline: inventory.server.timeline,
        current_lsn: inventory.server.current_lsn,
        server_version: inventory.server.server_version.clone(),
        slots: inventory.slots.iter().map(summarize).collect(),
        publications: inventory.publications.len(),
    };
    let manifest = set.commit(SetMeta {
        tool: "cdc-slot-tool",
        tool_version: env!("CARGO_PKG_VERSION"),
        source: serde_json::json!({
            "server": server.describe(),
            "system_identifier": inventory.server.system_identifier,
        }),
        details: serde_json::to_value(&details)?,
    })?;
    tracing::info!(
        "slot backup {id} complete: {} slot(s), {} publication(s)",
        inventory.slots.len(),
        inventory.publications.len()
    );

    let retention_deleted = if args.retention.no_retention {
        Vec::new()
    } else {
        let applied = args.retention.policy(DEFAULT_RETENTION_DAYS).apply(
            &repo,
            Kind::Slots,
            args.retention.dry_run_retention,
        );
        common::retention::after_commit(Kind::Slots, &id, applied)?
            .into_iter()
            .filter(|d| !d.keep)
            .map(|d| d.id)
            .collect()
    };

    print_slots(global.output, &inventory.slots)?;
    let summary = Summary {
        id: &id,
        path,
        system_identifier: &inventory.server.system_identifier,
        timeline: inventory.server.timeline,
        current_lsn: inventory.server.current_lsn,
        slots: inventory.slots.len(),
        logical_slots: inventory.slots.iter().filter(|s| s.is_logical()).count(),
        publications: inventory.publications.len(),
        bytes: manifest.total_size(),
        retention_deleted,
        encrypted,
    };
    output::summary(global.output, &summary, || {
        format!(
            "slot backup {id}: {} slot(s), {} publication(s), server at {} on timeline {}",
            summary.slots, summary.publications, summary.current_lsn, summary.timeline
        )
    })?;
    Ok(Status::Ok)
}

fn summarize(slot: &Slot) -> SlotSummary {
    SlotSummary {
        name: slot.slot_name.clone(),
        slot_type: slot.slot_type.clone(),
        database: slot.database.clone(),
        plugin: slot.plugin.clone(),
        confirmed_flush_lsn: slot.confirmed_flush_lsn,
        restart_lsn: slot.restart_lsn,
    }
}

fn print_slots(format: OutputFormat, slots: &[Slot]) -> anyhow::Result<()> {
    for slot in slots {
        match format {
            OutputFormat::Json => {
                let mut value = serde_json::to_value(slot)?;
                value["type"] = "slot".into();
                output::json_line(&value)?;
            }
            OutputFormat::Text => output::text_line(&format!(
                "{:<24} {:<8} {:<16} {:<14} confirmed {:<12} lag {}",
                slot.slot_name,
                slot.slot_type,
                slot.database.as_deref().unwrap_or("-"),
                slot.plugin.as_deref().unwrap_or("-"),
                slot.confirmed_flush_lsn
                    .map_or_else(|| "-".to_string(), |l| l.to_string()),
                slot.lag_bytes.map_or_else(|| "-".to_string(), size::human),
            ))?,
        }
    }
    Ok(())
}

/// Largest inventory read back; a bigger one is damage, not slots.
const MAX_INVENTORY_BYTES: u64 = 256 << 20;

/// Loads a complete slots set (the newest when `id` is None), verifying its checksums; an
/// encrypted inventory is decrypted with the identities in the environment (a missing or
/// wrong key is an error naming the file, before anything is changed).
pub fn load(repo: &Repository, id: Option<&str>) -> anyhow::Result<(SetInfo, Inventory)> {
    let (set, manifest) = repo.find(Kind::Slots, id)?;
    let problems = repo.verify_files(&set.prefix, &manifest);
    if !problems.is_empty() {
        anyhow::bail!(
            "slots set {} is damaged: {}; choose another with --backup-id",
            set.id,
            problems.join("; ")
        );
    }
    let entry = manifest.stored(INVENTORY_FILE).with_context(|| {
        format!(
            "slots set {} lists no {INVENTORY_FILE}; choose another with --backup-id",
            set.id
        )
    })?;
    let shown = repo.describe(&set.key(&entry.path));
    let identities = Identities::from_env()?;
    let mut text = Vec::new();
    repo.open_entry(&set, entry, identities.as_ref())
        .and_then(|file| entry.compression.decoder(file))
        .and_then(|file| file.take(MAX_INVENTORY_BYTES).read_to_end(&mut text))
        .map_err(|e| {
            // Decryption errors name the file already.
            if e.to_string().contains(&shown) {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(e).context(format!("cannot read {shown}"))
            }
        })?;
    Ok((set, Inventory::parse(&text, &shown)?))
}
