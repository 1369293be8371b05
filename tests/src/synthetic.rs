//! A deterministic generator of large studies, so benchmarks and tests are reproducible without
//! shipping data: a 512x512 16-bit CT of N slices (a phantom with body, lungs and spine), and
//! one multi-frame instance. The same seed gives byte-identical files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// What was generated: the UIDs and the files written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GeneratedStudy {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub instance_uids: Vec<String>,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

/// A `2.25` UID derived from the seed and a label (FNV-1a then two rounds of splitmix64).
pub fn uid(seed: u64, label: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let hi = splitmix(h);
    let lo = splitmix(hi ^ 0x9e37_79b9_7f4a_7c15);
    let value = (u128::from(hi) << 64 | u128::from(lo)) >> 1;
    format!("2.25.{}", value.max(1))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn text(tag: dicom_core::Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn patient_and_study(obj: &mut InMemDicomObject, seed: u64, study_uid: &str, description: &str) {
    for element in [
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
        text(tags::PATIENT_NAME, VR::PN, &format!("Synthetic^Patient{seed}")),
        text(tags::PATIENT_ID, VR::LO, &format!("SYN{seed:06}")),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, "19600101"),
        text(tags::PATIENT_SEX, VR::CS, "O"),
        text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        text(tags::STUDY_DATE, VR::DA, "20240315"),
        text(tags::STUDY_TIME, VR::TM, "101500"),
        text(tags::ACCESSION_NUMBER, VR::SH, &format!("ACC{seed:06}")),
        text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
        text(tags::STUDY_ID, VR::SH, "1"),
        text(tags::STUDY_DESCRIPTION, VR::LO, description),
        text(tags::MANUFACTURER, VR::LO, "dicomweb-gateway test bed"),
    ] {
        obj.put(element);
    }
}

fn write(obj: InMemDicomObject, sop_class: &str, sop_instance: &str, path: &Path) -> anyhow::Result<u64> {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_instance),
        )
        .context("building file meta")?;
    file.write_to_file(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(std::fs::metadata(path)?.len())
}

/// Hounsfield-like phantom value at (x, y) of slice z, stored with intercept -1024.
fn phantom(x: i32, y: i32, z: i32, slices: i32, noise: &mut u64) -> u16 {
    let (cx, cy) = (x - 256, y - 256);
    let body = (cx * cx) as f32 / (220.0 * 220.0) + (cy * cy) as f32 / (160.0 * 160.0) <= 1.0;
    let lung = |ox: i32| {
        let (lx, ly) = (cx - ox, cy + 10);
        (lx * lx) as f32 / (70.0 * 70.0) + (ly * ly) as f32 / (100.0 * 100.0) <= 1.0
    };
    let spine_r = 22 + (z * 6 / slices.max(1));
    let spine = cx * cx + (cy - 110) * (cy - 110) <= spine_r * spine_r;
    *noise ^= *noise << 13;
    *noise ^= *noise >> 7;
    *noise ^= *noise << 17;
    let jitter = (*noise % 21) as i32 - 10;
    let hu = if !body {
        -1000
    } else if spine {
        700
    } else if lung(-95) || lung(95) {
        -820
    } else {
        40
    };
    (hu + 1024 + jitter).clamp(0, 4095) as u16
}

/// Writes a CT study of `slices` 512x512 16-bit slices into `dir`.
pub fn write_ct_study(dir: &Path, slices: u32, seed: u64) -> anyhow::Result<GeneratedStudy> {
    std::fs::create_dir_all(dir)?;
    let study_uid = uid(seed, "ct-study");
    let series_uid = uid(seed, "ct-series");
    let frame_of_reference = uid(seed, "ct-for");
    let mut generated = GeneratedStudy {
        study_uid: study_uid.clone(),
        series_uid: series_uid.clone(),
        sop_class_uid: uids::CT_IMAGE_STORAGE.to_owned(),
        instance_uids: Vec::new(),
        files: Vec::new(),
        bytes: 0,
    };
    let mut noise = 0x2545_f491_4f6c_dd1d ^ seed;
    for z in 0..slices {
        let sop_instance = uid(seed, &format!("ct-instance-{z}"));
        let mut pixels = Vec::with_capacity(512 * 512 * 2);
        for y in 0..512 {
            for x in 0..512 {
                pixels.extend_from_slice(&phantom(x, y, z as i32, slices as i32, &mut noise).to_le_bytes());
            }
        }
        let mut obj = InMemDicomObject::new_empty();
        patient_and_study(&mut obj, seed, &study_uid, "Synthetic CT chest");
        let position = format!("-250\\-250\\{:.1}", -(z as f32) * 1.25);
        for element in [
            text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
            text(tags::SOP_INSTANCE_UID, VR::UI, &sop_instance),
            text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL"),
            text(tags::MODALITY, VR::CS, "CT"),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
            text(tags::SERIES_NUMBER, VR::IS, "1"),
            text(tags::SERIES_DESCRIPTION, VR::LO, "Axial 1.25mm"),
            text(tags::BODY_PART_EXAMINED, VR::CS, "CHEST"),
            text(tags::FRAME_OF_REFERENCE_UID, VR::UI, &frame_of_reference),
            text(tags::INSTANCE_NUMBER, VR::IS, &(z + 1).to_string()),
            text(tags::IMAGE_POSITION_PATIENT, VR::DS, &position),
            text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
            text(tags::SLICE_THICKNESS, VR::DS, "1.25"),
            text(tags::KVP, VR::DS, "120"),
            text(tags::PIXEL_SPACING, VR::DS, "0.9765625\\0.9765625"),
            text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            text(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
            text(tags::RESCALE_SLOPE, VR::DS, "1"),
            text(tags::WINDOW_CENTER, VR::DS, "40"),
            text(tags::WINDOW_WIDTH, VR::DS, "400"),
        ] {
            obj.put(element);
        }
        put_image_pixel_module(&mut obj, 512, 512, pixels);
        let path = dir.join(format!("ct-{z:04}.dcm"));
        generated.bytes += write(obj, uids::CT_IMAGE_STORAGE, &sop_instance, &path)?;
        generated.instance_uids.push(sop_instance);
        generated.files.push(path);
    }
    Ok(generated)
}

fn put_image_pixel_module(obj: &mut InMemDicomObject, rows: u16, columns: u16, pixels: Vec<u8>) {
    for (tag, value) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, rows),
        (tags::COLUMNS, columns),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    }
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)));
}

