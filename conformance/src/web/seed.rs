//! The tool's own test data, stored through STOW-RS when the server accepts it: one synthetic
//! study (a made-up patient, fresh `2.25` UIDs each run) with two series — two single-frame
//! 16-bit CT images, a three-frame 8-bit multi-frame image and an RLE Lossless (encapsulated)
//! image — so every retrieve resource and matching form has data whose values are known.

use std::hash::{BuildHasher, Hasher};

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

pub const ROWS: u16 = 16;
pub const COLUMNS: u16 = 16;
pub const MULTIFRAME_FRAMES: u32 = 3;

/// A fresh UID under the `2.25` root (PS3.5 B.2): 128 random bits.
pub fn fresh_uid() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut high = state.build_hasher();
    high.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let mut low = state.build_hasher();
    low.write_u32(std::process::id());
    low.write_u64(high.finish());
    let value = (u128::from(high.finish()) << 64 | u128::from(low.finish())) & !(0xf << 124) | (8 << 124);
    format!("2.25.{value}")
}

/// One instance made here.
#[derive(Debug, Clone)]
pub struct SeedInstance {
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: &'static str,
    /// Bytes of one uncompressed frame.
    pub frame_bytes: usize,
    pub part10: Vec<u8>,
}

/// The study made here, with the attribute values the search checks match on.
#[derive(Debug, Clone)]
pub struct SeedStudy {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub accession_number: String,
    pub study_date: &'static str,
    /// `[CT series, other series]`
    pub series: [String; 2],
    pub instances: Vec<SeedInstance>,
}

impl SeedStudy {
    pub fn new() -> anyhow::Result<SeedStudy> {
        let study_uid = fresh_uid();
        let tail: String = study_uid.chars().rev().take(8).collect();
        let mut study = SeedStudy {
            study_uid,
            patient_id: format!("DWC-{tail}"),
            patient_name: format!("Conformance^Test{tail}"),
            accession_number: format!("DWC{tail}"),
            study_date: "20210607",
            series: [fresh_uid(), fresh_uid()],
            instances: Vec::new(),
        };
        for number in 1..=2 {
            let pixels: Vec<u8> = (0..u32::from(ROWS) * u32::from(COLUMNS))
                .flat_map(|i| ((i * 7 + number * 100) as u16).to_le_bytes())
                .collect();
            study.push_instance(ImageSpec {
                series: 0,
                number,
                sop_class_uid: uids::CT_IMAGE_STORAGE,
                transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
                bits: 16,
                frames: 1,
                pixel_data: PixelData::Native(pixels),
            })?;
        }
        let frame = |f: u32| (0..u32::from(ROWS) * u32::from(COLUMNS)).map(move |i| ((i + f * 40) % 256) as u8);
        study.push_instance(ImageSpec {
            series: 1,
            number: 1,
            sop_class_uid: uids::MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
            transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
            bits: 8,
            frames: MULTIFRAME_FRAMES,
            pixel_data: PixelData::Native((0..MULTIFRAME_FRAMES).flat_map(frame).collect()),
        })?;
        study.push_instance(ImageSpec {
            series: 1,
            number: 2,
            sop_class_uid: uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            transfer_syntax_uid: uids::RLE_LOSSLESS,
            bits: 8,
            frames: 1,
            pixel_data: PixelData::Rle(rle_frame(&frame(7).collect::<Vec<u8>>())),
        })?;
        Ok(study)
    }

    /// A new CT image of this study (same patient), in a series of its own.
    pub fn another_instance(&self) -> anyhow::Result<SeedInstance> {
        let mut study = SeedStudy { series: [fresh_uid(), fresh_uid()], instances: Vec::new(), ..self.clone() };
        study.push_instance(ImageSpec {
            series: 0,
            number: 1,
            sop_class_uid: uids::CT_IMAGE_STORAGE,
            transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
            bits: 16,
            frames: 1,
            pixel_data: PixelData::Native(vec![0; usize::from(ROWS) * usize::from(COLUMNS) * 2]),
        })?;
        Ok(study.instances.remove(0))
    }

