"""Faults of the sites, end to end with real processes: an Orthanc of the test's own that is
killed or frozen (SIGSTOP), and a TCP proxy written here, between the gateway and that Orthanc,
that stalls, resets the connection, aborts, corrupts the DICOM upper-layer stream or answers
slowly at a chosen point. Every case ends with the status docs/RELIABILITY.md documents, within
the deadline the site's `timeout` gives; afterwards no association is left in use, the gateway
has no more threads than before, and the other sites are served (also while a site stalls)."""

import concurrent.futures
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from conftest import ROOT, OrthancProcess, dimse_archive, free_port, launch, start_federation, stop
from test_federation import ct_instance, value

# The proxied and the direct site answer each response within this, or are cut off: long
# enough that "at once" (AT_ONCE_S) and "after the timeout" cannot be confused.
SITE_TIMEOUT_S = 5.0
# What "at once" means in these tests: well under the site's timeout.
AT_ONCE_S = 1.5
# No C-ECHO during the tests (they would cross the proxy's faults) and no circuit opening
# (each case must reach the site to show what its fault gives).
QUIET_HEALTH = """
[federation]
echo_interval = "1h"
circuit_failures = 1000
"""
ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
INSTANCES = 6
# `max_pdu_length` of the proxied site: the largest PDU the gateway takes from it.
MAX_PDU = 256 << 10
P_DATA, ASSOCIATE_RQ = 0x04, 0x01


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Connection:
    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.stalled = False
        self.closed = False

    def close(self, reset=False):
        if self.closed:
            return
        self.closed = True
        if reset:
            # SO_LINGER 0: close() sends RST instead of FIN.
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for sock in (self.client, self.upstream):
            try:
                # Wakes the pump blocked reading it (close alone would not, and its descriptor
                # could then be reused by the next connection); SHUT_RD sends nothing, so the
                # reset stays a reset.
                sock.shutdown(socket.SHUT_RD if reset and sock is self.client else socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class DimseProxy:
    """Forwards the DICOM upper-layer stream between the gateway and a PACS PDU by PDU, on
    127.0.0.1, and misbehaves when armed with a fault:

    - `kind`: stall (forward nothing more), reset (RST), abort (an A-ABORT from the PACS side),
      reject (an A-ASSOCIATE-RJ), release (an A-RELEASE-RQ from the PACS mid-operation),
      bad-type (a PDU of type 55H), huge-length (a P-DATA-TF header claiming 4 GiB), oversized
      (one claiming a byte more than the site's max_pdu_length), truncated-pdv
      (a PDV item claiming more bytes than its PDU holds), slow (each PDU from the PACS delayed
      by `delay` seconds);
    - `at`: "associate" (the A-ASSOCIATE-RQ of a new association) or a number of P-DATA-TF
      bytes the PACS has sent since arming (0: its first one, so mid-C-FIND; ~1 MB: mid-C-GET).
    """

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.fault = None
        self.sent = 0
        self.fired = 0
        self.connections = []
        threading.Thread(target=self.accept, daemon=True).start()

    def arm(self, kind, at, delay=0.0, close_existing=False):
        with self.lock:
            self.fault = {"kind": kind, "at": at, "delay": delay}
            self.sent = 0
            self.fired = 0
            existing = list(self.connections) if close_existing else []
        # A new association is needed for a fault "at" association: the pooled ones go.
        for connection in existing:
            connection.close()

    def disarm(self):
        with self.lock:
            self.fault = None

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                # The PACS is down: so is the proxy's side of it.
                client.close()
                continue
            connection = Connection(client, upstream)
            with self.lock:
                self.connections = [c for c in self.connections if not c.closed] + [connection]
            threading.Thread(target=self.pump, args=(connection, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(connection, False), daemon=True).start()

    def decide(self, from_pacs, pdu_type, length):
        """What to do with a PDU: forward it, or the fault (with its delay)."""
        with self.lock:
            fault = self.fault
            if fault is None:
                return "forward", 0.0
            if fault["kind"] == "slow":
                return ("forward", fault["delay"]) if from_pacs else ("forward", 0.0)
            if fault["at"] == "associate":
                hit = not from_pacs and pdu_type == ASSOCIATE_RQ
            else:
                hit = from_pacs and pdu_type == P_DATA and self.sent >= fault["at"]
                if from_pacs and pdu_type == P_DATA and not hit:
                    self.sent += 6 + length
            if hit:
                self.fired += 1
                return fault["kind"], 0.0
            return "forward", 0.0

    def pump(self, connection, from_pacs):
        source, sink = (connection.upstream, connection.client) if from_pacs else (connection.client, connection.upstream)
        try:
            while True:
                header = recv_exact(source, 6)
                if header is None:
                    break
                (length,) = struct.unpack(">I", header[2:6])
                body = recv_exact(source, length)
                if body is None:
                    break
                if connection.stalled:
                    continue
                action, delay = self.decide(from_pacs, header[0], length)
                if delay:
                    time.sleep(delay)
                if action == "forward":
                    sink.sendall(header + body)
                    continue
                client = connection.client
                if action == "stall":
                    connection.stalled = True
                elif action == "reset":
                    connection.close(reset=True)
                    return
                elif action == "abort":
                    # A-ABORT, source 2 (service provider), reason 0.
                    client.sendall(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 0]))
                    connection.close()
                    return
                elif action == "reject":
                    # A-ASSOCIATE-RJ: rejected permanently by the service user, no reason given.
                    client.sendall(bytes([0x03, 0, 0, 0, 0, 4, 0, 1, 1, 1]))
                    connection.close()
                    return
                elif action == "release":
                    # A-RELEASE-RQ from the PACS in the middle of an operation.
                    client.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
                    connection.stalled = True
                else:
                    if action == "bad-type":
                        client.sendall(bytes([0x55, 0]) + struct.pack(">I", 4) + b"\0" * 4)
                    elif action == "huge-length":
                        client.sendall(bytes([P_DATA, 0]) + struct.pack(">I", 0xFFFFFFFF) + b"\0" * 64)
                    elif action == "oversized":
                        client.sendall(bytes([P_DATA, 0]) + struct.pack(">I", MAX_PDU + 1) + b"\0" * 64)
                    elif action == "truncated-pdv":
                        item = struct.pack(">I", 1000) + bytes([1, 0x02]) + b"\0" * 8
                        client.sendall(bytes([P_DATA, 0]) + struct.pack(">I", len(item)) + item)
                    # The connection stays open: the gateway must give up on what it got, not
                    # wait for more.
                    connection.stalled = True
        except OSError:
            pass
        connection.close()

    def close(self):
        self.listener.close()
        for connection in list(self.connections):
            connection.close()


