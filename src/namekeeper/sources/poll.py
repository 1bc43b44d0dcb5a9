"""Pollers of any simple index (PEP 503 HTML or PEP 691 JSON), for indexes without webhooks.

Nexus, GitLab, CodeArtifact, pypiserver, devpi or another Artifactory
(``<base>/api/pypi/<repo>/simple/``, HTML only) all publish the list of their
projects at the root of a "simple" index.  A `SimpleIndexPoller` fetches that
list every ``interval`` seconds and emits a `NameEvent` for each project it has
not seen before; the sink is idempotent, so a restart that re-emits every name
costs nothing.

The listing comes from a server we do not control: its size and duration are
bounded, every name is validated before it becomes an event, and credentials
(bearer token or basic auth) never appear in logs or error messages — those
name the index by its URL without userinfo, query or fragment.
"""

from __future__ import annotations

import codecs
import contextlib
import html
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from ..config import redact
from ..errors import IndexUnreachable
from ..hookspecs import hookimpl
from ..http import copy_capped, new_session, public_url
from ..model import NameEvent
from ..names import InvalidName, canonical, same_name, shown
from ..simple_html import anchors
from ..store.interface import MAX_CLOCK_OFFSET
from .interface import CONDITION_PREFIX, EventSink, EventSource, SourceMetrics

if TYPE_CHECKING:
    from ..config import Config, PollConfig

log = logging.getLogger(__name__)

#: PEP 691 content negotiation: JSON preferred, PEP 503 HTML (or plain HTML) accepted.
ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
          "text/html;q=0.1")
#: A listing of the whole public index is ~40 MiB of JSON; a private one far less.
MAX_LISTING_BYTES = 200 * 1024 * 1024
#: Wall-clock bound for one listing download (the per-read timeout alone lets a slow drip run on).
MAX_LISTING_SECONDS = 300.0
#: Ceiling of the retry delay after repeated failures (unless the interval itself is longer).
MAX_BACKOFF_SECONDS = 3600.0
#: How many distinct invalid names a poller remembers having logged.
_MAX_LOGGED_INVALID = 1000


class PollError(IndexUnreachable):
    """One poll failed (network, HTTP status, malformed or oversized listing); retried later.

    The message names the index without credentials and is safe to log.
    """


class BearerAuth(AuthBase):
    """``Authorization: Bearer <token>``; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth('***')"


def auth_for(config: PollConfig) -> AuthBase | None:
    """The requests auth of a ``[[poll]]`` entry: bearer token wins over basic auth."""
    if config.token is not None:
        return BearerAuth(config.token.reveal())
    if config.username:
        password = config.password.reveal() if config.password is not None else ""
        return HTTPBasicAuth(config.username, password)
    return None


def _auth_secrets(url: str, auth: AuthBase | None) -> tuple[str, ...]:
    """The secret text a request sends, for `redact`: a server may echo its headers."""
    if isinstance(auth, BearerAuth):
        return (auth._token,)
    if isinstance(auth, HTTPBasicAuth) and isinstance(auth.password, str):
        username, password = str(auth.username), auth.password
    else:  # requests sends a URL's userinfo as basic auth
        username, password = requests.utils.get_auth_from_url(url)
    # The pair too: its base64 is the header's whole value.
    return (password, f"{username}:{password}") if password else ()


def _describe(exc: Exception, secrets: tuple[str, ...] = ()) -> str:
    """One line about a failure, its credentials redacted before it is cut short."""
    if isinstance(exc, PollError):
        return str(exc)
    return f"{type(exc).__name__}: {shown(redact(str(exc), secrets), 200)}"


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
            try:
                return codecs.lookup(charset).name
            except LookupError:
                break
    return "utf-8"


def listing_names(body: bytes, content_type: str, where: str) -> list[str]:
    """The project names a listing states, unvalidated, in the listing's order.

    Raises `PollError` for a page that is no listing: JSON without a ``projects`` list, or
    HTML whose links do not lead to project pages (`leads_to_projects`).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type.endswith("json"):
        try:
            data: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise PollError(f"{where} sent malformed JSON") from None
        projects = data.get("projects") if isinstance(data, dict) else None
        if not isinstance(projects, list):
            raise PollError(f"{where} sent JSON without a 'projects' list (not a PEP 691 index?)")
        return [p["name"] if isinstance(p, dict) and isinstance(p.get("name"), str) else ""
                for p in projects]
    links = html_links(body.decode(_charset(content_type), errors="replace"))
    if not leads_to_projects(links):
        # A mistyped URL (a web UI's front page, a wiki, an SSO login answering 200) would
        # otherwise make every navigation link a private name: alarmed, recorded, reserved.
        raise PollError(f"{where} does not look like a simple index: its links do not lead "
                        "to project pages (is it the index's /simple/ root?)")
    return [text for _, text in links]


