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

Parsing a delivery into a `NameEvent` is in `.artifactory_events`; listing
the repositories for the reconciliation is in `.artifactory_reconcile`.  This
module is the receiver (authentication, body limits, answers) and the
`EventSource` that joins the two.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..config import ENV_ARTIFACTORY_SECRET, ENV_ARTIFACTORY_TOKEN, ArtifactoryConfig
from ..hookspecs import hookimpl
from ..model import NameEvent
from ..names import one_line
from . import artifactory_reconcile
from .artifactory_events import SOURCE_NAME, DeliveryIgnored, DeliveryRejected, event_from_payload
from .interface import EventSink, EventSource, SourceMetrics, WSGIApp

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/artifactory"
AUTH_HEADER = "X-JFrog-Event-Auth"
_AUTH_ENVIRON = "HTTP_X_JFROG_EVENT_AUTH"
DEFAULT_MAX_BODY = 1024 * 1024
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}", re.ASCII)


def _json_response(start_response: Callable[..., Any], http_status: int, status: str,
                   reason: str, extra_headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    # An ignored delivery says only what was ignored: {"ignored": "not a Python distribution"}.
    answer = {"ignored": reason} if status == "ignored" else {"status": status, "reason": reason}
    body = json.dumps(answer).encode("utf-8")
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
        # The last reconciliation round's failure (None: it listed everything), and when
        # one last did: /healthz turns red once rounds have failed for an interval.
        self._round_error: str | None = None
        self._round_ok_at: float | None = None
        #: Since when this process has reconciled (its start, or its latest turn after another
        #: replica's): a failing round counts from then at the earliest.
        self._in_charge_since = time.time()
        secret = config.secret.reveal() if config.secret is not None else ""
        self._secret: bytes | None = secret.encode("utf-8") if secret else None
        if self._secret is None:
            log.error("the Artifactory webhook secret is not set (%s): every webhook delivery "
                      "will be refused with 401 until it is", ENV_ARTIFACTORY_SECRET)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def metrics(self) -> SourceMetrics:
        with self._lock:
            return SourceMetrics(events=dict(self.counters))

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
        except Exception:
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
        # One replica reconciles at a time; the holder's next round renews the lease.
        lease = 2 * self.config.reconcile_interval + 60
        while not stop.is_set():
            try:
                if not sink.take_turn("artifactory-reconcile", lease):
                    with self._lock:  # another replica reconciles: our old failure is not ours
                        self._round_error, self._in_charge_since = None, time.time()
                    stop.wait(self.config.reconcile_interval)
                    continue
                count = self.reconcile_once(sink, stop=stop)
                log.info("Artifactory reconciliation queued %d new event(s)", count)
                if self._round_error is None:  # every repository listed
                    sink.clear_condition(self.condition_key)
            except Exception as exc:  # noqa: BLE001 - the loop must survive; retried next time
                log.error("Artifactory reconciliation failed (%s: %s); retrying in %.0f s",
                          type(exc).__name__, exc, self.config.reconcile_interval)
                with self._lock:
                    self._round_error = f"{type(exc).__name__}: {exc}"
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
        new, failed = artifactory_reconcile.reconcile_once(self.config, sink,
                                                           timeout=self.timeout, stop=stop)
        with self._lock:
            self._round_error = "; ".join(failed) or None
            if not failed:
                self._round_ok_at = time.time()
        return new

    def problems(self, now: float) -> list[str]:
        """Reconciliation rounds have failed for longer than its interval."""
        with self._lock:
            error, since = self._round_error, max(self._round_ok_at or 0.0, self._in_charge_since)
        if error is None or now - since <= self.config.reconcile_interval:
            return []
        return [f"Artifactory reconciliation has not listed every repository for "
                f"{now - since:.0f} s ({one_line(error, 300)}): webhooks it would catch up "
                "on stay missed"]


@hookimpl(trylast=True)
def namekeeper_event_sources(config: Config) -> list[EventSource]:
    """The Artifactory source, when a webhook secret or a base URL is configured."""
    af = config.artifactory
    if af.secret is None and not af.base_url:
        return []
    return [ArtifactorySource(af, max_body=config.serve.max_body, timeout=config.public.timeout)]
