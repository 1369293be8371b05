"""Hostile input at the HTTP edge, against a real gateway over the test bed: oversized request
heads, query strings past their bounds and malformed QIDO-RS, broken multipart bodies, and
truncated or hostile DICOM in STOW-RS. Each gets its documented status with a readable body:
never a 500, a hang or a reset connection, and the gateway keeps serving afterwards."""

import io
import struct
import zlib

import pydicom
import pytest
import requests
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from conftest import start_federation, stop

BOUNDARY = "hostile-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
# Short enough that a hanging request fails the test instead of stalling the run.
TIMEOUT = 20

LIMITS = """max_header_size = "16KiB"
max_query_length = 1024
max_query_parameters = 20
stow_max_parts = 100
stow_max_part_size = "1MiB"
"""


@pytest.fixture(scope="module")
def gateway(testbed):
    extra = '[dataset_limits]\nmax_inflated_size = "64MiB"\n'
    process, gw = start_federation(testbed, "FEDGW1", server=LIMITS, extra=extra)
    yield gw
    stop(process)


def still_serving(gateway):
    response = requests.get(f"{gateway.url}/studies", params={"limit": "1"}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def refused(response, status):
    """The response has `status` and a readable reason (the gateway's error style)."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.text.strip(), "an error without a reason"


def test_a_request_head_past_the_limit_gets_431(gateway):
    response = requests.get(f"{gateway.url}/studies", headers={"X-Padding": "a" * 20_000}, timeout=TIMEOUT)
    assert response.status_code == 431
    # Within the limit, the same request is answered.
    response = requests.get(f"{gateway.url}/studies", headers={"X-Padding": "a" * 8_000}, timeout=TIMEOUT)
    assert response.status_code == 200
    still_serving(gateway)


def test_query_strings_past_their_bounds_and_malformed_qido(gateway):
    refused(requests.get(f"{gateway.url}/studies?PatientID={'1' * 2000}", timeout=TIMEOUT), 414)
    many = "&".join(f"includefield=0008{i:04X}" for i in range(0, 84, 4))
    refused(requests.get(f"{gateway.url}/studies?{many}", timeout=TIMEOUT), 400)
    for query in [
        "NoSuchAttribute=1",
        "limit=-1",
        "limit=99999999999999999999999",
        "fuzzymatching=maybe",
        "StudyDate=yesterday",
        "Modality=%C3%A9",  # CS takes no character beyond ASCII
        "StudyInstanceUID=..%2F..%2Fetc%2Fpasswd",
        "PatientID=%ZZ%00%FF",  # broken percent-encoding decodes to U+FFFD: not a UI either way
        "ReferencedStudySequence.ReferencedSOPInstanceUID.PatientID=1",
        "PatientName=a&PatientName=b",
    ]:
        response = requests.get(f"{gateway.url}/studies?{query}", timeout=TIMEOUT)
        if query == "PatientID=%ZZ%00%FF":
            # A PatientID (LO) of odd bytes is a valid, unmatched search.
            assert response.status_code in (200, 204), (query, response.status_code, response.text[:200])
            continue
        refused(response, 400)
    # A name beyond ASCII is a valid search (sent in UTF-8).
    response = requests.get(f"{gateway.url}/studies?PatientName=M%C3%BCller*", timeout=TIMEOUT)
    assert response.status_code in (200, 204), response.text[:300]
    still_serving(gateway)


def stow(gateway, body, content_type=STOW_TYPE):
    """POSTs a STOW-RS body; a reset connection fails the test (requests raises)."""
    return requests.post(
        f"{gateway.url}/studies",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=TIMEOUT,
    )


def test_broken_multipart_bodies(gateway):
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    refused(stow(gateway, head + b"never closed"), 400)
    refused(stow(gateway, b"x" * 100_000), 400)  # the boundary never appears
    refused(stow(gateway, f"--{BOUNDARY}\r\n".encode() + b"X-Header: value\r\n" * 5000), 400)  # headers never end
    refused(stow(gateway, head + b"x", content_type='multipart/related; type="application/dicom"'), 400)
    refused(stow(gateway, head + b"x", content_type="application/json"), 415)
    # 100000 tiny parts: the 101st is over stow_max_parts; the body is read to its end, so the
    # client gets the 413, not a reset.
    tiny = f"--{BOUNDARY}\r\n\r\nx\r\n".encode()
    refused(stow(gateway, tiny * 100_000 + f"--{BOUNDARY}--\r\n".encode()), 413)
    # One part larger than stow_max_part_size.
    refused(stow(gateway, head + b"a" * (2 << 20) + f"\r\n--{BOUNDARY}--\r\n".encode()), 413)
    still_serving(gateway)


def test_large_bodies_answered_before_they_are_read_get_their_answer_not_a_reset(gateway):
    """32 MiB request bodies that the gateway refuses before reading them whole (a wrong media
    type, a part too large found midway, no boundary, a method or path it does not have): the
    client reads the status and its reason, not a connection reset."""
    big = b"x" * (32 << 20)
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    root = gateway.url.removesuffix("/dicom-web")
    for _ in range(3):
        refused(stow(gateway, big, content_type="application/octet-stream"), 415)
        refused(stow(gateway, head + big), 413)  # one part over stow_max_part_size, found midway
        refused(stow(gateway, big + head), 400)  # no boundary where one must be
        response = requests.post(f"{gateway.url}/series", data=big, timeout=TIMEOUT)
        refused(response, 405)
        assert response.headers["Allow"] == "GET,HEAD", response.headers
        refused(requests.post(f"{root}/no-such-resource", data=big, timeout=TIMEOUT), 404)
        refused(requests.post(f"{gateway.url}/studies/1.2.3/no-such-resource", data=big, timeout=TIMEOUT), 404)
    still_serving(gateway)


def instance(testbed, transfer_syntax=None, **changes):
    ds = pydicom.dcmread(testbed["data"]["ct"]["files"][0])
    if transfer_syntax:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def multipart(parts):
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def failed_reasons(response):
    module = response.json()
    return [item["00081197"]["Value"][0] for item in module.get("00081198", {}).get("Value", [])]


def test_hostile_dicom_in_stow(gateway, testbed):
    valid = instance(testbed)
    pixel_at = valid.rfind(b"\xe0\x7f\x10\x00")
    # Pixel Data whose length claims 0xFFFFFFF0 bytes where a few remain.
    huge_length = valid[: pixel_at + 8] + struct.pack("<I", 0xFFFFFFF0) + valid[pixel_at + 12 :]
    meta_end = 144 + struct.unpack("<I", valid[140:144])[0]
    # A deflated data set that inflates to 256 MiB of zeros (256 KiB sent), past the 64 MiB
    # this gateway allows.
    deflated = instance(testbed, transfer_syntax=DeflatedExplicitVRLittleEndian)
    deflated_meta_end = 144 + struct.unpack("<I", deflated[140:144])[0]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\x09\x00\x10\x00OB\x00\x00" + struct.pack("<I", 256 << 20))
    for _ in range(256):
        bomb += compressor.compress(bytes(1 << 20))
    bomb = deflated[:deflated_meta_end] + bomb + compressor.flush()
    # Sequences nested 10000 deep (undefined lengths), each item holding the next sequence.
    nest = b"".join(b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" for _ in range(10000))
    deep = valid[:meta_end] + nest
    cases = {
        "truncated": valid[: len(valid) // 2],
        "not part 10": b"MZ" + b"\x00" * 400,
        "huge value length": huge_length,
        "deflate bomb": bomb,
        "deep nesting": deep,
    }
    for name, part in cases.items():
        response = stow(gateway, multipart([part]))
        # Nothing stored, each instance refused with a failure reason in the response module.
        assert response.status_code == 409, (name, response.status_code, response.text[:300])
        assert failed_reasons(response), (name, response.text[:300])
    # A valid instance with an executable header in its preamble: the preamble is not the
    # gateway's to run or to keep, the instance is stored.
    with_exe = b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + instance(testbed)[68:]
    response = stow(gateway, multipart([with_exe]))
    assert response.status_code == 200, response.text[:300]
    # Hostile ones next to a valid one: the valid one is stored, the others listed as failed.
    response = stow(gateway, multipart([cases["truncated"], instance(testbed), cases["huge value length"]]))
    assert response.status_code == 202, response.text[:300]
    assert len(failed_reasons(response)) == 2
    still_serving(gateway)
