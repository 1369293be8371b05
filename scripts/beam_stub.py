"""A fake Samply Beam proxy, to drive Samply Focus against the gateway on loopback (scripts/focus-interop.py).

It serves the subset of the Beam proxy HTTP API that Focus uses, as read from
samply/focus @ 2fc7515 (src/beam.rs, src/task_processing.rs, src/main.rs) and the
beam-lib client it links, samply/beam @ bb7bdff (beam-lib/src/http_util.rs,
beam-lib/src/messages.rs; status codes from broker/src/serve_tasks.rs,
shared/src/serde_helpers.rs, proxy/src/serve_health.rs):

* ``GET /v1/health`` -> 200. Focus calls it at startup until it answers 2xx
  (RETRY_COUNT tries, 2 s apart) before it starts polling.
* ``GET /v1/tasks?filter=todo&wait_time=10s&wait_count=1`` -> JSON array of
  TaskRequests addressed to the caller that it has not yet answered with
  claimed/succeeded/permfailed. Long-polls up to ``wait_time``; 200 once
  ``wait_count`` tasks are returned, else 206 (Focus accepts 200/206/504).
* ``PUT /v1/tasks/<task-id>/results/<app-id>`` with a TaskResult
  ``{from, to, task, status, body, metadata}`` -> 201 when new, 204 when it
  replaces an earlier result. Focus first PUTs ``status:"claimed"`` (body
  ``"null"``), then ``"succeeded"`` (body = base64 of the provider's reply with
  ``"provider"``/``"provider_icon"`` inserted at its first ``{``) or
  ``"permfailed"`` (body = plain error text, e.g. "Failed to execute query.").

Every request must carry ``Authorization: ApiKey <app-id> <api-key>`` (else 401).

The task body is built the way Lens/Spot build it for EUCAIM (Spot passes Lens's
string through as the Beam task body, samply/spot src/beam.rs):
``base64(JSON{"lang":"ast","query": base64(JSON{"ast":..., "id":...})})``.
Focus with ENDPOINT_TYPE=omop base64-decodes the body, parses ``{lang,query}``,
base64-decodes ``query`` and parses it as its ``Ast`` (src/main.rs,
src/intermediate_rep.rs, src/ast.rs); it then POSTs that AST as JSON to
ENDPOINT_URL. Task metadata mimics Spot: ``{"project":..., "transform":...}``,
``ttl:"360s"``, ``failure_strategy:{"retry":{"backoff_millisecs":1000,"max_tries":5}}``.

Usage::

    with BeamStub(app_id="focus.site.broker.local", api_key="k") as beam:
        tid = beam.add_task({"operand": "OR", "children": []})
        # run Focus with BEAM_PROXY_URL=beam.url, BEAM_APP_ID_LONG, API_KEY ...
        answer = beam.wait_result(timeout=30, task_id=tid)  # decoded JSON

Standard library only. Not a Beam implementation: no broker, signing or encryption.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_FINAL = {"succeeded", "permfailed", "tempfailed"}
_HIDES_FROM_TODO = {"succeeded", "permfailed", "claimed"}
_RESULT_PATH = re.compile(r"^/v1/tasks/([0-9a-fA-F-]{36})/results/([^/]+)$")


class BeamTaskFailed(Exception):
    """Focus reported a non-success final status; ``status`` and ``body`` say why."""

    def __init__(self, status: str, body: str):
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


def encode_query(ast: dict, query_id: str | None = None) -> str:
    """Encode an AST tree as Lens does for Spot: base64(JSON{lang:"ast", query:base64(JSON{ast,id})})."""
    qid = query_id or f"{uuid.uuid4()}__search__{uuid.uuid4()}"
    inner = json.dumps({"ast": ast, "id": qid}, separators=(",", ":"))
    outer = {"lang": "ast", "query": base64.b64encode(inner.encode()).decode()}
    return base64.b64encode(json.dumps(outer, separators=(",", ":")).encode()).decode()


def _wait_seconds(raw: str | None) -> float:
    """Beam's wait_time: '10s', '500ms', or bare digits meaning milliseconds."""
    if not raw:
        return 0.0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?", raw.strip())
    if not m:
        return 0.0
    value, unit = float(m.group(1)), m.group(2) or "ms"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


