//! Round trip of whole archive streams and refusal of damaged ones.

use super::*;

fn meta() -> TopicMeta {
    TopicMeta {
        topic: "orders".into(),
        partitions: 2,
        replication_factor: 1,
        ranges: vec![PartitionRange {
            partition: 0,
            low_watermark: 0,
            high_watermark: 10,
            start_offset: 0,
            end_offset: 10,
            gap: None,
        }],
        ..TopicMeta::default()
    }
}

/// An archive of `chunks` RECORDS chunks alternating between partitions 0 and 1, three
/// records each; returns the bytes and the byte position where each chunk starts.
fn archive(chunks: usize) -> (Vec<u8>, Vec<u64>) {
    let mut writer = ArchiveWriter::new(Vec::new(), &meta()).unwrap();
    let mut starts = vec![16];
    let mut ends: Vec<PartitionEnd> = Vec::new();
    for n in 0..chunks {
        let partition = (n % 2) as i32;
        let mut builder = RecordsChunkBuilder::new(partition, 1 << 20);
        for i in 0..3 {
            let offset = (n / 2 * 3 + i) as i64;
            let value = format!("value-{n}-{i}").repeat(20);
            builder.push(
                offset,
                TimestampType::CreateTime,
                1_700_000_000_000 + offset,
                Some(b"k"),
                Some(value.as_bytes()),
                [(b"h".as_slice(), None)],
            );
        }
        starts.push(writer.position());
        writer
            .write_chunk(&builder.seal(Codec::Zstd, 3).unwrap())
            .unwrap();
        match ends.iter_mut().find(|e| e.partition == partition) {
            Some(end) => {
                end.records += 3;
                end.last_offset = Some((n / 2 * 3 + 2) as i64);
                end.next_offset = (n / 2 * 3 + 3) as i64;
            }
            None => ends.push(PartitionEnd {
                partition,
                records: 3,
                first_offset: Some(0),
                last_offset: Some(2),
                next_offset: 3,
                lost: None,
            }),
        }
    }
    starts.push(writer.position());
    let end = StreamEnd {
        chunks: chunks as u64,
        records: chunks as u64 * 3,
        partitions: ends,
    };
    (writer.finish(&end).unwrap(), starts)
}

fn read_all(bytes: &[u8]) -> Result<(TopicMeta, Vec<RecordsChunk>, StreamEnd), ArchiveError> {
    let mut reader = ArchiveReader::open(bytes)?;
    let mut chunks = Vec::new();
    while let Some(chunk) = reader.next_records()? {
        chunks.push(chunk);
    }
    let end = reader.end().cloned().expect("END read");
    Ok((reader.meta().clone(), chunks, end))
}

#[test]
fn stream_round_trip() {
    let (bytes, _) = archive(4);
    let (meta_read, chunks, end) = read_all(&bytes).unwrap();
    assert_eq!(meta_read, meta());
    assert_eq!(chunks.len(), 4);
    assert_eq!(end.records, 12);
    assert_eq!(chunks[1].partition(), 1);
    let first = chunks[0].iter().next().unwrap();
    assert_eq!(first.value.unwrap(), "value-0-0".repeat(20).as_bytes());
    assert_eq!(chunks[2].offset_range(), Some((3, 5)));
}

#[test]
fn truncated_chunk_is_refused_naming_it() {
    let (bytes, starts) = archive(4);
    // Cut in the middle of chunk 3's payload (chunk 0 is META).
    let cut = starts[3] as usize + 40;
    let error = read_all(&bytes[..cut]).unwrap_err();
    assert_eq!(error.chunk(), Some(3), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("chunk 3") && text.contains("truncated"),
        "{text}"
    );
    // Cut in a chunk header.
    let error = read_all(&bytes[..starts[2] as usize + 5]).unwrap_err();
    assert_eq!(error.chunk(), Some(2), "{error}");
}

#[test]
fn missing_end_is_refused() {
    let (bytes, starts) = archive(4);
    let error = read_all(&bytes[..*starts.last().unwrap() as usize]).unwrap_err();
    assert!(
        matches!(error, ArchiveError::MissingEnd { last_chunk: 4 }),
        "{error}"
    );
    assert!(error.to_string().contains("without its END chunk"));
}

#[test]
fn corrupted_chunk_is_refused_naming_it() {
    let (mut bytes, starts) = archive(4);
    let at = starts[2] as usize + 32 + 10;
    bytes[at] ^= 0x55;
    let error = read_all(&bytes).unwrap_err();
    assert_eq!(error.chunk(), Some(2), "{error}");
    assert!(error.to_string().contains("chunk 2") && error.to_string().contains("checksum"));
}

#[test]
fn corrupted_header_and_reordered_chunks_are_refused() {
    let (mut bytes, starts) = archive(4);
    bytes[starts[1] as usize + 17] ^= 1;
    let error = read_all(&bytes).unwrap_err();
    assert_eq!(error.chunk(), Some(1), "{error}");

    // Drop chunk 2 entirely: chunk 3 arrives where 2 was expected.
    let (bytes, starts) = archive(4);
    let mut spliced = bytes[..starts[2] as usize].to_vec();
    spliced.extend_from_slice(&bytes[starts[3] as usize..]);
    let error = read_all(&spliced).unwrap_err();
    assert!(
        error.to_string().contains("sequence number 3 where 2"),
        "{error}"
    );
}

#[test]
fn foreign_or_newer_files_are_refused() {
    assert!(matches!(
        read_all(b"PK\x03\x04 not an archive").unwrap_err(),
        ArchiveError::BadMagic
    ));
    assert!(matches!(read_all(b"").unwrap_err(), ArchiveError::Empty));
    let (mut bytes, _) = archive(1);
    bytes[8] = 9;
    let crc = crc32c::crc32c(&bytes[..12]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        read_all(&bytes).unwrap_err(),
        ArchiveError::UnsupportedVersion { found: 9 }
    ));
}

#[test]
fn end_summary_must_match() {
    let mut writer = ArchiveWriter::new(Vec::new(), &meta()).unwrap();
    let mut builder = RecordsChunkBuilder::new(0, 1024);
    builder.push(0, TimestampType::CreateTime, 0, None, None, []);
    writer
        .write_chunk(&builder.seal(Codec::None, 0).unwrap())
        .unwrap();
    let lying = StreamEnd {
        chunks: 1,
        records: 2,
        partitions: vec![],
    };
    let bytes = writer.finish(&lying).unwrap();
    let error = read_all(&bytes).unwrap_err();
    assert_eq!(error.chunk(), Some(2), "{error}");
    assert!(error.to_string().contains("END lists 2 records"));
}
