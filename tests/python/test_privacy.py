"""What a caller with a token can learn through a de-identifying gateway, tried as an attacker
would over the real test bed: report text, archive URLs and data after pixel data that must
not leave; dates that must shift by one patient's own shift in every resource, so that no two
answers can be differenced; a frame list that must not amplify memory."""

import json
import re

import pytest
import requests

import privacy_corpus
from conftest import start_federation, stop
from test_deid import ACCEPT_DICOM, deid_config, multipart_instances

ALL_OPTIONS = ["retain-longitudinal-modified-dates", "retain-patient-characteristics", "retain-device-identity",
               "clean-descriptors", "retain-safe-private"]


@pytest.fixture(scope="module")
def corpus(testbed):
    """The privacy corpus (privacy_corpus.py) loaded into Orthanc site-1 for this module."""
    site = next(s for s in testbed["sites"] if s["id"] == "site-1")
    loaded = privacy_corpus.Loaded(site["http_url"])
    yield loaded
    loaded.remove()


def values(element):
    return element.get("Value", []) if isinstance(element, dict) else []


def first(result, tag):
    found = values(result.get(tag, {}))
    return found[0] if found else None


class Exposure:
    """Every byte a client received, searched for the planted values (text case-insensitively)."""

    def __init__(self, planted):
        self.planted = sorted(planted)
        self.responses = 0
        self.found = []

    def check(self, where, response):
        self.responses += 1
        self.check_bytes(where, response.content + json.dumps(dict(response.headers)).encode())

    def check_bytes(self, where, content):
        lowered = content.lower()
        for value in self.planted:
            if value.encode() in content or value.lower().encode() in lowered:
                self.found.append(f"{where}: {value!r}")


def corpus_study(gw):
    """The corpus study among the de-identified ones: the one holding SR, KO, PR and MR."""
    studies = requests.get(f"{gw.url}/studies", params={"includefield": "all"})
    assert studies.status_code == 200, studies.text
    for study in studies.json():
        if {"SR", "KO", "PR"} <= set(values(study.get("00080061", {}))):
            return study["0020000D"]["Value"][0], studies
    pytest.fail("the corpus study is not listed")


@pytest.mark.parametrize("options", [[], ["retain-longitudinal-modified-dates"], ALL_OPTIONS],
                         ids=["basic", "modified-dates", "every-option"])