class BeamStub:
    """A loopback fake Beam proxy holding tasks for one app id and collecting its results."""

    def __init__(self, app_id: str = "focus.site.broker.local", api_key: str = "focus-key",
                 sender: str = "spot.central.broker.local", host: str = "127.0.0.1", port: int = 0):
        self.app_id, self.api_key, self.sender = app_id, api_key, sender
        self.tasks: list[dict] = []
        self.results: dict[str, list[dict]] = {}  # task id -> every TaskResult PUT, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) log
        self._cond = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, payload=None):
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(code)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # client went away (e.g. Focus stopped)
                    pass

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"ApiKey {stub.app_id} {stub.api_key}":
                    return True
                self._send(401, {"error": "bad ApiKey"})
                return False

            def do_GET(self):
                url = urlsplit(self.path)
                stub._log("GET", self.path)
                if url.path == "/v1/health":
                    return self._send(200, {"summary": "healthy"})
                if not self._authorised():
                    return
                if url.path != "/v1/tasks":
                    return self._send(404, {"error": "not found"})
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                if q.get("filter") != "todo" and q.get("to") != stub.app_id:
                    return self._send(400, {"error": "stub supports filter=todo or to=<self>"})
                count = int(q.get("wait_count", "0") or 0)
                tasks = stub._wait_todo(count, _wait_seconds(q.get("wait_time")))
                self._send(200 if len(tasks) >= count else 206, tasks)

            def do_PUT(self):
                stub._log("PUT", self.path)
                if not self._authorised():
                    return
                m = _RESULT_PATH.match(urlsplit(self.path).path)
                if not m:
                    return self._send(404, {"error": "not found"})
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    result = json.loads(body)
                except ValueError:
                    return self._send(400, {"error": "invalid JSON"})
                task_id, worker = m.groups()
                if result.get("task") != task_id or result.get("from") != worker:
                    return self._send(400, {"error": "task/app id mismatch"})
                self._send(204 if stub._put_result(task_id, result) else 201)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "BeamStub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "BeamStub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test API --------------------------------------------------------
    def add_task(self, ast: dict, query_id: str | None = None, project: str = "eucaim",
                 transform: str = "none") -> str:
        """Queue a task carrying ``ast`` (the tree under "ast") encoded as Spot would; returns its id."""
        task_id = str(uuid.uuid4())
        task = {"id": task_id, "from": self.sender, "to": [self.app_id],
                "body": encode_query(ast, query_id),
                "ttl": "360s", "failure_strategy": {"retry": {"backoff_millisecs": 1000, "max_tries": 5}},
                "metadata": {"project": project, "transform": transform}}
        with self._cond:
            self.tasks.append(task)
            self._cond.notify_all()
        return task_id

    def wait_result(self, timeout: float = 30.0, task_id: str | None = None):
        """Wait for a final result (for ``task_id`` or the first task) and return the decoded answer.

        Succeeded -> the provider's JSON (with Focus's "provider"/"provider_icon"), parsed.
        Perm/temp failure -> raises BeamTaskFailed. Timeout -> raises TimeoutError.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                tid = task_id or (self.tasks[0]["id"] if self.tasks else None)
                final = [r for r in self.results.get(tid, []) if r.get("status") in _FINAL]
                if final:
                    res = final[-1]
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no final Beam result for task {tid} within {timeout}s")
                self._cond.wait(left)
        if res["status"] != "succeeded":
            raise BeamTaskFailed(res["status"], res.get("body", ""))
        return json.loads(base64.b64decode(res["body"]))

    # -- internals -------------------------------------------------------
    def _log(self, method: str, path: str) -> None:
        with self._cond:
            self.requests.append((method, path))

    def _todo(self) -> list[dict]:
        return [t for t in self.tasks if self.app_id in t["to"] and not any(
            r.get("from") == self.app_id and r.get("status") in _HIDES_FROM_TODO
            for r in self.results.get(t["id"], []))]

    def _wait_todo(self, count: int, wait: float) -> list[dict]:
        deadline = time.monotonic() + wait
        with self._cond:
            while len(self._todo()) < max(count, 1) and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return self._todo()

    def _put_result(self, task_id: str, result: dict) -> bool:
        """Store a result; True if it replaced one from the same worker (Beam answers 204)."""
        with self._cond:
            lst = self.results.setdefault(task_id, [])
            replaced = any(r.get("from") == result.get("from") for r in lst)
            lst.append(result)
            self._cond.notify_all()
            return replaced


if __name__ == "__main__":  # serve one task and print Focus's decoded answer
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--app-id", default="focus.site.broker.local")
    p.add_argument("--api-key", default="focus-key")
    p.add_argument("--ast-file", help="JSON file with the tree under 'ast' (default: empty query)")
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    tree = {"operand": "OR", "children": []}
    if a.ast_file:
        with open(a.ast_file, encoding="utf-8") as fh:
            tree = json.load(fh)
    with BeamStub(a.app_id, a.api_key, port=a.port) as beam:
        tid = beam.add_task(tree)
        print(f"beam stub at {beam.url}, task {tid} queued for {a.app_id}", flush=True)
        print(json.dumps(beam.wait_result(a.timeout, tid), indent=2))
