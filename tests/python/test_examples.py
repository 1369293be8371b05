"""The files in examples/ work as their comments say: the two-project configuration with
tokens from examples/mint-token.py over the test bed's real sites, the DICOM TLS
configuration with real certificate files, the demo configuration, and the systemd unit."""

import pathlib
import re
import shutil
import subprocess
import sys
import time

import requests

from conftest import ROOT, free_port, launch
from test_https import Authority

EXAMPLES = ROOT / "examples"
BINARY = ROOT / "target" / "debug" / "dicomweb-gateway"


def mint(directory, *projects, options=()):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "mint-token.py"), "--dir", str(directory), *options, *projects],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def check_config_only(config_text, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(config_text)
    return subprocess.run([str(BINARY), "check", "--config", str(path), "--config-only"], capture_output=True, text=True)


def on_the_test_bed(text, testbed, port, destination):
    """An example's configuration with the demo's ports replaced by the test bed's."""
    for n, site in enumerate((s for s in testbed["sites"] if s["kind"] != "dcmqrscp"), start=1):
        assert site["ae_title"] == f"ORTHANC{n}"
        text = text.replace(f"127.0.0.1:{11110 + n}", f"127.0.0.1:{site['dicom_port']}")
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    return text.replace('ae_title = "FEDGW"', f'ae_title = "{destination["ae_title"]}"').replace(
        "127.0.0.1:11200", f"127.0.0.1:{destination['port']}"
    )


def test_the_two_project_example_with_minted_tokens_shows_each_project_its_sites(testbed, tmp_path):
    tokens = tmp_path / "tokens"
    lung = mint(tokens, "lung-screening")
    jwks = (tokens / "jwks.json").read_text()
    oncology = mint(tokens, "oncology-trial")
    assert (tokens / "jwks.json").read_text() == jwks  # the key is made once, then kept
    port = free_port()
    destination = next(d for d in testbed["move_destinations"] if d["ae_title"] == "FEDGW2")
    text = on_the_test_bed((EXAMPLES / "projects.toml").read_text(), testbed, port, destination)
    text = text.replace(".testbed/tokens/jwks.json", str(tokens / "jwks.json")).replace("state/projects", str(tmp_path / "state"))
    process = launch(text, port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/dicom-web/studies").status_code == 401

        def sites_seen(token):
            response = requests.get(f"{base}/admin/sites", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            return [s["id"] for s in response.json()["sites"]]

        assert sites_seen(lung) == ["site-1", "site-2"]
        assert sites_seen(oncology) == ["site-2", "site-3"]
        studies = requests.get(f"{base}/dicom-web/studies", params={"ModalitiesInStudy": "CT"}, headers={"Authorization": f"Bearer {lung}"})
        assert studies.status_code == 200 and studies.json()
        # Pseudonyms differ between the projects for the same study.
        other = requests.get(f"{base}/dicom-web/studies", params={"ModalitiesInStudy": "CT"}, headers={"Authorization": f"Bearer {oncology}"})
        uids = lambda r: {s["0020000D"]["Value"][0] for s in r.json()}  # noqa: E731
        assert other.status_code == 200 and not uids(studies) & uids(other)
        assert testbed["data"]["ct"]["study_uid"] not in uids(studies) | uids(other)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_dicom_tls_example_is_valid_with_real_certificate_files(tmp_path):
    text = (EXAMPLES / "dicom-tls.toml").read_text()
    # As shipped, its files do not exist here: every missing one is named, with its key.
    shipped = check_config_only(text, tmp_path)
    assert shipped.returncode == 1
    assert "server.tls" in shipped.stderr and "sites[0] (hospital-a).tls" in shipped.stderr, shipped.stderr
    authority = Authority(tmp_path, "hospital-a-ca")
    server_cert, server_key = authority.issue("gateway", server=True)
    client_cert, client_key = authority.issue("fedgw-client", server=False)
    for shipped_path, real in {
        "/etc/dicomweb-gateway/tls/gateway.crt": server_cert,
        "/etc/dicomweb-gateway/tls/gateway.key": server_key,
        "/etc/dicomweb-gateway/tls/hospital-a-ca.pem": authority.path,
        "/etc/dicomweb-gateway/tls/fedgw-client.crt": client_cert,
        "/etc/dicomweb-gateway/tls/fedgw-client.key": client_key,
    }.items():
        assert shipped_path in text
        text = text.replace(shipped_path, str(real))
    text = re.sub(r'"/var/(lib|cache|log)/dicomweb-gateway', lambda m: f'"{tmp_path}/{m.group(1)}', text)
    result = check_config_only(text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration valid: 2 site(s)" in result.stdout


def test_the_demo_configuration_is_valid(tmp_path):
    result = check_config_only((EXAMPLES / "demo.toml").read_text(), tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_systemd_unit_passes_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install the Debian package systemd"
    unit = (EXAMPLES / "dicomweb-gateway.service").read_text()
    assert "ExecStart=/usr/local/bin/dicomweb-gateway --log-format json serve" in unit
    copy = tmp_path / "dicomweb-gateway.service"
    copy.write_text(unit.replace("/usr/local/bin/dicomweb-gateway", str(BINARY)))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_two_tier_example_federates_its_edges(testbed, tmp_path):
    """examples/two-tier/ on the test bed: three edge gateways, each de-identifying one Orthanc
    site, and the central one federating them; with a minted token the central answers the
    union of what the edges answer."""
    token = mint(tmp_path / "tokens", "lung-screening")
    ports = {n: free_port() for n in (0, 1, 2, 3)}
    orthancs = [s for s in testbed["sites"] if s["kind"] == "orthanc"]

    def adapted(name):
        text = (EXAMPLES / "two-tier" / name).read_text()
        for n, site in enumerate(orthancs, start=1):
            assert site["ae_title"] == f"ORTHANC{n}"
            text = text.replace(f"127.0.0.1:{11110 + n}", f"127.0.0.1:{site['dicom_port']}")
            text = text.replace(f"127.0.0.1:{11210 + n}", f"127.0.0.1:{free_port()}")
        for n, port in ports.items():
            text = text.replace(f"127.0.0.1:{8080 + n}", f"127.0.0.1:{port}")
        text = text.replace("127.0.0.1:11200", f"127.0.0.1:{free_port()}")
        return text.replace(".testbed/tokens", str(tmp_path / "tokens")).replace(".testbed/two-tier", str(tmp_path))

    processes = []
    try:
        for n in (1, 2, 3):
            processes.append(launch(adapted(f"edge-{n}.toml"), ports[n]))
        processes.append(launch(adapted("central.toml"), ports[0]))
        headers = {"Authorization": f"Bearer {token}"}
        union = set()
        for n in (1, 2, 3):
            answer = requests.get(f"http://127.0.0.1:{ports[n]}/dicom-web/studies", headers=headers, timeout=60)
            assert answer.status_code == 200
            union |= {s["0020000D"]["Value"][0] for s in answer.json()}
        central = requests.get(f"http://127.0.0.1:{ports[0]}/dicom-web/studies", headers=headers, timeout=60)
        assert central.status_code == 200 and "Warning" not in central.headers
        assert {s["0020000D"]["Value"][0] for s in central.json()} == union
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def test_the_eucaim_example_answers_the_federated_search_and_views_in_situ(testbed, tmp_path):
    """examples/eucaim.toml on the test bed: the federated search answers its dataset (its CT
    studies), its catalogue record has every mandatory property, and a viewer's token of the
    node's Keycloak (groups) sees the studies but takes no instance away."""
    import json

    from test_eucaim import validated

    tokens = tmp_path / "tokens"
    viewer = mint(tokens, "PROJECT-ct-cohort",
                  options=("--issuer", "https://keycloak.node.example.org/realms/eucaim", "--claim", "groups"))
    secret = tmp_path / "eucaim-search.secret"
    secret.write_text("a-secret-of-the-data-holder-0123456789\n")
    port = free_port()
    destination = next(d for d in testbed["move_destinations"] if d["ae_title"] == "FEDGW2")
    text = on_the_test_bed((EXAMPLES / "eucaim.toml").read_text(), testbed, port, destination)
    text = text.replace(".testbed/tokens/jwks.json", str(tokens / "jwks.json")).replace(
        ".testbed/eucaim-search.secret", str(secret)).replace('"state/eucaim', f'"{tmp_path}/state')
    process = launch(text, port)
    try:
        base = f"http://127.0.0.1:{port}"
        search = {"Authorization": f"Secret {secret.read_text().strip()}", "Content-Type": "application/json"}
        empty = json.dumps({"ast": {"operand": "OR", "children": []}, "id": "example"})
        for _ in range(100):
            answer = requests.post(f"{base}/eucaim/search", data=empty, headers=search, timeout=30)
            assert answer.status_code == 200, answer.text
            # (Answered at once, with 0 studies until the sites are read.)
            if any(c["studies_count"] for c in answer.json()["collections"]):
                break
            time.sleep(0.2)
        [collection] = answer.json()["collections"]
        assert collection["id"] == "demo-ct-cohort" and collection["studies_count"] >= 5
        assert collection["modality"] and "CT" in collection["modality"]
        import rdflib
        record = requests.get(f"{base}/datasets/demo-ct-cohort/catalogue", headers={"Accept": "text/turtle"}, timeout=10)
        conforms, report = validated(rdflib.Graph().parse(data=record.text, format="turtle"))
        assert conforms, report
        headers = {"Authorization": f"Bearer {viewer}"}
        studies = requests.get(f"{base}/dicom-web/studies", params={"ModalitiesInStudy": "CT"}, headers=headers, timeout=60)
        assert studies.status_code == 200 and studies.json()
        study = studies.json()[0]["0020000D"]["Value"][0]
        taken = requests.get(f"{base}/dicom-web/studies/{study}", headers={**headers, "Accept": "multipart/related; type=\"application/dicom\""}, timeout=60)
        assert taken.status_code == 403 and "in situ" in taken.text
    finally:
        process.terminate()
        process.wait(timeout=10)
