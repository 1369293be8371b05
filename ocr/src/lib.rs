//! Text found in an image: the boxes of every word Tesseract (5, Debian's libtesseract, LSTM
//! engine, English model) reads in it, at any confidence. The gateway blanks them to clean
//! burned-in annotations (docs/BURNED-IN.md).
//!
//! Tesseract is run in its sparse-text mode (find as much text as possible, in no particular
//! order: annotations are scattered over an image, not laid out as a page), on the image and on
//! its negative (annotations are often light on dark), scaled up when the text may be small.
//! A recognizer is expensive to start (its model is read): [`TextFinder`] keeps the ones it
//! started for the next image, one per thread using it at a time.

pub mod flat;

use std::ffi::{c_char, c_float, c_int, c_void, CString};
use std::path::Path;
use std::sync::Mutex;

/// Why text could not be looked for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OcrError {
    #[error("Tesseract could not start with language {language:?} (is its model installed?)")]
    Start { language: String },
    #[error("the image is {width}x{height} with {given} bytes, not one byte per pixel")]
    Image { width: u32, height: u32, given: usize },
    #[error("Tesseract could not read the image")]
    Recognize,
}

/// One word found: its box in the image's pixels (right and bottom exclusive) and how sure the
/// recognizer was of what it read (0 to 100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub confidence: f32,
}

#[repr(C)]
struct TessBaseAPI {
    _private: [u8; 0],
}
#[repr(C)]
struct TessResultIterator {
    _private: [u8; 0],
}
#[repr(C)]
struct TessPageIterator {
    _private: [u8; 0],
}

/// tesseract::PageSegMode::PSM_SPARSE_TEXT.
const PSM_SPARSE_TEXT: c_int = 11;
/// tesseract::PageIteratorLevel::RIL_WORD.
const RIL_WORD: c_int = 3;

extern "C" {
    fn TessBaseAPICreate() -> *mut TessBaseAPI;
    fn TessBaseAPIDelete(handle: *mut TessBaseAPI);
    fn TessBaseAPIEnd(handle: *mut TessBaseAPI);
    fn TessBaseAPIInit3(handle: *mut TessBaseAPI, datapath: *const c_char, language: *const c_char) -> c_int;
    fn TessBaseAPISetVariable(handle: *mut TessBaseAPI, name: *const c_char, value: *const c_char) -> c_int;
    fn TessBaseAPISetPageSegMode(handle: *mut TessBaseAPI, mode: c_int);
    fn TessBaseAPISetImage(
        handle: *mut TessBaseAPI,
        imagedata: *const u8,
        width: c_int,
        height: c_int,
        bytes_per_pixel: c_int,
        bytes_per_line: c_int,
    );
    fn TessBaseAPISetSourceResolution(handle: *mut TessBaseAPI, ppi: c_int);
    fn TessBaseAPIRecognize(handle: *mut TessBaseAPI, monitor: *mut c_void) -> c_int;
    fn TessBaseAPIGetIterator(handle: *mut TessBaseAPI) -> *mut TessResultIterator;
    fn TessBaseAPIClear(handle: *mut TessBaseAPI);
    fn TessResultIteratorDelete(handle: *mut TessResultIterator);
    fn TessResultIteratorNext(handle: *mut TessResultIterator, level: c_int) -> c_int;
    fn TessResultIteratorConfidence(handle: *const TessResultIterator, level: c_int) -> c_float;
    fn TessResultIteratorGetPageIterator(handle: *mut TessResultIterator) -> *mut TessPageIterator;
    fn TessPageIteratorBoundingBox(
        handle: *const TessPageIterator,
        level: c_int,
        left: *mut c_int,
        top: *mut c_int,
        right: *mut c_int,
        bottom: *mut c_int,
    ) -> c_int;
}

/// One started recognizer.
#[derive(Debug)]
struct Engine(*mut TessBaseAPI);