/// Writes one Multi-frame Grayscale Word Secondary Capture instance of `frames` 256x256 frames.
pub fn write_multiframe(dir: &Path, frames: u32, seed: u64) -> anyhow::Result<GeneratedStudy> {
    std::fs::create_dir_all(dir)?;
    let sop_class = uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE;
    let study_uid = uid(seed, "mf-study");
    let series_uid = uid(seed, "mf-series");
    let sop_instance = uid(seed, "mf-instance");
    let mut pixels = Vec::with_capacity(256 * 256 * 2 * frames as usize);
    for f in 0..frames {
        for y in 0..256u32 {
            for x in 0..256u32 {
                // A frame number written as bands, so frame extraction errors are visible.
                let v = ((x / 16 + y / 16 + f) % 8) * 500 + f * 10;
                pixels.extend_from_slice(&(v as u16).to_le_bytes());
            }
        }
    }
    let mut obj = InMemDicomObject::new_empty();
    patient_and_study(&mut obj, seed, &study_uid, "Synthetic multi-frame");
    for element in [
        text(tags::SOP_CLASS_UID, VR::UI, sop_class),
        text(tags::SOP_INSTANCE_UID, VR::UI, &sop_instance),
        text(tags::MODALITY, VR::CS, "OT"),
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
        text(tags::SERIES_NUMBER, VR::IS, "1"),
        text(tags::INSTANCE_NUMBER, VR::IS, "1"),
        text(tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string()),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
    ] {
        obj.put(element);
    }
    obj.put(DataElement::new(tags::FRAME_INCREMENT_POINTER, VR::AT, PrimitiveValue::from(tags::FRAME_TIME_VECTOR)));
    put_image_pixel_module(&mut obj, 256, 256, pixels);
    let path = dir.join("multiframe.dcm");
    let bytes = write(obj, sop_class, &sop_instance, &path)?;
    Ok(GeneratedStudy {
        study_uid,
        series_uid,
        sop_class_uid: sop_class.to_owned(),
        instance_uids: vec![sop_instance],
        files: vec![path],
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_stable_and_distinct() {
        let a = uid(1, "ct-study");
        assert_eq!(a, uid(1, "ct-study"));
        assert_ne!(a, uid(2, "ct-study"));
        assert_ne!(a, uid(1, "ct-series"));
        assert!(a.len() <= 64 && a.starts_with("2.25."));
        assert!(!a[5..].starts_with('0'));
    }

    #[test]
    fn same_seed_gives_identical_files() {
        let base = std::env::temp_dir().join(format!("synthetic-{}", std::process::id()));
        let a = write_ct_study(&base.join("a"), 2, 7).expect("writes");
        let b = write_ct_study(&base.join("b"), 2, 7).expect("writes");
        for (x, y) in a.files.iter().zip(&b.files) {
            assert_eq!(std::fs::read(x).expect("read"), std::fs::read(y).expect("read"));
        }
        let obj = dicom_object::open_file(&a.files[1]).expect("readable");
        assert_eq!(obj.element(tags::ROWS).expect("rows").to_int::<u16>().expect("US"), 512);
        let mf = write_multiframe(&base.join("mf"), 4, 7).expect("writes");
        assert!(std::fs::metadata(&mf.files[0]).expect("meta").len() > 4 * 256 * 256 * 2);
        let _ = std::fs::remove_dir_all(base);
    }
}
