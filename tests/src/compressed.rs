//! The synthetic CT in the compressed transfer syntaxes archives store, each encoded by a
//! reference encoder outside this project: JPEG 2000 lossless by GDCM's `gdcmconv`, JPEG-LS
//! lossless by DCMTK's `dcmcjpls`, HTJ2K lossless by OpenJPH's `ojph_compress` (its codestream
//! put into the data set here, one fragment per frame). Each copy is a study of its own (UIDs
//! derived from the codec) of a patient of its own, so a site holds it beside the uncompressed
//! original; its pixels, decoded, are the original's bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, FileMetaTableBuilder};

use crate::synthetic::{uid, GeneratedStudy};

/// A compressed transfer syntax and the reference encoder that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    Jpeg2000Lossless,
    JpegLsLossless,
    Htj2kLossless,
}

impl Codec {
    pub const ALL: [Codec; 3] = [Codec::Jpeg2000Lossless, Codec::JpegLsLossless, Codec::Htj2kLossless];

    pub fn transfer_syntax(self) -> &'static str {
        match self {
            Codec::Jpeg2000Lossless => "1.2.840.10008.1.2.4.90",
            Codec::JpegLsLossless => "1.2.840.10008.1.2.4.80",
            Codec::Htj2kLossless => "1.2.840.10008.1.2.4.201",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Codec::Jpeg2000Lossless => "jpeg2000",
            Codec::JpegLsLossless => "jpeg-ls",
            Codec::Htj2kLossless => "htj2k",
        }
    }

    /// The encoder's command line, for messages.
    fn encoder(self) -> &'static str {
        match self {
            Codec::Jpeg2000Lossless => "gdcmconv (Debian package libgdcm-tools)",
            Codec::JpegLsLossless => "dcmcjpls (Debian package dcmtk)",
            Codec::Htj2kLossless => "ojph_compress (Debian package openjph-tools)",
        }
    }
}

/// A compressed copy of a generated study.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CompressedStudy {
    pub codec: Codec,
    pub transfer_syntax: String,
    /// The uncompressed file each instance was made from, in order.
    pub sources: Vec<PathBuf>,
    pub study: GeneratedStudy,
}

