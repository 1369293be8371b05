"""One DICOMweb endpoint over every site of the test bed: three Orthanc sites and dcmqrscp, some
studies at several sites; sites of the tests' own that stop, come back, or never answer."""

import collections
import io
import json
import threading
import time

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from conftest import OrthancProcess, free_port, start_federation, stop

SITES = "00091010"


def value(result, tag):
    return (result.get(tag, {}).get("Value") or [None])[0]


def identity(result):
    return json.dumps([value(result, "0020000D"), value(result, "00100020")])


def ct_instance(testbed, patient_id, study=None, series=None, **attributes):
    """One instance of the synthetic CT under new UIDs (or the given study / series), a
    patient of its own (not one of the test bed's, whom other tests count) and `attributes`."""
    ds = pydicom.dcmread(testbed["data"]["ct"]["files"][0])
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    for keyword, attribute in attributes.items():
        setattr(ds, keyword, attribute)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return ds, out.getvalue()


def orthanc(testbed, site_id):
    return next(s for s in testbed["sites"] if s["id"] == site_id)["http_url"]


def test_studies_are_merged_by_uid_with_union_rollups(federation, testbed):
    studies = requests.get(f"{federation.url}/studies").json()
    # A study held by several sites is one result, and so is a study an archive keeps as two
    # records that differ only by padding (Orthanc, for pydicom's `id11111 `). The expectation
    # comes from the sites' own data: Orthanc's REST API, and the files dcmqrscp was loaded with.
    expected = set()
    for site in testbed["sites"]:
        if site["kind"] == "orthanc":
            found = requests.post(f"{site['http_url']}/tools/find", json={"Level": "Study", "Query": {}, "Expand": True}).json()
            expected |= {(s["MainDicomTags"]["StudyInstanceUID"], s["PatientMainDicomTags"].get("PatientID", "").strip())
                         for s in found}
        else:
            for data in (testbed["data"]["ct"], testbed["data"]["multiframe"]):
                ds = pydicom.dcmread(data["files"][0], stop_before_pixels=True)
                expected.add((ds.StudyInstanceUID, str(ds.PatientID).strip()))
    shown = collections.Counter((value(s, "0020000D"), (value(s, "00100020") or "").strip()) for s in studies)
    assert shown == collections.Counter(expected)
    ct = next(s for s in studies if value(s, "0020000D") == testbed["data"]["ct"]["study_uid"])
    assert ct[SITES]["Value"] == [site["id"] for site in testbed["sites"]]
    assert value(ct, "00201208") == len(testbed["data"]["ct"]["instance_uids"])
    assert value(ct, "00201206") == 1
    assert ct["00080061"]["Value"] == ["CT"]
    # pydicom's even-numbered files are at every Orthanc site: one result each, naming them.
    shared = [s for s in studies if s[SITES]["Value"][:3] == ["site-1", "site-2", "site-3"]]
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
        ds, data = ct_instance(testbed, "SPLIT", study=study, PatientName="Split^Study")
        assert requests.post(f"{orthanc(testbed, site_id)}/instances", data=data).ok
        parts.append(ds.SOPInstanceUID)
    found = requests.get(f"{federation.url}/studies", params={"StudyInstanceUID": study}).json()
    assert len(found) == 1
    assert found[0][SITES]["Value"] == ["site-1", "site-2"]
    assert value(found[0], "00201206") == 2 and value(found[0], "00201208") == 2
    retrieved = DICOMwebClient(url=federation.url).retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(parts)


def test_a_series_split_instance_by_instance_is_counted_and_retrieved_whole(federation, testbed):
    study, series = generate_uid(), generate_uid()
    parts = {}
    for number, site_id in enumerate(("site-1", "site-2", "site-3"), start=1):
        ds, data = ct_instance(testbed, "SPLIT-SERIES", study=study, series=series, InstanceNumber=number, PatientName="Split^Series")
        assert requests.post(f"{orthanc(testbed, site_id)}/instances", data=data).ok
        if site_id == "site-1":
            # site-3 holds site-1's instance too: three distinct instances in all.
            assert requests.post(f"{orthanc(testbed, 'site-3')}/instances", data=data).ok
        parts[ds.SOPInstanceUID] = site_id

    found = requests.get(f"{federation.url}/studies/{study}/series").json()
    assert len(found) == 1 and value(found[0], "00201209") == 3
    client = DICOMwebClient(url=federation.url)
    for retrieved in (client.retrieve_study(study, media_types=(("application/dicom", "*"),)),
                      client.retrieve_series(study, series, media_types=(("application/dicom", "*"),))):
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