// SAFETY: a TessBaseAPI holds no thread-affine state; it is used by one thread at a time
// (TextFinder hands each out to one caller and takes it back) and never shared.
#[allow(unsafe_code)]
unsafe impl Send for Engine {}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: the handle came from TessBaseAPICreate, is not null, and is ended and
        // deleted once, here.
        #[allow(unsafe_code)]
        unsafe {
            TessBaseAPIEnd(self.0);
            TessBaseAPIDelete(self.0);
        }
    }
}

fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

impl Engine {
    fn start(data_dir: Option<&CString>, language: &str) -> Result<Engine, OcrError> {
        let failed = || OcrError::Start { language: language.to_owned() };
        // SAFETY: TessBaseAPICreate takes nothing and returns a new handle or null.
        #[allow(unsafe_code)]
        let handle = unsafe { TessBaseAPICreate() };
        if handle.is_null() {
            return Err(failed());
        }
        let engine = Engine(handle);
        let language_c = c_string(language);
        // SAFETY: the handle is live; the data path is a NUL-terminated string or null (the
        // compiled-in default), the language a NUL-terminated string, both outliving the call.
        #[allow(unsafe_code)]
        let status = unsafe {
            TessBaseAPIInit3(engine.0, data_dir.map_or(std::ptr::null(), |d| d.as_ptr()), language_c.as_ptr())
        };
        if status != 0 {
            return Err(failed());
        }
        // Tesseract's diagnostics go nowhere: they could quote what it read.
        let (name, value) = (c_string("debug_file"), c_string("/dev/null"));
        // SAFETY: the handle is live; both strings are NUL-terminated and outlive the call.
        #[allow(unsafe_code)]
        unsafe {
            TessBaseAPISetVariable(engine.0, name.as_ptr(), value.as_ptr());
        }
        // SAFETY: the handle is live; the mode is a valid PageSegMode.
        #[allow(unsafe_code)]
        unsafe {
            TessBaseAPISetPageSegMode(engine.0, PSM_SPARSE_TEXT)
        };
        Ok(engine)
    }

    /// The words found in an 8-bit grey image, `width` x `height`, rows packed.
    fn words(&mut self, grey: &[u8], width: u32, height: u32) -> Result<Vec<TextBox>, OcrError> {
        // SAFETY: the handle is live and used by this thread alone (&mut self); `grey` holds
        // width x height bytes (checked by the caller), one byte per pixel, rows of `width`
        // bytes, and outlives every use of it (Recognize below; Clear drops the image before
        // this returns).
        #[allow(unsafe_code)]
        let status = unsafe {
            TessBaseAPISetImage(self.0, grey.as_ptr(), width as c_int, height as c_int, 1, width as c_int);
            TessBaseAPISetSourceResolution(self.0, 300);
            TessBaseAPIRecognize(self.0, std::ptr::null_mut())
        };
        let mut found = Vec::new();
        if status == 0 {
            // SAFETY: the handle is live and has recognized its image; the iterator it returns
            // (or null when nothing was found) is deleted once, below.
            #[allow(unsafe_code)]
            let words = unsafe { TessBaseAPIGetIterator(self.0) };
            if !words.is_null() {
                loop {
                    let (mut left, mut top, mut right, mut bottom) = (0, 0, 0, 0);
                    // SAFETY: the iterator is live; the page iterator it gives is owned by it
                    // (not deleted here); the out-pointers are to locals.
                    #[allow(unsafe_code)]
                    let (has_box, confidence) = unsafe {
                        let page = TessResultIteratorGetPageIterator(words);
                        let has_box =
                            TessPageIteratorBoundingBox(page, RIL_WORD, &mut left, &mut top, &mut right, &mut bottom);
                        (has_box != 0, TessResultIteratorConfidence(words, RIL_WORD))
                    };
                    if has_box {
                        let clamp = |v: c_int, max: u32| (v.max(0) as u32).min(max);
                        found.push(TextBox {
                            left: clamp(left, width),
                            top: clamp(top, height),
                            right: clamp(right, width),
                            bottom: clamp(bottom, height),
                            confidence,
                        });
                    }
                    // SAFETY: the iterator is live.
                    #[allow(unsafe_code)]
                    let more = unsafe { TessResultIteratorNext(words, RIL_WORD) };
                    if more == 0 {
                        break;
                    }
                }
                // SAFETY: the iterator came from TessBaseAPIGetIterator and is deleted once.
                #[allow(unsafe_code)]
                unsafe {
                    TessResultIteratorDelete(words)
                };
            }
        }
        // SAFETY: the handle is live; Clear drops the image and results, so nothing refers to
        // `grey` after this returns.
        #[allow(unsafe_code)]
        unsafe {
            TessBaseAPIClear(self.0)
        };
        if status != 0 {
            return Err(OcrError::Recognize);
        }
        Ok(found)
    }
}