@pytest.fixture(scope="module")
def pacs(testbed, tmp_path_factory):
    """An Orthanc of these tests' own holding one study of INSTANCES CT slices (about 0.5 MB
    each), found at no other site."""
    orthanc = OrthancProcess(tmp_path_factory.mktemp("faults-orthanc"), "FAULTS")
    study, series = generate_uid(), generate_uid()
    instances = []
    for _ in range(INSTANCES):
        ds, data = ct_instance(testbed, "FAULTS-PATIENT", study=study, series=series)
        assert requests.post(f"{orthanc.rest}/instances", data=data).ok
        instances.append(ds.SOPInstanceUID)
    orthanc.study, orthanc.series, orthanc.instances = study, series, instances
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def proxy(pacs):
    proxy = DimseProxy(pacs.dicom_port)
    yield proxy
    proxy.close()


def site_toml(site_id, port, more=""):
    return f"""
[[sites]]
id = "{site_id}"
ae_title = "FAULTS"
address = "127.0.0.1:{port}"
retrieve = "c-get"
timeout = "{SITE_TIMEOUT_S}s"
{more}
"""


@pytest.fixture(scope="module")
def gateway(testbed, pacs, proxy):
    """A gateway over the test bed's sites, the Orthanc behind the proxy ("proxied") and the
    same Orthanc directly ("direct"), without a retrieval cache (every retrieval reaches a site)."""
    sites = site_toml("proxied", proxy.port, f'max_pdu_length = "{MAX_PDU}"') + site_toml("direct", pacs.dicom_port)
    process, gw = start_federation(testbed, "FEDGW2", extra_sites=sites, extra=QUIET_HEALTH + '\n[cache]\nmemory = "0B"\nsearch_ttl = "0s"\n')
    gw.process = process
    gw.root = gw.url.rsplit("/dicom-web", 1)[0]
    yield gw
    stop(process)


