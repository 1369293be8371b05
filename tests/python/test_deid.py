"""De-identification end to end: the whole test corpus (pydicom's files and the generated
studies) through a gateway with `[deid]`, in every form a client can ask for, searched for every
identifying value of the sources. Then consistency of pseudonyms across requests and restarts."""

import datetime
import hashlib
import io
import json
import pathlib
import re
import subprocess

import pydicom
import pytest
import requests

import privacy_corpus
from conftest import start_federation, stop

# Values the gateway writes itself, which a source may also hold.
OWN_VALUES = {"ANONYMIZED", "ANONYMOUS", "19000101", "000000", "19000101000000", "[removed]", "YES", "REMOVED"}
WELL_KNOWN_UID = "1.2.840.10008."
# Attributes the profile keeps on purpose, named one by one: an identifying value that is also
# part of one of their values (an institution named like its manufacturer) is not searched for.
# Anything else that carries an identifying value is a leak, whatever attribute it is in.
KEPT_ON_PURPOSE = {
    "Manufacturer",  # pydicom's files name GE and Toshiba as institutions too
    "ManufacturerModelName",
    "CodeMeaning",  # codes of concepts ("Observer") and of methods ("Uncompressed")
    "CodingSchemeResponsibleOrganization",  # OFFIS e.V., also a verifying organization
    "BodyPartExamined",  # "WHOLE BODY", also in a private attribute of the source
}
ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
TABLE = pathlib.Path(__file__).resolve().parents[2] / "deid" / "data" / "ps3.15-table-e.1-1.tsv"


def profile_table(options=()):
    """PS3.15 Table E.1-1 as the gateway uses it under `options`: tag pattern -> action (an
    option's action replaces the basic one, unless the basic one keeps)."""
    rows, columns = {}, []
    for line in TABLE.read_text().splitlines():
        if line.startswith("#"):
            continue
        cells = line.split("\t")
        if cells[0] == "tag":
            columns = cells
            continue
        action = cells[1]
        for option in options:
            if option in columns and cells[columns.index(option)] and action != "K":
                action = cells[columns.index(option)]
        rows[cells[0]] = action
    return rows


def action_of(rows, tag):
    """The basic profile action of an attribute (None: not listed, so kept)."""
    if tag.is_private:
        return rows["PRIVATE"]
    exact = f"{tag.group:04X}{tag.element:04X}"
    if exact in rows:
        return rows[exact]
    for pattern, action in rows.items():
        if len(pattern) == 8 and all(p == "X" or p == c for p, c in zip(pattern, exact)):
            return action
    return None


def walk(ds):
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value or []:
                yield from walk(item)


class Identifying:
    """What in the sources the basic profile removes or replaces (PS3.15 Table E.1-1), plus
    PatientID and PatientName: texts that must appear nowhere, dates that must not appear as
    dates, UIDs that must appear nowhere."""

    def __init__(self, options=()):
        self.rows = profile_table(options)
        self.texts, self.dates, self.uids, self.times = {}, set(), set(), set()
        # Values too short to search for in text (a sex, a two-letter ID): compared as the
        # whole value of the same attribute, by tag ("GGGGEEEE").
        self.short = set()
        # Values of the attributes named in KEPT_ON_PURPOSE.
        self.kept = set()

    def add_text(self, value, keyword):
        value = str(value).strip()
        if len(value) < 4 or any(value in own for own in OWN_VALUES):
            return
        if value.replace(".", "").isdigit() and (len(value) < 6 or len(set(value)) <= 2):
            # Short numbers, and runs of one or two digits, turn up anywhere by chance.
            return
        self.texts.setdefault(value, keyword)

    def finish(self):
        # An identifying value that is also part of a value the profile keeps (an institution
        # named like a manufacturer, a name part that is also an SR concept) is left out.
        kept = "\n".join(self.kept)
        self.texts = {value: source for value, source in self.texts.items() if value not in kept}
        return self

    def add(self, ds):
        for element in walk(ds):
            if element.VR == "SQ":
                continue
            action = action_of(self.rows, element.tag)
            identifying = element.keyword in ("PatientID", "PatientName") or action not in (None, "K", "C")
            values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
            for value in values:
                if value is None or value == "" or isinstance(value, bytes):
                    continue
                text = str(value).strip()
                if not identifying:
                    if element.keyword in KEPT_ON_PURPOSE:
                        self.kept.add(text)
                elif element.VR == "UI":
                    if not text.startswith(WELL_KNOWN_UID) and len(text) >= 10:
                        self.uids.add(text)
                elif element.VR in ("DA", "DT"):
                    if len(text) >= 8 and text[:8] not in OWN_VALUES:
                        self.dates.add(text[:8])
                elif element.VR == "TM":
                    # A time of day identifies with its date; compared as whole values.
                    if len(text) >= 4 and text[:6] not in OWN_VALUES:
                        self.times.add(text.split(".")[0])
                elif element.VR == "PN":
                    for part in re.split(r"[\^=\s]", text):
                        if len(part) >= 5:
                            self.add_text(part, element.keyword)
                elif element.VR in ("LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE", "AS"):
                    self.add_text(text, element.keyword)
                    if 0 < len(text) < 4:
                        self.short.add((f"{element.tag.group:04X}{element.tag.element:04X}", text))