def html_links(text: str) -> list[tuple[str, str]]:
    """(href, text) of every anchor of an HTML page, in order (`simple_html.anchors`)."""
    simple = _simple_anchors(text)
    if simple is not None:
        return simple
    return [(anchor.href, anchor.text) for anchor in anchors(text)]


def leads_to_projects(links: list[tuple[str, str]]) -> bool:
    """Whether ``links`` (href, text) can be a simple index's root: at least half of them
    lead to the page of the project they name.

    PEP 503 has an anchor's text name its project and its href lead to that project's page;
    every index (warehouse, devpi, Artifactory, Nexus, GitLab, pypiserver) ends that URL
    with the name, spelt some way.  The few odd links a real index may add are tolerated
    (and skipped later as invalid names); no anchors at all is an empty index.
    """
    needed, leading = (len(links) + 1) // 2, 0
    for href, text in links:
        if text and same_name(_last_segment(href), text):
            leading += 1
            if leading >= needed:  # 10,000 names: the first half tells
                return True
    return not links


def _last_segment(href: str) -> str:
    """The last segment of ``href``'s path, trailing slash stripped, percent-decoded ("" for
    ``https://host/``, which has none)."""
    if "?" in href or "#" in href:
        href = href.partition("#")[0].partition("?")[0]
    head, _, segment = href.rstrip("/").rpartition("/")
    if head.endswith("/") and "/" not in head[:-1]:  # ``scheme://host``: a host, no path
        return ""
    return unquote(segment) if "%" in segment else segment


# A listing page as every index writes it (``<a href="...">name</a>``, nothing inside the
# anchor) is read with one regex pass; any other page goes through the HTML parser, which
# is ten times slower on 10,000 names and gives the same links on such a page.
# Attributes must be well formed (name, optionally = a quoted or bare value, whitespace
# between): anything odd (``href="a"b"``) is left to the parser, which has its own rules.
# The pass takes a first attribute ``href="..."``, as indexes write it, on its own.
_ATTRIBUTES = r"""(?:\s+[\w:.-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`/]+))?)*"""
_PLAIN_ANCHOR = re.compile(
    rf"""<a(?:\s+href\s*=\s*"([^"]*)")?({_ATTRIBUTES})\s*>([^<]*)</a\s*>""", re.I)
_ATTRIBUTE = re.compile(r"""\s+([\w:.-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`/]+)))?""")
_ANY_ANCHOR = re.compile(r"<a[\s>/]", re.I)
_RAW_TEXT = re.compile(r"<(?:script|style|xmp|plaintext|!--|!\[CDATA\[)", re.I)
# Python versions differ on whether markup inside these is markup: plain text only.
_TEXT_ONLY = re.compile(r"<(title|textarea)\b[^>]*>(.*?)</\1", re.I | re.S)