def test_report_text_archive_urls_and_data_after_pixel_data_never_leave(testbed, corpus, tmp_path, options):
    process, gw = start_federation(testbed, "FEDGW5", extra=deid_config(tmp_path, options))
    try:
        planted = set(corpus.planted)
        if "retain-longitudinal-modified-dates" not in options:
            planted |= {privacy_corpus.REPORT_DATE}
        if "retain-device-identity" in options:
            # Retrieve AE Title is device identity (Table E.1-1: C under this option), kept on
            # purpose by whoever chose the option.
            planted.discard(privacy_corpus.ARCHIVE_AE)
        exposure = Exposure(planted)
        study, listing = corpus_study(gw)
        exposure.check("QIDO studies", listing)
        for path in (f"/studies/{study}/series", f"/studies/{study}/instances", "/series", "/instances"):
            params = {"includefield": "all"}
            if not path.startswith("/studies"):
                params["StudyInstanceUID"] = study
            answer = requests.get(gw.url + path, params=params)
            assert answer.status_code == 200, (path, answer.status_code, answer.text)
            exposure.check(f"QIDO {path}", answer)
        metadata = requests.get(f"{gw.url}/studies/{study}/metadata")
        assert metadata.status_code == 200, metadata.text
        exposure.check("metadata", metadata)
        whole = requests.get(f"{gw.url}/studies/{study}", headers=ACCEPT_DICOM)
        assert whole.status_code == 200, whole.text
        exposure.check("WADO study", whole)
        retrieved = list(multipart_instances(whole))
        assert sorted(ds.Modality for ds in retrieved) == ["KO", "MR", "PR", "SR"]
        for ds in retrieved:
            assert "DigitalSignaturesSequence" not in ds and not any(e.tag.is_private for e in ds)
            if ds.Modality == "MR" and "clean-descriptors" in options:
                assert ds.SeriesDescription == privacy_corpus.DESCRIPTION_CLEANED
            if ds.Modality == "SR":
                text = next(item for item in ds.ContentSequence if item.ValueType == "TEXT")
                assert text.TextValue == "ANONYMIZED", "a report's text is replaced, its structure kept"
        for item in metadata.json():
            series, instance = item["0020000E"]["Value"][0], item["00080018"]["Value"][0]
            base = f"{gw.url}/studies/{study}/series/{series}/instances/{instance}"
            for suffix, accept in (("", ACCEPT_DICOM["Accept"]), ("", 'multipart/related; type="application/dicom"'),
                                   ("/metadata", "application/dicom+json")):
                answer = requests.get(base + suffix, headers={"Accept": accept})
                assert answer.status_code == 200, (suffix, accept, answer.status_code, answer.text)
                exposure.check(f"instance{suffix} ({accept})", answer)
            if "7FE00010" in item:
                for suffix, accept in (("/frames/1", "multipart/related; type=application/octet-stream; transfer-syntax=*"),
                                       ("/rendered", "image/png")):
                    answer = requests.get(base + suffix, headers={"Accept": accept})
                    assert answer.status_code == 200, (suffix, answer.status_code, answer.text)
                    exposure.check(suffix, answer)
            for element in item.values():
                if "BulkDataURI" in element:
                    exposure.check("bulk data", requests.get(element["BulkDataURI"]))
        with open(process.log_path, "rb") as log:
            log_text = log.read()
        exposure.check_bytes("gateway log", log_text)
        print(f"\n{options}: {exposure.responses} responses searched for {len(planted)} planted values")
        assert exposure.found == [], "\n".join(exposure.found)
    finally:
        stop(process)


def test_a_patients_dates_shift_alike_in_every_resource(testbed, tmp_path):
    """Every date of a series, as each resource shows it (QIDO confined to its study, QIDO across
    studies, instance-level QIDO, metadata), is the same: one shift per patient."""
    process, gw = start_federation(testbed, "FEDGW5", extra=deid_config(tmp_path, ["retain-longitudinal-modified-dates"]))
    try:
        seen = {}  # (series, tag) -> {resource: date}
        ambiguous = set()

        def note(resource, result, series=None):
            series = series or first(result, "0020000E")
            for tag in ("00080020", "00080021", "00080022", "00080023"):
                date = first(result, tag)
                if date:
                    seen.setdefault((series, tag), {}).setdefault(date, set()).add(resource)

        studies = requests.get(f"{gw.url}/studies").json()
        compared = failed_at_pacs = 0
        for study in dict.fromkeys(s["0020000D"]["Value"][0] for s in studies):
            confined = requests.get(f"{gw.url}/studies/{study}/series", params={"includefield": "00080021"})
            if confined.status_code != 200:
                continue
            for series in confined.json():
                uid = series["0020000E"]["Value"][0]
                note("/studies/{study}/series", series)
                across = requests.get(f"{gw.url}/series", params={"SeriesInstanceUID": uid, "includefield": "00080021"}).json()
                if len({first(r, "00100020") for r in across}) > 1:
                    # The same series UID under two patients (pydicom's files reuse UIDs): two
                    # patients, two shifts.
                    ambiguous.add(uid)
                    continue
                for result in across:
                    note("/series?SeriesInstanceUID", result)
                instances = requests.get(f"{gw.url}/studies/{study}/series/{uid}/instances",
                                         params={"includefield": ["00080021", "00080023"]})
                for result in instances.json() if instances.status_code == 200 else []:
                    note("/studies/{study}/series/{series}/instances", result, uid)
                try:
                    metadata = requests.get(f"{gw.url}/studies/{study}/series/{uid}/metadata")
                except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
                    # The PACS failed part-way (Orthanc cannot send one of pydicom's RT Dose
                    # files that shares its UIDs with others, in either of its two series; see
                    # test_deid).
                    failed_at_pacs += 1
                    continue
                for result in metadata.json() if metadata.status_code == 200 else []:
                    note("series metadata", result, uid)
                compared += 1
        disagreements = [(key, dates) for key, dates in seen.items() if key[0] not in ambiguous and len(dates) > 1
                         and key[1] != "00080023"]
        # Content Date differs between instances of a series; among resources it must agree per
        # instance, which the metadata and instance-level QIDO show for the same instances.
        print(f"\ndates of {compared} series compared ({len(ambiguous)} series UIDs under two patients left out), "
              f"{len(seen)} (series, attribute) pairs")
        assert compared >= 10 and len(seen) >= 10 and failed_at_pacs <= 2
        assert disagreements == [], "\n".join(f"{k}: {v}" for k, v in disagreements[:20])
    finally:
        stop(process)


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))