def sources(testbed, corpus=None, options=()):
    """What the sources hold that must not leave under `options`: the test bed's files and, if
    given, the privacy corpus."""
    files = list(testbed["data"]["ct"]["files"]) + list(testbed["data"]["multiframe"]["files"])
    files += [f["path"] for f in testbed["data"]["pydicom"] if f["stored"]]
    identifying = Identifying(options)
    for path in files:
        identifying.add(pydicom.dcmread(path, force=True))
    for data in corpus.files if corpus else []:
        identifying.add(pydicom.dcmread(io.BytesIO(data)))
    return identifying.finish(), len(files) + (len(corpus.files) if corpus else 0)


class LeakCheck:
    """`shifted`: dates are shifted (retain-longitudinal-modified-dates), so a date may by chance
    equal another patient's source date and times are kept by design; dates are then checked
    against each instance's own source instead (`one_shift_per_patient`)."""

    def __init__(self, identifying, gateway_log, shifted=False):
        self.identifying = identifying
        self.gateway_log = gateway_log
        self.shifted = shifted
        self.responses = 0
        self.values_checked = 0
        self.leaks = []

    def text(self, where, text):
        # A UID under 2.25 (a pseudonym is one: the decimal of a keyed hash) holds any short run
        # of digits by chance: a value of digits alone is looked for with such UIDs taken out.
        # UIDs themselves are looked for whole, in the text as it is.
        without_uids = re.sub(r"2\.25\.\d+", "2.25.", text)
        for value, source in self.identifying.texts.items():
            self.values_checked += 1
            if value in (without_uids if value.isdigit() else text):
                self.leaks.append(f"{where}: {value!r} (from {source})")
        for uid in self.identifying.uids:
            self.values_checked += 1
            if uid in text:
                self.leaks.append(f"{where}: {uid!r} (from a UID)")

    def dates(self, where, dates):
        if self.shifted:
            return
        for date in dates:
            self.values_checked += 1
            if date[:8] in self.identifying.dates:
                self.leaks.append(f"{where}: date {date!r}")

    def times(self, where, times):
        if self.shifted:
            return
        for time in times:
            self.values_checked += 1
            if time.split(".")[0] in self.identifying.times:
                self.leaks.append(f"{where}: time {time!r}")

    def response(self, where, response):
        self.responses += 1
        self.text(f"{where} headers", json.dumps(dict(response.headers)))
        if response.status_code >= 400:
            # Error bodies are output too.
            self.text(f"{where} error body", response.content.decode("latin-1"))

    def json(self, where, response):
        self.response(where, response)
        self.text(where, response.text)
        body = response.json()
        dates, times = [], []
        for result in body if isinstance(body, list) else [body]:
            self.private_json(where, result)
            self.short_json(where, result)
            dates += json_values(result, ("DA", "DT"))
            times += json_values(result, ("TM",))
        self.dates(where, dates)
        self.times(where, times)

    def short_json(self, where, result):
        for tag, element in result.items():
            for value in element.get("Value", []):
                if element.get("vr") == "SQ":
                    self.short_json(where, value)
                elif (tag, str(value).strip()) in self.identifying.short:
                    self.leaks.append(f"{where}: {tag} = {value!r}")

    def private_json(self, where, result):
        for tag, element in result.items():
            group = int(tag[:4], 16)
            if group % 2 == 1 and tag not in ("00090010", "00091010"):
                self.leaks.append(f"{where}: private attribute {tag}")
            for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
                self.private_json(where, item)

    def instance(self, where, ds):
        dates, times = [], []
        for element in list(walk(ds)) + list(walk(ds.file_meta)):
            if element.tag.is_private:
                self.leaks.append(f"{where}: private attribute {element.tag}")
            if element.VR == "SQ":
                continue
            if element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                # Binary values too (a signature, an encapsulated document, an attribute read
                # as UN), but for the pixel data.
                if element.tag.group != 0x7FE0 and isinstance(element.value, bytes):
                    self.text(f"{where} {element.keyword or element.tag} (bytes)", element.value.decode("latin-1"))
                continue
            self.text(f"{where} {element.keyword or element.tag}", str(element.value))
            if (f"{element.tag.group:04X}{element.tag.element:04X}", str(element.value).strip()) in self.identifying.short:
                self.leaks.append(f"{where}: {element.keyword} = {element.value!r}")
            if element.VR in ("DA", "DT") and element.value:
                dates.append(str(element.value))
            if element.VR == "TM" and element.value:
                times.append(str(element.value))
        self.dates(where, dates)
        self.times(where, times)
        assert ds.PatientIdentityRemoved == "YES", where
        assert ds.preamble in (None, b"\0" * 128), where

    def log(self):
        self.text("gateway log", pathlib.Path(self.gateway_log).read_text())

    def audit(self, trail):
        self.text("audit trail", pathlib.Path(trail).read_text())