# Health checks fast enough for a test: a C-ECHO every second, the circuit opening after two
# consecutive failures and probed again after two seconds.
FAST_HEALTH = """
[federation]
echo_interval = "1s"
circuit_failures = 2
circuit_open = "2s"
"""


def admin(gw):
    return requests.get(gw.url.rsplit("/dicom-web", 1)[0] + "/admin/sites").json()["sites"]


def admin_site(gw, site_id):
    return next(s for s in admin(gw) if s["id"] == site_id)


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def test_a_site_stopped_mid_test_is_reported_then_used_again_when_back(testbed, tmp_path):
    spare = OrthancProcess(tmp_path, "SPARE")
    process = None
    try:
        ds, data = ct_instance(testbed, "SPARE-SITE")
        assert requests.post(f"{spare.rest}/instances", data=data).ok
        process, gw = start_federation(testbed, "FEDGW2", extra_sites=spare.site_toml("spare"), extra=FAST_HEALTH)
        ct = testbed["data"]["ct"]["study_uid"]
        both = {"StudyInstanceUID": f"{ct},{ds.StudyInstanceUID}"}
        wait_for(lambda: admin_site(gw, "spare")["state"] == "up", 10, "the spare site is up")
        response = requests.get(f"{gw.url}/studies", params=both)
        assert response.status_code == 200 and "Warning" not in response.headers
        assert {value(s, "0020000D") for s in response.json()} == {ct, ds.StudyInstanceUID}

        spare.stop()
        response = requests.get(f"{gw.url}/studies", params=both)
        assert response.status_code == 200
        # Unreachable when asked, or already left out if its C-ECHOes failed first.
        assert "site spare did not answer: unreachable" in response.headers["Warning"] or \
            "site spare was not asked" in response.headers["Warning"]
        assert {value(s, "0020000D") for s in response.json()} == {ct}

        # The circuit opens: the site is no longer asked, and says so at once.
        wait_for(lambda: admin_site(gw, "spare")["state"] == "down", 10, "the spare site is down")
        assert admin_site(gw, "spare")["circuit"] == "open"
        began = time.monotonic()
        response = requests.get(f"{gw.url}/studies", params=both)
        assert time.monotonic() - began < 1.5
        assert "site spare was not asked: down after repeated failures" in response.headers["Warning"]
        # Its study cannot be retrieved meanwhile: 503 with a time to come back.
        response = requests.get(f"{gw.url}/studies/{ds.StudyInstanceUID}", headers={"Accept": "multipart/related; type=\"application/dicom\"; transfer-syntax=*"})
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        assert requests.get(gw.url.rsplit("/dicom-web", 1)[0] + "/readyz").status_code == 200

        spare.start()
        wait_for(lambda: admin_site(gw, "spare")["state"] == "up", 30, "the spare site is probed back up")
        response = requests.get(f"{gw.url}/studies", params=both)
        assert response.status_code == 200 and "Warning" not in response.headers
        assert {value(s, "0020000D") for s in response.json()} == {ct, ds.StudyInstanceUID}
        retrieved = DICOMwebClient(url=gw.url).retrieve_study(ds.StudyInstanceUID, media_types=(("application/dicom", "*"),))
        assert [r.SOPInstanceUID for r in retrieved] == [ds.SOPInstanceUID]
    finally:
        if process:
            stop(process)
        spare.stop()


def test_a_site_that_accepts_the_association_and_never_answers_is_cut_off(testbed):
    release = threading.Event()

    def never_find(event):
        release.wait(120)
        yield 0xC000, None

    def never_echo(event):
        release.wait(120)
        return 0x0000

    ae = AE(ae_title="HANG")
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, never_find), (evt.EVT_C_ECHO, never_echo)])
    hang = f"""
[[sites]]
id = "hang"
ae_title = "HANG"
address = "127.0.0.1:{port}"
retrieve = "c-get"
timeout = "1s"
"""
    process, gw = start_federation(testbed, "FEDGW2", extra_sites=hang, extra=FAST_HEALTH)
    try:
        began = time.monotonic()
        response = requests.get(f"{gw.url}/studies", params={"PatientName": "Synthetic^Patient?"})
        elapsed = time.monotonic() - began
        # Cut off at its deadline (the 1 s response timeout), with the others' results and the
        # reason.
        assert response.status_code == 200
        assert 0.8 < elapsed < 6, elapsed
        assert "site hang did not answer: timed out" in response.headers["Warning"]
        found = {value(s, "0020000D") for s in response.json()}
        assert testbed["data"]["ct"]["study_uid"] in found
        # Its C-ECHOes time out too; the circuit opens and the site is left out at once.
        wait_for(lambda: admin_site(gw, "hang")["circuit"] == "open", 15, "the hanging site's circuit opens")
        began = time.monotonic()
        response = requests.get(f"{gw.url}/studies", params={"PatientName": "Synthetic^Patient?"})
        assert time.monotonic() - began < 1.5
        assert "site hang was not asked" in response.headers["Warning"]
        assert admin_site(gw, "site-1")["state"] == "up"
    finally:
        stop(process)
        release.set()
        server.shutdown()


