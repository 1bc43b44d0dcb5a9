"""The Artifactory webhook receiver and reconciliation, as Artifactory would drive them."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import pytest
import webtest

from _doubles import MemorySink, sign
from _servers import serving, url_of, wait_for
from namekeeper import config as config_module
from namekeeper.config import ArtifactoryConfig, Secret
from namekeeper.model import NameEvent
from namekeeper.sources import artifactory
from namekeeper.sources.artifactory import WEBHOOK_PATH, ArtifactorySource

SECRET = "whsec-Zq9-not-a-real-secret"
TOKEN = "tok-Lr7-not-a-real-token"
WHEEL_SHA = "a" * 64
SDIST_SHA = "b" * 64


class FailingSink:
    def accept(self, event: NameEvent) -> bool:
        raise RuntimeError("database is locked")

    def take_turn(self, job: str, seconds: float) -> bool:
        return True  # one process: every periodic round is its turn

    def clear_condition(self, key: str) -> None:
        pass  # no conditions here


def deployed(path: str = "acme-utils/1.0/acme_utils-1.0-py3-none-any.whl",
             sha256: str = WHEEL_SHA, repo: str = "pypi-local",
             event_type: str = "deployed") -> dict[str, Any]:
    """A delivery shaped exactly like Artifactory's predefined `artifact` webhook."""
    return {
        "domain": "artifact",
        "event_type": event_type,
        "data": {"repo_key": repo, "path": path, "name": path.rsplit("/", 1)[-1],
                 "sha256": sha256, "size": 2841},
        "subscription_key": "namekeeper",
        "jpd_origin": "https://jfrog.example.invalid",
        "source": "jfrog/jfrt@01hhpqgjhcns8d0rxqx8gh0kjt",
    }


def moved(event_type: str, target_repo_path: str, source_repo: str = "pypi-staging"
          ) -> dict[str, Any]:
    payload = deployed(path="acme-utils/1.0/acme_utils-1.0.tar.gz", sha256=SDIST_SHA,
                       repo=source_repo, event_type=event_type)
    payload["data"]["source_repo_path"] = f"{source_repo}/acme-utils/1.0/acme_utils-1.0.tar.gz"
    payload["data"]["target_repo_path"] = target_repo_path
    return payload


def property_added(key: str = "pypi.name", values: list[Any] | None = None) -> dict[str, Any]:
    return {
        "domain": "artifact_property",
        "event_type": "added",
        "data": {"repo_key": "pypi-local",
                 "path": "acme-utils/1.0/acme_utils-1.0-py3-none-any.whl",
                 "name": "acme_utils-1.0-py3-none-any.whl", "sha256": WHEEL_SHA, "size": 2841,
                 "property_key": key,
                 "property_values": ["Acme_Utils"] if values is None else values},
        "subscription_key": "namekeeper",
        "jpd_origin": "https://jfrog.example.invalid",
        "source": "jfrog/jfrt@01hhpqgjhcns8d0rxqx8gh0kjt",
    }


def make_source(*, signing: bool = True, repos: tuple[str, ...] = ("pypi-local",),
                secret: str | None = SECRET, max_body: int = 1024 * 1024,
                **extra: Any) -> ArtifactorySource:
    cfg = ArtifactoryConfig(secret=Secret(secret) if secret else None, signing=signing,
                            repos=repos, **extra)
    return ArtifactorySource(cfg, max_body=max_body, timeout=5)


def client(source: ArtifactorySource, sink: Any) -> webtest.TestApp:
    return webtest.TestApp(source.routes(sink)[WEBHOOK_PATH])