def threads(process):
    return len(os.listdir(f"/proc/{process.pid}/task"))


def associations(gw, site_id):
    site = next(s for s in requests.get(f"{gw.root}/admin/sites").json()["sites"] if s["id"] == site_id)
    return site["associations"]


def wait_until_none_in_use(gw, site_id, seconds=5):
    deadline = time.monotonic() + seconds
    while True:
        counts = associations(gw, site_id)
        if counts["in_use"] == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def healthy_site_answers(gw, testbed):
    """A search and a retrieval at site-1, a site with no fault."""
    ct = testbed["data"]["ct"]
    found = requests.get(f"{gw.url}/sites/site-1/studies", params={"StudyInstanceUID": ct["study_uid"]}, timeout=10)
    assert found.status_code == 200 and len(found.json()) == 1, found.text
    instance = f"{gw.url}/sites/site-1/studies/{ct['study_uid']}/series/{ct['series_uid']}/instances/{ct['instance_uids'][0]}"
    retrieved = requests.get(instance, headers=ACCEPT_DICOM, timeout=10)
    assert retrieved.status_code == 200 and len(retrieved.content) > 500_000


def fetch(url, **kwargs):
    """A GET read to its end: (status, headers, body, error while reading the body, seconds)."""
    began = time.monotonic()
    body, error = b"", None
    response = requests.get(url, stream=True, timeout=30, **kwargs)
    try:
        for chunk in response.iter_content(1 << 16):
            body += chunk
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as e:
        error = e
    return response.status_code, response.headers, body, error, time.monotonic() - began


def complete_multipart(headers, body, count):
    """Whether `body` is a well-formed multipart/related body of `count` parts, closed."""
    content_type = headers.get("Content-Type", "")
    if "boundary=" not in content_type:
        return False
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    if not body.endswith(b"--" + boundary + b"--\r\n") and not body.endswith(b"--" + boundary + b"--"):
        return False
    return body.count(b"--" + boundary + b"\r\n") == count


def study_url(gw, site_id, pacs):
    return f"{gw.url}/sites/{site_id}/studies/{pacs.study}"


def instance_url(gw, site_id, pacs):
    return f"{study_url(gw, site_id, pacs)}/series/{pacs.series}/instances/{pacs.instances[0]}"


@pytest.fixture
def watched(gw_ready, testbed):
    """Threads and associations before a case; after it: none in use at the proxied site, no
    more threads (within a tolerance), and site-1 still served."""
    gw = gw_ready
    before = threads(gw.process)
    yield gw
    after_counts = wait_until_none_in_use(gw, "proxied")
    assert after_counts["in_use"] == 0, after_counts
    assert after_counts["in_use"] + after_counts["idle"] <= after_counts["max"]
    healthy_site_answers(gw, testbed)
    # Tokio's worker threads are fixed; its blocking pool may start a thread or two for file
    # work (they end after 10 s idle), so a small tolerance, not an exact count.
    deadline = time.monotonic() + 12
    while threads(gw.process) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert threads(gw.process) <= before + 2, (before, threads(gw.process))


@pytest.fixture
def gw_ready(gateway, proxy, pacs):
    """The gateway with the proxy passing everything, after one search and one retrieval
    through it (pool and threads warmed up); the proxy is disarmed again after the case."""
    proxy.disarm()
    status, _, body, error, _ = fetch(instance_url(gateway, "proxied", pacs), headers=ACCEPT_DICOM)
    assert status == 200 and error is None
    yield gateway
    proxy.disarm()


def qido_everywhere(gw, testbed, pacs):
    began = time.monotonic()
    response = requests.get(f"{gw.url}/studies", params={"StudyInstanceUID": f"{testbed['data']['ct']['study_uid']},{pacs.study}"}, timeout=30)
    return response, time.monotonic() - began


# Deadlines: a new association within the site's timeout, each response within it, a C-FIND
# collected within twice it (docs/RELIABILITY.md); plus slack for a loaded CI machine.
SLACK_S = 1.5


