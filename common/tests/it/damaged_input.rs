//! The damaged-input tier for the readers in `common`: `manifest.json`, PostgreSQL's
//! `backup_manifest`, the topic archive and age files, each fed damaged copies (flips,
//! inserted and deleted ranges, extreme length fields, truncation, splices) of valid inputs
//! written by our own writers. Every case must end without a panic, within the deadline,
//! within the reader's memory bound, and with an error that names the file.
//!
//! `PROPTEST_CASES=100000 cargo test -p common --test it damaged_input` is the full run.

use std::io::{Read, Write};
use std::sync::OnceLock;

use allocation_counter::AllocationInfo;
use common::encryption::{self, Identities, Recipients};
use common::lsn::Lsn;
use common::manifest::{FileEntry, Manifest, SetStatus};
use common::physical::{PgBackupManifest, PhysicalDetails, WalMethod};
use common::stream::Compression;
use common::topic_archive::{
    ArchiveError, ArchiveReader, ArchiveWriter, Chunk, Codec, PartitionEnd, PartitionRange,
    RecordsChunkBuilder, StreamEnd, TimestampType, TopicMeta,
};
use common::Kind;
use proptest::prelude::*;
use test_support::damage::{self, bounded};

const MANIFEST_SHOWN: &str = "/backups/base/20260101T000000Z/manifest.json";
const PG_MANIFEST_SHOWN: &str = "/backups/base/20260101T000000Z/backup_manifest";
const AGE_SHOWN: &str = "/backups/wal/000000010000000000000003.zst.age";

/// Runs `read` on `input` under the deadline, counting the reader thread's allocations.
fn measured<T: Send + 'static>(
    input: &[u8],
    read: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> (T, AllocationInfo) {
    bounded(input, move |bytes| {
        let mut out = None;
        let info = allocation_counter::measure(|| out = Some(read(&bytes)));
        (out.expect("the reader ran"), info)
    })
}

/// The memory bound of a reader: `fixed` bytes plus `per_byte` for each input byte, at peak.
fn within(info: &AllocationInfo, input: &[u8], fixed: u64, per_byte: u64) -> bool {
    info.bytes_max <= fixed + per_byte * input.len() as u64
}

// ---- manifest.json ----

fn manifest_seeds() -> Vec<Vec<u8>> {
    let time = time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
    let details = PhysicalDetails {
        start_lsn: Lsn(0x0300_0028),
        stop_lsn: Lsn(0x0300_0100),
        timeline: 1,
        start_time: time,
        stop_time: time,
        system_identifier: "7312345678901234567".into(),
        server_version_num: 150018,
        server_version: "15.18".into(),
        wal_segment_size: 16 << 20,
        wal_method: WalMethod::Archive,
        compression: Compression::Zstd,
        raw_bytes: 31_457_280,
        stored_bytes: 4_194_304,
        duration_s: 2.5,
        file_count: 980,
        backup_type: common::physical::BackupType::Incr,
        method: common::physical::CaptureMethod::DataDir,
        reference: Some("20261121T020000Z".into()),
        reference_lsn: Some(Lsn(0x0200_0028)),
        chain: vec!["20261121T020000Z".into()],
        checksum_failures: vec![common::physical::ChecksumFailure {
            path: "base/5/16384".into(),
            blocks: vec![3],
        }],
    };
    let file = |path: &str, size| FileEntry {
        path: path.into(),
        size,
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        compression: Compression::Zstd,
        raw_size: Some(size * 7),
        xxh3: None,
    };
    let base = Manifest {
        format_version: 1,
        kind: Kind::Base,
        id: "20260101T000000Z".into(),
        tool: "pg-base-backup".into(),
        tool_version: "0.1.0".into(),
        started_at: time,
        finished_at: time,
        status: SetStatus::Complete,
        source: serde_json::json!({"host": "db1", "port": 5432,
            "encryption": {"format": "age", "recipients": ["age1qqqq"]}}),
        files: vec![
            file("base.tar.zst.age", 4_194_304),
            file("backup_manifest.age", 120_000),
        ],
        details: serde_json::to_value(&details).unwrap(),
    };
    let kafka = Manifest {
        kind: Kind::Kafka,
        tool: "kafka-topic-backup".into(),
        source: serde_json::json!({"bootstrap": "localhost:9092", "topics": ["orders"]}),
        files: vec![file("orders.pbkt", 1_000)],
        details: serde_json::json!({"topics": [{"topic": "orders", "partitions": 3}]}),
        ..base.clone()
    };
    [base, kafka]
        .iter()
        .map(|m| {
            let mut text = serde_json::to_vec_pretty(m).unwrap();
            text.push(b'\n');
            text
        })
        .collect()
}

