"""The OHIF Viewer in headless Chromium over a de-identifying gateway (docs/VIEWER.md).

A gateway over every site of the test bed with `[deid]`, the viewer as published (OHIF's npm
build, unmodified) served by viewer/serve.py and pointed at it, and Debian's Chromium driven by
Playwright: the study list shows the de-identified studies, the synthetic CT renders, as do its
copies stored as JPEG 2000 and JPEG-LS, and no request of the viewer fails; also over a gateway
without de-identification, and over one that requires bearer tokens. Nothing
leaves loopback: every request for another host is blocked and counted as a failure.
"""

import contextlib
import io
import json
import ipaddress
import shutil
import subprocess
import sys
import time
import urllib.parse

import pydicom
import pytest
import requests
from PIL import Image
from playwright.sync_api import sync_playwright

from conftest import ROOT, start_federation

OHIF_DIST = ROOT / "viewer" / "ohif-3.13.2"
SERVE = ROOT / "viewer" / "serve.py"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-features=MediaRouter,OptimizationHints,Translate",
]


def chromium_path():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is missing: scripts/install-deps.sh installs Debian's chromium package")
    return path


def loopback(url):
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_viewer(testbed, tmp, extra, destination="FEDGW2", auth='[auth]\nmode = "none"\n'):
    """A gateway over the test bed (more TOML in `extra`, its [auth] section in `auth`; its
    C-MOVE destination AE) and the viewer served for it; yields (gateway, viewer URL)."""
    if not (OHIF_DIST / "index.html").is_file():
        pytest.fail(f"the OHIF Viewer is not installed in {OHIF_DIST}: run scripts/install-viewer.sh")
    gateway_process, gw = start_federation(testbed, destination, extra=extra, auth=auth)
    try:
        with viewer_for(gw.url, tmp) as viewer_url:
            yield gw, viewer_url
    finally:
        gateway_process.terminate()
        gateway_process.wait(timeout=10)


