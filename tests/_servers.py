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