def _simple_anchors(text: str) -> list[tuple[str, str]] | None:
    """The anchors' (href, text) when every anchor of ``text`` is plain, else None (use the
    parser)."""
    if _RAW_TEXT.search(text) or any("<" in m[1] for m in _TEXT_ONLY.findall(text)):
        return None
    found = _PLAIN_ANCHOR.findall(text)
    if len(found) != len(_ANY_ANCHOR.findall(text)):
        return None
    links = []
    for href, more, name in found:
        if more and "href" in more.lower():
            href = _last_href(more, href)
        links.append((html.unescape(href) if "&" in href else href,
                      (html.unescape(name) if "&" in name else name).strip()))
    return links


def _last_href(attributes: str, href: str) -> str:
    """The value of the last href among ``attributes`` (the parser's choice), else ``href``."""
    for name, double, single, bare in _ATTRIBUTE.findall(attributes):
        if name.lower() == "href":
            href = double or single or bare
    return href


def _download(url: str, session: requests.Session, *, timeout: float, auth: AuthBase | None,
              max_bytes: int, max_seconds: float,
              accept: str = ACCEPT) -> tuple[bytes, requests.structures.CaseInsensitiveDict[str]]:
    """GET ``url`` (a simple index root); (body, headers), bounded in size and time."""
    where = public_url(url)
    started = time.monotonic()
    try:
        with session.get(url, headers={"Accept": accept}, auth=auth, stream=True,
                         timeout=(timeout, timeout)) as response:
            if response.status_code != 200:
                # A proxy's or SSO page's reason phrase may echo the Authorization header;
                # the audit and the pollers show this message as it is.
                reason = redact(response.reason or "", _auth_secrets(url, auth))
                raise PollError(f"GET {where} answered {response.status_code} "
                                f"{shown(reason, 80)}")
            chunks: list[bytes] = []
            copy_capped(response, chunks.append, where=where, max_bytes=max_bytes,
                        max_seconds=max_seconds, started=started, error=PollError)
            return b"".join(chunks), response.headers
    except requests.RequestException as exc:
        # requests' messages carry the path but never userinfo; still, name only the class.
        raise PollError(f"GET {where} failed: {type(exc).__name__}") from None


def list_projects(
    url: str,
    session: requests.Session,
    *,
    timeout: float = 10.0,
    auth: AuthBase | None = None,
    max_bytes: int = MAX_LISTING_BYTES,
    max_seconds: float = MAX_LISTING_SECONDS,
    on_invalid: Callable[[list[str]], None] | None = None,
) -> list[tuple[str, str]]:
    """(display name, canonical name) of every valid project at the simple index ``url``.

    Valid names are deduplicated on their canonical form, first spelling wins.  Invalid or
    hostile names are skipped and handed to ``on_invalid`` (by default: logged, truncated).
    Raises `PollError` when the index cannot be read.
    """
    where = public_url(url)
    body, headers = _download(url, session, timeout=timeout, auth=auth,
                              max_bytes=max_bytes, max_seconds=max_seconds)
    own = None
    if DEVPI_HEADER in headers and url.endswith(DEVPI_SIMPLE):
        own = devpi_own_projects(url.removesuffix(DEVPI_SIMPLE), session, timeout=timeout,
                                 auth=auth, max_bytes=max_bytes, max_seconds=max_seconds)
    projects: dict[str, str] = {}
    invalid: list[str] = []
    for raw in listing_names(body, headers.get("Content-Type", ""), where):
        try:
            name = canonical(raw)
        except InvalidName:
            invalid.append(raw)
            continue
        if own is None or name in own:
            projects.setdefault(name, raw)
    if invalid:
        if on_invalid is None:
            _log_invalid(where, invalid)
        else:
            on_invalid(invalid)
    return [(display, name) for name, display in projects.items()]


#: devpi names itself in every answer; its index's simple page is ``<root>/<user>/<index>/+simple/``.
DEVPI_HEADER = "X-Devpi-Server-Version"
DEVPI_SIMPLE = "+simple/"
#: How many indexes deep devpi's inheritance is followed (bases of bases...).
MAX_DEVPI_BASES = 50
#: A base as devpi names it, ``<user>/<index>``: anything else is not followed.
_DEVPI_INDEX = re.compile(r"[\w.-]+/[\w.-]+")


