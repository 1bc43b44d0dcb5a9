"""HTTP for every part of namekeeper: one session factory, one way to show a URL.

Every request names namekeeper in its User-Agent (the public index asks for it).
Lookups of the public index retry connection errors, 5xx and 429 with backoff,
honouring ``Retry-After`` only up to a bound so that a lookup cannot hang; other
callers (pollers, reconciliation) retry on their own schedule and ask for none.
A URL shown in a log, an event or an error has no credentials, query or fragment.
A listing from an index we do not control is read through `copy_capped`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies
from urllib3.util.retry import Retry

from . import __version__

if TYPE_CHECKING:
    from requests.sessions import _Settings  # types-requests' name for the merged settings

USER_AGENT = f"namekeeper/{__version__} requests/{requests.__version__}"
RETRY_STATUSES = (429, 500, 502, 503, 504)


class _CappedRetry(Retry):
    """urllib3's Retry, honouring Retry-After only up to a bound so a lookup cannot hang.

    Older urllib3 releases lack ``retry_after_max``; capping here works with all.
    """

    max_retry_after: float = 15.0

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.max_retry_after)


class _Session(requests.Session):
    """A session that reads the environment's proxy settings once per host, not per request.

    requests scans every environment variable twice a request to find them (half a
    millisecond or more of CPU per lookup in a service's environment); they do not change
    while namekeeper runs.  Explicit proxies still win, and ``NO_PROXY`` still applies.
    """

    def __init__(self) -> None:
        super().__init__()
        self._env_proxies: dict[tuple[str, str, str | None], dict[str, str]] = {}
        self._env_ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get(
            "CURL_CA_BUNDLE")

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> _Settings:
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        # What requests does with trust_env, with the environment read once per host.
        no_proxy = proxies.get("no_proxy") if proxies is not None else None
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, no_proxy)
        found = self._env_proxies.get(key)
        if found is None:
            found = self._env_proxies[key] = get_environ_proxies(url, no_proxy=no_proxy)
        proxies = {**found, **(proxies or {})}
        if verify is True or verify is None:
            verify = self._env_ca_bundle or verify
        return {"proxies": merge_setting(proxies, self.proxies),
                "stream": merge_setting(stream, self.stream),
                "verify": merge_setting(verify, self.verify),
                "cert": merge_setting(cert, self.cert)}


def new_session(*, purpose: str | None = None, retries: int | None = None,
                backoff_factor: float = 0.5, backoff_max: float = 10.0,
                max_retry_after: float = 15.0) -> requests.Session:
    """A session that names namekeeper (and ``purpose``) in its User-Agent.

    ``retries`` None: requests' default, no retries.  A number: GETs are retried that many
    times on connection errors, 5xx and 429, and the last answer comes back to the caller.
    """
    session = _Session()
    session.headers["User-Agent"] = f"{USER_AGENT} ({purpose})" if purpose else USER_AGENT
    if retries is not None:
        retry_class = type("CappedRetry", (_CappedRetry,), {"max_retry_after": max_retry_after})
        retry = retry_class(
            total=retries,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=["GET"],
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back; the caller turns it into an error
        )
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def web_url(value: object, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    """Whether ``value`` is a URL of one of ``schemes`` with a host (``file`` needs none)
    that `urlsplit` can take apart (not an unclosed IPv6 bracket, not a malformed port)."""
    # No URL holds a control character; one from a lock file would reach terminals and
    # reports (an escape sequence) as the index's name.
    if not isinstance(value, str) or not value.isprintable():
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() in schemes and (bool(parts.netloc) or parts.scheme == "file")


def public_url(url: str) -> str:
    """``url`` without userinfo, query and fragment: how an index is named in logs and events."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket: what it holds may be a password
        return "(a malformed URL)"
    if not parts.netloc and parts.scheme.lower() != "file" and "@" in url:
        # No host to take a userinfo from ("bot:pw@host/", "https:/bot:pw@host/", a TOML
        # table's text): what precedes the "@" may be a password.
        return "(a malformed URL)"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a malformed port: the request will fail, the name must not
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def copy_capped(response: requests.Response, write: Callable[[bytes], object], *, where: str,
                max_bytes: int, max_seconds: float, started: float,
                error: type[Exception], chunk_size: int = 64 * 1024) -> None:
    """Hand ``response``'s streamed body to ``write``, chunk by chunk, within bounds.

    An index we do not control can neither fill memory or disk (over ``max_bytes``, declared
    or sent) nor hold us with a slow drip (over ``max_seconds`` since ``started``, a
    `time.monotonic` reading: the per-read timeout alone lets a drip run on).  Either is
    ``error`` with one line naming the listing by ``where`` (a URL without credentials).
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise error(f"{where} listing is {declared} bytes, over the {max_bytes} bytes limit")
    size = 0
    for chunk in response.iter_content(chunk_size):
        size += len(chunk)
        if size > max_bytes:
            raise error(f"{where} listing is over the {max_bytes} bytes limit")
        if time.monotonic() - started > max_seconds:
            raise error(f"{where} listing took longer than {max_seconds:.0f} s")
        write(chunk)
