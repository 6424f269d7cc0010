//! Synthetic WAL laid out as PostgreSQL 15 writes it (page headers, records split across
//! pages and segments, CRC-32C), decoded back.

use super::reader::*;
use super::record::*;
use super::*;

const SEGMENT: u64 = 64 * 1024;
const BASE: u64 = 5 * SEGMENT;

fn node(rel: u32) -> RelFileNode {
    RelFileNode {
        spc: 1663,
        db: 5,
        rel,
    }
}

fn push_node(out: &mut Vec<u8>, node: RelFileNode) {
    for v in [node.spc, node.db, node.rel] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// One record: its block references (node, fork, block, with an image of `image` bytes)
/// and its main data.
struct Rec {
    rmid: u8,
    info: u8,
    blocks: Vec<(RelFileNode, u8, u32, u16)>,
    main: Vec<u8>,
}

impl Rec {
    fn blocks(blocks: Vec<(RelFileNode, u8, u32, u16)>) -> Rec {
        Rec {
            rmid: 10,
            info: 0,
            blocks,
            main: vec![7; 20],
        }
    }

    /// `XLOG_SMGR_TRUNCATE` of `rel` at `block`, of the forks `flags` names.
    fn truncate(rel: u32, block: u32, flags: u32) -> Rec {
        let mut main = block.to_le_bytes().to_vec();
        push_node(&mut main, node(rel));
        main.extend_from_slice(&flags.to_le_bytes());
        Rec {
            rmid: RM_SMGR_ID,
            info: XLOG_SMGR_TRUNCATE,
            blocks: vec![],
            main,
        }
    }

    /// `XLOG_SMGR_CREATE` of `rel`'s main fork.
    fn create(rel: u32) -> Rec {
        let mut main = Vec::new();
        push_node(&mut main, node(rel));
        main.extend_from_slice(&0u32.to_le_bytes());
        Rec {
            rmid: RM_SMGR_ID,
            info: XLOG_SMGR_CREATE,
            blocks: vec![],
            main,
        }
    }

    /// `XLOG_DBASE_CREATE_FILE_COPY` of database `db` in pg_default from template1.
    fn file_copy(db: u32) -> Rec {
        let main = [db, 1663, 1, 1663]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Rec {
            rmid: RM_DBASE_ID,
            info: XLOG_DBASE_CREATE_FILE_COPY,
            blocks: vec![],
            main,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut headers = Vec::new();
        let mut data = Vec::new();
        let mut last = None;
        for (i, &(node, fork, block, image)) in self.blocks.iter().enumerate() {
            headers.push(i as u8);
            let same = last == Some(node);
            let mut flags = fork | 0x20;
            if image > 0 {
                flags |= BKPBLOCK_HAS_IMAGE;
            }
            if same {
                flags |= BKPBLOCK_SAME_REL;
            }
            headers.push(flags);
            headers.extend_from_slice(&3u16.to_le_bytes());
            if image > 0 {
                headers.extend_from_slice(&image.to_le_bytes());
                headers.extend_from_slice(&100u16.to_le_bytes());
                // A compressed image with a hole has the hole's length too.
                headers.push(BKPIMAGE_HAS_HOLE | 0x08);
                headers.extend_from_slice(&(8192 - image).to_le_bytes());
                data.extend(std::iter::repeat_n(0xAB, usize::from(image)));
            }
            if !same {
                push_node(&mut headers, node);
            }
            headers.extend_from_slice(&block.to_le_bytes());
            data.extend_from_slice(&[1, 2, 3]);
            last = Some(node);
        }
        if self.main.len() < 256 {
            headers.push(XLR_BLOCK_ID_DATA_SHORT);
            headers.push(self.main.len() as u8);
        } else {
            headers.push(XLR_BLOCK_ID_DATA_LONG);
            headers.extend_from_slice(&(self.main.len() as u32).to_le_bytes());
        }
        data.extend_from_slice(&self.main);
        let total = RECORD_HEADER + headers.len() + data.len();
        let mut rec = Vec::with_capacity(total);
        rec.extend_from_slice(&(total as u32).to_le_bytes());
        rec.extend_from_slice(&42u32.to_le_bytes());
        rec.extend_from_slice(&0u64.to_le_bytes());
        rec.push(self.info);
        rec.push(self.rmid);
        rec.extend_from_slice(&[0, 0]);
        rec.extend_from_slice(&[0; 4]);
        rec.extend_from_slice(&headers);
        rec.extend_from_slice(&data);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[RECORD_HEADER..]), &rec[..20]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        rec
    }
}

/// WAL segments starting at `BASE`, records written from `BASE + 40` on; the LSN of each
/// record and the position after the last.
struct Wal {
    segments: HashMap<u64, Vec<u8>>,
    pos: u64,
    starts: Vec<u64>,
}

impl Wal {
    fn new() -> Wal {
        let mut wal = Wal {
            segments: HashMap::new(),
            pos: BASE,
            starts: Vec::new(),
        };
        wal.page_header(0);
        wal
    }

    fn put(&mut self, byte: u8) {
        let seg = self
            .segments
            .entry(self.pos / SEGMENT)
            .or_insert_with(|| vec![0; SEGMENT as usize]);
        seg[(self.pos % SEGMENT) as usize] = byte;
        self.pos += 1;
    }

    fn page_header(&mut self, remaining: u32) {
        let long = self.pos.is_multiple_of(SEGMENT);
        let mut info = if long { XLP_LONG_HEADER } else { 0 };
        if remaining > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        let mut h = Vec::new();
        h.extend_from_slice(&0xD110u16.to_le_bytes());
        h.extend_from_slice(&info.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&self.pos.to_le_bytes());
        h.extend_from_slice(&remaining.to_le_bytes());
        h.resize(24, 0);
        if long {
            h.extend_from_slice(&7u64.to_le_bytes());
            h.extend_from_slice(&(SEGMENT as u32).to_le_bytes());
            h.extend_from_slice(&8192u32.to_le_bytes());
        }
        for b in h {
            self.put(b);
        }
    }

    fn append(&mut self, rec: &Rec) -> u64 {
        let bytes = rec.bytes();
        let start = self.pos;
        self.starts.push(start);
        for (i, &b) in bytes.iter().enumerate() {
            if self.pos.is_multiple_of(WAL_PAGE) {
                self.page_header((bytes.len() - i) as u32);
            }
            self.put(b);
        }
        while !self.pos.is_multiple_of(8) {
            self.put(0);
        }
        if self.pos.is_multiple_of(WAL_PAGE) {
            self.page_header(0);
        }
        start
    }

    fn switch(&mut self) {
        self.append(&Rec {
            rmid: RM_XLOG_ID,
            info: XLOG_SWITCH,
            blocks: vec![],
            main: vec![],
        });
        self.pos = self.pos.next_multiple_of(SEGMENT);
        self.page_header(0);
    }

    fn decode(&self, from: u64, to: u64) -> anyhow::Result<ChangedBlocks> {
        changed_blocks(
            |segno| -> anyhow::Result<SegmentReader<'_>> {
                let segment = self
                    .segments
                    .get(&segno)
                    .with_context(|| format!("no segment {segno}"))?;
                Ok(Box::new(segment.as_slice()))
            },
            Lsn(from),
            Lsn(to),
            SEGMENT,
        )
    }
}

