//! Burned-in text cleaned out of the pixel data (`burned_in = "clean"`; PS3.15 E.3.1, the Clean
//! Pixel Data Option): what a project gets instead of withholding an instance whose pixels may
//! show identity (docs/BURNED-IN.md).
//!
//! The instance is decoded (crate::core::pixels) and its text found: the rectangles of the region
//! rules that match its device (crate::core::privacy::region_rules), every word Tesseract reads at any
//! confidence, and every line of flat-coloured characters (crate `dicomweb-ocr`). Each box, two
//! pixels wider all round, is blanked to black in every frame. A multi-frame instance is
//! searched on its first, middle and last frames (burned-in text stays put from frame to
//! frame) and blanked in all. The result goes out in the syntax it was stored in when that is
//! RLE or JPEG-LS lossless (encoded again), else in Explicit VR Little Endian; BurnedInAnnotation
//! NO; the de-identification then adds code 113101. Nothing is re-encoded lossily: a source that
//! was lossy stays marked so (crate::core::pixels).
//!
//! What cannot be cleaned (no image, undecodable, over the decode bound, samples of a size the
//! gateway does not handle, text detection failing) is withheld, with its reason.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicomweb_ocr::TextFinder;
use pacs_adapter::RetrievedInstance;

use crate::config::DataSetLimitsConfig;
use crate::core::pixels::decode_budget::DecodeBudget;
use crate::core::privacy::region_rules::{Rectangle, RegionRules};

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
/// Pixels added all round each box found, so that a character's edge is not left standing.
const MARGIN: u32 = 2;
/// Raised whenever what cleaning does to the same instance changes (the detector, the margin),
/// so that instances cleaned before are not served from the cache as cleaned now.
pub(crate) const CLEANING_REVISION: u32 = 3;

/// Cleans instances; shared by every project that cleans.
#[derive(Debug)]
pub struct Cleaner {
    rules: RegionRules,
    text: TextFinder,
    /// Cleanings running now, at most one per core: each holds a decoded instance and keeps a
    /// core busy with text detection.
    running: Mutex<usize>,
    freed: Condvar,
    at_once: usize,
    /// Shared with every other decode of the gateway.
    budget: Arc<DecodeBudget>,
    pub(crate) cleaned: AtomicU64,
    pub(crate) uncleanable: AtomicU64,
}

/// The part of a frame's samples to look for text in: as 8-bit grey, and as packed colours.
struct View {
    grey: Vec<u8>,
    colours: Option<Vec<u32>>,
}

/// An instance's decoded image as the cleaner reads and writes it.
struct Image {
    rows: u32,
    columns: u32,
    frames: u32,
    samples: u32,
    /// Bytes per sample: 1 or 2.
    bytes: u32,
    planar: bool,
    photometric: String,
    data: Vec<u8>,
}

impl Image {
    fn index(&self, frame: u32, y: u32, x: u32, sample: u32) -> usize {
        let (rows, columns, samples) = (self.rows as usize, self.columns as usize, self.samples as usize);
        let frame_samples = rows * columns * samples;
        let within = if self.planar {
            sample as usize * rows * columns + y as usize * columns + x as usize
        } else {
            (y as usize * columns + x as usize) * samples + sample as usize
        };
        (frame as usize * frame_samples + within) * self.bytes as usize
    }

    fn sample(&self, frame: u32, y: u32, x: u32, sample: u32) -> u32 {
        let at = self.index(frame, y, x, sample);
        if self.bytes == 1 {
            u32::from(self.data[at])
        } else {
            u32::from(u16::from_le_bytes([self.data[at], self.data[at + 1]]))
        }
    }

