//! 12-bit JPEG (DICOM JPEG Extended, Process 4: 1.2.840.10008.1.2.4.51 with 12-bit samples),
//! which the pure-Rust JPEG decoders do not read, decoded by libjpeg-turbo 3's TurboJPEG API
//! (built from source with the crate `turbojpeg-sys`).
//!
//! One grey frame at a time: its size is checked against the frame's before any sample is
//! allocated, and libjpeg-turbo is told the most pixels it may produce.

use std::ffi::CStr;

use turbojpeg_sys as tj;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Jpeg12Error {
    #[error("libjpeg-turbo could not start")]
    NoDecoder,
    #[error("{0}")]
    Decoder(String),
    #[error("the JPEG is {width}x{height} at {precision} bits, not the {columns}x{rows} 12-bit frame the data set describes")]
    NotTheFrame { width: i32, height: i32, precision: i32, columns: usize, rows: usize },
}

/// A TurboJPEG decompressor, destroyed when dropped.
#[derive(Debug)]
struct Decompressor(tj::tjhandle);

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init, is not null, and is destroyed once.
        #[allow(unsafe_code)]
        unsafe {
            tj::tj3Destroy(self.0)
        }
    }
}

impl Decompressor {
    fn new() -> Result<Decompressor, Jpeg12Error> {
        // SAFETY: tj3Init takes an integer and returns a handle or null.
        #[allow(unsafe_code)]
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
        if handle.is_null() {
            return Err(Jpeg12Error::NoDecoder);
        }
        Ok(Decompressor(handle))
    }

    /// The decoder's last error.
    fn error(&self) -> Jpeg12Error {
        // SAFETY: the handle is live; tj3GetErrorStr returns a NUL-terminated string owned by
        // the handle (or a static one), copied here before the handle can change it.
        #[allow(unsafe_code)]
        let text = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        Jpeg12Error::Decoder(text.to_string_lossy().into_owned())
    }

    fn get(&self, parameter: tj::TJPARAM) -> i32 {
        // SAFETY: the handle is live; tj3Get reads one parameter.
        #[allow(unsafe_code)]
        unsafe {
            tj::tj3Get(self.0, parameter as i32)
        }
    }
}

/// The samples of one 12-bit grey JPEG frame of `rows` x `columns`, row by row.
pub fn decode_grey(jpeg: &[u8], rows: usize, columns: usize) -> Result<Vec<u16>, Jpeg12Error> {
    let decompressor = Decompressor::new()?;
    let pixels = i32::try_from(rows.saturating_mul(columns)).unwrap_or(i32::MAX);
    // SAFETY: the handle is live; tj3Set sets one parameter. The JPEG buffer is read within
    // the length given.
    #[allow(unsafe_code)]
    let header = unsafe {
        tj::tj3Set(decompressor.0, tj::TJPARAM_TJPARAM_MAXPIXELS as i32, pixels);
        tj::tj3DecompressHeader(decompressor.0, jpeg.as_ptr(), jpeg.len() as _)
    };
    if header != 0 {
        return Err(decompressor.error());
    }
    let (width, height, precision) = (
        decompressor.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        decompressor.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
        decompressor.get(tj::TJPARAM_TJPARAM_PRECISION),
    );
    if usize::try_from(width).ok() != Some(columns) || usize::try_from(height).ok() != Some(rows) || precision != 12 {
        return Err(Jpeg12Error::NotTheFrame { width, height, precision, columns, rows });
    }
    let mut samples = vec![0i16; rows * columns];
    // SAFETY: `samples` holds width x height samples of one component, what TJPF_GRAY with a
    // pitch of 0 (packed rows) writes; the JPEG buffer is read within the length given.
    #[allow(unsafe_code)]
    let decoded = unsafe {
        tj::tj3Decompress12(decompressor.0, jpeg.as_ptr(), jpeg.len() as _, samples.as_mut_ptr(), 0, tj::TJPF_TJPF_GRAY)
    };
    if decoded != 0 {
        return Err(decompressor.error());
    }
    // 12-bit samples are 0..4095: the bit pattern the data set stores.
    Ok(samples.into_iter().map(|s| s as u16 & 0x0FFF).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_jpeg_is_an_error_not_a_crash() {
        assert!(matches!(decode_grey(b"not a jpeg", 2, 2), Err(Jpeg12Error::Decoder(_))));
        assert!(matches!(decode_grey(&[], 2, 2), Err(Jpeg12Error::Decoder(_))));
    }
}
