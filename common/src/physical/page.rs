//! PostgreSQL's data page checksum (`pg_checksum_page`, PostgreSQL 9.3 and later): 32 parallel
//! FNV-1a-like sums over the page's 32-bit words with the `pd_checksum` field counted as zero,
//! two rounds of zeros, xor-folded, mixed with the block number and reduced to 1..=65535.
//! A base backup read from the data directory checks it, as pg_basebackup does, on pages
//! older than the backup's start when the cluster has data checksums on.

use super::incremental::PAGE_SIZE;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
/// The sums' starting states, fixed by PostgreSQL's on-disk format.
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];
/// Byte offset of `pd_checksum` in the page header (after the 8-byte LSN).
const CHECKSUM_AT: usize = 8;
/// Blocks per 1 GiB segment file (`RELSEG_SIZE`): segment `.N` starts at block N × this.
pub const BLOCKS_PER_SEGMENT: u32 = (1 << 30) / PAGE_SIZE as u32;

fn mix(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// The checksum PostgreSQL computes for `page` as block `block` of its relation fork.
pub fn checksum(page: &[u8], block: u32) -> u16 {
    assert_eq!(page.len(), PAGE_SIZE, "a page is {PAGE_SIZE} bytes");
    let mut sums = BASE_OFFSETS;
    for (row, words) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (j, word) in words.chunks_exact(4).enumerate() {
            let mut value = u32::from_le_bytes(word.try_into().expect("4 bytes"));
            // pd_checksum (bytes 8..10) counts as zero: the low half of word 2 of row 0.
            if row == 0 && j == CHECKSUM_AT / 4 {
                value &= 0xFFFF_0000;
            }
            sums[j] = mix(sums[j], value);
        }
    }
    for _ in 0..2 {
        for sum in &mut sums {
            *sum = mix(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ block;
    (folded % 65535 + 1) as u16
}

/// The checksum stored in the page header.
pub fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_le_bytes([page[CHECKSUM_AT], page[CHECKSUM_AT + 1]])
}

/// A new page (`pd_upper` is zero): never written, has no checksum.
pub fn is_new(page: &[u8]) -> bool {
    page[14..16] == [0, 0]
}

/// Whether a page that is not new carries the checksum of block `block`.
pub fn verifies(page: &[u8], block: u32) -> bool {
    is_new(page) || checksum(page, block) == stored_checksum(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_field_does_not_count_and_the_block_number_does() {
        let mut page = vec![0u8; PAGE_SIZE];
        for (i, b) in page.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        let sum = checksum(&page, 3);
        page[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            checksum(&page, 3),
            sum,
            "pd_checksum is not part of the sum"
        );
        assert!(verifies(&page, 3));
        assert!(!verifies(&page, 4), "the same page at another block fails");
        page[100] ^= 1;
        assert!(!verifies(&page, 3), "a flipped bit fails");
        assert!((1..=65535).contains(&sum));
    }

    #[test]
    fn new_pages_are_not_checked() {
        assert!(verifies(&vec![0u8; PAGE_SIZE], 9));
    }
}
