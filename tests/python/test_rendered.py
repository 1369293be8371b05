"""Rendered images and thumbnails through the gateway: decoded, windowed, scaled, encoded."""

import io

import pydicom
import requests
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def instance_url(gateway, testbed, index=100):
    ct = testbed["data"]["ct"]
    return f"{gateway.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/instances/{ct['instance_uids'][index]}"


def image(response):
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_rendered_instance_with_windowing_and_viewport(orthanc_gateway, testbed):
    url = instance_url(orthanc_gateway, testbed) + "/rendered"
    answer = requests.get(url, params={"window": "40,400"})
    # Taken by a browser as the image it says it is, never sniffed as anything else.
    assert answer.headers.get("X-Content-Type-Options") == "nosniff"
    soft = image(answer)
    assert soft.format == "JPEG" and soft.size == (512, 512)
    lung = image(requests.get(url, params={"window": "-600,1500"}, headers={"Accept": "image/png"}))
    assert lung.format == "PNG"
    # The synthetic phantom's left lung (-820 HU) is black in a soft-tissue window and grey in a
    # lung window; the spine (700 HU) is white in both.
    lung_point, spine_point = (161, 246), (256, 366)
    assert soft.convert("L").getpixel(lung_point) < 10
    assert 40 < lung.convert("L").getpixel(lung_point) < 200
    assert soft.convert("L").getpixel(spine_point) > 245
    small = image(requests.get(url, params={"viewport": "256,256", "quality": "50"}))
    assert small.size == (256, 256)


def test_thumbnails_and_frames(orthanc_gateway, testbed):
    ct = testbed["data"]["ct"]
    mf = testbed["data"]["multiframe"]
    for url in [
        f"{orthanc_gateway.url}/studies/{ct['study_uid']}/thumbnail",
        f"{orthanc_gateway.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/thumbnail",
        instance_url(orthanc_gateway, testbed, 0) + "/thumbnail",
    ]:
        thumb = image(requests.get(url))
        assert max(thumb.size) <= 128, url
    base = f"{orthanc_gateway.url}/studies/{mf['study_uid']}/series/{mf['series_uid']}/instances/{mf['instance_uids'][0]}/frames"
    first = image(requests.get(f"{base}/1/rendered", headers={"Accept": "image/png"})).convert("L")
    third = image(requests.get(f"{base}/3/rendered", headers={"Accept": "image/png"})).convert("L")
    assert first.tobytes() != third.tobytes(), "frames are rendered from their own pixels"


def test_viewport_with_a_source_region(orthanc_gateway, testbed):
    """`viewport=vw,vh,sx,sy,sw,sh` (PS3.18 §8.3.5.1.3): the region cut out of the whole image,
    then scaled into the viewport; a negative width or height flips; empty parts default."""
    url = instance_url(orthanc_gateway, testbed) + "/rendered"
    png = {"Accept": "image/png"}
    whole = image(requests.get(url, headers=png)).convert("L")
    region = image(requests.get(url, params={"viewport": "100,50,200,300,100,50"}, headers=png)).convert("L")
    assert region.size == (100, 50)
    assert region.tobytes() == whole.crop((200, 300, 300, 350)).tobytes()
    flipped = image(requests.get(url, params={"viewport": "100,50,300,300,-100,50"}, headers=png)).convert("L")
    assert flipped.tobytes() == whole.crop((200, 300, 300, 350)).transpose(Image.FLIP_LEFT_RIGHT).tobytes()
    corner = image(requests.get(url, params={"viewport": "256,256,256,256,,"}, headers=png)).convert("L")
    assert corner.tobytes() == whole.crop((256, 256, 512, 512)).tobytes()
    for outside in ("100,100,500,500,100,100", "100,100,0,0,0,10", "100,100,10,10,-20,10", "100,100,a,0,10,10"):
        response = requests.get(url, params={"viewport": outside})
        assert response.status_code == 400, (outside, response.status_code)


def test_rendering_refusals(orthanc_gateway, testbed):
    url = instance_url(orthanc_gateway, testbed) + "/rendered"
    for params in [{"window": "abc"}, {"window": "40,-1"}, {"viewport": "0,10"}, {"viewport": "10,10,1,2"}, {"quality": "101"}, {"colour": "red"}]:
        response = requests.get(url, params=params)
        assert response.status_code == 400, params
    assert requests.get(url, headers={"Accept": "application/pdf"}).status_code == 406
    # Pixel data the gateway cannot decode (a JPEG 2000 codestream cut off, which GDCM and
    # OpenJPEG refuse too) is a 501 naming its transfer syntax, never a wrong picture.
    loaded = next(f for f in testbed["data"]["pydicom"] if f["path"].endswith("/JPEG2000-embedded-sequence-delimiter.dcm"))
    broken = loaded["stored"]
    response = requests.get(f"{orthanc_gateway.url}/studies/{broken['study_uid']}/series/{broken['series_uid']}"
                            f"/instances/{broken['sop_instance_uid']}/rendered")
    assert response.status_code == 501, response.status_code
    assert broken["transfer_syntax_uid"] in response.text