def test_a_frame_list_cannot_amplify_memory(testbed):
    process, gw = start_federation(testbed, "FEDGW5")
    try:
        ct = testbed["data"]["ct"]
        base = f"{gw.url}/studies/{ct['study_uid']}/series/{ct['series_uid']}/instances/{ct['instance_uids'][0]}"
        accept = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
        assert requests.get(base + "/frames/1", headers=accept).status_code == 200
        before = peak_rss_kib(process.pid)
        answer = requests.get(base + "/frames/" + ",".join(["1"] * 2000), headers=accept)
        assert answer.status_code == 400 and "asked for twice" in answer.text, (answer.status_code, answer.text[:200])
        rise = (peak_rss_kib(process.pid) - before) / 1024
        print(f"\npeak RSS rise for 2,000 repeats of one frame: {rise:.1f} MiB")
        assert rise < 64
        assert requests.get(base + "/frames/" + ",".join(["2"] * 2), headers=accept).status_code == 400
    finally:
        stop(process)


def test_decoding_a_whole_instance_is_bounded_before_it_starts(testbed):
    """A compressed multi-frame instance whose frames, all decoded, exceed
    `dataset_limits.max_decoded_size` is refused (406) where the gateway would transcode it, and
    still served as stored."""
    loaded = next(f["stored"] for f in testbed["data"]["pydicom"] if f["path"].endswith("/examples_ybr_color.dcm"))
    base = f"studies/{loaded['study_uid']}/series/{loaded['series_uid']}/instances/{loaded['sop_instance_uid']}"
    octets = {"Accept": "multipart/related; type=application/octet-stream"}
    default = {"Accept": 'multipart/related; type="application/dicom"'}
    roomy, roomy_gw = start_federation(testbed, "FEDGW5")
    try:
        # 30 frames of 240 x 320 x 3 bytes: 6.9 MB decoded, which the default bound allows.
        assert requests.get(f"{roomy_gw.url}/{base}/frames/2", headers=octets).status_code == 200
        assert requests.get(f"{roomy_gw.url}/{base}", headers=default).status_code == 200
    finally:
        stop(roomy)
    process, gw = start_federation(testbed, "FEDGW5", extra='[dataset_limits]\nmax_decoded_size = "4MiB"\n')
    try:
        for path, accept in ((f"{base}/frames/2", octets), (base, default), (base, octets)):
            answer = requests.get(f"{gw.url}/{path}", headers=accept)
            assert answer.status_code == 406 and "decode to more than 4194304 bytes" in answer.text, (path, answer.status_code, answer.text)
        as_stored = requests.get(f"{gw.url}/{base}", headers=ACCEPT_DICOM)
        assert as_stored.status_code == 200 and len(list(multipart_instances(as_stored))) == 1
    finally:
        stop(process)


