#!/usr/bin/env python3
"""Serves the OHIF Viewer (the built dist/ that scripts/install-viewer.sh installs) on loopback,
configured for a dicomweb-gateway: /app-config.js is viewer/app-config.js with the gateway's
DICOMweb base URL written in, every other file comes from dist/, and a path that names no file
and has no extension (a route of the single-page app, such as /viewer) is answered with
index.html.

    python3 viewer/serve.py --gateway http://127.0.0.1:8080/dicom-web --listen 127.0.0.1:3000
"""

import argparse
import http.server
import ipaddress
import json
import pathlib
import posixpath
import socket
import sys
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
OHIF_VERSION = "3.13.2"
DEFAULT_DIST = HERE / f"ohif-{OHIF_VERSION}"
CONFIG_TEMPLATE = HERE / "app-config.js"
PLACEHOLDER = "'@GATEWAY_URL@'"

TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
}


def app_config(gateway_url):
    """viewer/app-config.js with the gateway's base URL in place of its placeholder."""
    template = CONFIG_TEMPLATE.read_text()
    if PLACEHOLDER not in template:
        raise SystemExit(f"{CONFIG_TEMPLATE} has no {PLACEHOLDER} to replace")
    return template.replace(PLACEHOLDER, json.dumps(gateway_url.rstrip("/"))).encode()


def handler(dist, config):
    index = (dist / "index.html").read_bytes()

    class Viewer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.answer(send_body=True)

        def do_HEAD(self):
            self.answer(send_body=False)

        def answer(self, send_body):
            path = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
            if path == "/app-config.js":
                return self.send(200, TYPES[".js"], config, send_body, cache=False)
            file = (dist / path.lstrip("/")).resolve()
            if file.is_relative_to(dist) and file.is_file():
                kind = TYPES.get(file.suffix, "application/octet-stream")
                return self.send(200, kind, file.read_bytes(), send_body, cache=file.name != "index.html")
            if "." not in posixpath.basename(path):
                # A route of the single-page app: the app reads the path itself.
                return self.send(200, TYPES[".html"], index, send_body, cache=False)
            return self.send(404, "text/plain; charset=utf-8", b"not found\n", send_body, cache=False)

        def send(self, status, kind, body, send_body, cache):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-cache")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_request(self, code="-", size="-"):
            # Paths name studies (as pseudonyms, but still): only failures are logged.
            if isinstance(code, int) and code >= 400:
                sys.stderr.write(f"viewer: {self.command} answered {code}\n")

    return Viewer


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler_class):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler_class)


def main():
    parser = argparse.ArgumentParser(description="Serve the OHIF Viewer for a dicomweb-gateway, on loopback.")
    parser.add_argument("--gateway", required=True, help="the gateway's DICOMweb base URL (server.public_url)")
    parser.add_argument("--listen", default="127.0.0.1:3000", help="loopback address and port (port 0: any free one)")
    parser.add_argument("--dist", type=pathlib.Path, default=DEFAULT_DIST, help="OHIF's built dist/ directory")
    parser.add_argument("--port-file", type=pathlib.Path, help="write the port listened on to this file once serving")
    args = parser.parse_args()

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"--listen {args.listen}: the viewer is served on loopback addresses only")
    dist = args.dist.resolve()
    if not (dist / "index.html").is_file():
        raise SystemExit(f"{dist} holds no OHIF build: run scripts/install-viewer.sh")

    server = Server((host, int(port)), handler(dist, app_config(args.gateway)))
    if args.port_file:
        args.port_file.write_text(str(server.server_address[1]))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