    fn set(&mut self, frame: u32, y: u32, x: u32, sample: u32, value: u32) {
        let at = self.index(frame, y, x, sample);
        if self.bytes == 1 {
            self.data[at] = value as u8;
        } else {
            self.data[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
        }
    }

    /// The value of black in each sample: 0, but for MONOCHROME1 (the largest value) and for
    /// the colour-difference samples of YBR (their middle).
    fn black(&self, sample: u32, bits_stored: u32) -> u32 {
        let top = (1u32 << bits_stored.clamp(1, 8 * self.bytes)) - 1;
        match (self.photometric.as_str(), sample) {
            ("MONOCHROME1", _) => top,
            (p, 1 | 2) if p.starts_with("YBR") => top / 2 + 1,
            _ => 0,
        }
    }

    /// One frame as 8-bit grey (luma for RGB, Y for YBR; a grey frame stretched from its
    /// lowest to its highest value) and, in colour, each pixel's samples packed.
    fn view(&self, frame: u32) -> View {
        let (rows, columns) = (self.rows, self.columns);
        let mut luma = Vec::with_capacity((rows * columns) as usize);
        let mut colours = (self.samples == 3).then(|| Vec::with_capacity((rows * columns) as usize));
        for y in 0..rows {
            for x in 0..columns {
                if self.samples == 3 {
                    let (a, b, c) =
                        (self.sample(frame, y, x, 0), self.sample(frame, y, x, 1), self.sample(frame, y, x, 2));
                    let value = if self.photometric.starts_with("YBR") { a } else { (a * 3 + b * 6 + c) / 10 };
                    luma.push(value);
                    if let Some(colours) = colours.as_mut() {
                        colours.push((a & 0xFF) << 16 | (b & 0xFF) << 8 | (c & 0xFF));
                    }
                } else {
                    luma.push(self.sample(frame, y, x, 0));
                }
            }
        }
        let (low, high) = (luma.iter().copied().min().unwrap_or(0), luma.iter().copied().max().unwrap_or(0));
        let span = (high - low).max(1);
        let grey = luma.iter().map(|&v| ((v - low) * 255 / span) as u8).collect();
        View { grey, colours }
    }
}

fn number(object: &InMemDicomObject, tag: dicom_core::Tag, default: u32) -> u32 {
    object
        .get(tag)
        .and_then(|e| e.to_int::<u32>().ok().or_else(|| e.to_str().ok()?.trim().parse().ok()))
        .unwrap_or(default)
}

fn text(object: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    object
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|t| t.trim_matches([' ', '\0']).to_uppercase())
        .unwrap_or_default()
}

/// The frames searched for text: all of a short instance; else its first, middle and last.
fn searched_frames(frames: u32) -> Vec<u32> {
    if frames <= 3 {
        (0..frames).collect()
    } else {
        vec![0, frames / 2, frames - 1]
    }
}

