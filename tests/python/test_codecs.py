"""Compressed instances as archives store them, served as clients ask (docs/TRANSFER-SYNTAXES.md).

- Every study of the test bed retrieved with dicomweb-client's defaults (Explicit VR Little
  Endian): each succeeds but for the few named here, each with its reason.
- The synthetic CT compressed by reference encoders outside the project (GDCM's gdcmconv for
  JPEG 2000, DCMTK's dcmcjpls for JPEG-LS): transcoded instances, decoded frames and rendered
  images hold the original's pixels bit for bit.
- pydicom's compressed files: what the gateway decodes equals what the reference decoders
  decode (DCMTK's dcmdjpeg, dcmdjpls and dcmdrle; GDCM's gdcmconv for JPEG 2000): bit for bit
  when lossless, within LOSSY_LARGEST levels and LOSSY_MEAN on average when lossy (decoders may
  round and upsample differently), with the Image
  Pixel module telling the truth about the result (Photometric Interpretation, Planar
  Configuration, lossy flags).
- HTJ2K, from an archive that sends it (pynetdicom; the test bed's Orthanc cannot): decoded bit
  for bit, as OpenJPH's own ojph_expand decodes the codestream.
- `transfer-syntax=*` still passes stored bytes untouched; a client naming a compressed syntax
  with a fallback gets each instance in the first it can have; one naming a syntax that some
  instance of the study is known to be stored otherwise is refused before the response starts.
"""

import io
import subprocess

import numpy
import pydicom
import pydicom.data
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from conftest import ROOT, dimse_archive, free_port, start_federation, stop

