"""Two gateway replicas sharing the pseudonym map through a real PostgreSQL, behind a real
HAProxy using examples/haproxy.cfg (docs/REPLICAS.md): a search through one replica is retrieved
through the other and through the balancer with the same pseudonymous UIDs; a replica killed
mid-run leaves the balancer on the other with no wrong answer; with the database stopped, what a
replica has seen still resolves and the rest gets 503 with Retry-After. Also the map's export
from the embedded store and import into PostgreSQL."""

import glob
import io
import json
import os
import pathlib
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pydicom
import pytest
import requests

from conftest import ROOT, free_port, launch, stop

BINARY = ROOT / "target" / "debug" / "dicomweb-gateway"
PASSWORD = "replica-test-s3cret"


def postgres_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is missing (Debian package postgresql): run scripts/install-deps.sh")
    return pathlib.Path(found[-1]).parent


class PostgresCluster:
    """A throwaway cluster in a temporary directory on 127.0.0.1 (run as the `postgres` user when
    the tests run as root), with password authentication and a database `gateway`."""

    def __init__(self):
        self.bin = postgres_bin()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pg-replicas-"))
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        password_file = self.dir / "pw"
        password_file.write_text(PASSWORD + "\n")
        if self.as_user:
            os.chown(password_file, user.pw_uid, user.pw_gid)
        self.run("initdb", "-D", str(self.dir / "data"), "-U", "gw", "--auth=scram-sha-256", f"--pwfile={password_file}")
        self.start()
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "gw", "-d", "postgres",
                        "-qc", "CREATE DATABASE gateway"], check=True, env=env, capture_output=True)
        self.url = f"postgres://gw:{PASSWORD}@127.0.0.1:{self.port}/gateway"

    def run(self, tool, *args):
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, cwd=self.dir)

    def start(self):
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir}"
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self):
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def sql(self, query):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        out = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "gw", "-d", "gateway",
                              "-Atc", query], check=True, env=env, capture_output=True, text=True)
        return out.stdout.strip()

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    cluster = PostgresCluster()
    yield cluster
    cluster.remove()


def replica_config(testbed, port, directory, replica_id, store_url):
    """A gateway over the test bed's Orthanc sites (C-GET), de-identifying, with the shared
    secret and the map in PostgreSQL (or the embedded one in its own state_dir)."""
    sites = ""
    for site in testbed["sites"]:
        if site["kind"] == "dcmqrscp":
            continue
        sites += f"""
[[sites]]
id = "{site['id']}"
ae_title = "{site['ae_title']}"
address = "127.0.0.1:{site['dicom_port']}"
retrieve = "c-get"
timeout = "5s"
"""
    store = f'store = "{store_url}"\n' if store_url else ""
    return f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/dicom-web"
replica_id = "{replica_id}"

[dimse]
ae_title = "{replica_id.upper().replace('-', '')[:16]}"
listen = "127.0.0.1:{free_port()}"
{sites}
[deid]
profile = "basic"
key_file = "{directory}/deid.key"
state_dir = "{directory}/state-{replica_id}"
{store}
[auth]
mode = "none"

[cache]
search_ttl = "0s"

[audit]
path = "{directory}/audit-{replica_id}.jsonl"
"""


def start_replica(testbed, directory, replica_id, store_url):
    port = free_port()
    process = launch(replica_config(testbed, port, directory, replica_id, store_url), port)
    return process, f"http://127.0.0.1:{port}"


def start_haproxy(ports, directory):
    """HAProxy with examples/haproxy.cfg, its ports replaced by the test's."""
    text = (ROOT / "examples" / "haproxy.cfg").read_text()
    front = free_port()
    for example, real in [(8080, front), *zip((8081, 8082), ports)]:
        assert f"127.0.0.1:{example}" in text
        text = text.replace(f"127.0.0.1:{example}", f"127.0.0.1:{real}")
    config = pathlib.Path(directory) / "haproxy.cfg"
    config.write_text(text)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(haproxy):
        pytest.fail("HAProxy is missing (Debian package haproxy): run scripts/install-deps.sh")
    subprocess.run([haproxy, "-c", "-q", "-f", str(config)], check=True)
    log = open(pathlib.Path(directory) / "haproxy.log", "w")
    process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{front}"
    for _ in range(100):
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail("HAProxy did not come up")


def instances_of(response):
    """The SOP Instance UIDs of a complete multipart/related response; raises on a cut-off or
    malformed body (never returns part of one)."""
    match = re.search(r'boundary="?([^";]+)"?', response.headers.get("Content-Type", ""))
    assert match, f"not multipart: {response.headers.get('Content-Type')}"
    boundary = b"--" + match.group(1).encode()
    body = response.content
    assert body.rstrip().endswith(boundary + b"--"), "the multipart body does not end with its closing boundary"
    uids = []
    for part in body.split(boundary)[1:-1]:
        _, _, payload = part.partition(b"\r\n\r\n")
        uids.append(pydicom.dcmread(io.BytesIO(payload[:-2])).SOPInstanceUID)
    return sorted(uids)