/// Finds text in images; recognizers are started as needed and kept for the next image.
#[derive(Debug)]
pub struct TextFinder {
    data_dir: Option<CString>,
    language: String,
    idle: Mutex<Vec<Engine>>,
}

/// Text smaller than this many pixels high is read better scaled up.
const SMALL_IMAGE: u32 = 1024;

impl TextFinder {
    /// A finder with the model of `language` from `data_dir` (Tesseract's `tessdata`
    /// directory; `None`: the one Tesseract was built with). One recognizer is started now, so
    /// a missing model is an error at start-up, not at the first image.
    pub fn new(data_dir: Option<&Path>, language: &str) -> Result<TextFinder, OcrError> {
        let data_dir = data_dir.map(|d| c_string(&d.to_string_lossy()));
        let first = Engine::start(data_dir.as_ref(), language)?;
        Ok(TextFinder { data_dir, language: language.to_owned(), idle: Mutex::new(vec![first]) })
    }

    fn engine(&self) -> Result<Engine, OcrError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(engine) => Ok(engine),
            None => Engine::start(self.data_dir.as_ref(), &self.language),
        }
    }

    fn give_back(&self, engine: Engine) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(engine);
    }

    /// Every word found in an 8-bit grey image (`width` x `height`, one byte per pixel, rows
    /// packed), as it is and as its negative, in the image's coordinates. A small image is read
    /// at twice its size, as Tesseract reads text of fewer than about 20 pixels poorly.
    pub fn find(&self, grey: &[u8], width: u32, height: u32) -> Result<Vec<TextBox>, OcrError> {
        if width == 0 || height == 0 || grey.len() != width as usize * height as usize {
            return Err(OcrError::Image { width, height, given: grey.len() });
        }
        let scale = if width.max(height) < SMALL_IMAGE { 2 } else { 1 };
        let (scaled, w, h) = if scale == 1 { (grey.to_vec(), width, height) } else { doubled(grey, width, height) };
        let negative: Vec<u8> = scaled.iter().map(|v| 255 - v).collect();
        let mut engine = self.engine()?;
        let found = engine.words(&scaled, w, h).and_then(|mut words| {
            words.extend(engine.words(&negative, w, h)?);
            Ok(words)
        });
        self.give_back(engine);
        Ok(found?
            .into_iter()
            .map(|b| TextBox {
                left: b.left / scale,
                top: b.top / scale,
                right: b.right.div_ceil(scale).min(width),
                bottom: b.bottom.div_ceil(scale).min(height),
                confidence: b.confidence,
            })
            .filter(|b| b.right > b.left && b.bottom > b.top)
            .collect())
    }
}

/// The image at twice its width and height (each pixel repeated).
fn doubled(grey: &[u8], width: u32, height: u32) -> (Vec<u8>, u32, u32) {
    let (w, h) = (width as usize, height as usize);
    let mut out = Vec::with_capacity(w * h * 4);
    for row in grey.chunks_exact(w) {
        let wide: Vec<u8> = row.iter().flat_map(|&v| [v, v]).collect();
        out.extend_from_slice(&wide);
        out.extend_from_slice(&wide);
    }
    (out, width * 2, height * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_image_has_no_text_and_a_bad_one_is_an_error() {
        let finder = TextFinder::new(None, "eng").expect("Tesseract and its English model");
        assert!(finder.find(&vec![0u8; 200 * 100], 200, 100).expect("read").is_empty());
        assert!(finder.find(&[0u8; 10], 200, 100).is_err());
        assert!(TextFinder::new(None, "no-such-language").is_err());
    }
}
