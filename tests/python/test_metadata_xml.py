"""Metadata as XML (PS3.19 Native DICOM Model) and instances as their bulk data: the two media
types PS3.18 Table 10.4.4-1 requires beside DICOM JSON and application/dicom."""

import xml.etree.ElementTree as ElementTree

import pydicom
import requests


def parts(response):
    """The (headers, content) of each part of a multipart/related answer."""
    content_type = response.headers["Content-Type"]
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary="))
    body = response.content
    assert body.rstrip().endswith(f"--{boundary}--".encode()), "no closing delimiter"
    found = []
    for chunk in body.split(f"--{boundary}".encode())[1:-1]:
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        found.append((headers, content[:-2]))
    return found


def test_metadata_as_native_dicom_model(orthanc_gateway, testbed):
    ct = testbed["data"]["ct"]
    url = f"{orthanc_gateway.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/metadata"
    response = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith('multipart/related; type="application/dicom+xml"')
    found = parts(response)
    assert len(found) == len(ct["instance_uids"])
    as_json = {i["00080018"]["Value"][0]: i for i in requests.get(url, headers={"Accept": "application/dicom+json"}).json()}
    for headers, content in found:
        assert headers["Content-Type"] == "application/dicom+xml"
        root = ElementTree.fromstring(content)
        assert root.tag == "NativeDicomModel"
        attributes = {a.get("tag"): a for a in root.findall("DicomAttribute")}
        uid = attributes["00080018"].find("Value").text
        json = as_json[uid]
        assert set(attributes) == set(json)
        for tag, attribute in json.items():
            assert attributes[tag].get("vr") == attribute["vr"]
            if attribute["vr"] in ("UI", "DA", "TM", "CS", "LO", "SH"):
                assert [v.text for v in attributes[tag].findall("Value")] == attribute.get("Value", []), tag
        assert attributes["7FE00010"].find("BulkData").get("uri") == json["7FE00010"]["BulkDataURI"]
        name = attributes["00100010"].find("PersonName/Alphabetic/FamilyName").text
        assert json["00100010"]["Value"][0]["Alphabetic"].startswith(name)


def test_instance_as_its_bulk_data(orthanc_gateway, testbed):
    ct = testbed["data"]["ct"]
    base = f"{orthanc_gateway.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/instances/{ct['instance_uids'][0]}"
    response = requests.get(base, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith('multipart/related; type="application/octet-stream"')
    by_location = {headers["Content-Location"]: content for headers, content in parts(response)}
    pixels = by_location[f"{base}/bulkdata/7FE00010"]
    assert pixels == pydicom.dcmread(ct["files"][0]).PixelData
    # The same bytes as the bulk data URI the metadata gives.
    metadata = requests.get(f"{base}/metadata", headers={"Accept": "application/dicom+json"}).json()[0]
    assert metadata["7FE00010"]["BulkDataURI"] in by_location
