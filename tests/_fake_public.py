"""A fake of the public index (warehouse) for tests: a real HTTP server on 127.0.0.1.

It reproduces the public index's documented behaviour that namekeeper depends on
(FIELD-NOTES, "The public index") and nothing more:

- the simple API (PEP 503 HTML / PEP 691 JSON, chosen by the ``Accept`` header),
  with a 301 from a non-canonical project URL to the canonical one;
- the JSON API ``/pypi/<name>/json`` with ``ownership`` and per-file upload times;
- the upload endpoint ``/legacy/`` that ``twine upload`` talks to, with the name
  rules checked in warehouse's order and the error text in the HTTP reason
  phrase (twine reads ``err.response.reason``) and in the body;
- ``/files/<filename>`` so pip can download what was uploaded;
- the full listing ``/simple/`` with an ``ETag`` and a ``Last-Modified`` header,
  answering a conditional request (``If-None-Match`` / ``If-Modified-Since``)
  with 304 while nothing changed, and a ``_last-serial`` per project;
- many generated projects (`add_listed_projects`) that cost a dict entry each
  until a request touches one, so a listing of 800,000 names fits in memory;
- fault injection (500, 429, connection reset, stall) for robustness tests.

Deliberately independent of ``namekeeper.names``: the fake must not share a bug
with the code it tests.

One behaviour differs from a naive reading of the error table, because
warehouse does it: re-uploading a file with the same name *and the same bytes*
answers 200 and changes nothing (twine's ``--skip-existing`` relies on the
400 "File already exists" only for a different file under a taken filename).
A file name once uploaded can never be uploaded again once its file is gone
(a deleted release, a removed project): 400 "This filename has already been
used, use a different version" (warehouse's help, "file-name-reuse").
"""

from __future__ import annotations

import base64
import collections
import email.message
import email.parser
import email.utils
import gzip
import hashlib
import html
import io
import json
import math
import random
import re
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests
import stdlib_list
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SIMPLE_HTML = "application/vnd.pypi.simple.v1+html"
DEFAULT_FIRST_RELEASE = datetime(2020, 1, 1, tzinfo=timezone.utc)
MAX_BODY = 50 * 1024 * 1024
RATE_WINDOW = 3600.0
KNOWN_METADATA_VERSIONS = ("1.0", "1.1", "1.2", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5")

# Warehouse matches with \Z: a trailing newline is not part of a valid name.
_NAME_RULE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])\Z", re.IGNORECASE | re.ASCII)
# Warehouse's STDLIB_PROHIBITED: every module and dotted prefix of every version stdlib-list has.
_STDLIB = frozenset(
    canonicalize_name(prefix.strip("-_."))
    for version in stdlib_list.short_versions
    for module in stdlib_list.stdlib_list(version)
    for prefix in (".".join(module.split(".")[: i + 1]) for i in range(module.count(".") + 1))
)
_ULTRA_DELETE = str.maketrans("", "", "._-")
_ULTRA_MAP = str.maketrans({"l": "1", "i": "1", "o": "0"})


def ultranormalize(name: str) -> str:
    """Warehouse's "too similar" key (independent copy, see the module docstring)."""
    return name.lower().translate(_ULTRA_DELETE).translate(_ULTRA_MAP)


def is_stdlib(name: str) -> bool:
    """True when warehouse refuses ``name`` as a standard-library module name."""
    return canonicalize_name(name) in _STDLIB


@dataclass
class FaultPlan:
    """Randomly (but reproducibly) break requests whose path starts with one of ``paths``.

    Kinds: ``"500"``; ``"429"`` with ``Retry-After: <retry_after>``; ``"reset"``
    (connection closed, no response); ``"stall"`` (wait ``stall_seconds``, waking
    early on ``stop()``, then answer normally); ``"garbage-2xx"`` (200 with a body
    that is no answer, like a broken proxy); ``"echo"`` (a 400 whose reason and
    body repeat the request's ``Authorization`` header and the password in it,
    ``echo_offset`` characters into the body, like a proxy's debug page).  Every
    kind but a stall changes no state; a stalled request is processed after the
    stall, like a slow index (unless the fake is stopped meanwhile: then the
    connection is closed and nothing changes).
    """

    rate: float
    kinds: tuple[str, ...] = ("500", "429", "reset", "stall")
    seed: int = 0
    stall_seconds: float = 30.0
    paths: tuple[str, ...] = ("/",)
    retry_after: str = "1"
    echo_offset: int = 0


@dataclass
class _File:
    filename: str
    version: str
    content: bytes
    upload_time: datetime
    packagetype: str
    uploader: str | None
    yanked: str | None = None  # PEP 592: the reason ("" for none given) once yanked

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def md5(self) -> str:
        return hashlib.md5(self.content).hexdigest()

    @property
    def blake2_256(self) -> str:
        return hashlib.blake2b(self.content, digest_size=32).hexdigest()