/// What the tools do with a manifest they read: parse it, then use its numbers.
fn read_manifest(bytes: &[u8]) -> Result<u64, String> {
    let m = Manifest::parse(bytes, MANIFEST_SHOWN).map_err(|e| format!("{e:#}"))?;
    let _ = m.encryption();
    let _ = m.stored("backup_manifest");
    let _ = m.files.iter().map(FileEntry::is_encrypted).count();
    if m.kind == Kind::Base {
        if let Ok(d) = PhysicalDetails::from_manifest(&m) {
            // What pitr-restore and wal-archive compute from the details.
            let _ = common::wal::segno_of(d.stop_lsn, d.wal_segment_size);
            let _ = common::wal::segment_name(
                d.timeline,
                common::wal::segno_of(d.start_lsn, d.wal_segment_size),
                d.wal_segment_size,
            );
        }
    }
    Ok(m.total_size())
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn manifest_json(input in damage::damaged(manifest_seeds())) {
        let (result, info) = measured(&input, read_manifest);
        if let Err(e) = &result {
            prop_assert!(e.contains(MANIFEST_SHOWN), "error does not name the file: {e}");
        }
        // serde_json builds the manifest (and its `source`/`details` trees) from the text.
        prop_assert!(within(&info, &input, 64 << 10, 32), "{info:?} for {} bytes", input.len());
    }
}

#[test]
fn manifest_with_huge_sizes_is_read_without_overflow() {
    let mut text = String::from_utf8(manifest_seeds().remove(0)).unwrap();
    text = text.replace("4194304,", "18446744073709551615,");
    text = text.replace("120000,", "18446744073709551615,");
    assert!(text.contains("18446744073709551615"));
    let m = Manifest::parse(text.as_bytes(), MANIFEST_SHOWN).unwrap();
    assert_eq!(m.total_size(), u64::MAX);
}

#[test]
fn impossible_physical_details_are_refused_naming_the_set() {
    let m = Manifest::parse(&manifest_seeds()[0], MANIFEST_SHOWN).unwrap();
    for (field, value) in [
        ("wal_segment_size", serde_json::json!(0)),
        ("wal_segment_size", serde_json::json!(3 << 20)),
        ("wal_segment_size", serde_json::json!(u64::MAX)),
        ("start_lsn", serde_json::json!("FFFFFFFF/FFFFFFFF")),
    ] {
        let mut damaged = m.clone();
        damaged.details[field] = value.clone();
        let err = PhysicalDetails::from_manifest(&damaged)
            .unwrap_err()
            .to_string();
        assert!(err.contains("20260101T000000Z"), "{field}={value}: {err}");
    }
}

// ---- PostgreSQL's backup_manifest ----

fn pg_manifest_seeds() -> Vec<Vec<u8>> {
    // As PostgreSQL 15's pg_basebackup writes it (one file entry per line).
    let entry = |path: &str, size: u64, sum: &str| {
        format!(
            "{{ \"Path\": \"{path}\", \"Size\": {size}, \"Last-Modified\": \"2026-01-01 00:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{sum}\" }}"
        )
    };
    let files = [
        entry("backup_label", 225, "8e4a2f16"),
        entry("global/pg_control", 8192, "1c2b3a49"),
        entry("base/5/16384", 73728, "ab12cd34"),
        entry("PG_VERSION", 3, "7a6f3b10"),
    ];
    let text = |files: &[String]| {
        format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{}\n],\n\"WAL-Ranges\": [\n{{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }}\n],\n\"Manifest-Checksum\": \"6f1ed002ab5595859014ebf0951522d9f0f2dd3a5f6d9d8a5c3e3bbaa1a3d0c1\"}}\n",
            files.join(",\n")
        )
        .into_bytes()
    };
    vec![text(&files), text(&files[..1])]
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn pg_backup_manifest(input in damage::damaged(pg_manifest_seeds())) {
        let (result, info) = measured(&input, |bytes| {
            PgBackupManifest::read(bytes, PG_MANIFEST_SHOWN).map_err(|e| format!("{e:#}"))
        });
        if let Err(e) = &result {
            prop_assert!(e.contains(PG_MANIFEST_SHOWN), "error does not name the file: {e}");
        }
        // Values are skipped, not kept: memory does not grow with the input.
        prop_assert!(within(&info, &input, 64 << 10, 0), "{info:?} for {} bytes", input.len());
    }
}