def post(app: webtest.TestApp, payload: Any, *, auth: str | None = "sign",
         status: int | None = None) -> webtest.TestResponse:
    """POST a payload (dict → JSON, bytes as is); ``auth="sign"`` signs it with SECRET."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if auth == "sign":
        headers["X-JFrog-Event-Auth"] = sign(body, SECRET)
    elif auth is not None:
        headers["X-JFrog-Event-Auth"] = auth
    return app.post(WEBHOOK_PATH, body, headers=headers, status=status, expect_errors=True)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def app(sink: MemorySink) -> webtest.TestApp:
    return client(make_source(), sink)


# ---- acting on deliveries -------------------------------------------------------------------


def test_deployed_wheel_is_queued_with_name_from_the_filename(app: webtest.TestApp,
                                                              sink: MemorySink) -> None:
    res = post(app, deployed())
    assert res.status_int == 202
    assert res.json == {"status": "accepted", "reason": "acme-utils queued"}
    [event] = sink.events
    assert (event.name, event.display_name, event.version) == ("acme-utils", "acme_utils", "1.0")
    assert (event.source, event.index) == ("artifactory", "pypi-local")
    assert event.key == (f"artifactory:pypi-local:acme-utils/1.0/"
                         f"acme_utils-1.0-py3-none-any.whl:{WHEEL_SHA}")


def test_project_name_never_comes_from_the_folder(app: webtest.TestApp, sink: MemorySink) -> None:
    post(app, deployed(path="innocent-looking/9.9/Acme.Tools-2.1.tar.gz"), status=202)
    [event] = sink.events
    assert (event.name, event.display_name, event.version) == ("acme-tools", "Acme.Tools", "2.1")


@pytest.mark.parametrize("variant", ["sdist", "data-as-string", "no-jpd-origin",
                                     "empty-jpd-origin", "no-name", "wrapped-in-event"])
def test_shapes_artifactory_is_known_to_send(app: webtest.TestApp, sink: MemorySink,
                                             variant: str) -> None:
    payload = deployed(path="acme-utils/1.0/acme_utils-1.0.tar.gz", sha256=SDIST_SHA)
    if variant == "data-as-string":
        payload["data"] = json.dumps(payload["data"])
    elif variant == "no-jpd-origin":
        del payload["jpd_origin"]
    elif variant == "empty-jpd-origin":
        payload["jpd_origin"] = ""
    elif variant == "no-name":
        del payload["data"]["name"]
    elif variant == "wrapped-in-event":
        payload = {"event": {**payload, "data": json.dumps(payload["data"])}}
    res = post(app, payload)
    assert res.status_int == 202, res.json
    [event] = sink.events
    assert (event.name, event.version) == ("acme-utils", "1.0")
    assert event.key == f"artifactory:pypi-local:acme-utils/1.0/acme_utils-1.0.tar.gz:{SDIST_SHA}"


def test_the_same_delivery_twice_is_one_event(app: webtest.TestApp, sink: MemorySink) -> None:
    payload = deployed()
    first, second = post(app, payload), post(app, payload)
    assert (first.status_int, second.status_int) == (202, 202)
    assert second.json["status"] == "duplicate"
    assert len(sink.events) == 1


@pytest.mark.parametrize("event_type", ["moved", "copied"])
def test_move_or_copy_into_a_watched_repo_is_queued_for_the_target(
        app: webtest.TestApp, sink: MemorySink, event_type: str) -> None:
    payload = moved(event_type, "pypi-local/acme-utils/1.0/acme_utils-1.0.tar.gz")
    res = post(app, payload)
    assert res.status_int == 202, res.json
    [event] = sink.events
    assert (event.name, event.index) == ("acme-utils", "pypi-local")
    assert event.key == f"artifactory:pypi-local:acme-utils/1.0/acme_utils-1.0.tar.gz:{SDIST_SHA}"


@pytest.mark.parametrize("event_type", ["moved", "copied"])
def test_move_or_copy_into_an_unwatched_repo_is_ignored(
        app: webtest.TestApp, sink: MemorySink, event_type: str) -> None:
    payload = moved(event_type, "pypi-other/acme-utils/1.0/acme_utils-1.0.tar.gz",
                    source_repo="pypi-local")
    res = post(app, payload)
    assert res.status_int == 200
    assert res.json == {"ignored": "repository 'pypi-other' is not watched"}
    assert sink.events == []


def test_deployment_to_an_unwatched_repo_is_ignored(app: webtest.TestApp, sink: MemorySink) -> None:
    res = post(app, deployed(repo="docker-local"))
    assert res.status_int == 200 and "ignored" in res.json
    assert "not watched" in res.json["ignored"]
    assert sink.events == []


def test_every_repo_is_watched_when_none_are_listed(sink: MemorySink) -> None:
    app = client(make_source(repos=()), sink)
    post(app, deployed(repo="team-pypi"), status=202)
    assert sink.events[0].index == "team-pypi"


@pytest.mark.parametrize("payload, reason", [
    (deployed(event_type="deleted"), "deletions do not release a name"),
    ({**deployed(), "domain": "build", "event_type": "uploaded"}, "domain 'build' is not handled"),
    (deployed(path="acme-utils/1.0/acme_utils-1.0-py3-none-any.whl.metadata"),
     "not a Python distribution"),
    (deployed(path="acme-utils/1.0/acme_utils-1.0.tar.gz.asc"), "not a Python distribution"),
    (deployed(path=".pypi/acme-utils.json"), "not a Python distribution"),
    (deployed(path="acme-utils/1.0"), "not a Python distribution"),  # a folder
    (property_added(key="pypi.version", values=["1.0"]), "does not name a project"),
])
def test_understood_but_not_acted_on(app: webtest.TestApp, sink: MemorySink, payload: Any,
                                     reason: str) -> None:
    res = post(app, payload)
    assert res.status_int == 200
    assert reason in res.json["ignored"]
    assert sink.events == []


@pytest.mark.parametrize("repo", ["generic-local", "pypi-local"])
def test_jfrogs_own_sample_event_is_ignored_not_refused(sink: MemorySink, repo: str) -> None:
    app = client(make_source(repos=()), sink)  # every repository watched
    # JFrog's and telegraf's sample deliveries: a text file, and a checksum that is no checksum.
    sample = {"domain": "artifact", "event_type": "deployed",
              "data": {"repo_key": repo, "path": "sample_dir/sample.txt", "name": "sample.txt",
                       "size": 0, "sha256": "sample_checksum"},
              "subscription_key": "sample_key", "jpd_origin": "sample_url",
              "source": "jfrog/user@example.com"}
    res = post(app, sample)
    assert (res.status_int, res.json) == (200, {"ignored": "not a Python distribution"})
    assert sink.events == []


@pytest.mark.parametrize("key, value, name", [
    ("pypi.name", "Acme_Utils", "acme-utils"),
    ("pypi.normalized.name", "acme-utils", "acme-utils"),
])
def test_pypi_name_property_is_queued(app: webtest.TestApp, sink: MemorySink, key: str,
                                      value: str, name: str) -> None:
    res = post(app, property_added(key, [value]))
    assert res.status_int == 202, res.json
    [event] = sink.events
    assert (event.name, event.display_name, event.version) == (name, value, None)
    assert event.key == ("artifactory-prop:pypi-local:acme-utils/1.0/"
                         f"acme_utils-1.0-py3-none-any.whl:{name}")


# ---- authentication ---------------------------------------------------------------------------


def test_signed_delivery_accepts_upper_case_hex(app: webtest.TestApp, sink: MemorySink) -> None:
    body = json.dumps(deployed()).encode()
    post(app, body, auth=sign(body, SECRET).upper(), status=202)
    assert len(sink.events) == 1


@pytest.mark.parametrize("auth", [
    None,
    "",
    SECRET,  # the plain secret is not a signature
    "0" * 64,
    sign(b'{"domain": "artifact"}', SECRET),  # a valid signature of another body
    sign(json.dumps(deployed()).encode(), "another secret"),
])
def test_signing_mode_refuses_anything_but_the_body_signature(
        app: webtest.TestApp, sink: MemorySink, auth: str | None) -> None:
    res = post(app, json.dumps(deployed()).encode(), auth=auth)
    assert res.status_int == 401
    assert res.json == {"status": "rejected", "reason": "missing or invalid X-JFrog-Event-Auth"}
    assert sink.events == []


def test_signature_covers_the_raw_bytes_not_the_parsed_json(app: webtest.TestApp,
                                                            sink: MemorySink) -> None:
    signed = json.dumps(deployed()).encode()
    reformatted = json.dumps(deployed(), indent=2).encode()  # same JSON, other bytes
    post(app, reformatted, auth=sign(signed, SECRET), status=401)
    assert sink.events == []


@pytest.mark.parametrize("auth, status", [
    (SECRET, 202), (SECRET + "x", 401), (SECRET[:-1], 401), (None, 401),
    (sign(json.dumps(deployed()).encode(), SECRET), 401),  # a signature is not the secret
])
def test_plain_secret_mode(sink: MemorySink, auth: str | None, status: int) -> None:
    app = client(make_source(signing=False), sink)
    res = post(app, json.dumps(deployed()).encode(), auth=auth)
    assert res.status_int == status
    assert len(sink.events) == (1 if status == 202 else 0)


def test_without_a_secret_every_delivery_is_refused_and_that_is_logged_once(
        sink: MemorySink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="namekeeper")
    source = make_source(secret=None, signing=False)
    startup_errors = [r for r in caplog.records if "secret is not set" in r.getMessage()]
    assert len(startup_errors) == 1
    assert "NAMEKEEPER_ARTIFACTORY_SECRET" in startup_errors[0].getMessage()
    app = client(source, sink)
    for auth in ("", "None", sign(json.dumps(deployed()).encode(), "")):
        post(app, deployed(), auth=auth, status=401)
    assert sink.events == []
    assert source.counters["rejected:unauthorized"] == 3


# ---- body limits ----------------------------------------------------------------------------


class RecordingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        self.bytes_read += len(piece)
        return piece


def call(source: ArtifactorySource, sink: Any, body: bytes, environ: dict[str, Any]
         ) -> tuple[int, dict[str, Any], RecordingStream]:
    """Call the WSGI app directly, for requests webtest cannot express (chunked, bad lengths)."""
    stream = RecordingStream(body)
    env = {"REQUEST_METHOD": "POST", "wsgi.input": stream, "HTTP_X_JFROG_EVENT_AUTH": sign(body, SECRET),
           **environ}
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = status

    out = b"".join(source.routes(sink)[WEBHOOK_PATH](env, start_response))
    return int(seen["status"].split()[0]), json.loads(out), stream


def padded(size: int) -> bytes:
    """A valid delivery padded with whitespace to exactly ``size`` bytes."""
    body = json.dumps(deployed()).encode()
    return body + b" " * (size - len(body))


def test_body_over_the_limit_by_content_length_is_413_without_reading(sink: MemorySink) -> None:
    source = make_source(max_body=1000)
    body = padded(1001)
    status, answer, stream = call(source, sink, body, {"CONTENT_LENGTH": str(len(body))})
    assert status == 413
    assert answer == {"status": "rejected", "reason": "the body exceeds 1000 bytes"}
    assert stream.bytes_read == 0
    assert sink.events == []


def test_body_at_the_limit_is_accepted(sink: MemorySink) -> None:
    body = padded(1000)
    status, _, _ = call(make_source(max_body=1000), sink, body, {"CONTENT_LENGTH": "1000"})
    assert status == 202


def test_chunked_body_over_the_limit_is_413_after_reading_at_most_limit_plus_one(
        sink: MemorySink) -> None:
    source = make_source(max_body=1000)
    status, answer, stream = call(source, sink, padded(5000),
                                  {"HTTP_TRANSFER_ENCODING": "chunked"})
    assert status == 413
    assert stream.bytes_read <= 1001
    assert sink.events == []


def test_chunked_body_within_the_limit_is_accepted(sink: MemorySink) -> None:
    status, _, _ = call(make_source(max_body=1000), sink, padded(900),
                        {"HTTP_TRANSFER_ENCODING": "chunked"})
    assert status == 202
    assert len(sink.events) == 1


def test_webtest_over_the_limit_is_413(sink: MemorySink) -> None:
    app = client(make_source(max_body=1000), sink)
    res = post(app, padded(2000))
    assert res.status_int == 413


@pytest.mark.parametrize("environ, status, reason", [
    ({}, 411, "Content-Length required"),
    ({"CONTENT_LENGTH": "ten"}, 400, "invalid Content-Length"),
    ({"CONTENT_LENGTH": "-5"}, 400, "invalid Content-Length"),
    ({"CONTENT_LENGTH": "5000"}, 400, "shorter than its Content-Length"),
])
def test_missing_or_invalid_content_length(sink: MemorySink, environ: dict[str, str],
                                           status: int, reason: str) -> None:
    got, answer, _ = call(make_source(), sink, padded(900), environ)
    assert got == status
    assert reason in answer["reason"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_other_methods_are_405(app: webtest.TestApp, method: str) -> None:
    res = app.request(WEBHOOK_PATH, method=method, expect_errors=True)
    assert res.status_int == 405
    assert res.headers["Allow"] == "POST"


# ---- malformed deliveries ---------------------------------------------------------------------


def _with(path: tuple[str, ...], value: Any, base: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    payload = copy.deepcopy(base or deployed())
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return payload


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[1, 2]", "the body must be a JSON object"),
    (json.dumps({"event_type": "deployed"}).encode(), "domain is missing"),
    (json.dumps(_with(("domain",), ["artifact"])).encode(), "domain must be a string"),
    (json.dumps(_with(("data",), [1, 2])).encode(), "data must be an object"),
    (json.dumps(_with(("data",), "{broken")).encode(), "data is a string but not valid JSON"),
    (json.dumps(_with(("data", "name"), 12)).encode(), "data.name must be a string"),
    (json.dumps(_with(("data", "repo_key"), ["pypi-local"])).encode(),
     "data.repo_key must be a string"),
    (json.dumps(_with(("data", "repo_key"), "../etc")).encode(), "is not a repository key"),
    (json.dumps(_with(("data", "path"), {"a": {"b": [None]}})).encode(),
     "data.path must be a string"),
    (json.dumps(_with(("data", "path"), "x" * 5000)).encode(),
     "data.path is longer than 1024 characters"),
    (json.dumps(_with(("data", "sha256"), "not hex!")).encode(), "hexadecimal checksum"),
    (json.dumps(_with(("data", "name"), "other-1.0.tar.gz")).encode(),
     "does not match the last segment"),
    (json.dumps(_with(("data", "property_values"), "acme", property_added())).encode(),
     "property_values must be a non-empty list"),
    (json.dumps(_with(("data", "property_values"), [7], property_added())).encode(),
     "property_values must be a short list of strings"),
])
def test_malformed_deliveries_are_400_with_the_reason(app: webtest.TestApp, sink: MemorySink,
                                                      body: bytes, reason: str) -> None:
    res = post(app, body)
    assert res.status_int == 400
    assert res.json["status"] == "rejected"
    assert reason in res.json["reason"]
    assert sink.events == []


@pytest.mark.parametrize("payload, reason", [
    (_with(("data", "name"), "../x"), "is not a bare filename"),
    (deployed(path='evil/1.0/a"]\n[tool-1.0.tar.gz'), "is not a valid project name"),
    (deployed(path="evil/1.0/acme utils-1.0.tar.gz"), "is not a valid project name"),
    (deployed(path="evil/1.0/-1.0.tar.gz"), "not a valid distribution filename"),
    (deployed(path="../../acme-1.0.tar.gz"), "not a clean repository path"),
    (property_added(values=["../x"]), "is not a valid project name"),
    (property_added(values=['a"]\n[tool']), "is not a valid project name"),
])
def test_hostile_names_are_400_and_change_nothing(app: webtest.TestApp, sink: MemorySink,
                                                  payload: dict[str, Any], reason: str) -> None:
    res = post(app, payload)
    assert res.status_int == 400
    assert reason in res.json["reason"]
    assert sink.events == []


def test_a_failing_store_answers_503_so_artifactory_retries() -> None:
    source = make_source()
    app = client(source, FailingSink())
    res = post(app, deployed())
    assert res.status_int == 503
    assert res.json == {"status": "error", "reason": "the event could not be queued"}
    assert source.counters["error:sink"] == 1
    assert source.counters["accepted"] == 0


def test_counters_tell_what_happened(sink: MemorySink) -> None:
    source = make_source()
    app = client(source, sink)
    post(app, deployed())
    post(app, deployed())
    post(app, deployed(path="acme-utils/1.0/acme-utils.json"))
    post(app, deployed(), auth=None)
    post(app, b"{oops")
    post(app, deployed(path="x/1.0/a..-1.0.tar.gz"))
    assert source.metrics().events == {
        "accepted": 1, "duplicate": 1, "ignored:not_distribution": 1,
        "rejected:unauthorized": 1, "rejected:malformed_json": 1, "rejected:invalid_name": 1,
    }


def test_the_secret_never_appears_in_answers_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    for signing in (True, False):
        source = make_source(signing=signing)
        for sink in (MemorySink(), FailingSink()):
            app = client(source, sink)
            for auth in (SECRET, SECRET + "x", "sign", None, SECRET.upper()):
                for payload in (deployed(), b"{oops", property_added(values=["../x"])):
                    bodies.append(post(app, payload, auth=auth).text)
    make_source(secret=None)
    assert bodies
    assert not [b for b in bodies if SECRET in b]
    logged = [r.getMessage() + repr(r.args) for r in caplog.records]
    assert logged
    assert not [m for m in logged if SECRET in m or SECRET.upper() in m]


# ---- plugin hook ------------------------------------------------------------------------------


def test_hook_contributes_the_source_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAMEKEEPER_ARTIFACTORY_SECRET", raising=False)
    monkeypatch.delenv("NAMEKEEPER_ARTIFACTORY_TOKEN", raising=False)
    assert artifactory.namekeeper_event_sources(config_module.from_dict({})) == []

    monkeypatch.setenv("NAMEKEEPER_ARTIFACTORY_SECRET", SECRET)
    cfg = config_module.from_dict({"serve": {"max-body": 4096}})
    [source] = artifactory.namekeeper_event_sources(cfg)
    assert isinstance(source, ArtifactorySource)
    assert source.max_body == 4096
    assert list(source.routes(MemorySink())) == [WEBHOOK_PATH]


# ---- reconciliation ----------------------------------------------------------------------------


class FakeArtifactory:
    """Just enough of the storage and repositories APIs, with a Bearer token check."""

    def __init__(self) -> None:
        self.listings: dict[str, Any] = {}
        self.repositories: list[Any] = []
        self.failures: dict[str, list[int]] = {}  # repo → statuses to answer first, in order
        self.requests: list[tuple[str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                fake.requests.append((self.path, auth))
                if auth != f"Bearer {TOKEN}":
                    return self._answer(401, {"errors": [{"status": 401}]})
                parts = urlsplit(self.path)
                if parts.path == "/artifactory/api/repositories":
                    if parts.query != "packageType=pypi&type=local":
                        return self._answer(400, {})
                    return self._answer(200, fake.repositories)
                prefix = "/artifactory/api/storage/"
                if parts.path.startswith(prefix) and parts.query == "list&deep=1":
                    repo = parts.path[len(prefix):].strip("/")
                    pending = fake.failures.get(repo)
                    if pending:
                        return self._answer(pending.pop(0), {"errors": []})
                    if repo in fake.listings:
                        return self._answer(200, fake.listings[repo])
                return self._answer(404, {"errors": [{"status": 404}]})

            def _answer(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.handler = Handler
        self.base_url = ""  # set once it is served (the `fake_artifactory` fixture)


def listing(*uris: str) -> dict[str, Any]:
    return {"uri": "http://fake/artifactory/api/storage/pypi-local", "created": "2026-01-01",
            "files": [{"uri": uri, "size": 10, "lastModified": "2026-01-01", "folder": False,
                       "sha1": "c" * 40, "sha2": hashlib.sha256(uri.encode()).hexdigest()}
                      for uri in uris]}


@pytest.fixture
def fake_artifactory() -> Iterator[FakeArtifactory]:
    fake = FakeArtifactory()
    with serving(fake.handler) as server:
        fake.base_url = url_of(server) + "artifactory/"
        yield fake


def reconciling_source(fake: FakeArtifactory, repos: tuple[str, ...] = ("pypi-local",),
                       token: str = TOKEN, interval: float = 3600) -> ArtifactorySource:
    return make_source(repos=repos, base_url=fake.base_url, token=Secret(token),
                       reconcile_interval=interval)


def test_reconciliation_queues_missed_distributions_only(fake_artifactory: FakeArtifactory,
                                                        sink: MemorySink,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    fake_artifactory.listings["pypi-local"] = listing(
        "/acme-utils/1.0/acme_utils-1.0-py3-none-any.whl",
        "/acme-utils/1.0/acme_utils-1.0.tar.gz",
        "/acme-utils/1.0/acme_utils-1.0.tar.gz.asc",
        "/.pypi/acme-utils.json",
        "/Widget_Co/2.0/widget_co-2.0.zip",
        "/bad/1.0/-1.0.tar.gz",
    )
    source = reconciling_source(fake_artifactory)
    assert source.reconcile_once(sink) == 3
    assert sorted((e.name, e.version, e.index) for e in sink.events) == [
        ("acme-utils", "1.0", "pypi-local"), ("acme-utils", "1.0", "pypi-local"),
        ("widget-co", "2.0", "pypi-local")]
    sha = hashlib.sha256(b"/acme-utils/1.0/acme_utils-1.0.tar.gz").hexdigest()
    assert f"artifactory:pypi-local:acme-utils/1.0/acme_utils-1.0.tar.gz:{sha}" in sink.keys
    assert any("-1.0.tar.gz" in r.getMessage() for r in caplog.records)  # the bad one is named
    assert source.reconcile_once(sink) == 0  # nothing new the second time
    assert all(auth == f"Bearer {TOKEN}" for _, auth in fake_artifactory.requests)


def test_a_file_seen_by_webhook_and_by_reconciliation_is_one_event(
        fake_artifactory: FakeArtifactory, sink: MemorySink) -> None:
    uri = "/acme-utils/1.0/acme_utils-1.0.tar.gz"
    fake_artifactory.listings["pypi-local"] = listing(uri)
    source = reconciling_source(fake_artifactory)
    sha = hashlib.sha256(uri.encode()).hexdigest()
    post(client(source, sink), deployed(path=uri.lstrip("/"), sha256=sha), status=202)
    assert source.reconcile_once(sink) == 0
    assert len(sink.events) == 1


def test_reconciliation_lists_local_pypi_repos_when_none_are_configured(
        fake_artifactory: FakeArtifactory, sink: MemorySink) -> None:
    fake_artifactory.repositories = [{"key": "pypi-local", "type": "LOCAL"},
                                     {"key": "team-pypi", "type": "LOCAL"},
                                     {"key": "../evil"}, "garbage"]
    fake_artifactory.listings["pypi-local"] = listing("/a/1.0/a-1.0.tar.gz")
    fake_artifactory.listings["team-pypi"] = listing("/b/2.0/b-2.0-py3-none-any.whl")
    source = reconciling_source(fake_artifactory, repos=())
    assert source.reconcile_once(sink) == 2
    assert sorted((e.name, e.index) for e in sink.events) == [("a", "pypi-local"),
                                                              ("b", "team-pypi")]
    assert not any("evil" in path for path, _ in fake_artifactory.requests)


def test_a_failing_repo_is_logged_and_the_others_still_reconciled(
        fake_artifactory: FakeArtifactory, sink: MemorySink,
        caplog: pytest.LogCaptureFixture) -> None:
    fake_artifactory.listings["pypi-local"] = listing("/a/1.0/a-1.0.tar.gz")
    fake_artifactory.listings["team-pypi"] = listing("/b/2.0/b-2.0.tar.gz")
    fake_artifactory.failures["pypi-local"] = [500]
    source = reconciling_source(fake_artifactory, repos=("pypi-local", "team-pypi"))
    assert source.reconcile_once(sink) == 1
    assert [e.name for e in sink.events] == ["b"]
    assert any("'pypi-local'" in r.getMessage() and "HTTP 500" in r.getMessage()
               for r in caplog.records)
    assert source.reconcile_once(sink) == 1  # the next round picks it up
    assert sorted(e.name for e in sink.events) == ["a", "b"]


def test_reconciliation_failing_for_an_interval_turns_healthz_red_until_a_round_lists_all(
        fake_artifactory: FakeArtifactory, sink: MemorySink) -> None:
    # An expired token: every round fails, and webhooks it would catch up on stay missed.
    fake_artifactory.listings["pypi-local"] = listing("/a/1.0/a-1.0.tar.gz")
    source = reconciling_source(fake_artifactory, token="tok-expired", interval=60)
    assert source.reconcile_once(sink) == 0
    now = time.time()
    assert source.problems(now) == []  # one round: not yet an interval
    [problem] = source.problems(now + 61)
    assert "Artifactory reconciliation" in problem and "HTTP 401" in problem
    assert "tok-expired" not in problem and TOKEN not in problem
    source.config = dataclasses.replace(source.config, token=Secret(TOKEN))  # a new token
    assert source.reconcile_once(sink) == 1
    assert source.problems(now + 61) == []


def test_only_a_round_that_lists_every_repository_clears_the_sources_condition(
        fake_artifactory: FakeArtifactory, sink: MemorySink) -> None:
    # The service raises the problem as the condition "source:artifactory"; the replica whose
    # round works again is the one that can say it is over.
    fake_artifactory.listings["pypi-local"] = listing("/a/1.0/a-1.0.tar.gz")
    source = reconciling_source(fake_artifactory, token="tok-expired", interval=60)

    def one_round(done: Any) -> None:
        stop = threading.Event()
        loop = threading.Thread(target=source.run, args=(sink, stop))
        loop.start()
        wait_for(done, 10, "a reconciliation round")
        stop.set()
        loop.join(10)

    one_round(lambda: source._round_error is not None)
    assert sink.cleared == []
    source.config = dataclasses.replace(source.config, token=Secret(TOKEN))
    one_round(lambda: source._round_ok_at is not None)
    assert sink.cleared == [source.condition_key] == ["source:artifactory"]


def test_a_wrong_token_is_logged_without_the_token(fake_artifactory: FakeArtifactory,
                                                   sink: MemorySink,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake_artifactory.listings["pypi-local"] = listing("/a/1.0/a-1.0.tar.gz")
    wrong = "tok-wrong-not-a-real-token"
    assert reconciling_source(fake_artifactory, token=wrong).reconcile_once(sink) == 0
    assert reconciling_source(fake_artifactory, repos=(), token=wrong).reconcile_once(sink) == 0
    assert sink.events == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("HTTP 401" in m and "NAMEKEEPER_ARTIFACTORY_TOKEN" in m for m in messages)
    assert not [m for m in messages if wrong in m or TOKEN in m]


def test_run_survives_failures_retries_and_stops_promptly(fake_artifactory: FakeArtifactory,
                                                          sink: MemorySink) -> None:
    fake_artifactory.listings["pypi-local"] = listing("/a/1.0/a-1.0.tar.gz")
    fake_artifactory.failures["pypi-local"] = [500, 401]
    source = reconciling_source(fake_artifactory, interval=0.01)
    stop = threading.Event()
    loop = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    loop.start()
    try:
        assert sink.arrived.wait(timeout=30)
    finally:
        stop.set()
        loop.join(timeout=30)
    assert not loop.is_alive()
    assert [e.name for e in sink.events] == ["a"]
    assert fake_artifactory.failures["pypi-local"] == []  # both failures were met first


def test_run_stops_even_with_a_long_interval(fake_artifactory: FakeArtifactory,
                                             sink: MemorySink) -> None:
    fake_artifactory.listings["pypi-local"] = listing("/a/1.0/a-1.0.tar.gz")
    source = reconciling_source(fake_artifactory, interval=3600)
    stop = threading.Event()
    loop = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    loop.start()
    assert sink.arrived.wait(timeout=30)
    stop.set()
    loop.join(timeout=30)
    assert not loop.is_alive()


def test_run_without_base_url_or_token_only_waits_for_stop(sink: MemorySink) -> None:
    source = make_source()
    stop = threading.Event()
    loop = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    loop.start()
    stop.set()
    loop.join(timeout=30)
    assert not loop.is_alive()
    assert source.reconcile_once(sink) == 0
    assert sink.events == []