def test_where_studies_live_is_remembered_across_a_restart(testbed, tmp_path):
    remember = f"""
[federation]
state_dir = "{tmp_path}"
"""

    def sent(gw, kind):
        return {s["id"]: s["operations_sent"][kind] for s in admin(gw)}

    def delta(before, after):
        return {k: after[k] - before[k] for k in after if after[k] != before[k]}

    process, gw = start_federation(testbed, "FEDGW2", extra=remember)
    try:
        assert requests.get(f"{gw.url}/studies").ok
        ct_only = {"StudyInstanceUID": testbed["data"]["ct"]["study_uid"]}
        first = requests.get(f"{gw.url}/studies", params=ct_only).json()
        before = sent(gw, "find")
        again = requests.get(f"{gw.url}/studies", params=ct_only).json()
        assert again == first
        # One C-FIND per site: the roll-ups of a study held by several sites come from memory.
        assert delta(before, sent(gw, "find")) == {site["id"]: 1 for site in testbed["sites"]}
    finally:
        stop(process)
    process, gw = start_federation(testbed, "FEDGW2", extra=remember)
    try:
        ct = testbed["data"]["ct"]
        finds, retrieves = sent(gw, "find"), sent(gw, "retrieve")
        retrieved = DICOMwebClient(url=gw.url).retrieve_study(ct["study_uid"], media_types=(("application/dicom", "*"),))
        assert len(retrieved) == len(ct["instance_uids"])
        # Located from the embedded store: no C-FIND, one C-GET from the first site holding it.
        assert delta(finds, sent(gw, "find")) == {}
        assert delta(retrieves, sent(gw, "retrieve")) == {"site-1": 1}
    finally:
        stop(process)


def test_a_pacs_that_answers_only_known_callers_answers_the_gateway(testbed, tmp_path):
    """An Orthanc configured as hospitals configure their PACS (only known calling AE titles,
    from their host, and only when called by its own AE title): the gateway, registered there,
    searches and retrieves; an unknown caller is refused; and with the search cache at its
    default the same search asked again is answered without the PACS (by the PACS's own
    figures)."""
    dest = next(d for d in testbed["move_destinations"] if d["ae_title"] == "FEDGW5")
    known = {"gateway": {"AET": dest["ae_title"], "Host": "127.0.0.1", "Port": dest["port"],
                         "AllowEcho": True, "AllowFind": True, "AllowGet": True, "AllowMove": False, "AllowStore": False}}
    (tmp_path / "strict").mkdir()
    pacs = OrthancProcess(tmp_path / "strict", "STRICTPACS", known=known)
    process = None
    try:
        ds, part10 = ct_instance(testbed, "STRICT-PACS-PATIENT")
        assert requests.post(f"{pacs.rest}/instances", data=part10).ok
        # Not one of the test bed's permissive sites: this one alone, under its own AE title.
        extra_site = pacs.site_toml("strict")
        process, gw = start_federation(testbed, "FEDGW5", extra_sites=extra_site, extra="\n[cache]\n")
        search = f"{gw.url}/sites/strict/studies?StudyInstanceUID={ds.StudyInstanceUID}"
        found = requests.get(search)
        assert found.status_code == 200 and value(found.json()[0], "00100020") == "STRICT-PACS-PATIENT", found.text
        retrieved = requests.get(f"{gw.url}/studies/{ds.StudyInstanceUID}", headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert retrieved.status_code == 200 and ds.SOPInstanceUID.encode() in retrieved.content

        def last_find():
            text = requests.get(f"{pacs.rest}/tools/metrics-prometheus").text
            return next((line.split()[2] for line in text.splitlines() if line.startswith("orthanc_find_scp_duration_ms ")), None)

        before = last_find()
        time.sleep(0.01)
        assert requests.get(search).json() == found.json()
        assert last_find() == before, "answered again by the PACS, not from the search cache"
        # Anyone else is refused by the PACS itself.
        intruder = AE(ae_title="INTRUDER")
        intruder.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = intruder.associate("127.0.0.1", pacs.dicom_port, ae_title="STRICTPACS")
        if assoc.is_established:
            query = pydicom.Dataset()
            query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ds.StudyInstanceUID
            answers = [status.Status for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind) if status]
            assoc.release()
            assert all(s not in (0xFF00, 0xFF01) for s in answers), "an unknown caller got matches"
    finally:
        if process:
            stop(process)
        pacs.stop()
