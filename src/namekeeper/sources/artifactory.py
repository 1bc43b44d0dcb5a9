"""Artifactory as an event source: a webhook receiver and a reconciliation loop.

Artifactory announces every deploy to ``POST /webhooks/artifactory``; the
receiver authenticates the delivery, reads only what it needs from the body,
and turns a Python distribution landing in a watched repository into a
`NameEvent`.  Delivery retries are undocumented, so every answer is fast,
every event carries an idempotency key (repository + path + checksum), and a
periodic reconciliation lists the watched repositories with the storage API
to catch whatever a lost webhook missed.

Answers (small JSON bodies ``{"status": ..., "reason": ...}``):

- 202 accepted — the event is durable (new or a duplicate of a known one);
- 200 ignored — understood, but nothing to do (other domain or repository,
  a deletion, a file that is not a Python distribution);
- 400/411/413 — the delivery is malformed or too large; 401 — not authentic;
  405 — not a POST; 503 — the event store failed, so Artifactory should retry.

Bad input never produces a 5xx: only a failing sink does.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from ..config import ENV_ARTIFACTORY_SECRET, ENV_ARTIFACTORY_TOKEN, ArtifactoryConfig
from ..hookspecs import hookimpl
from ..model import NameEvent
from ..names import InvalidName, canonical, name_from_filename, validate_name
from .interface import EventSink, EventSource, WSGIApp

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/artifactory"
AUTH_HEADER = "X-JFrog-Event-Auth"
_AUTH_ENVIRON = "HTTP_X_JFROG_EVENT_AUTH"
DEFAULT_MAX_BODY = 1024 * 1024
SOURCE_NAME = "artifactory"

#: Properties Artifactory sets on a PyPI package about a minute after upload.
PYPI_NAME_PROPERTIES = frozenset({"pypi.name", "pypi.normalized.name"})
#: Suffixes `name_from_filename` understands; anything else is not a Python distribution.
DIST_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar", ".egg")

MAX_PATH_LENGTH = 1024
MAX_WORD_LENGTH = 128  # domain, event type, property key, checksum
MAX_PROPERTY_VALUES = 64
# Artifactory repository keys: letters, digits, '-', '_' and '.'; bounded like a name.
_REPO_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)
_CHECKSUM = re.compile(r"[0-9a-fA-F]*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}", re.ASCII)


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


def _shown(value: str) -> str:
    """A hostile value, safe to print in one line of a reason."""
    return repr(value[:60]) + ("…" if len(value) > 60 else "")


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
    if not _REPO_KEY.fullmatch(value):
        raise _bad_shape(f"{field_name} {_shown(value)} is not a repository key")
    return value


def _clean_path(path: str, field_name: str) -> str:
    """A repository path without the tricks (``..``, control characters, backslashes)."""
    path = path.lstrip("/")
    segments = path.split("/")
    if (_CONTROL.search(path) or "\\" in path
            or any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", "..")):
        raise _bad_shape(f"{field_name} {_shown(path)} is not a clean repository path")
    return path


def _checksum(obj: dict[str, Any], key: str, where: str) -> str:
    value = _string(obj, key, where, required=False) or ""
    if not _CHECKSUM.fullmatch(value):
        raise _bad_shape(f"{where}{key} must be a hexadecimal checksum")
    return value.lower()


def _watched(repo: str, repos: tuple[str, ...]) -> None:
    if repos and repo not in repos:
        raise DeliveryIgnored("repo_not_watched", f"repository {repo!r} is not watched")


def artifact_event(repo: str, path: str, name: str | None, sha256: str) -> NameEvent:
    """The event for a file at ``repo``/``path``; the project name comes from the filename.

    Shared by the webhook and the reconciliation so both produce the same key
    for the same file, and a file seen both ways is one event.
    """
    filename = name if name else path.rsplit("/", 1)[-1]
    if name and ("/" in name or "\\" in name):
        raise DeliveryRejected("invalid_name", f"data.name {_shown(name)} is not a bare filename")
    if name and path and path.rsplit("/", 1)[-1] != name:
        raise _bad_shape(f"data.name {_shown(name)} does not match the last segment of the path")
    if not filename.endswith(DIST_SUFFIXES):
        raise DeliveryIgnored("not_distribution",
                              f"{_shown(filename or path or '/')} is not a Python distribution")
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
        raise DeliveryIgnored("other_domain", f"domain {_shown(str(domain))} is not handled")
    event_type = _string(payload, "event_type", "")
    if event_type == "deleted":
        raise DeliveryIgnored("deleted", "deletions do not release a name")
    if domain == "artifact":
        if event_type not in ("deployed", "moved", "copied"):
            raise DeliveryIgnored("other_event", f"event type {_shown(str(event_type))} "
                                                 "is not handled")
        return _artifact_payload(str(event_type), _data(payload), repos)
    if event_type != "added":
        raise DeliveryIgnored("other_event", f"event type {_shown(str(event_type))} is not handled")
    return _property_payload(_data(payload), repos)


def _artifact_payload(event_type: str, data: dict[str, Any], repos: tuple[str, ...]) -> NameEvent:
    repo = _repo_key(str(_string(data, "repo_key", "data.")), "data.repo_key")
    path = str(_string(data, "path", "data.", max_length=MAX_PATH_LENGTH)).lstrip("/")
    name = _string(data, "name", "data.", required=False, max_length=MAX_PATH_LENGTH)
    sha256 = _checksum(data, "sha256", "data.")
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
    return artifact_event(repo, path, name, sha256)


def _property_payload(data: dict[str, Any], repos: tuple[str, ...]) -> NameEvent:
    repo = _repo_key(str(_string(data, "repo_key", "data.")), "data.repo_key")
    path = _clean_path(str(_string(data, "path", "data.", max_length=MAX_PATH_LENGTH)), "data.path")
    key = _string(data, "property_key", "data.")
    if key not in PYPI_NAME_PROPERTIES:
        raise DeliveryIgnored("other_property", f"property {_shown(str(key))} does not name a "
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


def _json_response(start_response: Callable[..., Any], http_status: int, status: str,
                   reason: str, extra_headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = json.dumps({"status": status, "reason": reason}).encode("utf-8")
    phrases = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
               405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
               503: "Service Unavailable"}
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               *extra_headers]
    start_response(f"{http_status} {phrases[http_status]}", headers)
    return [body]


def _read_up_to(stream: Any, limit: int) -> bytes:
    """At most ``limit`` bytes from a WSGI input stream, in modest pieces."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        piece = stream.read(min(65536, limit - total))
        if not piece:
            break
        chunks.append(piece)
        total += len(piece)
    return b"".join(chunks)