@contextlib.contextmanager
def viewer_for(gateway_url, tmp):
    """The viewer served for the gateway at `gateway_url`; its URL."""
    if not (OHIF_DIST / "index.html").is_file():
        pytest.fail(f"the OHIF Viewer is not installed in {OHIF_DIST}: run scripts/install-viewer.sh")
    port_file = tmp / "viewer.port"
    log = open(tmp / "viewer.log", "w")
    viewer = subprocess.Popen(
        [sys.executable, str(SERVE), "--gateway", gateway_url, "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
        stdout=log,
        stderr=log,
    )
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            if viewer.poll() is not None:
                pytest.fail(f"viewer/serve.py exited: see {log.name}")
            time.sleep(0.05)
        else:
            pytest.fail("viewer/serve.py did not start")
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        viewer.terminate()
        viewer.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def served(testbed, tmp_path_factory):
    """A de-identifying gateway over the test bed and the viewer served for it."""
    tmp = tmp_path_factory.mktemp("viewer")
    deid = f"""
[deid]
profile = "basic"
options = ["retain-longitudinal-modified-dates"]
key_file = "{tmp}/deid.key"
state_dir = "{tmp}/state"
"""
    for gw, url in serve_viewer(testbed, tmp, deid):
        yield gw, url, tmp


class Traffic:
    """Every request the page makes: blocked when it is for a host outside loopback, and every
    answer from the gateway recorded."""

    def __init__(self, gateway_url):
        self.gateway_url = gateway_url
        self.gateway_responses = []
        self.problems = []
        self.in_flight = set()

    def attach(self, context):
        context.route("**/*", self.route)
        context.on("request", lambda request: self.in_flight.add(request))
        context.on("requestfinished", lambda request: self.in_flight.discard(request))
        context.on("response", self.response)
        context.on("requestfailed", self.failed)

    def settle(self, page, seconds):
        """Waits until no request of the page is in flight (the viewer prefetches the whole
        series), so that every one of them is judged."""
        deadline = time.time() + seconds
        while self.in_flight and time.time() < deadline:
            page.wait_for_timeout(250)
        assert not self.in_flight, f"{len(self.in_flight)} requests still in flight after {seconds} s"

    def route(self, route):
        if loopback(route.request.url):
            route.continue_()
        else:
            self.problems.append(f"blocked a request outside loopback: {route.request.method} {route.request.url}")
            route.abort("blockedbyclient")

    def response(self, response):
        if response.url.startswith(self.gateway_url):
            self.gateway_responses.append((response.status, response.request.method, response.url))
            if response.status >= 400:
                self.problems.append(f"{response.status} for {response.request.method} {response.url}")
        elif response.status >= 400:
            self.problems.append(f"{response.status} from the viewer's server for {response.url}")

    def failed(self, request):
        self.in_flight.discard(request)
        if loopback(request.url):
            self.problems.append(f"failed: {request.method} {request.url}: {request.failure}")


def originals(testbed):
    """PatientName and PatientID of every file the sites were loaded with."""
    files = list(testbed["data"]["ct"]["files"]) + list(testbed["data"]["multiframe"]["files"])
    files += [f["path"] for f in testbed["data"]["pydicom"] if f["stored"]]
    values = set()
    for path in files:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID"):
            value = str(ds.get(keyword, "") or "").strip()
            if len(value) >= 4:
                values.add(value)
                values.add(value.replace("^", ", "))
    return values


def rendered(png):
    """Whether a screenshot of the viewport shows an image rather than an empty canvas: a good
    part of it lit, in several gray levels of its own (the phantom's body, spine and noise)."""
    image = Image.open(io.BytesIO(png)).convert("L")
    histogram = image.histogram()
    total = sum(histogram)
    lit = sum(histogram[21:])
    levels = sum(1 for count in histogram[21:] if count >= total * 0.005)
    return lit >= total * 0.10 and levels >= 3, image, f"{lit / total:.0%} of the viewport lit, in {levels} gray levels"


def viewport_image(page, seconds=45):
    """The viewport, once it shows an image or after `seconds`: (shown, image, what was seen)."""
    canvas = page.wait_for_selector("canvas.cornerstone-canvas", timeout=30_000)
    dismiss(page, "Skip all")
    deadline = time.time() + seconds
    while True:
        ok, image, seen = rendered(canvas.screenshot())
        if ok or time.time() > deadline:
            return ok, image, seen
        page.wait_for_timeout(500)


def dismiss(page, label):
    """Clicks away one of OHIF's first-run overlays (the tour, the investigational-use banner)."""
    button = page.get_by_text(label, exact=True)
    if button.count() and button.first.is_visible():
        button.first.click()


def pseudonym_of_ct(gw, testbed):
    """The synthetic CT's pseudonymous StudyInstanceUID, found by searching the gateway for CT
    studies of its size."""
    ct = testbed["data"]["ct"]
    studies = requests.get(
        f"{gw.url}/studies", params={"ModalitiesInStudy": "CT", "includefield": "NumberOfStudyRelatedInstances"}
    )
    assert studies.status_code == 200, studies.text
    matches = [
        s["0020000D"]["Value"][0]
        for s in studies.json()
        if s.get("00201208", {}).get("Value", [0])[0] == len(ct["instance_uids"])
    ]
    assert len(matches) == 1, f"expected one CT study of {len(ct['instance_uids'])} instances, found {len(matches)}"
    assert matches[0] != ct["study_uid"]
    return matches[0]


@contextlib.contextmanager
def browser_page(traffic):
    """A page of headless Chromium whose every request `traffic` watches; closed after."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, service_workers="block")
        traffic.attach(context)
        try:
            yield context.new_page()
        finally:
            browser.close()


def open_study_list(page, viewer_url):
    """The study list, once it counts its studies; its text."""
    page.goto(viewer_url + "/", wait_until="load")
    page.wait_for_function(r"/\b1-[0-9]+ of [0-9]+/.test(document.body.innerText)", timeout=30_000)
    dismiss(page, "Confirm and hide")
    return page.inner_text("body")


def compressed_studies(gw, testbed):
    """The pseudonymous StudyInstanceUIDs of the CT copies the test bed holds compressed and its
    sites can send (JPEG 2000 and JPEG-LS; the test bed's Orthanc cannot send HTJ2K), by the
    transfer syntax their instances come in as stored."""
    wanted = {s["transfer_syntax"] for s in testbed["data"]["compressed"]} - {"1.2.840.10008.1.2.4.201"}
    size = len(testbed["data"]["compressed"][0]["study"]["instance_uids"])
    found = {}
    studies = requests.get(f"{gw.url}/studies", params={"ModalitiesInStudy": "CT", "includefield": "NumberOfStudyRelatedInstances"})
    for study in studies.json():
        if study.get("00201208", {}).get("Value", [0])[0] != size:
            continue
        uid = study["0020000D"]["Value"][0]
        first = requests.get(f"{gw.url}/studies/{uid}/instances").json()[0]
        url = f"{gw.url}/studies/{uid}/series/{first['0020000E']['Value'][0]}/instances/{first['00080018']['Value'][0]}"
        stored = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        syntax = next((s for s in wanted if f"transfer-syntax={s}".encode() in stored.content[:400]), None)
        if stored.status_code == 200 and syntax:
            found[syntax] = uid
    assert set(found) == wanted, (found, wanted)
    return found


def test_ohif_shows_the_deidentified_federation(testbed, served):
    gw, viewer_url, tmp = served
    studies = requests.get(f"{gw.url}/studies", params={"limit": "101"})
    assert studies.status_code == 200, studies.text
    names = {s["00100010"]["Value"][0]["Alphabetic"] for s in studies.json() if s.get("00100010", {}).get("Value")}
    ct_study = pseudonym_of_ct(gw, testbed)
    traffic = Traffic(gw.url)
    with browser_page(traffic) as page:
        try:
            # The study list: every study of the federation, under its pseudonyms.
            listed = open_study_list(page, viewer_url)
            page.screenshot(path=str(tmp / "study-list.png"))
            assert f"of {len(studies.json())}" in listed, "the study list does not count the gateway's studies"
            # OHIF lists 25 studies a page: every pseudonym of the gateway's answer is on it but
            # for those of studies on later pages.
            missing = sorted(name for name in names if name not in listed)
            assert len(missing) <= max(0, len(studies.json()) - 25), f"pseudonymous patient names not in the study list: {missing}"
            shown = sorted(value for value in originals(testbed) if value in listed)
            assert not shown, f"the study list shows the sites' own patient names or IDs: {shown}"

            # The study list's Patient filter: part of a pseudonym, in lower case, finds that
            # patient's studies (OHIF sends *part*, matched on the pseudonyms shown).
            patient = next(
                s["00100010"]["Value"][0]["Alphabetic"] for s in studies.json() if s["0020000D"]["Value"][0] == ct_study
            )
            part = patient[1:-1].lower()
            of_patient = requests.get(f"{gw.url}/studies", params={"PatientName": f"*{part}*"})
            assert of_patient.status_code == 200, of_patient.text
            page.get_by_role("textbox").first.fill(part)
            assert ct_study in [s["0020000D"]["Value"][0] for s in of_patient.json()]
            count = len(of_patient.json())
            page.wait_for_function(f"/\\b1-{count} of {count}\\b/.test(document.body.innerText)", timeout=30_000)

            # The synthetic CT, opened from the study list as a person would: its row (CT, as many
            # instances as the test bed made), then the Basic Viewer.
            instances = str(len(testbed["data"]["ct"]["instance_uids"]))
            row = (
                page.locator("tr")
                .filter(has=page.get_by_role("cell", name="CT", exact=True))
                .filter(has=page.get_by_role("cell", name=instances, exact=True))
            )
            assert row.count() == 1, f"{row.count()} rows of CT studies of {instances} instances in the study list"
            row.click()
            page.get_by_role("button", name="Basic Viewer").click()
            page.wait_for_url(f"**/viewer?StudyInstanceUIDs={ct_study}*", timeout=30_000)
            dismiss(page, "Confirm and hide")
            ok, image, seen = viewport_image(page)
            image.save(tmp / "viewport.png")
            page.screenshot(path=str(tmp / "viewer.png"))
            assert ok, f"the viewport shows no image ({seen}; see {tmp / 'viewer.png'})"
            traffic.settle(page, 60)

            # The CT as archives store it compressed (JPEG 2000, JPEG-LS), opened by its link.
            for syntax, study in compressed_studies(gw, testbed).items():
                page.goto(f"{viewer_url}/viewer?StudyInstanceUIDs={study}", wait_until="load")
                ok, image, seen = viewport_image(page)
                page.screenshot(path=str(tmp / f"viewer-{syntax}.png"))
                assert ok, f"the {syntax} study shows no image ({seen}; see {tmp / f'viewer-{syntax}.png'})"
                traffic.settle(page, 60)
        except Exception:
            page.screenshot(path=str(tmp / "failure.png"))
            raise

    frames = [url for status, _, url in traffic.gateway_responses if status == 200 and "/frames/" in url]
    metadata = [url for status, _, url in traffic.gateway_responses if status == 200 and url.endswith("/metadata")]
    print(f"{len(frames)} frames, {len(metadata)} metadata, {len(traffic.gateway_responses)} responses from the gateway")
    assert frames and metadata, "the viewer showed the CT without retrieving its metadata and frames from the gateway"
    assert not traffic.problems, "\n".join(traffic.problems)


def test_the_viewer_server(served):
    """viewer/serve.py: the configuration names the gateway, routes of the app fall back to
    index.html, a missing file is a 404, and it refuses to listen beyond loopback."""
    gw, viewer_url, _ = served
    config = requests.get(f"{viewer_url}/app-config.js")
    assert config.status_code == 200 and config.headers["Content-Type"] == "text/javascript"
    assert f"const gateway = {json.dumps(gw.url)};" in config.text
    index = (OHIF_DIST / "index.html").read_text()
    for route in ("/", "/viewer?StudyInstanceUIDs=2.25.1", "/viewer/dicomweb"):
        answer = requests.get(viewer_url + route)
        assert answer.status_code == 200 and answer.text == index, route
    assert requests.get(f"{viewer_url}/no-such-bundle.js").status_code == 404
    # A path that climbs out of dist/ (sent as is: the dots encoded) to a file beside it.
    assert (OHIF_DIST.parent / "serve.py").is_file()
    assert requests.get(f"{viewer_url}/%2e%2e/serve.py").status_code == 404
    wasm = next(OHIF_DIST.glob("*.wasm")).name
    assert requests.get(f"{viewer_url}/{wasm}").headers["Content-Type"] == "application/wasm"
    refused = subprocess.run(
        [sys.executable, str(SERVE), "--gateway", gw.url, "--listen", "0.0.0.0:0"], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "loopback addresses only" in refused.stderr


def test_ohif_over_a_gateway_that_does_not_deidentify(testbed, tmp_path):
    """The same viewer over a gateway without [deid] (over the Orthanc sites, beside the
    module's de-identifying one): the study list counts every study, and the CT opens by its
    link with no failed request."""
    from conftest import free_port
    ct = testbed["data"]["ct"]
    orthancs = {**testbed, "sites": [s for s in testbed["sites"] if s["kind"] == "orthanc"],
                "move_destinations": [{"ae_title": "VIEWERGW", "port": free_port()}]}
    for gw, viewer_url in serve_viewer(orthancs, tmp_path, "", "VIEWERGW"):
        studies = requests.get(f"{gw.url}/studies", params={"limit": "101"}).json()
        traffic = Traffic(gw.url)
        with browser_page(traffic) as page:
            listed = open_study_list(page, viewer_url)
            assert f"of {len(studies)}" in listed, "the study list does not count the gateway's studies"
            page.goto(f"{viewer_url}/viewer?StudyInstanceUIDs={ct['study_uid']}", wait_until="load")
            ok, _, seen = viewport_image(page)
            page.screenshot(path=str(tmp_path / "viewer-plain.png"))
            assert ok, f"the CT shows no image ({seen}; see {tmp_path / 'viewer-plain.png'})"
            traffic.settle(page, 60)
        assert not traffic.problems, "\n".join(traffic.problems)


def test_ohif_with_a_bearer_token(testbed, tmp_path):
    """The stock viewer over a gateway that requires bearer tokens, opened as a portal links to
    it: `/viewer?StudyInstanceUIDs=...&token=...` (OHIF sends the token as `Authorization:
    Bearer` on every request and takes it out of the address bar). The CT renders, every request
    to the gateway carries the token and none is refused; without the token the gateway refuses."""
    from conftest import free_port
    from test_access import Keys, auth_section, token
    keys = Keys()
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    sites = ", ".join(json.dumps(s["id"]) for s in testbed["sites"])
    project = f'\n[[projects]]\nid = "viewing"\nsites = [{sites}]\npermissions = ["search", "retrieve"]\n'
    ct = testbed["data"]["ct"]
    bed = {**testbed, "move_destinations": [{"ae_title": "TOKENGW", "port": free_port()}]}
    auth = auth_section(jwks_file=tmp_path / "jwks.json")
    for gw, viewer_url in serve_viewer(bed, tmp_path, project, "TOKENGW", auth=auth):
        assert requests.get(f"{gw.url}/studies").status_code == 401
        bearer = token(keys.rsa, projects=["viewing"])
        traffic = Traffic(gw.url)
        with browser_page(traffic) as page:
            carried = []
            page.on(
                "request",
                lambda request: carried.append(request.headers.get("authorization") == f"Bearer {bearer}")
                if request.url.startswith(gw.url) and request.method == "GET"
                else None,
            )
            page.goto(f"{viewer_url}/viewer?StudyInstanceUIDs={ct['study_uid']}&token={bearer}", wait_until="load")
            ok, _, seen = viewport_image(page)
            page.screenshot(path=str(tmp_path / "viewer-token.png"))
            assert ok, f"the CT shows no image ({seen}; see {tmp_path / 'viewer-token.png'})"
            assert "token=" not in page.url, "the viewer left the token in its address"
            traffic.settle(page, 60)
        answered = [status for status, _, _ in traffic.gateway_responses]
        assert carried and all(carried), f"{carried.count(False)} of {len(carried)} requests to the gateway without the token"
        assert answered and 401 not in answered and 403 not in answered, answered
        assert not traffic.problems, "\n".join(traffic.problems)
