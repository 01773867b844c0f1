//! Gunzip a whole request body with libdeflate into a per-shard buffer
//! whose size *is* the limit: a body that decompresses to more is a 413,
//! never an allocation.
//!
//! libdeflate decompresses whole buffers (no streaming state), which fits:
//! the wire body is already bounded and fully read. Multi-member gzip (what
//! `cat a.gz b.gz` and some clients produce) is handled by decompressing
//! member after member with `libdeflate_gzip_decompress_ex`, which reports
//! how much input each member used. The safe `libdeflater` wrapper does not
//! expose that count, so this module calls the same C library directly.

use std::fmt;
use std::ptr::NonNull;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_BAD_DATA,
    libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE, libdeflate_result_LIBDEFLATE_SUCCESS,
};

/// Why a gzip body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GzipError {
    /// The body does not start with the gzip magic bytes.
    InvalidHeader,
    /// A member is corrupt or truncated (bad deflate data, CRC or length).
    Corrupt { member: usize },
    /// Bytes after the last member that are not another member.
    TrailingGarbage { offset: usize },
    /// The decompressed body would exceed the limit.
    TooLarge { limit: usize },
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzipError::InvalidHeader => write!(f, "gzip: invalid header"),
            GzipError::Corrupt { member } => {
                write!(f, "gzip member {member} is corrupt or truncated")
            }
            GzipError::TrailingGarbage { offset } => {
                write!(f, "unexpected bytes after gzip data at offset {offset}")
            }
            GzipError::TooLarge { limit } => {
                write!(f, "decompressed body exceeds {limit} bytes")
            }
        }
    }
}

/// A libdeflate decompressor and the fixed output buffer, one per shard.
pub struct Gunzip {
    decompressor: NonNull<libdeflate_decompressor>,
    output: Vec<u8>,
}

impl Gunzip {
    /// `limit` is the largest decompressed body; the buffer is allocated
    /// now (zeroed pages are mapped lazily by the kernel).
    pub fn new(limit: usize) -> Gunzip {
        // SAFETY: allocation has no preconditions; null means out of memory.
        let raw = unsafe { libdeflate_alloc_decompressor() };
        let decompressor =
            NonNull::new(raw).expect("libdeflate decompressor allocation (out of memory)");
        Gunzip {
            decompressor,
            output: vec![0u8; limit],
        }
    }

    pub fn limit(&self) -> usize {
        self.output.len()
    }

    /// Decompresses every member of `input`; the result borrows the buffer.
    pub fn decompress(&mut self, input: &[u8]) -> Result<&[u8], GzipError> {
        if input.len() < 2 || input[0] != 0x1f || input[1] != 0x8b {
            return Err(GzipError::InvalidHeader);
        }
        let limit = self.output.len();
        let mut consumed_total = 0usize;
        let mut produced_total = 0usize;
        let mut member = 0usize;
        while consumed_total < input.len() {
            let rest = &input[consumed_total..];
            if member > 0 && (rest.len() < 2 || rest[0] != 0x1f || rest[1] != 0x8b) {
                return Err(GzipError::TrailingGarbage {
                    offset: consumed_total,
                });
            }
            let out = &mut self.output[produced_total..];
            let mut consumed = 0usize;
            let mut produced = 0usize;
            // SAFETY: the decompressor is valid for self's lifetime; `rest`
            // and `out` are live slices whose lengths are passed alongside;
            // libdeflate writes at most `out.len()` bytes and the two
            // out-parameters point to local usizes.
            let result = unsafe {
                libdeflate_gzip_decompress_ex(
                    self.decompressor.as_ptr(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                    &mut consumed,
                    &mut produced,
                )
            };
            #[allow(non_upper_case_globals)]
            match result {
                libdeflate_result_LIBDEFLATE_SUCCESS => {}
                libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => {
                    return Err(GzipError::TooLarge { limit })
                }
                libdeflate_result_LIBDEFLATE_BAD_DATA => return Err(GzipError::Corrupt { member }),
                _ => return Err(GzipError::Corrupt { member }),
            }
            assert!(
                consumed > 0 && consumed <= rest.len(),
                "libdeflate consumed within input"
            );
            consumed_total += consumed;
            produced_total += produced;
            member += 1;
        }
        Ok(&self.output[..produced_total])
    }
}

impl Drop for Gunzip {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        unsafe { libdeflate_free_decompressor(self.decompressor.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libdeflater::{CompressionLvl, Compressor};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut compressor = Compressor::new(CompressionLvl::default());
        let mut out = vec![0u8; compressor.gzip_compress_bound(data.len())];
        let n = compressor.gzip_compress(data, &mut out).expect("compress");
        out.truncate(n);
        out
    }

    /// Goal: single and multi-member gzip decode to the original bytes.
    /// Method: compress two parts separately, concatenate, decode.
    #[test]
    fn single_and_multi_member() {
        let mut gunzip = Gunzip::new(1 << 20);
        assert_eq!(
            gunzip.decompress(&gzip(b"cpu v=1\n")).unwrap(),
            b"cpu v=1\n"
        );
        let mut both = gzip(b"a v=1\n");
        both.extend_from_slice(&gzip(b"b v=2\n"));
        assert_eq!(gunzip.decompress(&both).unwrap(), b"a v=1\nb v=2\n");
    }

    /// Goal: corrupt, truncated and non-gzip input are errors, not panics.
    /// Method: cut a member at every length; flip bytes; plain text.
    #[test]
    fn damaged_input_is_refused() {
        let mut gunzip = Gunzip::new(1 << 20);
        let good = gzip(b"cpu,host=a usage=1.5 1\n".repeat(50).as_slice());
        for cut in 0..good.len() {
            assert!(
                gunzip.decompress(&good[..cut]).is_err(),
                "cut {cut} accepted"
            );
        }
        let mut flipped = good.clone();
        let last = flipped.len() - 6;
        flipped[last] ^= 0x55;
        assert!(matches!(
            gunzip.decompress(&flipped),
            Err(GzipError::Corrupt { .. })
        ));
        assert_eq!(
            gunzip.decompress(b"cpu v=1\n"),
            Err(GzipError::InvalidHeader)
        );
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"xx");
        assert!(matches!(
            gunzip.decompress(&trailing),
            Err(GzipError::TrailingGarbage { .. })
        ));
    }

    /// Goal: a gzip bomb is refused at the limit without growing anything.
    /// Method: 10 MB of zeros (≈10 KB compressed) into a 1 MiB buffer.
    #[test]
    fn bomb_is_too_large() {
        let mut gunzip = Gunzip::new(1 << 20);
        let bomb = gzip(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            gunzip.decompress(&bomb),
            Err(GzipError::TooLarge { limit: 1 << 20 })
        );
        assert_eq!(gunzip.limit(), 1 << 20);
        // Exactly at the limit still fits.
        let exact = gzip(&vec![b'x'; 1 << 20]);
        assert_eq!(gunzip.decompress(&exact).unwrap().len(), 1 << 20);
    }
}