def test_rendered_series_is_one_image_per_instance(orthanc_gateway, testbed):
    ct = testbed["data"]["ct"]
    url = f"{orthanc_gateway.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/rendered"
    response = requests.get(url, params={"viewport": "64,64"}, headers={"Accept": 'multipart/related; type="image/png"'})
    assert response.status_code == 200
    boundary = response.headers["Content-Type"].split("boundary=")[1]
    parts = response.content.split(f"--{boundary}".encode())[1:-1]
    assert len(parts) == len(ct["instance_uids"])
    for part in parts[:3]:
        headers, body = part.split(b"\r\n\r\n", 1)
        assert b"image/png" in headers
        assert Image.open(io.BytesIO(body[:-2])).size == (64, 64)


def reference(path, tmp_path, window=None):
    """The image DCMTK's dcmj2pnm renders of a file (the dataset's first VOI window, else the
    min-max window; `window` = (center, width) when one is asked for), as 8-bit PNG."""
    import subprocess
    out = tmp_path / "reference.png"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if window:
        voi = ["+Ww", str(window[0]), str(window[1])]
    elif ds.get("PhotometricInterpretation", "").startswith("MONOCHROME"):
        voi = ["+Wi", "1"] if "WindowCenter" in ds else ["+Wm"]
    else:
        voi = []
    run = subprocess.run(["/usr/bin/dcmj2pnm", "+on", *voi, str(path), str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return Image.open(out)


def difference(ours, theirs):
    """Mean and largest absolute difference of two images of one size, per sample (0-255)."""
    mode = "RGB" if "RGB" in (ours.mode, theirs.mode) or theirs.mode == "RGB" else "L"
    a, b = ours.convert(mode).tobytes(), theirs.convert(mode).tobytes()
    assert len(a) == len(b)
    diffs = [abs(x - y) for x, y in zip(a, b)]
    return sum(diffs) / len(diffs), max(diffs)


def stored_as_loaded(testbed, name):
    """A pydicom file that Orthanc site-1 holds as it was loaded (no other file shares its UIDs
    there), and its URL path."""
    loaded = next(f for f in testbed["data"]["pydicom"] if f["path"].endswith("/" + name))
    stored = loaded["stored"]
    assert stored and pydicom.dcmread(loaded["path"], stop_before_pixels=True).file_meta.TransferSyntaxUID == stored["transfer_syntax_uid"]
    return loaded["path"], f"studies/{stored['study_uid']}/series/{stored['series_uid']}/instances/{stored['sop_instance_uid']}"


# Within this many levels (of 255) on average, and this many at most: the two renderers round the
# VOI LUT function each its own way, and JPEG decoders differ by a level or two.
MEAN_TOLERANCE, MAX_TOLERANCE = 1.0, 4


def test_rendered_images_match_a_reference_renderer(orthanc_gateway, testbed, tmp_path):
    """"Never a wrong image": the gateway's PNG next to DCMTK's dcmj2pnm on the same file, for a
    windowed 16-bit CT (its own window and one asked for), an 8-bit colour JPEG, an RLE
    RT dose and a monochrome CT without a window."""
    import pathlib
    ct = testbed["data"]["ct"]
    cases = [
        ("synthetic CT, its window", ct["files"][100], instance_url(orthanc_gateway, testbed).split("/dicom-web/")[1], None),
        ("synthetic CT, window 40/400", ct["files"][100], instance_url(orthanc_gateway, testbed).split("/dicom-web/")[1], (40, 400)),
    ]
    for label, name in (("colour JPEG baseline", "SC_rgb_jpeg_dcmtk.dcm"), ("CT of pydicom", "CT_small.dcm")):
        path, url = stored_as_loaded(testbed, name)
        cases.append((label, path, url, None))
    # pydicom's RLE MR shares its UIDs with the uncompressed one Orthanc holds: a copy with UIDs
    # of its own, for this test.
    rle = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    rle.StudyInstanceUID, rle.SeriesInstanceUID, rle.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    rle.file_meta.MediaStorageSOPInstanceUID = rle.SOPInstanceUID
    rle_path = tmp_path / "rle.dcm"
    rle.save_as(rle_path, enforce_file_format=True)
    site_1 = orthanc_gateway.site["http_url"]
    uploaded = requests.post(f"{site_1}/instances", data=rle_path.read_bytes()).json()["ID"]
    cases.append(("RLE MR", rle_path, f"studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}", None))
    try:
        for label, path, url, window in cases:
            params = {"window": f"{window[0]},{window[1]}"} if window else {}
            ours = image(requests.get(f"{orthanc_gateway.url}/{url}/rendered", params=params, headers={"Accept": "image/png"}))
            theirs = reference(pathlib.Path(path), tmp_path, window)
            assert ours.size == theirs.size, label
            mean, largest = difference(ours, theirs)
            print(f"\n{label}: mean difference {mean:.2f}, largest {largest} (of 255)")
            assert mean <= MEAN_TOLERANCE and largest <= MAX_TOLERANCE, (label, mean, largest)
    finally:
        requests.delete(f"{site_1}/instances/{uploaded}")
    # What the gateway cannot render it refuses: a 32-bit RT dose is a 501, not a wrong picture.
    _, url = stored_as_loaded(testbed, "rtdose_rle_1frame.dcm")
    refused = requests.get(f"{orthanc_gateway.url}/{url}/rendered", headers={"Accept": "image/png"})
    assert refused.status_code == 501 and "BitsAllocated" in refused.text, (refused.status_code, refused.text)
