"""Rendered images and thumbnails through the gateway: decoded, windowed, scaled, encoded."""

import io

import requests
from PIL import Image


def instance_url(gateway, testbed, index=100):
    ct = testbed["data"]["ct"]
    return f"{gateway.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/instances/{ct['instance_uids'][index]}"


def image(response):
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_rendered_instance_with_windowing_and_viewport(orthanc_gateway, testbed):
    url = instance_url(orthanc_gateway, testbed) + "/rendered"
    soft = image(requests.get(url, params={"window": "40,400"}))
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


def test_rendering_refusals(orthanc_gateway, testbed):
    url = instance_url(orthanc_gateway, testbed) + "/rendered"
    for params in [{"window": "abc"}, {"window": "40,-1"}, {"viewport": "0,10"}, {"quality": "101"}, {"colour": "red"}]:
        response = requests.get(url, params=params)
        assert response.status_code == 400, params
    assert requests.get(url, headers={"Accept": "application/pdf"}).status_code == 406
    # Pixel data the gateway cannot decode is a 501 naming its transfer syntax, never a wrong
    # picture.
    files = [f for f in testbed["data"]["pydicom"] if f["stored"]]
    uids = [f["stored"]["sop_instance_uid"] for f in files]
    jpeg2000 = next(f["stored"] for f in files
                    if f["stored"]["transfer_syntax_uid"] in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
                    and uids.count(f["stored"]["sop_instance_uid"]) == 1)
    response = requests.get(f"{orthanc_gateway.url}/studies/{jpeg2000['study_uid']}/series/{jpeg2000['series_uid']}"
                            f"/instances/{jpeg2000['sop_instance_uid']}/rendered")
    assert response.status_code == 501, response.status_code
    assert jpeg2000["transfer_syntax_uid"] in response.text


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
