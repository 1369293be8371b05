"""The retrieval cache and coalescing, end to end over the test bed's real sites: a second
retrieval makes no DIMSE traffic, concurrent retrievals of one study share one retrieval,
frames after metadata come from the cache, HTTP validators, and STOW-RS invalidating what
was cached of a study."""

import concurrent.futures
import contextlib
import hashlib
import io
import pathlib
import time

import pydicom
import pytest
import requests

from conftest import dimse_archive, free_port, pacs_activity, start_federation, stop
from test_federation import ct_instance

ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def admin(gw, what):
    return requests.get(gw.url.replace("/dicom-web", f"/admin/{what}")).json()


def dimse_sent(gw):
    """Find and retrieve operations the gateway has sent, per site (C-ECHOes left out), and when
    an Orthanc site last answered one by its own figures (conftest.pacs_activity): comparing two
    of these says "no DIMSE traffic" as seen from both ends."""
    pacs = pacs_activity()
    return {s["id"]: (s["operations_sent"]["find"], s["operations_sent"]["retrieve"], pacs.get(s["id"]))
            for s in admin(gw, "sites")["sites"]}


def parts(response):
    """The instances of a multipart response, in order, without the boundaries."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
    chunks = response.content.split(b"--" + boundary)[1:-1]
    return [chunk.partition(b"\r\n\r\n")[2][:-2] for chunk in chunks]


def stow(gw, part10):
    """Stores one instance through the gateway (into the site that takes instances)."""
    data = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part10 + b"\r\n--b--\r\n"
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b', "Accept": "application/dicom+json"}
    response = requests.post(f"{gw.url}/studies", data=data, headers=headers)
    assert response.status_code == 200, response.text


def digest(instances):
    return hashlib.sha256(b"".join(hashlib.sha256(i).digest() for i in instances)).hexdigest()


@pytest.fixture(scope="module")
def cached(testbed, tmp_path_factory):
    process, gw = start_federation(testbed, "FEDGW1", extra='\n[cache]\nmemory = "1GiB"\nttl = "10m"\n')
    yield gw
    process.terminate()
    process.wait(timeout=10)


def test_concurrent_retrievals_share_one_and_the_next_one_makes_no_dimse_traffic(testbed, cached):
    study = testbed["data"]["ct"]["study_uid"]
    url = f"{cached.url}/studies/{study}"
    before, cache_before = dimse_sent(cached), admin(cached, "cache")["retrievals"]

    def fetch(_):
        return parts(requests.get(url, headers=ACCEPT_DICOM, timeout=120))

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(fetch, range(10)))
    expected = len(testbed["data"]["ct"]["instance_uids"])
    assert all(len(r) == expected for r in responses)
    assert len({digest(r) for r in responses}) == 1
    after, cache_after = dimse_sent(cached), admin(cached, "cache")["retrievals"]
    retrieved = sum(after[s][1] - before[s][1] for s in after)
    assert retrieved == 1, (before, after)
    assert cache_after["misses"] - cache_before["misses"] == 1
    assert cache_after["coalesced"] - cache_before["coalesced"] == 9
    # The next retrieval is served from the cache: no C-FIND, no C-GET, the same instances.
    again = requests.get(url, headers=ACCEPT_DICOM)
    assert again.status_code == 200 and digest(parts(again)) == digest(responses[0])
    assert dimse_sent(cached) == after
    assert again.headers["Cache-Control"] == "private" and again.headers["ETag"]
    # A client that has it gets 304; another representation has another tag.
    unchanged = requests.get(url, headers={**ACCEPT_DICOM, "If-None-Match": again.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""
    explicit = requests.get(url, headers={"Accept": "multipart/related; type=\"application/dicom\""})
    assert explicit.status_code == 200 and explicit.headers["ETag"] != again.headers["ETag"]
    assert dimse_sent(cached) == after


def test_frames_after_metadata_come_from_the_cache(testbed, cached):
    study = testbed["data"]["multiframe"]["study_uid"]
    series = requests.get(f"{cached.url}/studies/{study}/series").json()[0]["0020000E"]["Value"][0]
    metadata = requests.get(f"{cached.url}/studies/{study}/series/{series}/metadata")
    assert metadata.status_code == 200
    instance = metadata.json()[0]["00080018"]["Value"][0]
    before = dimse_sent(cached)
    frames = requests.get(
        f"{cached.url}/studies/{study}/series/{series}/instances/{instance}/frames/1,2",
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    assert frames.status_code == 200 and len(parts(frames)) == 2
    rendered = requests.get(f"{cached.url}/studies/{study}/series/{series}/instances/{instance}/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
    assert dimse_sent(cached) == before
    # Metadata again: from the cache, with a validator.
    again = requests.get(f"{cached.url}/studies/{study}/series/{series}/metadata")
    assert again.json() == metadata.json() and again.headers["ETag"]
    assert requests.get(again.url, headers={"If-None-Match": again.headers["ETag"]}).status_code == 304
    assert dimse_sent(cached) == before


def test_stow_into_a_study_makes_its_next_retrieval_see_the_new_instance(testbed, cached):
    ds, part10 = ct_instance(testbed, "CACHE-STOW")
    stow(cached, part10)
    url = f"{cached.url}/studies/{ds.StudyInstanceUID}"
    assert len(parts(requests.get(url, headers=ACCEPT_DICOM))) == 1
    assert len(parts(requests.get(url, headers=ACCEPT_DICOM))) == 1
    second = pydicom.dcmread(io.BytesIO(part10))
    second.SOPInstanceUID = pydicom.uid.generate_uid()
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    out = io.BytesIO()
    second.save_as(out, enforce_file_format=True)
    stow(cached, out.getvalue())
    assert len(parts(requests.get(url, headers=ACCEPT_DICOM))) == 2


def over_four_associations(testbed):
    """A gateway over the test bed retrieving from site-1 over four associations, caching
    nothing: (its process, the gateway)."""
    return start_federation(
        testbed,
        "FEDGW2",
        site_keys={"site-1": "max_associations = 4\nretrieve_associations = 4"},
        extra='\n[cache]\nmemory = "0B"\nsearch_ttl = "0s"\n',
    )


def test_a_site_with_several_retrieve_associations_serves_a_whole_study_over_them(testbed):
    """`retrieve_associations = 4`: the study comes as instance-level C-GETs over several
    associations at once, every instance exactly once and unchanged."""
    process, gw = over_four_associations(testbed)
    try:
        study = testbed["data"]["ct"]["study_uid"]
        response = requests.get(f"{gw.url}/studies/{study}", headers=ACCEPT_DICOM, timeout=120)
        assert response.status_code == 200
        received = {}
        for part10 in parts(response):
            ds = pydicom.dcmread(io.BytesIO(part10))
            assert ds.SOPInstanceUID not in received, "an instance came twice"
            received[ds.SOPInstanceUID] = hashlib.sha256(ds.PixelData).hexdigest()
        originals = {}
        for path in testbed["data"]["ct"]["files"]:
            ds = pydicom.dcmread(path)
            originals[ds.SOPInstanceUID] = hashlib.sha256(ds.PixelData).hexdigest()
        assert received == originals
        site = next(s for s in admin(gw, "sites")["sites"] if s["id"] == "site-1")
        assert site["operations_sent"]["retrieve"] == 1
        # More at once than the two C-FINDs that list the study and its SOP classes.
        assert 3 <= site["associations"]["peak_in_use"] <= 4, site["associations"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_series_its_pacs_lists_twice_comes_once_per_instance_over_several_associations(testbed):
    """Two instances of one study and series stored under two Patient IDs: Orthanc keeps them
    as two studies and lists the series twice at SERIES level. Over several associations the
    study still comes once per instance, and its series is searched as one of two instances."""
    from pydicom.uid import generate_uid
    site = next(s for s in testbed["sites"] if s["id"] == "site-1")
    study, series = generate_uid(), generate_uid()
    stored, ids = set(), []
    process, gw = over_four_associations(testbed)
    try:
        for n, path in enumerate(testbed["data"]["ct"]["files"][:2]):
            ds = pydicom.dcmread(path)
            ds.PatientID = f"TWICE-{n}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            stored.add(ds.SOPInstanceUID)
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            answer = requests.post(f"{site['http_url']}/instances", data=out.getvalue(), timeout=60)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["ID"])
        for url in (f"{gw.url}/studies/{study}", f"{gw.url}/studies/{study}/series/{series}"):
            response = requests.get(url, headers=ACCEPT_DICOM, timeout=60)
            received = [pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID for p in parts(response)]
            assert sorted(received) == sorted(stored), (url, received)
        found = requests.get(f"{gw.url}/studies/{study}/series", timeout=60)
        assert found.status_code == 200, found.text
        listed = [s["0020000E"]["Value"][0] for s in found.json()]
        assert listed == [series], listed
        counts = [s.get("00201209", {}).get("Value") for s in found.json()]
        assert counts == [[2]], counts
    finally:
        for orthanc_id in ids:
            requests.delete(f"{site['http_url']}/instances/{orthanc_id}", timeout=60)
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def over_an_archive_that(testbed, ae_title, option):
    """A gateway retrieving over three associations from a pynetdicom archive (dimse_archive.py,
    behaving as `option` says) of the CT's first six instances: (gateway, its process, the six
    data sets)."""
    files = testbed["data"]["ct"]["files"][:6]
    held = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    with dimse_archive(ae_title, files, options=option) as site:
        bed = {**testbed, "sites": [], "move_destinations": [{"ae_title": "QUIRKGW", "port": free_port()}]}
        process, gw = start_federation(bed, "QUIRKGW", extra_sites=site + "max_associations = 3\nretrieve_associations = 3\n",
                                       extra='\n[cache]\nmemory = "0B"\nsearch_ttl = "0s"\n')
        try:
            yield gw, process, held
        finally:
            stop(process)


def sop_instance_uids(response):
    return [pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID for p in parts(response)]


def test_a_pacs_that_answers_an_instance_with_its_whole_series(testbed):
    """An archive that takes every IMAGE-level C-GET for the whole series (as some PACS do): an
    instance asked for comes alone, and the series over three associations (instance-level
    sub-requests) comes once per instance."""
    with over_an_archive_that(testbed, "WHOLESERIES", ["--get-ignores-instances"]) as (gw, _, held):
        study, series, one = held[0].StudyInstanceUID, held[0].SeriesInstanceUID, held[2].SOPInstanceUID
        response = requests.get(f"{gw.url}/studies/{study}/series/{series}/instances/{one}", headers=ACCEPT_DICOM)
        assert sop_instance_uids(response) == [one]
        response = requests.get(f"{gw.url}/studies/{study}/series/{series}", headers=ACCEPT_DICOM, timeout=60)
        received = sop_instance_uids(response)
        assert sorted(received) == sorted(ds.SOPInstanceUID for ds in held), received


def test_a_pacs_that_answers_a_study_with_another_patients_instances_has_them_left_out(testbed, tmp_path):
    """An archive that answers every C-GET with all it holds, whatever study is asked for: a
    study retrieved through the gateway carries its own instances only, never those of the
    other study (another patient) the archive sent with them, and neither does its cached
    copy."""
    files = testbed["data"]["ct"]["files"][:3]
    held = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    other_study = pydicom.uid.generate_uid()
    others = []
    for n, path in enumerate(testbed["data"]["ct"]["files"][3:5]):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = "OTHER-PATIENT", "Other^Patient"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = other_study, other_study + ".1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        others.append(tmp_path / f"other-{n}.dcm")
        ds.save_as(others[-1], enforce_file_format=True)
    with dimse_archive("ANYSTUDY", files + others, options=["--get-ignores-study"]) as site:
        bed = {**testbed, "sites": [], "move_destinations": [{"ae_title": "QUIRKGW", "port": free_port()}]}
        process, gw = start_federation(bed, "QUIRKGW", extra_sites=site)
        try:
            study = held[0].StudyInstanceUID
            for _ in range(2):  # from the archive, then from the cache
                response = requests.get(f"{gw.url}/studies/{study}", headers=ACCEPT_DICOM, timeout=60)
                assert response.status_code == 200
                received = sop_instance_uids(response)
                assert sorted(received) == sorted(ds.SOPInstanceUID for ds in held), received
        finally:
            stop(process)
    assert "names another study or series than asked" in pathlib.Path(process.log_path).read_text()


def test_a_pacs_that_sends_one_instance_of_a_list_never_makes_a_series_look_complete(testbed):
    """An archive that answers an IMAGE-level C-GET naming several instances with the first alone,
    reporting success: the series over three associations (two instances a sub-request) is a
    response cut short, never closed as complete, and the log says how many were missing."""
    with over_an_archive_that(testbed, "TAKESONE", ["--get-takes-one"]) as (gw, process, held):
        study, series = held[0].StudyInstanceUID, held[0].SeriesInstanceUID
        response = requests.get(f"{gw.url}/studies/{study}/series/{series}", headers=ACCEPT_DICOM,
                                stream=True, timeout=60)
        assert response.status_code == 200
        body, cut = b"", False
        try:
            for chunk in response.iter_content(1 << 16):
                body += chunk
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
            cut = True
        boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"').encode()
        assert cut and not body.rstrip().endswith(b"--" + boundary + b"--"), "a short series looked complete"
    log = pathlib.Path(process.log_path).read_text()
    assert "sent 1 of the 2 instances it named" in log, log[-2000:]


def test_a_pacs_that_caps_its_listing_still_gives_the_whole_series(testbed):
    """An archive that answers a C-FIND with its first four matches, reporting success: a series
    of six over three associations is not split by its short listing (the count the archive
    gives at SERIES level says six) but retrieved whole, every instance once."""
    with over_an_archive_that(testbed, "CAPPED", ["--find-limit", "4"]) as (gw, _, held):
        study, series = held[0].StudyInstanceUID, held[0].SeriesInstanceUID
        for url in (f"{gw.url}/studies/{study}", f"{gw.url}/studies/{study}/series/{series}"):
            received = sop_instance_uids(requests.get(url, headers=ACCEPT_DICOM, timeout=60))
            assert sorted(received) == sorted(ds.SOPInstanceUID for ds in held), (url, len(received))


def test_a_series_split_across_sites_one_of_which_caps_its_listing_comes_whole(testbed):
    """One series at two archives: the first holds six instances and answers a C-FIND with its
    first four, the second holds two others. Split by the listings, two of the first's would
    be lost; its count (six) says its listing is short, so the series is asked whole of both and
    all eight come, each once."""
    files = testbed["data"]["ct"]["files"][:8]
    held = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    with dimse_archive("CAPPEDA", files[:6], options=["--find-limit", "4"], site_id="capped") as capped, \
            dimse_archive("OTHERB", files[6:], site_id="other") as other:
        bed = {**testbed, "sites": [], "move_destinations": [{"ae_title": "QUIRKGW", "port": free_port()}]}
        process, gw = start_federation(bed, "QUIRKGW", extra_sites=capped + other,
                                       extra='\n[cache]\nmemory = "0B"\nsearch_ttl = "0s"\n')
        try:
            received = sop_instance_uids(requests.get(f"{gw.url}/studies/{held[0].StudyInstanceUID}",
                                                      headers=ACCEPT_DICOM, timeout=60))
            assert sorted(received) == sorted(ds.SOPInstanceUID for ds in held), len(received)
        finally:
            stop(process)


def directory_bytes(path):
    """Bytes of the cache files (the few-byte markers of forgotten studies, in a directory of
    their own, are outside the bound)."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def test_the_disk_tier_survives_a_restart_stays_bounded_and_drops_damaged_files(testbed, tmp_path):
    disk = tmp_path / "cache"
    config = f'\n[cache]\nmemory = "0B"\ndisk_dir = "{disk}"\ndisk = "40MiB"\nttl = "10m"\n'
    multiframe = f"/studies/{testbed['data']['multiframe']['study_uid']}"
    process, gw = start_federation(testbed, "FEDGW2", extra=config)
    try:
        first = requests.get(gw.url + multiframe, headers=ACCEPT_DICOM)
        assert first.status_code == 200
        # Churn: the 200-slice CT (about 100 MB) through a 40 MiB tier.
        ct = requests.get(f"{gw.url}/studies/{testbed['data']['ct']['study_uid']}", headers=ACCEPT_DICOM)
        assert len(parts(ct)) == len(testbed["data"]["ct"]["instance_uids"])
        assert directory_bytes(disk) <= 40 * 2**20
        assert admin(gw, "cache")["disk"]["bytes"] <= 40 * 2**20
        # The multiframe study was used less recently than the CT: retrieve it again to keep it.
        requests.get(gw.url + multiframe, headers=ACCEPT_DICOM)
    finally:
        process.terminate()
        process.wait(timeout=10)
    # After a restart (memory tier off): from disk, no DIMSE operation.
    process, gw = start_federation(testbed, "FEDGW2", extra=config)
    try:
        before = dimse_sent(gw)
        again = requests.get(gw.url + multiframe, headers=ACCEPT_DICOM)
        assert again.status_code == 200 and digest(parts(again)) == digest(parts(first))
        assert dimse_sent(gw) == before
        # Damaged files are detected, deleted and fetched again.
        for f in disk.iterdir():
            if f.stat().st_size > 100_000:
                data = bytearray(f.read_bytes())
                data[-1] ^= 0xFF
                f.write_bytes(bytes(data))
        repaired = requests.get(gw.url + multiframe, headers=ACCEPT_DICOM)
        assert repaired.status_code == 200 and digest(parts(repaired)) == digest(parts(first))
        assert sum(sent[1] for sent in dimse_sent(gw).values()) == sum(sent[1] for sent in before.values()) + 1
        after = dimse_sent(gw)
        assert digest(parts(requests.get(gw.url + multiframe, headers=ACCEPT_DICOM))) == digest(parts(first))
        assert dimse_sent(gw) == after
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_search_is_answered_again_without_the_sites_until_something_is_stored(testbed):
    process, gw = start_federation(testbed, "FEDGW2", extra='\n[cache]\nsearch_ttl = "1m"\n')
    try:
        first = requests.get(f"{gw.url}/studies", params={"ModalitiesInStudy": "CT", "includefield": "StudyDate"})
        before = dimse_sent(gw)
        # The same search, its parameters in another order: no C-FIND.
        again = requests.get(f"{gw.url}/studies", params={"includefield": "StudyDate", "ModalitiesInStudy": "CT"})
        assert again.status_code == 200 and again.json() == first.json()
        assert again.headers["Content-Type"] == first.headers["Content-Type"]
        assert dimse_sent(gw) == before
        assert admin(gw, "cache")["searches"]["hits"] == 1
        # Another search, or one under a site, is asked.
        requests.get(f"{gw.url}/sites/site-1/studies", params={"ModalitiesInStudy": "CT", "includefield": "StudyDate"})
        assert dimse_sent(gw)["site-1"][0] == before["site-1"][0] + 1
        # Searches confined to one study: the CT's, and the one about to be stored into (none yet).
        stored, part10 = ct_instance(testbed, "CACHE-SEARCH")
        ct_series = f"{gw.url}/studies/{testbed['data']['ct']['study_uid']}/series"
        stored_instances = f"{gw.url}/studies/{stored.StudyInstanceUID}/instances"
        ct_answer = requests.get(ct_series)
        assert ct_answer.status_code == 200
        assert requests.get(stored_instances).status_code == 204
        # A STOW-RS makes every search that may show its study go to the sites again...
        stow(gw, part10)
        after_stow = dimse_sent(gw)
        third = requests.get(f"{gw.url}/studies", params={"ModalitiesInStudy": "CT", "includefield": "StudyDate"})
        assert len(third.json()) == len(first.json()) + 1
        assert all(dimse_sent(gw)[s][0] > after_stow[s][0] for s in after_stow)
        shown = requests.get(stored_instances)
        assert shown.status_code == 200 and len(shown.json()) == 1
        # ...and a search confined to another study is still answered without the sites.
        before_ct = dimse_sent(gw)
        again = requests.get(ct_series)
        assert again.status_code == 200 and again.json() == ct_answer.json()
        assert dimse_sent(gw) == before_ct
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_client_that_goes_away_ends_the_shared_retrieval_and_frees_the_association(testbed):
    process, gw = start_federation(testbed, "FEDGW2", extra='\n[cache]\nmemory = "0B"\n')
    try:
        url = f"{gw.url}/studies/{testbed['data']['ct']['study_uid']}"
        response = requests.get(url, headers=ACCEPT_DICOM, stream=True)
        assert response.status_code == 200
        next(response.iter_content(1 << 20))
        response.close()
        # The flight stops (it waits at most 64 MiB ahead of a reader, and has none left) and
        # the association is no longer in use.
        for _ in range(100):
            in_flight = admin(gw, "cache")["retrievals"]["in_flight"]
            in_use = sum(s["associations"]["in_use"] for s in admin(gw, "sites")["sites"])
            if in_flight == 0 and in_use == 0:
                break
            time.sleep(0.1)
        assert (in_flight, in_use) == (0, 0)
        # The gateway still serves it whole.
        whole = requests.get(url, headers=ACCEPT_DICOM)
        assert len(parts(whole)) == len(testbed["data"]["ct"]["instance_uids"])
    finally:
        process.terminate()
        process.wait(timeout=10)


