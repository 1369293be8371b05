"""The gateway as a EUCAIM data holder (docs/EUCAIM.md): the federated-search provider endpoint
answers count queries shaped exactly as EUCAIM's explorer builds them and Focus delivers them,
from the index of its datasets, checked against what the Orthanc sites hold; errors as
EUCAIM's reference provider gives them; the privacy of counts; the audit; a study stored through
the gateway is counted; GET /datasets.

A cohort of its own is loaded into two Orthanc sites (patients EUC-*, each study's sex, age,
modalities, body parts and manufacturers chosen), beside the test bed's real-world files at
site-3, which one dataset holds whole."""

import json
import pathlib
import subprocess
import time

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from conftest import free_port, launch, stop
from test_federation import ct_instance, orthanc

SECRET = "eucaim-search-secret-0123456789"
SEARCH = "/eucaim/search"
# The explorer's codes (docs/EUCAIM.md).
SEX, AGE, MODALITY, BODY_PART, MANUFACTURER = (
    "SNOMEDCT263495000", "SNOMEDCT423493009", "RID10311", "SNOMEDCT123037004", "C25392")
MALE, FEMALE, OTHER = "SNOMEDCT248153007", "SNOMEDCT248152002", "SNOMEDCT74964007"
MR, CT, PT = "RID10312", "RID10321", "RID10337"
PROSTATE, PELVIS, BREAST, LUNG = "SNOMEDCT41216001", "SNOMEDCT12921003", "SNOMEDCT76752008", "SNOMEDCT39607008"
SIEMENS, GE, PHILIPS = "C200140", "birnlex_12833", "birnlex_3065"
DIAGNOSIS, PROSTATE_CANCER = "SNOMEDCT439401001", "SNOMEDCT399068003"

# The cohort: (site, patient, sex, PatientAge or (birth, study date), [(modality, body part, manufacturer)]).
COHORT = [
    ("site-1", "EUC-1", "M", "064Y", [("MR", "PROSTATE", "Siemens"), ("CT", "PELVIS", "GE MEDICAL SYSTEMS")]),
    ("site-1", "EUC-1", "M", "064Y", [("MR", "Prostate", "Philips Medical Systems")]),
    ("site-1", "EUC-2", "F", "045Y", [("MR", "BREAST", "SIEMENS Healthineers")]),
    ("site-1", "EUC-3", "F", ("19500610", "20200101"), [("CT", "TORAX", "TOSHIBA_MEC"), ("PT", "Thorax", "Siemens")]),
    ("site-2", "EUC-4", "O", None, [("CT", "Pelvis^Masculin", "Philips")]),
    ("site-2", "EUC-5", "M", "030Y", [("MR", "Prostata", "GE")]),
]


def cohort_study(testbed, patient, sex, age, series):
    """One study of the cohort: one instance per series (of the test bed's CT, re-labelled)."""
    study = generate_uid()
    files = []
    for modality, body_part, manufacturer in series:
        attributes = dict(PatientSex=sex, Modality=modality, BodyPartExamined=body_part, Manufacturer=manufacturer)
        if isinstance(age, tuple):
            attributes.update(PatientBirthDate=age[0], StudyDate=age[1])
        elif age:
            attributes.update(PatientAge=age)
        ds, data = ct_instance(testbed, patient, study=study, **attributes)
        if not age:
            # No age at all: neither PatientAge nor a birth date.
            ds.PatientBirthDate = ""
            if "PatientAge" in ds:
                del ds.PatientAge
            import io
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            data = out.getvalue()
        files.append(data)
    return study, files


@pytest.fixture(scope="module")
def cohort(testbed):
    loaded = []
    for site_id, patient, sex, age, series in COHORT:
        study, files = cohort_study(testbed, patient, sex, age, series)
        ids = []
        for data in files:
            answer = requests.post(f"{orthanc(testbed, site_id)}/instances", data=data, timeout=30)
            answer.raise_for_status()
            ids.append(answer.json()["ID"])
        loaded.append((site_id, study, ids))
    yield loaded
    for site_id, _, ids in loaded:
        for orthanc_id in ids:
            requests.delete(f"{orthanc(testbed, site_id)}/instances/{orthanc_id}", timeout=30)


