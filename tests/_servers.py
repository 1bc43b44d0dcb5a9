"""Local servers for the tests: one way to serve a request handler on 127.0.0.1, one free port,
and `Service`: `namekeeper serve` as a real process, fed signed Artifactory webhooks.

Every fake that speaks HTTP (the notification receiver, a private index, Artifactory's
API, a scripted upload endpoint) is served by `serving`: a thread, a short shutdown poll
(the tests do not wait half a second per server), and a clean close.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from _cli import TOKEN
from _doubles import sign


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (a connection is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], port: int = 0,
            server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer
            ) -> Iterator[ThreadingHTTPServer]:
    """``handler`` served on 127.0.0.1 (``port``, or any free one) for the block."""
    server = server_class(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def url_of(server: ThreadingHTTPServer) -> str:
    """The server's root URL, ``http://127.0.0.1:<port>/``."""
    return f"http://127.0.0.1:{server.server_address[1]}/"


#: What a mistyped index URL answers: an SSO proxy's sign-in page (200, for any path). Five
#: of its links' texts are valid project names (Home, Docs, Blog, Login, Privacy); only one
#: of its seven links ends with its own text, as a project link does (``/privacy``).
PORTAL_PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Acme SSO</title>
<link rel="stylesheet" href="/oauth2/static/css/main.css">
<script src="/oauth2/static/js/main.js"></script></head>
<body><header><a href="/">Home</a> <a href="https://wiki.example.com/display/IT/Artifacts">Docs</a>
<a href="https://blog.example.com/">Blog</a></header>
<main><h1>Sign in to continue</h1>
<a class="button" href="/oauth2/start?rd=%2Fsimple%2F">Login</a>
<a href="/oauth2/help#reset">Forgot your password?</a></main>
<footer><a href="/privacy">Privacy</a> <a href="mailto:it@example.com">it@example.com</a></footer>
</body></html>
"""


@contextmanager
def serving_page(body: bytes, content_type: str = "text/html") -> Iterator[str]:
    """``body`` answered (200) for every path on 127.0.0.1; yields the server's root URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as server:
        yield url_of(server)


# -- `namekeeper serve` as a process ---------------------------------------------------------

HOOK_SECRET = "webhook-SECRET-value"


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def payload(name: str, *, repo: str = "pypi-local", kind: str = "whl", version: str = "1.0",
            as_string: bool = False, event_type: str = "deployed") -> bytes:
    stem = name.replace("-", "_")
    filename = (f"{stem}-{version}-py3-none-any.whl" if kind == "whl"
                else f"{stem}-{version}.tar.gz")
    data: Any = {"repo_key": repo, "path": f"{name}/{version}/{filename}", "name": filename,
                 "sha256": hashlib.sha256(filename.encode()).hexdigest(), "size": 2841}
    if as_string:
        data = json.dumps(data)
    return json.dumps({"domain": "artifact", "event_type": event_type, "data": data,
                       "subscription_key": "nk", "jpd_origin": "https://artifactory.example.com",
                       "source": "jfrog/jfrt@01"}).encode()


#: Short confirmation and lease times, so tests never wait minutes for an item to settle.
FAST_QUEUE = 'confirm-after = "1s"\nlease = "3s"\n'


def with_fast_queue(extra: str) -> str:
    """``extra`` config with `FAST_QUEUE` in its ``[queue]`` table (added when it has none)."""
    if "[queue]\n" in extra:
        return extra.replace("[queue]\n", "[queue]\n" + FAST_QUEUE, 1)
    return extra + "\n[queue]\n" + FAST_QUEUE


class Service:
    def __init__(self, tmp_path: Path, public_toml: str, extra: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.config = tmp_path / "namekeeper.toml"
        self.config.write_text(public_toml + 'owners = ["acme-security"]\n' + f"""
[placeholder]
organization = "ACME Corp"
contact = "security@acme.example"
[store]
path = "state.sqlite3"
[serve]
port = {self.port}
[artifactory]
signing = true
repos = ["pypi-local"]
""" + with_fast_queue(extra))
        self.store_path = tmp_path / "state.sqlite3"
        self.log = tmp_path / "serve.log"
        self.env = {**os.environ, "NAMEKEEPER_PUBLIC_TOKEN": TOKEN,
                    "NAMEKEEPER_ARTIFACTORY_SECRET": HOOK_SECRET}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()

    def start(self) -> Service:
        self._log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "namekeeper.cli", "--config", str(self.config), "serve"],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 60, "namekeeper serve to become healthy")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited early:\n{self.log.read_text()[-3000:]}")
        try:
            return requests.get(self.url + "healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def post(self, body: bytes, *, auth: str | None = None, **headers: str) -> requests.Response:
        hdrs = {"Content-Type": "application/json",
                "X-JFrog-Event-Auth": sign(body, HOOK_SECRET) if auth is None else auth, **headers}
        return self.http.post(self.url + "webhooks/artifactory", data=body, headers=hdrs,
                              timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code
