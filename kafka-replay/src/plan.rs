//! What happens to each archived record: filtered out (by time, offset or the LSN cut),
//! already in the target (an interrupted replay being resumed), or produced; and which target
//! offset each consumer group's committed offset becomes. A group committed past the last
//! selected record (past the LSN cut, say) is placed at the end of what was replayed.
//!
//! Resuming: a replay into an existing, non-empty target partition assumes that partition's
//! records `low..high` are the first `high - low` selected records of the archive, written by
//! an earlier run of the same replay. It checks that claim on the first and last of them
//! (every field) and skips that many; a mismatch stops the replay before it produces anything
//! into that partition. `--append` turns this off and produces everything after what is there.

use std::collections::BTreeMap;

use common::topic_archive::RecordView;

use crate::filter::Filter;
use crate::lsn_cut::LsnCut;

/// The fields of a target record, to compare with an archived one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// None when the target's timestamp cannot be compared (LogAppendTime on the target).
    pub timestamp: Option<i64>,
}

impl Fingerprint {
    fn differs_from(&self, record: &RecordView<'_>) -> Option<&'static str> {
        if self.key.as_deref() != record.key {
            return Some("key");
        }
        if self.value.as_deref() != record.value {
            return Some("value");
        }
        if self
            .timestamp
            .is_some_and(|t| record.timestamp >= 0 && t != record.timestamp)
        {
            return Some("timestamp");
        }
        let headers: Vec<(&[u8], Option<&[u8]>)> =
            record.headers().map(|h| (h.key, h.value)).collect();
        let ours: Vec<(&[u8], Option<&[u8]>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        (headers != ours).then_some("headers")
    }
}

/// A consumer group's committed offset on one partition, and its translation.
#[derive(Debug, Clone)]
pub struct GroupPoint {
    pub group: String,
    /// Source offset: the next record the group would read.
    pub committed: i64,
    /// Selected records before it; the target offset is `base + selected_before`.
    pub selected_before: Option<u64>,
}

/// The plan and running counts of one source partition.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    pub source_partition: i32,
    /// Same partition number in the target, or None when keys are re-hashed.
    pub target_partition: Option<i32>,
    /// Target offset of the first selected record.
    pub base: i64,
    /// Selected records already in the target (resume).
    pub present: u64,
    /// Target records to compare, by selection index.
    pub probes: Vec<(u64, Fingerprint)>,
    pub selected: u64,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    pub groups: Vec<GroupPoint>,
    next_group: usize,
}

impl PartitionPlan {
    pub fn new(source_partition: i32, target_partition: Option<i32>, base: i64) -> Self {
        PartitionPlan {
            source_partition,
            target_partition,
            base,
            present: 0,
            probes: Vec::new(),
            selected: 0,
            first_offset: None,
            last_offset: None,
            groups: Vec::new(),
            next_group: 0,
        }
    }

    /// Records to produce, once a whole pass has counted the selection.
    pub fn to_produce(&self) -> u64 {
        self.selected.saturating_sub(self.present)
    }

    /// Target offset of a group's committed offset, once a pass is complete.
    pub fn translate(&self, point: &GroupPoint) -> i64 {
        self.base + point.selected_before.unwrap_or(self.selected) as i64
    }
}

/// What to do with one archived record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not selected by the filters.
    Skip,
    /// Selected, and already in the target from an earlier run.
    Present,
    /// Selected and to be produced.
    Produce,
}

/// The plans of every partition.
#[derive(Debug, Clone, Default)]
pub struct Planner {
    pub filter: Filter,
    /// `--until-lsn`: only records below the cut, on top of the filter.
    pub cut: Option<LsnCut>,
    pub partitions: BTreeMap<i32, PartitionPlan>,
}

impl Planner {
    /// Starts a new pass over the archive: counts restart, the plan stays.
    pub fn restart(&mut self) {
        if let Some(cut) = &mut self.cut {
            cut.restart();
        }
        for plan in self.partitions.values_mut() {
            plan.selected = 0;
            plan.first_offset = None;
            plan.last_offset = None;
            plan.next_group = 0;
            for point in &mut plan.groups {
                point.selected_before = None;
            }
        }
    }

