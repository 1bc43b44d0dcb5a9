"""Hostile and malformed webhook deliveries: never a 5xx, never an event for an invalid name."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _doubles import MemorySink, sign
from namekeeper.config import ArtifactoryConfig, Secret
from namekeeper.names import InvalidName, canonical, validate_name
from namekeeper.sources.artifactory import WEBHOOK_PATH, ArtifactorySource

pytestmark = pytest.mark.slow  # thousands of generated requests per test

SECRET = "whsec-fuzz-not-a-real-secret"
FUZZ = settings(max_examples=1500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


SINK = MemorySink()
SIGNED = ArtifactorySource(ArtifactoryConfig(secret=Secret(SECRET), signing=True,
                                             repos=("pypi-local", "pypi-staging")), max_body=65536)
PLAIN = ArtifactorySource(ArtifactoryConfig(secret=Secret(SECRET), signing=False),
                          max_body=65536)
APPS = {id(s): s.routes(SINK)[WEBHOOK_PATH] for s in (SIGNED, PLAIN)}


def deliver(source: ArtifactorySource, body: bytes, auth: str | None) -> tuple[int, Any]:
    """One delivery through the WSGI app; the answer must always be a small JSON body."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)),
                               "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "127.0.0.1"}
    if auth is not None:
        environ["HTTP_X_JFROG_EVENT_AUTH"] = auth
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = status

    out = b"".join(APPS[id(source)](environ, start_response))
    answer = json.loads(out)
    assert set(answer) in ({"status", "reason"}, {"ignored"})
    assert all(isinstance(v, str) for v in answer.values())
    return int(seen["status"].split()[0]), answer


def check(source: ArtifactorySource, body: bytes, auth: str | None, authentic: bool) -> int:
    """The invariants every answer keeps, whatever the body."""
    calls, events = SINK.calls, len(SINK.events)
    status, answer = deliver(source, body, auth)
    assert status in (200, 202, 400, 401, 411, 413), (status, answer)
    if not authentic:
        assert status == 401
    if status == 202:
        assert SINK.calls == calls + 1
        assert answer["status"] in ("accepted", "duplicate")
    else:
        assert SINK.calls == calls, "only a 202 may touch the store"
        assert "ignored" in answer if status == 200 else answer["status"] == "rejected"
    for event in SINK.events[events:]:
        assert validate_name(event.display_name) == event.display_name
        assert canonical(event.display_name) == event.name
        assert event.source == "artifactory" and event.key and event.index
    assert source.counters["rejected:uninterpretable"] == 0, "an exception escaped the parser"
    return status