def metric_values(text):
    """Prometheus text exposition as {name{labels}: value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            values[name] = float(number)
    return values


def test_metrics_after_the_traffic_of_these_tests(testbed, cached):
    response = requests.get(cached.url.replace("/dicom-web", "/metrics"))
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    values = metric_values(response.text)

    def positive(prefix):
        found = {k: v for k, v in values.items() if k.startswith(prefix)}
        assert found and any(v > 0 for v in found.values()), prefix
        return found

    assert values['dicomweb_gateway_requests_total{method="GET",route="/dicom-web/studies/{study}",status="200"}'] >= 12
    positive('dicomweb_gateway_request_duration_seconds_bucket{method="GET",route="/dicom-web/studies/{study}"')
    assert values['dicomweb_gateway_request_duration_seconds_count{method="GET",route="/dicom-web/studies/{study}"}'] >= 12
    positive('dicomweb_gateway_response_bytes_total{method="GET",route="/dicom-web/studies/{study}"')
    assert values['dicomweb_gateway_site_up{site="site-1"}'] == 1
    assert values['dicomweb_gateway_site_operations_total{site="site-1",operation="retrieve"}'] >= 1
    positive('dicomweb_gateway_site_dimse_seconds_total{site="site-1",phase="find"}')
    positive("dicomweb_gateway_site_echo_latency_seconds")
    assert 'dicomweb_gateway_site_associations{site="site-1",state="in_use"}' in values
    assert 'dicomweb_gateway_site_faults_total{site="site-1"}' in values
    assert values['dicomweb_gateway_cache_retrievals_total{outcome="hit"}'] >= 1
    assert values['dicomweb_gateway_cache_retrievals_total{outcome="coalesced"}'] >= 9
    positive("dicomweb_gateway_cache_served_bytes_total")
    positive('dicomweb_gateway_cache_bytes{tier="memory"}')
    # Route templates and site ids only: no UID of the test bed's data.
    assert testbed["data"]["ct"]["study_uid"] not in response.text
