"""The README's main command, as written, on a clean checkout: `bash scripts/demo.sh` builds,
starts three real Orthanc sites, the gateway and the OHIF Viewer, prints the URLs; the gateway's
answers a search with de-identified studies, the viewer's serves OHIF configured for it; Ctrl-C
stops everything it started."""

import os
import re
import signal
import socket
import subprocess
import time

import requests

from conftest import ROOT

# A build included, when the tree's target directory has none yet.
START_DEADLINE_S = 1200


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_readme_demo_command_runs_on_a_clean_checkout_and_stops_on_ctrl_c(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
    # The checkout's target directory is the tree's, only so that a rerun need not build from
    # nothing; the command is the README's.
    (checkout / "target").symlink_to(ROOT / "target")
    output_path = tmp_path / "demo.out"
    with open(output_path, "w") as output:
        demo = subprocess.Popen(
            ["bash", "scripts/demo.sh"], cwd=checkout, stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        deadline = time.time() + START_DEADLINE_S
        url = None
        while time.time() < deadline and url is None:
            text = output_path.read_text()
            found = re.search(r"Point a DICOMweb viewer or client at: (http://127\.0\.0\.1:\d+/dicom-web)", text)
            url = found.group(1) if found else None
            assert demo.poll() is None, f"the demo ended early:\n{text[-4000:]}"
            time.sleep(1)
        assert url, f"no URL printed within {START_DEADLINE_S} s:\n{output_path.read_text()[-4000:]}"
        studies = requests.get(f"{url}/studies", params={"ModalitiesInStudy": "CT"}, timeout=60)
        assert studies.status_code == 200, studies.text
        names = [s.get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", "") for s in studies.json()]
        assert names and not any("Synthetic" in n for n in names), names  # de-identified
        assert requests.get(url.replace("/dicom-web", "/readyz"), timeout=10).status_code == 200
        viewer = re.search(r"OHIF Viewer on the gateway.*: (http://127\.0\.0\.1:\d+)", output_path.read_text())
        assert viewer, f"no viewer URL printed:\n{output_path.read_text()[-2000:]}"
        page = requests.get(viewer.group(1), timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        config = requests.get(f"{viewer.group(1)}/app-config.js", timeout=10)
        assert config.status_code == 200 and url in config.text
    finally:
        # Ctrl-C, as a person would press it in the terminal (the whole foreground group).
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise AssertionError("the demo did not stop within 60 s of Ctrl-C")
    text = output_path.read_text()
    ports = [8080, 3000, 11111, 11112, 11113, 8142, 8143, 8144]
    for _ in range(50):
        if not any(listening(p) for p in ports):
            break
        time.sleep(0.2)
    assert not [p for p in ports if listening(p)], f"still listening after Ctrl-C:\n{text[-2000:]}"