HOSTILE_FILENAMES = [
    "../x", 'a"]\n[tool-1.0.tar.gz', "..\\x-1.0.tar.gz", "acme utils-1.0.tar.gz", "-1.0.tar.gz",
    "x" * 300 + "-1.0.tar.gz", "acm\u00e9-1.0.tar.gz", "acme\x00-1.0-py3-none-any.whl",
    "acme-1.0-py3-none-any.whl/..", "..", ".", "", "/", "acme_-1.0.tar.gz", ".acme-1.0.zip",
    "acme-1.0.egg", "a-b-c.whl", "acme\u2010utils-1.0.tar.gz", "ACME-1.0.TAR.GZ",
]
HOSTILE_NAMES = ["../x", 'a"]\n[tool', "", " ", "a" * 200, "acme\u00e9", "-acme", "acme.",
                 "a\x00b", "acme utils", "${jndi:x}", "acme/utils"]
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=40))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
HOSTILE_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(HOSTILE_FILENAMES),
    st.sampled_from(HOSTILE_NAMES),
    st.sampled_from(HOSTILE_NAMES).map(lambda n: [n]),
    st.integers(min_value=200, max_value=5000).map(lambda n: "x" * n),
    st.sampled_from(["deployed", "moved", "copied", "deleted", "added", "artifact",
                     "artifact_property", "pypi.name", "pypi.normalized.name", "pypi-local",
                     "pypi-staging/acme/1.0/acme-1.0.tar.gz", "pypi-local/../x"]),
    st.just(KeyError),  # marker: delete the field
)
VALID: list[dict[str, Any]] = [
    {"domain": "artifact", "event_type": "deployed",
     "data": {"repo_key": "pypi-local", "path": "acme-utils/1.0/acme_utils-1.0-py3-none-any.whl",
              "name": "acme_utils-1.0-py3-none-any.whl", "sha256": "a" * 64, "size": 2841},
     "subscription_key": "k", "jpd_origin": "", "source": "jfrog/jfrt@x"},
    {"domain": "artifact", "event_type": "moved",
     "data": {"repo_key": "other", "path": "acme-utils/1.0/acme_utils-1.0.tar.gz",
              "name": "acme_utils-1.0.tar.gz", "sha256": "b" * 64, "size": 1,
              "source_repo_path": "other/acme-utils/1.0/acme_utils-1.0.tar.gz",
              "target_repo_path": "pypi-staging/acme-utils/1.0/acme_utils-1.0.tar.gz"}},
    {"domain": "artifact_property", "event_type": "added",
     "data": {"repo_key": "pypi-local", "path": "acme-utils/1.0/acme_utils-1.0.tar.gz",
              "name": "acme_utils-1.0.tar.gz", "sha256": "c" * 64, "size": 1,
              "property_key": "pypi.name", "property_values": ["acme_utils"]}},
]
FIELDS = [("domain",), ("event_type",), ("data",), ("data", "repo_key"), ("data", "path"),
          ("data", "name"), ("data", "sha256"), ("data", "target_repo_path"),
          ("data", "property_key"), ("data", "property_values"), ("event",), ("jpd_origin",)]


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    payload = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(FIELDS))
        value = draw(HOSTILE_VALUES)
        target: Any = payload
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        if value is KeyError:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
    if draw(st.booleans()) and isinstance(payload.get("data"), dict):
        payload["data"] = json.dumps(payload["data"])
    return json.dumps(payload).encode()


BODIES = st.one_of(
    st.binary(max_size=600),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    mutated_payloads(),
)


@FUZZ
@given(body=BODIES, signed=st.booleans(), plain=st.booleans())
def test_any_body_signed_or_not_gets_a_consistent_answer(body: bytes, signed: bool,
                                                         plain: bool) -> None:
    source = PLAIN if plain else SIGNED
    auth = (SECRET if plain else sign(body, SECRET)) if signed else None
    check(source, body, auth, authentic=signed)


@FUZZ
@given(body=BODIES, auth=st.one_of(st.none(), st.text(max_size=80),
                                   st.binary(min_size=32, max_size=32).map(bytes.hex)))
def test_forged_or_garbled_auth_is_always_401(body: bytes, auth: str | None) -> None:
    check(SIGNED, body, auth, authentic=auth is not None and auth.strip().lower() == sign(body, SECRET))


def _is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True


@FUZZ
@given(name=st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_NAMES)),
       kind=st.sampled_from(["sdist", "wheel", "property"]), as_string=st.booleans())
def test_no_event_is_ever_accepted_for_an_invalid_name(name: str, kind: str,
                                                       as_string: bool) -> None:
    payload = copy.deepcopy(VALID[2] if kind == "property" else VALID[0])
    data = payload["data"]
    if kind == "property":
        data["property_values"] = [name]
    else:
        filename = (f"{name}-1.0.tar.gz" if kind == "sdist"
                    else f"{name}-1.0-py3-none-any.whl")
        data["name"], data["path"] = filename, f"{name}/1.0/{filename}"
    if as_string:
        payload["data"] = json.dumps(data)
    body = json.dumps(payload).encode()
    status = check(SIGNED, body, sign(body, SECRET), authentic=True)
    if not _is_valid_name(name):
        assert status in (200, 400), f"invalid name {name!r} answered {status}"