def json_values(result, vrs):
    """Every value of the VRs `vrs` in a DICOM JSON object, at any depth."""
    values = []
    for element in result.values():
        if element.get("vr") in vrs:
            values += [str(v) for v in element.get("Value", [])]
        if element.get("vr") == "SQ":
            for item in element.get("Value", []):
                values += json_values(item, vrs)
    return values


def multipart_instances(response):
    boundary = re.search(r'boundary="?([^";]+)"?', response.headers["Content-Type"]).group(1).encode()
    for part in response.content.split(b"--" + boundary)[1:-1]:
        _, _, body = part.partition(b"\r\n\r\n")
        yield pydicom.dcmread(io.BytesIO(body[:-2]))


def deid_config(tmp_path, options=(), burned_in="withhold"):
    return f"""
[deid]
profile = "basic"
options = {json.dumps(list(options))}
key_file = "{tmp_path}/deid.key"
state_dir = "{tmp_path}/state"
burned_in = "{burned_in}"
"""


@pytest.fixture(scope="module")
def deidentified(testbed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deid")
    process, gw = start_federation(testbed, "FEDGW2", extra=deid_config(tmp))
    gw.log = process.args[-1] + ".log"
    gw.tmp = tmp
    yield gw
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def corpus(testbed):
    """The privacy corpus (a report naming the patient in its text, a KOS naming the archive by
    URL, a presentation state, an image with data after its pixel data) at Orthanc site-1."""
    site = next(s for s in testbed["sites"] if s["id"] == "site-1")
    loaded = privacy_corpus.Loaded(site["http_url"])
    yield loaded
    loaded.remove()


# Studies withheld because their pixels may show identity (the burned-in rule,
# docs/DEIDENTIFICATION.md): 12 of the test bed's, all of pydicom's ultrasound and secondary
# captures (modality US or OT, or a secondary capture SOP class under another modality). The
# leak test may not pass by withholding more. Cleaning them instead (docs/BURNED-IN.md), only
# the study of pydicom's two undecodable files is withheld.
MOST_WITHHELD = {"withhold": 12, "clean": 1}


def day(date):
    return datetime.date(int(date[:4]), int(date[4:6]), int(date[6:8]))


@pytest.mark.parametrize(
    "options, burned_in",
    [([], "withhold"), (["retain-longitudinal-modified-dates"], "withhold"), ([], "clean")],
    ids=["basic", "modified-dates", "cleaning-pixels"],
)
def test_nothing_identifying_leaves_the_gateway(testbed, corpus, tmp_path, options, burned_in):
    """Every identifying value of every source, whatever attribute carries it in the output,
    searched in every response (bodies, binary values, error bodies, headers), the gateway's log
    and its audit trail, under no option and under the demo's; with shifted dates, each patient's
    dates moved by one shift of its own; and with burned-in text cleaned instead of withheld, so
    that the ultrasound and secondary captures are searched too."""
    trail = tmp_path / "audit.jsonl"
    # The Orthanc sites (C-GET) each at a host name and an address of their own, as hospitals
    # are: a site's name, address or port in any output is a leak (dcmqrscp, moved from, stays
    # where its C-MOVE sub-operations come from).
    orthancs = [s for s in testbed["sites"] if s["kind"] == "orthanc"]
    names = {f"pacs.{s['id']}.hospital.example": f"127.0.0.{11 + n}" for n, s in enumerate(orthancs)}
    hosts = {s["id"]: f"pacs.{s['id']}.hospital.example" for s in orthancs}
    process, gw = start_federation(testbed, "FEDGW2", extra=deid_config(tmp_path, options, burned_in) + f'\n[audit]\npath = "{trail}"\n',
                                   site_hosts=hosts, host_names=names)
    identifying, files = sources(testbed, corpus, options)
    for site in testbed["sites"]:
        identifying.texts[site["ae_title"]] = "a site's AE title"
        identifying.texts[f"{hosts.get(site['id'], '127.0.0.1')}:{site['dicom_port']}"] = "a site's address"
    for name, address in names.items():
        identifying.texts[name] = "a site's host name"
        identifying.texts[f"{address}:"] = "a site's address"
    shifted = "retain-longitudinal-modified-dates" in options
    check = LeakCheck(identifying, process.log_path, shifted)
    source_dates = {}
    paths = [f["path"] for f in testbed["data"]["pydicom"] if f["stored"]] + list(testbed["data"]["ct"]["files"][:3])
    for ds in [pydicom.dcmread(p, force=True) for p in paths] + [pydicom.dcmread(io.BytesIO(d)) for d in corpus.files]:
        if pixel_key(ds) and ds.get("StudyDate"):
            source_dates.setdefault((ds.SOPClassUID, pixel_key(ds)), set()).add(ds.StudyDate)
    shifts = {}  # patient pseudonym -> days its dates moved back
    try:
        studies = requests.get(f"{gw.url}/studies", params={"includefield": "all"})
        check.json("QIDO studies", studies)
        withheld, failed_at_pacs = [], 0
        # A study UID held under two patients is one retrieval.
        for study in {s["0020000D"]["Value"][0]: s for s in studies.json()}.values():
            uid = study["0020000D"]["Value"][0]
            check.json("QIDO series", requests.get(f"{gw.url}/studies/{uid}/series", params={"includefield": "all"}))
            check.json("QIDO instances", requests.get(f"{gw.url}/studies/{uid}/instances", params={"includefield": "all"}))
            try:
                metadata = requests.get(f"{gw.url}/studies/{uid}/metadata")
                retrieved = requests.get(f"{gw.url}/studies/{uid}", headers=ACCEPT_DICOM)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
                # The PACS failed part-way (Orthanc cannot send one of pydicom's RT Dose files
                # that shares its UIDs with others): the gateway aborts rather than send part.
                failed_at_pacs += 1
                continue
            if metadata.status_code == 403:
                check.response("metadata (withheld)", metadata)
                withheld.append(study.get("00080061", {}).get("Value", []))
                continue
            assert metadata.status_code == 200, metadata.text
            check.json("metadata", metadata)
            assert retrieved.status_code == 200, retrieved.text
            check.response("WADO study", retrieved)
            for ds in multipart_instances(retrieved):
                check.instance("WADO study", ds)
                # Its source, when its pixels name one date (pydicom has the same image under
                # several patients and dates).
                candidates = source_dates.get((ds.SOPClassUID, pixel_key(ds)), set())
                source_date = next(iter(candidates)) if len(candidates) == 1 else None
                if shifted and source_date and ds.get("StudyDate"):
                    days = (day(source_date) - day(ds.StudyDate)).days
                    assert 1 <= days <= 3652, (ds.PatientID, source_date, ds.StudyDate)
                    assert shifts.setdefault(ds.PatientID, days) == days, f"two shifts for {ds.PatientID}"
            # One instance of each series in every other form.
            seen_series = set()
            for item in metadata.json():
                series = item["0020000E"]["Value"][0]
                if series in seen_series:
                    continue
                seen_series.add(series)
                instance = item["00080018"]["Value"][0]
                base = f"{gw.url}/studies/{uid}/series/{series}/instances/{instance}"
                single = requests.get(base, headers=ACCEPT_DICOM)
                check.response("WADO instance", single)
                for ds in multipart_instances(single):
                    check.instance("WADO instance", ds)
                for path, accept in (("/frames/1", "multipart/related; type=application/octet-stream; transfer-syntax=*"),
                                     ("/rendered", "image/png"), ("/thumbnail", "image/jpeg")):
                    if "7FE00010" not in item:
                        continue
                    answer = requests.get(base + path, headers={"Accept": accept})
                    assert answer.status_code in (200, 406, 501), (path, answer.status_code, answer.text)
                    check.response(path, answer)
                    check.text(path, answer.content.decode("latin-1"))
                for tag, element in item.items():
                    if "BulkDataURI" in element:
                        answer = requests.get(element["BulkDataURI"])
                        check.response("bulkdata", answer)
                        check.text("bulkdata URI", element["BulkDataURI"])
    finally:
        stop(process)
    # The log and the audit trail are the operators': they name the sites (not patients).
    for value, source in list(identifying.texts.items()):
        if source.startswith("a site's"):
            del identifying.texts[value]
    check.log()
    check.audit(trail)
    print(f"\nleak check {options}: {files} source files, {len(identifying.texts)} texts, {len(identifying.uids)} UIDs, "
          f"{len(identifying.dates)} dates, {len(identifying.times)} times, {len(identifying.short)} short values; "
          f"{check.responses} responses, "
          f"{check.values_checked} values checked, {len(withheld)} studies withheld {withheld}, {failed_at_pacs} failed "
          f"at the PACS, {len(shifts)} patients' shifts compared; {len(check.leaks)} leaks")
    assert check.responses > 100 and len(identifying.uids) > 300 and failed_at_pacs <= 1
    # Withholding is the burned-in rule's, and bounded: the test cannot pass by withholding.
    assert len(withheld) <= MOST_WITHHELD[burned_in], withheld
    assert not shifted or len(shifts) >= 5, shifts
    assert check.leaks == [], "\n".join(check.leaks[:50])


def test_pseudonyms_are_the_same_at_every_level_and_after_a_restart(testbed, deidentified, tmp_path):
    gw = deidentified
    ct = testbed["data"]["ct"]
    source = pydicom.dcmread(ct["files"][0])
    patient = requests.get(f"{gw.url}/studies", params={"PatientName": "Synthetic*"})
    assert patient.status_code == 204, "wildcards match the pseudonyms shown, never the sites' names"
    studies = requests.get(f"{gw.url}/studies", params={"StudyInstanceUID": ct["study_uid"]})
    assert studies.status_code == 204, "site UIDs are not known to clients"
    # Find the CT among the de-identified studies by its size.
    study = next(s for s in requests.get(f"{gw.url}/studies").json() if s["00201208"]["Value"][0] == len(ct["instance_uids"]))
    study_uid = study["0020000D"]["Value"][0]
    patient_id = study["00100020"]["Value"][0]
    assert study_uid.startswith("2.25.") and study_uid != ct["study_uid"]
    assert patient_id != source.PatientID
    series = requests.get(f"{gw.url}/studies/{study_uid}/series").json()
    assert [s["0020000D"]["Value"][0] for s in series] == [study_uid]
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = requests.get(f"{gw.url}/studies/{study_uid}/series/{series_uid}/instances").json()
    assert len(instances) == len(ct["instance_uids"])
    by_patient = requests.get(f"{gw.url}/studies", params={"PatientID": patient_id}).json()
    assert study_uid in [s["0020000D"]["Value"][0] for s in by_patient]
    first = instances[0]["00080018"]["Value"][0]
    retrieved = list(multipart_instances(requests.get(f"{gw.url}/studies/{study_uid}/series/{series_uid}", headers=ACCEPT_DICOM)))
    assert {ds.SOPInstanceUID for ds in retrieved} == {i["00080018"]["Value"][0] for i in instances}
    assert {ds.StudyInstanceUID for ds in retrieved} == {study_uid}
    assert len({ds.FrameOfReferenceUID for ds in retrieved}) == 1
    assert retrieved[0].file_meta.MediaStorageSOPInstanceUID == retrieved[0].SOPInstanceUID
    one = list(multipart_instances(requests.get(f"{gw.url}/studies/{study_uid}/series/{series_uid}/instances/{first}", headers=ACCEPT_DICOM)))
    assert one[0].SOPInstanceUID == first and one[0].PatientID == patient_id

    # A second gateway with the same secret and state: the same pseudonyms, and the old ones
    # still resolve.
    process, again = start_federation(testbed, "FEDGW5", extra=deid_config(gw.tmp).replace(str(gw.tmp) + "/state", str(tmp_path / "state")))
    try:
        assert requests.get(f"{again.url}/studies/{study_uid}/series").status_code == 404, "its map is empty"
        same = next(s for s in requests.get(f"{again.url}/studies").json() if s["00201208"]["Value"][0] == len(ct["instance_uids"]))
        assert same["0020000D"]["Value"][0] == study_uid and same["00100020"]["Value"][0] == patient_id
    finally:
        process.terminate()
        process.wait(timeout=10)
    # A gateway with another secret: nothing links.
    other_dir = tmp_path / "other"
    process, other = start_federation(testbed, "FEDGW5", extra=deid_config(other_dir))
    try:
        elsewhere = [s["0020000D"]["Value"][0] for s in requests.get(f"{other.url}/studies").json()]
        assert study_uid not in elsewhere
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_matching_on_what_the_profile_removes_is_refused(deidentified):
    for key, value in (("StudyDescription", "CT*"), ("AccessionNumber", "123"), ("ReferringPhysicianName", "Smith")):
        answer = requests.get(f"{deidentified.url}/studies", params={key: value})
        assert answer.status_code == 400 and key in answer.text, (key, answer.status_code, answer.text)
    assert requests.get(f"{deidentified.url}/studies/2.25.1234/series").status_code == 404
    assert requests.get(f"{deidentified.url}/studies/2.25.1234", headers=ACCEPT_DICOM).status_code == 404


def test_shifted_dates_match_date_ranges(testbed, tmp_path):
    process, gw = start_federation(testbed, "FEDGW5", extra=deid_config(tmp_path, ["retain-longitudinal-modified-dates"]))
    try:
        studies = requests.get(f"{gw.url}/studies").json()
        dated = [s for s in studies if s.get("00080020", {}).get("Value")]
        assert dated, "shifted study dates are kept"
        study = dated[0]
        date = study["00080020"]["Value"][0]
        same_day = requests.get(f"{gw.url}/studies", params={"StudyDate": date}).json()
        assert study["0020000D"]["Value"][0] in [s["0020000D"]["Value"][0] for s in same_day]
        assert all(s["00080020"]["Value"][0] == date for s in same_day)
        day_before = (datetime.date(int(date[:4]), int(date[4:6]), int(date[6:])) - datetime.timedelta(days=1)).strftime("%Y%m%d")
        before = requests.get(f"{gw.url}/studies", params={"StudyDate": f"-{day_before}"})
        assert before.status_code in (200, 204)
        assert all(s["00080020"]["Value"][0] < date for s in (before.json() if before.status_code == 200 else []))
        assert requests.get(f"{gw.url}/studies", params={"StudyDate": "2020"}).status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=10)


