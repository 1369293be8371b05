//! HTJ2K (High-Throughput JPEG 2000, ISO/IEC 15444-15; DICOM 1.2.840.10008.1.2.4.201, .202
//! and .203) decoded by OpenJPH, the HT block coder's reference implementation, through a small
//! C++ shim (src/shim.cpp) over Debian's libopenjph.
//!
//! One codestream (one frame) at a time: its header is read first and its geometry checked
//! against the frame the data set describes before any sample is allocated.

use std::ffi::{c_char, c_int, CStr};

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Htj2kError {
    #[error("{0}")]
    Decoder(String),
    #[error(
        "the codestream is {width}x{height} with {components} component(s) of {bit_depth} bits, not the \
         {columns}x{rows} frame of {samples} sample(s) of at most {bits_allocated} bits the data set describes"
    )]
    NotTheFrame {
        width: u32,
        height: u32,
        components: u32,
        bit_depth: u32,
        columns: usize,
        rows: usize,
        samples: usize,
        bits_allocated: usize,
    },
}

/// The frame a data set describes, which the codestream must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub rows: usize,
    pub columns: usize,
    pub samples_per_pixel: usize,
    /// 8 or 16.
    pub bits_allocated: usize,
}

extern "C" {
    fn htj2k_info(
        data: *const u8,
        len: usize,
        width: *mut u32,
        height: *mut u32,
        components: *mut u32,
        bit_depth: *mut u32,
        is_signed: *mut c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn htj2k_decode(
        data: *const u8,
        len: usize,
        out: *mut u8,
        out_len: usize,
        bytes_per_sample: u32,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

fn message(buffer: &[c_char]) -> Htj2kError {
    // The shim writes a NUL-terminated message; the buffer was zeroed, so one is always there.
    let bytes: Vec<u8> = buffer.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Htj2kError::Decoder(
        CStr::from_bytes_until_nul(&[bytes.as_slice(), &[0]].concat())
            .map(|text| text.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "OpenJPH failed".into()),
    )
}

/// Decodes one HTJ2K codestream into native samples: `frame`'s pixels interleaved by pixel
/// (Planar Configuration 0), each sample little-endian in bits_allocated / 8 bytes, as a
/// DICOM native frame holds them; a codestream of another size, or of more components or
/// deeper samples, is refused before anything is decoded.
pub fn decode_frame(codestream: &[u8], frame: Frame) -> Result<Vec<u8>, Htj2kError> {
    let (mut width, mut height, mut components, mut bit_depth, mut is_signed) = (0u32, 0u32, 0u32, 0u32, 0 as c_int);
    let mut error = [0 as c_char; 512];
    // SAFETY: `codestream` is a live slice of `len` bytes, read only; every out-pointer is to a
    // local of the declared type; `error` is a zeroed buffer of `error_len` bytes that the shim
    // writes at most error_len bytes into, NUL-terminated. The shim catches every C++ exception.
    #[allow(unsafe_code)]
    let failed = unsafe {
        htj2k_info(
            codestream.as_ptr(),
            codestream.len(),
            &mut width,
            &mut height,
            &mut components,
            &mut bit_depth,
            &mut is_signed,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if failed != 0 {
        return Err(message(&error));
    }
    let bytes_per_sample = frame.bits_allocated / 8;
    if width as usize != frame.columns
        || height as usize != frame.rows
        || components as usize != frame.samples_per_pixel
        || !matches!(bytes_per_sample, 1 | 2)
        || bit_depth as usize > frame.bits_allocated
        || bit_depth == 0
    {
        return Err(Htj2kError::NotTheFrame {
            width,
            height,
            components,
            bit_depth,
            columns: frame.columns,
            rows: frame.rows,
            samples: frame.samples_per_pixel,
            bits_allocated: frame.bits_allocated,
        });
    }
    let mut out = vec![0u8; frame.rows * frame.columns * frame.samples_per_pixel * bytes_per_sample];
    // SAFETY: as above for `codestream` and `error`; `out` is a live, exclusively borrowed
    // buffer of `out_len` bytes, the exact size the shim checks for the geometry it read (which
    // was just checked to be `frame`), and it writes only within it.
    #[allow(unsafe_code)]
    let failed = unsafe {
        htj2k_decode(
            codestream.as_ptr(),
            codestream.len(),
            out.as_mut_ptr(),
            out.len(),
            bytes_per_sample as u32,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if failed != 0 {
        return Err(message(&error));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_codestream_is_an_error_not_a_crash() {
        let frame = Frame { rows: 2, columns: 2, samples_per_pixel: 1, bits_allocated: 16 };
        for broken in [&b""[..], &[0xFF, 0x4F, 0xFF, 0x51, 0, 0][..], &[0u8; 64][..]] {
            assert!(decode_frame(broken, frame).is_err());
        }
    }
}