@pytest.mark.parametrize("kind", ["stall", "reset", "reject"])
def test_a_fault_while_associating_leaves_the_site_out_of_a_search_and_fails_its_retrieval(watched, proxy, pacs, testbed, kind):
    gw = watched
    proxy.arm(kind, "associate", close_existing=True)
    response, elapsed = qido_everywhere(gw, testbed, pacs)
    assert response.status_code == 200
    assert "site proxied did not answer" in response.headers["Warning"], response.headers
    found = {value(s, "0020000D") for s in response.json()}
    # The study is still found at the direct site, the CT at the test bed's.
    assert found == {testbed["data"]["ct"]["study_uid"], pacs.study}
    assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed

    status, _, body, _, elapsed = fetch(study_url(gw, "proxied", pacs), headers=ACCEPT_DICOM)
    expected = 504 if kind == "stall" else 502
    assert status == expected, (status, body)
    assert b"site proxied" in body, body
    if kind == "reset":
        # Named for what is known (dicom-ul alone would call it TLS data from the peer).
        assert b"no A-ASSOCIATE response" in body, body
    if kind == "reject":
        assert b"association rejected" in body, body
    assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed
    assert proxy.fired >= 1


def test_a_stalled_site_does_not_hold_up_the_others(watched, proxy, pacs, testbed):
    gw = watched
    proxy.arm("stall", 0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stalled = pool.submit(fetch, study_url(gw, "proxied", pacs), headers=ACCEPT_DICOM)
        time.sleep(0.2)
        began = time.monotonic()
        healthy_site_answers(gw, testbed)
        assert time.monotonic() - began < AT_ONCE_S, "site-1 waited for the stalled site"
        status, _, body, _, elapsed = stalled.result()
    assert status == 504 and b"site proxied: timed out" in body, (status, body)
    assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed


def test_more_requests_than_associations_to_a_stalled_site_all_end_within_the_deadline(watched, proxy, pacs, testbed):
    # Ten at once, four associations (max_associations): those waiting for a free one give up
    # at the same deadline as those holding one.
    gw = watched
    proxy.arm("stall", "associate", close_existing=True)
    urls = [instance_url(gw, "proxied", pacs)] * 5 + [f"{gw.url}/sites/proxied/studies?StudyInstanceUID={pacs.study}"] * 5
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(lambda url: fetch(url, headers=ACCEPT_DICOM if "instances/" in url else {}), urls))
    elapsed = time.monotonic() - began
    assert all(status == 504 and body.startswith(b"site proxied: timed out") for status, _, body, _, _ in results), \
        [(status, body) for status, _, body, _, _ in results]
    assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed
    assert associations(gw, "proxied")["peak_in_use"] <= 4


@pytest.mark.parametrize("kind", ["reset", "abort", "bad-type", "huge-length", "oversized", "truncated-pdv"])
def test_a_broken_search_answer_is_a_502_and_a_warning(watched, proxy, pacs, testbed, kind):
    gw = watched
    proxy.arm(kind, 0)
    began = time.monotonic()
    response = requests.get(f"{gw.url}/sites/proxied/studies", params={"StudyInstanceUID": pacs.study}, timeout=30)
    elapsed = time.monotonic() - began
    assert response.status_code == 502, (response.status_code, response.text)
    assert response.text.startswith("site proxied: ")
    if kind != "reset":
        # Refused as it arrives, not after waiting out the deadline.
        assert "timed out" not in response.text
        assert elapsed < AT_ONCE_S, elapsed
    if kind in ("huge-length", "oversized"):
        assert f"maximum is {MAX_PDU}" in response.text, response.text
    response, elapsed = qido_everywhere(gw, testbed, pacs)
    assert response.status_code == 200 and "site proxied did not answer" in response.headers["Warning"]
    assert {value(s, "0020000D") for s in response.json()} == {testbed["data"]["ct"]["study_uid"], pacs.study}


