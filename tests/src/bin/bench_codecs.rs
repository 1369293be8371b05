//! `bench-codecs`: compressed images decoded by the gateway, side by side in one run with the
//! reference decoders and with Orthanc transcoding through its GDCM plugin:
//!
//! - decode throughput per syntax on the synthetic CT compressed by reference encoders (JPEG
//!   2000 by gdcmconv, JPEG-LS by dcmcjpls, HTJ2K by ojph_compress): the gateway's decoding (in
//!   process, one thread, each instance parsed and decoded to Explicit VR Little Endian as
//!   WADO-RS does) against opj_decompress (batch mode: one process for every codestream, one
//!   thread), dcmdjpls (one process per file, DICOM in and out, as DCMTK is run) and
//!   ojph_expand (one process per codestream), with each tool's own start-up measured apart;
//! - WADO-RS of the JPEG 2000 and JPEG-LS CTs in Explicit VR Little Endian (curl, whole
//!   process) through the gateway (C-GET from Orthanc; cold: a fresh gateway; warm: asked
//!   again) against Orthanc's own DICOMweb transcoding them with its GDCM plugin;
//! - the gateway's peak RSS while transcoding a study of about 1 GB decoded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use testbed::compressed::{write_compressed, Codec, CompressedStudy};
use testbed::gateway::{curl_times as curl, GatewayProcess};
use testbed::orthanc::{gdcm_plugin, OrthancSite};
use testbed::{median, min_max};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const ACCEPT_DEFAULT: &str = "multipart/related; type=\"application/dicom\"";
const ACCEPT_EXPLICIT: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1";

#[derive(Parser)]
#[command(about = "Decoding of compressed images: the gateway against reference decoders and Orthanc with GDCM")]
struct Cli {
    #[arg(long, default_value_t = 200)]
    slices: u32,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Copies of the JPEG 2000 CT in the large study (10 x 200 slices is about 1 GB decoded).
    #[arg(long, default_value_t = 10)]
    large_copies: usize,
    #[arg(long, default_value = ".testbed/bench-codecs")]
    dir: PathBuf,
    #[arg(long)]
    out: Option<PathBuf>,
}

fn spread(times: &[f64]) -> String {
    let (lo, hi) = min_max(times);
    format!("{:.3} ({lo:.3}-{hi:.3})", median(times))
}

/// Seconds for one run of `command`, which must succeed.
fn timed(command: &mut Command) -> anyhow::Result<f64> {
    let began = Instant::now();
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(began.elapsed().as_secs_f64())
}

/// The first frame's codestream of each file, written to `dir` with `extension`.
fn codestreams(study: &CompressedStudy, dir: &Path, extension: &str) -> anyhow::Result<Vec<PathBuf>> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (n, file) in study.study.files.iter().enumerate() {
        let obj = dicom_object::open_file(file)?;
        let Value::PixelSequence(sequence) = obj.element(tags::PIXEL_DATA)?.value() else { bail!("not encapsulated") };
        let path = dir.join(format!("{n:04}.{extension}"));
        std::fs::write(&path, sequence.fragments().first().context("no fragment")?)?;
        out.push(path);
    }
    Ok(out)
}