    fn push_instance(&mut self, spec: ImageSpec) -> anyhow::Result<()> {
        let sop_instance_uid = fresh_uid();
        let series_uid = self.series[spec.series].clone();
        let modality = if spec.series == 0 { "CT" } else { "OT" };
        let mut obj = InMemDicomObject::new_empty();
        let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        for element in [
            text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
            text(tags::SOP_CLASS_UID, VR::UI, spec.sop_class_uid),
            text(tags::SOP_INSTANCE_UID, VR::UI, &sop_instance_uid),
            text(tags::STUDY_DATE, VR::DA, self.study_date),
            text(tags::STUDY_TIME, VR::TM, "120000"),
            text(tags::ACCESSION_NUMBER, VR::SH, &self.accession_number),
            text(tags::MODALITY, VR::CS, modality),
            text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Referring^Test"),
            text(tags::STUDY_DESCRIPTION, VR::LO, "dicomweb-conformance"),
            text(tags::SERIES_DESCRIPTION, VR::LO, if spec.series == 0 { "CT images" } else { "other images" }),
            text(tags::PATIENT_NAME, VR::PN, &self.patient_name),
            text(tags::PATIENT_ID, VR::LO, &self.patient_id),
            text(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
            text(tags::PATIENT_SEX, VR::CS, "O"),
            text(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
            text(tags::STUDY_ID, VR::SH, "1"),
            text(tags::SERIES_NUMBER, VR::IS, &(spec.series + 1).to_string()),
            text(tags::INSTANCE_NUMBER, VR::IS, &spec.number.to_string()),
            text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            // Generated gradients with no text in them: said, so that a de-identifying server
            // need not withhold them as images that may show identity.
            text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        ] {
            obj.put(element);
        }
        if spec.sop_class_uid == uids::CT_IMAGE_STORAGE {
            obj.put(text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL"));
            obj.put(text(tags::RESCALE_INTERCEPT, VR::DS, "-1024"));
            obj.put(text(tags::RESCALE_SLOPE, VR::DS, "1"));
        }
        if spec.frames > 1 {
            obj.put(text(tags::NUMBER_OF_FRAMES, VR::IS, &spec.frames.to_string()));
        }
        for (tag, value) in [
            (tags::SAMPLES_PER_PIXEL, 1),
            (tags::ROWS, ROWS),
            (tags::COLUMNS, COLUMNS),
            (tags::BITS_ALLOCATED, spec.bits),
            (tags::BITS_STORED, spec.bits),
            (tags::HIGH_BIT, spec.bits - 1),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        }
        match spec.pixel_data {
            PixelData::Native(pixels) => {
                let vr = if spec.bits > 8 { VR::OW } else { VR::OB };
                obj.put(DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(pixels)));
            }
            PixelData::Rle(fragment) => {
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OB,
                    Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment])),
                ));
            }
        }
        let file = obj.with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(spec.transfer_syntax_uid)
                .media_storage_sop_class_uid(spec.sop_class_uid)
                .media_storage_sop_instance_uid(&sop_instance_uid),
        )?;
        let mut part10 = Vec::new();
        file.write_all(&mut part10)?;
        self.instances.push(SeedInstance {
            series_uid,
            sop_instance_uid,
            sop_class_uid: spec.sop_class_uid,
            frame_bytes: usize::from(ROWS) * usize::from(COLUMNS) * usize::from(spec.bits / 8),
            part10,
        });
        Ok(())
    }
}

struct ImageSpec {
    series: usize,
    number: u32,
    sop_class_uid: &'static str,
    transfer_syntax_uid: &'static str,
    bits: u16,
    frames: u32,
    pixel_data: PixelData,
}

enum PixelData {
    Native(Vec<u8>),
    Rle(Vec<u8>),
}

/// One 8-bit, one-sample frame as RLE Lossless (PS3.5 Annex G): a 64-byte header naming one
/// segment, then each row as PackBits literal runs.
fn rle_frame(pixels: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(&1u32.to_le_bytes());
    out[4..8].copy_from_slice(&64u32.to_le_bytes());
    for row in pixels.chunks(usize::from(COLUMNS)) {
        for run in row.chunks(128) {
            out.push((run.len() - 1) as u8);
            out.extend_from_slice(run);
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_readable_instances_with_fresh_uids() {
        let study = SeedStudy::new().expect("built");
        assert_eq!(study.instances.len(), 4);
        assert_ne!(study.series[0], study.series[1]);
        for instance in &study.instances {
            assert_eq!(&instance.part10[128..132], b"DICM");
            let obj = dicom_object::from_reader(&instance.part10[128..]).expect("readable");
            assert!(obj.meta().transfer_syntax().starts_with("1.2.840.10008.1.2."));
            let uid = obj.element(tags::SOP_INSTANCE_UID).expect("uid").to_str().expect("text");
            assert_eq!(uid.trim_end_matches('\0'), instance.sop_instance_uid);
        }
        assert!(fresh_uid().starts_with("2.25.") && fresh_uid() != fresh_uid());
        let rle = rle_frame(&[5u8; 256]);
        assert_eq!(rle.len(), 64 + 16 * 17);
    }
}