fn blocks(changed: &ChangedBlocks, rel: u32) -> FileChanges {
    changed.in_file(node(rel), 0, 131072)
}

fn listed(blocks: &[u32], from: Option<u32>) -> FileChanges {
    FileChanges::Blocks {
        blocks: blocks.to_vec(),
        from,
    }
}

#[test]
fn block_references_of_records_across_pages_and_segments_are_gathered_by_relation() {
    let mut wal = Wal::new();
    let first = wal.append(&Rec::blocks(vec![(node(1), 0, 9, 0)]));
    // Many records, some with images longer than a page, cross pages and a segment.
    for i in 0..60u32 {
        wal.append(&Rec::blocks(vec![
            (node(2), 0, i, 3000 + (i as u16 * 97) % 5000),
            (node(2), 1, 1000 + i, 0),
            (node(3), 0, 7, 0),
        ]));
    }
    wal.append(&Rec {
        main: vec![1; 20000],
        ..Rec::blocks(vec![(node(4), 0, 131072 + 5, 0)])
    });
    wal.switch();
    let late = wal.append(&Rec::blocks(vec![(node(5), 0, 1, 0)]));
    wal.append(&Rec::blocks(vec![(node(6), 0, 1, 0)]));
    assert!(wal.segments.len() >= 3, "the records span segments");

    let changed = wal.decode(first, wal.pos).unwrap();
    assert_eq!(changed.records, 65);
    assert_eq!(blocks(&changed, 1), listed(&[9], None));
    // The free space map's blocks (fork 1) are not the main fork's.
    assert_eq!(
        blocks(&changed, 2),
        listed(&(0..60).collect::<Vec<_>>(), None)
    );
    assert_eq!(blocks(&changed, 3), listed(&[7], None));
    // Relation block 131077 is block 5 of segment file `.1`.
    assert_eq!(blocks(&changed, 4), listed(&[], None));
    assert_eq!(changed.in_file(node(4), 131072, 131072), listed(&[5], None));
    assert_eq!(blocks(&changed, 5), listed(&[1], None));
    assert_eq!(blocks(&changed, 99), listed(&[], None));

    // Up to a record: the ones from it on are not read.
    let changed = wal.decode(first, late).unwrap();
    assert_eq!(blocks(&changed, 5), listed(&[], None));
    assert_eq!(changed.records, 63);
}