EXPLICIT_LE = "1.2.840.10008.1.2.1"
LOSSLESS = {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"}
ALWAYS_LOSSY = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1"}
COMPRESSED = LOSSLESS | set(ALWAYS_LOSSY) | {"1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}
# pydicom's files the gateway cannot decode, and why. Each is refused with a 406 naming its
# transfer syntax, never sent with a wrong or missing image.
UNDECODABLE = {
    # Its one fragment is a cut-off codestream: GDCM and OpenJPEG's own opj_decompress refuse it too.
    "JPEG2000-embedded-sequence-delimiter.dcm": "an invalid JPEG 2000 codestream",
    # 12-bit JPEG whose scan header libjpeg refuses ("Invalid SOS parameters for sequential
    # JPEG"): DCMTK's dcmdjpeg refuses it too; GDCM's own patched libjpeg reads it.
    "JPEG-lossy.dcm": "a JPEG scan header outside the standard",
}
# How far a lossy image decoded by the gateway may be from the reference decoder's, in levels.
LOSSY_LARGEST, LOSSY_MEAN = 4, 0.5
ACCEPT_EXPLICIT = {"Accept": 'multipart/related; type="application/dicom"'}


def own_gateway(testbed, sites, extra_sites=""):
    """A gateway over `sites` (C-GET only) with a C-MOVE listening port of its own, so it runs
    beside the session's gateways."""
    bed = {**testbed, "sites": sites, "move_destinations": [{"ae_title": "CODECSGW", "port": free_port()}]}
    return start_federation(bed, "CODECSGW", extra_sites=extra_sites)


@pytest.fixture(scope="module")
def gateway(testbed):
    """A gateway over the test bed's Orthanc sites (which hold every study)."""
    process, gw = own_gateway(testbed, [s for s in testbed["sites"] if s["kind"] == "orthanc"])
    yield gw
    stop(process)


def all_parts(response):
    """The parts of a multipart/related response: [(headers, body)], in order."""
    assert response.status_code == 200, (response.status_code, response.text[:300])
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    assert response.content.rstrip().endswith(f"--{boundary}--".encode()), "the response was cut short"
    chunks = response.content.split(f"--{boundary}".encode())[1:-1]
    return [(headers.decode(), body[:-2]) for headers, body in (chunk.split(b"\r\n\r\n", 1) for chunk in chunks)]


def single_part(response):
    """The one Part-10 instance of a multipart/related response."""
    parts = all_parts(response)
    assert len(parts) == 1, len(parts)
    return parts[0]


def instance_url(gw, stored):
    return f"{gw.url}/studies/{stored['study_uid']}/series/{stored['series_uid']}/instances/{stored['sop_instance_uid']}"


# The reference decoders, outside the project: DCMTK's for JPEG, JPEG-LS and RLE, GDCM's for
# JPEG 2000 (DCMTK has none). HTJ2K: OpenJPH's, on the codestream (below).
REFERENCE = {
    "1.2.840.10008.1.2.4.50": "dcmdjpeg", "1.2.840.10008.1.2.4.51": "dcmdjpeg", "1.2.840.10008.1.2.4.57": "dcmdjpeg",
    "1.2.840.10008.1.2.4.70": "dcmdjpeg", "1.2.840.10008.1.2.4.80": "dcmdjpls", "1.2.840.10008.1.2.4.81": "dcmdjpls",
    "1.2.840.10008.1.2.5": "dcmdrle", "1.2.840.10008.1.2.4.90": "gdcmconv --raw", "1.2.840.10008.1.2.4.91": "gdcmconv --raw",
}


def reference_decoded(path, syntax, tmp_path):
    """The reference decoder's output for a file, or None when it cannot decode it."""
    out = tmp_path / "reference.dcm"
    out.unlink(missing_ok=True)
    run = subprocess.run([*REFERENCE[syntax].split(), str(path), str(out)], capture_output=True, timeout=60)
    return pydicom.dcmread(out) if run.returncode == 0 else None


def samples(ds):
    """The decoded samples as an array, whatever the planar configuration (pydicom reads native
    pixel data only: the data sets compared here are both uncompressed)."""
    return ds.pixel_array.astype(numpy.int64)


@pytest.fixture(scope="module")
def compressed_copies(testbed):
    """Every compressed file of pydicom's test data, each under UIDs of its own (pydicom ships
    one image in several syntaxes under the same UIDs, and a PACS keeps one of them), loaded
    into site-1 for the module: [(name, path of the original, stored UIDs and syntax)]."""
    import pathlib
    from pydicom.uid import generate_uid
    site = next(s for s in testbed["sites"] if s["id"] == "site-1")
    directory = pathlib.Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    loaded, ids = [], []
    for path in sorted(directory.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax not in COMPRESSED or "PixelData" not in ds:
            continue
        stored = {"study_uid": generate_uid(), "series_uid": generate_uid(), "sop_instance_uid": generate_uid(),
                  "transfer_syntax_uid": syntax}
        ds.StudyInstanceUID, ds.SeriesInstanceUID = stored["study_uid"], stored["series_uid"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = stored["sop_instance_uid"]
        out = io.BytesIO()
        try:
            ds.save_as(out, enforce_file_format=True)
        except Exception:
            continue  # a file odd enough that pydicom cannot write it back
        answer = requests.post(f"{site['http_url']}/instances", data=out.getvalue(), timeout=60)
        if answer.status_code != 200:
            continue
        ids.append(answer.json()["ID"])
        loaded.append((path.name, path, stored))
    yield loaded
    for orthanc_id in ids:
        requests.delete(f"{site['http_url']}/instances/{orthanc_id}", timeout=60)


def test_every_study_retrieves_with_the_default_media_type(testbed, gateway):
    """dicomweb-client's `retrieve_study`, as a new user calls it, for every study."""
    client = DICOMwebClient(gateway.url)
    names = {f["stored"]["study_uid"]: f["path"].rsplit("/", 1)[1] for f in testbed["data"]["pydicom"] if f["stored"]}
    expected_failures = {}
    for f in testbed["data"]["pydicom"]:
        name = f["path"].rsplit("/", 1)[1]
        if f["stored"] and name in UNDECODABLE:
            expected_failures[f["stored"]["study_uid"]] = UNDECODABLE[name]
        if f["stored"] and name == "rtdose_1frame.dcm":
            # Orthanc cannot send it (it shares its UIDs with another RT Dose file it holds):
            # the PACS fails the C-GET, and the gateway aborts rather than send part of a study.
            expected_failures[f["stored"]["study_uid"]] = "the PACS fails to send one instance"
    studies = [s["0020000D"]["Value"][0] for s in client.search_for_studies()]
    assert len(studies) >= 25
    failed, succeeded = {}, 0
    for uid in studies:
        try:
            instances = client.retrieve_study(uid)
        except Exception as e:  # dicomweb-client raises HTTPError, or requests' own on an aborted body
            failed[uid] = str(e)[:120]
            continue
        assert instances, uid
        assert {i.file_meta.TransferSyntaxUID for i in instances} == {EXPLICIT_LE}, (uid, names.get(uid))
        succeeded += 1
    unexpected = {uid: why for uid, why in failed.items() if uid not in expected_failures}
    assert not unexpected, unexpected
    assert set(failed) == set(expected_failures), set(expected_failures) - set(failed)
    print(f"\n{succeeded} studies retrieved as Explicit VR Little Endian; not: {expected_failures}")


def test_the_reference_encoders_ct_decodes_bit_for_bit(testbed, gateway):
    """The CT compressed lossless by gdcmconv (JPEG 2000) and dcmcjpls (JPEG-LS): instances
    transcoded by default, frames decoded, rendered images, all from the original pixels."""
    for study in testbed["data"]["compressed"]:
        if study["transfer_syntax"].startswith("1.2.840.10008.1.2.4.20"):
            continue  # not at the test bed's Orthanc, which cannot send HTJ2K (see below)
        generated = study["study"]
        for n in (0, len(generated["instance_uids"]) - 1):
            original = pydicom.dcmread(study["sources"][n])
            url = (f"{gateway.url}/studies/{generated['study_uid']}/series/{generated['series_uid']}"
                   f"/instances/{generated['instance_uids'][n]}")
            headers, body = single_part(requests.get(url, headers=ACCEPT_EXPLICIT))
            assert f"transfer-syntax={EXPLICIT_LE}" in headers
            ours = pydicom.dcmread(io.BytesIO(body))
            assert ours.file_meta.TransferSyntaxUID == EXPLICIT_LE
            assert ours.PixelData == original.PixelData, study["codec"]
            assert ours.PhotometricInterpretation == "MONOCHROME2" and ours.BitsStored == 16
            assert ours.get("LossyImageCompression", "00") != "01", "lossless stays unmarked"
            # As stored: the reference encoder's bytes, untouched.
            headers, body = single_part(requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}))
            assert f"transfer-syntax={study['transfer_syntax']}" in headers
            stored = pydicom.dcmread(io.BytesIO(body))
            assert stored.PixelData == pydicom.dcmread(generated["files"][n]).PixelData
            # A frame without transfer-syntax=*: decoded, the original's bytes.
            frame = requests.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
            frame_headers, frame_body = single_part(frame)
            assert "application/octet-stream" in frame_headers
            assert frame_body == original.PixelData
            # Rendered: the same picture as the uncompressed original's.
            ct = testbed["data"]["ct"]
            original_url = f"{gateway.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/instances/{ct['instance_uids'][n]}"
            png = {"Accept": "image/png"}
            ours_png = requests.get(f"{url}/rendered", headers=png)
            theirs_png = requests.get(f"{original_url}/rendered", headers=png)
            assert ours_png.status_code == 200 and theirs_png.status_code == 200, ours_png.text
            assert Image.open(io.BytesIO(ours_png.content)).tobytes() == Image.open(io.BytesIO(theirs_png.content)).tobytes()
            thumbnail = requests.get(f"{url}/thumbnail")
            assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"


def test_pydicom_compressed_files_decode_as_reference_decoders_do(compressed_copies, gateway, tmp_path):
    syntaxes = {stored["transfer_syntax_uid"] for _, _, stored in compressed_copies}
    # JPEG baseline, extended, lossless (both); JPEG-LS both; JPEG 2000 both; RLE.
    assert len(syntaxes) >= 8, syntaxes
    compared, refused = [], []
    for name, path, stored in compressed_copies:
        syntax = stored["transfer_syntax_uid"]
        response = requests.get(instance_url(gateway, stored), headers=ACCEPT_EXPLICIT)
        if name in UNDECODABLE:
            assert response.status_code == 406, (name, response.status_code)
            assert syntax in response.text, response.text
            refused.append(name)
            continue
        reference = reference_decoded(path, syntax, tmp_path)
        assert reference is not None, f"{REFERENCE[syntax]} cannot decode {name}: say why it is in the test set"
        _, body = single_part(response)
        ours = pydicom.dcmread(io.BytesIO(body))
        assert ours.file_meta.TransferSyntaxUID == EXPLICIT_LE, name
        assert ours.SamplesPerPixel == reference.SamplesPerPixel, name
        a, b = samples(ours), samples(reference)
        if ours.SamplesPerPixel > 1:
            assert ours.PlanarConfiguration == 0, name
            assert ours.PhotometricInterpretation == reference.PhotometricInterpretation, (name, ours.PhotometricInterpretation, reference.PhotometricInterpretation)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        differences = numpy.abs(a - b)
        largest, mean = int(differences.max()), float(differences.mean())
        if syntax in LOSSLESS:
            assert largest == 0, (name, largest)
        else:
            # Decoders of lossy data may round differently (the inverse DCT, and the upsampling
            # of subsampled colour: libjpeg's and the gateway's JPEG decoder interpolate each
            # their own way): a few levels at most, a fraction of one on average.
            assert largest <= LOSSY_LARGEST and mean <= LOSSY_MEAN, (name, largest, mean)
        if syntax in ALWAYS_LOSSY:
            assert ours.LossyImageCompression == "01", name
            methods = ours.get("LossyImageCompressionMethod", [])
            methods = list(methods) if isinstance(methods, pydicom.multival.MultiValue) else [methods]
            assert ALWAYS_LOSSY[syntax] in methods, (name, methods)
        compared.append((name, syntax, largest, round(mean, 3)))
    assert len(compared) >= 10, compared
    print(f"\ncompared with the reference decoders: {compared}; refused: {refused}")


def test_a_named_compressed_syntax_with_a_fallback(testbed, gateway):
    """A client asking for JPEG 2000 first and Explicit VR Little Endian after gets the JPEG 2000
    instance as stored and a JPEG-LS one decoded; asking for JPEG 2000 alone, the JPEG-LS one
    is a 406 naming what it is stored as."""
    by_codec = {s["codec"]: s for s in testbed["data"]["compressed"]}
    j2k, jls = by_codec["Jpeg2000Lossless"]["study"], by_codec["JpegLsLossless"]["study"]

    def url(study):
        return f"{gateway.url}/studies/{study['study_uid']}/series/{study['series_uid']}/instances/{study['instance_uids'][0]}"

    accept = ("multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90, "
              "multipart/related; type=application/dicom; q=0.5")
    headers, _ = single_part(requests.get(url(j2k), headers={"Accept": accept}))
    assert "transfer-syntax=1.2.840.10008.1.2.4.90" in headers
    headers, _ = single_part(requests.get(url(jls), headers={"Accept": accept}))
    assert f"transfer-syntax={EXPLICIT_LE}" in headers
    only = requests.get(url(jls), headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'})
    assert only.status_code == 406 and "1.2.840.10008.1.2.4.80" in only.text, only.text


def test_a_study_of_mixed_syntaxes_is_refused_before_its_response(testbed, gateway):
    """A study holding a JPEG 2000 instance and a JPEG-LS one: once a retrieval has seen what its
    instances are stored in, asking for the study or its series in JPEG 2000 alone is a 406
    naming JPEG-LS before any part is sent, not a response cut off at the JPEG-LS instance;
    with a fallback to Explicit VR Little Endian every instance comes."""
    from pydicom.uid import generate_uid
    by_codec = {s["codec"]: s for s in testbed["data"]["compressed"]}
    files = [by_codec["Jpeg2000Lossless"]["study"]["files"][0], by_codec["JpegLsLossless"]["study"]["files"][1]]
    study, series = generate_uid(), generate_uid()
    site = next(s for s in testbed["sites"] if s["id"] == "site-1")
    ids = []
    try:
        for path in files:
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            answer = requests.post(f"{site['http_url']}/instances", data=out.getvalue(), timeout=60)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["ID"])
        as_stored = requests.get(f"{gateway.url}/studies/{study}",
                                 headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert as_stored.status_code == 200 and as_stored.content.count(b"transfer-syntax=1.2.840.10008.1.2.4.") == 2
        only_j2k = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'}
        for url in (f"{gateway.url}/studies/{study}", f"{gateway.url}/studies/{study}/series/{series}"):
            refused = requests.get(url, headers=only_j2k)
            assert refused.status_code == 406, (refused.status_code, refused.headers.get("Content-Type"))
            assert "1.2.840.10008.1.2.4.80" in refused.text, refused.text
        fallback = {"Accept": only_j2k["Accept"] + ', multipart/related; type="application/dicom"; q=0.5'}
        both = requests.get(f"{gateway.url}/studies/{study}", headers=fallback)
        assert both.status_code == 200
        assert b"transfer-syntax=1.2.840.10008.1.2.4.90" in both.content and f"transfer-syntax={EXPLICIT_LE}".encode() in both.content
    finally:
        for orthanc_id in ids:
            requests.delete(f"{site['http_url']}/instances/{orthanc_id}", timeout=60)


def transcoded_counts(gw):
    metrics = requests.get(gw.url.replace("/dicom-web", "/metrics")).text
    return {outcome: int(line.split()[1]) for line in metrics.splitlines() for outcome in ("hit", "miss")
            if line.startswith(f'dicomweb_gateway_cache_transcoded_total{{outcome="{outcome}"}}')}


def test_a_transcoded_study_asked_for_again_is_not_decoded_again(testbed, gateway):
    """The JPEG 2000 CT retrieved twice with the default media type: the second response is the
    same bytes, every instance from the transcoded cache (cache.transcoded_memory), none decoded."""
    study = next(s for s in testbed["data"]["compressed"] if s["codec"] == "Jpeg2000Lossless")["study"]
    url = f"{gateway.url}/studies/{study['study_uid']}"
    before = transcoded_counts(gateway)
    first = [body for _, body in all_parts(requests.get(url, headers=ACCEPT_EXPLICIT))]
    between = transcoded_counts(gateway)
    second = [body for _, body in all_parts(requests.get(url, headers=ACCEPT_EXPLICIT))]
    after = transcoded_counts(gateway)
    assert len(first) == len(study["instance_uids"]) and sorted(first) == sorted(second)
    assert after["hit"] - between["hit"] == len(first), (before, between, after)
    assert after["miss"] == between["miss"], "an instance was decoded again"


def test_decodes_share_the_decode_memory(testbed):
    """A gateway whose decode memory holds one decoded CT slice (`dataset_limits.decode_memory`):
    four clients at once retrieving the JPEG 2000 and JPEG-LS CTs with the default media type,
    and their rendered images, all get every instance with the original's pixels. /metrics
    shows that decodes waited their turn and never held more than the limit together."""
    import concurrent.futures
    sites = [s for s in testbed["sites"] if s["kind"] == "orthanc"]
    bed = {**testbed, "sites": sites, "move_destinations": [{"ae_title": "CODECSGW", "port": free_port()}]}
    limits = '\n[dataset_limits]\nmax_decoded_size = "1MiB"\ndecode_memory = "1MiB"\n'
    process, gw = start_federation(bed, "CODECSGW", extra=limits + '\n[cache]\nsearch_ttl = "0s"\nmemory = "0B"\ntranscoded_memory = "0B"\n')
    try:
        studies = [s for s in testbed["data"]["compressed"] if not s["transfer_syntax"].startswith("1.2.840.10008.1.2.4.20")]
        originals = {s["codec"]: [pydicom.dcmread(path).PixelData for path in s["sources"][: len(s["study"]["instance_uids"])]]
                     for s in studies}

        def retrieve(study):
            generated = study["study"]
            parts = all_parts(requests.get(f"{gw.url}/studies/{generated['study_uid']}", headers=ACCEPT_EXPLICIT, timeout=120))
            rendered = requests.get(f"{gw.url}/studies/{generated['study_uid']}/series/{generated['series_uid']}/rendered",
                                    headers={"Accept": "multipart/related; type=image/png"}, timeout=120)
            return study["codec"], parts, len(all_parts(rendered))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(retrieve, studies * 2))
        for codec, parts, rendered in results:
            assert len(parts) == len(originals[codec]) == rendered, codec
            pixels = {pydicom.dcmread(io.BytesIO(body)).PixelData for headers, body in parts}
            assert all(f"transfer-syntax={EXPLICIT_LE}" in headers for headers, _ in parts)
            assert pixels == set(originals[codec]), f"{codec}: decoded pixels differ from the original's"
        metrics = requests.get(gw.url.replace("/dicom-web", "/metrics")).text
        figures = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line.startswith("dicomweb_gateway_decode")}
        assert figures['dicomweb_gateway_decode_memory_bytes{which="limit"}'] == 1 << 20
        assert 0 < figures['dicomweb_gateway_decode_memory_bytes{which="peak"}'] <= 1 << 20, figures
        assert figures['dicomweb_gateway_decode_memory_bytes{which="in_use"}'] == 0, figures
        assert figures["dicomweb_gateway_decode_waits_total"] > 0, figures
    finally:
        stop(process)


def htj2k_made(directory):
    """Images encoded by OpenJPH's ojph_compress here, each in a DICOM file of a study of its own:
    8-bit colour with the reversible colour transform (YBR_RCT, 1.2.840.10008.1.2.4.201) and
    12-bit grey irreversible (.203). [(file, study UID, samples as ojph_expand decodes them,
    samples per pixel, lossy)]"""
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid
    rows, columns = 48, 64
    y, x = numpy.mgrid[0:rows, 0:columns]
    colour = numpy.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(numpy.uint8)
    grey = ((x * 53 + y * 71) % 4096).astype(">u2")
    made = []
    for name, image, header, syntax, options, samples in (
        ("colour", colour, f"P6\n{columns} {rows}\n255\n", "1.2.840.10008.1.2.4.201", ["-reversible", "true"], 3),
        ("grey", grey, f"P5\n{columns} {rows}\n4095\n", "1.2.840.10008.1.2.4.203", ["-qstep", "0.02"], 1),
    ):
        source = directory / f"{name}.{'ppm' if samples == 3 else 'pgm'}"
        source.write_bytes(header.encode() + image.tobytes())
        codestream = directory / f"{name}.j2c"
        subprocess.run(["ojph_compress", "-i", str(source), "-o", str(codestream), *options], check=True, capture_output=True)
        expanded = directory / f"{name}-expanded{source.suffix}"
        subprocess.run(["ojph_expand", "-i", str(codestream), "-o", str(expanded)], check=True, capture_output=True)
        raw = expanded.read_bytes()
        pixels = raw[len(raw) - image.nbytes:]
        reference = pixels if samples == 3 else numpy.frombuffer(pixels, dtype=">u2").astype("<u2").tobytes()
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientName, ds.PatientID, ds.Modality = f"HTJ2K^{name.upper()}", f"HTJ2K-{name.upper()}", "OT"
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
        if samples == 3:
            ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_RCT", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        else:
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = encapsulate([codestream.read_bytes()])
        ds["PixelData"].VR = "OB"
        path = directory / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        made.append((path, ds.StudyInstanceUID, reference, samples, samples == 1))
    return made


@pytest.fixture(scope="module")
def htj2k_archive(testbed, tmp_path_factory):
    """The HTJ2K copy of the CT and the images of htj2k_made in a pynetdicom archive of its own
    (dimse_archive.py), and a gateway over it: (gateway, the compressed study, the images made)."""
    study = next(s for s in testbed["data"]["compressed"] if s["transfer_syntax"] == "1.2.840.10008.1.2.4.201")
    made = htj2k_made(tmp_path_factory.mktemp("htj2k"))
    with dimse_archive("HTARCHIVE", [*study["study"]["files"], *(path for path, *_ in made)]) as site:
        process, gw = own_gateway(testbed, [], extra_sites=site)
        yield gw, study, made
        stop(process)


def test_htj2k_through_a_pacs_that_sends_it(htj2k_archive, tmp_path):
    gw, study, _ = htj2k_archive
    generated = study["study"]
    client = DICOMwebClient(gw.url)
    instances = client.retrieve_study(generated["study_uid"])
    assert len(instances) == len(generated["instance_uids"])
    originals = {pydicom.dcmread(path).SOPInstanceUID: pydicom.dcmread(source)
                 for path, source in zip(generated["files"], study["sources"])}
    for ours in instances:
        assert ours.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert ours.PixelData == originals[ours.SOPInstanceUID].PixelData
    # The reference decoder on the stored codestream: OpenJPH's ojph_expand gives the same pixels.
    stored = pydicom.dcmread(generated["files"][0])
    codestream = tmp_path / "frame.j2c"
    codestream.write_bytes(next(pydicom.encaps.generate_frames(stored.PixelData, number_of_frames=1)))
    expanded = tmp_path / "frame.pgm"
    subprocess.run(["ojph_expand", "-i", str(codestream), "-o", str(expanded)], check=True, capture_output=True, timeout=60)
    pgm = expanded.read_bytes()
    header_end = pgm.index(b"65535\n") + len(b"65535\n")
    reference = numpy.frombuffer(pgm[header_end:], dtype=">u2").astype("<u2").tobytes()
    assert reference == originals[stored.SOPInstanceUID].PixelData
    url = (f"{gw.url}/studies/{generated['study_uid']}/series/{generated['series_uid']}"
           f"/instances/{generated['instance_uids'][0]}")
    frame_headers, frame_body = single_part(requests.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'}))
    assert frame_body == reference
    compressed = requests.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jphc"'})
    headers, body = single_part(compressed)
    assert "image/jphc" in headers and "1.2.840.10008.1.2.4.201" in headers
    assert body.rstrip(b"\0") == codestream.read_bytes().rstrip(b"\0")
    rendered = requests.get(f"{url}/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 200 and Image.open(io.BytesIO(rendered.content)).size == (512, 512)


def test_htj2k_colour_and_lossy_decode_as_openjph_does(htj2k_archive):
    """Colour with the reversible colour transform comes out RGB; irreversible grey comes out
    marked lossy with HTJ2K's own method; both hold the samples OpenJPH's ojph_expand decodes."""
    gw, _, made = htj2k_archive
    client = DICOMwebClient(gw.url)
    for path, study_uid, reference, samples, lossy in made:
        [ours] = client.retrieve_study(study_uid)
        assert ours.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert ours.PixelData == reference, path.name
        assert ours.PhotometricInterpretation == ("RGB" if samples == 3 else "MONOCHROME2")
        if samples == 3:
            assert ours.PlanarConfiguration == 0
        if lossy:
            assert ours.LossyImageCompression == "01" and "ISO_15444_15" in ours.LossyImageCompressionMethod
        else:
            assert ours.get("LossyImageCompression", "00") != "01"
