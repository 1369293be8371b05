"""Load and content limits, against the real test bed.

- A short run of `bench-load` (16 clients, 15 s, QIDO-RS cached and not, warm and cold
  WADO-RS and STOW-RS over three Orthanc sites) through a gateway allowed only 8 requests in flight: every response
  is a success or the documented shedding (503 or 429, with Retry-After), shedding happens,
  every stored instance is at its site, and the gateway's peak RSS stays under a bound.
- STOW-RS of hostile data sets built here (sequences nested 1000 deep, a value length past the
  end, a deflate bomb): each refused in the FailedSOPSequence with the PS3.18 reason, and the
  gateway still answers; one nested too deep, put into the site directly, is refused on its way
  out of the PACS with 502.
"""

import struct
import subprocess
import zlib

import requests

from conftest import ROOT, free_port, launch, stop

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def test_bench_load_sheds_as_documented_and_stores_everything(testbed, tmp_path):
    binary = ROOT / "target" / "debug" / "bench-load"
    assert binary.exists(), f"{binary} is missing: build the workspace first"
    run = subprocess.run(
        [
            str(binary), "--use-running-testbed", "--clients", "16", "--seconds", "15",
            "--server", 'max_requests_in_flight = 8\nqueue_wait = "100ms"',
            "--max-rss-mib", "600", "--dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = run.stdout
    # Every kind succeeded, and the bound on requests in flight shed some with 503, but not
    # most: shedding is for peaks, not the answer to 16 clients. The share depends on how fast
    # the machine serves the debug build beside three PACS and the clients (about 4% on an idle
    # machine, 25-31% on a two-core one where the same commit had measured under 25%): bounded
    # at 40%, a check that shedding stays partial, not a performance figure (BENCHMARKS.md,
    # Load, has those, from the release build).
    kinds = ("QidoInstances", "QidoStudies", "QidoUncached", "WarmWado", "ColdWado", "Stow")
    for kind in kinds:
        assert f"| {kind} | 200 |" in report, report
    # Rows: kind, status, count, requests/s, p50 ms, p99 ms.
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines()]
    rows = [r for r in rows if len(r) == 6 and r[0] in kinds]
    counts = {}
    for kind, status, count, *_ in rows:
        counts[status] = counts.get(status, 0) + int(count)
    assert set(counts) <= {"200", "503", "429"}, report
    shed = counts.get("503", 0) + counts.get("429", 0)
    assert shed > 0, report
    assert shed / sum(counts.values()) <= 0.4, report
    # And the requests answered are answered in time: p99 of every kind under 5 s (0.1 to 0.5 s
    # on an idle machine); a shed request is shed at once, after the 100 ms queue wait.
    for kind, status, _, _, _, p99 in rows:
        assert float(p99) < (5000 if status == "200" else 2000), (kind, status, p99, report)
    stored = report.split("Instances stored: ")[1].split(",")[0]
    assert int(stored) > 0
    assert f"found at their site afterwards: {stored}." in report, report


def element(tag, vr, value):
    group, elem = tag
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def uid(text):
    raw = text.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def part10(transfer_syntax, data_set, instance):
    meta = (
        element((0x0002, 0x0001), b"OB", b"\0\1")
        + element((0x0002, 0x0002), b"UI", uid(CT_CLASS))
        + element((0x0002, 0x0003), b"UI", uid(instance))
        + element((0x0002, 0x0010), b"UI", uid(transfer_syntax))
    )
    group_length = element((0x0002, 0x0000), b"UL", struct.pack("<I", len(meta)))
    return b"\0" * 128 + b"DICM" + group_length + meta + data_set


def identity(instance):
    return (
        element((0x0008, 0x0016), b"UI", uid(CT_CLASS))
        + element((0x0008, 0x0018), b"UI", uid(instance))
        + element((0x0020, 0x000D), b"UI", uid("2.25.4242"))
        + element((0x0020, 0x000E), b"UI", uid("2.25.4243"))
    )


def nested(depth):
    """Sequences nested `depth` deep, each of one item of undefined length."""
    out = b""
    for _ in range(depth):
        out += struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
        out += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    out += element((0x0008, 0x0060), b"CS", b"OT")
    out += (struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)) * depth
    return out


def stow(url, parts):
    boundary = "hostile-part"
    body = b""
    for p in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return requests.post(
        f"{url}/studies", data=body, timeout=60,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', "Accept": "application/dicom+json"},
    )


def failure_reasons(response):
    return {
        item["00081155"]["Value"][0]: item["00081197"]["Value"][0]
        for item in response.json()["00081198"]["Value"]
    }