def test_a_site_failing_after_the_search_leaves_out_what_it_would_complete_with_a_warning(testbed, tmp_path):
    """Two archives hold one study; the second answers the search and fails every C-FIND after
    it. The study held at both has its roll-ups counted over both, which the second fails: that
    study is left out and the Warning says so, naming the site, while the study the first holds
    alone is answered (before, the whole search was a 502)."""
    shared = testbed["data"]["ct"]["files"][:2]
    alone = []
    study = generate_uid()
    for n, path in enumerate(testbed["data"]["ct"]["files"][2:4]):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, study + ".1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        alone.append(tmp_path / f"alone-{n}.dcm")
        ds.save_as(alone[-1], enforce_file_format=True)
    with dimse_archive("STEADY", shared + alone, site_id="steady") as steady, \
            dimse_archive("FALTERING", shared, options=["--finds-answered", "1"], site_id="faltering") as faltering:
        bed = {**testbed, "sites": [], "move_destinations": [{"ae_title": "FALTERGW", "port": free_port()}]}
        process, gw = start_federation(bed, "FALTERGW", extra_sites=steady + faltering,
                                       extra='\n[cache]\nmemory = "0B"\nsearch_ttl = "0s"\n')
        try:
            response = requests.get(f"{gw.url}/studies", timeout=30)
            assert response.status_code == 200, (response.status_code, response.text)
            assert [value(s, "0020000D") for s in response.json()] == [study]
            warning = response.headers.get("Warning", "")
            assert warning.startswith("299 ") and "1 result(s) left out" in warning, warning
            assert "site faltering did not answer" in warning, warning
        finally:
            stop(process)


@pytest.mark.parametrize("kind", ["reset", "abort", "release", "stall", "huge-length", "oversized", "bad-type", "truncated-pdv"])
def test_a_retrieval_broken_midway_never_looks_complete(watched, proxy, pacs, kind):
    gw = watched
    # After about two of the six instances.
    proxy.arm(kind, 1_100_000)
    status, headers, body, error, elapsed = fetch(study_url(gw, "proxied", pacs), headers=ACCEPT_DICOM)
    assert proxy.fired >= 1
    if status == 200:
        # The multipart had started: it ends without its closing delimiter, the connection cut.
        assert error is not None, "a broken retrieval ended like a complete one"
        assert not complete_multipart(headers, body, INSTANCES)
    else:
        assert status in (502, 504) and b"site proxied" in body, (status, body)
    assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed


@pytest.mark.parametrize("kind", ["reset", "abort", "huge-length"])
def test_a_broken_instance_or_metadata_retrieval_is_a_502(watched, proxy, pacs, kind):
    gw = watched
    for url, headers in [(instance_url(gw, "proxied", pacs), ACCEPT_DICOM), (study_url(gw, "proxied", pacs) + "/metadata", {"Accept": "application/dicom+json"})]:
        # Past the C-STORE-RQ command, into the data set.
        proxy.arm(kind, 1)
        status, _, body, error, elapsed = fetch(url, headers=headers)
        if status == 200:
            assert error is not None, "a broken retrieval ended like a complete one"
            if headers is not ACCEPT_DICOM:
                with pytest.raises(ValueError):
                    json.loads(body)
        else:
            assert status == 502 and b"site proxied" in body, (url, status, body)
        assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed


def test_a_slow_site_within_its_deadline_is_waited_for(watched, proxy, pacs):
    gw = watched
    # Each PDU a fifth of the timeout late: every wait within the timeout, so the retrieval goes
    # on (about eleven PDUs: some 11 s), and ends.
    proxy.arm("slow", 0, delay=0.2 * SITE_TIMEOUT_S)
    status, headers, body, error, elapsed = fetch(instance_url(gw, "proxied", pacs), headers=ACCEPT_DICOM)
    assert status == 200 and error is None and complete_multipart(headers, body, 1)
    assert len(body) > 500_000
    assert 0.2 * SITE_TIMEOUT_S < elapsed < 4 * SITE_TIMEOUT_S, elapsed


def test_a_site_slower_than_its_deadline_is_cut_off(watched, proxy, pacs):
    gw = watched
    proxy.arm("slow", 0, delay=2 * SITE_TIMEOUT_S)
    status, _, body, _, elapsed = fetch(instance_url(gw, "proxied", pacs), headers=ACCEPT_DICOM)
    assert status == 504 and b"site proxied: timed out" in body, (status, body)
    assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed


