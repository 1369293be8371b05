"""Access control end to end: bearer tokens signed by the test's own keys (RSA and EC, in a JWKS
file or served at a URL), two projects over the test bed's real sites, what each sees and may
do, every kind of bad token, per-caller limits, per-project pseudonyms and de-identification
options, and the audit trail of it all."""

import base64
import hashlib
import hmac
import http.server
import json
import pathlib
import subprocess
import threading
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import free_port, pacs_activity, start_federation
from test_federation import ct_instance, orthanc

ISSUER = "https://login.test.invalid"
AUDIENCE = "dicomweb-gateway"
SITES = "00091010"
ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
# The gateway fetches a JWKS URL again for an unknown key at most this often (seconds).
REFETCH_AT_MOST_EVERY = 5
BINARY = str(pathlib.Path(__file__).resolve().parents[2] / "target" / "debug" / "dicomweb-gateway")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    """The identity provider's keys, as a test makes them."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self, extra=()):
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        rsa_jwk.update(kid="rsa-1", use="sig")
        ec_jwk.update(kid="ec-1", use="sig")
        return {"keys": [rsa_jwk, ec_jwk, *extra]}

    def rsa_public_pem(self):
        return self.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(**changes):
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "projects": ["lung"]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def token(key, kid="rsa-1", alg="RS256", **changes):
    return jwt.encode(claims(**changes), key, algorithm=alg, headers={"kid": kid})


def unsigned_token(header, body, secret=None):
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = "" if secret is None else b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{signature}"


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


def auth_section(jwks_file=None, jwks_url=None):
    source = f'jwks_file = "{jwks_file}"' if jwks_file else f'jwks_url = "{jwks_url}"'
    return f"""
[auth]
mode = "jwt"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
{source}
projects_claim = "projects"
"""


PROJECTS = """
[[projects]]
id = "lung"
sites = ["site-1", "site-2"]
permissions = ["search", "retrieve"]

