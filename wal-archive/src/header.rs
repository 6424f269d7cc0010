//! The long page header at the start of every WAL segment: enough to tell that a file is the
//! segment its name says, of the cluster we expect.

/// `XLP_LONG_HEADER`: set in `xlp_info` of a segment's first page.
const XLP_LONG_HEADER: u16 = 0x0002;

/// Fields of `XLogLongPageHeaderData` (little-endian, as written on x86 and ARM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: u16,
    pub timeline: u32,
    pub page_address: u64,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

impl SegmentHeader {
    /// Parses the first 40 bytes of a segment.
    pub fn parse(bytes: &[u8]) -> Option<SegmentHeader> {
        if bytes.len() < 40 {
            return None;
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        if u16_at(2) & XLP_LONG_HEADER == 0 {
            return None;
        }
        Some(SegmentHeader {
            magic: u16_at(0),
            timeline: u32_at(4),
            page_address: u64_at(8),
            system_identifier: u64_at(24),
            segment_size: u32_at(32),
            block_size: u32_at(36),
        })
    }

    /// Why this header does not belong to segment `segno`, if it does not.
    pub fn mismatch(&self, segno: u64) -> Option<String> {
        let size = u64::from(self.segment_size);
        if size == 0 || !size.is_power_of_two() {
            return Some(format!("implausible segment size {size} in the header"));
        }
        if self.page_address != segno * size {
            return Some(format!(
                "header says position {:X}, the name says segment {segno:X}",
                self.page_address
            ));
        }
        None
    }
}