def test_a_frozen_site_times_out_and_answers_again_once_thawed(watched, pacs, testbed):
    gw = watched
    pacs.process.send_signal(signal.SIGSTOP)
    try:
        response, elapsed = qido_everywhere(gw, testbed, pacs)
        assert response.status_code == 200
        assert "site direct did not answer: timed out" in response.headers["Warning"], response.headers
        assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed
        status, _, body, _, elapsed = fetch(instance_url(gw, "direct", pacs), headers=ACCEPT_DICOM)
        assert status == 504 and b"site direct: timed out" in body, (status, body)
        assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed
        healthy_site_answers(gw, testbed)
    finally:
        pacs.process.send_signal(signal.SIGCONT)
    assert wait_until_none_in_use(gw, "direct")["in_use"] == 0
    status, _, body, error, _ = fetch(instance_url(gw, "direct", pacs), headers=ACCEPT_DICOM)
    assert status == 200 and error is None and len(body) > 500_000


def test_a_killed_site_is_unreachable_at_once_and_answers_again_once_restarted(watched, pacs, testbed):
    gw = watched
    pacs.process.kill()
    pacs.process.wait()
    try:
        response, elapsed = qido_everywhere(gw, testbed, pacs)
        assert response.status_code == 200
        warning = response.headers["Warning"]
        assert "site direct did not answer" in warning and "site proxied did not answer" in warning, warning
        assert {value(s, "0020000D") for s in response.json()} == {testbed["data"]["ct"]["study_uid"]}
        assert elapsed < AT_ONCE_S, elapsed
        status, _, body, _, elapsed = fetch(instance_url(gw, "direct", pacs), headers=ACCEPT_DICOM)
        assert status == 502 and b"site direct" in body, (status, body)
        assert elapsed < AT_ONCE_S, elapsed
    finally:
        pacs.start()
    assert wait_until_none_in_use(gw, "direct")["in_use"] == 0
    status, _, body, error, _ = fetch(instance_url(gw, "direct", pacs), headers=ACCEPT_DICOM)
    assert status == 200 and error is None and len(body) > 500_000


