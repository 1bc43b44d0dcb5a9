"""The devpi-server plugin end to end: a real devpi-server with namekeeper loaded, real twine.

Uploads go to devpi on 127.0.0.1; placeholders go to the fake public index.  No
assertion depends on timing: "nothing was uploaded" is checked after a later
upload's placeholder arrived, since devpi's event thread handles uploads in
order.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from _devpi import DevpiServer, _launch, make_sdist, make_wheel, running_devpi, start_devpi
from _fake_public import FakePublicIndex
from _servers import wait_for

pytestmark = pytest.mark.slow

TOKEN = "pypi-devpi-plugin-token-SECRET"


def write_config(path: Path, fake: FakePublicIndex, extra: str = "") -> Path:
    path.write_text(fake.config_toml(owners=["acme-security"]) + """
[placeholder]
organization = "ACME Corp"
contact = "security@acme.example"
[store]
path = "state.sqlite3"
[queue]
backoff-base = 1.2
backoff-max = 1
""" + extra)
    return path


@pytest.fixture(scope="module")
def public() -> Iterator[FakePublicIndex]:
    fake = FakePublicIndex().start()
    fake.add_user("acme-security", TOKEN)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory,
            public: FakePublicIndex) -> Iterator[DevpiServer]:
    work = tmp_path_factory.mktemp("devpi-nk")
    config = write_config(work / "namekeeper.toml", public)
    with start_devpi(work, namekeeper_plugin=True,
                     server_args=["--namekeeper-config", str(config),
                                  "--role", "primary", "--secretfile", str(secret_file(work))],
                     env={"NAMEKEEPER_PUBLIC_TOKEN": TOKEN}) as server:
        yield server


def secret_file(work: Path) -> Path:
    """The secret a primary and its replicas share (devpi wants it private to the user)."""
    import secrets

    path = work / "devpi-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path


def status(server: DevpiServer, *, html: bool = False) -> Any:
    accept = "text/html" if html else "application/json"
    r = requests.get(f"{server.url}+namekeeper/status", headers={"Accept": accept}, timeout=30)
    assert r.status_code == 200, r.text
    return r.text if html else r.json()


def names(server: DevpiServer) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in status(server)["names"]}


def release(tmp_path: Path, name: str, version: str = "1.0") -> list[Path]:
    directory = tmp_path / f"{name}-{version}"
    directory.mkdir(exist_ok=True)
    return [make_sdist(directory, name, version), make_wheel(directory, name, version)]


def reserved(public: FakePublicIndex, name: str) -> bool:
    return public.uploads[name] >= 1


def test_devpi_lists_the_option_and_the_feature(primary: DevpiServer) -> None:
    help_text = subprocess.run(_launch("serve", (), ["--help"]), capture_output=True, text=True,
                               timeout=120, check=True).stdout
    assert "--namekeeper-config" in help_text
    api = requests.get(f"{primary.url}+api", headers={"Accept": "application/json"}, timeout=30)
    assert "namekeeper" in api.json()["result"]["features"]


def test_an_upload_to_an_opted_in_index_is_reserved_once_and_other_indexes_are_left_alone(
        primary: DevpiServer, public: FakePublicIndex, tmp_path: Path) -> None:
    plain = primary.new_index("plain")
    prod = primary.new_index("prod", reserve_public_names=True)
    plain.upload(*release(tmp_path, "acme-plain-lib"))
    prod.upload(*release(tmp_path, "acme-secret-lib"))
    wait_for(lambda: reserved(public, "acme-secret-lib"), 60, "acme-secret-lib reserved")

    # Replays of every kind: a re-upload, a new version, docs, a push to another opted-in index.
    prod.upload(*release(tmp_path, "acme-secret-lib"))
    prod.upload(*release(tmp_path, "acme-secret-lib", "2.0"))
    upload_docs(prod, "acme-secret-lib", "2.0")
    primary.new_index("prod2", reserve_public_names=True)
    push = prod.session().request("PUSH", f"{primary.url}{prod.index}", timeout=30, json={
        "name": "acme-secret-lib", "version": "2.0",
        "targetindex": f"{primary.user}/prod2"})
    assert push.status_code == 200, push.text
    # A later name's placeholder means everything before it has been handled.
    prod.upload(*release(tmp_path, "acme-marker-lib"))
    wait_for(lambda: reserved(public, "acme-marker-lib"), 60, "acme-marker-lib reserved")
    wait_for(lambda: names(primary).get("acme-marker-lib", {}).get("queue") == "done", 30,
             "the marker settled")

    assert public.uploads["acme-secret-lib"] == 1
    assert public.uploads["acme-plain-lib"] == 0
    shown = names(primary)
    assert "acme-plain-lib" not in shown
    row = shown["acme-secret-lib"]
    assert (row["verdict"], row["action"], row["index"], row["queue"]) == (
        "ours", "reserved", prod.index, "done")
    assert row["updated_at"] and row["severity"] == "none"
    report = status(primary)
    assert report["plugin"]["healthy"], report["plugin"]
    assert report["plugin"]["token_present"] and report["plugin"]["budget_left"] >= 1
    assert TOKEN not in json.dumps(report)
    page = status(primary, html=True)
    assert "<table>" in page and "acme-secret-lib" in page and TOKEN not in page


def devpi_client(tmp_path: Path, *args: str) -> str:
    devpi = Path(sys.executable).parent / "devpi"
    result = subprocess.run([str(devpi), "--clientdir", str(tmp_path / "client"), *args],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def upload_docs(index: DevpiServer, name: str, version: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("index.html", "<html>docs</html>")
    r = index.session().post(index.upload_url, timeout=30, data={
        ":action": "doc_upload", "name": name, "version": version},
        files={"content": (f"{name}-{version}.doc.zip", buffer.getvalue())})
    assert r.status_code == 200, r.text


def test_setting_the_key_on_an_index_with_projects_reserves_all_of_them(
        primary: DevpiServer, public: FakePublicIndex, tmp_path: Path) -> None:
    legacy = primary.new_index("legacy")
    existing = ["acme-old-one", "acme-old-two", "acme-old-three"]
    for name in existing:
        legacy.upload(*release(tmp_path, name))
    # The README's command, with the real devpi client.
    devpi_client(tmp_path, "use", primary.url)
    devpi_client(tmp_path, "login", primary.user, "--password", primary.password)
    devpi_client(tmp_path, "index", legacy.index, "reserve_public_names=True")
    wait_for(lambda: all(reserved(public, n) for n in existing), 60, "every old project reserved")
    assert all(public.uploads[n] == 1 for n in existing)
    assert {n: names(primary)[n]["index"] for n in existing} == dict.fromkeys(existing,
                                                                              legacy.index)


def test_the_public_index_down_during_an_upload(primary: DevpiServer, public: FakePublicIndex,
                                                tmp_path: Path) -> None:
    prod = primary.new_index("outage", reserve_public_names=True)
    public.stop()
    try:
        prod.upload(*release(tmp_path, "acme-outage-lib"))  # devpi takes it regardless
        wait_for(lambda: not status(primary)["plugin"]["public_index_reachable"], 60,
                 "the status to show the outage")
        report = status(primary)
        assert not report["plugin"]["healthy"]
        assert any("unreachable" in p for p in report["plugin"]["problems"])
        # Waiting in the queue (or being tried again right now), never given up on.
        assert names(primary)["acme-outage-lib"]["queue"] in ("pending", "claimed")
    finally:
        public.start()
    wait_for(lambda: reserved(public, "acme-outage-lib"), 60, "reserved once the index is back")
    assert public.uploads["acme-outage-lib"] == 1


def test_a_broken_config_never_blocks_uploads_and_the_status_says_why(
        tmp_path: Path, public: FakePublicIndex) -> None:
    config = tmp_path / "namekeeper.toml"
    config.write_text("[public\nthis is not toml")
    with start_devpi(tmp_path, namekeeper_plugin=True, env={
            "DEVPISERVER_NAMEKEEPER_CONFIG": str(config)}) as server:
        prod = server.new_index("prod", reserve_public_names=True)
        prod.upload(*release(tmp_path, "acme-broken-cfg-lib"))
        report = status(server)
        assert not report["plugin"]["healthy"] and not report["plugin"]["config_loaded"]
        assert any("not valid TOML" in p for p in report["plugin"]["problems"])
        assert "not valid TOML" in status(server, html=True)
        simple = requests.get(f"{prod.simple_url}acme-broken-cfg-lib/", timeout=30)
        assert simple.status_code == 200 and "acme_broken_cfg_lib-1.0.tar.gz" in simple.text
    assert public.uploads["acme-broken-cfg-lib"] == 0


def test_an_unconfigured_plugin_is_inert_and_says_so_once(tmp_path: Path) -> None:
    with start_devpi(tmp_path, namekeeper_plugin=True) as server:
        prod = server.new_index("prod", reserve_public_names=True)
        prod.upload(*release(tmp_path, "acme-unconfigured-lib"))
        report = status(server)
        assert report["names"] == [] and not report["plugin"]["config_loaded"]
        assert "not configured" in report["plugin"]["problems"][0]
        log = server.log_path.read_text()
    assert log.count("namekeeper plugin: not configured") == 1


def test_devpi_export_and_import_reserve_nothing_twice(tmp_path: Path,
                                                       public: FakePublicIndex) -> None:
    config = write_config(tmp_path / "namekeeper.toml", public)
    args = ["--namekeeper-config", str(config)]
    token = {"NAMEKEEPER_PUBLIC_TOKEN": TOKEN}
    with start_devpi(tmp_path / "a", namekeeper_plugin=True, server_args=args, env=token) as old:
        prod = old.new_index("prod", reserve_public_names=True)
        prod.upload(*release(tmp_path, "acme-imported-lib"))
        wait_for(lambda: reserved(public, "acme-imported-lib"), 60, "reserved before export")
        wait_for(lambda: names(old).get("acme-imported-lib", {}).get("queue") == "done", 60,
                 "the outcome recorded before the server stops")
    dump, new_dir = tmp_path / "dump", tmp_path / "b" / "server"
    devpi_command("export", "--serverdir", str(old.serverdir), str(dump))
    devpi_command("import", "--serverdir", str(new_dir), "--no-root-pypi", str(dump))
    with start_devpi(tmp_path / "b", namekeeper_plugin=True, server_args=args, env=token,
                     initialise=False) as new:
        imported = replace_index(new, prod.index)
        imported.upload(*release(tmp_path, "acme-after-import-lib"))
        wait_for(lambda: reserved(public, "acme-after-import-lib"), 60, "the marker reserved")
        wait_for(lambda: names(new).get("acme-after-import-lib", {}).get("queue") == "done", 30,
                 "the marker settled")
        assert names(new)["acme-imported-lib"]["action"] == "reserved"
    assert public.uploads["acme-imported-lib"] == 1


def devpi_command(command: str, *args: str) -> None:
    """devpi-export / devpi-import, with namekeeper installed as it would be."""
    script = (f"import sys; from devpi_server.importexport import {command}{'_' * (command == 'import')}"
              f" as run; sys.exit(run(argv=['devpi-{command}', *sys.argv[1:]]))")
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def replace_index(server: DevpiServer, index: str) -> DevpiServer:
    import dataclasses

    return dataclasses.replace(server, index=index, simple_url=f"{server.url}{index}/+simple/",
                               upload_url=f"{server.url}{index}/")


def test_a_replica_replays_history_and_uploads_nothing(
        primary: DevpiServer, public: FakePublicIndex, tmp_path: Path) -> None:
    prod = primary.new_index("replicated", reserve_public_names=True)
    prod.upload(*release(tmp_path, "acme-replicated-lib"))
    wait_for(lambda: reserved(public, "acme-replicated-lib"), 60, "reserved by the primary")
    before = dict(public.uploads)
    config = write_config(tmp_path / "replica.toml", public)
    with start_replica(tmp_path / "replica", primary, config) as replica_url:
        serial = int(requests.get(f"{primary.url}+status", timeout=30,
                                  headers={"Accept": "application/json"}
                                  ).json()["result"]["serial"])

        def caught_up() -> bool:
            result = requests.get(f"{replica_url}+status", timeout=30,
                                  headers={"Accept": "application/json"}).json()["result"]
            return int(result["serial"]) >= serial and int(result["event-serial"]) >= serial

        wait_for(caught_up, 120, "the replica to replay the primary's history")
        replica_status = requests.get(f"{replica_url}+namekeeper/status", timeout=30,
                                      headers={"Accept": "application/json"}).json()
        assert replica_status["plugin"]["role"] == "replica"
        assert replica_status["names"] == []
    assert dict(public.uploads) == before
    assert not (tmp_path / "state.sqlite3").exists()  # the replica never opened a store


@contextlib.contextmanager
def start_replica(workdir: Path, primary: DevpiServer, config: Path) -> Iterator[str]:
    """A devpi replica of ``primary`` with namekeeper loaded (``config``); yields its URL."""
    workdir.mkdir(parents=True)
    subprocess.run(_launch("init", (), ["--serverdir", str(workdir / "server"), "--role",
                                        "replica", "--primary-url", primary.url]),
                   capture_output=True, timeout=120, check=True)
    with running_devpi(workdir / "server", workdir / "replica.log", blocked=(), server_args=[
            "--primary-url", primary.url, "--namekeeper-config", str(config),
            "--secretfile", str(secret_file(primary.serverdir.parent))],
            env={**os.environ, "NAMEKEEPER_PUBLIC_TOKEN": TOKEN}) as url:
        yield url


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