def dciodvfy_errors(path):
    """The error lines dciodvfy (dicom3tools) reports for a file, without the file's own path."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    return [line.strip() for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def pixel_key(ds):
    return hashlib.sha1(ds.PixelData).hexdigest() if "PixelData" in ds else None


def test_deidentified_output_is_no_less_valid_than_its_source(testbed, deidentified, tmp_path):
    gw = deidentified
    files = list(testbed["data"]["ct"]["files"])[:3] + list(testbed["data"]["multiframe"]["files"])
    files += [f["path"] for f in testbed["data"]["pydicom"] if f["stored"]]
    sources = {}
    for path in files:
        ds = pydicom.dcmread(path, force=True)
        key = pixel_key(ds)
        if key:
            sources.setdefault((ds.SOPClassUID, key), path)
    compared, worse, unmatched = 0, [], 0
    for uid in dict.fromkeys(s["0020000D"]["Value"][0] for s in requests.get(f"{gw.url}/studies").json()):
        try:
            retrieved = requests.get(f"{gw.url}/studies/{uid}", headers=ACCEPT_DICOM)
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
            continue  # the PACS failed part-way (see the leak test)
        if retrieved.status_code != 200:
            continue
        for ds in multipart_instances(retrieved):
            source = sources.get((ds.SOPClassUID, pixel_key(ds)))
            if not source:
                unmatched += 1
                continue
            out = tmp_path / f"{compared}.dcm"
            ds.save_as(out, enforce_file_format=False)
            compared += 1
            before, after = dciodvfy_errors(source), dciodvfy_errors(out)
            if len(after) > len(before):
                new = [line for line in after if line not in before]
                worse.append(f"{pathlib.Path(source).name}: {len(before)} -> {len(after)} errors; new: {new[:3]}")
    print(f"\ndciodvfy: {compared} de-identified instances compared with their sources ({len(sources)} sources with "
          f"pixel data, {unmatched} outputs unmatched), {len(worse)} with more errors")
    assert compared >= 8
    assert worse == [], "\n".join(worse)


def test_an_instance_stored_through_the_gateway_is_retrieved_by_the_url_it_answers(testbed, deidentified):
    ds = pydicom.dcmread(testbed["data"]["ct"]["files"][0])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "STOW-DEID"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    boundary = "stow-deid-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + out.getvalue()
            + f"\r\n--{boundary}--\r\n".encode())
    stored = requests.post(f"{deidentified.url}/studies", data=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    assert stored.status_code == 200, stored.text
    url = stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    assert ds.StudyInstanceUID not in url and ds.SOPInstanceUID not in url
    retrieved = list(multipart_instances(requests.get(url, headers=ACCEPT_DICOM)))
    assert [r.SOPInstanceUID for r in retrieved] == [url.rsplit("/", 1)[1]]
    assert retrieved[0].PatientID != "STOW-DEID"


def test_every_request_is_audited_in_a_chain_that_shows_tampering(testbed, tmp_path):
    trail = tmp_path / "audit.jsonl"
    extra = deid_config(tmp_path) + f'\n[audit]\npath = "{trail}"\n'
    process, gw = start_federation(testbed, "FEDGW5", extra=extra)
    try:
        study = requests.get(f"{gw.url}/studies").json()[0]["0020000D"]["Value"][0]
        assert requests.get(f"{gw.url}/studies/{study}/series").status_code == 200
        assert requests.get(f"{gw.url}/sites/site-1/studies/2.25.99/series").status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
    lines = [json.loads(line) for line in trail.read_text().splitlines()]
    assert [(l["route"], l["status"]) for l in lines] == [
        ("/dicom-web/studies", 200), ("/dicom-web/studies/{study}/series", 200), ("/dicom-web/studies/{study}/series", 404)]
    assert lines[1]["resources"] == [study] and lines[2]["site"] == "site-1"
    # Pseudonyms only: no UID of the sources.
    assert testbed["data"]["ct"]["study_uid"] not in trail.read_text()
    binary = str(pathlib.Path(__file__).resolve().parents[2] / "target" / "debug" / "dicomweb-gateway")
    verify = subprocess.run([binary, "audit", "verify", str(trail)], capture_output=True, text=True)
    assert verify.returncode == 0 and "3 lines, the chain is intact" in verify.stdout, verify.stdout
    # A line changed: the next one no longer follows it.
    trail.write_text(trail.read_text().replace('"route":"/dicom-web/studies/{study}/series","site":null', '"route":"/dicom-web/studies","site":null'))
    verify = subprocess.run([binary, "audit", "verify", str(trail)], capture_output=True, text=True)
    assert verify.returncode == 1 and "line 3" in verify.stdout, verify.stdout
