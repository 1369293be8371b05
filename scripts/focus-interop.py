#!/usr/bin/env python3
"""Samply Focus, EUCAIM's federated-search agent at a data holder, pointed at a running gateway
(docs/EUCAIM.md, "Checked with Samply Focus").

Focus is built from its public source outside the project (samply/focus; it needs its git
dependencies samply/beam and samply/laplace-rs). This script plays the Beam proxy on loopback
(scripts/beam_stub.py), starts Focus with `ENDPOINT_TYPE=omop` and the gateway's provider URL and
secret, queues queries encoded as EUCAIM's explorer and Spot encode them, and checks that what
Focus returns is the gateway's own answer to the same query plus Focus's provider fields.

    scripts/focus-interop.py --focus /path/to/focus --gateway http://127.0.0.1:8080 \\
        --secret-file eucaim-search.secret [--path /eucaim/search]

Exit status 0 when every answer matches."""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from beam_stub import BeamStub, BeamTaskFailed  # noqa: E402

MR = {"key": "RID10311", "type": "EQUALS", "value": "RID10312"}
# The explorer's own example (docs/EUCAIM.md): female, MR or CT, aged 40 to 70.
EXAMPLE = {"operand": "OR", "children": [{"operand": "AND", "children": [
    {"operand": "OR", "children": [{"key": "SNOMEDCT263495000", "type": "EQUALS", "value": "SNOMEDCT248152002"}]},
    {"operand": "OR", "children": [{"key": "RID10311", "type": "EQUALS", "value": "RID10312"},
                                   {"key": "RID10311", "type": "EQUALS", "value": "RID10321"}]},
    {"operand": "OR", "children": [{"key": "SNOMEDCT423493009", "type": "BETWEEN",
                                    "value": {"min": 40.0, "max": 70.0}}]}]}]}
QUERIES = {
    "empty": {"operand": "OR", "children": []},
    "MR": {"operand": "OR", "children": [{"operand": "AND", "children": [{"operand": "OR", "children": [MR]}]}]},
    "example": EXAMPLE,
    "40 or more": {"operand": "OR", "children": [{"operand": "AND", "children": [{"operand": "OR", "children": [
        {"key": "SNOMEDCT423493009", "type": "BETWEEN", "value": {"min": 40.0, "max": 0.0}}]}]}]},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--focus", required=True, help="the Focus binary")
    parser.add_argument("--gateway", required=True, help="the gateway's root URL")
    parser.add_argument("--secret-file", required=True, help="the gateway's eucaim.secret_file")
    parser.add_argument("--path", default="/eucaim/search", help="the gateway's eucaim.path")
    args = parser.parse_args()
    secret = pathlib.Path(args.secret_file).read_text().strip()
    endpoint = args.gateway.rstrip("/") + args.path
    failures = 0
    with BeamStub(app_id="focus.datahold.broker.local", api_key="focus-key") as beam:
        environment = {
            **os.environ,
            "BEAM_PROXY_URL": beam.url,
            "BEAM_APP_ID_LONG": "focus.datahold.broker.local",
            "API_KEY": "focus-key",
            "ENDPOINT_TYPE": "omop",
            "ENDPOINT_URL": endpoint,
            "AUTH_HEADER": f"Secret {secret}",
            "PROVIDER": "gateway",
            "RETRY_COUNT": "5",
            "NO_PROXY": "*",
        }
        focus = subprocess.Popen([args.focus], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for name, tree in QUERIES.items():
                task = beam.add_task(tree, query_id=f"interop-{int(time.time())}__search__{name.replace(' ', '-')}")
                try:
                    through_focus = beam.wait_result(60, task)
                except (BeamTaskFailed, TimeoutError) as e:
                    print(f"{name}: Focus did not answer: {e}")
                    failures += 1
                    continue
                direct = requests.post(
                    endpoint,
                    json={"ast": tree, "id": "direct"},
                    headers={"Authorization": f"Secret {secret}"},
                    timeout=30,
                ).json()
                provider = (through_focus.pop("provider", None), through_focus.pop("provider_icon", None))
                same = through_focus == direct and provider[0] == "gateway" and provider[1]
                counted = {c["id"]: c["studies_count"] for c in direct["collections"]}
                print(f"{name}: {'as the gateway answers' if same else 'DIFFERS'}; studies by dataset {counted}")
                failures += not same
        finally:
            focus.terminate()
            focus.wait(timeout=10)
    print("every answer through Focus is the gateway's" if not failures else f"{failures} answer(s) differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
