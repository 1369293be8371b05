"""Two tiers (docs/TWO-TIER.md): each Orthanc site of the test bed behind its own edge gateway
(DIMSE to its PACS, de-identifying with its own key, bearer tokens and projects), and a central
gateway federating the three edges as DICOMweb sites, forwarding each caller's token. What the
central serves is checked against what each edge serves the same caller: the union without
duplicates, a mixed federation (one project's sites include a PACS the central reaches itself,
by DICOMweb and by DIMSE, and de-identifies), every study retrieved as the edge gives it,
metadata, frames and rendered images, a store into one edge, an edge that freezes (Warning,
circuit, probed back), an edge that refuses the caller (none of its studies anywhere), and not
one identifying value in any byte the central serves or logs."""

import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import signal
import threading
import time

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from conftest import free_port, launch, stop
from test_access import Keys, auth_section, bearer, token
from test_federation import ct_instance, orthanc
from test_https import Authority

# Every request of these tests: the edges speak HTTPS with client certificates, as the central
# does to them (the fixture sets the CA and the certificate).
HTTP = requests.Session()
HTTP.trust_env = False
ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
# Which edge grants which project: a "lung" caller is refused at the edge of site-3.
EDGE_PROJECTS = {"site-1": ["lung"], "site-2": ["lung", "liver"], "site-3": ["liver"]}


def edge_config(testbed, site, port, tmp, auth, tls):
    projects = "".join(
        f'\n[[projects]]\nid = "{p}"\nsites = ["{site["id"]}"]\npermissions = ["search", "retrieve", "store"]\n'
        for p in EDGE_PROJECTS[site["id"]]
    )
    return f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "https://127.0.0.1:{port}/dicom-web"
{tls}

[dimse]
ae_title = "FEDGW9"
listen = "127.0.0.1:{free_port()}"

[[sites]]
id = "{site['id']}"
ae_title = "{site['ae_title']}"
address = "127.0.0.1:{site['dicom_port']}"
retrieve = "c-get"
timeout = "10s"
store = {"true" if site["id"] == "site-2" else "false"}

[deid]
profile = "basic"
key_file = "{tmp}/edge-{site['id']}.key"
state_dir = "{tmp}/edge-{site['id']}-state"

[cache]
search_ttl = "0s"
{auth}{projects}"""


def direct_sites(testbed, tmp):
    """The sites the central reaches itself and de-identifies, beside the edges it passes on (a
    mixed federation): the PACS of site-1 by its own DICOMweb and by DIMSE."""
    site = next(s for s in testbed["sites"] if s["id"] == "site-1")
    return f"""
[[sites]]
id = "archive-1"
protocol = "dicomweb"
url = "{orthanc(testbed, 'site-1')}/dicom-web/"
timeout = "10s"

[[sites]]
id = "pacs-1"
ae_title = "{site['ae_title']}"
address = "127.0.0.1:{site['dicom_port']}"
retrieve = "c-get"
timeout = "10s"

[deid]
profile = "basic"
key_file = "{tmp}/central.key"
state_dir = "{tmp}/central-state"
"""


def central_config(port, edges, tmp, auth, site_tls, direct=""):
    """The central gateway: the edges as de-identified DICOMweb sites, forwarding the caller's
    token; with `direct` (sites and [deid]), the liver project has those sites too."""
    sites = "".join(
        f"""
[[sites]]
id = "edge-{site_id[-1]}"
protocol = "dicomweb"
url = "{url}"
deidentified = true
auth = "forward"
timeout = "5s"
store = {"true" if site_id == "site-2" else "false"}
{site_tls}
"""
        for site_id, (url, _) in edges.items()
    )
    liver_sites = '"edge-2", "edge-3", "archive-1", "pacs-1"' if direct else '"edge-2", "edge-3"'
    return f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/dicom-web"

[dimse]
ae_title = "CENTRAL"
listen = "127.0.0.1:{free_port()}"
{sites}{direct}
[federation]
echo_interval = "1s"
circuit_failures = 2
circuit_open = "8s"

[cache]
search_ttl = "0s"

[audit]
path = "{tmp}/central-audit.jsonl"

[[projects]]
id = "lung"
sites = ["edge-1", "edge-2", "edge-3"]
permissions = ["search", "retrieve", "store"]

[[projects]]
id = "liver"
sites = [{liver_sites}]
permissions = ["search", "retrieve"]
{auth}"""


@pytest.fixture(scope="module")
def tiers(testbed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-tier")
    # The edges serve HTTPS and ask for a client certificate; the central pins their CA.
    ca = Authority(tmp, "federation-ca")
    edge_cert, edge_key = ca.issue("edge", server=True)
    central_cert, central_key = ca.issue("central", server=False)
    edge_tls = f'tls = {{ cert = "{edge_cert}", key = "{edge_key}", client_ca = "{ca.path}" }}'
    site_tls = f'tls = {{ ca = "{ca.path}", cert = "{central_cert}", key = "{central_key}" }}'
    HTTP.verify, HTTP.cert = str(ca.path), (str(central_cert), str(central_key))
    keys = Keys()
    (tmp / "jwks.json").write_text(json.dumps(keys.jwks()))
    auth = auth_section(jwks_file=tmp / "jwks.json")
    edges, processes = {}, []
    try:
        for site in testbed["sites"]:
            if site["kind"] != "orthanc":
                continue
            port = free_port()
            process = launch(
                edge_config(testbed, site, port, tmp, auth, edge_tls),
                port,
                "https",
                verify=str(ca.path),
                client_cert=(str(central_cert), str(central_key)),
            )
            processes.append(process)
            edges[site["id"]] = (f"https://127.0.0.1:{port}/dicom-web", process)
        port = free_port()
        central_auth = auth + 'admin_role = "gateway-admin"\n'
        central = launch(central_config(port, edges, tmp, central_auth, site_tls, direct_sites(testbed, tmp)), port)
        processes.append(central)
        yield {
            "central": f"http://127.0.0.1:{port}/dicom-web",
            "central_process": central,
            "edges": edges,
            "keys": keys,
            "tmp": tmp,
            "ca": ca,
            "client_cert": (str(central_cert), str(central_key)),
            "auth": auth,
        }
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGCONT)
            stop(process)


