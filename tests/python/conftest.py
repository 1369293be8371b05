"""Fixtures: the test bed's description and a dicomweb-gateway serving each of its sites.

The test bed (real Orthanc and dcmqrscp sites) is started by scripts/test.sh and described in
the file TESTBED_INFO names; these tests fail loudly without it.
"""

import contextlib
import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def testbed():
    path = os.environ.get("TESTBED_INFO")
    if not path:
        pytest.fail("TESTBED_INFO is not set: run these tests through scripts/test.sh, which starts the test bed")
    with open(path) as f:
        return json.load(f)


def pacs_activity():
    """When each Orthanc site of the test bed last answered a C-FIND, C-GET or C-MOVE, by its own
    Prometheus metrics (each sample carries the time it was last updated): what the PACS saw,
    not what the gateway counted. dcmqrscp has no such figures and is left out."""
    with open(os.environ["TESTBED_INFO"]) as f:
        sites = [s for s in json.load(f)["sites"] if s["kind"] == "orthanc"]
    seen = {}
    for site in sites:
        answer = requests.get(f"{site['http_url']}/tools/metrics-prometheus", timeout=10)
        text = answer.text
        # Without Orthanc's metrics every comparison of these would pass: refuse to go on.
        assert answer.ok and "orthanc_count_instances" in text, f"{site['id']} reports no metrics"
        samples = dict(line.split()[0::2] for line in text.splitlines() if len(line.split()) == 3)
        seen[site["id"]] = tuple(samples.get(f"orthanc_{kind}_scp_duration_ms") for kind in ("find", "get", "move"))
    return seen


def reserved_ports():
    """The test bed's ports: its sites' and the C-MOVE destinations' (FEDGW1..), which the
    gateways of the tests listen on only while they run, so the kernel may offer them as free
    in between."""
    path = os.environ.get("TESTBED_INFO")
    if not path or not os.path.exists(path):
        return set()
    with open(path) as f:
        info = json.load(f)
    ports = {d["port"] for d in info.get("move_destinations", [])}
    for site in info.get("sites", []):
        ports.add(site.get("dicom_port"))
        url = site.get("http_url") or ""
        if url.rsplit(":", 1)[-1].isdigit():
            ports.add(int(url.rsplit(":", 1)[-1]))
    return ports


def free_port():
    """A loopback port free now, never one the test bed holds for a destination or a site."""
    reserved = reserved_ports()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in reserved:
            return port


class Gateway:
    def __init__(self, url, site):
        self.url = url
        self.site = site


