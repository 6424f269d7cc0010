//! Slot sets: `slots.json` parses and agrees with the manifest's details.

use std::io::Read;

use common::repo::SetInfo;
use common::{Kind, Manifest, Repository};

use super::Problem;
use crate::check::{CheckResult, Run, Settings};

/// The inventory file of a slot set (cdc-slot-tool's `INVENTORY_FILE`).
pub const INVENTORY_FILE: &str = "slots.json";

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository, sets: &[SetInfo]) {
    const NAME: &str = "slots.inventory";
    run.check(settings, NAME, || {
        super::per_set_content(NAME, Kind::Slots, sets, settings, repo, |set, manifest| {
            match inventory_problems(repo, settings, set, manifest) {
                Ok((slots, publications)) => {
                    CheckResult::pass(NAME, format!("{slots} slots, {publications} publications"))
                }
                Err(problem) => CheckResult::fail(NAME, problem),
            }
        })
    });
}

fn inventory_problems(
    repo: &Repository,
    settings: &Settings,
    set: &SetInfo,
    manifest: &Manifest,
) -> Result<(usize, usize), Problem> {
    if manifest.stored(INVENTORY_FILE).is_none() {
        return Err(format!("the manifest lists no {INVENTORY_FILE}").into());
    }
    let mut text = String::new();
    super::open_plain(repo, settings, set, manifest, INVENTORY_FILE)?
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {INVENTORY_FILE}: {e}"))?;
    let inventory: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{INVENTORY_FILE} is not valid JSON: {e}"))?;
    let mut problems = Vec::new();
    if !inventory["format_version"].is_u64() {
        problems.push("no format_version".to_string());
    }
    if inventory["taken_at"]
        .as_str()
        .and_then(|t| common::timefmt::parse_timestamp(t).ok())
        .is_none()
    {
        problems.push("no valid taken_at".to_string());
    }
    let slots = inventory["slots"].as_array();
    let publications = inventory["publications"].as_array();
    if slots.is_none() {
        problems.push("no slots list".to_string());
    }
    if publications.is_none() {
        problems.push("no publications list".to_string());
    }
    let system = inventory["server"]["system_identifier"].as_str();
    if system.is_none() {
        problems.push("no server system_identifier".to_string());
    }
    let details = &manifest.details;
    if let (Some(slots), Some(listed)) = (slots, details["slots"].as_array()) {
        if slots.len() != listed.len() {
            problems.push(format!(
                "{} slots in {INVENTORY_FILE}, the manifest lists {}",
                slots.len(),
                listed.len()
            ));
        }
        for s in slots {
            if s["slot_name"].as_str().is_none() {
                problems.push("a slot without slot_name".to_string());
                break;
            }
        }
    }
    if let (Some(p), Some(n)) = (publications, details["publications"].as_u64()) {
        if p.len() as u64 != n {
            problems.push(format!(
                "{} publications in {INVENTORY_FILE}, the manifest says {n}",
                p.len()
            ));
        }
    }
    if let (Some(a), Some(b)) = (system, details["system_identifier"].as_str()) {
        if a != b {
            problems.push(format!(
                "system identifier {a} in {INVENTORY_FILE}, {b} in the manifest"
            ));
        }
    }
    if problems.is_empty() {
        Ok((slots.map_or(0, Vec::len), publications.map_or(0, Vec::len)))
    } else {
        Err(Problem::joined(&problems, "; "))
    }
}