def qido(base, path):
    response = requests.get(f"{base}/dicom-web/{path}", timeout=60)
    assert response.status_code == 200, (path, response.status_code, response.text[:200])
    return response.json()


def tree(base):
    """Every study, series and instance a search through `base` returns, in pseudonyms."""
    out = {}
    for study in qido(base, "studies"):
        study_uid = study["0020000D"]["Value"][0]
        out[study_uid] = {}
        for series in qido(base, f"studies/{study_uid}/series"):
            series_uid = series["0020000E"]["Value"][0]
            out[study_uid][series_uid] = sorted(
                i["00080018"]["Value"][0] for i in qido(base, f"studies/{study_uid}/series/{series_uid}/instances")
            )
    return out


ACCEPT = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def wado(base, path):
    """(status, SOP Instance UIDs): 200 with every instance not withheld, 403 when the
    de-identification withholds them all (burned-in annotation), or "cut" when the gateway
    ended the body early because the site failed part of the retrieval (a test-bed study holds
    an instance Orthanc cannot send by C-GET; through HAProxy that may be its 502): a failure
    the client sees as one."""
    try:
        response = requests.get(f"{base}/dicom-web/{path}", headers=ACCEPT, timeout=120)
        if response.status_code == 502 and "invalid or incomplete response" in response.text:
            return "cut", []  # HAProxy's word for a body the replica ended early
        assert response.status_code in (200, 403), (path, response.status_code, response.text[:200])
        if response.status_code == 403:
            assert "withheld" in response.text
            return 403, []
        body = response.content
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return "cut", []
    if not body.rstrip().endswith(b"--"):
        return "cut", []
    return 200, instances_of(response)


@pytest.fixture(scope="module")
def replicas(testbed, postgres):
    directory = tempfile.mkdtemp(prefix="replicas-")
    a, a_url = start_replica(testbed, directory, "replica-a", postgres.url)
    b, b_url = start_replica(testbed, directory, "replica-b", postgres.url)
    balancer, balancer_url = start_haproxy([int(a_url.rsplit(":", 1)[1]), int(b_url.rsplit(":", 1)[1])], directory)
    state = {"a": a, "b": b, "a_url": a_url, "b_url": b_url, "balancer_url": balancer_url, "dir": directory}
    yield state
    balancer.terminate()
    balancer.wait(timeout=10)
    for name in ("a", "b"):
        if state[name].poll() is None:
            stop(state[name])
    shutil.rmtree(directory, ignore_errors=True)


def test_a_search_on_one_replica_is_retrieved_on_the_other_and_through_the_balancer(replicas, postgres):
    seen = tree(replicas["a_url"])
    assert seen and all(seen.values()), f"the test bed's sites hold studies with series: {seen}"
    assert int(postgres.sql("SELECT count(*) FROM pseudonyms")) >= sum(1 + len(s) for s in seen.values())
    assert postgres.sql("SELECT version FROM dicomweb_gateway_schema") == "1"
    retrieved = 0
    for study_uid, series in seen.items():
        everything = sorted(uid for instances in series.values() for uid in instances)
        paths = [f"studies/{study_uid}"]
        for series_uid, instances in series.items():
            paths.append(f"studies/{study_uid}/series/{series_uid}")
            paths.append(f"studies/{study_uid}/series/{series_uid}/instances/{instances[0]}")
        for path in paths:
            # Replica B never saw these pseudonyms: it resolves them through PostgreSQL.
            status, uids = wado(replicas["b_url"], path)
            assert set(uids) <= set(everything), path
            assert wado(replicas["balancer_url"], path) == (status, uids), path
            assert wado(replicas["a_url"], path) == (status, uids), path
            retrieved += len(uids)
    assert retrieved, "some instances are not withheld"
    # The same pseudonyms whichever replica answers the search.
    assert tree(replicas["b_url"]) == seen
    assert tree(replicas["balancer_url"]) == seen
    for name in ("a", "b"):
        log = pathlib.Path(replicas[name].log_path).read_text()
        assert PASSWORD not in log and "postgres://gw:***@127.0.0.1" in log, log[-2000:]
        lines = [json.loads(line) for line in (pathlib.Path(replicas["dir"]) / f"audit-replica-{name}.jsonl").read_text().splitlines()]
        assert lines and all(line["replica"] == f"replica-{name}" for line in lines)


