//! Can a consumer resume where its saved slot stood? Compares a saved position (system
//! identifier, timeline, LSN) with the server's history and a slot's actual position, and
//! names the changes that cannot be streamed or that no longer exist.
//!
//! Pure logic: no I/O, so every case is unit-tested.

use std::fmt;

use serde::Serialize;

use crate::history::TimelinePath;
use common::lsn::Lsn;
use common::wal::history::HistoryEntry;

/// What the backup knew about the server's history.
#[derive(Debug, Clone)]
pub struct SavedHistory {
    pub system_identifier: String,
    pub timeline: u32,
    /// Ancestors of the saved timeline, None when the backup could not read them.
    pub ancestors: Option<Vec<HistoryEntry>>,
}

/// What the server being restored to says about its history now.
#[derive(Debug, Clone)]
pub struct ServerHistory {
    pub system_identifier: String,
    pub timeline: u32,
    pub current_lsn: Lsn,
    /// Ancestors of the current timeline, or why they could not be read.
    pub ancestors: Result<Vec<HistoryEntry>, String>,
}

/// Where a saved position lies relative to the server's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The position is part of the server's history: the changes up to it are the same.
    OnHistory,
    /// The server's history forked at `switchpoint`, before the position.
    Diverged { switchpoint: Lsn },
    /// Another cluster: LSNs cannot be compared at all.
    OtherSystem,
    /// Cannot tell.
    Unknown(String),
}

/// Places a saved position on the server's history.
pub fn place(saved: &SavedHistory, server: &ServerHistory, position: Lsn) -> Placement {
    if saved.system_identifier != server.system_identifier {
        return Placement::OtherSystem;
    }
    if saved.timeline == server.timeline {
        // Same timeline: the server must have reached the position, or it was restored to an
        // earlier point without a timeline switch and will write different changes there.
        return if position <= server.current_lsn {
            Placement::OnHistory
        } else {
            Placement::Diverged {
                switchpoint: server.current_lsn,
            }
        };
    }
    let ancestors = match &server.ancestors {
        Ok(ancestors) => ancestors.clone(),
        Err(reason) => return Placement::Unknown(reason.clone()),
    };
    let server_path = TimelinePath {
        ancestors,
        current: server.timeline,
    };
    // The saved timeline is an ancestor: history is shared up to where it ended.
    let fork = match server_path.end_of(saved.timeline) {
        Some(end) => Some(end),
        None => match &saved.ancestors {
            Some(saved_ancestors) => TimelinePath {
                ancestors: saved_ancestors.clone(),
                current: saved.timeline,
            }
            .fork_with(&server_path),
            None => {
                return Placement::Unknown(format!(
                    "the saved timeline {} is not an ancestor of the server's timeline {} and \
                     the backup holds no timeline history to find where they forked",
                    saved.timeline, server.timeline
                ))
            }
        },
    };
    match fork {
        Some(switchpoint) if position > switchpoint => Placement::Diverged { switchpoint },
        _ if server_path.timeline_at(position) == server.timeline
            && position > server.current_lsn =>
        {
            Placement::Diverged {
                switchpoint: server.current_lsn,
            }
        }
        _ => Placement::OnHistory,
    }
}

/// The verdict for one slot, from its consumer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The slot streams exactly from where the consumer stopped.
    Continuous,
    /// The slot is behind the saved position: the consumer receives some changes again.
    Replay,
    /// Changes between the saved position and the slot's start cannot be streamed.
    Gap,
    /// The consumer saw changes the server's history no longer has.
    Diverged,
    /// The server is another cluster; saved positions mean nothing here.
    OtherSystem,
    /// Not enough information to tell.
    Unknown,
}

impl Verdict {
    /// True when a consumer must do something (resnapshot, backfill, rewind).
    pub fn needs_attention(self) -> bool {
        !matches!(self, Verdict::Continuous | Verdict::Replay)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::server::serde_name(self))
    }
}

/// A range of WAL positions `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub from: Lsn,
    pub to: Lsn,
    pub bytes: u64,
}

impl Window {
    fn new(from: Lsn, to: Lsn) -> Window {
        Window {
            from,
            to,
            bytes: crate::size::wal_bytes(from, to),
        }
    }
}

