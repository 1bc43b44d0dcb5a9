"""A real devpi-server for tests: started as a subprocess on 127.0.0.1, offline, fast.

devpi stands in for any private index (and for the public index where its
JSON API is not needed).  The server is initialised with ``--no-root-pypi``
so it never mirrors anything, and with cheap argon2 parameters so start-up
and every password check take milliseconds instead of seconds.

By default namekeeper's own devpi plugin (entry point ``namekeeper`` in the
``devpi_server`` group) is *blocked* in the server process, so the server is a
plain index; tests of that plugin call `start_devpi(..., namekeeper_plugin=True)`.

Usage::

    from _devpi import devpi, make_sdist  # noqa: F401

    def test_something(devpi, tmp_path):
        idx = devpi.new_index("mine")
        idx.upload(make_sdist(tmp_path, "acme-utils"))
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import requests
from packaging.utils import canonicalize_name

from _servers import free_port

#: Cheap password hashing (hidden devpi-server flags); only devpi-server knows them, not devpi-init.
ARGON2_FAST = ("--argon2-memory-cost", "8", "--argon2-parallelism", "1", "--argon2-time-cost", "1")
STARTUP_TIMEOUT = 60.0

# Runs devpi-init / devpi-server with a plugin manager that skips blocked entry points,
# so a test can choose whether namekeeper's devpi plugin is loaded.
_LAUNCHER = r"""
import sys
import pluggy
from devpi_server import hookspecs
command, blocked, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
pm = pluggy.PluginManager("devpiserver")
pm.add_hookspecs(hookspecs)
for name in filter(None, blocked.split(",")):
    pm.set_blocked(name)
pm.load_setuptools_entrypoints("devpi_server")
pm.check_pending()
if command == "init":
    from devpi_server.init import init
    sys.exit(init(pluginmanager=pm, argv=["devpi-init", *argv]))
from devpi_server.main import CommandRunner, _main
with CommandRunner(pluginmanager=pm) as runner:
    runner.return_code = _main(pm, argv=["devpi-server", *argv])