    /// Classifies one record; an error when the target contradicts the archive, or when the
    /// record has no LSN to cut at.
    pub fn observe(
        &mut self,
        partition: i32,
        record: &RecordView<'_>,
        target_topic: &str,
    ) -> anyhow::Result<Action> {
        if !self.filter.selects(partition, record) {
            return Ok(Action::Skip);
        }
        let Some(plan) = self.partitions.get_mut(&partition) else {
            return Ok(Action::Skip);
        };
        if let Some(cut) = &mut self.cut {
            if !cut.keeps(partition, record)? {
                return Ok(Action::Skip);
            }
        }
        let index = plan.selected;
        plan.selected += 1;
        plan.first_offset.get_or_insert(record.offset);
        plan.last_offset = Some(record.offset);
        while let Some(point) = plan.groups.get_mut(plan.next_group) {
            if point.committed > record.offset {
                break;
            }
            point.selected_before = Some(index);
            plan.next_group += 1;
        }
        if let Some((_, target)) = plan.probes.iter().find(|(i, _)| *i == index) {
            if let Some(field) = target.differs_from(record) {
                anyhow::bail!(
                    "target {target_topic}[{}] already holds records that this replay did not write: its record at offset {} differs from the archive's (source offset {}) in the {field}; replay into an empty topic, or pass --append to add the records after the existing ones",
                    plan.target_partition.unwrap_or(partition),
                    target.offset,
                    record.offset
                );
            }
        }
        Ok(if index < plan.present {
            Action::Present
        } else {
            Action::Produce
        })
    }