[[projects]]
id = "liver"
sites = ["site-3", "dcmqrscp"]
permissions = ["search", "retrieve", "store"]
"""


def study_uids_at(testbed, site_id):
    studies = requests.get(f"{orthanc(testbed, site_id)}/studies", params={"expand": ""}).json()
    return {s["MainDicomTags"]["StudyInstanceUID"] for s in studies}


def value(result, tag):
    return (result.get(tag, {}).get("Value") or [None])[0]


def operations_sent(gw, headers):
    sites = requests.get(gw.url.replace("/dicom-web", "/admin/sites"), headers=headers).json()["sites"]
    return {s["id"]: {k: v for k, v in s["operations_sent"].items() if k != "echo"} for s in sites}


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def guarded(testbed, keys, tmp_path_factory):
    """A gateway over the test bed with two projects, tokens checked against a JWKS file, an
    audit trail, and a study of its own at site-3 only."""
    tmp = tmp_path_factory.mktemp("access")
    (tmp / "jwks.json").write_text(json.dumps(keys.jwks()))
    ds, part10 = ct_instance(testbed, "ACCESS-ONLY-AT-SITE-3")
    assert requests.post(f"{orthanc(testbed, 'site-3')}/instances", data=part10).ok
    extra = PROJECTS + f'\n[audit]\npath = "{tmp}/audit.jsonl"\nfhir_path = "{tmp}/audit-fhir.ndjson"\n'
    process, gw = start_federation(testbed, "FEDGW1", extra=extra, auth=auth_section(jwks_file=tmp / "jwks.json"))
    gw.trail = tmp / "audit.jsonl"
    gw.fhir_trail = tmp / "audit-fhir.ndjson"
    gw.only_at_site_3 = ds.StudyInstanceUID
    gw.multiframe_study = testbed["data"]["multiframe"]["study_uid"]
    yield gw
    process.terminate()
    process.wait(timeout=10)


def test_each_project_sees_exactly_its_sites_studies(testbed, keys, guarded):
    lung = requests.get(f"{guarded.url}/studies", headers=bearer(token(keys.rsa)))
    assert lung.status_code == 200
    assert {value(s, "0020000D") for s in lung.json()} == study_uids_at(testbed, "site-1") | study_uids_at(testbed, "site-2")
    assert all(set(s[SITES]["Value"]) <= {"site-1", "site-2"} for s in lung.json())
    assert guarded.only_at_site_3 not in {value(s, "0020000D") for s in lung.json()}
    # The same with an EC key.
    liver = requests.get(f"{guarded.url}/studies", headers=bearer(token(keys.ec, kid="ec-1", alg="ES256", projects=["liver"])))
    assert liver.status_code == 200
    uids = {value(s, "0020000D") for s in liver.json()}
    assert study_uids_at(testbed, "site-3") <= uids and guarded.only_at_site_3 in uids
    assert all(set(s[SITES]["Value"]) <= {"site-3", "dcmqrscp"} for s in liver.json())
    assert {v for s in liver.json() for v in s[SITES]["Value"]} == {"site-3", "dcmqrscp"}


def test_data_outside_the_project_is_not_found_and_its_sites_are_not_contacted(keys, guarded):
    both = bearer(token(keys.rsa, projects=["lung", "liver"]))
    lung = bearer(token(keys.rsa))
    study = guarded.only_at_site_3
    before = operations_sent(guarded, both)
    seen_at_site_3 = pacs_activity()["site-3"]
    assert requests.get(f"{guarded.url}/studies/{study}", headers={**lung, **ACCEPT_DICOM}).status_code == 404
    assert requests.get(f"{guarded.url}/studies/{study}/metadata", headers=lung).status_code == 404
    assert requests.get(f"{guarded.url}/studies/{study}/series", headers=lung).status_code == 204
    # A site or project outside the token's reach is as absent as one that does not exist.
    assert requests.get(f"{guarded.url}/sites/site-3/studies", headers=lung).status_code == 404
    # Even for a study the project has just retrieved (and cached) through its own sites.
    mf = guarded.multiframe_study
    assert requests.get(f"{guarded.url}/studies/{mf}", headers={**lung, **ACCEPT_DICOM}).status_code == 200
    for path in (f"/sites/site-3/studies/{mf}", f"/sites/site-3/studies/{mf}/metadata"):
        answer = requests.get(guarded.url + path, headers={**lung, **ACCEPT_DICOM} if path.endswith(mf) else lung)
        assert answer.status_code == 404 and "no site site-3" in answer.text, (path, answer.status_code)
    assert requests.get(f"{guarded.url}/projects/liver/studies", headers=lung).status_code == 404
    assert requests.get(f"{guarded.url}/projects/nosuch/studies", headers=lung).status_code == 404
    after = operations_sent(guarded, both)
    for site in ("site-3", "dcmqrscp"):
        assert after[site] == before[site], site
    # And as site-3 itself saw it: no C-FIND, C-GET or C-MOVE.
    assert pacs_activity()["site-3"] == seen_at_site_3
    assert after["site-1"]["find"] > before["site-1"]["find"]
    # The project that holds it retrieves it.
    liver = bearer(token(keys.rsa, projects=["liver"]))
    response = requests.get(f"{guarded.url}/studies/{study}", headers={**liver, **ACCEPT_DICOM})
    assert response.status_code == 200 and len(response.content) > 1000
    # /admin/sites shows the sites of the token's projects only, and nothing without a token.
    assert set(operations_sent(guarded, lung)) == {"site-1", "site-2"}
    assert requests.get(guarded.url.replace("/dicom-web", "/admin/sites")).status_code == 401


def test_a_token_of_several_projects_names_one_in_the_path(keys, guarded):
    both = bearer(token(keys.rsa, projects=["lung", "liver", "not-configured"]))
    response = requests.get(f"{guarded.url}/studies", headers=both)
    assert response.status_code == 400 and "/projects/" in response.text
    response = requests.get(f"{guarded.url}/projects/liver/studies", headers=both)
    assert response.status_code == 200
    # URLs in the answer keep the project, so that following them stays in it.
    url = value(next(s for s in response.json() if value(s, "0020000D") == guarded.only_at_site_3), "00081190")
    assert url.startswith(f"{guarded.url}/projects/liver/studies/")
    assert requests.get(url, headers={**both, **ACCEPT_DICOM}).status_code == 200
    # Under both a project and a site.
    response = requests.get(f"{guarded.url}/projects/liver/sites/site-3/studies", headers=both)
    assert response.status_code == 200 and all(s[SITES]["Value"] == ["site-3"] for s in response.json())
    # A valid token that grants no project of this gateway.
    nothing = requests.get(f"{guarded.url}/studies", headers=bearer(token(keys.rsa, projects=["not-configured"])))
    assert nothing.status_code == 403 and 'error="insufficient_scope"' in nothing.headers["WWW-Authenticate"]


def test_what_a_project_does_not_grant_is_forbidden(testbed, keys, guarded):
    _, part10 = ct_instance(testbed, "ACCESS-STOW")
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part10 + b"\r\n--b--\r\n"
    headers = {**bearer(token(keys.rsa)), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    response = requests.post(f"{guarded.url}/studies", data=body, headers=headers)
    assert response.status_code == 403 and "store" in response.text
    # liver may store, but none of its sites takes instances.
    headers.update(bearer(token(keys.rsa, projects=["liver"])))
    assert requests.post(f"{guarded.url}/studies", data=body, headers=headers).status_code == 403


def test_a_large_upload_refused_before_it_is_read_gets_its_answer_not_a_reset(testbed, keys, guarded):
    """A 32 MiB STOW-RS body refused for its token (401, 403): the gateway reads the rest of it
    before answering, so the client reads the status instead of a connection reset."""
    _, part10 = ct_instance(testbed, "ACCESS-LARGE-STOW")
    filler = b"\0" * (32 << 20)
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part10 + filler + b"\r\n--b--\r\n"
    stow_type = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    for headers, status in [({}, 401), (bearer("not.a.token"), 401), (bearer(token(keys.rsa)), 403)]:
        for _ in range(3):
            response = requests.post(f"{guarded.url}/studies", data=body, headers={**stow_type, **headers}, timeout=60)
            assert response.status_code == status, (response.status_code, response.text[:200])


def test_every_bad_token_is_refused_with_401(keys, guarded):
    url = f"{guarded.url}/studies"
    missing = requests.get(url)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="dicomweb-gateway"'
    now = int(time.time())
    rsa_header = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}
    bad = {
        "expired": token(keys.rsa, exp=now - 600, iat=now - 900),
        "not yet valid": token(keys.rsa, nbf=now + 600),
        "wrong issuer": token(keys.rsa, iss="https://elsewhere.invalid"),
        "wrong audience": token(keys.rsa, aud="another-service"),
        "no expiry": token(keys.rsa, exp=None),
        "forged signature": token(keys.other_rsa),
        "unknown key": token(keys.other_rsa, kid="rsa-unknown"),
        "alg none": unsigned_token({"alg": "none", "typ": "JWT"}, claims()),
        "alg none with kid": unsigned_token({**rsa_header, "alg": "none"}, claims()),
        "HS256 with the public key as secret": unsigned_token({**rsa_header, "alg": "HS256"}, claims(), keys.rsa_public_pem()),
        "an EC signature naming the RSA key": jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "rsa-1"}),
        "no signature": unsigned_token(rsa_header, claims()),
        "truncated": token(keys.rsa)[:-10],
        "garbage": "not-a-token",
        "changed claims": ".".join([token(keys.rsa).split(".")[0], b64(json.dumps(claims(projects=["liver"])).encode()), token(keys.rsa).split(".")[2]]),
    }
    for name, value_ in bad.items():
        response = requests.get(url, headers=bearer(value_))
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="dicomweb-gateway", error="invalid_token"', name
        # Nothing that helps an attacker: one text for every reason.
        assert response.text == "a valid bearer token is required\n", name
    # Within the leeway, an expiry just past is still accepted.
    assert requests.get(url, headers=bearer(token(keys.rsa, exp=now - 5))).status_code == 200


def test_the_audit_trail_names_who_did_what_where(keys, guarded):
    lung = bearer(token(keys.rsa, sub="carol"))
    requests.get(f"{guarded.url}/studies", headers=lung)
    dave = bearer(token(keys.rsa, sub="dave", projects=["liver"]))
    requests.get(f"{guarded.url}/studies/{guarded.only_at_site_3}/series", headers=dave)
    # Retrieved by an earlier test: from the cache now, so no site is contacted.
    requests.get(f"{guarded.url}/studies/{guarded.only_at_site_3}", headers={**dave, **ACCEPT_DICOM})
    requests.get(f"{guarded.url}/studies", headers=bearer("not-a-token"))
    # Lines are written when the body ends: wait for the last.
    for _ in range(50):
        lines = [json.loads(l) for l in guarded.trail.read_text().splitlines()]
        if lines and lines[-1]["status"] == 401:
            break
        time.sleep(0.1)
    carol = [l for l in lines if l["subject"] == "carol"][-1]
    assert (carol["project"], carol["route"], carol["status"], carol["outcome"]) == ("lung", "/dicom-web/studies", 200, "complete")
    assert carol["sites"] == ["site-1", "site-2"] and carol["bytes"] > 0
    search, retrieval = [l for l in lines if l["subject"] == "dave"][-2:]
    assert search["project"] == "liver" and search["resources"] == [guarded.only_at_site_3]
    assert search["sites"] == ["dcmqrscp", "site-3"] and search["status"] == 200
    assert retrieval["route"] == "/dicom-web/studies/{study}" and retrieval["sites"] == []
    assert retrieval["bytes"] > 1000 and retrieval["outcome"] == "complete"
    refused = lines[-1]
    assert (refused["subject"], refused["project"], refused["status"], refused["sites"]) == (None, None, 401, [])
    verify = subprocess.run([BINARY, "audit", "verify", str(guarded.trail)], capture_output=True, text=True)
    assert verify.returncode == 0 and f"{len(lines)} lines, the chain is intact" in verify.stdout, verify.stdout
    # The same events as FHIR AuditEvent resources.
    events = [json.loads(l) for l in guarded.fhir_trail.read_text().splitlines()]
    assert len(events) == len(lines) and all(e["resourceType"] == "AuditEvent" for e in events)
    carol_event = events[lines.index(carol)]
    assert carol_event["type"]["code"] == "110112" and carol_event["outcome"] == "0"
    assert carol_event["agent"][0]["who"]["identifier"]["value"] == "carol"
    assert {"type": "project", "valueString": "lung"} in carol_event["entity"][-1]["detail"]
    export = events[lines.index(retrieval)]
    assert export["type"]["code"] == "110106"
    assert export["entity"][0]["what"]["identifier"]["value"] == f"urn:oid:{guarded.only_at_site_3}"
    assert (events[-1]["outcome"], events[-1]["agent"][0]["who"]["identifier"]["value"]) == ("4", "unauthenticated")


class JwksServer:
    """An identity provider's JWKS endpoint on loopback, whose keys a test changes."""

    def __init__(self, document):
        self.document = document
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def close(self):
        self.server.shutdown()


