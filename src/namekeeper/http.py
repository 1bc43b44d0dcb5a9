"""HTTP for every part of namekeeper: one session factory, one way to show a URL.

Every request names namekeeper in its User-Agent (the public index asks for it).
Lookups of the public index retry connection errors, 5xx and 429 with backoff,
honouring ``Retry-After`` only up to a bound so that a lookup cannot hang; other
callers (pollers, reconciliation) retry on their own schedule and ask for none.
A URL shown in a log, an event or an error has no credentials, query or fragment.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__

USER_AGENT = f"namekeeper/{__version__} requests/{requests.__version__}"
RETRY_STATUSES = (429, 500, 502, 503, 504)


class _CappedRetry(Retry):
    """urllib3's Retry, honouring Retry-After only up to a bound so a lookup cannot hang.

    Older urllib3 releases lack ``retry_after_max``; capping here works with all.
    """

    max_retry_after: float = 15.0

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.max_retry_after)


def new_session(*, purpose: str | None = None, retries: int | None = None,
                backoff_factor: float = 0.5, backoff_max: float = 10.0,
                max_retry_after: float = 15.0) -> requests.Session:
    """A session that names namekeeper (and ``purpose``) in its User-Agent.

    ``retries`` None: requests' default, no retries.  A number: GETs are retried that many
    times on connection errors, 5xx and 429, and the last answer comes back to the caller.
    """
    session = requests.Session()
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


def public_url(url: str) -> str:
    """``url`` without userinfo, query and fragment: how an index is named in logs and events."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a malformed port: the request will fail, the name must not
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