def devpi_own_projects(stage_url: str, session: requests.Session, *, timeout: float,
                       auth: AuthBase | None, max_bytes: int, max_seconds: float) -> set[str]:
    """The canonical names of the projects of devpi's index ``stage_url`` and of the private
    indexes it inherits from: its simple page also lists those of the mirrors it inherits,
    the public index's names, which are not private names.  Raises `PollError`."""
    root = stage_url.rstrip("/").rsplit("/", 2)[0] + "/"
    pending, seen, own = [stage_url.rstrip("/")], set(), set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        if len(seen) > MAX_DEVPI_BASES:
            raise PollError(f"{public_url(stage_url)}: devpi inheritance deeper than "
                            f"{MAX_DEVPI_BASES} indexes")
        body, _ = _download(url, session, timeout=timeout, auth=auth, max_bytes=max_bytes,
                            max_seconds=max_seconds, accept="application/json")
        try:
            config = json.loads(body)["result"]
            kind, bases, projects = config["type"], config.get("bases", []), config["projects"]
            if not (isinstance(bases, list) and isinstance(projects, list)):
                raise TypeError
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise PollError(f"{public_url(url)} sent no devpi index configuration "
                            "(type, bases, projects)") from None
        if kind == "mirror":  # the public index's names (or another index's), not ours
            continue
        for raw in projects:
            if isinstance(raw, str):
                with contextlib.suppress(InvalidName):
                    own.add(canonical(raw))
        pending += [root + base for base in bases
                    if isinstance(base, str) and _DEVPI_INDEX.fullmatch(base)]
    return own


def _log_invalid(where: str, invalid: list[str]) -> None:
    listed = ", ".join(shown(n) for n in invalid[:5])
    more = f" and {len(invalid) - 5} more" if len(invalid) > 5 else ""
    log.warning("%s lists %d invalid project name(s), skipped: %s%s",
                where, len(invalid), listed, more)


