//! The cut: which offsets of each partition a run exports, from the watermarks at start, the
//! previous set's end offsets (incremental) and `--max-messages`.

use common::topic_archive::{OffsetGap, PartitionRange, TopicCut};

/// What the previous set of this topic ended at, for an incremental run.
#[derive(Debug, Clone)]
pub struct Previous<'a> {
    pub set_id: String,
    /// The previous set's cut of the topic (in clear even in an encrypted set).
    pub topic: &'a TopicCut,
}

/// Why a partition's plan differs from "continue where the previous set stopped".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The partition is new since the previous set: exported from its low watermark.
    NewPartition,
    /// The partition's high watermark is below where the previous set stopped: the topic was
    /// deleted and recreated, or truncated. Exported in full.
    OffsetsWentBack { previous_end: i64 },
}

/// Plans one partition. `low`/`high` are the watermarks at start.
pub fn plan_partition(
    partition: i32,
    low: i64,
    high: i64,
    previous: Option<&Previous<'_>>,
    max_messages: Option<u64>,
) -> (PartitionRange, Option<Note>) {
    let mut note = None;
    let mut start = low;
    let mut gap = None;
    if let Some(previous) = previous {
        match previous.topic.partition(partition) {
            None => note = Some(Note::NewPartition),
            Some(before) if before.end_offset > high => {
                note = Some(Note::OffsetsWentBack {
                    previous_end: before.end_offset,
                });
            }
            Some(before) => {
                if before.end_offset < low {
                    // Retention deleted records nobody exported: say so instead of hiding it.
                    gap = Some(OffsetGap {
                        from: before.end_offset,
                        to: low,
                    });
                } else {
                    start = before.end_offset;
                }
            }
        }
    }
    let mut end = high.max(start);
    if let Some(max) = max_messages {
        end = end.min(start.saturating_add(max as i64));
    }
    (
        PartitionRange {
            partition,
            low_watermark: low,
            high_watermark: high,
            start_offset: start,
            end_offset: end,
            gap,
        },
        note,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::topic_archive::PartitionCut;

    fn previous_topic(end_offset: i64) -> TopicCut {
        TopicCut {
            topic: "t".into(),
            file: "t.kta".into(),
            incremental_from: None,
            partitions: vec![PartitionCut {
                partition: 0,
                start_offset: 0,
                end_offset,
            }],
        }
    }

    #[test]
    fn full_run_takes_everything_between_the_watermarks() {
        let (range, note) = plan_partition(0, 5, 100, None, None);
        assert_eq!((range.start_offset, range.end_offset), (5, 100));
        assert_eq!((note, range.gap), (None, None));
        let (range, _) = plan_partition(0, 5, 100, None, Some(10));
        assert_eq!(range.end_offset, 15);
    }

    #[test]
    fn incremental_continues_and_records_gaps() {
        let topic = previous_topic(50);
        let previous = Previous {
            set_id: "a".into(),
            topic: &topic,
        };
        let (range, note) = plan_partition(0, 0, 80, Some(&previous), None);
        assert_eq!((range.start_offset, range.end_offset, note), (50, 80, None));

        let (range, _) = plan_partition(0, 60, 80, Some(&previous), None);
        assert_eq!(range.start_offset, 60);
        assert_eq!(range.gap, Some(OffsetGap { from: 50, to: 60 }));

        let (range, note) = plan_partition(0, 0, 50, Some(&previous), None);
        assert_eq!((range.start_offset, range.end_offset, note), (50, 50, None));

        let (range, note) = plan_partition(0, 0, 20, Some(&previous), None);
        assert_eq!(range.start_offset, 0);
        assert_eq!(note, Some(Note::OffsetsWentBack { previous_end: 50 }));

        let (range, note) = plan_partition(1, 0, 20, Some(&previous), None);
        assert_eq!((range.start_offset, note), (0, Some(Note::NewPartition)));
    }
}