def test_keys_from_a_jwks_url_are_fetched_again_for_a_new_key_and_callers_are_limited(testbed, keys):
    provider = JwksServer(keys.jwks())
    limits = "\n[limits]\nrequests_per_second = 1\nburst = 3\n"
    process, gw = start_federation(testbed, "FEDGW2", extra=PROJECTS + limits, auth=auth_section(jwks_url=provider.url))
    try:
        assert requests.get(f"{gw.url}/studies", headers=bearer(token(keys.rsa))).status_code == 200
        # The provider rotates in a new key: a token naming it makes the gateway fetch again
        # (once the last fetch, at start, is old enough).
        time.sleep(REFETCH_AT_MOST_EVERY)
        rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        new_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rotated.public_key()))
        new_jwk.update(kid="rsa-2", use="sig")
        provider.document = keys.jwks([new_jwk])
        fetched = provider.requests
        assert requests.get(f"{gw.url}/studies", headers=bearer(token(rotated, kid="rsa-2", sub="erin"))).status_code == 200
        assert provider.requests == fetched + 1
        # Unknown keys do not make it fetch on every request.
        for _ in range(3):
            assert requests.get(f"{gw.url}/studies", headers=bearer(token(keys.other_rsa, kid="rsa-9"))).status_code == 401
        assert provider.requests == fetched + 1
        # A caller over its rate gets 429 with Retry-After; another caller is not affected.
        statuses = [requests.get(f"{gw.url}/studies", headers=bearer(token(keys.rsa, sub="frank"))).status_code for _ in range(8)]
        assert statuses[:3] == [200] * 3 and 429 in statuses[3:], statuses
        shed = requests.get(f"{gw.url}/studies", headers=bearer(token(keys.rsa, sub="frank")))
        assert shed.status_code == 429 and int(shed.headers["Retry-After"]) >= 1
        assert requests.get(f"{gw.url}/studies", headers=bearer(token(keys.rsa, sub="grace"))).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
        provider.close()