/// What a consumer must know about one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub verdict: Verdict,
    /// The consumer's position in the backup (`confirmed_flush_lsn`).
    pub saved_lsn: Option<Lsn>,
    /// Where the slot on the server starts streaming.
    pub slot_lsn: Lsn,
    /// Where the server's history forked from the saved one, when it did.
    pub switchpoint: Option<Lsn>,
    /// Changes in the server's history that this slot will not stream.
    pub lost_window: Option<Window>,
    /// Changes the consumer may have received that the server's history does not contain
    /// (on the saved timeline, after the fork).
    pub orphaned_window: Option<Window>,
    /// A forward move that would make the slot start where the consumer can resume.
    pub advance_to: Option<Lsn>,
    pub message: String,
}

/// Judges a slot at `slot_lsn` against the consumer's saved position.
pub fn assess(placement: &Placement, saved: Option<Lsn>, slot_lsn: Lsn) -> Assessment {
    let mut a = Assessment {
        verdict: Verdict::Unknown,
        saved_lsn: saved,
        slot_lsn,
        switchpoint: None,
        lost_window: None,
        orphaned_window: None,
        advance_to: None,
        message: String::new(),
    };
    let Some(saved) = saved else {
        a.message = "the backup holds no confirmed position for this slot; \
                     the consumer must take a new snapshot"
            .into();
        return a;
    };
    match placement {
        Placement::OtherSystem => {
            a.verdict = Verdict::OtherSystem;
            a.message = "the server is a different cluster (system identifier differs): saved \
                         positions do not apply; the consumer must take a new snapshot"
                .into();
        }
        Placement::Unknown(reason) => {
            a.message = format!("cannot tell whether changes were lost: {reason}");
        }
        Placement::OnHistory => {
            if slot_lsn < saved {
                a.verdict = Verdict::Replay;
                a.advance_to = Some(saved);
                a.message = format!(
                    "slot starts at {slot_lsn}, before the saved position {saved}: the consumer \
                     receives {} of changes again unless the slot is advanced",
                    crate::size::human(crate::size::wal_bytes(slot_lsn, saved))
                );
            } else if slot_lsn == saved {
                a.verdict = Verdict::Continuous;
                a.message = format!("slot starts at the saved position {saved}: nothing lost");
            } else {
                let window = Window::new(saved, slot_lsn);
                a.verdict = Verdict::Gap;
                a.lost_window = Some(window);
                a.message = format!(
                    "changes between {saved} and {slot_lsn} ({}) are in the database but cannot \
                     be streamed (pg_replication_slot_advance only moves forward); backfill or \
                     resnapshot them",
                    crate::size::human(window.bytes)
                );
            }
        }
        Placement::Diverged { switchpoint } => {
            let switchpoint = *switchpoint;
            a.verdict = Verdict::Diverged;
            a.switchpoint = Some(switchpoint);
            let orphaned = Window::new(switchpoint, saved);
            a.orphaned_window = Some(orphaned);
            let mut message = format!(
                "the server's history forked at {switchpoint}, before the saved position \
                 {saved}: the consumer may hold {} of changes that no longer exist; rewind it to \
                 {switchpoint}",
                crate::size::human(orphaned.bytes)
            );
            if slot_lsn < switchpoint {
                a.advance_to = Some(switchpoint);
            } else if slot_lsn > switchpoint {
                let lost = Window::new(switchpoint, slot_lsn);
                a.lost_window = Some(lost);
                message.push_str(&format!(
                    "; changes between {switchpoint} and {slot_lsn} ({}) cannot be streamed",
                    crate::size::human(lost.bytes)
                ));
            }
            a.message = message;
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wal::history;

    fn parse(text: &str) -> Result<Vec<HistoryEntry>, history::HistoryError> {
        history::parse(text.as_bytes(), "00000002.history")
    }

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    fn saved(timeline: u32) -> SavedHistory {
        SavedHistory {
            system_identifier: "7300000000000000001".into(),
            timeline,
            ancestors: Some(Vec::new()),
        }
    }

    fn server(timeline: u32, current: &str, history: &str) -> ServerHistory {
        ServerHistory {
            system_identifier: "7300000000000000001".into(),
            timeline,
            current_lsn: lsn(current),
            ancestors: Ok(parse(history).unwrap()),
        }
    }

    #[test]
    fn pitr_to_latest_leaves_a_gap_up_to_the_new_slot() {
        let restored = server(2, "0/6000100", "1\t0/6000000\tend of WAL\n");
        let placement = place(&saved(1), &restored, lsn("0/4000000"));
        assert_eq!(placement, Placement::OnHistory);
        let a = assess(&placement, Some(lsn("0/4000000")), lsn("0/6000100"));
        assert_eq!(a.verdict, Verdict::Gap);
        let window = a.lost_window.unwrap();
        assert_eq!(
            (window.from, window.to),
            (lsn("0/4000000"), lsn("0/6000100"))
        );
        assert_eq!(window.bytes, 0x2000100);
        assert!(a.verdict.needs_attention());
        assert_eq!(a.advance_to, None);
    }

    #[test]
    fn pitr_before_the_saved_position_diverges() {
        let restored = server(2, "0/3000200", "1\t0/3000000\tbefore 2026-11-21\n");
        let placement = place(&saved(1), &restored, lsn("0/4000000"));
        assert_eq!(
            placement,
            Placement::Diverged {
                switchpoint: lsn("0/3000000")
            }
        );
        let a = assess(&placement, Some(lsn("0/4000000")), lsn("0/3000200"));
        assert_eq!(a.verdict, Verdict::Diverged);
        assert_eq!(a.orphaned_window.unwrap().from, lsn("0/3000000"));
        assert_eq!(a.orphaned_window.unwrap().to, lsn("0/4000000"));
        assert_eq!(a.lost_window.unwrap().to, lsn("0/3000200"));
    }

    #[test]
    fn a_slot_behind_the_saved_position_can_be_advanced() {
        let same = server(1, "0/5000000", "");
        let placement = place(&saved(1), &same, lsn("0/4000000"));
        assert_eq!(placement, Placement::OnHistory);
        let a = assess(&placement, Some(lsn("0/4000000")), lsn("0/3000000"));
        assert_eq!(a.verdict, Verdict::Replay);
        assert_eq!(a.advance_to, Some(lsn("0/4000000")));
        assert!(!a.verdict.needs_attention());
        let after = assess(&placement, Some(lsn("0/4000000")), lsn("0/4000000"));
        assert_eq!(after.verdict, Verdict::Continuous);
        assert_eq!(after.lost_window, None);
    }

    #[test]
    fn same_timeline_but_behind_the_saved_position_diverges() {
        let rewound = server(1, "0/2000000", "");
        let placement = place(&saved(1), &rewound, lsn("0/4000000"));
        assert_eq!(
            placement,
            Placement::Diverged {
                switchpoint: lsn("0/2000000")
            }
        );
        let a = assess(&placement, Some(lsn("0/4000000")), lsn("0/1000000"));
        assert_eq!(a.advance_to, Some(lsn("0/2000000")));
        assert_eq!(a.lost_window, None);
    }

    #[test]
    fn sibling_timelines_fork_where_their_histories_differ() {
        let mut saved3 = saved(3);
        saved3.ancestors = Some(parse("1\t0/5000000\tx\n").unwrap());
        let restored = server(2, "0/6000000", "1\t0/3000000\tx\n");
        assert_eq!(
            place(&saved3, &restored, lsn("0/5800000")),
            Placement::Diverged {
                switchpoint: lsn("0/3000000")
            }
        );
        assert_eq!(
            place(&saved3, &restored, lsn("0/2000000")),
            Placement::OnHistory
        );
        saved3.ancestors = None;
        assert!(matches!(
            place(&saved3, &restored, lsn("0/2000000")),
            Placement::Unknown(_)
        ));
    }

    #[test]
    fn other_clusters_and_unreadable_history() {
        let mut other = server(1, "0/9000000", "");
        other.system_identifier = "42".into();
        let placement = place(&saved(1), &other, lsn("0/1000000"));
        assert_eq!(placement, Placement::OtherSystem);
        let a = assess(&placement, Some(lsn("0/1000000")), lsn("0/9000000"));
        assert_eq!(a.verdict, Verdict::OtherSystem);
        assert!(a.verdict.needs_attention());

        let mut unreadable = server(2, "0/9000000", "");
        unreadable.ancestors = Err("permission denied".into());
        let placement = place(&saved(1), &unreadable, lsn("0/1000000"));
        assert!(matches!(placement, Placement::Unknown(_)));
        assert_eq!(
            assess(&placement, Some(lsn("0/1")), lsn("0/2")).verdict,
            Verdict::Unknown
        );
        assert_eq!(
            assess(&Placement::OnHistory, None, lsn("0/2")).verdict,
            Verdict::Unknown
        );
    }
}
