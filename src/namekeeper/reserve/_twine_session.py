"""twine's upload settings, adjusted for a service: a timeout, one attempt, our User-Agent.

twine's session sends without a timeout (a stalled index would hold a
worker forever) and its repository resends a file five times at once on a
5xx.  Retrying, with backoff and within the hourly budget, is the queue's job,
so `UploadSettings` builds a repository that makes one attempt per file and
gives up after ``[public] timeout`` seconds.

It lives apart from the backend because it is the only place that subclasses
twine's internals: when twine changes, this is the file to look at.
"""

from __future__ import annotations

from typing import Any

import requests
import twine.repository
import twine.settings
from requests.adapters import HTTPAdapter

from ..http import USER_AGENT


class _TimeoutAdapter(HTTPAdapter):
    """twine's session sends without a timeout; a stalled index would hold a worker forever."""

    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self._timeout = timeout
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        return super().send(request, stream=stream,
                            timeout=self._timeout if timeout is None else timeout,
                            verify=verify, cert=cert, proxies=proxies)


class _OneShotRepository(twine.repository.Repository):
    """One POST per file: twine's own loop resends five times at once on a 5xx."""

    def upload(self, package: Any, max_redirects: int = 5) -> requests.Response:
        return super().upload(package, max_redirects=1)


class UploadSettings(twine.settings.Settings):
    """twine's settings, plus a timeout, a User-Agent naming us, and a single attempt."""

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        self.namekeeper_timeout = timeout
        super().__init__(**kwargs)

    def create_repository(self) -> twine.repository.Repository:
        repo = _OneShotRepository(
            str(self.repository_config["repository"]),
            self.username,
            self.password,
            self.disable_progress_bar,
        )
        repo.set_certificate_authority(self.cacert)
        repo.set_client_certificate(self.client_cert)
        retries = getattr(repo.session.get_adapter("https://"), "max_retries", 0)
        adapter = _TimeoutAdapter(self.namekeeper_timeout, max_retries=retries)
        for scheme in ("http://", "https://"):
            repo.session.mount(scheme, adapter)
        twine_agent = repo.session.headers.get("User-Agent", "")
        if isinstance(twine_agent, bytes):
            twine_agent = twine_agent.decode("latin-1")
        repo.session.headers["User-Agent"] = f"{USER_AGENT} {twine_agent}".strip()
        return repo
