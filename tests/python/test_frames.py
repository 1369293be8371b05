"""Frames and bulk data through the gateway, with dicomweb-client."""

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_fragments
from pydicom.uid import generate_uid


def test_native_frames_of_a_multiframe_instance(gateway, testbed):
    mf = testbed["data"]["multiframe"]
    original = pydicom.dcmread(mf["files"][0])
    frame_size = original.Rows * original.Columns * 2
    client = DICOMwebClient(url=gateway.url)
    frames = client.retrieve_instance_frames(mf["study_uid"], mf["series_uid"], mf["instance_uids"][0], frame_numbers=[1, 3],
                                             media_types=(("application/octet-stream", "*"),))
    assert frames == [original.PixelData[:frame_size], original.PixelData[2 * frame_size:3 * frame_size]]


def test_encapsulated_frame_as_stored(orthanc_gateway, testbed):
    # A JPEG file whose UIDs no other of pydicom's files shares, so Orthanc holds this one.
    files = [f for f in testbed["data"]["pydicom"] if f["stored"]]
    uids = [f["stored"]["sop_instance_uid"] for f in files]
    loaded = next(
        f for f in files
        if f["stored"]["transfer_syntax_uid"] in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70")
        and uids.count(f["stored"]["sop_instance_uid"]) == 1
        and pydicom.dcmread(f["path"], stop_before_pixels=True).file_meta.TransferSyntaxUID == f["stored"]["transfer_syntax_uid"]
        and int(pydicom.dcmread(f["path"], stop_before_pixels=True).get("NumberOfFrames", 1)) == 1
    )
    stored = loaded["stored"]
    original = pydicom.dcmread(loaded["path"])
    client = DICOMwebClient(url=orthanc_gateway.url)
    frames = client.retrieve_instance_frames(stored["study_uid"], stored["series_uid"], stored["sop_instance_uid"], frame_numbers=[1],
                                             media_types=(("image/jpeg", stored["transfer_syntax_uid"]),))
    assert frames == [b"".join(generate_fragments(original.PixelData))]
    assert frames[0][:2] == b"\xff\xd8"  # a JPEG stream, start of image


def test_metadata_bulkdata_uri_serves_the_pixel_data(orthanc_gateway, testbed):
    ct = testbed["data"]["ct"]
    client = DICOMwebClient(url=orthanc_gateway.url)
    metadata = client.retrieve_instance_metadata(ct["study_uid"], ct["series_uid"], ct["instance_uids"][0])
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri.startswith(orthanc_gateway.url)
    pixels = client.retrieve_bulkdata(uri)
    assert pixels == [pydicom.dcmread(ct["files"][0]).PixelData]


def test_frame_errors(orthanc_gateway, testbed):
    mf = testbed["data"]["multiframe"]
    base = f"{orthanc_gateway.url}/studies/{mf['study_uid']}/series/{mf['series_uid']}/instances/{mf['instance_uids'][0]}"
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    assert requests.get(f"{base}/frames/0", headers=accept).status_code == 400
    assert requests.get(f"{base}/frames/1,x", headers=accept).status_code == 400
    assert requests.get(f"{base}/frames/999", headers=accept).status_code == 404
    assert requests.get(f"{base}/bulkdata/7FE0", headers=accept).status_code == 400
    assert requests.get(f"{base}/bulkdata/00091001", headers=accept).status_code == 404


def test_encapsulated_frame_decoded_by_default(storing_gateway):
    # PS3.18 §8.7.3.3: without a transfer-syntax parameter, frames are Explicit VR Little
    # Endian, so a lossless (RLE) frame is decoded for a client that asks for octet-stream,
    # and sent as stored to one that accepts image/dicom-rle.
    original = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    original.StudyInstanceUID, original.SeriesInstanceUID = generate_uid(), generate_uid()
    original.SOPInstanceUID = original.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    client = DICOMwebClient(url=storing_gateway.url)
    client.store_instances([original])
    uids = (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
    decoded = client.retrieve_instance_frames(*uids, frame_numbers=[1], media_types=("application/octet-stream",))
    assert decoded == [original.pixel_array.tobytes()]
    url = f"{storing_gateway.url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}/frames/1"
    as_stored = requests.get(url, headers={"Accept": 'multipart/related; type="image/dicom-rle"'})
    assert as_stored.status_code == 200, as_stored.text
    assert "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5" in as_stored.text[:400]
