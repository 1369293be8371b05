"""One DICOMweb endpoint over every site of the test bed: two Orthanc sites and dcmqrscp, some
studies at several sites."""

import collections
import io
import json

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from conftest import start_federation

SITES = "00091010"


def value(result, tag):
    return (result.get(tag, {}).get("Value") or [None])[0]


def identity(result):
    return json.dumps([value(result, "0020000D"), value(result, "00100020")])


def test_studies_are_merged_by_uid_with_union_rollups(federation, testbed):
    studies = requests.get(f"{federation.url}/studies").json()
    # A study held by several sites is one result. (An archive may itself hold two records with
    # the same UIDs, as Orthanc does for some of pydicom's files: those stay two.)
    most_at_one_site = {}
    for site in testbed["sites"]:
        counts = collections.Counter(identity(s) for s in requests.get(f"{federation.url}/sites/{site['id']}/studies").json())
        for key, count in counts.items():
            most_at_one_site[key] = max(most_at_one_site.get(key, 0), count)
    assert collections.Counter(identity(s) for s in studies) == collections.Counter(most_at_one_site)
    ct = next(s for s in studies if value(s, "0020000D") == testbed["data"]["ct"]["study_uid"])
    assert ct[SITES]["Value"] == ["site-1", "site-2", "dcmqrscp"]
    assert value(ct, "00201208") == len(testbed["data"]["ct"]["instance_uids"])
    assert value(ct, "00201206") == 1
    assert ct["00080061"]["Value"] == ["CT"]
    # pydicom's even-numbered files are at both Orthanc sites: one result each, naming both.
    shared = [s for s in studies if s[SITES]["Value"][:2] == ["site-1", "site-2"]]
    assert len(shared) >= 10


def test_paging_covers_the_merged_set_without_gap_or_repeat(federation):
    everything = requests.get(f"{federation.url}/studies").json()
    pages = []
    for offset in range(0, len(everything) + 7, 7):
        response = requests.get(f"{federation.url}/studies", params={"limit": 7, "offset": offset})
        if response.status_code == 204:
            break
        pages.extend(response.json())
    assert [identity(s) for s in pages] == [identity(s) for s in everything]


def test_one_site_under_sites_prefix(federation, testbed):
    only = requests.get(f"{federation.url}/sites/site-2/studies").json()
    assert all(s[SITES]["Value"] == ["site-2"] for s in only)
    everywhere = requests.get(f"{federation.url}/studies").json()
    assert len(only) < len(everywhere)
    assert requests.get(f"{federation.url}/sites/no-such-site/studies").status_code == 404
    ct = testbed["data"]["ct"]
    series = requests.get(f"{federation.url}/sites/dcmqrscp/studies/{ct['study_uid']}/series").json()
    assert series[0][SITES]["Value"] == ["dcmqrscp"]


def test_a_study_split_across_sites_is_found_and_retrieved_whole(federation, testbed):
    study = generate_uid()
    parts = []
    for site_id in ("site-1", "site-2"):
        ds = pydicom.dcmread(testbed["data"]["ct"]["files"][0])
        ds.StudyInstanceUID = study
        ds.PatientName = "Split^Study"
        ds.PatientID = "SPLIT"  # not one of the test bed's patients, whom other tests count
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        site = next(s for s in testbed["sites"] if s["id"] == site_id)
        assert requests.post(f"{site['http_url']}/instances", data=out.getvalue()).ok
        parts.append(ds.SOPInstanceUID)
    found = requests.get(f"{federation.url}/studies", params={"StudyInstanceUID": study}).json()
    assert len(found) == 1
    assert found[0][SITES]["Value"] == ["site-1", "site-2"]
    assert value(found[0], "00201206") == 2 and value(found[0], "00201208") == 2
    retrieved = DICOMwebClient(url=federation.url).retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(parts)


def test_a_failing_site_gives_a_warning_and_the_others_results(testbed):
    down = f"""
[[sites]]
id = "down"
ae_title = "DOWN"
address = "127.0.0.1:9"
retrieve = "c-get"
timeout = "2s"
"""
    process, gw = start_federation(testbed, "FEDGW2", extra_sites=down)
    try:
        response = requests.get(f"{gw.url}/studies", params={"PatientName": "Synthetic^Patient?"})
        assert response.status_code == 200
        assert "site down did not answer" in response.headers["Warning"]
        found = {value(s, "0020000D") for s in response.json()}
        assert testbed["data"]["ct"]["study_uid"] in found and testbed["data"]["multiframe"]["study_uid"] in found
        only_down = requests.get(f"{gw.url}/sites/down/studies")
        assert only_down.status_code == 502
    finally:
        process.terminate()
        process.wait(timeout=10)
