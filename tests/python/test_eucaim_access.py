"""Access as EUCAIM grants it (docs/ACCESS.md, docs/EUCAIM.md): tokens of two identity
providers (a node's Keycloak, whose flat `groups` claim names projects as `PROJECT-<p>`, and
another with a `projects` claim), each checked with its own keys; projects granted to a subject
until a time (`[[grants]]`); and EUCAIM's three access conditions, each refusing what it must on
the test bed's real site: download (everything), in situ (viewing: no instance or bulk data
taken away), remote processing (nothing but to its service clients)."""

import json

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import free_port, launch, stop

NODE = "https://keycloak.node.test/realms/eucaim"
OTHER = "https://aai.lifescience.test"
AUDIENCE = "dicomweb-gateway"
ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


class Provider:
    """An identity provider of the test: its key, in a JWKS file, and the tokens it signs."""

    def __init__(self, issuer, tmp, name):
        self.issuer = issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=f"{name}-1", use="sig")
        self.jwks = tmp / f"{name}-jwks.json"
        self.jwks.write_text(json.dumps({"keys": [jwk]}))
        self.kid = f"{name}-1"

    def token(self, sub, issuer=None, **claims):
        import time

        now = int(time.time())
        body = {"iss": issuer or self.issuer, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def gateway(testbed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eucaim-access")
    node, other = Provider(NODE, tmp, "node"), Provider(OTHER, tmp, "other")
    site = next(s for s in testbed["sites"] if s["id"] == "site-1")
    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"

[dimse]
ae_title = "ACCESSGW"
listen = "127.0.0.1:{free_port()}"

[[sites]]
id = "site-1"
ae_title = "{site['ae_title']}"
address = "127.0.0.1:{site['dicom_port']}"
retrieve = "c-get"
timeout = "10s"

[auth]
mode = "jwt"
issuer = "{NODE}"
audience = "{AUDIENCE}"
jwks_file = "{node.jwks}"
projects_claim = "groups"
project_pattern = "PROJECT-{{project}}"

[[auth.issuers]]
issuer = "{OTHER}"
audience = "{AUDIENCE}"
jwks_file = "{other.jwks}"
projects_claim = "projects"

[audit]
path = "{tmp}/audit.jsonl"

[[projects]]
id = "download"
sites = ["site-1"]
permissions = ["search", "retrieve"]
access = "download"

[[projects]]
id = "view"
sites = ["site-1"]
permissions = ["search", "retrieve"]
access = "in-situ"

[[projects]]
id = "fem"
sites = ["site-1"]
permissions = ["search", "retrieve"]
access = "remote-processing"
service_clients = ["fem-runner"]

[[grants]]
subject = "carol"
issuer = "{OTHER}"
project = "download"
until = "2099-01-01"

[[grants]]
subject = "dave"
project = "download"
until = "2020-01-01"
"""
    process = launch(config, port)
    yield {"url": f"http://127.0.0.1:{port}/dicom-web", "node": node, "other": other, "tmp": tmp}
    stop(process)


def get(gateway, path, token, headers=None):
    return requests.get(
        gateway["url"] + path, headers={"Authorization": f"Bearer {token}", **(headers or {})}, timeout=60
    )


def the_ct(gateway, testbed):
    """The test bed's CT: its study, a series and an instance."""
    token = gateway["other"].token("bob", projects=["download"])
    study = testbed["data"]["ct"]["study_uid"]
    instance = get(gateway, f"/studies/{study}/instances", token, {"Accept": "application/dicom+json"}).json()[0]
    return study, instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0]


def test_download_gives_everything_to_a_token_of_either_provider(gateway, testbed):
    study, series, sop = the_ct(gateway, testbed)
    for token in (gateway["node"].token("alice", groups=["/PROJECT-download"]),
                  gateway["other"].token("bob", projects=["download"])):
        assert get(gateway, "/studies", token).status_code == 200
        instance = get(gateway, f"/studies/{study}/series/{series}/instances/{sop}", token, ACCEPT_DICOM)
        assert instance.status_code == 200 and b"DICM" in instance.content


def test_in_situ_shows_what_a_viewer_draws_and_hands_out_no_instance(gateway, testbed):
    study, series, sop = the_ct(gateway, testbed)
    token = gateway["node"].token("alice", groups=["PROJECT-view", "some-other-group"])
    instance = f"/studies/{study}/series/{series}/instances/{sop}"
    viewed = [
        ("/studies", {}),
        (f"/studies/{study}/metadata", {}),
        (f"{instance}/frames/1", {"Accept": 'multipart/related; type="application/octet-stream"'}),
        (f"{instance}/rendered", {"Accept": "image/jpeg"}),
        (f"/studies/{study}/thumbnail", {"Accept": "image/jpeg"}),
    ]
    for path, headers in viewed:
        assert get(gateway, path, token, headers).status_code == 200, path
    for path in (f"/studies/{study}", f"/studies/{study}/series/{series}", instance, f"{instance}/bulkdata/7FE00010"):
        refused = get(gateway, path, token, ACCEPT_DICOM)
        assert refused.status_code == 403 and "in situ" in refused.text, path


def test_remote_processing_gives_nothing_to_people_and_everything_to_its_service(gateway, testbed):
    study, series, sop = the_ct(gateway, testbed)
    person = gateway["node"].token("alice", groups=["PROJECT-fem"])
    for path in ("/studies", f"/studies/{study}/metadata", f"/studies/{study}/series/{series}/instances/{sop}"):
        refused = get(gateway, path, person, ACCEPT_DICOM if path.endswith(sop) else None)
        assert refused.status_code == 403 and "remote processing" in refused.text, path
    # The service: by its subject, or as the client its token was issued to.
    for service in (gateway["node"].token("fem-runner", groups=["PROJECT-fem"]),
                    gateway["node"].token("service-account-7", azp="fem-runner", groups=["PROJECT-fem"])):
        assert get(gateway, "/studies", service).status_code == 200
        got = get(gateway, f"/studies/{study}/series/{series}/instances/{sop}", service, ACCEPT_DICOM)
        assert got.status_code == 200


def test_a_grant_gives_its_project_until_its_time(gateway):
    # carol's token names no project; her grant (of the other provider's tokens) gives one.
    carol = gateway["other"].token("carol", projects=[])
    assert get(gateway, "/studies", carol).status_code == 200
    # The same subject from the node's provider is another person: the grant names an issuer.
    assert get(gateway, "/studies", gateway["node"].token("carol", groups=[])).status_code == 403
    # dave's grant has ended.
    assert get(gateway, "/studies", gateway["other"].token("dave", projects=[])).status_code == 403


def test_each_providers_tokens_are_checked_with_its_own_keys(gateway):
    # Signed by the node's key, claiming the other provider: refused.
    forged = gateway["node"].token("mallory", issuer=OTHER, projects=["download"])
    assert get(gateway, "/studies", forged).status_code == 401
    unknown = gateway["node"].token("mallory", issuer="https://unknown.test", groups=["PROJECT-download"])
    assert get(gateway, "/studies", unknown).status_code == 401
    # A group that is not a project's: no project.
    assert get(gateway, "/studies", gateway["node"].token("eve", groups=["download", "/PROJECT-"])).status_code == 403


def test_every_refusal_and_grant_is_audited_with_its_project(gateway, testbed):
    study, _, _ = the_ct(gateway, testbed)
    token = gateway["node"].token("audited-viewer", groups=["PROJECT-view"])
    assert get(gateway, f"/studies/{study}", token, ACCEPT_DICOM).status_code == 403
    lines = [json.loads(line) for line in (gateway["tmp"] / "audit.jsonl").read_text().splitlines()]
    mine = [line for line in lines if line["subject"] == "audited-viewer"]
    assert mine and (mine[-1]["project"], mine[-1]["status"]) == ("view", 403)
