"""HTTPS end to end with real clients (curl, dicomweb-client over requests): certificates from a
throw-away CA made by the test, TLS versions, HTTP/2, client certificates, and a certificate
reloaded on SIGHUP."""

import datetime
import ipaddress
import signal
import subprocess
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import add_certs_to_session, create_session

from conftest import OrthancProcess, start_federation
from test_federation import ct_instance

ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


class Authority:
    """A CA of the test's own that issues server and client certificates into `directory`."""

    def __init__(self, directory, name):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self.builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def builder(subject, issuer, public_key):
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, name, server):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self.builder(subject, self.cert.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return cert_path, key_path


def curl(*args):
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def https(testbed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("https")
    ca = Authority(tmp, "test-ca")
    cert, key = ca.issue("gateway", server=True)
    process, gw = start_federation(testbed, "FEDGW1", server=f'tls = {{ cert = "{cert}", key = "{key}" }}', verify=str(ca.path))
    gw.ca, gw.process, gw.tmp, gw.cert, gw.key = ca, process, tmp, cert, key
    yield gw
    process.terminate()
    process.wait(timeout=10)


def test_real_clients_speak_to_the_gateway_over_tls(https):
    assert https.url.startswith("https://")
    result = curl("--cacert", str(https.ca.path), f"{https.url}/studies")
    assert result.stdout == "200 2", result.stderr
    result = curl("--cacert", str(https.ca.path), "--http1.1", "--tlsv1.2", "--tls-max", "1.2", f"{https.url}/studies")
    assert result.stdout == "200 1.1", result.stderr
    # TLS 1.1 and below are refused, as is a client that does not trust the CA.
    assert curl("--cacert", str(https.ca.path), "--tlsv1.0", "--tls-max", "1.1", f"{https.url}/studies").returncode != 0
    assert curl(f"{https.url}/studies").returncode != 0
    # Plain HTTP to the HTTPS port gets no answer.
    assert curl(https.url.replace("https://", "http://") + "/studies").stdout.split()[0] != "200"
    # The reference Python client, trusting the test CA.
    session = add_certs_to_session(create_session(), ca_bundle=str(https.ca.path))
    # REQUESTS_CA_BUNDLE in the environment would override the session's CA file.
    session.trust_env = False
    client = DICOMwebClient(https.url, session=session)
    studies = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    assert studies
    study = studies[0]["0020000D"]["Value"][0]
    assert client.retrieve_study_metadata(study)


def test_the_certificate_is_reloaded_on_sighup(https):
    new_ca = Authority(https.tmp, "next-ca")
    cert, key = new_ca.issue("gateway-next", server=True)
    https.cert.write_bytes(cert.read_bytes())
    https.key.write_bytes(key.read_bytes())
    https.process.send_signal(signal.SIGHUP)
    for _ in range(50):
        if curl("--cacert", str(new_ca.path), f"{https.url}/studies").stdout.startswith("200"):
            break
        time.sleep(0.1)
    assert curl("--cacert", str(new_ca.path), f"{https.url}/studies").stdout.startswith("200")
    assert curl("--cacert", str(https.ca.path), f"{https.url}/studies").returncode != 0
    # A reload that fails keeps the certificate in use.
    https.key.write_text("not a key")
    https.process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert https.process.poll() is None
    assert curl("--cacert", str(new_ca.path), f"{https.url}/studies").stdout.startswith("200")


def test_client_certificates_are_required_when_configured(testbed, tmp_path):
    ca = Authority(tmp_path, "test-ca")
    cert, key = ca.issue("gateway", server=True)
    client_cert, client_key = ca.issue("viewer", server=False)
    stranger = Authority(tmp_path, "stranger-ca")
    stranger_cert, stranger_key = stranger.issue("stranger", server=False)
    tls = f'tls = {{ cert = "{cert}", key = "{key}", client_ca = "{ca.path}" }}'
    process, gw = start_federation(
        testbed, "FEDGW2", server=tls, verify=str(ca.path), client_cert=(str(client_cert), str(client_key))
    )
    try:
        url = f"{gw.url}/studies"
        assert curl("--cacert", str(ca.path), "--cert", str(client_cert), "--key", str(client_key), url).stdout.startswith("200")
        assert curl("--cacert", str(ca.path), url).stdout.startswith("000")
        assert curl("--cacert", str(ca.path), "--cert", str(stranger_cert), "--key", str(stranger_key), url).stdout.startswith("000")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_sites_are_reached_over_dicom_tls_with_the_ca_pinned(testbed, tmp_path):
    """PS3.15 Annex B through the gateway's configuration: an Orthanc that speaks DICOM over TLS
    only and requires a client certificate; the gateway trusts the site's CA alone."""
    ca = Authority(tmp_path, "site-ca")
    site_cert, site_key = ca.issue("orthanc-tls", server=True)
    gateway_cert, gateway_key = ca.issue("FEDGW", server=False)
    stranger = Authority(tmp_path, "stranger-ca")
    (tmp_path / "orthanc").mkdir()
    site = OrthancProcess(tmp_path / "orthanc", "TLSSITE", tls=(site_cert, site_key, ca.path))
    try:
        ds, part10 = ct_instance(testbed, "DICOM-TLS")
        assert requests.post(f"{site.rest}/instances", data=part10).ok
        for trusted, expected in ((ca.path, 200), (stranger.path, 502)):
            site_toml = site.site_toml("tls-site", timeout="5s") + (
                f'tls = {{ ca = "{trusted}", cert = "{gateway_cert}", key = "{gateway_key}" }}\n'
            )
            process, gw = start_federation(testbed, "FEDGW2", extra_sites=site_toml)
            try:
                found = requests.get(f"{gw.url}/sites/tls-site/studies", params={"PatientID": "DICOM-TLS"})
                assert found.status_code == expected, found.text
                if expected == 200:
                    assert [s["0020000D"]["Value"][0] for s in found.json()] == [ds.StudyInstanceUID]
                    retrieved = requests.get(f"{gw.url}/studies/{ds.StudyInstanceUID}", headers=ACCEPT_DICOM)
                    assert retrieved.status_code == 200 and ds.SOPInstanceUID.encode() in retrieved.content
            finally:
                process.terminate()
                process.wait(timeout=10)
    finally:
        site.stop()