def launch_wrapped(config_text, port, wrapper):
    """Starts the gateway under `wrapper` (a shell command line run first, in the same
    process: its last word execs the gateway) and waits for it."""
    directory = pathlib.Path(tempfile.mkdtemp())
    config = directory / "gateway.toml"
    config.write_text(config_text)
    binary = ROOT / "target" / "debug" / "dicomweb-gateway"
    log = open(directory / "gateway.log", "w")
    command = f"{wrapper} && exec {binary} serve --config {config}"
    process = subprocess.Popen(["unshare", "-m", "sh", "-c", command], stdout=log, stderr=log)
    for _ in range(200):
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            pytest.fail(f"the gateway exited: see {log.name}: {(directory / 'gateway.log').read_text()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("the gateway did not come up")


def one_site_config(port, site, extra=""):
    """A gateway over one C-GET site (its C-MOVE storage SCP on a port of its own, unused)."""
    return f"""
[server]
listen = "127.0.0.1:{port}"
[dimse]
ae_title = "FAULTSGW"
listen = "127.0.0.1:{free_port()}"
{site}
[auth]
mode = "none"
{extra}
"""


def test_a_full_disk_turns_the_disk_tier_off_and_retrievals_go_on(testbed, pacs, tmp_path):
    # The disk tier on a 1 MiB tmpfs, mounted in the gateway's own mount namespace; its bound
    # (1 GiB) is far above what the file system holds, so writing the 3 MB study fails.
    disk = tmp_path / "cache"
    disk.mkdir()
    port = free_port()
    config = one_site_config(port, site_toml("direct", pacs.dicom_port),
                             f'[cache]\nmemory = "0B"\ndisk_dir = "{disk}"\ndisk = "1GiB"\n')
    process = launch_wrapped(config, port, f"mount -t tmpfs -o size=1m tmpfs {disk}")
    root = f"http://127.0.0.1:{port}"
    try:
        cache = requests.get(f"{root}/admin/cache").json()["disk"]
        assert cache["off"] is False, cache
        url = f"{root}/dicom-web/studies/{pacs.study}"
        for _ in range(2):
            status, headers, body, error, _ = fetch(url, headers=ACCEPT_DICOM)
            assert status == 200 and error is None and complete_multipart(headers, body, INSTANCES)
            cache = requests.get(f"{root}/admin/cache").json()["disk"]
            assert cache["off"] is True, cache
        status, headers, body, error, _ = fetch(f"{url}/series/{pacs.series}/instances/{pacs.instances[1]}", headers=ACCEPT_DICOM)
        assert status == 200 and error is None and complete_multipart(headers, body, 1)
        log = pathlib.Path(process.args[-1].split("--config ")[1]).with_name("gateway.log").read_text()
        assert log.count("cannot write the disk cache") == 1, log[-3000:]
    finally:
        stop(process)


def acknowledged(response):
    """The SOP Instance UIDs a STOW-RS response says were stored."""
    if response.status_code not in (200, 202):
        return set()
    body = response.json()
    return {item["00081155"]["Value"][0] for item in body.get("00081199", {}).get("Value", [])}


def stored_at(orthanc, uids):
    """Which of `uids` the Orthanc holds (its own REST API)."""
    found = set()
    for uid in uids:
        answer = requests.post(f"{orthanc.rest}/tools/lookup", data=uid).json()
        if any(entry["Type"] == "Instance" for entry in answer):
            found.add(uid)
    return found


def instances_at(orthanc):
    return requests.get(f"{orthanc.rest}/statistics").json()["CountInstances"]


def stow_body(testbed, count):
    study, series = generate_uid(), generate_uid()
    parts, uids = [], []
    for _ in range(count):
        ds, data = ct_instance(testbed, "FAULTS-STOW", study=study, series=series)
        parts.append(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n")
        uids.append(ds.SOPInstanceUID)
    return b"".join(parts) + b"--b--\r\n", uids


STOW_HEADERS = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b', "Accept": "application/dicom+json"}


def storing_gateway(testbed, pacs, timeout="5s", extra=""):
    port = free_port()
    site = site_toml("direct", pacs.dicom_port, "store = true").replace(f'timeout = "{SITE_TIMEOUT_S}s"', f'timeout = "{timeout}"')
    return launch(one_site_config(port, site, extra), port), f"http://127.0.0.1:{port}/dicom-web"


def test_a_stow_to_a_frozen_site_fails_each_instance_within_the_deadlines(testbed, pacs):
    # The first instance waits out its deadline (2 x timeout); the site has failed the request,
    # so the seven others fail at once instead of each waiting in turn (the circuit, which would
    # also stop them after a few, is kept shut here).
    process, url = storing_gateway(testbed, pacs, timeout=f"{SITE_TIMEOUT_S}s", extra=QUIET_HEALTH)
    body, uids = stow_body(testbed, 8)
    pacs.process.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        response = requests.post(f"{url}/studies", data=body, headers=STOW_HEADERS, timeout=60)
        elapsed = time.monotonic() - began
    finally:
        pacs.process.send_signal(signal.SIGCONT)
    try:
        # Nothing stored: the site's error as the status, not a 200 with every instance failed.
        assert response.status_code == 504 and response.text.startswith("site direct: timed out"), response.text
        assert acknowledged(response) == set() and stored_at(pacs, uids) == set()
        assert elapsed < 2 * SITE_TIMEOUT_S + SLACK_S, elapsed
    finally:
        stop(process)


def test_a_gateway_stopped_during_a_stow_acknowledges_only_what_is_stored(testbed, pacs):
    # SIGTERM: the request in flight is finished (drained), its answer true.
    body, uids = stow_body(testbed, 40)
    process, url = storing_gateway(testbed, pacs)
    before = instances_at(pacs)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        posted = pool.submit(requests.post, f"{url}/studies", data=body, headers=STOW_HEADERS, timeout=60)
        deadline = time.monotonic() + 20
        while instances_at(pacs) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert instances_at(pacs) > before, "no instance reached the site"
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        response = posted.result()
        process.wait(timeout=35)
        drained = time.monotonic() - began
    assert response.status_code in (200, 202, 409, 503), response.text
    seen = acknowledged(response)
    assert seen <= set(uids)
    assert stored_at(pacs, seen) == seen
    # The drain finishes the request: every instance stored and acknowledged.
    assert response.status_code == 200 and seen == set(uids), (response.status_code, len(seen))
    assert drained < 30, drained


def test_a_gateway_killed_during_stows_acknowledged_only_what_is_stored(testbed, pacs):
    # SIGKILL: the request in flight is lost; every answer received before was true.
    process, url = storing_gateway(testbed, pacs)
    answers, lost = [], []

    def keep_storing():
        while True:
            body, uids = stow_body(testbed, 5)
            try:
                answers.append((requests.post(f"{url}/studies", data=body, headers=STOW_HEADERS, timeout=30), uids))
            except requests.ConnectionError:
                lost.append(uids)
                return

    before = instances_at(pacs)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        storing = pool.submit(keep_storing)
        deadline = time.monotonic() + 30
        while instances_at(pacs) < before + 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.kill()
        process.wait()
        storing.result(timeout=30)
    assert lost, "the kill did not interrupt a request"
    assert len(answers) >= 2, "no request was answered before the kill"
    for response, uids in answers:
        seen = acknowledged(response)
        assert response.status_code == 200 and seen == set(uids), response.text
        assert stored_at(pacs, seen) == seen


def test_with_caches_on_a_broken_answer_is_not_kept_as_a_whole_one(testbed, pacs, proxy):
    # Searches and retrievals kept for ten minutes: a partial search answer (a site missing) or
    # a retrieval cut midway must not be served again as if complete.
    caches = '\n[cache]\nmemory = "256MiB"\nttl = "10m"\nsearch_ttl = "10m"\n'
    process, gw = start_federation(testbed, "FEDGW5", extra_sites=site_toml("proxied", proxy.port), extra=QUIET_HEALTH + caches)
    try:
        proxy.arm("reset", "associate", close_existing=True)
        response, elapsed = qido_everywhere(gw, testbed, pacs)
        assert response.status_code == 200 and "site proxied did not answer" in response.headers["Warning"]
        assert elapsed < AT_ONCE_S, elapsed
        assert {value(s, "0020000D") for s in response.json()} == {testbed["data"]["ct"]["study_uid"]}
        proxy.disarm()
        response, _ = qido_everywhere(gw, testbed, pacs)
        assert response.status_code == 200 and "Warning" not in response.headers, response.headers
        assert {value(s, "0020000D") for s in response.json()} == {testbed["data"]["ct"]["study_uid"], pacs.study}

        proxy.arm("reset", 1_100_000)
        status, headers, body, error, elapsed = fetch(study_url(gw, "proxied", pacs), headers=ACCEPT_DICOM)
        assert proxy.fired >= 1 and elapsed < AT_ONCE_S, elapsed
        assert error is not None or status in (502, 504), (status, len(body))
        assert not complete_multipart(headers, body, INSTANCES)
        proxy.disarm()
        for _ in range(2):
            status, headers, body, error, _ = fetch(study_url(gw, "proxied", pacs), headers=ACCEPT_DICOM)
            assert status == 200 and error is None and complete_multipart(headers, body, INSTANCES)
        gw.root = gw.url.rsplit("/dicom-web", 1)[0]
        assert wait_until_none_in_use(gw, "proxied")["in_use"] == 0
    finally:
        proxy.disarm()
        stop(process)


def test_with_the_default_circuit_settings_a_dead_site_is_left_out_after_a_few_failures(testbed, pacs):
    """The fault cases above keep the circuit shut to show each fault's own answer; with the
    settings a deployment starts with (three consecutive failures, 30 s open), a dead site fails
    a few requests at once, and then is not asked: 503 at once with Retry-After, naming why."""
    process, gw = start_federation(testbed, "FEDGW5", extra_sites=site_toml("direct", pacs.dicom_port),
                                   extra='\n[cache]\nmemory = "0B"\nsearch_ttl = "0s"\n')
    gw.root = gw.url.rsplit("/dicom-web", 1)[0]
    pacs.process.kill()
    pacs.process.wait()
    try:
        answers = []
        for _ in range(5):
            status, headers, body, _, elapsed = fetch(instance_url(gw, "direct", pacs), headers=ACCEPT_DICOM)
            answers.append(status)
            assert elapsed < AT_ONCE_S, (status, elapsed)
            if status == 503:
                break
            assert status == 502 and b"site direct" in body, (status, body)
        assert answers[-1] == 503 and 1 <= len(answers) - 1 <= 3, answers
        assert int(headers["Retry-After"]) >= 1 and b"repeated failures" in body, (headers, body)
        site = next(s for s in requests.get(f"{gw.root}/admin/sites").json()["sites"] if s["id"] == "direct")
        assert site["circuit"] == "open" and site["consecutive_failures"] >= 3, site
    finally:
        stop(process)
        pacs.start()