class SimpleIndexPoller(EventSource):
    """Polls one ``[[poll]]`` index and emits an event per project it has not seen yet.

    Health for ``/metrics``: ``last_poll_at`` (wall-clock time of the last
    successful poll), ``last_error`` (None after a success), ``polls_ok`` and
    ``polls_failed``.
    """

    name = "poll"

    def __init__(self, config: PollConfig, *, timeout: float = 10.0,
                 session: requests.Session | None = None,
                 max_backoff: float = MAX_BACKOFF_SECONDS) -> None:
        self.config = config
        self.index = public_url(config.url)
        self.label = config.name or self.index
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.session = session or new_session(purpose="simple-index poller")
        self._auth = auth_for(config)
        self._secrets = tuple(s.reveal() for s in (config.token, config.password) if s is not None)
        self._lock = threading.Lock()
        self.seen: set[str] = set()
        self._logged_invalid: set[str] = set()
        self.last_poll_at: float | None = None
        self.last_error: str | None = None
        self.polls_ok = 0
        self.polls_failed = 0
        self.consecutive_failures = 0
        #: Since when this process has run the polls (its start, or its latest turn after
        #: another replica's): its problems are counted from then at the earliest.
        self._in_charge_since = time.time()
        #: When this process's turn at the polls lapses unless its next poll renews it.
        self._turn_until = math.inf

    def __repr__(self) -> str:
        return f"SimpleIndexPoller({self.label!r})"

    def metrics(self) -> SourceMetrics:
        return SourceMetrics(last_poll_at=self.last_poll_at, label=self.label)

    @property
    def condition_key(self) -> str:
        return f"{CONDITION_PREFIX}poll:{self.label}"

    def problems(self, now: float) -> list[str]:
        """The private index could not be read for longer than the poll interval.

        Not once this process's turn lapsed (a backoff outlasts it): another replica may poll
        now, and its first good round clears the problem; the condition already raised keeps
        every replica red until then.
        """
        if not self.consecutive_failures or now > self._turn_until:
            return []
        since = max(self.last_poll_at or 0.0, self._in_charge_since)
        if now - since <= self.config.interval:
            return []
        return [f"the private index {self.label} could not be read for {now - since:.0f} s "
                f"({self.last_error})"]

    def _not_in_charge(self) -> None:
        """Another replica polls now: this one's old failures are not a problem of the index."""
        with self._lock:
            self.consecutive_failures = 0
            self.last_error = None
            self._in_charge_since = time.time()

    def poll_once(self, sink: EventSink) -> int:
        """Poll once; hand each project not seen before to ``sink``; return how many were handed.

        Raises `PollError` (or the sink's error) after recording the failure.
        """
        with self._lock:
            try:
                emitted = self._poll(sink)
            except Exception as exc:
                self.polls_failed += 1
                self.consecutive_failures += 1
                self.last_error = _describe(exc, self._secrets)
                raise
            self.polls_ok += 1
            self.consecutive_failures = 0
            self.last_error = None
            self.last_poll_at = time.time()
            return emitted

    def _poll(self, sink: EventSink) -> int:
        projects = list_projects(self.config.url, self.session, timeout=self.timeout,
                                 auth=self._auth, on_invalid=self._log_fresh_invalid)
        emitted = 0
        for display, name in projects:
            if name in self.seen:
                continue
            sink.accept(NameEvent(name=name, display_name=display, source=self.name,
                                  index=self.index, key=f"poll:{self.index}:{name}"))
            self.seen.add(name)  # only once the sink holds it: a failing sink retries next poll
            emitted += 1
        if emitted:
            log.info("%s: %d new project name(s)", self.label, emitted)
        return emitted

    def _log_fresh_invalid(self, invalid: list[str]) -> None:
        # Log each hostile name once per poller, not once per interval; remember a bounded prefix.
        fresh_invalid = [n for n in invalid if n[:200] not in self._logged_invalid]
        if fresh_invalid:
            _log_invalid(self.label, fresh_invalid)
            room = max(0, _MAX_LOGGED_INVALID - len(self._logged_invalid))
            self._logged_invalid.update(n[:200] for n in fresh_invalid[:room])

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval, doubled per consecutive failure, capped."""
        interval = self.config.interval
        if not self.consecutive_failures:
            return interval
        cap = max(interval, self.max_backoff)
        return float(min(cap, interval * 2 ** min(self.consecutive_failures - 1, 32)))

    def run(self, sink: EventSink, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; a failing poll is logged and retried, never fatal."""
        log.info("polling %s every %.0f s", self.label, self.config.interval)
        # One replica polls this index at a time; the holder's next poll renews the lease.
        job, lease = f"poll:{self.label}", 2 * self.config.interval + 60
        while not stop.is_set():
            try:
                asked_at = time.time()
                if not sink.take_turn(job, lease):
                    self._not_in_charge()
                    stop.wait(self.config.interval)
                    continue
                # Counted from before the store granted it, less the clock offset replicas may
                # have: this turn ends no later than the store's.
                self._turn_until = asked_at + lease - MAX_CLOCK_OFFSET
                self.poll_once(sink)
                sink.clear_condition(self.condition_key)
            except PollError as exc:
                log.warning("poll of %s failed (retry in %.0f s): %s",
                            self.label, self.next_delay(), exc)
            except Exception as exc:  # noqa: BLE001 - the loop must survive any failure
                log.error("poll of %s failed unexpectedly (retry in %.0f s): %s",
                          self.label, self.next_delay(), _describe(exc, self._secrets))
            stop.wait(self.next_delay())


@hookimpl(trylast=True)
def namekeeper_event_sources(config: Config) -> list[EventSource]:
    """One poller per ``[[poll]]`` entry of the config."""
    return [SimpleIndexPoller(p, timeout=config.public.timeout) for p in config.polls]
