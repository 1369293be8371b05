"""What an operator sees: the start-up summary (sites answering or not, de-identification,
cache), JSON logs on request, and no patient data in either."""

import json
import time

import requests

from conftest import free_port, start_federation, stop


def wait_for_line(path, needle, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with open(path) as log:
            text = log.read()
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"no {needle!r} in the gateway's output:\n{text}")


def test_the_start_up_summary_says_which_sites_answer_and_what_the_gateway_does(testbed, tmp_path):
    # A site nobody listens for: the summary names it as not answering.
    silent = f"""
[[sites]]
id = "silent"
ae_title = "NOBODY"
address = "127.0.0.1:{free_port()}"
retrieve = "c-get"
timeout = "2s"
"""
    deid = f'\n[deid]\nprofile = "basic"\nkey_file = "{tmp_path}/deid.key"\nstate_dir = "{tmp_path}/state"\n'
    process, gw = start_federation(testbed, "FEDGW2", extra_sites=silent, extra=deid)
    try:
        text = wait_for_line(process.log_path, "answer C-ECHO")
        answering = len(testbed["sites"])
        assert f"{answering} of {answering + 1} site(s) answer C-ECHO: site-1 (" in text, text
        assert "WARNING: not answering: silent (" in text, text
        assert "de-identifying every response (PS3.15 Annex E basic profile)" in text
        assert "cache: memory " in text and "a search answer for 0s" in text
        assert 'WARNING: auth.mode = "none"' in text
    finally:
        stop(process)


def test_json_logs_are_one_object_a_line_with_the_request_fields_and_no_patient_data(testbed, tmp_path):
    deid = f'\n[deid]\nprofile = "basic"\nkey_file = "{tmp_path}/deid.key"\nstate_dir = "{tmp_path}/state"\n'
    process, gw = start_federation(testbed, "FEDGW2", extra=deid, args=("--log-format", "json"))
    try:
        wait_for_line(process.log_path, "answer C-ECHO")
        studies = requests.get(f"{gw.url}/studies", params={"ModalitiesInStudy": "CT"})
        assert studies.status_code == 200
        study = studies.json()[0]["0020000D"]["Value"][0]
        assert requests.get(f"{gw.url}/studies/{study}/series").status_code == 200
        assert requests.get(f"{gw.url}/studies/1.2.3.4.5.6.7.8.9.0/series").status_code in (200, 204, 404)
        wait_for_line(process.log_path, '"route":"/dicom-web/studies/{study}/series"')
    finally:
        stop(process)
    with open(process.log_path) as log:
        lines = [line for line in log.read().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is JSON
    assert all({"timestamp", "level", "target"} <= event.keys() for event in events), lines[:3]
    messages = [event.get("message", "") for event in events]
    assert any("serving DICOMweb at" in m for m in messages)
    assert any("site(s) answer C-ECHO" in m for m in messages)
    assert any("shutting down" in m for m in messages)
    requests_logged = [e for e in events if e.get("message") == "request"]
    routes = {(e["route"], e["status"]) for e in requests_logged}
    assert ("/dicom-web/studies", 200) in routes and ("/dicom-web/studies/{study}/series", 200) in routes, routes
    # Neither the sites' patient names and IDs nor their study UIDs reach the log.
    text = "\n".join(lines)
    for original in ("Synthetic", "SYN000001", testbed["data"]["ct"]["study_uid"]):
        assert original not in text


def test_slow_clients_are_dropped_and_connections_beyond_the_limit_wait_for_a_free_one(testbed):
    """Slowloris: clients that trickle their headers hold every connection slot; each is
    dropped after `server.header_timeout`, and a client waiting behind them is then served."""
    import socket

    process, gw = start_federation(testbed, "FEDGW2", server='max_connections = 4\nheader_timeout = "1s"\n')
    port = int(gw.url.split(":")[2].split("/")[0])
    slow = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            slow.append(s)
        began = time.monotonic()
        response = requests.get(gw.url.replace("/dicom-web", "/healthz"), timeout=10)
        waited = time.monotonic() - began
        assert response.status_code == 200
        assert 0.5 <= waited < 5, f"served after {waited:.2f} s"  # behind the slow ones, not never
        for s in slow:
            s.settimeout(5)
            answer = s.recv(4096)  # the server ends the connection (with 408 or nothing)
            while answer and not answer.endswith(b"\r\n\r\n") and b"408" not in answer:
                more = s.recv(4096)
                if not more:
                    break
                answer += more
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:80]
    finally:
        for s in slow:
            s.close()
        stop(process)