#[test]
fn created_truncated_and_copied_files_change_from_a_block_on_or_whole() {
    let mut wal = Wal::new();
    let first = wal.append(&Rec::blocks(vec![(node(1), 0, 50, 0)]));
    wal.append(&Rec::truncate(1, 40, SMGR_TRUNCATE_HEAP | 2));
    // A truncation of the visibility map only leaves the main fork.
    wal.append(&Rec::truncate(2, 10, 2));
    wal.append(&Rec::create(3));
    wal.append(&Rec::file_copy(16400));
    let changed = wal.decode(first, wal.pos).unwrap();
    assert_eq!(blocks(&changed, 1), listed(&[50], Some(40)));
    assert_eq!(
        changed.in_file(node(1), 131072, 131072),
        listed(&[], Some(0))
    );
    assert_eq!(blocks(&changed, 2), listed(&[], None));
    assert_eq!(blocks(&changed, 3), listed(&[], Some(0)));
    let copied = RelFileNode {
        spc: 1663,
        db: 16400,
        rel: 1259,
    };
    assert_eq!(changed.in_file(copied, 0, 131072), FileChanges::Whole);
}

#[test]
fn damaged_missing_or_foreign_wal_is_an_error_not_a_short_list() {
    let mut wal = Wal::new();
    let first = wal.append(&Rec::blocks(vec![(node(1), 0, 1, 0)]));
    for i in 0..30 {
        wal.append(&Rec::blocks(vec![(node(1), 0, i, 4000)]));
    }
    let end = wal.pos;
    assert!(wal.decode(first, end).is_ok());

    // A flipped byte inside a record: its CRC.
    let mut damaged = Wal {
        segments: wal.segments.clone(),
        ..Wal::new()
    };
    damaged.segments.get_mut(&(BASE / SEGMENT)).unwrap()[(first % SEGMENT) as usize + 30] ^= 1;
    let e = format!("{:#}", damaged.decode(first, end).unwrap_err());
    assert!(e.contains("CRC"), "{e}");

    // A page from elsewhere (a recycled segment's old content).
    let mut foreign = Wal {
        segments: wal.segments.clone(),
        ..Wal::new()
    };
    let page = (2 * WAL_PAGE) as usize;
    foreign.segments.get_mut(&(BASE / SEGMENT)).unwrap()[page + 8] ^= 0x40;
    let e = format!("{:#}", foreign.decode(first, end).unwrap_err());
    assert!(e.contains("says it is at"), "{e}");

    // WAL that ends before `to`: zeros where a record should be.
    let e = format!("{:#}", wal.decode(first, end + 4 * WAL_PAGE).unwrap_err());
    assert!(
        ["ends early", "no segment", "magic"]
            .iter()
            .any(|m| e.contains(m)),
        "{e}"
    );

    // Another release's page magic.
    let mut other = Wal {
        segments: wal.segments.clone(),
        ..Wal::new()
    };
    other.segments.get_mut(&(BASE / SEGMENT)).unwrap()[page] = 0x06;
    let e = format!("{:#}", other.decode(first, end).unwrap_err());
    assert!(e.contains("magic"), "{e}");
}