impl Cleaner {
    /// A cleaner with the region rules of `rules` (none when `None`) and Tesseract's English
    /// model; an error when the rules are wrong or Tesseract cannot start.
    pub fn start(rules: Option<&Path>, budget: Arc<DecodeBudget>) -> anyhow::Result<Cleaner> {
        let rules = match rules {
            Some(path) => RegionRules::load(path)?,
            None => RegionRules::default(),
        };
        let text = TextFinder::new(None, "eng")
            .map_err(|e| anyhow::anyhow!("burned_in = \"clean\" needs Tesseract: {e} (Debian: tesseract-ocr-eng)"))?;
        let at_once = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Cleaner {
            rules,
            text,
            running: Mutex::new(0),
            freed: Condvar::new(),
            at_once,
            budget,
            cleaned: AtomicU64::new(0),
            uncleanable: AtomicU64::new(0),
        })
    }

    /// What shapes a cleaned instance besides the instance: the rules and the detector's
    /// revision ([`CLEANING_REVISION`]), for the cache's scope.
    pub(crate) fn fingerprint(&self) -> String {
        format!("{CLEANING_REVISION} {:?}", self.rules)
    }

    /// The instance's data set with its burned-in text blanked and BurnedInAnnotation NO, and
    /// the transfer syntax it is encoded in (see [`put_pixels`]); or why it could not be cleaned. Blocking: call it off the async
    /// runtime. Waits while as many cleanings as the machine has cores are running.
    pub(crate) fn clean(
        &self,
        instance: &RetrievedInstance,
        limits: &DataSetLimitsConfig,
    ) -> Result<(Vec<u8>, &'static str), &'static str> {
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            while *running >= self.at_once {
                running = self.freed.wait(running).unwrap_or_else(|p| p.into_inner());
            }
            *running += 1;
        }
        let outcome = self.clean_now(instance, limits);
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.freed.notify_one();
        let counter = if outcome.is_ok() { &self.cleaned } else { &self.uncleanable };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    fn clean_now(
        &self,
        instance: &RetrievedInstance,
        limits: &DataSetLimitsConfig,
    ) -> Result<(Vec<u8>, &'static str), &'static str> {
        let mut object: FileDicomObject<InMemDicomObject> =
            dicom_object::from_reader(instance.part10.get(128..).unwrap_or_default())
                .map_err(|_| "could not be cleaned: it cannot be parsed")?;
        if object.get(tags::PIXEL_DATA).is_none() {
            return Err("could not be cleaned: it holds no image (an encapsulated document, say)");
        }
        let size = crate::core::dataset_limits::decoded_size(&object, limits)
            .map_err(|_| "could not be cleaned: its decoded pixel data is over dataset_limits.max_decoded_size")?;
        // Twice the decoded size: the decoded pixel data and its copy while it is taken out, or
        // the blanked pixels and their new encoding; within the budget every decode of the
        // gateway shares. Called on a blocking thread, which may wait here.
        let _reserved = futures::executor::block_on(self.budget.reserve(size.saturating_mul(2)));
        crate::core::pixels::decode_into(&mut object, EXPLICIT_VR_LE)
            .map_err(|_| "could not be cleaned: its pixel data cannot be decoded")?;
        let bits_allocated = number(&object, tags::BITS_ALLOCATED, 8);
        if !matches!(bits_allocated, 8 | 16) {
            return Err("could not be cleaned: samples of other than 8 or 16 bits");
        }
        // Taken out of the object, so that while the pixels are encoded again (RLE, JPEG-LS) the
        // decoded data is held once, not in the object as well.
        let data = object
            .take_element(tags::PIXEL_DATA)
            .ok()
            .and_then(|e| e.to_bytes().ok().map(|b| b.into_owned()))
            .ok_or("could not be cleaned: its pixel data cannot be read")?;
        let mut image = Image {
            rows: number(&object, tags::ROWS, 0),
            columns: number(&object, tags::COLUMNS, 0),
            frames: number(&object, tags::NUMBER_OF_FRAMES, 1).max(1),
            samples: number(&object, tags::SAMPLES_PER_PIXEL, 1),
            bytes: bits_allocated / 8,
            planar: number(&object, tags::PLANAR_CONFIGURATION, 0) == 1,
            photometric: text(&object, tags::PHOTOMETRIC_INTERPRETATION),
            data,
        };
        let expected = image.rows as usize
            * image.columns as usize
            * image.samples as usize
            * image.bytes as usize
            * image.frames as usize;
        if !matches!(image.samples, 1 | 3) || image.rows == 0 || image.columns == 0 || image.data.len() < expected {
            return Err("could not be cleaned: its pixel data does not hold the image its attributes describe");
        }
        let mut boxes: Vec<Rectangle> =
            self.rules.matching(&object).flat_map(|rule| rule.blank.iter().copied()).collect();
        for frame in searched_frames(image.frames) {
            let view = image.view(frame);
            let words = self
                .text
                .find(&view.grey, image.columns, image.rows)
                .map_err(|_| "could not be cleaned: text detection failed")?;
            boxes.extend(words.iter().map(|w| Rectangle {
                left: w.left,
                top: w.top,
                width: w.right - w.left,
                height: w.bottom - w.top,
            }));
            let lines = dicomweb_ocr::flat::text_lines(&view.grey, view.colours.as_deref(), image.columns, image.rows);
            // A line reaches a character further each way: its first or last character may
            // have merged with the image behind it and not been found as a character.
            boxes.extend(lines.iter().map(|l| {
                let reach = l.bottom - l.top;
                let (left, right) = (l.left.saturating_sub(reach), (l.right + reach).min(image.columns));
                Rectangle { left, top: l.top, width: right - left, height: l.bottom - l.top }
            }));
        }
        let bits_stored = number(&object, tags::BITS_STORED, bits_allocated);
        blank(&mut image, &boxes, bits_stored);
        object.put(DataElement::new(tags::BURNED_IN_ANNOTATION, VR::CS, PrimitiveValue::from("NO")));
        let syntax = put_pixels(&mut object, image, instance.transfer_syntax_uid.as_str())?;
        Ok((data_set(&object, instance.data_set().len(), syntax)?, syntax))
    }
}

/// Puts the cleaned pixels back, encoded again in the syntax they were stored in when that is
/// lossless and the gateway encodes it (RLE, JPEG-LS lossless); else uncompressed, in Explicit
/// VR Little Endian. The syntax chosen is returned.
fn put_pixels(
    object: &mut FileDicomObject<InMemDicomObject>,
    image: Image,
    stored: &str,
) -> Result<&'static str, &'static str> {
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_pixeldata::Transcode;
    let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    let syntax = |uid: &str| registry.get(uid).ok_or("could not be cleaned: a transfer syntax is not known");
    if stored == RLE_LOSSLESS {
        let layout = crate::core::pixels::rle::Layout {
            frames: image.frames as usize,
            rows: image.rows as usize,
            columns: image.columns as usize,
            samples: image.samples as usize,
            bytes: image.bytes as usize,
            planar: image.planar,
        };
        let fragments = crate::core::pixels::rle::encode(&image.data, layout)
            .map_err(|_| "could not be cleaned: RLE encoding failed")?;
        let pixel_data = PixelFragmentSequence::new(Vec::<u32>::new(), fragments);
        object.put(DataElement::new(tags::PIXEL_DATA, VR::OB, pixel_data));
        let rle = syntax(RLE_LOSSLESS)?;
        object.update_meta(|meta| meta.set_transfer_syntax(rle));
        return Ok(RLE_LOSSLESS);
    }
    let vr = if image.bytes == 2 { VR::OW } else { VR::OB };
    object.put(DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(image.data)));
    if stored == JPEG_LS_LOSSLESS {
        object.transcode(syntax(JPEG_LS_LOSSLESS)?).map_err(|_| "could not be cleaned: JPEG-LS encoding failed")?;
        return Ok(JPEG_LS_LOSSLESS);
    }
    Ok(EXPLICIT_VR_LE)
}

