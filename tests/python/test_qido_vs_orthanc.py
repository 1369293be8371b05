"""QIDO-RS answers through the gateway compared attribute by attribute with Orthanc's own
DICOMweb on the same data. Differences that remain are documented in docs/QIDO-COMPARISON.md."""

import json

import requests

# RetrieveURL names the server answering, so it differs by host and port; the gateway's private
# attributes name the sites holding each result.
DIFFERS_BY_DESIGN = {"00081190", "00090010", "00091010"}


# Study attributes (PS3.18 Table 10.6.3-3) that Orthanc adds to series and instance results of a
# search within one study; the gateway returns what the standard lists for that resource.
STUDY_ATTRIBUTES = {"00080005", "00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020",
                    "00100030", "00100040", "00200010", "00201206", "00201208", "00081030", "0020000D"}


def key(result, with_patient):
    """A result's identity: its UIDs, and PatientID where study attributes are returned
    (pydicom's data has one study UID under two patients)."""
    def first(tag):
        values = result.get(tag, {}).get("Value") or [""]
        return json.dumps(values[0])
    tags = ("0020000D", "0020000E", "00080018") + (("00100020",) if with_patient else ())
    return tuple(first(t) for t in tags)


def test_qido_matches_orthancs_own_dicomweb(orthanc_gateway, testbed):
    theirs_base = orthanc_gateway.site["http_url"] + "/dicom-web"
    ct = testbed["data"]["ct"]
    queries = [
        "/studies",
        "/series",
        "/instances",
        f"/studies/{ct['study_uid']}/series",
        f"/studies/{ct['study_uid']}/instances",
        "/studies?PatientName=Synthetic*&includefield=StudyDescription",
        "/studies?StudyDate=20000101-",
        "/series?Modality=CT",
    ]
    compared = 0
    for query in queries:
        ours = requests.get(orthanc_gateway.url + query).json()
        theirs = requests.get(theirs_base + query).json()
        scoped = query.startswith("/studies/")
        ours_by_key = {key(r, not scoped): r for r in ours}
        theirs_by_key = {key(r, not scoped): r for r in theirs}
        assert set(ours_by_key) == set(theirs_by_key), query
        assert len(ours_by_key) == len(ours), f"{query}: the gateway lists one thing twice"
        # Orthanc keeps records that differ only by padding apart (PatientID `id11111` and
        # `id11111 `: one study, one patient in DICOM's terms), each with its own values; the
        # gateway shows one (docs/FEDERATION.md), so which values it shows is not compared.
        padded = [k for k in theirs_by_key if sum(key(r, not scoped) == k for r in theirs) > 1]
        for k, mine in ours_by_key.items():
            if k in padded:
                continue
            other = theirs_by_key[k]
            for tag in set(mine) | set(other):
                if tag in DIFFERS_BY_DESIGN:
                    continue
                if scoped and tag not in mine and tag in STUDY_ATTRIBUTES:
                    continue
                # An attribute the standard requires is returned empty by the gateway when the
                # PACS has no value; Orthanc leaves it out. Both say "no value".
                assert mine.get(tag, {}).get("Value") == other.get(tag, {}).get("Value"), (query, k, tag)
                compared += 1
    assert compared > 1000
