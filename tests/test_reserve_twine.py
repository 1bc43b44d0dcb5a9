"""The twine reservation backend: every answer of the public index maps to the right Action.

All traffic stays on 127.0.0.1: the fake public index (tests/_fake_public.py),
a scripted one-answer server for answers the fake cannot be made to give, and
a real devpi-server.  Every test also checks, on teardown, that no token
reached stdout, stderr or a log record (see `no_secret_leaks`).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pluggy
import pytest
import requests

from _devpi import make_sdist
from _fake_public import (
    FakePublicIndex,
    FaultPlan,
    build_sdist,
    http_date_after,
)
from _servers import serving
from namekeeper import hookspecs
from namekeeper.config import Config, PublicConfig, Secret
from namekeeper.model import Action, UploadResult
from namekeeper.reserve import twine as twine_backend
from namekeeper.reserve.twine import TwineReservationBackend, is_transient, parse_retry_after

USER = "acme-bot"
TOKEN = "pypi-AgEIcHlwaS5vcmc-sEcReT-token-value-4711"
BAD_TOKEN = "pypi-AgEIcHlwaS5vcmc-wrong-token-value-0815"
DEVPI_PASSWORD = "secret-pw"  # the _devpi fixture's default password of its user


def _forms(secret: str, username: str = "__token__") -> list[str]:
    basic = base64.b64encode(f"{username}:{secret}".encode()).decode()
    return [secret, basic]


SECRET_FORMS = [*_forms(TOKEN), *_forms(BAD_TOKEN), *_forms(DEVPI_PASSWORD, "user")]


@pytest.fixture(autouse=True)
def no_secret_leaks(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
                    ) -> Iterator[None]:
    """Run each test with DEBUG logging, then check no token form reached output or logs."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    texts = [out, err, caplog.text, *(r.getMessage() for r in caplog.records)]
    for text in texts:
        for secret in SECRET_FORMS:
            assert secret not in text


def backend_for(url: str, token: str | None = TOKEN, *, username: str = "__token__",
                timeout: float = 10.0, config_file: str | None = None) -> TwineReservationBackend:
    public = PublicConfig(upload_url=url, username=username,
                          token=Secret(token) if token is not None else None, timeout=timeout)
    return TwineReservationBackend(public, config_file=config_file, use_keyring=False)


@pytest.fixture
def fake(fake_public: FakePublicIndex) -> FakePublicIndex:
    fake_public.add_user(USER, TOKEN)
    return fake_public


@pytest.fixture
def backend(fake: FakePublicIndex) -> TwineReservationBackend:
    return backend_for(fake.upload_url)


def upload(backend: TwineReservationBackend, tmp_path: Path, name: str, *,
           summary: str = "A placeholder") -> UploadResult:
    sdist = build_sdist(tmp_path / "dist", name, "0.0.0", summary=summary)
    result = backend.upload(name, [sdist])
    for secret in SECRET_FORMS:
        assert secret not in result.message
    return result


def owners(fake: FakePublicIndex, name: str) -> list[str]:
    project = fake.project(name)
    assert project is not None
    return list(project["owners"])