def sites_config(testbed, store_site=None):
    return "".join(
        f"""
[[sites]]
id = "{s['id']}"
ae_title = "{s['ae_title']}"
address = "127.0.0.1:{s['dicom_port']}"
retrieve = "c-get"
timeout = "10s"
store = {"true" if s["id"] == store_site else "false"}
"""
        for s in testbed["sites"]
        if s["id"].startswith("site-")
    )


def provider_config(testbed, tmp, port, eucaim_extra="", site_3_condition=""):
    (tmp / "search.secret").write_text(SECRET + "\n")
    return f"""
[server]
listen = "127.0.0.1:{port}"

[dimse]
ae_title = "EUCAIMGW"
listen = "127.0.0.1:{free_port()}"
{sites_config(testbed, store_site="site-3")}
[deid]
profile = "basic"
key_file = "{tmp}/deid.key"
state_dir = "{tmp}/state"

[audit]
path = "{tmp}/audit.jsonl"

[eucaim]
secret_file = "{tmp}/search.secret"
refresh = "1h"
publisher = "Test Hospital"
publisher_email = "imaging-data@hospital.test"
{eucaim_extra}

[[datasets]]
id = "ds-cohort"
name = "Cohort"
description = "The test's own cohort at two sites"
sites = ["site-1", "site-2"]
filter = "PatientID=EUC-*"
condition = "CLIN1000060"
keywords = ["breast cancer", "prostate cancer"]
access_url = "https://negotiator.test/collection/ds-cohort"

[[datasets]]
id = "ds-prostate"
name = "Prostate cancer cohort"
description = "Site 2's cohort, every study a prostate cancer"
sites = ["site-2"]
filter = "PatientID=EUC-*"
fixed = {{ {DIAGNOSIS} = "{PROSTATE_CANCER}" }}
access_url = "https://negotiator.test/collection/ds-prostate"
access_condition = "in-situ"

[[datasets]]
id = "ds-site-3"
name = "Everything at site 3"
sites = ["site-3"]
access_url = "https://negotiator.test/collection/ds-site-3"
{site_3_condition}
"""


def indexed(url, datasets=("ds-cohort", "ds-prostate", "ds-site-3"), timeout=120):
    """Waits until the index has read every site of the datasets once."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = requests.get(f"{url}/datasets", timeout=10).json()
        shown = {d["id"]: d for d in view["datasets"]}
        if all(shown.get(d, {}).get("indexed") and shown[d]["complete"] for d in datasets):
            return shown
        time.sleep(0.5)
    pytest.fail(f"the datasets' index was not read within {timeout} s")


@pytest.fixture(scope="module")
def provider(testbed, cohort, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eucaim")
    port = free_port()
    process = launch(provider_config(testbed, tmp, port), port)
    url = f"http://127.0.0.1:{port}"
    indexed(url)
    yield {"url": url, "tmp": tmp, "process": process}
    stop(process)


def ask(provider, tree, secret=SECRET, query_id="q1__search__q2"):
    body = json.dumps({"ast": tree, "id": query_id})
    return requests.post(
        provider["url"] + SEARCH,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Secret {secret}"},
        timeout=30,
    )


def rows(*criteria_rows):
    """The explorer's tree: OR of rows, each an AND of criteria, each an OR of its values."""
    return {"operand": "OR", "children": [
        {"operand": "AND", "children": [
            {"operand": "OR", "children": [{"key": key, "type": kind, "value": value} for value in values]}
            for key, kind, values in row
        ]}
        for row in criteria_rows
    ]}


def counts(answer):
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert answer.text.lstrip().startswith("{") and "provider" not in body
    return {c["id"]: (c["studies_count"], c["subjects_count"]) for c in body["collections"]}


def of_cohort(answer):
    """The cohort's datasets' counts (site 3's real-world files are checked on their own)."""
    return {id: counted for id, counted in counts(answer).items() if id != "ds-site-3"}