def test_a_replica_killed_mid_run_leaves_the_balancer_on_the_other_with_no_wrong_answer(replicas):
    seen = tree(replicas["balancer_url"])
    expected = {}
    for study_uid, series in seen.items():
        for series_uid in series:
            path = f"studies/{study_uid}/series/{series_uid}"
            status, instances = wado(replicas["b_url"], path)
            if status == 200:
                expected[path] = instances
    assert expected
    answers, failures = [], []
    stop_flag = threading.Event()

    def client():
        # A client that retries a GET whose body was cut off (the documented client behaviour);
        # every response it takes as data is checked in full.
        while not stop_flag.is_set():
            for path, instances in expected.items():
                try:
                    response = requests.get(f"{replicas['balancer_url']}/dicom-web/{path}", headers=ACCEPT, timeout=60)
                except requests.RequestException as e:
                    failures.append(("cut", path, type(e).__name__))
                    continue
                if response.status_code != 200:
                    # An error status is a clean failure (HAProxy's 502 for a response cut before
                    # its headers); anything else is wrong.
                    failures.append(("status" if response.status_code in (502, 503) else "wrong", path, response.status_code))
                    continue
                try:
                    got = instances_of(response)
                except (AssertionError, Exception) as e:  # a cut-off body: never taken as data
                    failures.append(("incomplete", path, str(e)[:80]))
                    continue
                answers.append((path, got == instances))

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(2)
    replicas["a"].kill()
    replicas["a"].wait(timeout=10)
    time.sleep(4)
    stop_flag.set()
    thread.join(timeout=120)
    assert answers, f"no answer at all: {failures}"
    assert all(ok for _, ok in answers), [p for p, ok in answers if not ok]
    # Only connection-level cuts, incomplete bodies or a 502/503 are allowed, never an error body as data,
    # and the balancer answers after the kill.
    assert all(f[0] in ("cut", "incomplete", "status") for f in failures), failures
    for path, instances in expected.items():
        assert wado(replicas["balancer_url"], path) == (200, instances)


def test_with_the_database_stopped_known_pseudonyms_resolve_and_unknown_ones_get_503(replicas, postgres):
    b = replicas["b_url"]
    seen = tree(b)
    study_uid = next(iter(seen))
    series_uid, instances = next(iter(seen[study_uid].items()))
    postgres.stop()
    try:
        # Known to replica B: searched there, so held in its memory.
        status, uids = wado(b, f"studies/{study_uid}/series/{series_uid}/instances/{instances[0]}")
        assert (status, uids) in ((200, [instances[0]]), (403, [])), (status, uids)
        assert qido(b, f"studies/{study_uid}/series")
        unknown = requests.get(f"{b}/dicom-web/studies/2.25.123456789/series", timeout=30)
        assert unknown.status_code == 503, unknown.text
        assert int(unknown.headers["Retry-After"]) >= 1
        assert "pseudonym map is unreachable" in unknown.text
        assert PASSWORD not in pathlib.Path(replicas["b"].log_path).read_text()
    finally:
        postgres.start()
    # Back: the unknown pseudonym is a plain 404 again.
    assert requests.get(f"{b}/dicom-web/studies/2.25.123456789/series", timeout=30).status_code == 404


def test_an_embedded_map_moves_into_postgresql_and_back(testbed, postgres, tmp_path):
    # A gateway with the embedded map hands out pseudonyms, then stops.
    process, url = start_replica(testbed, tmp_path, "solo", None)
    try:
        seen = tree(url)
    finally:
        stop(process)
    embedded = tmp_path / "embedded.toml"
    embedded.write_text(replica_config(testbed, free_port(), tmp_path, "solo", None))
    shared = tmp_path / "shared.toml"
    shared.write_text(replica_config(testbed, free_port(), tmp_path, "solo", postgres.url))
    exported = subprocess.run([str(BINARY), "state", "export", "--config", str(embedded)], capture_output=True, check=True)
    lines = exported.stdout.decode().splitlines()
    assert json.loads(lines[0]) == {"format": "dicomweb-gateway pseudonym map", "version": 1}
    assert len(lines) - 1 >= sum(1 + len(s) + sum(map(len, s.values())) for s in seen.values())
    for _ in range(2):  # idempotent
        imported = subprocess.run([str(BINARY), "state", "import", "--config", str(shared)], input=exported.stdout, capture_output=True)
        assert imported.returncode == 0, imported.stderr
        assert PASSWORD not in imported.stderr.decode()
    back = subprocess.run([str(BINARY), "state", "export", "--config", str(shared)], capture_output=True, check=True)
    assert set(lines[1:]) <= set(back.stdout.decode().splitlines()[1:])
    # An entry that contradicts the map is refused, by line number, without its content.
    entry = json.loads(lines[1])
    entry["value"] = "1.2.3.999.contradiction"
    wrong = (lines[0] + "\n" + json.dumps(entry) + "\n").encode()
    refused = subprocess.run([str(BINARY), "state", "import", "--config", str(shared)], input=wrong, capture_output=True)
    assert refused.returncode != 0
    assert b"already stands for another original" in refused.stderr and b"contradiction" not in refused.stderr
