"""docs/CONFORMANCE-STATEMENT.md cannot drift: every DICOMweb service it claims names a check
of `dicomweb-conformance web` that passes against the gateway over the test bed's real sites.
(Its SOP classes and transfer syntaxes are compared with pacs-adapter's by unit tests there.)"""

import json
import subprocess

import pytest

from conftest import ROOT

BINARY = ROOT / "target" / "debug" / "dicomweb-conformance"
STATEMENT = ROOT / "docs" / "CONFORMANCE-STATEMENT.md"


def claimed_services():
    """(service, resource, check name) of each row of the statement's web-services table."""
    text = STATEMENT.read_text()
    block = text.split("<!-- web-services -->")[1].split("<!-- /web-services -->")[0]
    rows = []
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("service", "---"):
            rows.append((cells[0], cells[1], cells[3]))
    return rows


def test_every_service_the_statement_claims_is_demonstrated_by_a_passing_check(federation, tmp_path):
    claims = claimed_services()
    assert len(claims) >= 30, claims
    services = {service.split()[0] for service, _, _ in claims}
    assert {"QIDO-RS", "WADO-RS", "STOW-RS", "HTTP"} <= services, services
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: build the workspace first")
    report_file = tmp_path / "report.json"
    subprocess.run(
        [str(BINARY), "web", "--url", federation.url, "--json", str(report_file)],
        capture_output=True, text=True, timeout=600,
    )
    outcomes = {c["name"]: c["outcome"] for c in json.loads(report_file.read_text())["checks"]}
    missing = [(service, resource, check) for service, resource, check in claims if check not in outcomes]
    assert missing == [], f"the statement names checks the tool does not have: {missing}"
    not_passed = [(resource, check, outcomes[check]) for _, resource, check in claims if outcomes[check] != "pass"]
    assert not_passed == [], f"claimed but not demonstrated: {not_passed}"
