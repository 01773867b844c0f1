//! One segment file: its name, its header, its creation (create, preallocate,
//! write the header block). It never syncs: the committer in
//! [`crate::group_commit`] decides when data and directory entries are synced.
//!
//! Header (first [`SEGMENT_HEADER_BYTES`] of the file, little-endian):
//!
//! ```text
//! offset size field
//!      0    8 magic          = SEGMENT_MAGIC ("RWALSEG1")
//!      8    4 version        = 1
//!     12    4 crc32c         over bytes [0, 12) ++ [16, 64)
//!     16    8 generation     run counter, from `next_generation`
//!     24    8 index          0, 1, 2, ... within (generation, dir)
//!     32    8 first_sequence sequence of the first record in this segment,
//!                            1..=FIRST_SEQUENCE_MAX
//!     40    8 segment_bytes  preallocated length of the file
//!     48   16 reserved       = 0
//! ```

use std::io;
use std::path::Path;

use super::storage::{Storage, WAL_BLOCK_BYTES};

pub const SEGMENT_MAGIC: [u8; 8] = *b"RWALSEG1";
pub const SEGMENT_VERSION: u32 = 1;
/// Records start right after the header.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Largest `first_sequence` a valid header holds. The writer starts every
/// generation at sequence 1 and cannot append 2^63 records, so a header
/// outside `1..=FIRST_SEQUENCE_MAX` (CRC intact or not) is damage; the
/// bound also keeps `sequence + 1` inside `u64` for every record a segment
/// can hold (at most `segment_bytes / 24`), so readers need no overflow
/// checks.
pub const FIRST_SEQUENCE_MAX: u64 = u64::MAX / 2;

const _: () = assert!(SEGMENT_HEADER_BYTES <= WAL_BLOCK_BYTES);

/// `<generation:020>-<index:010>.wal`: zero-padded so that sorting names
/// sorts by (generation, index), which is replay order within a directory.
pub fn segment_file_name(generation: u64, index: u64) -> String {
    format!("{generation:020}-{index:010}{SEGMENT_SUFFIX}")
}

/// Inverse of [`segment_file_name`]; `None` for any other name.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (generation, index) = stem.split_once('-')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(generation, 20) || !digits(index, 10) {
        return None;
    }
    Some((generation.parse().ok()?, index.parse().ok()?))
}

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub generation: u64,
    pub index: u64,
    pub first_sequence: u64,
    pub segment_bytes: u64,
}

/// Why the first bytes of a file are not a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentHeaderError {
    Short,
    BadMagic,
    BadChecksum,
    BadVersion(u32),
    /// `first_sequence` outside `1..=FIRST_SEQUENCE_MAX` (checked after the
    /// checksum): no writer produced it.
    BadFirstSequence(u64),
}

fn header_checksum(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&bytes[0..12]);
    crc32c::crc32c_append(crc, &bytes[16..SEGMENT_HEADER_BYTES])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(out)
}

impl SegmentHeader {
    pub fn encode_into(&self, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            SEGMENT_HEADER_BYTES,
            "invariant: exact header slot"
        );
        assert!(
            (1..=FIRST_SEQUENCE_MAX).contains(&self.first_sequence),
            "invariant: sequences start at 1 and stay far below u64::MAX"
        );
        out.fill(0);
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.index.to_le_bytes());
        out[32..40].copy_from_slice(&self.first_sequence.to_le_bytes());
        out[40..48].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = header_checksum(out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(SegmentHeaderError::Short);
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        let stored = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        if stored != header_checksum(bytes) {
            return Err(SegmentHeaderError::BadChecksum);
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != SEGMENT_VERSION {
            return Err(SegmentHeaderError::BadVersion(version));
        }
        let first_sequence = read_u64(bytes, 32);
        if !(1..=FIRST_SEQUENCE_MAX).contains(&first_sequence) {
            return Err(SegmentHeaderError::BadFirstSequence(first_sequence));
        }
        Ok(SegmentHeader {
            generation: read_u64(bytes, 16),
            index: read_u64(bytes, 24),
            first_sequence,
            segment_bytes: read_u64(bytes, 40),
        })
    }
}

/// Creates the segment file (it must not exist), preallocates
/// `header.segment_bytes` and writes the header block. Not synced: the caller
/// syncs the file and then the directory before anything in it is
/// acknowledged.
pub async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    header: &SegmentHeader,
) -> io::Result<S::File> {
    let file = create_spare(
        storage,
        dir,
        header.generation,
        header.index,
        header.segment_bytes,
    )
    .await?;
    write_header(storage, &file, header).await?;
    Ok(file)
}

/// Creates the file of segment `index` at its full preallocated size with
/// no header yet: every byte reads as zero. The committer prepares the next
/// segment this way ahead of time and writes its header when it starts
/// using it ([`write_header`]); recovery removes such a file when it is
/// found after the last segment that holds a header.
pub async fn create_spare<S: Storage>(
    storage: &S,
    dir: &Path,
    generation: u64,
    index: u64,
    segment_bytes: u64,
) -> io::Result<S::File> {
    assert!(
        segment_bytes % WAL_BLOCK_BYTES as u64 == 0 && segment_bytes > WAL_BLOCK_BYTES as u64,
        "invariant: segment_bytes validated by WalOptions::validate"
    );
    let path = dir.join(segment_file_name(generation, index));
    let file = storage.create_file(&path).await?;
    if let Err(error) = storage.preallocate(&file, segment_bytes).await {
        // Whatever `fallocate` got is given back, and the name is free for
        // the next attempt.
        if let Err(close) = storage.close(file).await {
            tracing::warn!(file = %path.display(), error = %close, "closing a WAL segment whose preallocation failed");
        }
        if let Err(remove) = storage.remove_file(&path).await {
            tracing::warn!(file = %path.display(), error = %remove, "removing a WAL segment whose preallocation failed; the next start removes it");
        }
        return Err(error);
    }
    Ok(file)
}

/// Writes the header block (header, then zeros) at offset 0; not synced.
pub async fn write_header<S: Storage>(
    storage: &S,
    file: &S::File,
    header: &SegmentHeader,
) -> io::Result<()> {
    let mut block = storage.alloc_buffer(WAL_BLOCK_BYTES);
    let bytes = S::buffer_bytes_mut(&mut block);
    bytes.fill(0);
    header.encode_into(&mut bytes[..SEGMENT_HEADER_BYTES]);
    storage.write_at(file, block, 0).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: names sort in (generation, index) order and parse back.
    /// Method: round-trip a few names; reject near misses.
    #[test]
    fn names_round_trip_and_sort() {
        let a = segment_file_name(2, 10);
        let b = segment_file_name(10, 1);
        assert!(a < b);
        assert_eq!(parse_segment_file_name(&a), Some((2, 10)));
        assert_eq!(parse_segment_file_name(&b), Some((10, 1)));
        assert_eq!(parse_segment_file_name("GENERATION"), None);
        assert_eq!(parse_segment_file_name("1-2.wal"), None);
        assert_eq!(parse_segment_file_name(&format!("{a}.tmp")), None);
    }

    /// Goal: the header round-trips and any bit flip is caught.
    /// Method: encode, decode; flip every bit, decode must fail.
    #[test]
    fn header_round_trip_and_bit_flips() {
        let header = SegmentHeader {
            generation: 3,
            index: 4,
            first_sequence: 5,
            segment_bytes: 1 << 20,
        };
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        header.encode_into(&mut bytes);
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&damaged).is_err(), "bit {bit}");
        }
    }
}