/// Blocks and file-level changes, for comparing two ways of reading the same WAL.
fn shape(changed: &ChangedBlocks) -> Vec<String> {
    let mut out: Vec<String> = changed
        .relations
        .iter()
        .map(|(n, c)| format!("{}/{}/{} {:?} {:?}", n.spc, n.db, n.rel, c.blocks, c.from))
        .collect();
    out.extend(changed.databases.iter().map(|d| format!("db {d:?}")));
    out.sort();
    out
}

/// Summaries of each segment, merged (tails decoded across their two segments), equal the
/// decoding of the whole range; a summary survives its JSON.
fn summaries_equal_the_range(wal: &Wal, to: u64) {
    let from = BASE + 40;
    let whole = wal.decode(from, to).unwrap();
    let mut merged = ChangedBlocks::default();
    let mut tails = 0;
    for segno in BASE / SEGMENT..=to / SEGMENT {
        let until = (segno == to / SEGMENT).then_some(Lsn(to));
        let bytes = &wal.segments[&segno];
        let summary = summarize_stream(Box::new(bytes.as_slice()), segno, SEGMENT, until).unwrap();
        let stored = SegmentSummary::from_json(&summary.to_json()).unwrap();
        assert_eq!(shape(&stored.changed), shape(&summary.changed));
        assert_eq!(stored.tail, summary.tail);
        if let Some(tail) = summary.tail {
            tails += 1;
            merged.merge(wal.decode(tail.0, tail.0 + 1).unwrap());
        }
        merged.merge(stored.changed);
    }
    assert_eq!(shape(&merged.finish()), shape(&whole));
    assert_eq!(tails, 1, "the record cut inside its header is a tail");
}

#[test]
fn segment_summaries_merged_equal_the_decoded_range() {
    let mut wal = Wal::new();
    for i in 0..40u32 {
        wal.append(&Rec::blocks(vec![
            (node(2), 0, i, 3000 + (i as u16 * 131) % 5000),
            (node(3), 0, 7 * i, 0),
        ]));
    }
    // Records up to just short of the segment's end, then one cut inside its header.
    let seg_end = wal.pos.next_multiple_of(SEGMENT);
    while seg_end - wal.pos > 1000 {
        wal.append(&Rec {
            main: vec![3; 200],
            ..Rec::blocks(vec![(node(4), 0, (wal.pos / 100) as u32, 0)])
        });
    }
    let filler = (seg_end - wal.pos - 16) as usize;
    wal.append(&Rec {
        main: vec![5; filler - 29],
        ..Rec::blocks(vec![])
    });
    assert_eq!(wal.pos, seg_end - 16);
    wal.append(&Rec::blocks(vec![
        (node(9), 0, 99, 0),
        (node(9), 0, 100, 2000),
    ]));
    // A truncation and a copied database in the next segment, then more records.
    wal.append(&Rec::truncate(2, 40, SMGR_TRUNCATE_HEAP));
    wal.append(&Rec::file_copy(16400));
    for i in 0..30u32 {
        wal.append(&Rec::blocks(vec![(node(5), 0, i, 6000)]));
    }
    let last = wal.append(&Rec::blocks(vec![(node(6), 0, 1, 0)]));
    summaries_equal_the_range(&wal, last);
    summaries_equal_the_range(&wal, wal.pos);
}
