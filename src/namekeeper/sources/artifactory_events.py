"""What an Artifactory delivery or file means: a `NameEvent`, or the reason there is none.

Both ways Artifactory tells us about a file -- a webhook delivery (parsed here
from its JSON body by `event_from_payload`) and a line of a reconciliation
listing -- end in `artifact_event`, so a file seen both ways gets the same
idempotency key and is one event.  Everything in a delivery is untrusted:
each field is checked for type, length and shape before use, and a bad one
raises `DeliveryRejected` (a 4xx naming the field), while a well-formed
delivery with nothing to act on raises `DeliveryIgnored` (a 200).

It lives apart from the webhook receiver (`namekeeper.sources.artifactory`)
and the reconciliation (`namekeeper.sources.artifactory_reconcile`) because
both depend on it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..model import NameEvent
from ..names import InvalidName, canonical, name_from_filename, shown, validate_name

SOURCE_NAME = "artifactory"

#: Properties Artifactory sets on a PyPI package about a minute after upload.
PYPI_NAME_PROPERTIES = frozenset({"pypi.name", "pypi.normalized.name"})
#: Suffixes `name_from_filename` understands; anything else is not a Python distribution.
DIST_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar", ".egg")

MAX_PATH_LENGTH = 1024
MAX_WORD_LENGTH = 128  # domain, event type, property key, checksum
MAX_PROPERTY_VALUES = 64
# Artifactory repository keys: letters, digits, '-', '_' and '.'; bounded like a name.
REPO_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)
CHECKSUM_RE = re.compile(r"[0-9a-fA-F]*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


#: The whole answer to a file that is not a Python distribution: ``{"ignored": this}``.
NOT_A_DISTRIBUTION = "not a Python distribution"


class DeliveryIgnored(Exception):
    """Understood, but nothing to act on: answered 200 with the reason."""

    def __init__(self, slug: str, reason: str) -> None:
        super().__init__(reason)
        self.slug, self.reason = slug, reason


class DeliveryRejected(Exception):
    """The delivery cannot be used: answered with a 4xx and the reason."""

    def __init__(self, slug: str, reason: str, http_status: int = 400) -> None:
        super().__init__(reason)
        self.slug, self.reason, self.http_status = slug, reason, http_status


def _bad_shape(reason: str) -> DeliveryRejected:
    return DeliveryRejected("bad_shape", reason)


def _string(obj: dict[str, Any], key: str, where: str, *, required: bool = True,
            max_length: int = MAX_WORD_LENGTH) -> str | None:
    """``obj[key]`` as a bounded string; a wrong type is a 400 that names the field."""
    value = obj.get(key)
    if value is None:
        if required:
            raise _bad_shape(f"{where}{key} is missing")
        return None
    if not isinstance(value, str):
        raise _bad_shape(f"{where}{key} must be a string, not {type(value).__name__}")
    if len(value) > max_length:
        raise _bad_shape(f"{where}{key} is longer than {max_length} characters")
    return value


def _repo_key(value: str, field_name: str) -> str:
    if not REPO_KEY_RE.fullmatch(value):
        raise _bad_shape(f"{field_name} {shown(value)} is not a repository key")
    return value


def _clean_path(path: str, field_name: str) -> str:
    """A repository path without the tricks (``..``, control characters, backslashes)."""
    path = path.lstrip("/")
    segments = path.split("/")
    if (_CONTROL.search(path) or "\\" in path
            or any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", "..")):
        raise _bad_shape(f"{field_name} {shown(path)} is not a clean repository path")
    return path


def _checksum(obj: dict[str, Any], key: str, where: str) -> str:
    value = _string(obj, key, where, required=False) or ""
    if not CHECKSUM_RE.fullmatch(value):
        raise _bad_shape(f"{where}{key} must be a hexadecimal checksum")
    return value.lower()


def _watched(repo: str, repos: tuple[str, ...]) -> None:
    if repos and repo not in repos:
        raise DeliveryIgnored("repo_not_watched", f"repository {repo!r} is not watched")


def _filename(path: str, name: str | None) -> str:
    """The file's own name: ``data.name`` when given (it must agree with the path)."""
    if name and ("/" in name or "\\" in name):
        raise DeliveryRejected("invalid_name", f"data.name {shown(name)} is not a bare filename")
    if name and path and path.rsplit("/", 1)[-1] != name:
        raise _bad_shape(f"data.name {shown(name)} does not match the last segment of the path")
    return name if name else path.rsplit("/", 1)[-1]


def _require_distribution(filename: str) -> None:
    if not filename.endswith(DIST_SUFFIXES):
        raise DeliveryIgnored("not_distribution", NOT_A_DISTRIBUTION)


