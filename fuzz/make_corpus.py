#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/: small valid inputs
(made with pydicom the way the test bed makes its instances) and the attack patterns a hostile
client or PACS uses (lengths of 0xFFFFFFFF, PDUs claiming 4 GiB, deep sequence nesting, deflate
bombs, "../" in UIDs, XML entities, an executable header in the preamble). Run it again after
changing it; the files are small (the whole corpus stays well under 2 MB)."""

import io
import os
import struct
import zlib

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
CT = "1.2.840.10008.5.1.4.1.1.2"


def put(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


def instance(ts=ExplicitVRLittleEndian, uid="1.2.826.0.1.3680043.8.498.1", pixels=64, nest=0, preamble=None):
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-1"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20200101"
    ds.Modality = "CT"
    if nest:
        inner = Dataset()
        inner.CodeValue = "1"
        for _ in range(nest):
            outer = Dataset()
            outer.ReferencedImageSequence = Sequence([inner])
            inner = outer
        ds.ReferencedImageSequence = Sequence([inner])
    if pixels:
        side = int(pixels**0.5)
        ds.Rows = side
        ds.Columns = side
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(side * side)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True)
    data = bytearray(out.getvalue())
    if preamble is not None:
        data[: len(preamble)] = preamble
    return bytes(data)


def part10_seeds():
    explicit = instance()
    put("part10", "explicit-le", explicit)
    put("part10", "implicit-le", instance(ts=ImplicitVRLittleEndian))
    put("part10", "deflated", instance(ts=DeflatedExplicitVRLittleEndian))
    put("part10", "nested-sequences", instance(nest=40, pixels=0))
    put("part10", "uid-path-traversal", instance(uid="../../../../etc/passwd", pixels=0))
    # An executable header in the preamble (PS3.10 §7.5 allows any preamble; it must stay data).
    put("part10", "preamble-executable", instance(preamble=b"MZ\x90\x00" + b"\x00" * 56 + b"PE\x00\x00", pixels=16))
    put("part10", "preamble-elf", instance(preamble=b"\x7fELF\x02\x01\x01", pixels=16))
    # Pixel Data claiming 0xFFFFFFFE bytes (even, not undefined): a length to be checked, not allocated.
    at = explicit.rfind(b"\xe0\x7f\x10\x00OW")
    if at < 0:
        at = explicit.rfind(b"\xe0\x7f\x10\x00OB")
    put("part10", "pixel-length-huge", explicit[: at + 8] + struct.pack("<I", 0xFFFFFFFE) + explicit[at + 12 :])
    # An element of undefined length (0xFFFFFFFF) that is not a sequence.
    put("part10", "undefined-length-text", explicit[:-16] + b"\x10\x00\x10\x00UN\x00\x00\xff\xff\xff\xff" + b"AB")
    # File meta group claiming 4 GiB.
    put("part10", "meta-length-huge", explicit[:132] + b"\x02\x00\x00\x00UL\x04\x00\xff\xff\xff\xff" + explicit[144:])
    put("part10", "truncated", explicit[: len(explicit) // 2])
    # A deflate bomb: a tiny deflated data set that inflates to 64 MiB of one private element.
    head = instance(ts=DeflatedExplicitVRLittleEndian, pixels=0)
    meta_end = 132 + 12 + struct.unpack("<I", head[140:144])[0]
    body = b"\x09\x00\x10\x00OB\x00\x00" + struct.pack("<I", 64 << 20) + bytes(64 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    put("part10", "deflate-bomb", head[:meta_end] + compressor.compress(body) + compressor.flush())


def pdu(kind, body):
    return struct.pack(">BBI", kind, 0, len(body)) + body


def pdv(pc, header, data):
    return struct.pack(">IBB", len(data) + 2, pc, header) + data


def element(group, elem, value):
    return struct.pack("<HHI", group, elem, len(value)) + value


def command(field, has_data):
    body = (
        element(0, 0x0002, b"1.2.840.10008.5.1.4.1.2.2.1\x00")
        + element(0, 0x0100, struct.pack("<H", field))
        + element(0, 0x0120, struct.pack("<H", 1))
        + element(0, 0x0800, struct.pack("<H", 0x0000 if has_data else 0x0101))
        + element(0, 0x0900, struct.pack("<H", 0xFF00))
    )
    return element(0, 0x0000, struct.pack("<I", len(body))) + body


def dimse_seeds():
    cmd = command(0x8020, True)
    identifier = element(0x0010, 0x0010, b"Doe^Jane")
    put("dimse", "find-response", pdu(4, pdv(1, 0x03, cmd)) + pdu(4, pdv(1, 0x02, identifier)))
    put("dimse", "split-over-pdus", pdu(4, pdv(1, 0x01, cmd[:20])) + pdu(4, pdv(1, 0x03, cmd[20:])) + pdu(4, pdv(1, 0x02, identifier)))
    put("dimse", "pdu-claims-4gib", struct.pack(">BBI", 4, 0, 0xFFFFFFFF) + pdv(1, 0x03, cmd))
    put("dimse", "pdv-claims-4gib", pdu(4, struct.pack(">IBB", 0xFFFFFFFF, 1, 0x03) + cmd))
    put("dimse", "command-length-huge", pdu(4, pdv(1, 0x03, element(0, 0, struct.pack("<I", 0xFFFFFFF0)) + cmd[12:])))
    put("dimse", "element-length-huge", pdu(4, pdv(1, 0x03, cmd[:12] + struct.pack("<HHI", 0, 2, 0xFFFFFFFF))))
    put("dimse", "data-before-command", pdu(4, pdv(1, 0x02, identifier)))
    put("dimse", "abort", pdu(7, b"\x00\x00\x02\x00"))
    put("dimse", "release", pdu(5, b"\x00\x00\x00\x00"))


def multipart_seeds():
    dicom = instance(pixels=16)
    boundary = b"XyZb"  # the harness reads the boundary from the input: byte 2 gives its length
    def body(parts, close=True):
        out = b""
        for p in parts:
            out += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        if close:
            out += b"--" + boundary + b"--\r\n"
        return out
    head = bytes([200, len(boundary) - 1]) + boundary
    put("multipart", "two-instances", head + body([dicom[:300], b"second"]))
    put("multipart", "no-closing-boundary", head + body([b"first"], close=False))
    put("multipart", "boundary-never-appears", head + b"x" * 2000)
    put("multipart", "headers-without-end", head + b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n" + b"X: y\r\n" * 50)
    put("multipart", "many-tiny-parts", bytes([7, len(boundary) - 1]) + boundary + body([b""] * 500))
    put("multipart", "part-too-large", head + body([b"a" * 5000]))
    put("multipart", "xml-entities", head + b"--" + boundary + b"\r\nContent-Type: application/dicom+xml\r\n\r\n"
        + b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>\r\n--' + boundary + b"--")


def qido_seeds():
    for name, q in {
        "patient-name": "PatientName=Doe*&limit=10&offset=0",
        "uid-list": "StudyInstanceUID=1.2.3,1.2.4&includefield=all",
        "sequence-match": "RequestAttributesSequence.RequestedProcedureID=7&fuzzymatching=true",
        "date-range": "StudyDate=20200101-20201231&StudyTime=-1200",
        "tag-form": "00100020=PID*&includefield=00081030,StudyDescription",
        "uid-traversal": "StudyInstanceUID=..%2F..%2Fetc%2Fpasswd",
        "utf8-value": "PatientName=M%C3%BCller",
        "many-parameters": "&".join(f"includefield=0008{i:04X}" for i in range(0, 400, 4)),
        "limit-huge": "limit=18446744073709551616&offset=99999999999999999999",
    }.items():
        put("qido_query", name, q)


def media_type_seeds():
    for name, v in {
        "dicom-json": 'application/dicom+json, application/json;q=0.9, */*;q=0.1',
        "multipart": 'multipart/related; type="application/dicom"; transfer-syntax=*; boundary="a b;c"',
        "unbalanced-quote": 'multipart/related; type="application/dicom; boundary=x',
        "many-ranges": ",".join(["image/jpeg;q=0.5"] * 300),
        "empty-ranges": ",,,;;;=,=",
    }.items():
        put("media_types", name, v)


def jwt_seeds():
    import base64
    import json
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    claims = {"iss": "https://issuer.invalid", "aud": "dicomweb", "sub": "alice", "exp": 4102444800, "projects": ["p"]}
    for name, header in {
        "hs256": {"alg": "HS256", "typ": "JWT"},
        "es256-kid": {"alg": "ES256", "kid": "k1"},
        "alg-none": {"alg": "none"},
        "unknown-kid": {"alg": "RS256", "kid": "../../keys"},
    }.items():
        put("jwt", name, b"\x01Bearer " + f"{b64(header)}.{b64(claims)}.c2lnbmF0dXJl".encode())
    put("jwt", "not-bearer", b"\x01Basic YWxpY2U6c2VjcmV0")
    put("jwt", "jwks", b"\x00" + json.dumps({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"}, {"kty": "oct", "k": "c2VjcmV0"}]}).encode())
    put("jwt", "jwks-deep", b"\x00" + b'{"keys":[' + b"[" * 200 + b"]" * 200 + b"]}")


def eucaim_seeds():
    import json
    leaf = lambda key, kind, value: {"key": key, "type": kind, "value": value}
    row = lambda *criteria: {"operand": "AND", "children": [{"operand": "OR", "children": list(c)} for c in criteria]}
    for name, body in {
        "empty": {"ast": {"operand": "OR", "children": []}, "id": "a__search__b"},
        "explorer-example": {"ast": {"operand": "OR", "children": [row(
            [leaf("SNOMEDCT263495000", "EQUALS", "SNOMEDCT248152002")],
            [leaf("RID10311", "EQUALS", "RID10312"), leaf("RID10311", "EQUALS", "RID10321")],
            [leaf("SNOMEDCT423493009", "BETWEEN", {"min": 40.0, "max": 70.0})])]}, "id": "x"},
        "open-bound-and-in": {"ast": {"operand": "OR", "children": [row(
            [leaf("SNOMEDCT423493009", "BETWEEN", {"min": 40.0, "max": 0.0})],
            [leaf("RID10311", "IN", ["RID10312", 7, None])])]}},
        "wrong-types": {"ast": {"operand": "OR", "children": [row(
            [leaf("SNOMEDCT423493009", "LOWER_THAN", "sixty"), leaf(7, "EQUALS", {"min": []})])]}},
    }.items():
        put("eucaim_query", name, json.dumps(body))
    deep = {"operand": "OR", "children": []}
    for _ in range(60):
        deep = {"operand": "AND", "children": [deep]}
    put("eucaim_query", "too-deep", json.dumps({"ast": deep}))
    put("eucaim_query", "not-an-object", "[1, 2, 3]")


def origin_json_seeds():
    """A DICOMweb origin's JSON answers: metadata of study 1.2.3 with the origin's URLs in it (a
    BulkDataURI, a RetrieveURL, a Pixel Data Provider URL, a URL in a sequence), a search page, an
    object of another study, nesting past any bound, values that fit no VR."""
    import json

    uid = lambda v: {"vr": "UI", "Value": [v]}
    instance = {
        "0020000D": uid("1.2.3"), "0020000E": uid("1.2.3.4"), "00080018": uid("1.2.3.4.5"),
        "00080016": uid("1.2.840.10008.5.1.4.1.1.2"),
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00280010": {"vr": "US", "Value": [512]},
        "00281050": {"vr": "DS", "Value": [40, "-1.5e3"]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "https://origin.example/dicom-web/studies/1.2.3/bulk/7FE00010"},
        "00081190": {"vr": "UR", "Value": ["https://origin.example/dicom-web/studies/1.2.3"]},
        "00287FE0": {"vr": "UR", "Value": ["https://jpip.origin.example/1.2.3.4.5"]},
        "00081115": {"vr": "SQ", "Value": [{
            "00081190": {"vr": "UR", "Value": ["https://origin.example/s"]},
            "00281201": {"vr": "OW", "InlineBinary": "AAECAw=="},
            "00280006": {"vr": "OB", "BulkDataURI": "https://origin.example/nested"}}]},
    }
    put("origin_json", "metadata", json.dumps([instance, dict(instance, **{"00080018": uid("1.2.3.4.6")})]))
    put("origin_json", "search-page", json.dumps([
        {"0020000D": uid("1.2.3"), "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
         "00201208": {"vr": "IS", "Value": [201]}, "00080020": {"vr": "DA", "Value": ["20200101"]}},
        {"0020000D": uid("1.2.4"), "00100020": {"vr": "LO"}}]))
    put("origin_json", "another-study", json.dumps([instance, dict(instance, **{"0020000D": uid("9.9")})]))
    deep = {"vr": "SQ", "Value": [{}]}
    for _ in range(40):
        deep = {"vr": "SQ", "Value": [{"00400275": deep}]}
    put("origin_json", "too-deep", json.dumps([dict(instance, **{"00400275": deep})]))
    put("origin_json", "not-dicom-json", json.dumps([{"0020000D": uid("1.2.3"), "zz": 1, "00100010": {"vr": "PN", "Value": [7]},
                                                     "00280010": {"vr": "US", "Value": [-1, 1e99]}}]))
    put("origin_json", "not-an-array", json.dumps(instance))


if __name__ == "__main__":
    part10_seeds()
    dimse_seeds()
    multipart_seeds()
    qido_seeds()
    media_type_seeds()
    jwt_seeds()
    eucaim_seeds()
    origin_json_seeds()