/// One pass of the gateway's decoding over the files (held in memory).
fn ours(files: &[Vec<u8>]) -> anyhow::Result<()> {
    for bytes in files {
        let mut obj = dicom_object::from_reader(&bytes[128..])?;
        gateway::decode_into(&mut obj, EXPLICIT_LE).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// One pass of the reference decoder over a codec's study; the start-up of one of its processes.
fn reference(codec: Codec, study: &CompressedStudy, streams: &[PathBuf], work: &Path) -> anyhow::Result<f64> {
    let out = work.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    match codec {
        Codec::Jpeg2000Lossless => {
            // Batch mode writes next to its input: a copy of the codestreams each pass.
            for stream in streams {
                std::fs::copy(stream, out.join(stream.file_name().context("a name")?))?;
            }
            timed(Command::new("opj_decompress").args(["-ImgDir"]).arg(&out).args(["-OutFor", "PGM", "-threads", "1"]))
        }
        Codec::JpegLsLossless => {
            let began = Instant::now();
            for (n, file) in study.study.files.iter().enumerate() {
                timed(Command::new("dcmdjpls").arg(file).arg(out.join(format!("{n}.dcm"))))?;
            }
            Ok(began.elapsed().as_secs_f64())
        }
        Codec::Htj2kLossless => {
            let began = Instant::now();
            for (n, stream) in streams.iter().enumerate() {
                timed(Command::new("ojph_expand").arg("-i").arg(stream).arg("-o").arg(out.join(format!("{n}.pgm"))))?;
            }
            Ok(began.elapsed().as_secs_f64())
        }
    }
}

/// What starting the reference decoder costs, without decoding: its version or usage, median of 10.
fn start_up(codec: Codec) -> anyhow::Result<f64> {
    let (tool, arg) = match codec {
        Codec::Jpeg2000Lossless => ("opj_decompress", "-h"),
        Codec::JpegLsLossless => ("dcmdjpls", "--version"),
        Codec::Htj2kLossless => ("ojph_expand", "-v"),
    };
    let mut times = Vec::new();
    for _ in 0..10 {
        let began = Instant::now();
        Command::new(tool).arg(arg).output()?;
        times.push(began.elapsed().as_secs_f64());
    }
    Ok(median(&times))
}

fn gateway_config(dir: &Path, site: &OrthancSite, memory: &str) -> anyhow::Result<String> {
    Ok(format!(
        "[dimse]\nae_title = \"FEDGWC\"\nlisten = \"127.0.0.1:{}\"\n[auth]\nmode = \"none\"\n[cache]\nmemory = \"{memory}\"\ntranscoded_memory = \"{memory}\"\n\
         [[sites]]\nid = \"site-1\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\n\
         [federation]\nstate_dir = \"{}\"\n",
        testbed::free_port()?,
        site.ae_title,
        site.dicom_port,
        dir.join("state").display()
    ))
}

/// The bytes of a response to a GET with `accept`.
fn size_of(url: &str, accept: &str) -> anyhow::Result<usize> {
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut ureq::get(url).set("Accept", accept).call()?.into_reader(), &mut body)?;
    Ok(body.len())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = std::fs::remove_dir_all(&cli.dir);
    std::fs::create_dir_all(&cli.dir)?;
    let dir = std::fs::canonicalize(&cli.dir)?;
    eprintln!("bench: generating and compressing the CT");
    let ct = testbed::synthetic::write_ct_study(&dir.join("ct"), cli.slices, 1)?;
    let decoded_mb = ct.bytes as f64 / 1e6;
    let mut studies = Vec::new();
    for codec in Codec::ALL {
        studies.push(write_compressed(&ct, cli.slices as usize, codec, &dir.join(codec.label()))?);
    }

    // Decode throughput.
    let mut report = format!(
        "Decoding the synthetic {}-slice CT ({decoded_mb:.1} MB decoded, 512x512 16-bit), compressed lossless by the \
         reference encoders, median (min-max) of {} interleaved rounds, one thread each. The gateway: in process, \
         each instance parsed and decoded to Explicit VR Little Endian. opj_decompress: one process in batch mode \
         over the codestreams; dcmdjpls: one process per file (DICOM in and out); ojph_expand: one process per \
         codestream; the start-up of one process of each, measured apart, is taken out in the last column.\n\n\
         | syntax | compressed MB | gateway s | reference decoder | its s | its s without start-ups | gateway / reference |\n\
         |---|---|---|---|---|---|---|\n",
        cli.slices, cli.runs
    );
    for study in &studies {
        let codec = study.codec;
        let files: Vec<Vec<u8>> = study.study.files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
        let extension = if codec == Codec::Htj2kLossless { "j2c" } else { "j2k" };
        let streams = codestreams(study, &dir.join(format!("{}-streams", codec.label())), extension)?;
        let work = dir.join(format!("{}-work", codec.label()));
        let (mut gateway_s, mut reference_s) = (Vec::new(), Vec::new());
        for _ in 0..cli.runs {
            let began = Instant::now();
            ours(&files)?;
            gateway_s.push(began.elapsed().as_secs_f64());
            reference_s.push(reference(codec, study, &streams, &work)?);
        }
        let processes = if codec == Codec::Jpeg2000Lossless { 1.0 } else { files.len() as f64 };
        let without = median(&reference_s) - processes * start_up(codec)?;
        let tool = match codec {
            Codec::Jpeg2000Lossless => "opj_decompress (OpenJPEG 2.5.0)",
            Codec::JpegLsLossless => "dcmdjpls (DCMTK 3.6.7, CharLS inside)",
            Codec::Htj2kLossless => "ojph_expand (OpenJPH 0.9.0)",
        };
        report.push_str(&format!(
            "| {} | {:.1} | {} | {tool} | {} | {without:.3} | {:.2}x |\n",
            codec.label(),
            study.study.bytes as f64 / 1e6,
            spread(&gateway_s),
            spread(&reference_s),
            median(&gateway_s) / without
        ));
        eprintln!("bench: decoded {}", codec.label());
    }

    // WADO-RS in Explicit VR Little Endian: the gateway against Orthanc with GDCM.
    eprintln!("bench: Orthanc with its GDCM plugin");
    let gdcm = [gdcm_plugin()?];
    let mut site = OrthancSite::start_with_plugins(&dir.join("orthanc"), "site-1", "ORTHANCC", &[], None, None, &gdcm)?;
    let transcodable: Vec<&CompressedStudy> = studies.iter().filter(|s| s.codec != Codec::Htj2kLossless).collect();
    for study in &transcodable {
        for file in &study.study.files {
            site.upload(file)?.context("Orthanc refused a compressed file")?;
        }
    }
    report.push_str(&format!(
        "\nWADO-RS of each compressed CT in Explicit VR Little Endian (curl, whole process; the gateway asked with \
         the default media type, Orthanc with transfer-syntax={EXPLICIT_LE}, which its DICOMweb plugin transcodes \
         with GDCM), median (min-max) of {} interleaved rounds. Cold: a fresh gateway (C-GET from the same Orthanc, \
         nothing cached); warm: the same request again (the gateway sends the instances as it decoded them the first \
         time, cache.transcoded_memory). Orthanc transcodes every time.\n\n\
         | syntax | gateway cold s | gateway warm s | Orthanc + GDCM s | cold / Orthanc | warm / Orthanc |\n\
         |---|---|---|---|---|---|\n",
        cli.runs
    ));
    let config = gateway_config(&dir, &site, "1GiB")?;
    // Orthanc may not survive transcoding a study (its GDCM plugin crashes now and then, on
    // JPEG-LS often): it is then started again on the same storage and ports, the crash counted,
    // and the request made again, up to three times a round.
    for study in &transcodable {
        let orthanc_url = format!("{}/dicom-web/studies/{}", site.http_url(), study.study.study_uid);
        let (mut cold, mut warm, mut theirs, mut crashes) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..cli.runs {
            let _ = std::fs::remove_dir_all(dir.join("state"));
            let gateway = GatewayProcess::start(&dir, "bench-codecs", &config)?;
            let url = format!("{}/studies/{}", gateway.url, study.study.study_uid);
            cold.push(curl(&url, ACCEPT_DEFAULT)?.1);
            warm.push(curl(&url, ACCEPT_DEFAULT)?.1);
            let ours_size = size_of(&url, ACCEPT_DEFAULT)?;
            if (ours_size as f64) < ct.bytes as f64 * 0.9 {
                bail!("the gateway answered {ours_size} bytes for {}: not transcoded", study.codec.label());
            }
            drop(gateway);
            for _ in 0..3 {
                match curl(&orthanc_url, ACCEPT_EXPLICIT) {
                    Ok((_, seconds)) => {
                        theirs.push(seconds);
                        break;
                    }
                    Err(_) => {
                        crashes += 1;
                        let ports = Some((site.dicom_port, site.http_port));
                        drop(site);
                        site = OrthancSite::start_with_plugins(
                            &dir.join("orthanc"),
                            "site-1",
                            "ORTHANCC",
                            &[],
                            None,
                            ports,
                            &gdcm,
                        )?;
                    }
                }
            }
        }
        let compared = if theirs.is_empty() {
            format!("none: Orthanc exited at each of {crashes} attempts | - | -")
        } else {
            format!(
                "{} ({} of {} requests answered, {crashes} crashes) | {:.2}x | {:.2}x",
                spread(&theirs),
                theirs.len(),
                theirs.len() + crashes,
                median(&cold) / median(&theirs),
                median(&warm) / median(&theirs)
            )
        };
        report.push_str(&format!("| {} | {} | {} | {compared} |\n", study.codec.label(), spread(&cold), spread(&warm)));
        eprintln!("bench: retrieved {}", study.codec.label());
    }

    // Peak RSS transcoding a large study: copies of the JPEG 2000 CT as series of one study.
    eprintln!("bench: the large study");
    let j2k = studies.iter().find(|s| s.codec == Codec::Jpeg2000Lossless).context("the JPEG 2000 CT")?;
    let large_study = testbed::synthetic::uid(9, "large-study");
    let large_dir = dir.join("large");
    std::fs::create_dir_all(&large_dir)?;
    for copy in 0..cli.large_copies {
        let series = testbed::synthetic::uid(9, &format!("large-series-{copy}"));
        for (n, file) in j2k.study.files.iter().enumerate() {
            let mut obj = dicom_object::open_file(file)?;
            let instance = testbed::synthetic::uid(9, &format!("large-{copy}-{n}"));
            for (tag, value) in [
                (tags::STUDY_INSTANCE_UID, large_study.as_str()),
                (tags::SERIES_INSTANCE_UID, series.as_str()),
                (tags::SOP_INSTANCE_UID, instance.as_str()),
            ] {
                obj.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
            }
            obj.meta_mut().media_storage_sop_instance_uid = instance;
            obj.meta_mut().update_information_group_length();
            let path = large_dir.join(format!("{copy}-{n}.dcm"));
            obj.write_to_file(&path)?;
            site.upload(&path)?.context("Orthanc refused a copy")?;
            std::fs::remove_file(&path)?;
        }
    }
    let gateway = GatewayProcess::start(&dir, "bench-codecs-large", &gateway_config(&dir, &site, "32MiB")?)?;
    let url = format!("{}/studies/{large_study}", gateway.url);
    let (_, seconds) = curl(&url, ACCEPT_DEFAULT)?;
    let instances = cli.large_copies * j2k.study.files.len();
    report.push_str(&format!(
        "\nTranscoding a large study: {instances} JPEG 2000 instances ({:.0} MB decoded), retrieved with the default \
         media type through a gateway with `cache.memory` and `cache.transcoded_memory` at 32MiB: {seconds:.1} s, gateway peak RSS {:.1} MiB.\n",
        decoded_mb * cli.large_copies as f64,
        gateway.peak_rss_mib()
    ));
    drop(gateway);
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}