def test_the_explorers_queries_are_counted_as_the_sites_hold_the_cohort(provider):
    mr = (MODALITY, "EQUALS", [MR])
    # One row, one criterion.
    assert of_cohort(ask(provider, rows([mr]))) == {"ds-cohort": (4, 3), "ds-prostate": (1, 1)}
    # Values of a criterion are OR; rows are OR; criteria of a row are AND.
    assert of_cohort(ask(provider, rows([(MODALITY, "EQUALS", [CT, PT])])))["ds-cohort"] == (3, 3)
    prostate_mr_or_female_ct = rows(
        [mr, (BODY_PART, "EQUALS", [PROSTATE])],
        [(MODALITY, "EQUALS", [CT]), (SEX, "EQUALS", [FEMALE])],
    )
    assert of_cohort(ask(provider, prostate_mr_or_female_ct))["ds-cohort"] == (4, 3)
    # Series conditions of a row hold on one series: EUC-1's first study has an MR (of the
    # prostate) and a CT of the pelvis, no MR of the pelvis.
    assert of_cohort(ask(provider, rows([mr, (BODY_PART, "EQUALS", [PELVIS])]))) == {}
    assert of_cohort(ask(provider, rows([(MODALITY, "EQUALS", [CT]), (BODY_PART, "EQUALS", [PELVIS])])))["ds-cohort"] == (2, 2)
    # "Torax" is a chest: the lung code matches it.
    assert of_cohort(ask(provider, rows([(BODY_PART, "EQUALS", [LUNG])])))["ds-cohort"] == (1, 1)
    # Manufacturers as the reference provider reads them.
    assert of_cohort(ask(provider, rows([(MANUFACTURER, "EQUALS", [SIEMENS])])))["ds-cohort"] == (3, 3)
    assert of_cohort(ask(provider, rows([(MANUFACTURER, "EQUALS", [GE])]))) == {"ds-cohort": (2, 2), "ds-prostate": (1, 1)}
    # Sex; age from PatientAge or from the birth and study dates, open bounds as the explorer sends them.
    assert of_cohort(ask(provider, rows([(SEX, "EQUALS", [OTHER])])))["ds-cohort"] == (1, 1)
    assert of_cohort(ask(provider, rows([(AGE, "BETWEEN", [{"min": 60.0, "max": 0.0}])])))["ds-cohort"] == (3, 2)
    assert of_cohort(ask(provider, rows([(AGE, "BETWEEN", [{"min": 0.0, "max": 40.0}])]))) == {
        "ds-cohort": (1, 1), "ds-prostate": (1, 1)}
    assert of_cohort(ask(provider, rows([(AGE, "BETWEEN", [{"min": 69.0, "max": 69.0}]), (SEX, "EQUALS", [FEMALE])])))[
        "ds-cohort"] == (1, 1)
    # A clinical key: only the dataset that declares it.
    assert of_cohort(ask(provider, rows([(DIAGNOSIS, "EQUALS", [PROSTATE_CANCER])]))) == {"ds-prostate": (2, 2)}
    # Unknown codes and keys are false, not errors.
    assert of_cohort(ask(provider, rows([(MODALITY, "EQUALS", ["RID99999"])]))) == {}
    assert of_cohort(ask(provider, rows([("SNOMEDCT000", "EQUALS", ["x"])]))) == {}
    assert of_cohort(ask(provider, rows([(MODALITY, "EQUALS", ["RID99999", MR])])))["ds-cohort"] == (4, 3)


def orthanc_studies(testbed, site_id):
    """Every study at an Orthanc site, from its REST API: (patient id, modalities), one per UID."""
    url = orthanc(testbed, site_id)
    studies = {}
    for study in requests.get(f"{url}/studies?expand", timeout=30).json():
        uid = study["MainDicomTags"]["StudyInstanceUID"].strip()
        series = requests.get(f"{url}/studies/{study['ID']}/series?expand", timeout=30).json()
        modalities = {s["MainDicomTags"].get("Modality", "").strip() for s in series}
        patient = study["PatientMainDicomTags"].get("PatientID", "").strip()
        known = studies.get(uid, (patient, set()))
        studies[uid] = (known[0], known[1] | modalities)
    return studies