def caller(tiers, *projects):
    return bearer(token(tiers["keys"].rsa, projects=list(projects)))


def study_uids(url, headers, **params):
    answer = HTTP.get(f"{url}/studies", headers=headers, params=params, timeout=30)
    if answer.status_code in (204, 401, 403):
        return []
    answer.raise_for_status()
    return [s["0020000D"]["Value"][0] for s in answer.json()]


def identifying_values(testbed):
    """The patients' names and ids as the sites hold them: none may leave an edge."""
    values = set()
    for site in testbed["sites"]:
        if site["kind"] != "orthanc":
            continue
        for patient in HTTP.get(f"{site['http_url']}/patients", params={"expand": ""}).json():
            for key in ("PatientName", "PatientID"):
                value = patient["MainDicomTags"].get(key, "").strip()
                if len(value) >= 4:
                    values.add(value)
    return values


def leaked(values, served):
    """The values found in `served` (bytes): each as a whole value, so that an id of digits
    alone is not found inside a UID or a longer number."""
    found = set()
    for value in values:
        raw = value.encode()
        # The plain search first: a regular expression over a whole study is slow.
        if raw in served and re.search(rb"(?<![0-9.])" + re.escape(raw) + rb"(?![0-9.])", served):
            found.add(value)
    return sorted(found)


def test_the_central_answers_the_union_of_what_each_edge_answers_the_caller(tiers):
    lung = caller(tiers, "lung")
    at_central = study_uids(tiers["central"], lung)
    assert len(at_central) == len(set(at_central)), "no study twice"
    expected = set()
    for site_id, (url, _) in tiers["edges"].items():
        expected |= set(study_uids(url, lung))
    assert expected, "the edges show the caller studies"
    assert set(at_central) == expected
    # The edges' pseudonyms are passed on as they are: no second layer.
    assert all(uid.startswith("2.25.") for uid in at_central)


def test_a_caller_an_edge_refuses_sees_none_of_that_edges_studies(tiers):
    lung, liver = caller(tiers, "lung"), caller(tiers, "liver")
    edge_3_url = tiers["edges"]["site-3"][0]
    assert HTTP.get(f"{edge_3_url}/studies", headers=lung).status_code == 403
    only_at_edge_3 = set(study_uids(edge_3_url, liver)) - set(study_uids(tiers["edges"]["site-2"][0], liver))
    assert only_at_edge_3
    assert not only_at_edge_3 & set(study_uids(tiers["central"], lung))
    # A study the edge serves whole to a caller it lets see it (not one it withholds, nor one
    # its PACS cannot send whole).
    study = next(
        uid
        for uid in sorted(only_at_edge_3)
        if (answer := fetched(f"{edge_3_url}/studies/{uid}/metadata", liver)) is not None and answer.status_code == 200
    )
    # Neither found by its UID nor retrieved: the caller's token goes to the edge, which refuses.
    assert study_uids(tiers["central"], lung, StudyInstanceUID=study) == []
    assert HTTP.get(f"{tiers['central']}/studies/{study}", headers={**lung, **ACCEPT_DICOM}).status_code == 404
    # The same study for a caller the edge lets see it.
    got = HTTP.get(f"{tiers['central']}/studies/{study}/metadata", headers=liver, timeout=30)
    assert got.status_code == 200 and got.json()


def instances_of(response):
    content_type = response.headers["Content-Type"]
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    parts = response.content.split(f"--{boundary}".encode())[1:-1]
    out = []
    for part in parts:
        body = part.split(b"\r\n\r\n", 1)[1][:-2]
        out.append(pydicom.dcmread(io.BytesIO(body)))
    return out


def fetched(url, headers):
    """The response, or None when it broke off (a retrieval that failed part-way is aborted,
    never closed as if complete)."""
    try:
        return HTTP.get(url, headers=headers, timeout=120)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        return None


def test_every_study_retrieves_through_the_central_as_its_edge_serves_it(tiers):
    lung = caller(tiers, "lung")
    compared = 0
    for site_id in ("site-1", "site-2"):
        edge = tiers["edges"][site_id][0]
        for study in study_uids(edge, lung):
            direct = fetched(f"{edge}/studies/{study}", {**lung, **ACCEPT_DICOM})
            through = fetched(f"{tiers['central']}/studies/{study}", {**lung, **ACCEPT_DICOM})
            if direct is None:
                # The edge's PACS cannot send it whole: neither can the central.
                assert through is None or through.status_code >= 500, (site_id, study)
                continue
            # A study the edge withholds whole (burned-in text) is refused alike.
            assert through is not None and through.status_code == direct.status_code, (site_id, study, direct.text)
            if direct.status_code != 200:
                assert direct.status_code == 403 and "withheld" in direct.text
                continue
            # An edge that withheld some of the study says so; the central passes that on.
            if "Warning" in direct.headers:
                assert f"site edge-{site_id[-1]} sent only part of what was asked" in through.headers.get("Warning", "")
            by_uid = lambda response: {ds.SOPInstanceUID: ds for ds in instances_of(response)}
            got, want = by_uid(through), by_uid(direct)
            assert set(got) == set(want), (site_id, study)
            for uid, ds in want.items():
                assert got[uid].get("PatientID") == ds.get("PatientID") and got[uid].StudyInstanceUID == study
                if "PixelData" in ds:
                    assert hashlib.sha256(got[uid].PixelData).digest() == hashlib.sha256(ds.PixelData).digest()
            compared += 1
    assert compared >= 3, "studies compared instance by instance"


