//! Chains of base backups: a diff or incr set is restored on top of the sets it was taken
//! against (its `chain`, the full first). Resolving a chain checks every link is present and
//! complete; retention keeps the links of every kept set.

use std::fmt;

use super::PhysicalDetails;
use crate::repo::SetInfo;

/// A set of a chain with its details.
#[derive(Debug, Clone)]
pub struct Link {
    pub set: SetInfo,
    pub details: PhysicalDetails,
}

/// Why a chain cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenChain {
    /// The set being restored.
    pub set: String,
    /// The link that is missing or incomplete.
    pub link: String,
    pub problem: LinkProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkProblem {
    /// Not in the repository (deleted by hand or by a tool that knew nothing of chains).
    Missing,
    /// Present without a manifest: a crashed or running backup.
    Incomplete,
    /// Its details cannot be read.
    Unreadable(String),
}

impl fmt::Display for BrokenChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.problem {
            LinkProblem::Missing => "is missing from the repository".to_string(),
            LinkProblem::Incomplete => "is incomplete (no manifest)".to_string(),
            LinkProblem::Unreadable(why) => format!("cannot be read: {why}"),
        };
        write!(
            f,
            "base backup {} is incremental and needs base backup {}, which {what}; restore another backup (its chain is broken)",
            self.set, self.link
        )
    }
}

impl std::error::Error for BrokenChain {}

/// The sets a restore of `set` applies, the full first and `set` last, from the listing of
/// base sets `sets`.
pub fn resolve(sets: &[SetInfo], set: &SetInfo) -> Result<Vec<Link>, BrokenChain> {
    let broken = |link: &str, problem| BrokenChain {
        set: set.id.clone(),
        link: link.to_string(),
        problem,
    };
    let details_of = |info: &SetInfo| -> Result<PhysicalDetails, BrokenChain> {
        let manifest = info
            .manifest()
            .ok_or_else(|| broken(&info.id, LinkProblem::Incomplete))?;
        PhysicalDetails::from_manifest(manifest)
            .map_err(|e| broken(&info.id, LinkProblem::Unreadable(format!("{e:#}"))))
    };
    let last = details_of(set)?;
    let mut links = Vec::with_capacity(last.chain.len() + 1);
    for id in &last.chain {
        let info = sets
            .iter()
            .find(|s| &s.id == id)
            .ok_or_else(|| broken(id, LinkProblem::Missing))?;
        links.push(Link {
            set: info.clone(),
            details: details_of(info)?,
        });
    }
    links.push(Link {
        set: set.clone(),
        details: last,
    });
    Ok(links)
}

/// The sets that `set` depends on, by id (empty for a full or an unreadable set).
pub fn dependencies(set: &SetInfo) -> Vec<String> {
    set.manifest()
        .and_then(|m| PhysicalDetails::from_manifest(m).ok())
        .map(|d| d.chain)
        .unwrap_or_default()
}