def test_the_empty_query_answers_every_dataset_and_real_world_files_are_counted(provider, testbed):
    answer = ask(provider, {"operand": "OR", "children": []})
    every = counts(answer)
    assert set(every) == {"ds-cohort", "ds-prostate", "ds-site-3"}
    assert every["ds-cohort"] == (6, 5) and every["ds-prostate"] == (2, 2)
    # Site 3 holds the test bed's real-world files: the counts are Orthanc's own.
    held = orthanc_studies(testbed, "site-3")
    subjects = {patient or f"study {uid}" for uid, (patient, _) in held.items()}
    assert every["ds-site-3"] == (len(held), len(subjects))
    ct = [uid for uid, (_, modalities) in held.items() if "CT" in modalities]
    assert counts(ask(provider, rows([(MODALITY, "EQUALS", [CT])])))["ds-site-3"][0] == len(ct)
    # Every field the explorer reads, present.
    cohort = next(c for c in answer.json()["collections"] if c["id"] == "ds-cohort")
    assert cohort["name"] == "Cohort" and cohort["description"]
    assert cohort["age_range"] == {"min": 30, "max": 69}
    assert cohort["gender"] == ["Female", "Male", "Other"]
    assert cohort["modality"] == cohort["modalities"] == ["CT", "MR", "PT"]
    assert cohort["body_parts"] == ["BREAST", "CHEST", "PELVIS", "PROSTATE"]


def test_errors_are_those_of_the_reference_provider(provider):
    url = provider["url"] + SEARCH
    good = json.dumps({"ast": rows(), "id": "x"})
    json_type = {"Content-Type": "application/json"}
    assert requests.post(url, data=good, headers=json_type).status_code == 401
    assert ask(provider, rows(), secret="wrong-secret-0123456789abc").status_code == 401
    bearer = {**json_type, "Authorization": f"Bearer {SECRET}"}
    assert requests.post(url, data=good, headers=bearer).status_code == 401
    authorized = {"Authorization": f"Secret {SECRET}"}
    assert requests.post(url, data=good, headers={**authorized, "Content-Type": "text/plain"}).status_code == 400
    assert requests.post(url, data="{not json", headers={**authorized, **json_type}).status_code == 400
    for shape in ([], {"id": "x"}, {"ast": []}, {"ast": {"operand": "XOR", "children": []}},
                  {"ast": {"operand": "OR", "children": [{"key": MODALITY, "type": "LIKE", "value": MR}]}}):
        answer = requests.post(url, data=json.dumps(shape), headers={**authorized, **json_type})
        assert answer.status_code == 422, shape
    assert requests.post(url, data=b"{" + b" " * (2 << 20) + b"}", headers={**authorized, **json_type}).status_code == 413
    assert requests.get(url, headers=authorized).status_code == 405


def test_every_query_is_audited_with_what_it_answered(provider):
    ask(provider, rows([(MODALITY, "EQUALS", [MR])]), query_id="audited__search__1")
    for _ in range(50):
        lines = [json.loads(line) for line in (provider["tmp"] / "audit.jsonl").read_text().splitlines()]
        search = [line for line in lines if line.get("search", {}).get("id") == "audited__search__1"]
        if search:
            break
        time.sleep(0.1)
    [line] = search
    assert (line["subject"], line["route"], line["status"]) == ("eucaim-federated-search", SEARCH, 200)
    shown = {d["dataset"]: (d["studies"], d["subjects"], d["changed"]) for d in line["search"]["datasets"]}
    assert shown["ds-cohort"] == (4, 3, False) and shown["ds-prostate"] == (1, 1, False)
    refused = ask(provider, rows(), secret="wrong-secret-0123456789abc")
    assert refused.status_code == 401