fn run(command: &mut Command, codec: Codec) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {}", codec.encoder()))?;
    if !output.status.success() {
        bail!("{} failed: {}", codec.encoder(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Writes the first `count` instances of `source` compressed with `codec` into `dir`.
pub fn write_compressed(
    source: &GeneratedStudy,
    count: usize,
    codec: Codec,
    dir: &Path,
) -> anyhow::Result<CompressedStudy> {
    std::fs::create_dir_all(dir)?;
    let label = codec.label();
    let study_uid = uid(7, &format!("{label}-study"));
    let series_uid = uid(7, &format!("{label}-series"));
    let mut study = GeneratedStudy {
        study_uid: study_uid.clone(),
        series_uid: series_uid.clone(),
        sop_class_uid: source.sop_class_uid.clone(),
        ..GeneratedStudy::default()
    };
    let mut sources = Vec::new();
    for (n, original) in source.files.iter().take(count).enumerate() {
        let sop_instance = uid(7, &format!("{label}-instance-{n}"));
        let mut obj = open_file(original).with_context(|| format!("reading {}", original.display()))?;
        for (tag, value) in [
            (tags::STUDY_INSTANCE_UID, study_uid.as_str()),
            (tags::SERIES_INSTANCE_UID, series_uid.as_str()),
            (tags::SOP_INSTANCE_UID, sop_instance.as_str()),
        ] {
            obj.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
        }
        // A patient of its own, so that searches for the original CT's patient find only it.
        for (tag, vr, value) in [
            (tags::STUDY_DESCRIPTION, VR::LO, format!("Synthetic CT ({label})")),
            (tags::PATIENT_NAME, VR::PN, format!("Synthetic^Compressed {label}")),
            (tags::PATIENT_ID, VR::LO, format!("SYN-{}", label.to_uppercase())),
            (tags::ACCESSION_NUMBER, VR::SH, format!("ACC-{}", label.to_uppercase())),
        ] {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        }
        obj.meta_mut().media_storage_sop_instance_uid = sop_instance.clone();
        obj.meta_mut().update_information_group_length();
        let plain = dir.join(format!("plain-{n:04}.dcm"));
        obj.write_to_file(&plain)?;
        let path = dir.join(format!("{label}-{n:04}.dcm"));
        match codec {
            Codec::Jpeg2000Lossless => run(Command::new("gdcmconv").arg("--j2k").arg(&plain).arg(&path), codec)?,
            Codec::JpegLsLossless => run(Command::new("dcmcjpls").arg(&plain).arg(&path), codec)?,
            Codec::Htj2kLossless => htj2k(&plain, &path, dir, codec)?,
        }
        std::fs::remove_file(&plain)?;
        let written = open_file(&path).with_context(|| format!("reading {}", path.display()))?;
        if written.meta().transfer_syntax() != codec.transfer_syntax() {
            bail!(
                "{} wrote {} instead of {}",
                codec.encoder(),
                written.meta().transfer_syntax(),
                codec.transfer_syntax()
            );
        }
        study.bytes += std::fs::metadata(&path)?.len();
        study.instance_uids.push(sop_instance);
        study.files.push(path);
        sources.push(original.clone());
    }
    Ok(CompressedStudy { codec, transfer_syntax: codec.transfer_syntax().to_owned(), sources, study })
}

/// One frame of 16-bit unsigned grey as HTJ2K (reversible, lossless): the pixels written as a
/// PGM, encoded by `ojph_compress`, the codestream put back as the only fragment.
fn htj2k(plain: &Path, path: &Path, dir: &Path, codec: Codec) -> anyhow::Result<()> {
    let mut obj = open_file(plain)?;
    let int = |tag| -> anyhow::Result<u16> { Ok(obj.element(tag)?.to_int::<u16>()?) };
    let (rows, columns, bits, signed, samples) = (
        int(tags::ROWS)?,
        int(tags::COLUMNS)?,
        int(tags::BITS_ALLOCATED)?,
        int(tags::PIXEL_REPRESENTATION)?,
        int(tags::SAMPLES_PER_PIXEL)?,
    );
    if bits != 16 || signed != 0 || samples != 1 {
        bail!("HTJ2K test data is made of 16-bit unsigned grey images only");
    }
    let pixels = obj.element(tags::PIXEL_DATA)?.to_bytes()?.into_owned();
    let mut pgm = format!("P5\n{columns} {rows}\n65535\n").into_bytes();
    // PGM holds 16-bit samples big-endian; the data set little-endian.
    for sample in pixels.chunks_exact(2) {
        pgm.extend_from_slice(&[sample[1], sample[0]]);
    }
    let (pgm_path, codestream_path) = (dir.join("frame.pgm"), dir.join("frame.j2c"));
    std::fs::write(&pgm_path, &pgm)?;
    run(
        Command::new("ojph_compress")
            .arg("-i")
            .arg(&pgm_path)
            .arg("-o")
            .arg(&codestream_path)
            .args(["-reversible", "true"]),
        codec,
    )?;
    let mut codestream = std::fs::read(&codestream_path)?;
    if codestream.len() % 2 == 1 {
        codestream.push(0);
    }
    std::fs::remove_file(&pgm_path)?;
    std::fs::remove_file(&codestream_path)?;
    obj.put(DataElement::new_with_len(
        tags::PIXEL_DATA,
        VR::OB,
        Length::UNDEFINED,
        PixelFragmentSequence::new(vec![], vec![codestream]),
    ));
    let (class, instance) =
        (obj.meta().media_storage_sop_class_uid.clone(), obj.meta().media_storage_sop_instance_uid.clone());
    let file = obj
        .into_inner()
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(codec.transfer_syntax())
                .media_storage_sop_class_uid(class.trim_end_matches('\0'))
                .media_storage_sop_instance_uid(instance.trim_end_matches('\0')),
        )
        .context("building file meta")?;
    file.write_to_file(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