def searches_of_edges(tiers, admin):
    """The searches (QIDO-RS) the central has sent its edges, from its metrics."""
    metrics = HTTP.get(f"{tiers['central'].removesuffix('/dicom-web')}/metrics", headers=admin, timeout=10).text
    found = re.findall(r'dicomweb_gateway_site_operations_total\{site="edge-\d",operation="find"\} (\d+)', metrics)
    assert found, "the central's metrics count each edge's searches"
    return sum(int(n) for n in found)


def test_metadata_frames_and_rendered_through_the_central(tiers):
    lung = caller(tiers, "lung")
    client = DICOMwebClient(tiers["central"], headers=lung)
    studies = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"}, fields=["NumberOfStudyRelatedInstances"])
    assert studies, "a CT study through the central"
    # The CT of most instances (the test bed's 200-slice one).
    study = max(studies, key=lambda s: int(s["00201208"]["Value"][0]))["0020000D"]["Value"][0]
    # The study's metadata is asked of its edge, not made from its instances (none retrieved),
    # with the central's own BulkDataURIs; so are an instance's metadata, frames and rendered
    # image.
    admin = bearer(token(tiers["keys"].rsa, projects=[], roles=["gateway-admin"]))
    cache = f"{tiers['central'].removesuffix('/dicom-web')}/admin/cache"
    misses = lambda: HTTP.get(cache, headers=admin).json()["retrievals"]["misses"]
    before = misses()
    at_central = HTTP.get(f"{tiers['central']}/studies/{study}/metadata", headers=lung, timeout=30).json()
    assert misses() == before, "no retrieval for the metadata"
    edge = next(url for url, _ in tiers["edges"].values() if study_uids(url, lung, StudyInstanceUID=study))
    at_edge = HTTP.get(f"{edge}/studies/{study}/metadata", headers=lung, timeout=30).json()
    uris = re.compile(r'"BulkDataURI": "[^"]*"')
    normalised = lambda objects: sorted(uris.sub("", json.dumps(o, sort_keys=True)) for o in objects)
    assert normalised(at_central) == normalised(at_edge)
    pixels = [o["7FE00010"]["BulkDataURI"] for o in at_central if "BulkDataURI" in o.get("7FE00010", {})]
    assert pixels and all(uri.startswith(tiers["central"] + "/studies/") for uri in pixels)
    assert edge.split("/dicom-web")[0] not in json.dumps(at_central)
    got = HTTP.get(pixels[0], headers={**lung, "Accept": 'multipart/related; type="application/octet-stream"'}, timeout=30)
    assert got.status_code == 200 and len(got.content) > 1000
    # (That bulk data is retrieved: an instance.)
    before = misses()
    instances = client.search_for_instances(study_instance_uid=study)
    # One the bulk data above did not bring here.
    chosen = next(i for i in instances if i["00080018"]["Value"][0] not in pixels[0])
    series, sop = chosen["0020000E"]["Value"][0], chosen["00080018"]["Value"][0]
    searches_before = searches_of_edges(tiers, admin)
    metadata = client.retrieve_instance_metadata(study, series, sop)
    assert metadata["0020000D"]["Value"][0] == study
    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    assert len(frames) == 1 and len(frames[0]) > 0
    # The study was located once, for its metadata: a viewer's later requests of its
    # instances do not ask the edges where it is again.
    others = [i for i in instances if i["00080018"]["Value"][0] not in (sop, pixels[0])][:5]
    for other in others:
        uids = (other["0020000E"]["Value"][0], other["00080018"]["Value"][0])
        assert len(client.retrieve_instance_frames(study, *uids, frame_numbers=[1])) == 1
    assert searches_of_edges(tiers, admin) == searches_before, "no search of the edges for an instance's data"
    rendered = HTTP.get(
        f"{tiers['central']}/studies/{study}/series/{series}/instances/{sop}/rendered",
        headers={**lung, "Accept": "image/jpeg"},
        timeout=30,
    )
    assert rendered.status_code == 200 and rendered.content[:2] == b"\xff\xd8"
    # Relayed as the edge sent it, which a browser shows sandboxed.
    assert rendered.headers.get("Content-Security-Policy") == "sandbox"
    # The instance's metadata, frames and rendered image were asked of the edge too.
    assert misses() == before, "no retrieval for metadata, frames or rendered images"
    thumbnail = HTTP.get(f"{tiers['central']}/studies/{study}/thumbnail", headers={**lung, "Accept": "image/jpeg"})
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
    # The edge's thumbnail of the study's middle instance, relayed: nothing retrieved for it.
    assert thumbnail.headers.get("Content-Security-Policy") == "sandbox"
    assert misses() == before, "no retrieval for a thumbnail"


