//! WAL record format: encode into a caller's buffer, decode and verify from
//! bytes. No I/O here.
//!
//! Layout (all integers little-endian; see the durability argument in
//! [`crate::wal`]):
//!
//! ```text
//! offset size field
//!      0    4 magic      = RECORD_MAGIC ("RWR1" as bytes 0x52 0x57 0x52 0x31)
//!      4    1 version    = RECORD_VERSION (1)
//!      5    1 kind       caller-chosen, opaque to the WAL
//!      6    2 reserved   = 0
//!      8    4 length     payload bytes, <= RECORD_PAYLOAD_BYTES_MAX
//!     12    4 crc32c     over bytes [4, 12) ++ [16, 24 + length)
//!     16    8 sequence   per (generation, shard dir): 1, 2, 3, ... without gaps
//!     24    n payload
//! ```
//!
//! The checksum covers everything but the magic and itself, so a record is
//! accepted only if its version, kind, length, sequence and payload are all
//! exactly what was written.

/// First four bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"RWR1";
/// The one record version this code writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Fixed header bytes before the payload.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Largest payload a record may carry (the length field is a u32; we keep a
/// far smaller bound so that a corrupt length cannot make a reader allocate or
/// scan gigabytes).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(RECORD_HEADER_BYTES % 8 == 0);

/// Sequence number of a record: per generation and shard directory, the
/// first record is 1 and each next record is the previous plus one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sequence(pub u64);

/// Bytes one record with `payload_bytes` of payload occupies on disk.
pub const fn record_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_bytes
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[4..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..24]);
    crc32c::crc32c_append(crc, payload)
}

/// Writes one record into `out`, which must be exactly
/// `record_bytes(payload.len())` long.
pub fn encode_into(out: &mut [u8], kind: u8, sequence: Sequence, payload: &[u8]) {
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "invariant: callers bound payloads to RECORD_PAYLOAD_BYTES_MAX"
    );
    assert_eq!(
        out.len(),
        record_bytes(payload.len()),
        "invariant: exact record slot"
    );
    let (header, body) = out.split_at_mut(RECORD_HEADER_BYTES);
    header[0..4].copy_from_slice(&RECORD_MAGIC);
    header[4] = RECORD_VERSION;
    header[5] = kind;
    header[6..8].copy_from_slice(&0u16.to_le_bytes());
    header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[16..24].copy_from_slice(&sequence.0.to_le_bytes());
    body.copy_from_slice(payload);
    let crc = checksum(header, payload);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    // Verify before writing (STYLE 9): what we put in the buffer decodes back.
    debug_assert!(matches!(
        decode(out),
        Decoded::Record(r) if r.sequence == sequence && r.kind == kind && r.payload == payload
    ));
}

/// One verified record, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub sequence: Sequence,
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Bytes this record occupies on disk.
    pub fn encoded_bytes(&self) -> usize {
        record_bytes(self.payload.len())
    }
}

/// Why bytes at some offset are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes left than a record header.
    ShortHeader,
    /// The first four bytes are not [`RECORD_MAGIC`].
    BadMagic,
    /// Version byte is not [`RECORD_VERSION`] (checked after the checksum).
    BadVersion(u8),
    /// Reserved bytes are not zero (checked after the checksum).
    BadReserved,
    /// The length field exceeds the bound or the bytes left.
    BadLength(u32),
    /// The checksum does not match.
    BadChecksum,
}

/// Result of decoding at one offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record(Record<'a>),
    Invalid(RecordError),
}

/// Decodes and verifies the record starting at `bytes[0]`.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Decoded::Invalid(RecordError::ShortHeader);
    }
    let header = &bytes[..RECORD_HEADER_BYTES];
    if header[0..4] != RECORD_MAGIC {
        return Decoded::Invalid(RecordError::BadMagic);
    }
    let length = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let payload_bytes = length as usize;
    if payload_bytes > RECORD_PAYLOAD_BYTES_MAX || payload_bytes > bytes.len() - RECORD_HEADER_BYTES
    {
        return Decoded::Invalid(RecordError::BadLength(length));
    }
    let payload = &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_bytes];
    let stored = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if stored != checksum(header, payload) {
        return Decoded::Invalid(RecordError::BadChecksum);
    }
    if header[4] != RECORD_VERSION {
        return Decoded::Invalid(RecordError::BadVersion(header[4]));
    }
    if header[6..8] != [0, 0] {
        return Decoded::Invalid(RecordError::BadReserved);
    }
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&header[16..24]);
    Decoded::Record(Record {
        kind: header[5],
        sequence: Sequence(u64::from_le_bytes(sequence)),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(kind: u8, sequence: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; record_bytes(payload.len())];
        encode_into(&mut out, kind, Sequence(sequence), payload);
        out
    }

    /// Goal: a record decodes back to what was encoded, byte layout as documented.
    /// Method: encode a known record; check fields at their documented offsets; decode.
    #[test]
    fn round_trip_and_layout() {
        let bytes = encoded(7, 0x0102_0304_0506_0708, b"hello");
        assert_eq!(&bytes[0..4], b"RWR1");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 7);
        assert_eq!(&bytes[8..12], &5u32.to_le_bytes());
        assert_eq!(&bytes[16..24], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[24..], b"hello");
        let Decoded::Record(record) = decode(&bytes) else {
            panic!("valid record rejected")
        };
        assert_eq!(record.kind, 7);
        assert_eq!(record.sequence, Sequence(0x0102_0304_0506_0708));
        assert_eq!(record.payload, b"hello");
    }

    /// Goal: every single-bit flip anywhere in a record is detected.
    /// Method: flip each bit of an encoded record in turn; decode must not
    /// return a record.
    #[test]
    fn every_bit_flip_is_rejected() {
        let bytes = encoded(3, 42, b"payload bytes");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode(&damaged), Decoded::Invalid(_)),
                "bit {bit} flip accepted"
            );
        }
    }

    /// Goal: a record cut at any byte is rejected, never read past the end.
    /// Method: decode every strict prefix.
    #[test]
    fn every_prefix_is_rejected() {
        let bytes = encoded(1, 9, b"abcdefgh");
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Decoded::Invalid(_)),
                "cut {cut}"
            );
        }
    }

    /// Goal: zeroed (preallocated) space is never a record.
    /// Method: decode 4 KiB of zeros.
    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(
            decode(&[0u8; 4096]),
            Decoded::Invalid(RecordError::BadMagic)
        );
    }
}