def artifact_event(repo: str, path: str, name: str | None, sha256: str) -> NameEvent:
    """The event for a file at ``repo``/``path``; the project name comes from the filename.

    Shared by the webhook and the reconciliation so both produce the same key
    for the same file, and a file seen both ways is one event.
    """
    filename = _filename(path, name)
    _require_distribution(filename)
    try:
        display, canonical_name, version = name_from_filename(filename)
    except InvalidName as exc:
        raise DeliveryRejected("invalid_name", str(exc)) from None
    path = _clean_path(path or filename, "path")
    return NameEvent(name=canonical_name, display_name=display, source=SOURCE_NAME, index=repo,
                     version=version, key=f"artifactory:{repo}:{path}:{sha256}")


def _data(payload: dict[str, Any]) -> dict[str, Any]:
    """``data`` as an object: Artifactory sends it either inline or as a JSON string."""
    data = payload.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            raise DeliveryRejected("malformed_json", "data is a string but not valid JSON") from None
    if data is None:
        raise _bad_shape("data is missing")
    if not isinstance(data, dict):
        raise _bad_shape(f"data must be an object, not {type(data).__name__}")
    return data


def event_from_payload(payload: Any, repos: tuple[str, ...]) -> NameEvent:
    """The `NameEvent` a parsed webhook body asks for, or `DeliveryIgnored`/`DeliveryRejected`."""
    if not isinstance(payload, dict):
        raise _bad_shape(f"the body must be a JSON object, not {type(payload).__name__}")
    if "domain" not in payload and isinstance(payload.get("event"), dict):
        payload = payload["event"]  # some documented samples wrap the delivery in "event"
    domain = _string(payload, "domain", "")
    if domain not in ("artifact", "artifact_property"):
        raise DeliveryIgnored("other_domain", f"domain {shown(str(domain))} is not handled")
    event_type = _string(payload, "event_type", "")
    if event_type == "deleted":
        raise DeliveryIgnored("deleted", "deletions do not release a name")
    if domain == "artifact":
        if event_type not in ("deployed", "moved", "copied"):
            raise DeliveryIgnored("other_event", f"event type {shown(str(event_type))} "
                                                 "is not handled")
        return _artifact_payload(str(event_type), _data(payload), repos)
    if event_type != "added":
        raise DeliveryIgnored("other_event", f"event type {shown(str(event_type))} is not handled")
    return _property_payload(_data(payload), repos)


def _artifact_payload(event_type: str, data: dict[str, Any], repos: tuple[str, ...]) -> NameEvent:
    repo = _repo_key(str(_string(data, "repo_key", "data.")), "data.repo_key")
    path = str(_string(data, "path", "data.", max_length=MAX_PATH_LENGTH)).lstrip("/")
    name = _string(data, "name", "data.", required=False, max_length=MAX_PATH_LENGTH)
    if event_type in ("moved", "copied"):
        # The file now lives at the target; a move into a repository produces no
        # "deployed" there, so this is the only signal the target ever gets.
        target = str(_string(data, "target_repo_path", "data.", max_length=MAX_PATH_LENGTH))
        target_repo, slash, target_path = target.lstrip("/").partition("/")
        repo = _repo_key(target_repo, "data.target_repo_path")
        if slash:
            path = target_path
            name = None  # data.name describes the source, which a move may rename
    _watched(repo, repos)
    # Before the checksum: JFrog's own sample deploys sample.txt with "sha256": "sample_checksum",
    # a well-formed delivery with nothing in it for us.
    _require_distribution(_filename(path, name))
    return artifact_event(repo, path, name, _checksum(data, "sha256", "data."))


def _property_payload(data: dict[str, Any], repos: tuple[str, ...]) -> NameEvent:
    repo = _repo_key(str(_string(data, "repo_key", "data.")), "data.repo_key")
    path = _clean_path(str(_string(data, "path", "data.", max_length=MAX_PATH_LENGTH)), "data.path")
    key = _string(data, "property_key", "data.")
    if key not in PYPI_NAME_PROPERTIES:
        raise DeliveryIgnored("other_property", f"property {shown(str(key))} does not name a "
                                                "project")
    values = data.get("property_values")
    if not isinstance(values, list) or not values:
        raise _bad_shape("data.property_values must be a non-empty list of strings")
    if len(values) > MAX_PROPERTY_VALUES or not all(isinstance(v, str) for v in values):
        raise _bad_shape("data.property_values must be a short list of strings")
    _watched(repo, repos)
    try:
        display = validate_name(values[0])
    except InvalidName as exc:
        raise DeliveryRejected("invalid_name", f"data.property_values: {exc}") from None
    canonical_name = canonical(display)
    return NameEvent(name=canonical_name, display_name=display, source=SOURCE_NAME, index=repo,
                     key=f"artifactory-prop:{repo}:{path}:{canonical_name}")