def test_state_that_holds_identities_is_the_owners_alone(testbed, tmp_path):
    """The pseudonym map, the secret, the audit trail and their directories are created 0600 and
    0700 whatever the umask (here 022, which would leave them readable by every local user)."""
    import os
    import stat
    trail = tmp_path / "audit" / "trail.jsonl"
    old = os.umask(0o022)
    try:
        process, gw = start_federation(testbed, "FEDGW5", extra=deid_config(tmp_path / "deid") + f'\n[audit]\npath = "{trail}"\n')
    finally:
        os.umask(old)
    try:
        assert requests.get(f"{gw.url}/studies").status_code == 200
    finally:
        stop(process)
    mode = lambda path: stat.S_IMODE(os.stat(path).st_mode)
    for path in (tmp_path / "deid", tmp_path / "deid" / "state", trail.parent):
        assert mode(path) == 0o700, (path, oct(mode(path)))
    for path in (tmp_path / "deid" / "deid.key", tmp_path / "deid" / "state" / "pseudonyms.redb", trail):
        assert mode(path) == 0o600, (path, oct(mode(path)))


def test_keys_that_decide_access_are_not_taken_over_plain_http(tmp_path):
    import pathlib
    import subprocess
    config = tmp_path / "gateway.toml"
    config.write_text("""
[server]
listen = "127.0.0.1:1"
[dimse]
ae_title = "FEDGW"
listen = "127.0.0.1:1"
[[sites]]
id = "site-1"
ae_title = "ORTHANC1"
address = "127.0.0.1:1"
retrieve = "c-get"
[auth]
mode = "jwt"
issuer = "https://login.example.org"
audience = "dicomweb-gateway"
jwks_url = "http://login.example.org/jwks.json"
[[projects]]
id = "p"
sites = ["site-1"]
permissions = ["search"]
""")
    binary = pathlib.Path(__file__).resolve().parents[2] / "target" / "debug" / "dicomweb-gateway"
    run = subprocess.run([str(binary), "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert run.returncode != 0 and "plain http" in run.stderr, (run.returncode, run.stderr)


@pytest.mark.parametrize("deidentifying", [False, True], ids=["plain", "deidentified"])
def test_a_patient_id_and_its_padding_are_one_patient(testbed, tmp_path, deidentifying):
    """pydicom's files hold one study under PatientID `id11111` and under `id11111 ` (a trailing
    space, which is padding for LO): Orthanc keeps two records, the gateway shows one study."""
    extra = deid_config(tmp_path, ["retain-longitudinal-modified-dates"]) if deidentifying else ""
    process, gw = start_federation(testbed, "FEDGW5", extra=extra)
    try:
        studies = requests.get(f"{gw.url}/studies").json()
        identities = [(first(s, "0020000D"), first(s, "00100020")) for s in studies]
        repeated = sorted({i for i in identities if identities.count(i) > 1})
        assert repeated == [], repeated
        if not deidentifying:
            padded = [s for s in studies if first(s, "0020000D") == "1.2.999.999.99.9.9999.8888"]
            assert len(padded) == 1 and first(padded[0], "00100020") == "id11111", padded
    finally:
        stop(process)


def test_the_disk_cache_serves_nothing_made_under_another_configuration(testbed, tmp_path):
    """Instances cached on disk under one set of options, one secret or one set of sites are not
    served after a restart with another: each change retrieves again, and the answer is made
    under the configuration in force."""
    from test_cache import dimse_sent
    cache = f'\n[cache]\nmemory = "0B"\ndisk_dir = "{tmp_path}/cache"\ndisk = "100MiB"\nttl = "10m"\n'
    key_dir = tmp_path / "key"

    def deid(options):
        return deid_config(key_dir, options) + cache

    def retrieve(extra, extra_sites=""):
        """One instance of the CT through a fresh gateway: its StudyDate, and how many
        retrievals reached a site."""
        process, gw = start_federation(testbed, "FEDGW5", extra=extra, extra_sites=extra_sites)
        try:
            ct = len(testbed["data"]["ct"]["instance_uids"])
            study = next(s for s in requests.get(f"{gw.url}/studies").json() if first(s, "00201208") == ct)
            study = first(study, "0020000D")
            one = requests.get(f"{gw.url}/studies/{study}/instances", params={"InstanceNumber": "1"}).json()[0]
            before = dimse_sent(gw)
            answer = requests.get(f"{gw.url}/studies/{study}/series/{first(one, '0020000E')}/instances/"
                                  f"{first(one, '00080018')}", headers=ACCEPT_DICOM)
            assert answer.status_code == 200, answer.text
            [ds] = list(multipart_instances(answer))
            retrieved = sum(sent[1] for sent in dimse_sent(gw).values()) - sum(sent[1] for sent in before.values())
            return ds.get("StudyDate", ""), retrieved
        finally:
            stop(process)

    date, retrieved = retrieve(deid([]))
    assert date == "" and retrieved >= 1
    assert retrieve(deid([])) == ("", 0), "the same configuration: from the disk cache"
    shifted, retrieved = retrieve(deid(["retain-longitudinal-modified-dates"]))
    assert shifted != "" and retrieved >= 1, "other options: made again, with shifted dates"
    # Another secret (a new key file): made again.
    (key_dir / "deid.key").unlink()
    assert retrieve(deid(["retain-longitudinal-modified-dates"]))[1] >= 1
    assert retrieve(deid(["retain-longitudinal-modified-dates"]))[1] == 0, "and kept under it"
    # The project's sites changed (one more, which does not answer): made again.
    offline = '\n[[sites]]\nid = "offline"\nae_title = "OFFLINE"\naddress = "127.0.0.1:1"\nretrieve = "c-get"\ntimeout = "2s"\n'
    assert retrieve(deid(["retain-longitudinal-modified-dates"]), extra_sites=offline)[1] >= 1


def test_a_search_collects_at_most_max_matches_from_each_site(testbed):
    """`federation.max_matches` bounds what one C-FIND collects from a site: a search past it
    answers the first matches with a Warning naming the site and the bound (never as complete),
    and the site stays in good health."""
    process, gw = start_federation(testbed, "FEDGW5", extra='[federation]\nmax_matches = 50\n')
    try:
        ct = testbed["data"]["ct"]
        answer = requests.get(f"{gw.url}/studies/{ct['study_uid']}/instances")
        assert answer.status_code == 200, answer.text
        warning = answer.headers.get("Warning", "")
        assert "has more than 50 matches" in warning and "site-1" in warning, warning
        assert 50 <= len(answer.json()) < len(ct["instance_uids"])
        small = requests.get(f"{gw.url}/studies/{testbed['data']['multiframe']['study_uid']}/instances")
        assert small.status_code == 200 and "Warning" not in small.headers
        # A retrieval whose plan must list every instance of a series held by several sites
        # is refused, naming the bound, rather than planned from part of the list.
        whole = requests.get(f"{gw.url}/studies/{ct['study_uid']}", headers=ACCEPT_DICOM)
        assert whole.status_code == 400 and "federation.max_matches" in whole.text, (whole.status_code, whole.text)
        # The sites stay in good health: nothing of this was their fault.
        sites = requests.get(gw.url.replace("/dicom-web", "/admin/sites")).json()["sites"]
        assert all(s["circuit"] == "closed" and s["consecutive_failures"] == 0 for s in sites), sites
    finally:
        stop(process)


def stow(gw, ds):
    """Stores one instance through the gateway; the stored instance's RetrieveURL."""
    import io
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + out.getvalue() + b"\r\n--b--\r\n"
    answer = requests.post(f"{gw.url}/studies", data=body, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b', "Accept": "application/dicom+json"})
    assert answer.status_code == 200, answer.text
    return answer.json()["00081199"]["Value"][0]["00081190"]["Value"][0]


def test_storing_teaches_a_caller_nothing_of_the_values_it_chooses(testbed, tmp_path):
    """A caller with store and retrieve permission stores an instance under a site's real
    study UID, PatientID and date (as an insider may know them): it gets back neither the
    study's pseudonym, nor the patient's, nor the patient's date shift. An instance stored
    against what the caller was shown (pseudonyms, shifted dates) lands with it."""
    import pydicom
    site_2 = next(s for s in testbed["sites"] if s["id"] == "site-2")["http_url"]
    before = set(requests.get(f"{site_2}/instances").json())
    process, gw = start_federation(testbed, "FEDGW5", extra=deid_config(tmp_path, ["retain-longitudinal-modified-dates"]))
    try:
        ct = testbed["data"]["ct"]
        shown = next(s for s in requests.get(f"{gw.url}/studies").json() if first(s, "00201208") == len(ct["instance_uids"]))
        study, patient, date = first(shown, "0020000D"), first(shown, "00100020"), first(shown, "00080020")
        source = pydicom.dcmread(ct["files"][0])

        def instance(study_uid, patient_id, study_date):
            ds = pydicom.dcmread(ct["files"][0])
            ds.StudyInstanceUID, ds.PatientID, ds.StudyDate = study_uid, patient_id, study_date
            ds.SeriesInstanceUID, ds.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            return ds

        # The site's own values: nothing of the project's pseudonyms or shift comes back.
        url = stow(gw, instance(ct["study_uid"], source.PatientID, source.StudyDate))
        assert study not in url, "the real study UID was answered with its pseudonym"
        [back] = list(multipart_instances(requests.get(url, headers=ACCEPT_DICOM)))
        assert back.PatientID != patient, "the real PatientID was answered with its pseudonym"
        assert back.StudyDate == source.StudyDate, "the date comes back as sent: no shift to learn"
        count = lambda: len(requests.get(f"{gw.url}/studies/{study}/instances").json())
        assert count() == len(ct["instance_uids"]), "nothing joined the real study"
        # What the caller was shown: the instance joins the study and the patient it was shown.
        url = stow(gw, instance(study, patient, date))
        assert f"/studies/{study}/" in url
        [back] = list(multipart_instances(requests.get(url, headers=ACCEPT_DICOM)))
        assert (back.StudyInstanceUID, back.PatientID, back.StudyDate) == (study, patient, date)
        assert count() == len(ct["instance_uids"]) + 1
    finally:
        stop(process)
        for orthanc_id in set(requests.get(f"{site_2}/instances").json()) - before:
            requests.delete(f"{site_2}/instances/{orthanc_id}")


def test_searches_as_viewers_send_them_against_a_deidentifying_gateway(testbed, tmp_path):
    """A key with an empty value is a return key (200, the attribute as de-identified), not a
    refused match; a viewer's patient filter with wildcards matches the pseudonyms the caller
    sees, whatever their case, and never the sites' own names."""
    process, gw = start_federation(testbed, "FEDGW5", extra=deid_config(tmp_path, ["retain-longitudinal-modified-dates"]))
    try:
        studies = requests.get(f"{gw.url}/studies").json()
        study = first(studies[0], "0020000D")
        answer = requests.get(f"{gw.url}/studies", params={"StudyInstanceUID": study, "StudyDescription": "", "PatientID": ""})
        assert answer.status_code == 200, answer.text
        assert [first(s, "0020000D") for s in answer.json()] == [study]
        result = answer.json()[0]
        # As de-identified: the description removed (basic profile), the patient a pseudonym.
        assert not result.get("00081030", {}).get("Value") and first(result, "00100020")
        # Part of a pseudonym, as typed into OHIF's Patient filter (*text*), in lower case.
        ct = testbed["data"]["ct"]
        names = {first(s, "00100010").get("Alphabetic") if isinstance(first(s, "00100010"), dict) else None for s in studies}
        name = next(n for n in names if n and len(n) > 6)
        part = name[2:6].lower()
        matched = requests.get(f"{gw.url}/studies", params={"PatientName": f"*{part}*"})
        assert matched.status_code == 200, matched.text
        expected = {first(s, "0020000D") for s in studies
                    if isinstance(first(s, "00100010"), dict) and part.upper() in first(s, "00100010")["Alphabetic"].upper()}
        assert {first(s, "0020000D") for s in matched.json()} == expected
        by_id = requests.get(f"{gw.url}/studies", params={"PatientID": first(studies[0], "00100020")[:4] + "*"})
        assert by_id.status_code == 200 and study in [first(s, "0020000D") for s in by_id.json()]
        # The site's own name of the CT's patient matches nothing: it is not what the caller sees.
        own = requests.get(f"{gw.url}/studies", params={"PatientName": "Synthetic*"})
        assert own.status_code == 204, (own.status_code, own.text[:200])
        assert ct["study_uid"] not in own.text
    finally:
        stop(process)
