//! RLE Lossless encoding (PS3.5 Annex G), for pixel data that was stored in RLE and changed
//! here (cleaned of burned-in text) going back out in the syntax it was stored in. dicom-rs
//! decodes RLE but does not encode it. Decoding is crate::core::pixels's.

/// Native pixel data, as an instance's attributes describe it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) frames: usize,
    pub(crate) rows: usize,
    pub(crate) columns: usize,
    pub(crate) samples: usize,
    /// Bytes per sample: 1 or 2.
    pub(crate) bytes: usize,
    /// Colour by plane (Planar Configuration 1) rather than by pixel.
    pub(crate) planar: bool,
}

/// Each frame of `pixels` as one RLE fragment: the 64-byte header (segment count, offsets),
/// then one segment per byte of each sample, most significant byte first, each row packed on
/// its own (G.3.1) and each segment padded to an even length.
pub(crate) fn encode(pixels: &[u8], layout: Layout) -> Result<Vec<Vec<u8>>, &'static str> {
    let Layout { frames, rows, columns, samples, bytes, planar } = layout;
    let segments = samples * bytes;
    if !(1..=15).contains(&segments) || pixels.len() < frames * rows * columns * segments {
        return Err("the pixel data does not fit RLE's fifteen segments or its attributes");
    }
    let frame_size = rows * columns * segments;
    let mut fragments = Vec::with_capacity(frames);
    let mut row = vec![0u8; columns];
    for frame in pixels.chunks_exact(frame_size).take(frames) {
        let mut fragment = vec![0u8; 64];
        fragment[..4].copy_from_slice(&(segments as u32).to_le_bytes());
        for segment in 0..segments {
            let offset = u32::try_from(fragment.len()).map_err(|_| "an RLE frame over 4 GiB")?;
            fragment[4 + 4 * segment..8 + 4 * segment].copy_from_slice(&offset.to_le_bytes());
            let (sample, byte) = (segment / bytes, bytes - 1 - segment % bytes);
            for y in 0..rows {
                for (x, value) in row.iter_mut().enumerate() {
                    let pixel = y * columns + x;
                    let at = if planar { sample * rows * columns + pixel } else { pixel * samples + sample };
                    *value = frame[at * bytes + byte];
                }
                pack_bits(&row, &mut fragment);
            }
            if fragment.len() % 2 == 1 {
                fragment.push(0);
            }
        }
        fragments.push(fragment);
    }
    Ok(fragments)
}

/// One row in PackBits: runs of two or more equal bytes as a repeat, the rest as literals,
/// at most 128 bytes each.
fn pack_bits(row: &[u8], out: &mut Vec<u8>) {
    let mut at = 0;
    while at < row.len() {
        let run = row[at..].iter().take(128).take_while(|&&b| b == row[at]).count();
        if run >= 2 {
            out.push((1 - run as isize) as i8 as u8);
            out.push(row[at]);
            at += run;
            continue;
        }
        // A literal reaches up to the next run of two.
        let mut end = at + 1;
        while end < row.len() && end - at < 128 && !(end + 1 < row.len() && row[end] == row[end + 1]) {
            end += 1;
        }
        out.push((end - at - 1) as u8);
        out.extend_from_slice(&row[at..end]);
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use dicom_pixeldata::PixelDecoder;

    /// Encoded here, decoded by dicom-rs's own RLE decoder: the same samples come back.
    #[test]
    fn what_is_encoded_decodes_to_the_same_samples() {
        let (rows, columns, frames) = (7usize, 300usize, 2usize);
        for (samples, bytes) in [(1usize, 1usize), (1, 2), (3, 1)] {
            let size = frames * rows * columns * samples * bytes;
            // Runs, literals and rows longer than 128 bytes.
            let pixels: Vec<u8> = (0..size).map(|i| if (i / 50) % 2 == 0 { 7 } else { (i * 31 % 251) as u8 }).collect();
            let layout = Layout { frames, rows, columns, samples, bytes, planar: false };
            let fragments = encode(&pixels, layout).expect("encodes");
            let mut object = InMemDicomObject::new_empty();
            let us = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
            object.put(us(tags::ROWS, rows as u16));
            object.put(us(tags::COLUMNS, columns as u16));
            object.put(us(tags::SAMPLES_PER_PIXEL, samples as u16));
            object.put(us(tags::BITS_ALLOCATED, 8 * bytes as u16));
            object.put(us(tags::BITS_STORED, 8 * bytes as u16));
            object.put(us(tags::HIGH_BIT, 8 * bytes as u16 - 1));
            object.put(us(tags::PIXEL_REPRESENTATION, 0));
            object.put(us(tags::PLANAR_CONFIGURATION, 0));
            object.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from(frames.to_string())));
            let photometric = if samples == 3 { "RGB" } else { "MONOCHROME2" };
            object.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric)));
            object.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), fragments),
            ));
            let meta = FileMetaTableBuilder::new()
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                .media_storage_sop_instance_uid("1.2.3")
                .transfer_syntax("1.2.840.10008.1.2.5");
            let file = object.with_meta(meta).expect("meta");
            let decoded = file.decode_pixel_data().expect("dicom-rs decodes it");
            assert_eq!(decoded.data(), &pixels[..], "{samples} samples of {bytes} bytes");
        }
    }

    #[test]
    fn rows_are_packed_on_their_own_and_runs_of_two_repeat() {
        let mut out = Vec::new();
        pack_bits(&[5, 5, 1, 2, 3, 3, 3], &mut out);
        assert_eq!(out, vec![0xFF, 5, 1, 1, 2, 0xFE, 3]);
        out.clear();
        pack_bits(&[9; 130], &mut out);
        assert_eq!(out, vec![0x81, 9, 0xFF, 9], "a run of 130 is 128 and 2");
    }
}