def test_a_store_through_the_central_lands_at_its_edge_under_the_edges_pseudonyms(tiers, testbed):
    lung = caller(tiers, "lung")
    ds, part10 = ct_instance(testbed, "TWO-TIER-STOW", PatientName="Stored^Through^Central")
    before = HTTP.get(f"{orthanc(testbed, 'site-2')}/statistics").json()["CountInstances"]
    boundary = "two-tier-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part10
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = HTTP.post(
        f"{tiers['central']}/studies",
        data=body,
        headers={**lung, "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    url = answer.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    study = url.split("/studies/")[1].split("/")[0]
    assert study != ds.StudyInstanceUID, "the edge stored it under its pseudonym"
    assert study in study_uids(tiers["edges"]["site-2"][0], lung)
    assert study in study_uids(tiers["central"], lung)
    got = HTTP.get(url, headers={**lung, **ACCEPT_DICOM}, timeout=30)
    assert got.status_code == 200
    (instance,) = instances_of(got)
    assert "Stored" not in str(instance.PatientName) and instance.PatientID != "TWO-TIER-STOW"
    # At the hospital, the PACS holds it (in the edge's terms for it).
    assert HTTP.get(f"{orthanc(testbed, 'site-2')}/statistics").json()["CountInstances"] == before + 1


def test_nothing_identifying_reaches_any_byte_the_central_serves_or_logs(tiers, testbed):
    served = bytearray()
    # The liver project's studies include those the central de-identifies itself.
    for who in (caller(tiers, "lung"), caller(tiers, "liver")):
        for path in ("/studies?includefield=all", "/series?includefield=all&limit=500"):
            served += HTTP.get(tiers["central"] + path, headers=who, timeout=60).content
        for study in study_uids(tiers["central"], who)[:8]:
            served += HTTP.get(f"{tiers['central']}/studies/{study}/metadata", headers=who, timeout=60).content
            got = fetched(f"{tiers['central']}/studies/{study}", {**who, **ACCEPT_DICOM})
            served += got.content if got is not None else b""
    served += pathlib.Path(tiers["central_process"].log_path).read_bytes()
    served += (tiers["tmp"] / "central-audit.jsonl").read_bytes()
    values = identifying_values(testbed)
    assert values
    assert leaked(values, bytes(served)) == []


def test_a_mixed_central_passes_the_edges_on_and_de_identifies_its_own_sites(tiers, testbed):
    """The liver project at the central: edges 2 and 3 (de-identified there, passed on as they
    come) and the PACS of site-1, which the central reaches itself by DICOMweb and by DIMSE and
    de-identifies with its own key."""
    liver, central = caller(tiers, "liver"), tiers["central"]
    at_central = study_uids(central, liver)
    assert len(at_central) == len(set(at_central)), "no study twice"
    from_edges = set(study_uids(tiers["edges"]["site-2"][0], liver)) | set(
        study_uids(tiers["edges"]["site-3"][0], liver)
    )
    assert from_edges and from_edges <= set(at_central), "the edges' pseudonyms are passed on unchanged"
    own = set(at_central) - from_edges
    originals = {s["0020000D"]["Value"][0].strip() for s in HTTP.get(f"{orthanc(testbed, 'site-1')}/dicom-web/studies").json()}
    # Each study of site-1 once (held alike at its two sites), under the central's pseudonym:
    # neither its own UID nor the pseudonym edge-1 gives it.
    assert len(own) == len(originals)
    assert not own & originals
    assert not own & set(study_uids(tiers["edges"]["site-1"][0], caller(tiers, "lung")))
    # Found by its UID, whichever kind, and searched within.
    ours, passed = sorted(own)[0], sorted(from_edges)[0]
    for study in (ours, passed):
        assert study_uids(central, liver, StudyInstanceUID=study) == [study]
        series = HTTP.get(f"{central}/studies/{study}/series", headers=liver, timeout=30)
        assert series.status_code == 200, (study, series.status_code)
        assert all(s["0020000D"]["Value"][0] == study for s in series.json())
    # Paged, the joined answer is the whole answer in order.
    paged = []
    for offset in range(0, len(at_central), 4):
        paged += study_uids(central, liver, limit=4, offset=offset)
    assert paged == at_central
    # Retrieved: the central's own studies de-identified by it, in its pseudonyms.
    values = identifying_values(testbed)
    compared = 0
    for study in sorted(own):
        got = fetched(f"{central}/studies/{study}", {**liver, **ACCEPT_DICOM})
        if got is None or got.status_code != 200:
            continue
        instances = instances_of(got)
        assert instances and all(ds.StudyInstanceUID == study for ds in instances)
        assert all(ds.get("PatientIdentityRemoved") == "YES" for ds in instances)
        assert leaked(values, got.content) == []
        compared += 1
    assert compared >= 2, "studies of site-1 retrieved through the central"
    # A passed-on study is retrieved as its edge serves it (a study the edge withholds, for
    # burned-in text, is refused alike): no second layer of pseudonyms.
    served_whole = 0
    for study in sorted(from_edges):
        got = fetched(f"{central}/studies/{study}/metadata", liver)
        edge = next(url for url, _ in tiers["edges"].values() if study in study_uids(url, liver, StudyInstanceUID=study))
        direct = fetched(f"{edge}/studies/{study}/metadata", liver)
        if direct is None:
            # The edge's PACS cannot send it whole: neither can the central.
            assert got is None or got.status_code >= 500, study
            continue
        assert got is not None and got.status_code == direct.status_code, study
        if got.status_code == 200:
            assert {item["0020000D"]["Value"][0] for item in got.json()} == {study}
            served_whole += 1
    assert served_whole >= 2
    everything = HTTP.get(f"{central}/studies", headers=liver, params={"includefield": "all"}, timeout=60)
    assert leaked(values, everything.content) == []


def test_a_frozen_edge_is_a_warning_then_an_open_circuit_then_probed_back(tiers):
    lung = caller(tiers, "lung")
    admin = f"{tiers['central'].removesuffix('/dicom-web')}/admin/sites"
    _, edge_process = tiers["edges"]["site-1"]
    os.kill(edge_process.pid, signal.SIGSTOP)
    try:
        answer = HTTP.get(f"{tiers['central']}/studies", headers=lung, timeout=30)
        assert answer.status_code == 200
        warning = answer.headers.get("Warning", "")
        assert warning.startswith("299") and "edge-1" in warning, warning
        for _ in range(4):
            sites = {s["id"]: s for s in HTTP.get(admin, headers=lung).json()["sites"]}
            if sites["edge-1"]["circuit"] == "open":
                break
            HTTP.get(f"{tiers['central']}/studies", headers=lung, timeout=30)
        assert sites["edge-1"]["circuit"] == "open", sites["edge-1"]
        began = time.monotonic()
        answer = HTTP.get(f"{tiers['central']}/studies", headers=lung, timeout=30)
        assert time.monotonic() - began < 4, "an open circuit is not waited for (the timeout is 5 s)"
        assert "edge-1" in answer.headers.get("Warning", "")
    finally:
        os.kill(edge_process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        sites = {s["id"]: s for s in HTTP.get(admin, headers=lung).json()["sites"]}
        if sites["edge-1"]["circuit"] == "closed":
            break
        HTTP.get(f"{tiers['central']}/studies", headers=lung, timeout=30)
        time.sleep(0.5)
    assert sites["edge-1"]["circuit"] == "closed", sites["edge-1"]
    answer = HTTP.get(f"{tiers['central']}/studies", headers=lung, timeout=30)
    assert "Warning" not in answer.headers


@pytest.fixture(scope="module")
def over_orthancs_dicomweb(testbed, tmp_path_factory):
    """A de-identifying gateway whose one site is Orthanc's own DICOMweb (not de-identified):
    an archive that speaks DICOMweb natively, federated as it is."""
    tmp = tmp_path_factory.mktemp("orthanc-dicomweb")
    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/dicom-web"

[dimse]
ae_title = "FEDGW9"
listen = "127.0.0.1:{free_port()}"

[[sites]]
id = "orthanc-web"
protocol = "dicomweb"
url = "{orthanc(testbed, 'site-1')}/dicom-web/"
timeout = "10s"

[deid]
profile = "basic"
key_file = "{tmp}/deid.key"
state_dir = "{tmp}/state"

[cache]
search_ttl = "0s"

[auth]
mode = "none"
"""
    process = launch(config, port)
    yield f"http://127.0.0.1:{port}/dicom-web", process
    stop(process)


def test_an_archives_own_dicomweb_is_a_site_de_identified_by_the_gateway(over_orthancs_dicomweb, testbed):
    url, process = over_orthancs_dicomweb
    site = orthanc(testbed, "site-1")
    at_orthanc_answer = HTTP.get(f"{site}/dicom-web/studies", params={"includefield": "all"})
    at_orthanc = at_orthanc_answer.json()
    # The check below can fail: the origin's own answer shows the patients.
    assert leaked(identifying_values(testbed), at_orthanc_answer.content)
    through = HTTP.get(f"{url}/studies", params={"includefield": "all"}, timeout=60)
    assert through.status_code == 200 and "Warning" not in through.headers
    studies = through.json()
    # One result per study UID (Orthanc keeps one study as two records that differ by padding).
    assert len(studies) == len({s["0020000D"]["Value"][0].strip() for s in at_orthanc})
    # De-identified here: pseudonyms for UIDs, nothing of the patients.
    originals = {s["0020000D"]["Value"][0] for s in at_orthanc}
    assert not originals & {s["0020000D"]["Value"][0] for s in studies}
    values = identifying_values(testbed)
    # Roll-ups come from the origin's answers too.
    assert all(int(s["00201208"]["Value"][0]) > 0 for s in studies)
    compared, not_served = 0, []
    for study in studies:
        uid = study["0020000D"]["Value"][0]
        got = fetched(f"{url}/studies/{uid}", ACCEPT_DICOM)
        assert got is not None, f"study {uid}: the response broke off"
        if got.status_code == 403:
            assert got.text.startswith("withheld:"), got.text
            continue
        if got.status_code == 404:
            not_served.append(got.text.strip())
            continue
        assert got.status_code == 200, (got.status_code, got.text)
        instances = instances_of(got)
        assert instances and all(ds.StudyInstanceUID == uid for ds in instances)
        assert leaked(values, got.content) == []
        compared += 1
    assert compared >= 2
    # Orthanc's own WADO-RS answers 404 for a study UID it holds under two patients (the
    # pydicom files of PatientID "id11111" and "id11111 "): that study alone is not served.
    assert not_served in ([], ["a series listed by a site was not delivered by it"]), not_served
    assert leaked(values, through.content + pathlib.Path(process.log_path).read_bytes()) == []


def test_an_instance_an_archive_serves_without_its_part10_header_is_framed_again(over_orthancs_dicomweb, testbed):
    """Orthanc keeps a data set it was sent without the Part-10 header as it came, and serves
    it so over WADO-RS (not the Part-10 file PS3.18 asks for): the gateway reads it (implicit
    and explicit VR) and serves it framed, rather than failing the retrieval."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    url, _ = over_orthancs_dicomweb
    site = orthanc(testbed, "site-1")
    for implicit in (True, False):
        # A modality of its own: found through the de-identifying gateway by it.
        ds, _ = ct_instance(testbed, "BARE-DATA-SET", Modality="XC", BurnedInAnnotation="NO")
        bare = DicomBytesIO()
        bare.is_little_endian, bare.is_implicit_VR = True, implicit
        write_dataset(bare, ds)
        assert bare.getvalue()[:2] == b"\x08\x00", "a data set with no header"
        stored = HTTP.post(f"{site}/instances", data=bare.getvalue(), timeout=30)
        assert stored.ok
        try:
            served = HTTP.get(f"{site}/dicom-web/studies/{ds.StudyInstanceUID}", headers=ACCEPT_DICOM, timeout=30)
            assert b"DICM" not in served.content, "Orthanc serves it as it came"
            found = HTTP.get(f"{url}/studies", params={"ModalitiesInStudy": "XC"}, timeout=30).json()
            assert len(found) == 1
            got = HTTP.get(f"{url}/studies/{found[0]['0020000D']['Value'][0]}", headers=ACCEPT_DICOM, timeout=30)
            assert got.status_code == 200, got.text
            [instance] = instances_of(got)
            expected = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
            assert instance.file_meta.TransferSyntaxUID == expected
            assert instance.SOPClassUID == ds.SOPClassUID and instance.PatientIdentityRemoved == "YES"
            assert instance.pixel_array.shape == ds.pixel_array.shape
        finally:
            HTTP.delete(f"{site}/instances/{stored.json()['ID']}", timeout=30)


def test_the_central_passes_the_conformance_tool(tiers, tmp_path):
    """`dicomweb-conformance web` against the central gateway, storing its own study through it
    into an edge: every check it applies passes."""
    from test_conformance import conformance, failures

    process, report, _ = conformance(
        ["--url", tiers["central"], "--token", token(tiers["keys"].rsa, projects=["lung"])], tmp_path, "central"
    )
    assert failures(report) == {}, json.dumps(failures(report), indent=1)
    assert process.returncode == 0, process.stderr
    outcomes = {c["name"]: c["outcome"] for c in report["checks"]}
    assert outcomes["STOW-RS: store a study (four instances, one request)"] == "pass"
    assert report["summary"]["checks"] >= 60


def test_an_edge_whose_certificate_the_central_does_not_pin_is_not_reached(tiers, tmp_path):
    """The central pins the edges' CA: an edge presenting a certificate of another CA (here, a
    central configured with another CA) is a TLS fault, never data."""
    other = Authority(tmp_path, "other-ca")
    cert, key = tiers["client_cert"]
    port = free_port()
    edges = {site_id: (url, None) for site_id, (url, _) in tiers["edges"].items()}
    site_tls = f'tls = {{ ca = "{other.path}", cert = "{cert}", key = "{key}" }}'
    process = launch(central_config(port, edges, tmp_path, tiers["auth"], site_tls), port)
    try:
        answer = HTTP.get(f"http://127.0.0.1:{port}/dicom-web/studies", headers=caller(tiers, "lung"), timeout=30)
        assert answer.status_code == 502, answer.text
        assert "certificate" in answer.text.lower() or "tls" in answer.text.lower(), answer.text
    finally:
        stop(process)


def test_the_stock_ohif_viewer_over_the_central(tiers, testbed, tmp_path):
    """The stock OHIF viewer (its published build, unpatched) pointed at the central gateway with
    a bearer token: the CT, retrieved from its edge over HTTPS, renders with no failed request."""
    from test_viewer import Traffic, browser_page, viewer_for, viewport_image

    bearer = token(tiers["keys"].rsa, projects=["lung"])
    lung = {"Authorization": f"Bearer {bearer}"}
    ct = HTTP.get(
        f"{tiers['central']}/studies",
        headers=lung,
        params={"ModalitiesInStudy": "CT", "includefield": "NumberOfStudyRelatedInstances"},
        timeout=60,
    ).json()
    study = max(ct, key=lambda s: int(s["00201208"]["Value"][0]))["0020000D"]["Value"][0]
    with viewer_for(tiers["central"], tmp_path) as viewer_url:
        traffic = Traffic(tiers["central"])
        with browser_page(traffic) as page:
            page.goto(f"{viewer_url}/viewer?StudyInstanceUIDs={study}&token={bearer}", wait_until="load")
            ok, _, seen = viewport_image(page)
            page.screenshot(path=str(tmp_path / "viewer-central.png"))
            assert ok, f"the CT shows no image ({seen}; see {tmp_path / 'viewer-central.png'})"
            traffic.settle(page, 90)
    answered = [status for status, _, _ in traffic.gateway_responses]
    failed = [response for response in traffic.gateway_responses if response[0] >= 400]
    assert answered and all(status < 400 for status in answered), failed
    assert not traffic.problems, "\n".join(traffic.problems)


class IdentityProvider:
    """An OAuth 2.0 token endpoint (client credentials grant) of the test's own, issuing tokens
    signed with the federation's key for one client, each valid `lifetime` seconds."""

    def __init__(self, keys, client_id, secret, lifetime):
        import http.server
        import threading
        import urllib.parse

        provider = self
        self.issued = 0

        class Handler(Origin):
            def do_POST(self):
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                granted = form.get("grant_type") == ["client_credentials"] and form.get("client_id") == [client_id]
                if not granted or form.get("client_secret") != [secret]:
                    self.send_response(401)
                    self.end_headers()
                    return
                provider.issued += 1
                access = token(keys.rsa, sub=client_id, projects=["lung"], exp=int(time.time()) + lifetime)
                body = json.dumps({"access_token": access, "token_type": "Bearer", "expires_in": lifetime}).encode()
                self.answer_json(body, "application/json")

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_central_with_credentials_of_its_own_from_the_identity_provider(tiers, tmp_path):
    """`auth = "client-credentials"`: the central gets a token of its own from the identity
    provider, fetches another before it expires, and a wrong secret is a fault of the sites,
    never an answer presented as complete."""
    provider = IdentityProvider(tiers["keys"], "central", "s3cret", lifetime=4)
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("guess\n")
    cert, key = tiers["client_cert"]
    edges = {site_id: (url, None) for site_id, (url, _) in tiers["edges"].items()}
    try:
        for secret, expect in (("secret", 200), ("wrong", 502)):
            site_tls = (
                f'auth = "client-credentials"\ntoken_url = "{provider.url}"\nclient_id = "central"\n'
                f'client_secret_file = "{tmp_path / secret}"\ntls = {{ ca = "{tiers["ca"].path}", cert = "{cert}", key = "{key}" }}'
            )
            config = central_config(free_port(), edges, tmp_path, tiers["auth"], site_tls).replace('auth = "forward"\n', "")
            port = int(config.split('listen = "127.0.0.1:')[1].split('"')[0])
            process = launch(config, port)
            try:
                url = f"http://127.0.0.1:{port}/dicom-web/studies"
                answer = HTTP.get(url, headers=caller(tiers, "lung"), timeout=30)
                assert answer.status_code == expect, answer.text
                if expect == 200:
                    # The edges see the central's own project (lung): edge-3 refuses it.
                    assert "edge-3" in answer.headers.get("Warning", "")
                    assert set(study_uids(url.removesuffix("/studies"), caller(tiers, "lung"))) >= set(
                        study_uids(tiers["edges"]["site-1"][0], caller(tiers, "lung"))
                    )
                    first = provider.issued
                    assert first >= 1
                    time.sleep(3)
                    assert HTTP.get(url, headers=caller(tiers, "lung"), timeout=30).status_code == 200
                    assert provider.issued > first, "a token about to expire is fetched again"
                else:
                    assert "credentials" in answer.text, answer.text
            finally:
                stop(process)
    finally:
        provider.close()


def test_a_central_with_a_token_file_reads_it_again_when_it_changes(tiers, tmp_path):
    """`auth = "token"`: the central sends the token in `token_file`, and reads the file again
    when whoever rotates it writes a new one: a token the edges refuse is then a fault of the
    sites (502 naming the credentials), and a good one serves again."""
    token_file = tmp_path / "token"
    token_file.write_text(token(tiers["keys"].rsa, sub="central", projects=["lung"]) + "\n")
    cert, key = tiers["client_cert"]
    edges = {site_id: (url, None) for site_id, (url, _) in tiers["edges"].items() if site_id != "site-3"}
    site_tls = (
        f'auth = "token"\ntoken_file = "{token_file}"\n'
        f'tls = {{ ca = "{tiers["ca"].path}", cert = "{cert}", key = "{key}" }}'
    )
    config = central_config(free_port(), edges, tmp_path, tiers["auth"], site_tls).replace('auth = "forward"\n', "")
    config = config.replace('sites = ["edge-1", "edge-2", "edge-3"]', 'sites = ["edge-1", "edge-2"]')
    config = config.replace('sites = ["edge-2", "edge-3"]', 'sites = ["edge-2"]')
    port = int(config.split('listen = "127.0.0.1:')[1].split('"')[0])
    process = launch(config, port)
    url = f"http://127.0.0.1:{port}/dicom-web/studies"
    try:
        answer = HTTP.get(url, headers=caller(tiers, "lung"), timeout=30)
        assert answer.status_code == 200 and "Warning" not in answer.headers, answer.text
        # Rotated to a token signed by a key the edges do not know.
        time.sleep(0.05)
        token_file.write_text(token(tiers["keys"].other_rsa, sub="central", projects=["lung"]) + "\n")
        refused = HTTP.get(url, headers=caller(tiers, "lung"), timeout=30)
        assert refused.status_code == 502 and "credentials" in refused.text, refused.text
        time.sleep(0.05)
        token_file.write_text(token(tiers["keys"].rsa, sub="central", projects=["lung"]) + "\n")
        # Served again at once, or once the circuits the refusals opened are probed back.
        deadline = time.monotonic() + 20
        while (status := HTTP.get(url, headers=caller(tiers, "lung"), timeout=30).status_code) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
    finally:
        stop(process)


class Origin(http.server.BaseHTTPRequestHandler):
    """A server on loopback (a DICOMweb origin, an identity provider) for one behaviour, which a
    test's subclass gives in do_GET or do_POST."""

    def answer_json(self, body, content_type="application/dicom+json"):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def on_loopback(origin):
    """The `Origin` subclass served on a thread of its own: its server (`shutdown()` stops it)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def gateway_over(server, site_id, more=""):
    """A gateway over `server` as a DICOMweb site `site_id` already de-identified (`more`: keys
    of the site), without authentication: its process and its DICOMweb base URL."""
    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/dicom-web"

[dimse]
ae_title = "ORIGINGW"
listen = "127.0.0.1:{free_port()}"

[[sites]]
id = "{site_id}"
protocol = "dicomweb"
url = "http://127.0.0.1:{server.server_address[1]}/dicom-web"
deidentified = true
{more}

[auth]
mode = "none"
"""
    return launch(config, port), f"http://127.0.0.1:{port}/dicom-web"


def test_an_origin_that_answers_only_part_of_a_study_is_said_so_and_never_cached_whole(testbed):
    """An origin that sends part of what was asked and says so (206 Partial Content, as
    dcm4chee does for instances it cannot send; or 200 with a Warning, as an edge gateway does
    for instances it withheld): the central passes on what came with a Warning naming the site,
    and asks the origin again next time rather than serving the part from its cache as the
    whole."""
    ds, part10 = ct_instance(testbed, "PARTLY")
    boundary = "partly-boundary"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10 + f"\r\n--{boundary}--\r\n".encode()
    asked = []

    class Partly(Origin):
        def do_GET(self):
            path = self.path.split("?")[0]
            if path.endswith("/studies"):  # its health check
                self.answer_json(b"[]")
                return
            asked.append(path)
            series = "/series/" in path
            self.send_response(200 if series else 206)
            if series:
                self.send_header("Warning", '299 origin "1 instance(s) withheld"')
            self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = on_loopback(Partly)
    process, central = gateway_over(server, "partly")
    try:
        for url in (f"{central}/studies/{ds.StudyInstanceUID}", f"{central}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"):
            for _ in range(2):
                got = HTTP.get(url, headers=ACCEPT_DICOM, timeout=30)
                assert got.status_code == 200, got.text
                assert [i.SOPInstanceUID for i in instances_of(got)] == [ds.SOPInstanceUID]
                assert "site partly sent only part of what was asked" in got.headers.get("Warning", ""), got.headers
        assert len(asked) == 4, asked
    finally:
        stop(process)
        server.shutdown()


def test_an_origin_that_breaks_off_its_answers_part_way_counts_it_against_its_health(testbed):
    """An origin that answers a retrieval, sends one instance and half of the next, then closes
    the connection; and answers a frame with half of its bytes: each response through the central
    breaks off (never ends as if complete), and each counts against the origin's health as a
    failure before the answer would (`/admin/sites`)."""
    ds, part10 = ct_instance(testbed, "BREAKING")
    boundary = "breaking-boundary"
    part = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10 + b"\r\n"

    class Breaking(Origin):
        def do_GET(self):
            path = self.path.split("?")[0]
            if path.endswith("/studies"):  # its health check
                self.answer_json(b"[]")
                return
            self.send_response(200)
            if "/frames/" in path:
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", "2000")
                self.end_headers()
                self.wfile.write(b"\0" * 1000)
            else:
                self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
                self.end_headers()
                self.wfile.write(part + part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True

    server = on_loopback(Breaking)
    process, central = gateway_over(server, "breaking", "\n[federation]\ncircuit_failures = 100")
    admin = f"{central.removesuffix('/dicom-web')}/admin/sites"
    try:
        health = lambda: HTTP.get(admin, timeout=10).json()["sites"][0]
        assert health()["consecutive_failures"] == 0
        study = f"{central}/studies/{ds.StudyInstanceUID}"
        # Another instance than the one that arrived whole (the central holds that one now).
        instance = f"{study}/series/{ds.SeriesInstanceUID}/instances/2.25.1234567"
        last = None
        for url, accept in ((study, ACCEPT_DICOM), (f"{instance}/frames/1", {"Accept": 'multipart/related; type="application/octet-stream"'})):
            with pytest.raises(requests.exceptions.RequestException):
                got = HTTP.get(url, headers=accept, timeout=30)
                # A response that ended as if complete would reach here.
                pytest.fail(f"{url} answered {got.status_code} with {len(got.content)} bytes, as if whole")
            # The answer began (a success), then broke off (a failure, recorded as it happened).
            deadline = time.monotonic() + 5
            while (site := health())["consecutive_failures"] < 1 or site["last_failure"] == last:
                assert time.monotonic() < deadline, site
                time.sleep(0.1)
            assert site["state"] == "failing" and site["last_failure"]["reason"] == "broke the DICOMweb protocol", site
            last = site["last_failure"]
    finally:
        stop(process)
        server.shutdown()


def serve_studies(count, cap, takes_offset):
    """A DICOMweb origin on loopback holding `count` studies that answers a QIDO-RS search with
    at most `cap` of them, saying nothing of it, from `offset` when it `takes_offset`: (the
    server, the searches it was sent)."""
    # With their roll-ups, so that nothing more is asked of each.
    studies = [
        {
            "0020000D": {"vr": "UI", "Value": [f"2.25.{4000 + n}"]},
            "00080061": {"vr": "CS", "Value": ["CT"]},
            "00201206": {"vr": "IS", "Value": [1]},
            "00201208": {"vr": "IS", "Value": [1]},
        }
        for n in range(count)
    ]
    searches = []

    class Capped(Origin):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            asked = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            searches.append(asked)
            offset = int(asked.get("offset", 0)) if takes_offset else 0
            limit = min(int(asked.get("limit", count)), cap)
            self.answer_json(json.dumps(studies[offset:offset + limit] if path.endswith("/studies") else []).encode())

    return on_loopback(Capped), searches


@pytest.mark.parametrize("takes_offset", [True, False])
def test_an_origin_that_caps_its_search_answers_is_paged_through_or_said_to_be_cut(takes_offset):
    """An origin that answers a search with at most 120 matches, saying nothing (as archives and
    cloud stores cap QIDO-RS): the central pages past the cap and answers all 250; from one that
    takes no `offset` (it sends its first 120 again), the 120 it has, once each, with a Warning
    that the site's answer was cut."""
    server, searches = serve_studies(250, 120, takes_offset)
    process, central = gateway_over(server, "capped")
    try:
        searches.clear()
        got = HTTP.get(f"{central}/studies", timeout=30)
        assert got.status_code == 200, got.text
        uids = [s["0020000D"]["Value"][0] for s in got.json()]
        assert len(uids) == len(set(uids))
        # Its health checks ask for one match; the search's pages for more.
        pages = [s.get("offset") for s in searches if s.get("limit") != "1"]
        assert pages == ([None, "120", "240"] if takes_offset else [None, "120"]), pages
        if takes_offset:
            assert len(uids) == 250 and "Warning" not in got.headers, (len(uids), got.headers.get("Warning"))
        else:
            assert len(uids) == 120, len(uids)
            assert "site capped has more than 120 matches" in got.headers.get("Warning", ""), got.headers
    finally:
        stop(process)
        server.shutdown()


def test_an_origin_that_trickles_its_metadata_is_cut_off_at_the_sites_budget():
    """An origin that answers a metadata request and then sends a byte each half second (each
    read within the site's 1 s timeout, the whole never): the central answers 504 within the
    site's budget (twice its timeout), rather than holding the request for as long as the
    origin trickles."""
    stop_trickling = threading.Event()

    class Trickling(Origin):
        def do_GET(self):
            if not self.path.split("?")[0].endswith("/metadata"):
                self.answer_json(b"[]")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"[")
            while not stop_trickling.wait(0.5):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return

    server = on_loopback(Trickling)
    process, central = gateway_over(server, "trickling", 'timeout = "1s"')
    try:
        began = time.monotonic()
        got = HTTP.get(f"{central}/studies/2.25.77/metadata", timeout=30)
        elapsed = time.monotonic() - began
        assert got.status_code == 504, (got.status_code, got.text)
        assert elapsed < 4, elapsed
    finally:
        stop_trickling.set()
        stop(process)
        server.shutdown()