#[test]
fn pg_backup_manifest_memory_does_not_grow_with_its_size() {
    let entry = "{ \"Path\": \"base/5/16384\", \"Size\": 8192, \"Checksum\": \"ab12cd34\" }";
    let files = vec![entry; 50_000].join(",\n");
    let text = format!("{{ \"PostgreSQL-Backup-Manifest-Version\": 1, \"Files\": [{files}] }}");
    let (result, info) = measured(text.as_bytes(), |b| {
        PgBackupManifest::read(b, PG_MANIFEST_SHOWN).unwrap()
    });
    assert_eq!(result.files, 50_000);
    assert!(info.bytes_max < 64 << 10, "{info:?}");
}

// ---- the topic archive ----

fn topic_archive(partitions: i32, chunks: usize, codec: Codec) -> Vec<u8> {
    let meta = TopicMeta {
        topic: "orders".into(),
        partitions,
        replication_factor: 1,
        ranges: (0..partitions)
            .map(|partition| PartitionRange {
                partition,
                low_watermark: 0,
                high_watermark: 100,
                start_offset: 0,
                end_offset: 100,
                gap: None,
            })
            .collect(),
        ..TopicMeta::default()
    };
    let mut writer = ArchiveWriter::new(Vec::new(), &meta).unwrap();
    let mut ends: Vec<PartitionEnd> = Vec::new();
    let mut records = 0;
    for n in 0..chunks {
        let partition = n as i32 % partitions;
        let mut builder = RecordsChunkBuilder::new(partition, 1 << 20);
        let first = (n as i64 / i64::from(partitions)) * 4;
        for i in 0..4 {
            let offset = first + i;
            let value = format!("{{\"order\":{offset},\"partition\":{partition}}}");
            builder.push(
                offset,
                TimestampType::CreateTime,
                1_767_225_600_000 + offset,
                (i % 2 == 0).then_some(b"key".as_slice()),
                Some(value.as_bytes()),
                [
                    (b"trace".as_slice(), Some(b"abc".as_slice())),
                    (b"h".as_slice(), None),
                ],
            );
        }
        writer
            .write_chunk(&builder.seal(codec, 3).unwrap())
            .unwrap();
        records += 4;
        match ends.iter_mut().find(|e| e.partition == partition) {
            Some(end) => {
                end.records += 4;
                end.last_offset = Some(first + 3);
                end.next_offset = first + 4;
            }
            None => ends.push(PartitionEnd {
                partition,
                records: 4,
                first_offset: Some(first),
                last_offset: Some(first + 3),
                next_offset: first + 4,
                lost: None,
            }),
        }
    }
    let end = StreamEnd {
        chunks: chunks as u64,
        records,
        partitions: ends,
    };
    writer.finish(&end).unwrap()
}

/// The topic archive reader's memory beyond four bytes per input byte.
const TOPIC_ARCHIVE_FIXED: u64 = 256 << 10;

fn archive_seeds() -> Vec<Vec<u8>> {
    vec![
        topic_archive(2, 3, Codec::Zstd),
        topic_archive(1, 2, Codec::None),
        topic_archive(3, 0, Codec::Zstd),
    ]
}