class ArtifactorySource(EventSource):
    """Receives Artifactory webhooks and reconciles watched repositories by polling."""

    name = SOURCE_NAME

    def __init__(self, config: ArtifactoryConfig, max_body: int = DEFAULT_MAX_BODY,
                 timeout: float = 10) -> None:
        self.config = config
        self.max_body = max_body
        self.timeout = timeout
        #: Answers given, for /metrics: "accepted", "duplicate", "ignored:<why>", "rejected:<why>".
        self.counters: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        secret = config.secret.reveal() if config.secret is not None else ""
        self._secret: bytes | None = secret.encode("utf-8") if secret else None
        if self._secret is None:
            log.error("the Artifactory webhook secret is not set (%s): every webhook delivery "
                      "will be refused with 401 until it is", ENV_ARTIFACTORY_SECRET)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    # ---- webhook -------------------------------------------------------------------------

    def routes(self, sink: EventSink) -> dict[str, WSGIApp]:
        def artifactory_webhook(environ: dict[str, Any],
                                start_response: Callable[..., Any]) -> Iterable[bytes]:
            return self._serve(sink, environ, start_response)

        return {WEBHOOK_PATH: artifactory_webhook}

    def _serve(self, sink: EventSink, environ: dict[str, Any],
               start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            self._count("rejected:method")
            return _json_response(start_response, 405, "rejected", "only POST is allowed",
                                  [("Allow", "POST")])
        try:
            event = self._understand(environ)
        except DeliveryIgnored as ignored:
            self._count(f"ignored:{ignored.slug}")
            log.info("Artifactory webhook ignored: %s", ignored.reason)
            return _json_response(start_response, 200, "ignored", ignored.reason)
        except DeliveryRejected as rejected:
            self._count(f"rejected:{rejected.slug}")
            log.warning("Artifactory webhook rejected (%s) from %s: %s", rejected.http_status,
                        environ.get("REMOTE_ADDR", "?"), rejected.reason)
            return _json_response(start_response, rejected.http_status, "rejected",
                                  rejected.reason)
        except Exception:  # noqa: BLE001 - bad input must never become a 500
            self._count("rejected:uninterpretable")  # a bug of ours: the fuzz tests expect 0
            log.exception("Artifactory webhook could not be interpreted")
            return _json_response(start_response, 400, "rejected",
                                  "the delivery could not be interpreted")
        try:
            fresh = sink.accept(event)
        except Exception as exc:  # noqa: BLE001 - any store failure means "retry later"
            self._count("error:sink")
            log.error("could not queue %s from Artifactory (%s: %s); answering 503 so the "
                      "delivery is retried", event.name, type(exc).__name__, exc)
            return _json_response(start_response, 503, "error", "the event could not be queued")
        self._count("accepted" if fresh else "duplicate")
        log.info("Artifactory: %s %s in %s (%s)", event.name, event.version or "",
                 event.index, "queued" if fresh else "duplicate")
        return _json_response(start_response, 202, "accepted" if fresh else "duplicate",
                              f"{event.name} queued" if fresh else f"{event.name} already known")

    def _understand(self, environ: dict[str, Any]) -> NameEvent:
        """Authenticate and parse one delivery; raise to answer anything but 202."""
        header = environ.get(_AUTH_ENVIRON)
        if self._secret is None or not isinstance(header, str) or not header:
            raise DeliveryRejected("unauthorized", f"missing or invalid {AUTH_HEADER}", 401)
        body = self._read_body(environ)
        if not self._authentic(header, body):
            raise DeliveryRejected("unauthorized", f"missing or invalid {AUTH_HEADER}", 401)
        try:
            payload = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise DeliveryRejected("malformed_json", "the body is not UTF-8 text") from None
        except (ValueError, RecursionError) as exc:
            reason = f"the body is not valid JSON: {exc}" if isinstance(exc, ValueError) \
                else "the body is nested too deeply"
            raise DeliveryRejected("malformed_json", reason[:200]) from None
        return event_from_payload(payload, self.config.repos)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        """The raw body, never more than ``max_body`` bytes read into memory."""
        stream = environ.get("wsgi.input")
        raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
        too_large = DeliveryRejected("too_large", f"the body exceeds {self.max_body} bytes", 413)
        try:
            if raw_length:
                if not _CONTENT_LENGTH.fullmatch(raw_length):
                    raise DeliveryRejected("bad_length", "invalid Content-Length")
                length = int(raw_length)
                if length > self.max_body:
                    raise too_large
                body = _read_up_to(stream, length) if length else b""
                if len(body) < length:
                    raise DeliveryRejected("bad_length", "the body is shorter than its "
                                                         "Content-Length")
                return body
            chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
            if not (chunked or environ.get("wsgi.input_terminated")):
                raise DeliveryRejected("bad_length", "Content-Length required", 411)
            body = _read_up_to(stream, self.max_body + 1)
        except (OSError, ValueError, AttributeError):
            raise DeliveryRejected("bad_length", "the body could not be read") from None
        if len(body) > self.max_body:
            raise too_large
        return body

    def _authentic(self, header: str, body: bytes) -> bool:
        """Constant-time check of the secret or of the HMAC-SHA256 of the raw body."""
        assert self._secret is not None
        try:
            provided = header.strip().encode("latin-1")  # WSGI headers are latin-1 decoded
        except UnicodeEncodeError:
            provided = header.strip().encode("utf-8", "replace")
        if self.config.signing:
            expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode("ascii")
            return hmac.compare_digest(provided.lower(), expected)
        return hmac.compare_digest(provided, self._secret)

    # ---- reconciliation ------------------------------------------------------------------

    @property
    def reconciles(self) -> bool:
        return bool(self.config.base_url and self.config.token is not None)

    def run(self, sink: EventSink, stop: threading.Event) -> None:
        """Reconcile now and every ``reconcile_interval`` until ``stop`` is set.

        Without a base URL and token there is nothing to poll, but the loop still
        lives until ``stop``: the server reports a source whose thread ended as unhealthy.
        """
        if not self.reconciles:
            stop.wait()
            return
        while not stop.is_set():
            try:
                count = self.reconcile_once(sink, stop=stop)
                log.info("Artifactory reconciliation queued %d new event(s)", count)
            except Exception as exc:  # noqa: BLE001 - the loop must survive; retried next time
                log.error("Artifactory reconciliation failed (%s: %s); retrying in %.0f s",
                          type(exc).__name__, exc, self.config.reconcile_interval)
            stop.wait(self.config.reconcile_interval)

    def reconcile_once(self, sink: EventSink, *, stop: threading.Event | None = None) -> int:
        """List every watched repository and queue each distribution; return how many were new.

        A repository that cannot be listed is logged and skipped (tried again next
        round); a failing sink propagates, so the round stops without losing anything.
        """
        if not self.reconciles:
            log.warning("Artifactory reconciliation needs [artifactory] base-url and %s",
                        ENV_ARTIFACTORY_TOKEN)
            return 0
        assert self.config.token is not None
        new = 0
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {self.config.token.reveal()}"
            session.headers["User-Agent"] = "namekeeper (artifactory reconciliation)"
            try:
                repos = self.config.repos or tuple(self._local_pypi_repos(session))
            except _ListingError as exc:
                log.warning("Artifactory reconciliation: cannot list repositories: %s", exc)
                return 0
            for repo in repos:
                if stop is not None and stop.is_set():
                    break
                try:
                    files = list(self._repo_files(session, repo))
                except _ListingError as exc:
                    log.warning("Artifactory reconciliation: cannot list %r: %s", repo, exc)
                    continue
                for path, sha256 in files:
                    try:
                        event = artifact_event(repo, path, None, sha256)
                    except DeliveryIgnored:
                        continue
                    except DeliveryRejected as exc:
                        log.warning("Artifactory reconciliation: skipping %r in %r: %s",
                                    path[:200], repo, exc.reason)
                        continue
                    if sink.accept(event):
                        new += 1
        return new

    def _get_json(self, session: requests.Session, url: str) -> Any:
        try:
            response = session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            # Only the class name: exception texts may repeat URLs with credentials in them.
            raise _ListingError(type(exc).__name__) from None
        if response.status_code != 200:
            hint = f" (check {ENV_ARTIFACTORY_TOKEN})" if response.status_code in (401, 403) else ""
            raise _ListingError(f"HTTP {response.status_code}{hint}")
        try:
            return response.json()
        except ValueError:
            raise _ListingError("the answer is not JSON") from None

    def _local_pypi_repos(self, session: requests.Session) -> Iterator[str]:
        answer = self._get_json(session, f"{self.config.base_url}api/repositories"
                                         "?packageType=pypi&type=local")
        if not isinstance(answer, list):
            raise _ListingError("the repository list is not a JSON list")
        for entry in answer:
            key = entry.get("key") if isinstance(entry, dict) else None
            if isinstance(key, str) and _REPO_KEY.fullmatch(key):
                yield key
            else:
                log.warning("Artifactory reconciliation: skipping odd repository entry")

    def _repo_files(self, session: requests.Session, repo: str) -> Iterator[tuple[str, str]]:
        """(path, sha256) of every file in ``repo``, from the storage API's deep listing."""
        answer = self._get_json(session, f"{self.config.base_url}api/storage/"
                                         f"{quote(repo, safe='')}/?list&deep=1")
        files = answer.get("files") if isinstance(answer, dict) else None
        if not isinstance(files, list):
            raise _ListingError("the listing has no 'files' list")
        for entry in files:
            if not isinstance(entry, dict) or entry.get("folder") is True:
                continue
            uri, sha2 = entry.get("uri"), entry.get("sha2")
            if not isinstance(uri, str) or not uri.strip("/") or len(uri) > MAX_PATH_LENGTH:
                continue
            if not isinstance(sha2, str) or len(sha2) > MAX_WORD_LENGTH \
                    or not _CHECKSUM.fullmatch(sha2):
                sha2 = ""
            yield uri.lstrip("/"), sha2.lower()


class _ListingError(Exception):
    """Artifactory could not be listed this round; the message is safe to log."""


@hookimpl(trylast=True)
def namekeeper_event_sources(config: Config) -> list[EventSource]:
    """The Artifactory source, when a webhook secret or a base URL is configured."""
    af = config.artifactory
    if af.secret is None and not af.base_url:
        return []
    return [ArtifactorySource(af, max_body=config.serve.max_body, timeout=config.public.timeout)]