sys.exit(runner.return_code)
"""


class DevpiError(RuntimeError):
    """devpi did not start or refused a request; the message carries what it said."""


@dataclass(frozen=True)
class DevpiServer:
    """A running devpi-server, one user, and one empty stage index of that user."""

    url: str  # "http://127.0.0.1:PORT/"
    user: str
    password: str = field(repr=False)
    index: str  # "user/dev"
    simple_url: str  # url + "user/dev/+simple/"
    upload_url: str  # url + "user/dev/"
    serverdir: Path
    log_path: Path

    def session(self) -> requests.Session:
        """A requests session logged in as the user (``X-Devpi-Auth``), speaking JSON."""
        return _login(self.url, self.user, self.password)

    def new_index(self, name: str, **ixconfig: object) -> DevpiServer:
        """Create another empty stage index of the same user (no bases) and return a view on it.

        Each test takes its own index so it never sees another test's projects.
        Extra ``ixconfig`` keys (e.g. a plugin's per-index option) are sent as-is.
        """
        index = f"{self.user}/{name}"
        _create_index(self.session(), self.url, index, ixconfig)
        return replace(self, index=index, simple_url=f"{self.url}{index}/+simple/",
                       upload_url=f"{self.url}{index}/")

    def upload(self, *files: Path, index: str | None = None) -> None:
        """Upload ``files`` with the real twine CLI (basic auth), as a user of the index would."""
        upload_url = f"{self.url}{index}/" if index else self.upload_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
        result = subprocess.run(
            [sys.executable, "-m", "twine", "upload", "--repository-url", upload_url,
             "-u", self.user, "-p", self.password, "--non-interactive", "--disable-progress-bar",
             *map(str, files)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )
        if result.returncode != 0:
            raise DevpiError(f"twine upload to {upload_url} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _login(url: str, user: str, password: str) -> requests.Session:
    session = requests.Session()
    session.headers["Accept"] = "application/json"
    r = session.post(f"{url}+login", json={"user": user, "password": password}, timeout=30)
    if r.status_code != 200:
        raise DevpiError(f"devpi login as {user} failed: {r.status_code} {r.text[:500]}")
    result = r.json()["result"]
    session.headers["X-Devpi-Auth"] = _auth_header(user, result["password"])
    return session


def _auth_header(user: str, token: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{token}".encode()).decode("ascii")


def _create_index(session: requests.Session, url: str, index: str,
                  ixconfig: Mapping[str, object] = {}) -> None:
    body = {"type": "stage", "bases": [], "volatile": True, **ixconfig}
    r = session.put(f"{url}{index}", json=body, timeout=30)
    if r.status_code not in (200, 201):
        raise DevpiError(f"creating devpi index {index} failed: {r.status_code} {r.text[:500]}")


def _launch(command: str, blocked: Sequence[str], args: Sequence[str]) -> list[str]:
    return [sys.executable, "-c", _LAUNCHER, command, ",".join(blocked), *args]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    """Poll ``GET /+api`` until the server answers; fail with its log tail if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DevpiError(f"devpi-server exited with {proc.returncode} during start-up:\n"
                             f"{_tail(log_path, 40)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}+api", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise DevpiError(f"devpi-server at {url} not ready after {timeout:.0f} s:\n"
                             f"{_tail(log_path, 40)}")
        time.sleep(0.1)  # polling interval of a readiness condition, not a fixed wait


@contextlib.contextmanager
def start_devpi(
    workdir: Path,
    *,
    user: str = "user",
    password: str = "secret-pw",
    index: str = "dev",
    namekeeper_plugin: bool = False,
    server_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    initialise: bool = True,
) -> Iterator[DevpiServer]:
    """Initialise and run a devpi-server under ``workdir``; stop it on exit.

    ``namekeeper_plugin`` loads namekeeper's devpi plugin into the server (off
    by default); ``server_args`` and ``env`` (e.g. ``DEVPISERVER_*`` options)
    reach devpi-server only.  ``initialise=False`` runs a server directory that
    already holds data (e.g. from devpi-import): no devpi-init, no user or index
    created.
    """
    serverdir = workdir / "server"
    log_path = workdir / "devpi-server.log"
    blocked = () if namekeeper_plugin else ("namekeeper",)
    proc_env = {**os.environ, **(env or {})}
    if initialise:
        init = subprocess.run(
            _launch("init", blocked, ["--serverdir", str(serverdir), "--no-root-pypi"]),
            capture_output=True, text=True, env=proc_env, timeout=120, check=False,
        )
        if init.returncode != 0:
            raise DevpiError(f"devpi-init failed ({init.returncode}):\n{init.stdout}\n"
                             f"{init.stderr}")
    with running_devpi(serverdir, log_path, blocked=blocked, server_args=server_args,
                       env=proc_env) as url:
        full_index = f"{user}/{index}"
        if initialise:
            r = requests.put(f"{url}{user}", json={"password": password}, timeout=30,
                             headers={"Accept": "application/json"})
            if r.status_code not in (200, 201):
                raise DevpiError(f"creating devpi user {user} failed: {r.status_code} "
                                 f"{r.text[:500]}")
            _create_index(_login(url, user, password), url, full_index)
        yield DevpiServer(url=url, user=user, password=password, index=full_index,
                          simple_url=f"{url}{full_index}/+simple/",
                          upload_url=f"{url}{full_index}/", serverdir=serverdir,
                          log_path=log_path)


@contextlib.contextmanager
def running_devpi(serverdir: Path, log_path: Path, *, blocked: Sequence[str] = ("namekeeper",),
                  server_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                  timeout: float = STARTUP_TIMEOUT) -> Iterator[str]:
    """Serve the initialised ``serverdir`` on a free port of 127.0.0.1 (fast argon2, output to
    ``log_path``) until the block ends; yields its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            _launch("serve", blocked, ["--serverdir", str(serverdir), "--host", "127.0.0.1",
                                       "--port", str(port), *ARGON2_FAST, *server_args]),
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
    try:
        _wait_ready(url, proc, log_path, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def devpi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevpiServer]:
    """One plain devpi-server per test session; use `DevpiServer.new_index` per test."""
    with start_devpi(tmp_path_factory.mktemp("devpi")) as server:
        yield server


def make_sdist(tmp_dir: Path, name: str, version: str = "1.0", summary: str = "test") -> Path:
    """Write a minimal valid sdist by hand (PEP 625 name, one top dir, PKG-INFO 2.4)."""
    stem = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    pkg_info = (f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n"
                f"Summary: {summary}\n").encode()
    path = Path(tmp_dir) / f"{stem}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, data in ((f"{stem}/PKG-INFO", pkg_info),
                             (f"{stem}/pyproject.toml", b"[build-system]\nrequires = []\n")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def make_wheel(tmp_dir: Path, name: str, version: str = "1.0", summary: str = "test") -> Path:
    """Write a minimal valid pure-Python wheel by hand (METADATA, WHEEL, RECORD)."""
    import zipfile

    stem = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n"
                            f"Summary: {summary}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: namekeeper-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    path = Path(tmp_dir) / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return path