def test_projects_have_their_own_pseudonyms_and_de_identification_options(testbed, keys, tmp_path):
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    projects = """
[[projects]]
id = "plain"
sites = ["site-1"]
permissions = ["search", "retrieve"]

[[projects]]
id = "characteristics"
sites = ["site-1"]
permissions = ["search", "retrieve"]
deid_options = ["retain-patient-characteristics"]
"""
    deid = f'\n[deid]\nprofile = "basic"\nkey_file = "{tmp_path}/deid.key"\nstate_dir = "{tmp_path}/state"\n'
    process, gw = start_federation(testbed, "FEDGW2", extra=projects + deid, auth=auth_section(jwks_file=tmp_path / "jwks.json"))
    try:
        seen = {}
        for project in ("plain", "characteristics"):
            headers = bearer(token(keys.rsa, projects=[project]))
            studies = requests.get(f"{gw.url}/studies", params={"ModalitiesInStudy": "CT"}, headers=headers).json()
            ct = max(studies, key=lambda s: value(s, "00201208") or 0)
            study = value(ct, "0020000D")
            assert study != testbed["data"]["ct"]["study_uid"]
            series = requests.get(f"{gw.url}/studies/{study}/series", headers=headers).json()
            instance = requests.get(f"{gw.url}/studies/{study}/series/{value(series[0], '0020000E')}/instances", params={"limit": 1}, headers=headers).json()[0]
            metadata = requests.get(f"{gw.url}/studies/{study}/series/{value(series[0], '0020000E')}/instances/{value(instance, '00080018')}/metadata", headers=headers).json()[0]
            seen[project] = (study, value(metadata, "00100040"), value(metadata, "00100020"))
        (plain_study, plain_sex, plain_patient), (chars_study, chars_sex, chars_patient) = seen["plain"], seen["characteristics"]
        # Unlinkable across projects: other pseudonyms, which do not resolve in the other project.
        assert plain_study != chars_study and plain_patient != chars_patient
        other = bearer(token(keys.rsa, projects=["characteristics"]))
        assert requests.get(f"{gw.url}/studies/{plain_study}/metadata", headers=other).status_code == 404
        assert requests.get(f"{gw.url}/studies/{chars_study}/series", headers=other).status_code == 200
        # Each project's options: Retain Patient Characteristics keeps PatientSex (the source's "O").
        assert plain_sex is None and chars_sex == "O"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_browser_viewer_may_send_its_token_across_origins(keys, guarded):
    preflight = requests.options(
        f"{guarded.url}/studies",
        headers={
            "Origin": "http://viewer.test.invalid",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = requests.get(f"{guarded.url}/studies", headers={**bearer(token(keys.rsa)), "Origin": "http://viewer.test.invalid"})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
    refused = requests.get(f"{guarded.url}/studies", headers={"Origin": "http://viewer.test.invalid"})
    assert refused.status_code == 401
    assert "www-authenticate" in refused.headers["Access-Control-Expose-Headers"].lower()


def test_a_cached_search_answers_with_the_urls_of_the_path_it_was_asked_under(testbed, keys, tmp_path):
    """The search cache keeps answers per URL prefix: an answer kept for `/studies` (URLs
    without the project) is not the answer of `/projects/lung/studies`, nor of a site's path."""
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    process, gw = start_federation(testbed, "FEDGW2", extra=PROJECTS + '\n[cache]\nsearch_ttl = "1m"\n',
                                   auth=auth_section(jwks_file=tmp_path / "jwks.json"))
    try:
        lung = bearer(token(keys.rsa))
        for prefix in ("", "/projects/lung", "/sites/site-1", "/projects/lung/sites/site-1", ""):
            answer = requests.get(f"{gw.url}{prefix}/studies", headers=lung)
            assert answer.status_code == 200, (prefix, answer.status_code)
            urls = {value(s, "00081190") for s in answer.json()}
            assert all(url.startswith(f"{gw.url}{prefix}/studies/") for url in urls), (prefix, sorted(urls)[:2])
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_site_identities_reach_only_whom_they_are_for(testbed, keys, tmp_path):
    """De-identifying, search results name no site unless the project asks for it; site
    addresses, AE titles, the metrics and the cache's counters are for administrators
    (`auth.admin_role`), or the metrics for a listener of their own."""
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    projects = PROJECTS.replace('id = "liver"', 'id = "liver"\nshow_sites = true')
    deid = f'\n[deid]\nprofile = "basic"\nkey_file = "{tmp_path}/deid.key"\nstate_dir = "{tmp_path}/state"\n'
    auth = auth_section(jwks_file=tmp_path / "jwks.json") + 'admin_role = "gateway-admin"\n'
    process, gw = start_federation(testbed, "FEDGW2", extra=projects + deid, auth=auth)
    root = gw.url.replace("/dicom-web", "")
    lung, liver = bearer(token(keys.rsa)), bearer(token(keys.rsa, projects=["liver"]))
    admin = bearer(token(keys.rsa, projects=[], roles=["auditor", "gateway-admin"]))
    try:
        studies = requests.get(f"{gw.url}/studies", headers=lung)
        assert studies.status_code == 200 and all(SITES not in s and "00090010" not in s for s in studies.json())
        assert all(SITES in s for s in requests.get(f"{gw.url}/studies", headers=liver).json()), "shown on request"
        for headers, shown in ((lung, False), (admin, True)):
            sites = requests.get(f"{root}/admin/sites", headers=headers).json()["sites"]
            assert sites and all(("address" in s and "ae_title" in s) == shown for s in sites), sites
            text = json.dumps(sites)
            assert shown or not any(f":{s['dicom_port']}" in text for s in testbed["sites"])
        assert len(requests.get(f"{root}/admin/sites", headers=admin).json()["sites"]) == len(testbed["sites"])
        for path in ("/metrics", "/admin/cache"):
            assert requests.get(root + path).status_code == 401, path
            assert requests.get(root + path, headers=lung).status_code == 403, path
            assert requests.get(root + path, headers=admin).status_code == 200, path
        assert 'site="site-1"' in requests.get(f"{root}/metrics", headers=admin).text
    finally:
        process.terminate()
        process.wait(timeout=10)
    # The metrics on a listener of their own (for a scraper on the operators' network): not on
    # the API's.
    metrics_port = free_port()
    process, gw = start_federation(testbed, "FEDGW2", extra=projects, auth=auth,
                                   server=f'metrics_listen = "127.0.0.1:{metrics_port}"')
    try:
        root = gw.url.replace("/dicom-web", "")
        assert requests.get(f"{root}/metrics", headers=admin).status_code == 404
        assert requests.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