/// Reads a whole archive as kafka-replay does: every chunk, every record and header.
fn read_archive(bytes: &[u8]) -> Result<u64, ArchiveError> {
    let mut reader = ArchiveReader::open(bytes)?;
    let _ = reader.meta().topic.len();
    let mut seen = 0u64;
    while let Some(chunk) = reader.next_chunk()? {
        match chunk {
            Chunk::Records(records) => {
                let _ = records.offset_range();
                for record in records.iter() {
                    seen += 1;
                    let _ = (record.key, record.value, record.headers().count());
                }
            }
            Chunk::End(end) => assert_eq!(end.records, seen, "END checked by the reader"),
        }
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn topic_archive_stream(input in damage::damaged(archive_seeds())) {
        let (result, info) = measured(&input, read_archive);
        if let Err(e) = &result {
            // The reader is given no name: its callers add the file (kafka-replay: "archive
            // <file> is damaged"); the error itself names the chunk and its byte position.
            let text = e.to_string();
            if e.chunk().is_some() {
                prop_assert!(text.contains("chunk") && text.contains("at byte"), "{text}");
            }
        }
        // A chunk is held whole, stored and raw, its buffer reserved 64 KiB at a time.
        prop_assert!(within(&info, &input, TOPIC_ARCHIVE_FIXED, 4), "{info:?} for {} bytes", input.len());
    }
}

/// Makes every checksum of a (damaged) archive right again, following the chunk lengths as
/// they now are: what is left is damage no checksum catches, which the record, META and END
/// parsers must refuse on their own.
fn refit_checksums(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 16 {
        let crc = crc32c::crc32c(&bytes[..12]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    }
    let mut at = 16;
    while at + 32 <= bytes.len() {
        let stored = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap()) as usize;
        let end = (at + 32).saturating_add(stored).min(bytes.len());
        let crc = crc32c::crc32c(&bytes[at + 32..end]);
        bytes[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[at..at + 28]);
        bytes[at + 28..at + 32].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    bytes
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn topic_archive_with_checksums_refitted(
        input in damage::damaged(vec![
            topic_archive(2, 3, Codec::None),
            topic_archive(1, 1, Codec::None),
        ]).prop_map(refit_checksums)
    ) {
        let (result, info) = measured(&input, read_archive);
        if let Err(e) = &result {
            if e.chunk().is_some() {
                let text = e.to_string();
                prop_assert!(text.contains("chunk") && text.contains("at byte"), "{text}");
            }
        }
        prop_assert!(within(&info, &input, TOPIC_ARCHIVE_FIXED, 4), "{info:?} for {} bytes", input.len());
    }
}

/// A chunk header with a correct checksum that claims `stored_len` and `raw_len` bytes.
fn claiming_chunk(stored_len: u32, raw_len: u32) -> Vec<u8> {
    let mut bytes = topic_archive(1, 0, Codec::None);
    // Keep the file header and the META chunk, append a RECORDS chunk header (sequence 1).
    let meta_len = u32::from_le_bytes(bytes[16 + 16..16 + 20].try_into().unwrap()) as usize;
    bytes.truncate(16 + 32 + meta_len);
    let mut header = [0u8; 32];
    header[..4].copy_from_slice(b"CHNK");
    header[4] = 2;
    header[8..16].copy_from_slice(&1u64.to_le_bytes());
    header[16..20].copy_from_slice(&stored_len.to_le_bytes());
    header[20..24].copy_from_slice(&raw_len.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes
}

#[test]
fn topic_archive_oversized_lengths_are_refused_without_allocating() {
    for (stored, raw) in [(1u32 << 31, 16), (16, 1 << 31), (u32::MAX, u32::MAX)] {
        let input = claiming_chunk(stored, raw);
        let (result, info) = measured(&input, read_archive);
        let err = result.unwrap_err();
        assert_eq!(err.chunk(), Some(1), "{err}");
        assert!(err.to_string().contains("implausible length"), "{err}");
        assert!(info.bytes_max < 1 << 20, "{stored}/{raw}: {info:?}");
    }
}

#[test]
fn topic_archive_length_within_the_limit_but_past_the_end_allocates_what_is_there() {
    // 256 MiB claimed (the format's limit), 10 bytes present: a truncation, found without
    // reserving the claimed size.
    let mut input = claiming_chunk(256 << 20, 16);
    input.extend_from_slice(b"0123456789");
    let (result, info) = measured(&input, read_archive);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(info.bytes_max < 1 << 20, "{info:?}");
}

// ---- age files ----

struct AgeFixture {
    identities: Identities,
    seeds: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
}

fn age_fixture() -> &'static AgeFixture {
    static FIXTURE: OnceLock<AgeFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        use age::secrecy::ExposeSecret;
        let key = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.txt");
        std::fs::write(&path, format!("{}\n", key.to_string().expose_secret())).unwrap();
        let identities = Identities::from_file(&path).unwrap();
        let to = |keys: &[&age::x25519::Identity]| {
            let list: Vec<String> = keys.iter().map(|k| k.to_public().to_string()).collect();
            Recipients::parse(&list.join(",")).unwrap()
        };
        let seal = |recipients: &Recipients, data: &[u8]| {
            let mut w = recipients.encrypt(Vec::new()).unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap()
        };
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let seeds = vec![
            seal(&to(&[&key]), b"a small WAL file"),
            // Two payload chunks (64 KiB each), two recipients.
            seal(&to(&[&other, &key]), &payload),
            seal(&to(&[&key]), b""),
            // For another key only: the header is fine, no key matches.
            seal(&to(&[&other]), b"not for us"),
        ];
        AgeFixture {
            identities,
            seeds,
            _dir: dir,
        }
    })
}