    /// After a complete pass: the target must not hold more than the selection.
    pub fn check_counts(&self, target_topic: &str) -> anyhow::Result<()> {
        for plan in self.partitions.values() {
            if plan.present > plan.selected {
                anyhow::bail!(
                    "target {target_topic}[{}] holds {} records, more than the {} this replay selects from partition {}; replay into an empty topic, or pass --append",
                    plan.target_partition.unwrap_or(plan.source_partition),
                    plan.present,
                    plan.selected,
                    plan.source_partition
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::topic_archive::{Codec, RecordsChunk, RecordsChunkBuilder, TimestampType};

    fn chunk(offsets: &[i64]) -> RecordsChunk {
        let mut builder = RecordsChunkBuilder::new(0, 1 << 20);
        for &o in offsets {
            let value = format!("v{o}");
            builder.push(
                o,
                TimestampType::CreateTime,
                o * 10,
                None,
                Some(value.as_bytes()),
                [],
            );
        }
        let encoded = builder.seal(Codec::None, 0).unwrap();
        RecordsChunk::parse(encoded.decode_payload(0, 0).unwrap()).unwrap()
    }

    fn fingerprint(offset: i64, source_offset: i64) -> Fingerprint {
        Fingerprint {
            offset,
            key: None,
            value: Some(format!("v{source_offset}").into_bytes()),
            headers: vec![],
            timestamp: Some(source_offset * 10),
        }
    }

    #[test]
    fn resume_skips_what_the_target_holds_and_translates_groups() {
        let mut planner = Planner::default();
        let mut plan = PartitionPlan::new(0, Some(0), 0);
        plan.present = 2;
        plan.probes = vec![(0, fingerprint(0, 10)), (1, fingerprint(1, 12))];
        plan.groups = vec![GroupPoint {
            group: "g".into(),
            committed: 13,
            selected_before: None,
        }];
        planner.partitions.insert(0, plan);
        let records = chunk(&[10, 12, 13, 20]);
        let actions: Vec<Action> = records
            .iter()
            .map(|r| planner.observe(0, &r, "t").unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                Action::Present,
                Action::Present,
                Action::Produce,
                Action::Produce
            ]
        );
        let plan = &planner.partitions[&0];
        assert_eq!(plan.to_produce(), 2);
        // Offset 13 is the third selected record: target offset 2.
        assert_eq!(plan.translate(&plan.groups[0]), 2);
        planner.check_counts("t").unwrap();
    }

    #[test]
    fn foreign_target_records_are_refused() {
        let mut planner = Planner::default();
        let mut plan = PartitionPlan::new(0, Some(0), 0);
        plan.present = 1;
        plan.probes = vec![(0, fingerprint(0, 99))];
        planner.partitions.insert(0, plan);
        let records = chunk(&[10]);
        let error = planner
            .observe(0, &records.iter().next().unwrap(), "t")
            .unwrap_err();
        assert!(error
            .to_string()
            .contains("differs from the archive's (source offset 10) in the value"));
    }

    #[test]
    fn groups_committed_past_the_lsn_cut_land_at_the_end_of_the_replay() {
        let mut builder = RecordsChunkBuilder::new(0, 1 << 20);
        // Offsets 10..16 with their LSNs in a header; 12, 14 and 15 are at or past the cut.
        for (offset, lsn) in [
            (10, "100"),
            (11, "110"),
            (12, "300"),
            (13, "120"),
            (14, "310"),
            (15, "320"),
        ] {
            builder.push(
                offset,
                TimestampType::CreateTime,
                0,
                Some(b"k".as_slice()),
                Some(b"{}".as_slice()),
                [(b"lsn".as_slice(), Some(lsn.as_bytes()))],
            );
        }
        let encoded = builder.seal(Codec::None, 0).unwrap();
        let records = RecordsChunk::parse(encoded.decode_payload(0, 0).unwrap()).unwrap();
        let field = "header:lsn".parse().unwrap();
        let mut planner = Planner {
            cut: Some(LsnCut::new(common::lsn::Lsn(200), field, "t".into())),
            ..Planner::default()
        };
        let mut plan = PartitionPlan::new(0, Some(0), 5);
        plan.groups = [11, 12, 14, 99]
            .into_iter()
            .map(|committed| GroupPoint {
                group: format!("g{committed}"),
                committed,
                selected_before: None,
            })
            .collect();
        planner.partitions.insert(0, plan);
        for pass in 0..2 {
            planner.restart();
            let produced: Vec<i64> = records
                .iter()
                .filter(|r| planner.observe(0, r, "t").unwrap() == Action::Produce)
                .map(|r| r.offset)
                .collect();
            assert_eq!(produced, [10, 11, 13], "pass {pass}");
            let plan = &planner.partitions[&0];
            let targets: Vec<i64> = plan.groups.iter().map(|g| plan.translate(g)).collect();
            // 11 -> the second replayed record; 12 (a phantom) -> the next one kept, 13;
            // 14 and 99, past every kept record -> the end of the replay.
            assert_eq!(targets, [6, 7, 8, 8], "pass {pass}");
        }
        let report = planner.cut.as_ref().unwrap().report();
        assert_eq!((report.replayed, report.dropped_after_cut), (3, 3));
    }

    #[test]
    fn filters_and_group_points_past_the_end() {
        let mut planner = Planner {
            filter: Filter::new(Some(110), Some(200), &[], &[]),
            ..Planner::default()
        };
        let mut plan = PartitionPlan::new(0, Some(0), 5);
        plan.groups = vec![GroupPoint {
            group: "g".into(),
            committed: 50,
            selected_before: None,
        }];
        planner.partitions.insert(0, plan);
        let records = chunk(&[10, 11, 19, 20, 30]);
        let selected = records
            .iter()
            .filter(|r| planner.observe(0, r, "t").unwrap() == Action::Produce)
            .count();
        // Timestamps 100, 110, 190, 200, 300: [110, 200) selects two.
        assert_eq!(selected, 2);
        let plan = &planner.partitions[&0];
        assert_eq!(plan.translate(&plan.groups[0]), 7);
        assert_eq!((plan.first_offset, plan.last_offset), (Some(11), Some(19)));
    }
}