def test_hostile_data_sets_are_refused_by_stow(testbed):
    site = next(s for s in testbed["sites"] if s["id"] == "site-2")
    dest = next(d for d in testbed["move_destinations"] if d["ae_title"] == "FEDGW2")
    port = free_port()
    process = launch(f"""
[server]
listen = "127.0.0.1:{port}"
stow_limit = "64MiB"
[dimse]
ae_title = "{dest['ae_title']}"
listen = "127.0.0.1:{dest['port']}"
[[sites]]
id = "{site['id']}"
ae_title = "{site['ae_title']}"
address = "127.0.0.1:{site['dicom_port']}"
retrieve = "c-get"
store = true
[auth]
mode = "none"
[dataset_limits]
max_sequence_depth = 16
max_inflated_size = "8MiB"
""", port)
    url = f"http://127.0.0.1:{port}/dicom-web"
    try:
        deep = "2.25.9001"
        past_end = "2.25.9002"
        bomb = "2.25.9003"
        lying = identity(past_end) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFF0) + b"\0" * 16
        # 64 MiB of zeros in one element: about 64 KiB deflated.
        plain = identity(bomb) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 64 << 20) + bytes(64 << 20)
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = compressor.compress(plain) + compressor.flush()
        assert len(deflated) < 1 << 20
        response = stow(url, [
            part10(EXPLICIT_LE, identity(deep) + nested(1000), deep),
            part10(EXPLICIT_LE, lying, past_end),
            part10(DEFLATED, deflated, bomb),
        ])
        # Nothing stored: 409 with a reason per instance (PS3.18 Table I.2-2).
        assert response.status_code == 409, response.text
        assert failure_reasons(response) == {deep: OUT_OF_RESOURCES, past_end: CANNOT_UNDERSTAND, bomb: OUT_OF_RESOURCES}
        # Nesting within the limit is stored.
        fine = "2.25.9004"
        response = stow(url, [part10(EXPLICIT_LE, identity(fine) + nested(8), fine)])
        assert response.status_code == 200, response.text
        assert requests.get(f"{url}/studies?StudyInstanceUID=2.25.4242", timeout=30).status_code == 200
        # From a PACS: an instance nested 40 deep put into the site directly, retrieved through the
        # gateway: 502 naming the bound, and the gateway still answers.
        deep_at_site = "2.25.9005"
        stored = requests.post(f"{site['http_url']}/instances", data=part10(EXPLICIT_LE, identity(deep_at_site) + nested(40), deep_at_site), timeout=30)
        assert stored.status_code == 200, stored.text
        for resource in ("metadata", "rendered", "frames/1"):
            response = requests.get(f"{url}/studies/2.25.4242/series/2.25.4243/instances/{deep_at_site}/{resource}", timeout=60)
            assert response.status_code == 502, (resource, response.status_code, response.text)
            assert "nested deeper than 16" in response.text
        assert requests.get(f"{url}/studies?StudyInstanceUID=2.25.4242", timeout=30).status_code == 200
    finally:
        stop(process)


def test_past_its_bounds_the_gateway_sheds_with_503_and_never_its_health(testbed):
    """The documented shedding end to end (docs/RELIABILITY.md, Load): a STOW-RS that finds no
    room in `server.stow_memory` and a request past `server.max_requests_in_flight` get 503 with
    Retry-After after `server.queue_wait`; a shed STOW-RS body is read and dropped, so its client
    reads the 503; `/healthz`, `/readyz`, `/admin/sites` and `/metrics` are never shed."""
    import socket
    import time

    from conftest import start_federation
    process, gw = start_federation(testbed, "FEDGW5", server='max_requests_in_flight = 2\nqueue_wait = "1s"\nstow_memory = "1MiB"\n')
    root = gw.url.rsplit("/dicom-web", 1)[0]
    port = int(root.rsplit(":", 1)[1])
    held = []
    try:
        # A STOW-RS whose client sends its headers and a first line, then nothing: it holds one
        # slot and 900 KiB of the STOW-RS memory.
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /dicom-web/studies HTTP/1.1\r\nHost: gw\r\n"
                     b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
                     b"Content-Length: 921600\r\n\r\n--b\r\n")
        held.append(slow)
        time.sleep(0.5)
        stow_headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
        # A second STOW-RS of 600 KiB: a slot is free, memory is not.
        began = time.monotonic()
        answer = requests.post(f"{gw.url}/studies", data=b"x" * (600 << 10), headers=stow_headers, timeout=30)
        assert answer.status_code == 503 and answer.headers.get("Retry-After") == "1", (answer.status_code, answer.text)
        assert 1 <= time.monotonic() - began < 4
        assert requests.get(f"{gw.url}/studies", timeout=30).status_code == 200, "the second slot serves searches"
        # A retrieval whose client reads nothing holds the second slot.
        ct = testbed["data"]["ct"]["study_uid"]
        reader = socket.create_connection(("127.0.0.1", port))
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(f"GET /dicom-web/studies/{ct} HTTP/1.1\r\nHost: gw\r\nAccept: multipart/related; "
                       f'type="application/dicom"; transfer-syntax=*\r\n\r\n'.encode())
        held.append(reader)
        time.sleep(1)
        began = time.monotonic()
        answer = requests.get(f"{gw.url}/studies", timeout=30)
        assert answer.status_code == 503 and answer.headers.get("Retry-After") == "1", (answer.status_code, answer.text)
        assert 1 <= time.monotonic() - began < 4
        # A shed STOW-RS whose client sends all of its 2 MiB reads the 503, not a reset.
        answer = requests.post(f"{gw.url}/studies", data=b"x" * (2 << 20), headers=stow_headers, timeout=30)
        assert answer.status_code == 503, (answer.status_code, answer.text)
        for path in ("/healthz", "/readyz", "/admin/sites", "/metrics"):
            began = time.monotonic()
            assert requests.get(root + path, timeout=30).status_code == 200, path
            assert time.monotonic() - began < 0.5, (path, "waited for a slot")
    finally:
        for sock in held:
            sock.close()
        stop(process)