def test_the_datasets_view_for_people(provider):
    view = requests.get(provider["url"] + "/datasets", timeout=10).json()
    shown = {d["id"]: d for d in view["datasets"]}
    cohort = shown["ds-cohort"]
    assert (cohort["studies"], cohort["subjects"], cohort["sites"], cohort["complete"]) == (6, 5, 2, True)
    assert cohort["manufacturers"] == ["General Electric", "Philips", "Siemens", "Toshiba"]
    # Nothing that names a patient or a site.
    text = json.dumps(view)
    assert "EUC-" not in text and "site-1" not in text


def test_a_study_stored_through_the_gateway_is_counted(provider, testbed):
    """Site 3 is the gateway's storing site, and ds-site-3 holds every study there."""
    mr = rows([(MODALITY, "EQUALS", [MR])])
    before = counts(ask(provider, mr))["ds-site-3"]
    ds, data = ct_instance(testbed, "EUC-6", Modality="MR", PatientSex="F", PatientAge="051Y")
    boundary = "eucaim-stow"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + f"\r\n--{boundary}--\r\n".encode()
    site = orthanc(testbed, "site-3")
    studies_before = set(requests.get(f"{site}/studies", timeout=30).json())
    stored = requests.post(
        provider["url"] + "/dicom-web/studies",
        data=body,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    try:
        for _ in range(100):
            if counts(ask(provider, mr))["ds-site-3"] == (before[0] + 1, before[1] + 1):
                break
            time.sleep(0.1)
        assert counts(ask(provider, mr))["ds-site-3"] == (before[0] + 1, before[1] + 1)
    finally:
        for study in set(requests.get(f"{site}/studies", timeout=30).json()) - studies_before:
            requests.delete(f"{site}/studies/{study}", timeout=30)


@pytest.mark.parametrize("mode", ["omit", "minimum"])
def test_counts_below_the_minimum_are_left_out_or_raised_and_rounded(testbed, cohort, tmp_path, mode):
    port = free_port()
    extra = f'min_count = 3\nbelow_minimum = "{mode}"\nround_to = 2'
    process = launch(provider_config(testbed, tmp_path, port, extra), port)
    try:
        url = f"http://127.0.0.1:{port}"
        indexed(url)
        gateway = {"url": url}
        mr = counts(ask(gateway, rows([(MODALITY, "EQUALS", [MR])])))
        # 4 studies, 3 subjects at the cohort: 4 and 4 (3 rounded to an even count); the
        # prostate dataset's 1 and 1: left out, or answered as 3, rounded to 4.
        assert mr["ds-cohort"] == (4, 4)
        assert mr.get("ds-prostate") == (None if mode == "omit" else (4, 4))
        view = {d["id"]: d for d in requests.get(url + "/datasets", timeout=10).json()["datasets"]}
        assert view["ds-prostate"]["studies"] == (None if mode == "omit" else 4)
    finally:
        stop(process)


def test_without_a_secret_the_provider_endpoint_is_off(testbed, cohort, tmp_path):
    port = free_port()
    config = provider_config(testbed, tmp_path, port).replace(f'secret_file = "{tmp_path}/search.secret"\n', "")
    process = launch(config, port)
    try:
        answer = ask({"url": f"http://127.0.0.1:{port}"}, rows())
        assert answer.status_code == 404
    finally:
        stop(process)


SHAPES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "eucaim-dcat-ap-mandatory.shacl.ttl"


def validated(graph):
    """The record's graph checked against EUCAIM DCAT-AP's mandatory properties."""
    import pyshacl
    import rdflib

    conforms, _, report = pyshacl.validate(graph, shacl_graph=rdflib.Graph().parse(SHAPES, format="turtle"))
    return conforms, report


def test_a_datasets_catalogue_record_has_every_mandatory_property(provider):
    import rdflib
    from rdflib.compare import isomorphic

    url = provider["url"] + "/datasets/ds-cohort/catalogue"
    turtle = requests.get(url, headers={"Accept": "text/turtle"}, timeout=10)
    json_ld = requests.get(url, timeout=10)
    assert turtle.headers["Content-Type"].startswith("text/turtle")
    assert json_ld.headers["Content-Type"] == "application/ld+json"
    graph = rdflib.Graph().parse(data=turtle.text, format="turtle")
    assert isomorphic(graph, rdflib.Graph().parse(data=json_ld.text, format="json-ld")), "one record, two syntaxes"
    conforms, report = validated(graph)
    assert conforms, report
    eucaim = rdflib.Namespace("https://cancerimage.eu/ontology/EUCAIM#")
    dct, dcat = rdflib.namespace.DCTERMS, rdflib.namespace.DCAT
    health = rdflib.Namespace("https://w3id.org/healthdcat-ap#")
    dataset = graph.value(predicate=rdflib.RDF.type, object=dcat.Dataset, any=False)
    # The catalogue's identifier is the id the federated search answers with.
    assert str(graph.value(dataset, dct.identifier)) == "ds-cohort"
    assert (int(graph.value(dataset, health.numberOfRecords)), int(graph.value(dataset, health.numberOfUniqueIndividuals))) == (6, 5)
    modalities = set(graph.objects(dataset, eucaim.hasImageModality))
    assert {eucaim.IMG1000042, eucaim.IMG1000038, eucaim.IMG1000062} == modalities
    assert set(graph.objects(dataset, eucaim.hasBirthSex)) == {eucaim.COM1000177, eucaim.COM1000180}
    assert eucaim.BP1000021 in set(graph.objects(dataset, eucaim.hasImageBodyPart))
    assert (int(graph.value(dataset, health.minTypicalAge)), int(graph.value(dataset, health.maxTypicalAge))) == (30, 69)
    assert graph.value(dataset, eucaim.interoperabilityLevel) == eucaim.SPEC1000011, "Tier 2: the search is offered"
    access = rdflib.Namespace("https://eucaim.github.io/eucaim_dcat_ap/releases/controlled-vocabularies/access-conditions/#")
    assert set(graph.objects(None, dct.rights)) == {access.DOWNLOAD}
    # The shapes do catch a record without its publisher.
    graph.remove((dataset, dct.publisher, None))
    assert not validated(graph)[0]
    # The prostate dataset: its condition from its fixed diagnosis, its access in situ.
    prostate = rdflib.Graph().parse(
        data=requests.get(provider["url"] + "/datasets/ds-prostate/catalogue", headers={"Accept": "text/turtle"}).text,
        format="turtle",
    )
    assert validated(prostate)[0]
    assert set(prostate.objects(None, eucaim.hasCondition)) == {eucaim.CLIN1000075}
    assert set(prostate.objects(None, dct.rights)) == {access.IN_SITU_PROCESSING}
    # Site 3's dataset names no condition: no record, and the answer says what is missing.
    lacking = requests.get(provider["url"] + "/datasets/ds-site-3/catalogue", timeout=10)
    assert lacking.status_code == 404 and "condition" in lacking.text
    assert requests.get(provider["url"] + "/datasets/no-such/catalogue", timeout=10).status_code == 404


def test_the_command_line_writes_every_record_as_json_ld_and_turtle(testbed, cohort, tmp_path):
    import rdflib

    config = tmp_path / "gateway.toml"
    config.write_text(provider_config(testbed, tmp_path, free_port(), site_3_condition='condition = "CLIN1007989"'))
    out = tmp_path / "records"
    binary = pathlib.Path(__file__).resolve().parents[2] / "target" / "debug" / "dicomweb-gateway"
    written = subprocess.run([str(binary), "datasets", "describe", "--config", str(config), "--out", str(out)],
                             capture_output=True, text=True, timeout=300)
    assert written.returncode == 0, written.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{d}.{ext}" for d in ("ds-cohort", "ds-prostate", "ds-site-3") for ext in ("jsonld", "ttl"))
    for name in names:
        graph = rdflib.Graph().parse(out / name, format="json-ld" if name.endswith("jsonld") else "turtle")
        conforms, report = validated(graph)
        assert conforms, f"{name}: {report}"
    # Without the publisher: an error naming it, and exit status 1.
    config.write_text(config.read_text().replace('publisher = "Test Hospital"\n', ""))
    refused = subprocess.run([str(binary), "datasets", "describe", "--config", str(config), "--out", str(out)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "eucaim.publisher" in refused.stderr