/// Decrypts as fetch does: the header, then the whole stream.
fn decrypt(bytes: &[u8]) -> Result<usize, String> {
    let ids = &age_fixture().identities;
    let mut out = Vec::new();
    ids.decrypt(bytes, AGE_SHOWN)
        .and_then(|mut r| r.read_to_end(&mut out))
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn age_header(input in damage::damaged(age_fixture().seeds.clone())) {
        let (result, info) = measured(&input, |b| {
            encryption::check_header(b, AGE_SHOWN).map_err(|e| e.to_string())
        });
        if let Err(e) = &result {
            prop_assert!(e.contains(AGE_SHOWN), "error does not name the file: {e}");
        }
        // age loads its message catalogue once (about 70 KiB, kept for the process).
        prop_assert!(within(&info, &input, 192 << 10, 4), "{info:?} for {} bytes", input.len());
    }

    #[test]
    fn age_stream(input in damage::damaged(age_fixture().seeds.clone())) {
        let (result, info) = measured(&input, decrypt);
        if let Err(e) = &result {
            prop_assert!(e.contains(AGE_SHOWN), "error does not name the file: {e}");
        }
        // age holds one 64 KiB chunk (and its ciphertext) at a time, its message catalogue,
        // and the output collected here.
        prop_assert!(within(&info, &input, 512 << 10, 4), "{info:?} for {} bytes", input.len());
    }
}

#[test]
fn damaged_age_inputs_of_every_kind_name_the_file() {
    let seeds = &age_fixture().seeds;
    let big = &seeds[1];
    let mut flipped = big.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 1;
    let inputs = [
        big[..big.len() - 1].to_vec(),
        big[..big.len() / 2].to_vec(),
        flipped,
        seeds[0][..20].to_vec(),
        Vec::new(),
    ];
    for input in inputs {
        let err = decrypt(&input).unwrap_err();
        assert!(err.contains(AGE_SHOWN), "{} bytes: {err}", input.len());
    }
}

#[test]
fn topic_archive_raw_length_past_the_zstd_frame_is_refused_without_reserving_it() {
    // Found by `topic_archive_with_checksums_refitted`: an empty zstd META payload whose
    // header (checksums right) claims 8 MiB raw made the reader reserve the 8 MiB.
    let mut input = claiming_chunk(16, 16);
    input.truncate(16);
    let mut header = [0u8; 32];
    header[..4].copy_from_slice(b"CHNK");
    header[4] = 1; // META
    header[5] = 1; // zstd
    header[20..24].copy_from_slice(&(8u32 << 20).to_le_bytes());
    header[24..28].copy_from_slice(&crc32c::crc32c(&[]).to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    input.extend_from_slice(&header);
    let (result, info) = measured(&input, read_archive);
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("chunk 0") && err.contains("decompress"),
        "{err}"
    );
    assert!(info.bytes_max < 1 << 20, "{info:?}");
}