@pytest.fixture(autouse=True)
def _dist_dir(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()


# --------------------------------------------------------------------------- the fake's answers


def test_a_free_name_is_reserved_for_our_account(backend: TwineReservationBackend,
                                                 fake: FakePublicIndex, tmp_path: Path) -> None:
    result = upload(backend, tmp_path, "acme-utils")
    assert result.action is Action.RESERVED
    assert not is_transient(result)
    assert fake.uploads["acme-utils"] == 1
    assert owners(fake, "acme-utils") == [USER]


def test_a_second_different_file_under_the_same_filename_is_already_ours(
        backend: TwineReservationBackend, fake: FakePublicIndex, tmp_path: Path) -> None:
    assert upload(backend, tmp_path, "acme-utils").action is Action.RESERVED
    again = upload(backend, tmp_path, "acme-utils", summary="rebuilt, different bytes")
    assert again.action is Action.ALREADY_OURS
    assert "acme_utils-0.0.0.tar.gz" in again.message
    assert fake.uploads["acme-utils"] == 1


def test_an_identical_reupload_is_not_a_failure(backend: TwineReservationBackend,
                                                fake: FakePublicIndex, tmp_path: Path) -> None:
    """Warehouse answers 200 to the same bytes under the same filename: nothing new, no error."""
    assert upload(backend, tmp_path, "acme-utils").action is Action.RESERVED
    assert upload(backend, tmp_path, "acme-utils").action in (Action.RESERVED,
                                                              Action.ALREADY_OURS)
    assert fake.uploads["acme-utils"] == 1


def test_a_name_held_by_someone_else_is_taken(backend: TwineReservationBackend,
                                              fake: FakePublicIndex, tmp_path: Path) -> None:
    fake.add_project("acme-utils", owners=["mallory"])
    result = upload(backend, tmp_path, "acme-utils")
    assert result.action is Action.TAKEN
    assert not is_transient(result)
    assert owners(fake, "acme-utils") == ["mallory"]


@pytest.mark.parametrize(("name", "setup", "says"), [
    ("asyncio", None, "standard-library"),
    ("acme-forbidden", "prohibit", "prohibit"),
    ("acmeuti1s", "similar", "too similar"),
])
def test_names_the_index_refuses_to_everyone_are_protected(
        backend: TwineReservationBackend, fake: FakePublicIndex, tmp_path: Path,
        name: str, setup: str | None, says: str) -> None:
    if setup == "prohibit":
        fake.prohibit(name)
    elif setup == "similar":
        fake.add_project("acme-utils")
    result = upload(backend, tmp_path, name)
    assert result.action is Action.PROTECTED
    assert says in result.message
    assert not is_transient(result)
    assert fake.uploads[name] == 0


def test_the_new_project_rate_limit_says_when_to_retry(fake_public: FakePublicIndex,
                                                      tmp_path: Path) -> None:
    limited = FakePublicIndex(new_projects_per_hour=1).start()
    try:
        limited.add_user(USER, TOKEN)
        backend = backend_for(limited.upload_url)
        assert upload(backend, tmp_path, "acme-one").action is Action.RESERVED
        result = upload(backend, tmp_path, "acme-two")
    finally:
        limited.stop()
    assert result.action is Action.RATE_LIMITED
    assert result.retry_after is not None and 0 < result.retry_after <= 3600
    assert is_transient(result)
    assert limited.uploads["acme-two"] == 0


def test_a_429_retry_after_header_is_passed_on(backend: TwineReservationBackend,
                                               fake: FakePublicIndex, tmp_path: Path) -> None:
    fake.faults = FaultPlan(rate=1.0, kinds=("429",), paths=("/legacy/",))
    result = upload(backend, tmp_path, "acme-utils")
    assert result.action is Action.RATE_LIMITED
    assert result.retry_after == 1.0


def test_a_bad_token_fails_with_a_clear_final_message(fake: FakePublicIndex,
                                                      tmp_path: Path) -> None:
    result = upload(backend_for(fake.upload_url, BAD_TOKEN), tmp_path, "acme-utils")
    assert result.action is Action.FAILED
    assert "403" in result.message and "token" in result.message
    assert not is_transient(result)
    assert fake.uploads["acme-utils"] == 0


@pytest.mark.parametrize("kind", ["500", "reset"])
def test_server_errors_and_dropped_connections_are_transient_failures(
        backend: TwineReservationBackend, fake: FakePublicIndex, tmp_path: Path,
        kind: str) -> None:
    fake.faults = FaultPlan(rate=1.0, kinds=(kind,), paths=("/legacy/",))
    result = upload(backend, tmp_path, "acme-utils")
    assert result.action is Action.FAILED
    assert is_transient(result)
    assert fake.uploads["acme-utils"] == 0


def test_a_500_is_not_resent_by_twine(backend: TwineReservationBackend, fake: FakePublicIndex,
                                      tmp_path: Path) -> None:
    """Retrying with backoff is the queue's job; twine alone would resend five times at once."""
    fake.faults = FaultPlan(rate=1.0, kinds=("500",), paths=("/legacy/",))
    upload(backend, tmp_path, "acme-utils")
    assert fake.attempts["acme-utils"] == 1


def test_a_stalled_index_times_out_as_a_transient_failure(fake: FakePublicIndex,
                                                          tmp_path: Path) -> None:
    fake.faults = FaultPlan(rate=1.0, kinds=("stall",), stall_seconds=60, paths=("/legacy/",))
    result = upload(backend_for(fake.upload_url, timeout=0.3), tmp_path, "acme-utils")
    assert result.action is Action.FAILED
    assert is_transient(result)


# --------------------------------------------------------------------------- credentials


def test_without_a_token_nothing_is_sent(fake: FakePublicIndex, tmp_path: Path) -> None:
    backend = backend_for(fake.upload_url, token=None)
    assert not backend.has_credentials()
    assert "NAMEKEEPER_PUBLIC_TOKEN" in (backend.unready_reason() or "")
    result = upload(backend, tmp_path, "acme-utils")
    assert result.action is Action.FAILED
    assert "no upload token" in result.message and "NAMEKEEPER_PUBLIC_TOKEN" in result.message
    assert result.credentials_problem == backend.unready_reason()  # one text, start or upload
    assert not is_transient(result)
    assert not fake.attempts
    assert not fake.requests


def test_a_pypirc_section_for_the_upload_url_supplies_the_token(
        fake: FakePublicIndex, tmp_path: Path) -> None:
    pypirc = tmp_path / "pypirc"
    pypirc.write_text("[distutils]\nindex-servers = other public\n\n"
                      "[other]\nrepository = http://127.0.0.1:9/legacy/\n"
                      f"username = __token__\npassword = {BAD_TOKEN}\n\n"
                      f"[public]\nrepository = {fake.upload_url}\n"
                      f"username = __token__\npassword = {TOKEN}\n")
    backend = backend_for(fake.upload_url, token=None, config_file=str(pypirc))
    assert backend.has_credentials() and backend.unready_reason() is None
    assert upload(backend, tmp_path, "acme-utils").action is Action.RESERVED


def test_a_pypirc_without_our_upload_url_supplies_nothing(fake: FakePublicIndex,
                                                          tmp_path: Path) -> None:
    pypirc = tmp_path / "pypirc"
    pypirc.write_text("[distutils]\nindex-servers = other\n\n"
                      "[other]\nrepository = http://127.0.0.1:9/legacy/\n"
                      f"username = __token__\npassword = {BAD_TOKEN}\n")
    backend = backend_for(fake.upload_url, token=None, config_file=str(pypirc))
    assert not backend.has_credentials()
    assert upload(backend, tmp_path, "acme-utils").action is Action.FAILED
    assert not fake.attempts


def test_an_unreadable_pypirc_means_no_credentials(fake: FakePublicIndex, tmp_path: Path) -> None:
    backend = backend_for(fake.upload_url, token=None, config_file=str(tmp_path / "missing"))
    assert not backend.has_credentials()


# --------------------------------------------------------------------------- refusing bad input


@pytest.mark.parametrize(("name", "filename"), [
    ("acme-utils", "other_name-0.0.0.tar.gz"),  # a file that is not this name's
    ("Acme_Utils", "acme_utils-0.0.0.tar.gz"),  # not canonical
    ("../x", "acme_utils-0.0.0.tar.gz"),  # not a name at all
])
def test_files_that_do_not_belong_to_the_name_are_not_sent(
        backend: TwineReservationBackend, fake: FakePublicIndex, tmp_path: Path,
        name: str, filename: str) -> None:
    sdist = build_sdist(tmp_path / "dist", "acme-utils", "0.0.0", filename=filename)
    result = backend.upload(name, [sdist])
    assert result.action is Action.FAILED
    assert not fake.attempts


def test_a_missing_file_is_a_failure_not_an_exception(backend: TwineReservationBackend,
                                                      fake: FakePublicIndex,
                                                      tmp_path: Path) -> None:
    result = backend.upload("acme-utils", [tmp_path / "acme_utils-0.0.0.tar.gz"])
    assert result.action is Action.FAILED
    assert not fake.attempts


# --------------------------------------------------------------------------- output and secrets


def test_twine_output_goes_to_our_logger_not_stdout(backend: TwineReservationBackend,
                                                    tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    assert upload(backend, tmp_path, "acme-utils").action is Action.RESERVED
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    twine_lines = [r.getMessage() for r in caplog.records
                   if r.name == "namekeeper.reserve.twine" and r.getMessage().startswith("twine:")]
    assert any("Uploading" in line for line in twine_lines)


class _Scripted(BaseHTTPRequestHandler):
    """Answers every POST with the server's scripted status, reason, headers and body.

    With ``echo`` the reason phrase and body repeat the request's Authorization
    header and decoded password: the worst an index could do to our secrets.
    """

    server: _ScriptedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts += 1
        status, reason, headers, body = self.server.script
        if self.server.echo:
            auth = self.headers.get("Authorization", "")
            password = base64.b64decode(auth.split(" ", 1)[1]).decode().partition(":")[2]
            reason = f"{reason} (you sent {auth}, password {password})"
            body = f"{body}\n{auth}\n{password}\n"
        data = body.encode()
        self.send_response(status, reason)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True
    script: tuple[int, str, dict[str, str], str] = (200, "OK", {}, "")
    echo = False
    posts = 0

    @property
    def upload_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/legacy/"


@pytest.fixture
def scripted() -> Iterator[_ScriptedServer]:
    with serving(_Scripted, server_class=_ScriptedServer) as server:
        assert isinstance(server, _ScriptedServer)
        yield server


@pytest.mark.parametrize(("status", "reason", "body", "action", "says"), [
    (400, "'-x' is an invalid value for Name. Error: Start and end with a letter.", "",
     Action.FAILED, "not a valid project name"),
    # The reason phrase is generic: the text is found in the body instead.
    (403, "Forbidden", "The user 'mallory' isn't allowed to upload to project 'acme-utils'.",
     Action.TAKEN, "another account"),
    (409, "Conflict", "acme_utils-0.0.0.tar.gz already exists in non-volatile index",
     Action.ALREADY_OURS, "already ours"),
    # A file name once used is refused for ever, its file gone: nothing is held.
    (400, "This filename has already been used, use a different version. See /help/ for more "
          "information.", "", Action.FAILED, "is not held; set [placeholder] version"),
    (401, "Unauthorized", "", Action.FAILED, "credentials"),
    (400, "Invalid distribution file.", "", Action.FAILED, "Invalid distribution file"),
    (503, "Service Unavailable", "", Action.FAILED, "try again later"),
    # "isn't allowed" about something other than the name is no protected name.
    (400, "Classifier 'Private :: Do Not Upload' isn't allowed.", "", Action.FAILED,
     "refused"),
])
def test_answers_map_to_actions(scripted: _ScriptedServer, tmp_path: Path, status: int,
                                reason: str, body: str, action: Action, says: str) -> None:
    scripted.script = (status, reason, {}, body)
    result = upload(backend_for(scripted.upload_url), tmp_path, "acme-utils")
    assert result.action is action
    assert says in result.message
    assert is_transient(result) == (status == 503)
    # Only a refusal of our credentials is no fault of the name (`serve` holds every upload).
    assert (result.credentials_problem is not None) == (status == 401)


def test_a_retry_after_http_date_is_converted_to_seconds(scripted: _ScriptedServer,
                                                         tmp_path: Path) -> None:
    scripted.script = (429, "Too many new projects created",
                       {"Retry-After": http_date_after(120)}, "")
    result = upload(backend_for(scripted.upload_url), tmp_path, "acme-utils")
    assert result.action is Action.RATE_LIMITED
    assert result.retry_after is not None and 60 < result.retry_after <= 120


def test_a_token_echoed_by_the_index_is_scrubbed(scripted: _ScriptedServer,
                                                 tmp_path: Path) -> None:
    scripted.script = (400, "Bad Request", {}, "nope")
    scripted.echo = True
    result = upload(backend_for(scripted.upload_url), tmp_path, "acme-utils")
    assert result.action is Action.FAILED
    assert "***" in result.message
    assert scripted.posts == 1


def test_a_refusal_of_our_credentials_says_so_without_the_name_or_the_token(
        scripted: _ScriptedServer, tmp_path: Path) -> None:
    scripted.script = (403, "Invalid or non-existent authentication information.", {}, "")
    scripted.echo = True
    result = upload(backend_for(scripted.upload_url), tmp_path, "acme-utils")
    assert result.action is Action.FAILED and "acme-utils" in result.message  # the CLI's words
    problem = result.credentials_problem or ""
    assert "refuses our upload credentials (403 Invalid or non-existent" in problem
    assert "account-wide" in problem and "acme-utils" not in problem
    assert TOKEN not in problem and "***" in problem and TOKEN not in result.message


@pytest.mark.parametrize(("header", "expected"), [
    ("30", 30.0), (" 2.5 ", 2.5), ("", None), (None, None), ("-3", None), ("soon", None),
    ("nan", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


# --------------------------------------------------------------------------- plugin and devpi


def test_the_real_placeholder_is_accepted(backend: TwineReservationBackend,
                                          fake: FakePublicIndex, tmp_path: Path) -> None:
    from namekeeper.placeholder.builder import TemplatePlaceholderBuilder

    files = TemplatePlaceholderBuilder(Config()).build("acme-utils", "Acme_Utils",
                                                       tmp_path / "dist")
    result = backend.upload("acme-utils", files)
    assert result.action is Action.RESERVED, result.message
    assert fake.uploads["acme-utils"] == 1


def test_the_module_is_the_reservation_backend_plugin(fake: FakePublicIndex) -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(twine_backend)
    config = Config(public=PublicConfig(upload_url=fake.upload_url, token=Secret(TOKEN)))
    backend = pm.hook.namekeeper_reservation_backend(config=config)
    assert isinstance(backend, TwineReservationBackend)
    assert backend.upload_url == fake.upload_url


@pytest.mark.slow
def test_a_placeholder_uploads_to_a_real_devpi(devpi: Any, tmp_path: Path) -> None:
    assert devpi.password == DEVPI_PASSWORD  # so the leak check covers it
    index = devpi.new_index("reserve-twine")
    backend = backend_for(index.upload_url, devpi.password, username=devpi.user)
    sdist = make_sdist(tmp_path, "acme-utils", "0.0.0")
    result = backend.upload("acme-utils", [sdist])
    assert result.action is Action.RESERVED, result.message
    page = requests.get(f"{index.simple_url}acme-utils/", timeout=30)
    assert page.status_code == 200
    assert "acme_utils-0.0.0.tar.gz" in page.text


def test_two_workers_upload_at_once_without_mixing_output(backend: TwineReservationBackend,
                                                          fake: FakePublicIndex, tmp_path: Path,
                                                          capfd: pytest.CaptureFixture[str]
                                                          ) -> None:
    names = [f"acme-worker-{i}" for i in range(8)]
    files = {n: build_sdist(tmp_path / "dist", n, "0.0.0") for n in names}
    results: dict[str, UploadResult] = {}

    def work(chunk: list[str]) -> None:
        for n in chunk:
            results[n] = backend.upload(n, [files[n]])

    threads = [threading.Thread(target=work, args=(names[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert {n: r.action for n, r in results.items()} == {n: Action.RESERVED for n in names}
    assert all(fake.uploads[n] == 1 for n in names)
    out, _err = capfd.readouterr()
    assert out == ""
