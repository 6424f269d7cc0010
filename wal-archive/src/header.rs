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
        // A damaged size or a name near the end of the LSN space must not overflow: no
        // real segment starts beyond it.
        if segno.checked_mul(size) != Some(self.page_address) {
            return Some(format!(
                "header says position {:X}, the name says segment {segno:X}",
                self.page_address
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `XLogLongPageHeaderData` of segment `segno` as PostgreSQL 15 writes it on a
    /// little-endian machine: 16 MiB segments of 8 KiB pages.
    fn long_header(timeline: u32, segno: u64, system_identifier: u64) -> Vec<u8> {
        let mut page = Vec::new();
        page.extend_from_slice(&0xD110u16.to_le_bytes()); // xlp_magic
        page.extend_from_slice(&XLP_LONG_HEADER.to_le_bytes()); // xlp_info
        page.extend_from_slice(&timeline.to_le_bytes()); // xlp_tli
        page.extend_from_slice(&(segno << 24).to_le_bytes()); // xlp_pageaddr
        page.extend_from_slice(&0u32.to_le_bytes()); // xlp_rem_len
        page.extend_from_slice(&[0; 4]); // padding
        page.extend_from_slice(&system_identifier.to_le_bytes()); // xlp_sysid
        page.extend_from_slice(&(16u32 << 20).to_le_bytes()); // xlp_seg_size
        page.extend_from_slice(&8192u32.to_le_bytes()); // xlp_xlog_blcksz
        page
    }

    #[test]
    fn parses_every_field_at_its_offset() {
        let bytes = long_header(3, 0x1_0000_0005, 7_312_345_678_901_234_567);
        assert_eq!(bytes.len(), 40);
        assert_eq!(
            SegmentHeader::parse(&bytes),
            Some(SegmentHeader {
                magic: 0xD110,
                timeline: 3,
                page_address: 0x1_0000_0005 << 24,
                system_identifier: 7_312_345_678_901_234_567,
                segment_size: 16 << 20,
                block_size: 8192,
            })
        );
    }

    #[test]
    fn short_input_and_short_headers_are_not_segment_starts() {
        let bytes = long_header(1, 1, 1);
        assert_eq!(SegmentHeader::parse(&bytes[..39]), None);
        assert_eq!(SegmentHeader::parse(&[]), None);
        // A page without the long-header flag is not a segment's first page.
        let mut short = bytes.clone();
        short[2..4].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(SegmentHeader::parse(&short), None);
        // Bytes after the header do not matter.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xFF; 100]);
        assert_eq!(SegmentHeader::parse(&longer), SegmentHeader::parse(&bytes));
    }

    #[test]
    fn mismatch_names_a_header_of_another_segment() {
        let header = SegmentHeader::parse(&long_header(1, 5, 1)).unwrap();
        assert_eq!(header.mismatch(5), None);
        assert_eq!(
            header.mismatch(6).as_deref(),
            Some("header says position 5000000, the name says segment 6")
        );
        // Near the end of the LSN space the multiplication must not overflow.
        assert!(header.mismatch(u64::MAX).is_some());
        let odd = SegmentHeader {
            segment_size: 3 << 20,
            ..header
        };
        assert_eq!(
            odd.mismatch(5).as_deref(),
            Some("implausible segment size 3145728 in the header")
        );
        let zero = SegmentHeader {
            segment_size: 0,
            ..header
        };
        assert!(zero.mismatch(0).is_some());
    }
}