/// Blanks every box (grown by [`MARGIN`], kept inside the image) in every frame.
fn blank(image: &mut Image, boxes: &[Rectangle], bits_stored: u32) {
    let black: Vec<u32> = (0..image.samples).map(|s| image.black(s, bits_stored)).collect();
    for b in boxes {
        let (x0, y0) = (b.left.saturating_sub(MARGIN), b.top.saturating_sub(MARGIN));
        let x1 = (b.left + b.width + MARGIN).min(image.columns);
        let y1 = (b.top + b.height + MARGIN).min(image.rows);
        for frame in 0..image.frames {
            for y in y0..y1 {
                for x in x0..x1 {
                    for (sample, &value) in black.iter().enumerate() {
                        image.set(frame, y, x, sample as u32, value);
                    }
                }
            }
        }
    }
}

/// The cleaned data set, encoded in `syntax` (`size`: about how large).
fn data_set(object: &FileDicomObject<InMemDicomObject>, size: usize, syntax: &str) -> Result<Vec<u8>, &'static str> {
    use dicom_encoding::TransferSyntaxIndex;
    let syntax = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(syntax)
        .ok_or("could not be cleaned: a transfer syntax is not known")?;
    let mut data_set = Vec::with_capacity(size + 1024);
    object
        .write_dataset_with_ts(&mut data_set, syntax)
        .map_err(|_| "could not be cleaned: the cleaned instance cannot be written")?;
    Ok(data_set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(photometric: &str, samples: u32, bytes: u32, planar: bool) -> Image {
        Image {
            rows: 4,
            columns: 5,
            frames: 2,
            samples,
            bytes,
            planar,
            photometric: photometric.into(),
            data: vec![0x7F; (4 * 5 * samples * bytes * 2) as usize],
        }
    }

    #[test]
    fn boxes_are_blanked_in_every_frame_to_black_and_nothing_else() {
        for (photometric, samples, bytes, planar, black) in [
            ("MONOCHROME2", 1, 2, false, vec![0]),
            ("MONOCHROME1", 1, 2, false, vec![4095]),
            ("RGB", 3, 1, true, vec![0, 0, 0]),
            ("YBR_FULL", 3, 1, false, vec![0, 128, 128]),
            ("RGB", 3, 1, false, vec![0, 0, 0]),
        ] {
            let mut img = image(photometric, samples, bytes, planar);
            let before = (0..img.samples).map(|s| img.sample(0, 0, 0, s)).collect::<Vec<_>>();
            // One pixel at (3, 2): with the margin, x 1..5 and y 0..4, but not x 0.
            let bits_stored = if bytes == 2 { 12 } else { 8 };
            blank(&mut img, &[Rectangle { left: 3, top: 2, width: 1, height: 1 }], bits_stored);
            for frame in 0..2 {
                let at = |x, y| (0..img.samples).map(|s| img.sample(frame, y, x, s)).collect::<Vec<_>>();
                assert_eq!(at(4, 3), black, "{photometric}");
                assert_eq!(at(1, 0), black, "{photometric}");
                assert_eq!(at(0, 1), before, "{photometric}: outside the box and its margin");
            }
        }
    }

    #[test]
    fn long_instances_are_searched_on_three_frames() {
        assert_eq!(searched_frames(1), [0]);
        assert_eq!(searched_frames(3), [0, 1, 2]);
        assert_eq!(searched_frames(30), [0, 15, 29]);
    }

    /// Cleaned pixels go back in RLE or JPEG-LS lossless when stored so, else uncompressed; in
    /// each, dicom-rs decodes the same samples that were put.
    #[test]
    fn cleaned_pixels_are_encoded_again_in_a_lossless_stored_syntax() {
        use dicom_object::FileMetaTableBuilder;
        use dicom_pixeldata::PixelDecoder;
        for (stored, expected) in [
            (RLE_LOSSLESS, RLE_LOSSLESS),
            (JPEG_LS_LOSSLESS, JPEG_LS_LOSSLESS),
            ("1.2.840.10008.1.2.4.90", EXPLICIT_VR_LE),
        ] {
            for (photometric, samples, bytes) in [("MONOCHROME2", 1u32, 2u32), ("RGB", 3, 1)] {
                let mut img = image(photometric, samples, bytes, false);
                img.data.iter_mut().enumerate().for_each(|(i, v)| *v = (i * 7 % 13) as u8);
                let pixels = img.data.clone();
                let mut object = InMemDicomObject::new_empty();
                let us = |tag, value: u32| DataElement::new(tag, VR::US, PrimitiveValue::from(value as u16));
                object.put(us(tags::ROWS, img.rows));
                object.put(us(tags::COLUMNS, img.columns));
                object.put(us(tags::SAMPLES_PER_PIXEL, samples));
                object.put(us(tags::BITS_ALLOCATED, 8 * bytes));
                object.put(us(tags::BITS_STORED, 8 * bytes));
                object.put(us(tags::HIGH_BIT, 8 * bytes - 1));
                object.put(us(tags::PIXEL_REPRESENTATION, 0));
                if samples == 3 {
                    object.put(us(tags::PLANAR_CONFIGURATION, 0));
                }
                object.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("2")));
                object.put(DataElement::new(
                    tags::PHOTOMETRIC_INTERPRETATION,
                    VR::CS,
                    PrimitiveValue::from(photometric),
                ));
                let meta = FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("1.2.3")
                    .transfer_syntax(EXPLICIT_VR_LE);
                let mut file = object.with_meta(meta).expect("meta");
                let syntax = put_pixels(&mut file, img, stored).expect("encoded");
                assert_eq!(syntax, expected);
                assert_eq!(file.meta().transfer_syntax().trim_end_matches('\0'), expected);
                let decoded = file.decode_pixel_data().expect("dicom-rs decodes it");
                assert_eq!(decoded.data(), &pixels[..], "{stored} {photometric}");
            }
        }
    }
}