def launch(config, port, scheme="http", verify=True, client_cert=None, args=(), host_names=None):
    """Starts `dicomweb-gateway [args] serve` with `config` (TOML text) and waits for it on
    `port` (`scheme` https: `verify` is the CA file that signed its certificate, `client_cert`
    the (certificate, key) files to present; `host_names`: names the gateway resolves, by name to
    a loopback address, through an /etc/hosts of its own in a mount namespace, so the machine's
    is left as it is). Its stdout and stderr go to `process.log_path`."""
    config_file = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config_file.write(config)
    config_file.close()
    binary = ROOT / "target" / "debug" / "dicomweb-gateway"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build the workspace first")
    log = open(config_file.name + ".log", "w")
    command = [str(binary), *args, "serve", "--config", config_file.name]
    if host_names:
        hosts = pathlib.Path(config_file.name + ".hosts")
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in host_names.items()))
        # The shell execs the gateway: the process waited for and stopped is the gateway.
        command = ["unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts && exec {shlex.join(command)}"]
    process = subprocess.Popen(command, stdout=log, stderr=log)
    process.log_path = log.name
    for _ in range(200):
        try:
            if requests.get(f"{scheme}://127.0.0.1:{port}/healthz", timeout=1, verify=verify, cert=client_cert).ok:
                return process
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            pytest.fail(f"the gateway exited: see {log.name}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("the gateway did not come up")


@contextlib.contextmanager
def dimse_archive(ae_title, files, timeout="10s", options=(), site_id="archive"):
    """A pynetdicom archive of `files` (dimse_archive.py, with its `options`) on a port of its
    own, for as long as the block runs; yields the [[sites]] TOML of a site `site_id` reached by
    C-GET."""
    port = free_port()
    archive = subprocess.Popen([sys.executable, str(ROOT / "tests" / "python" / "dimse_archive.py"), "--ae", ae_title,
                                "--port", str(port), *options, *map(str, files)], stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if archive.poll() is not None:
                    pytest.fail(f"the archive exited: {archive.stderr.read().decode()[-2000:]}")
                time.sleep(0.05)
        else:
            pytest.fail("the archive did not start")
        yield (f'\n[[sites]]\nid = "{site_id}"\nae_title = "{ae_title}"\naddress = "127.0.0.1:{port}"\n'
               f'retrieve = "c-get"\ntimeout = "{timeout}"\n')
    finally:
        archive.terminate()
        archive.wait(timeout=10)


def stop(process):
    """Stops a gateway started by `launch` (SIGTERM: it finishes what is in flight)."""
    process.terminate()
    process.wait(timeout=10)


def start_gateway(testbed, site_id, retrieve, destination, store=False, stow_limit="2GiB"):
    site = next(s for s in testbed["sites"] if s["id"] == site_id)
    dest = next(d for d in testbed["move_destinations"] if d["ae_title"] == destination)
    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/dicom-web"
stow_limit = "{stow_limit}"

[dimse]
ae_title = "{dest['ae_title']}"
listen = "127.0.0.1:{dest['port']}"

[[sites]]
id = "{site['id']}"
ae_title = "{site['ae_title']}"
address = "127.0.0.1:{site['dicom_port']}"
retrieve = "{retrieve}"
timeout = "20s"
store = {"true" if store else "false"}

[auth]
mode = "none"
"""
    process = launch(config, port)
    return process, Gateway(f"http://127.0.0.1:{port}/dicom-web", site)


@pytest.fixture(scope="session", params=[("site-1", "c-get", "FEDGW6"), ("dcmqrscp", "c-move", "FEDGW7")], ids=["orthanc-c-get", "dcmqrscp-c-move"])
def gateway(request, testbed):
    process, gw = start_gateway(testbed, *request.param)
    yield gw
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def orthanc_gateway(testbed):
    process, gw = start_gateway(testbed, "site-1", "c-get", "FEDGW4")
    yield gw
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def storing_gateway(testbed):
    """A gateway in front of Orthanc site-2 that takes STOW-RS, with a 64 MiB body limit."""
    process, gw = start_gateway(testbed, "site-2", "c-get", "FEDGW8", store=True, stow_limit="64MiB")
    yield gw
    process.terminate()
    process.wait(timeout=10)


def start_federation(testbed, destination, extra_sites="", extra="", auth='[auth]\nmode = "none"\n', server="", verify=True, client_cert=None, site_keys=None, args=(), site_hosts=None, host_names=None):
    """A gateway over every site of the test bed (Orthanc by C-GET, dcmqrscp by C-MOVE; more
    keys of a site from `site_keys`, a dict by site id), plus `extra_sites` (TOML), in
    configuration order, `auth` (the [auth] section), `extra` (more
    TOML sections; without a [cache] section, QIDO answers are not reused) and `server` (more
    keys of [server]; with `tls`, served over HTTPS, checked against `verify`, the CA file,
    presenting `client_cert`; `site_hosts`: a host other than 127.0.0.1 to reach a site at, by
    site id, a loopback address or a name of `host_names`, see `launch`)."""
    dest = next(d for d in testbed["move_destinations"] if d["ae_title"] == destination)
    port = free_port()
    scheme = "https" if "tls" in server else "http"
    sites = ""
    for site in testbed["sites"]:
        retrieve = "c-move" if site["kind"] == "dcmqrscp" else "c-get"
        sites += f"""
[[sites]]
id = "{site['id']}"
ae_title = "{site['ae_title']}"
address = "{(site_hosts or {}).get(site['id'], '127.0.0.1')}:{site['dicom_port']}"
retrieve = "{retrieve}"
timeout = "3s"
store = {"true" if site["id"] == "site-2" else "false"}
{(site_keys or {}).get(site["id"], "")}
"""
    if "[cache]" not in extra:
        # Searches go to the sites every time, unless a test says otherwise.
        extra += '\n[cache]\nsearch_ttl = "0s"\n'
    config = f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "{scheme}://127.0.0.1:{port}/dicom-web"
{server}
[dimse]
ae_title = "{dest['ae_title']}"
listen = "127.0.0.1:{dest['port']}"
{sites}{extra_sites}
{auth}
{extra}
"""
    process = launch(config, port, scheme, verify, client_cert, args, host_names)
    return process, Gateway(f"{scheme}://127.0.0.1:{port}/dicom-web", None)


@pytest.fixture(scope="session")
def federation(testbed):
    process, gw = start_federation(testbed, "FEDGW3")
    yield gw
    process.terminate()
    process.wait(timeout=10)


class OrthancProcess:
    """An Orthanc of a test's own (DICOM and REST on loopback, storage under `directory`), that
    the test may stop and start again with the same data."""

    def __init__(self, directory, ae_title, tls=None, known=None):
        """`tls`: DICOM TLS as (certificate, private key, trusted CA) files; client
        certificates are then required. `known`: configured as hospitals do, this Orthanc
        answers only the modalities named here (Orthanc's `DicomModalities` entries, checked by
        calling AE title and host) and only when called by its own AE title."""
        self.directory = pathlib.Path(directory)
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = self.directory / "orthanc.json"
        tls_config = {}
        if tls:
            tls_config = {
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": str(tls[0]),
                "DicomTlsPrivateKey": str(tls[1]),
                "DicomTlsTrustedCertificates": str(tls[2]),
                "DicomTlsRemoteCertificateRequired": True,
            }
        self.config.write_text(json.dumps({
            "Name": ae_title,
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "storage"),
            "DicomAet": ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": known is not None,
            "DicomAlwaysAllowEcho": known is None,
            "DicomAlwaysAllowFind": known is None,
            "DicomAlwaysAllowGet": known is None,
            "DicomAlwaysAllowMove": known is None,
            "DicomAlwaysAllowStore": known is None,
            "DicomCheckModalityHost": known is not None,
            "DicomModalities": known or {},
            "DicomScpTimeout": 30,
            "StorageCompression": False,
            "Plugins": [],
            **tls_config,
        }))
        self.process = None
        self.start()

    def start(self):
        binary = "/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else "Orthanc"
        log = open(self.directory / "orthanc.log", "a")
        self.process = subprocess.Popen([binary, str(self.config)], stdout=log, stderr=log)
        for _ in range(300):
            try:
                if requests.get(f"{self.rest}/system", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                pytest.fail(f"Orthanc exited: see {self.directory / 'orthanc.log'}")
            time.sleep(0.1)
        pytest.fail("Orthanc did not come up")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    @property
    def rest(self):
        return f"http://127.0.0.1:{self.http_port}"

    def site_toml(self, site_id, timeout="2s"):
        return f"""
[[sites]]
id = "{site_id}"
ae_title = "{self.ae_title}"
address = "127.0.0.1:{self.dicom_port}"
retrieve = "c-get"
timeout = "{timeout}"
"""