@dataclass
class _Project:
    name: str  # display name, as first registered
    owners: list[str]
    organization: str | None
    versions: list[str]
    files: dict[str, _File]
    summary: str = ""
    author_email: str = ""
    created_by: str | None = None
    created_at: float | None = None


class _UploadError(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def _safe_reason(text: str) -> str:
    """A reason phrase that fits on a latin-1 status line whatever a hostile name contained."""
    cleaned = "".join(c if 32 <= ord(c) < 127 or 160 <= ord(c) < 256 else "?" for c in text)
    return cleaned[:1000]


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sdist_stem(name: str) -> str:
    return canonicalize_name(name).replace("-", "_")


def make_sdist_bytes(name: str, version: str, *, metadata_version: str = "2.4",
                     summary: str = "A placeholder") -> bytes:
    """A tiny PEP 625 sdist (one top-level directory holding PKG-INFO), deterministic bytes."""
    stem = f"{_sdist_stem(name)}-{version}"
    pkg_info = (
        f"Metadata-Version: {metadata_version}\nName: {name}\nVersion: {version}\n"
        f"Summary: {summary}\n"
    ).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member_name, data in ((f"{stem}/PKG-INFO", pkg_info),
                                  (f"{stem}/pyproject.toml", b"[build-system]\nrequires = []\n")):
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def build_sdist(directory: Path, name: str, version: str, *, metadata_version: str = "2.4",
                summary: str = "A placeholder", filename: str | None = None) -> Path:
    """Write `make_sdist_bytes` to ``directory`` under its PEP 625 name (or ``filename``)."""
    path = Path(directory) / (filename or f"{_sdist_stem(name)}-{version}.tar.gz")
    path.write_bytes(make_sdist_bytes(name, version, metadata_version=metadata_version,
                                      summary=summary))
    return path


def post_upload(fake: FakePublicIndex, name: str, version: str = "0.0.0", *, token: str | None,
                content: bytes | None = None, filename: str | None = None,
                metadata_version: str = "2.4", username: str = "__token__") -> requests.Response:
    """An upload shaped like twine's (multipart form, basic auth), without twine's start-up cost."""
    content = make_sdist_bytes(name, version) if content is None else content
    filename = filename or f"{_sdist_stem(name)}-{version}.tar.gz"
    data = {":action": "file_upload", "protocol_version": "1", "metadata_version": metadata_version,
            "name": name, "version": version, "filetype": "sdist", "pyversion": "source",
            "summary": "placeholder", "sha256_digest": hashlib.sha256(content).hexdigest()}
    auth = (username, token) if token is not None else None
    return requests.post(fake.upload_url, data=data, auth=auth, timeout=10,
                         files={"content": (filename, content, "application/octet-stream")})


def _parse_multipart(content_type: str, body: bytes) -> dict[str, list[Any]]:
    """Form fields of a multipart/form-data body: text values as str, file parts as (filename, bytes)."""
    header = email.message.Message()
    header["Content-Type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise ValueError("not multipart/form-data")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("no multipart boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("truncated multipart body")
    fields: dict[str, list[Any]] = collections.defaultdict(list)
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("malformed multipart part")
        raw_headers, sep, value = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without headers")
        part = email.parser.BytesHeaderParser().parsebytes(raw_headers + b"\r\n\r\n")
        field = part.get_param("name", header="content-disposition")
        if not isinstance(field, str):
            raise ValueError("multipart part without a name")
        filename = part.get_filename()
        if filename is not None:
            fields[field].append((filename, value))
        else:
            fields[field].append(value.decode("utf-8", errors="replace"))
    return dict(fields)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads may idle; stop() closes their sockets
    fake: FakePublicIndex


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY a reused
    # connection waits ~40 ms on delayed ACKs, which no real index does.
    disable_nagle_algorithm = True
    server: _Server
    timeout = 60  # an idle keep-alive connection is dropped eventually

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output stays readable."""

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")

    def do_HEAD(self) -> None:
        self.server.fake._handle(self, "HEAD")


class FakePublicIndex:
    """The public index, in a thread, on a free port of 127.0.0.1.  See the module docstring."""

    def __init__(self, *, new_projects_per_hour: int = 20,
                 clock: Callable[[], float] = time.time) -> None:
        self.new_projects_per_hour = new_projects_per_hour
        self.clock = clock
        #: False: the simple API answers HTML only, whatever the Accept header (like Artifactory).
        self.serve_json = True
        #: "1.0" omits the PEP 700 ``versions`` key from JSON project pages.
        self.simple_api_version = "1.1"
        #: Canonical names whose JSON API answers 404 although they exist (a stale CDN).
        self.json_hidden: set[str] = set()
        self.uploads: collections.Counter[str] = collections.Counter()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str]] = []
        #: (method, path, headers) of every request, for header assertions (User-Agent...).
        self.request_headers: list[tuple[str, str, dict[str, str]]] = []
        #: (method, path, kind) of every request a FaultPlan broke.
        self.faulted: list[tuple[str, str, str]] = []
        self._lock = threading.RLock()
        self._projects: dict[str, _Project] = {}
        #: Generated projects not yet touched: canonical -> display name (see add_listed_projects).
        self._listed: dict[str, str] = {}
        #: Answers (status codes) to requests for the full listing ``/simple/``.
        self.listing_answers: list[int] = []
        #: The next ``_last-serial``; every change of a project takes one, as on warehouse.
        self._serial = 1
        self._serials: dict[str, int] = {}
        self._changed_at = time.time()
        self._listing_cache: tuple[int, bytes, bytes, str] | None = None
        #: Answer the next n JSON-API requests with 429 (``Retry-After: 1``), like a throttled CDN.
        self.throttle_json = 0
        self._files: dict[str, str] = {}  # filename -> canonical project
        self._used_filenames: set[str] = set()  # every file name ever uploaded, kept forever
        self._tokens: dict[str, str] = {}  # token -> user
        self._prohibited: set[str] = set()
        self._creations: dict[str, list[float]] = collections.defaultdict(list)
        self._faults: FaultPlan | None = None
        self._rng = random.Random(0)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakePublicIndex:
        """Serve in a daemon thread; a restarted fake keeps its port and its state."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-public-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake stalled requests, close open connections, free the port."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FakePublicIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FakePublicIndex is not started")
        return f"http://127.0.0.1:{self._port}/"

    @property
    def simple_url(self) -> str:
        return self.url + "simple/"

    @property
    def json_url(self) -> str:
        return self.url + "pypi/"

    @property
    def upload_url(self) -> str:
        return self.url + "legacy/"

    def config_toml(self, **overrides: Any) -> str:
        """A ``[public]`` TOML table pointing namekeeper at this fake.

        Keyword names use ``_`` for ``-`` (``json_url=None`` writes ``json-url = ""``,
        i.e. "no JSON API"; any other ``None`` drops the key).
        """
        values: dict[str, Any] = {"simple-url": self.simple_url, "json-url": self.json_url,
                                  "upload-url": self.upload_url}
        for key, value in overrides.items():
            values[key.replace("_", "-")] = value
        lines = ["[public]"]
        for key, value in values.items():
            if value is None:
                if key != "json-url":
                    continue
                value = ""
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    # -- state -----------------------------------------------------------------------------

    @property
    def faults(self) -> FaultPlan | None:
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan | None) -> None:
        with self._lock:
            self._faults = plan
            self._rng = random.Random(plan.seed if plan else 0)

    def add_user(self, user: str, token: str) -> None:
        """An account whose API token (password with username ``__token__``) is ``token``."""
        with self._lock:
            self._tokens[token] = user

    def revoke_tokens(self) -> None:
        """Every API token stops working (revoked by its owner, or expired)."""
        with self._lock:
            self._tokens.clear()

    def add_project(self, name: str, *, owners: list[str] | None = None,
                    organization: str | None = None, versions: list[str] | None = None,
                    first_release: datetime | None = None, summary: str = "",
                    author_email: str = "") -> None:
        """Seed an existing project: one synthetic sdist per version, uploaded at ``first_release``."""
        owners = ["someone-else"] if owners is None else list(owners)
        versions = ["1.0"] if versions is None else list(versions)
        when = first_release or DEFAULT_FIRST_RELEASE
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        canon = canonicalize_name(name)
        project = _Project(name=name, owners=owners, organization=organization, versions=[],
                           files={}, summary=summary, author_email=author_email)
        for version in versions:
            filename = f"{_sdist_stem(name)}-{version}.tar.gz"
            project.versions.append(version)
            project.files[filename] = _File(filename, version, make_sdist_bytes(name, version),
                                            when, "sdist", None)
        with self._lock:
            self._projects[canon] = project
            self._listed.pop(canon, None)
            self._changed(canon)
            for filename in project.files:
                self._files[filename] = canon
                self._used_filenames.add(filename)

    def add_listed_projects(self, names: Iterable[str]) -> None:
        """Seed many existing projects cheaply: owner ``someone-else``, version 1.0, 2020.

        They answer every API like `add_project` ones (each is built on first touch).
        """
        with self._lock:
            for name in names:
                canon = canonicalize_name(name)
                if canon not in self._projects:
                    self._listed[canon] = name
                    self._serials[canon] = self._serial
                    self._serial += 1
            self._changed_at = time.time()
            self._listing_cache = None

    def _changed(self, canon: str) -> None:
        """A project was created or changed (caller holds the lock)."""
        self._serials[canon] = self._serial
        self._serial += 1
        self._changed_at = time.time()
        self._listing_cache = None

    def _get_project(self, canon: str) -> _Project | None:
        """The project, building a generated one on first touch (caller holds the lock)."""
        project = self._projects.get(canon)
        if project is None and canon in self._listed:
            display = self._listed.pop(canon)
            filename = f"{_sdist_stem(display)}-1.0.tar.gz"
            project = _Project(name=display, owners=["someone-else"], organization=None,
                               versions=["1.0"], files={})
            project.files[filename] = _File(filename, "1.0", make_sdist_bytes(display, "1.0"),
                                            DEFAULT_FIRST_RELEASE, "sdist", None)
            self._projects[canon] = project
            self._files[filename] = canon
        return project

    def yank(self, name: str, version: str, reason: str = "") -> None:
        """An owner yanks a release (PEP 592): its files stay, marked yanked in every API."""
        with self._lock:
            project = self._get_project(canonicalize_name(name))
            assert project is not None, name
            for f in project.files.values():
                if f.version == version:
                    f.yanked = reason
            self._changed(canonicalize_name(name))

    def remove_project(self, name: str) -> None:
        """The index's administrators remove a project (PEP 541): its name is free again,
        its file names stay used."""
        canon = canonicalize_name(name)
        with self._lock:
            project = self._get_project(canon)
            assert project is not None, name
            for filename in project.files:
                self._files.pop(filename, None)
            del self._projects[canon]
            self._serials.pop(canon, None)
            self._changed_at = time.time()
            self._listing_cache = None

    def delete_files(self, name: str, version: str) -> None:
        """An owner deletes a release's files: the JSON API still lists the release, empty."""
        with self._lock:
            project = self._get_project(canonicalize_name(name))
            assert project is not None, name
            for filename in [k for k, f in project.files.items() if f.version == version]:
                del project.files[filename]
            self._changed(canonicalize_name(name))

    def prohibit(self, name: str) -> None:
        """An admin-prohibited name: uploads creating it are refused."""
        with self._lock:
            self._prohibited.add(canonicalize_name(name))

    def project(self, name: str) -> dict[str, Any] | None:
        """A copy of the stored state of a project (owners, versions, files), or None."""
        with self._lock:
            project = self._get_project(canonicalize_name(name))
            if project is None:
                return None
            return {
                "name": project.name,
                "canonical": canonicalize_name(project.name),
                "owners": list(project.owners),
                "organization": project.organization,
                "versions": list(project.versions),
                "summary": project.summary,
                "author_email": project.author_email,
                "created_by": project.created_by,
                "files": {fn: {"version": f.version, "content": f.content, "sha256": f.sha256,
                               "size": len(f.content), "upload_time": f.upload_time,
                               "packagetype": f.packagetype, "uploader": f.uploader}
                          for fn, f in project.files.items()},
            }

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _draw_fault(self, path: str) -> str | None:
        with self._lock:
            plan = self._faults
            if plan is None or not plan.kinds or not any(path.startswith(p) for p in plan.paths):
                return None
            if self._rng.random() >= plan.rate:
                return None
            return self._rng.choice(plan.kinds)

    # -- request handling ------------------------------------------------------------------

    def _handle(self, h: _Handler, method: str) -> None:
        split = urlsplit(h.path)
        path = split.path
        with self._lock:
            self.requests.append((method, path))
            self.request_headers.append((method, path, dict(h.headers.items())))
        body = b""
        if method == "POST":
            if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
                self._send(h, 411, "Length Required", b"Length Required\n", close=True)
                return
            try:
                length = int(h.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._send(h, 413, "Payload Too Large", b"Payload Too Large\n", close=True)
                return
            body = h.rfile.read(length)
            if path == "/legacy/":
                self._count_attempt(h.headers.get("Content-Type", ""), body)

        fault = self._draw_fault(path)
        if fault is None and path.startswith("/pypi/"):
            with self._lock:
                if self.throttle_json > 0:
                    self.throttle_json -= 1
                    fault = "429"
        if fault is not None:
            with self._lock:
                self.faulted.append((method, path, fault))
        if fault == "reset":
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "500":
            self._send(h, 500, "Internal Server Error", b"Internal Server Error\n")
            return
        if fault == "429":
            plan = self._faults
            self._send(h, 429, "Too Many Requests", b"Too Many Requests\n",
                       headers={"Retry-After": plan.retry_after if plan else "1"})
            return
        if fault == "garbage-2xx":
            self._send(h, 200, "OK", b"\x00\xff<<not an answer>>", content_type="text/html")
            return
        if fault == "echo":
            self._echo(h)
            return
        if fault == "stall":
            plan = self._faults
            if self._stopping.wait(plan.stall_seconds if plan else 0.0):
                h.close_connection = True
                return

        try:
            if method == "POST":
                if path == "/legacy/":
                    self._upload(h, body)
                else:
                    self._send(h, 405, "Method Not Allowed", b"Method Not Allowed\n")
                return
            self._get(h, method, path, parse_qs(split.query))
        except BrokenPipeError:  # the client went away
            h.close_connection = True

    def _echo(self, h: _Handler) -> None:
        plan = self._faults
        auth = h.headers.get("Authorization") or ""
        try:
            password = base64.b64decode(auth.partition(" ")[2]).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            password = ""
        filler = "Request rejected by the gateway. Debug information follows. " * 20
        offset = plan.echo_offset if plan else 0
        body = (f"{filler[:offset]}<b>{password}</b> sent as <code>Authorization: {auth}</code> "
                f"{filler}").encode()
        self._send(h, 400, "Bad Request", body, content_type="text/html")

    def _count_attempt(self, content_type: str, body: bytes) -> None:
        try:
            names = _parse_multipart(content_type, body).get("name") or [""]
        except ValueError:
            names = [""]
        name = names[0] if isinstance(names[0], str) else ""
        with self._lock:
            self.attempts[canonicalize_name(name) if name else ""] += 1

    def _send(self, h: _Handler, status: int, reason: str, body: bytes, *,
              content_type: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None, close: bool = False,
              method: str = "GET") -> None:
        h.send_response(status, _safe_reason(reason))
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)

    def _redirect(self, h: _Handler, location: str, method: str) -> None:
        self._send(h, 301, "Moved Permanently", b"", headers={"Location": location},
                   method=method)

    def _not_found(self, h: _Handler, method: str) -> None:
        self._send(h, 404, "Not Found", b"404 Not Found\n", method=method)

    def _get(self, h: _Handler, method: str, path: str, query: dict[str, list[str]]) -> None:
        parts = [unquote(p) for p in path.split("/")[1:]]
        if parts[:1] == ["simple"]:
            if len(parts) == 1:
                self._redirect(h, "/simple/", method)
            elif parts == ["simple", ""]:
                self._simple_index(h, method, query)
            elif len(parts) == 2 or (len(parts) == 3 and parts[2] == ""):
                name = parts[1]
                canon = canonicalize_name(name)
                if name != canon or len(parts) == 2:
                    self._redirect(h, f"/simple/{quote(canon, safe='')}/", method)
                else:
                    self._simple_project(h, method, canon, query)
            else:
                self._not_found(h, method)
        elif len(parts) == 2 and parts[0] == "files":
            with self._lock:
                owner = self._files.get(parts[1])
                file = self._projects[owner].files[parts[1]] if owner else None
            if file is None:
                self._not_found(h, method)
            else:
                self._send(h, 200, "OK", file.content, content_type="application/octet-stream",
                           method=method)
        elif len(parts) == 3 and parts[0] == "pypi" and parts[2] == "json":
            canon = canonicalize_name(parts[1])
            if parts[1] != canon:
                self._redirect(h, f"/pypi/{quote(canon, safe='')}/json", method)
                return
            with self._lock:
                data = None if canon in self.json_hidden else self._json_project(canon)
            if data is None:
                self._not_found(h, method)
            else:
                self._send(h, 200, "OK", json.dumps(data).encode(),
                           content_type="application/json", method=method)
        elif len(parts) == 3 and parts[0] == "project" and parts[2] == "":
            canon = canonicalize_name(parts[1])
            with self._lock:
                project = self._get_project(canon)
                title = project.name if project else None
            if title is None:
                self._not_found(h, method)
            else:
                page = f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>" \
                       f"<body><h1>{html.escape(title)}</h1></body></html>\n"
                self._send(h, 200, "OK", page.encode(), content_type="text/html; charset=utf-8",
                           method=method)
        else:
            self._not_found(h, method)

    def _wants_json(self, h: _Handler, query: dict[str, list[str]]) -> bool:
        if not self.serve_json:
            return False
        if query.get("format"):
            return query["format"][0] == SIMPLE_JSON
        json_q, html_q = 0.0, 0.0
        for item in (h.headers.get("Accept") or "").split(","):
            media, *params = [p.strip() for p in item.split(";")]
            q = 1.0
            for param in params:
                key, _, value = param.partition("=")
                if key.strip() == "q":
                    try:
                        q = float(value)
                    except ValueError:
                        q = 0.0
            if media.lower() == SIMPLE_JSON:
                json_q = max(json_q, q)
            elif media.lower() in ("text/html", SIMPLE_HTML, "*/*"):
                html_q = max(html_q, q)
        return json_q > 0 and json_q >= html_q

    def _listing_bodies(self) -> tuple[bytes, bytes, str]:
        """(JSON body, HTML body, ETag) of the full listing, rebuilt only after a change."""
        with self._lock:
            if self._listing_cache is None:
                names = sorted([*((c, p.name) for c, p in self._projects.items()),
                                *self._listed.items()])
                serials = self._serials
                data = {"meta": {"api-version": self.simple_api_version,
                                 "_last-serial": self._serial - 1},
                        "projects": [{"name": display, "_last-serial": serials.get(canon, 0)}
                                     for canon, display in names]}
                json_body = json.dumps(data).encode()
                links = "".join(f'<a href="/simple/{quote(c)}/">{html.escape(d)}</a>\n'
                                for c, d in names)
                page = ("<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
                        f"content=\"{self.simple_api_version}\"><title>Simple index</title>"
                        f"</head><body>\n{links}</body></html>\n").encode()
                etag = '"' + hashlib.sha256(json_body).hexdigest()[:32] + '"'
                self._listing_cache = (self._serial, json_body, page, etag)
            _, json_body, page, etag = self._listing_cache
            return json_body, page, etag

    def _simple_index(self, h: _Handler, method: str, query: dict[str, list[str]]) -> None:
        json_body, page, etag = self._listing_bodies()
        wants_json = self._wants_json(h, query)
        # One ETag per representation, as a CDN varying on Accept gives.
        etag = etag[:-1] + ('-json"' if wants_json else '-html"')
        with self._lock:
            last_modified = email.utils.formatdate(int(self._changed_at), usegmt=True)
            changed_at = int(self._changed_at)
        headers = {"ETag": etag, "Last-Modified": last_modified, "Vary": "Accept"}
        if self._not_modified(h, etag, changed_at):
            with self._lock:
                self.listing_answers.append(304)
            h.send_response(304, "Not Modified")
            for key, value in headers.items():
                h.send_header(key, value)
            h.end_headers()
            return
        with self._lock:
            self.listing_answers.append(200)
        if wants_json:
            self._send(h, 200, "OK", json_body, content_type=SIMPLE_JSON, method=method,
                       headers=headers)
        else:
            self._send(h, 200, "OK", page, content_type="text/html", method=method,
                       headers=headers)

    @staticmethod
    def _not_modified(h: _Handler, etag: str, changed_at: int) -> bool:
        """RFC 9110: If-None-Match decides when present; else If-Modified-Since."""
        if_none_match = h.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
            return etag in tags or "*" in tags
        since = h.headers.get("If-Modified-Since")
        if since:
            try:
                parsed = email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
            return changed_at <= parsed.timestamp()
        return False

    def _simple_project(self, h: _Handler, method: str, canon: str,
                        query: dict[str, list[str]]) -> None:
        with self._lock:
            project = self._get_project(canon)
            files = list(project.files.values()) if project else []
            versions = list(project.versions) if project else []
        if project is None:
            self._not_found(h, method)
            return
        if self._wants_json(h, query):
            data: dict[str, Any] = {
                "meta": {"api-version": self.simple_api_version, "_last-serial": 0},
                "name": canon,
                "files": [{"filename": f.filename, "url": f"{self.url}files/{quote(f.filename)}",
                           "hashes": {"sha256": f.sha256}, "requires-python": None,
                           "size": len(f.content), "upload-time": _iso(f.upload_time),
                           "yanked": False if f.yanked is None else (f.yanked or True),
                           "data-dist-info-metadata": False}
                          for f in files],
            }
            if self.simple_api_version != "1.0":
                data["versions"] = sorted(versions, key=_version_key)
            self._send(h, 200, "OK", json.dumps(data).encode(), content_type=SIMPLE_JSON,
                       method=method)
            return
        links = "".join(
            f'<a href="{self.url}files/{quote(f.filename)}#sha256={f.sha256}"'
            + ("" if f.yanked is None else f' data-yanked="{html.escape(f.yanked)}"')
            + f">{html.escape(f.filename)}</a><br />\n" for f in files)
        page = ("<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
                f"content=\"{self.simple_api_version}\"><title>Links for {canon}</title></head>"
                f"<body><h1>Links for {canon}</h1>\n{links}</body></html>\n")
        self._send(h, 200, "OK", page.encode(), content_type="text/html", method=method)

    def _json_project(self, canon: str) -> dict[str, Any] | None:
        """Warehouse's ``/pypi/<name>/json`` document (caller holds the lock)."""
        project = self._get_project(canon)
        if project is None:
            return None
        releases: dict[str, list[dict[str, Any]]] = {v: [] for v in project.versions}
        for f in project.files.values():
            releases.setdefault(f.version, []).append({
                "filename": f.filename,
                "url": f"{self.url}files/{quote(f.filename)}",
                "upload_time": f.upload_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                "upload_time_iso_8601": _iso(f.upload_time),
                "digests": {"md5": f.md5, "sha256": f.sha256, "blake2b_256": f.blake2_256},
                "md5_digest": f.md5,
                "packagetype": f.packagetype,
                "python_version": "source" if f.packagetype == "sdist" else "py3",
                "requires_python": None,
                "size": len(f.content),
                "yanked": f.yanked is not None,
                "yanked_reason": f.yanked or None,
            })
        highest = max(project.versions, key=_version_key) if project.versions else None
        page = f"{self.url}project/{canon}/"
        return {
            "info": {"name": project.name, "version": highest, "summary": project.summary,
                     "author_email": project.author_email, "project_url": page,
                     "package_url": page, "release_url": f"{page}{highest}/",
                     "requires_python": None, "yanked": False},
            "last_serial": 0,
            "releases": releases,
            "urls": releases.get(highest, []) if highest else [],
            "ownership": {"roles": [{"role": "Owner", "user": u} for u in project.owners],
                          "organization": project.organization},
            "vulnerabilities": [],
        }

    # -- the upload endpoint ---------------------------------------------------------------

    def _upload(self, h: _Handler, body: bytes) -> None:
        try:
            self._accept_upload(h, body)
        except _UploadError as err:
            text = err.reason + "\n"
            self._send(h, err.status, err.reason,
                       f"{err.status} {err.reason}\n\n{text}".encode(),
                       headers=err.headers)
            return
        self._send(h, 200, "OK", b"OK\n")

    def _user(self, h: _Handler) -> str | None:
        scheme, _, encoded = (h.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if username != "__token__":
            return None
        with self._lock:
            return self._tokens.get(password)

    def _accept_upload(self, h: _Handler, body: bytes) -> None:
        help_ = f"See {self.url}help/ for more information."
        user = self._user(h)
        if user is None:
            raise _UploadError(403, f"Invalid or non-existent authentication information. {help_}")
        try:
            form = _parse_multipart(h.headers.get("Content-Type", ""), body)
        except ValueError:
            raise _UploadError(400, "Invalid request: a multipart/form-data body is required.") \
                from None

        def text(key: str) -> str:
            values = form.get(key) or [""]
            return values[0] if isinstance(values[0], str) else ""

        action = text(":action")
        if action == "submit":
            raise _UploadError(410, "Project pre-registration is no longer required or "
                                    "supported, upload your files instead.")
        if action != "file_upload":
            raise _UploadError(400, "Invalid or missing :action.")
        if text("protocol_version") not in ("", "1"):
            raise _UploadError(400, "Unknown protocol version.")
        metadata_version = text("metadata_version")
        if metadata_version not in KNOWN_METADATA_VERSIONS:
            raise _UploadError(400, f"'{metadata_version}' is an invalid value for "
                                    f"Metadata-Version. Error: Use a known metadata version. {help_}")
        name = text("name")
        if not _NAME_RULE.match(name):
            raise _UploadError(400, f"'{name}' is an invalid value for Name. Error: Start and end "
                                    "with a letter or numeral containing only ASCII numeric and "
                                    f"'.', '_' and '-'. {help_}")
        raw_version = text("version")
        try:
            version = Version(raw_version)
        except InvalidVersion:
            raise _UploadError(400, f"'{raw_version}' is an invalid value for Version. Error: "
                                    f"Must start and end with a letter or numeral and contain "
                                    f"only ascii numeric and '.', '_' and '-'. {help_}") from None
        canon = canonicalize_name(name)

        with self._lock:
            now = self.clock()
            project = self._get_project(canon)
            if project is not None:
                if user.lower() not in (o.lower() for o in project.owners):
                    raise _UploadError(403, f"The user '{user}' isn't allowed to upload to project "
                                            f"'{project.name}'. {help_}")
            else:
                window = [t for t in self._creations[user] if now - t < RATE_WINDOW]
                self._creations[user] = window
                if len(window) >= self.new_projects_per_hour:
                    retry_after = max(1, math.ceil(min(window) + RATE_WINDOW - now))
                    raise _UploadError(429, "Too many new projects created",
                                       headers={"Retry-After": str(retry_after)})
                if is_stdlib(name):
                    raise _UploadError(400, f"The name {name!r} isn't allowed (conflict with "
                                            f"Python Standard Library module name). {help_}")
                if canon in self._prohibited:
                    raise _UploadError(400, f"The name {name!r} isn't allowed. {help_}")
                key = ultranormalize(name)
                if any(ultranormalize(c) == key for c in (*self._projects, *self._listed)):
                    raise _UploadError(400, f"The name {name!r} is too similar to an existing "
                                            f"project. {help_}")

            contents = form.get("content") or []
            if not contents or not isinstance(contents[0], tuple):
                raise _UploadError(400, "Upload payload does not have a file.")
            filename, content = contents[0]
            packagetype = self._check_file(name, version, filename, content)
            digest = text("sha256_digest").lower()
            if digest and digest != hashlib.sha256(content).hexdigest():
                raise _UploadError(400, "The digest supplied does not match a digest calculated "
                                        "from the uploaded file.")
            blake2 = hashlib.blake2b(content, digest_size=32).hexdigest()
            existing = self._find_file(filename, blake2)
            if existing is not None:
                if existing.filename == filename and existing.content == content:
                    return  # warehouse: an identical re-upload is a no-op 200
                raise _UploadError(400, f"File already exists ({filename!r}, with blake2_256 "
                                        f"hash {blake2!r}). {help_}")
            if filename in self._used_filenames:
                raise _UploadError(400, "This filename has already been used, use a different "
                                        f"version. {help_}")

            if project is None:
                project = _Project(name=name, owners=[user], organization=None, versions=[],
                                   files={}, summary=text("summary"),
                                   author_email=text("author_email"), created_by=user,
                                   created_at=now)
                self._projects[canon] = project
                self._creations[user].append(now)
            if not any(Version(v) == version for v in project.versions):
                project.versions.append(raw_version)
            upload_time = datetime.fromtimestamp(now, timezone.utc)
            project.files[filename] = _File(filename, raw_version, content, upload_time,
                                            packagetype, user)
            self._files[filename] = canon
            self._used_filenames.add(filename)
            self.uploads[canon] += 1
            self._changed(canon)

    def _find_file(self, filename: str, blake2: str) -> _File | None:
        canon = self._files.get(filename)
        if canon is not None:
            return self._projects[canon].files[filename]
        for project in self._projects.values():
            for f in project.files.values():
                if f.blake2_256 == blake2:
                    return f
        return None

    def _check_file(self, name: str, version: Version, filename: str, content: bytes) -> str:
        """The package type of a well-named, well-formed distribution file, else a 400."""
        invalid = _UploadError(400, "Invalid distribution file.")
        if "/" in filename or "\\" in filename or "\x00" in filename:
            raise invalid
        if filename.endswith(".tar.gz"):
            expected_stem = _sdist_stem(name)
            stem_name, _, stem_version = filename[: -len(".tar.gz")].rpartition("-")
            try:
                same_version = Version(stem_version) == version
            except InvalidVersion:
                same_version = False
            if stem_name != expected_stem or not same_version:
                raise _UploadError(400, f"Invalid distribution file. Filename {filename!r} must "
                                        f"be '{expected_stem}-{version}.tar.gz' (PEP 625).")
            try:
                with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
                    members = tar.getnames()
            except (tarfile.TarError, OSError, EOFError):
                raise invalid from None
            tops = {m.split("/", 1)[0] for m in members}
            if len(tops) != 1 or f"{tops.pop()}/PKG-INFO" not in members:
                raise invalid
            return "sdist"
        if filename.endswith(".whl"):
            try:
                wheel_name, wheel_version, _, _ = parse_wheel_filename(filename)
            except InvalidWheelFilename:
                raise invalid from None
            if wheel_name != canonicalize_name(name) or wheel_version != version:
                raise invalid
            try:
                with zipfile.ZipFile(io.BytesIO(content)) as zf:
                    names = zf.namelist()
            except zipfile.BadZipFile:
                raise invalid from None
            if not any(n.endswith(".dist-info/WHEEL") for n in names):
                raise invalid
            return "bdist_wheel"
        raise _UploadError(400, "Invalid file extension: Use .tar.gz or .whl extension.")


def _version_key(raw: str) -> tuple[int, Any]:
    try:
        return (1, Version(raw))
    except InvalidVersion:
        return (0, raw)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def http_date_after(seconds: float) -> str:
    """An HTTP-date ``seconds`` from now (for tests of a date-valued Retry-After)."""
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


def first_release_days_ago(days: int) -> datetime:
    """An aware timestamp ``days`` before now, for seeding recent projects."""
    return datetime.now(timezone.utc) - timedelta(days=days)


@pytest.fixture
def fake_public() -> Iterator[FakePublicIndex]:
    """A started fake public index, stopped after the test."""
    fake = FakePublicIndex().start()
    try:
        yield fake
    finally:
        fake.stop()


__all__ = ["FakePublicIndex", "FaultPlan", "build_sdist", "fake_public", "make_sdist_bytes",
           "post_upload", "ultranormalize", "is_stdlib"]
