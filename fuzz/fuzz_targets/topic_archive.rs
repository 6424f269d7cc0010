//! The topic archive: every chunk, record and header, as kafka-replay reads it.
#![no_main]

use common::topic_archive::{ArchiveReader, Chunk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = ArchiveReader::open(data) else {
        return;
    };
    while let Ok(Some(chunk)) = reader.next_chunk() {
        if let Chunk::Records(records) = chunk {
            let _ = records.offset_range();
            for record in records.iter() {
                let _ = (record.key, record.value, record.headers().count());
            }
        }
    }
});
