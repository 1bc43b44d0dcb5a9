"""Catch what a lost Artifactory webhook missed: list the watched repositories and queue their files.

Artifactory does not document how (or whether) it retries a webhook
delivery, so `ArtifactorySource` periodically lists every watched
repository -- or, with none configured, every local PyPI repository -- with
the storage API's deep listing, and turns each distribution into the same
`NameEvent` the webhook would have produced (same idempotency key, so a file
already known is a duplicate, not a second event).

It lives apart from the webhook receiver because it is the only part of the
source that talks to Artifactory, with its token, over HTTP.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

from ..config import ENV_ARTIFACTORY_TOKEN, ArtifactoryConfig
from ..http import new_session
from .artifactory_events import (
    CHECKSUM_RE,
    MAX_PATH_LENGTH,
    MAX_WORD_LENGTH,
    REPO_KEY_RE,
    DeliveryIgnored,
    DeliveryRejected,
    artifact_event,
)
from .interface import EventSink

#: The source's logger (`namekeeper.sources.artifactory`): reconciliation is part of its story.
log = logging.getLogger("namekeeper.sources.artifactory")


class _ListingError(Exception):
    """Artifactory could not be listed this round; the message is safe to log."""


def reconcile_once(config: ArtifactoryConfig, sink: EventSink, *, timeout: float,
                   stop: threading.Event | None = None) -> tuple[int, list[str]]:
    """List every watched repository and queue each distribution: how many were new, and
    what could not be listed (one line each).

    Needs ``config.base_url`` and ``config.token``.  A repository that cannot be
    listed is logged and skipped (tried again next round); a failing sink
    propagates, so the round stops without losing anything.
    """
    base_url, token = config.base_url, config.token
    assert base_url and token is not None  # checked by ArtifactorySource.reconciles
    new, failed = 0, []
    with new_session(purpose="artifactory reconciliation") as session:
        session.headers["Authorization"] = f"Bearer {token.reveal()}"
        try:
            repos = config.repos or tuple(_local_pypi_repos(session, base_url, timeout))
        except _ListingError as exc:
            log.warning("Artifactory reconciliation: cannot list repositories: %s", exc)
            return 0, [f"cannot list repositories: {exc}"]
        for repo in repos:
            if stop is not None and stop.is_set():
                break
            try:
                files = list(_repo_files(session, base_url, repo, timeout))
            except _ListingError as exc:
                log.warning("Artifactory reconciliation: cannot list %r: %s", repo, exc)
                failed.append(f"cannot list {repo!r}: {exc}")
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
    return new, failed


def _get_json(session: requests.Session, url: str, timeout: float) -> Any:
    try:
        response = session.get(url, timeout=timeout)
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


def _local_pypi_repos(session: requests.Session, base_url: str, timeout: float) -> Iterator[str]:
    answer = _get_json(session, f"{base_url}api/repositories?packageType=pypi&type=local", timeout)
    if not isinstance(answer, list):
        raise _ListingError("the repository list is not a JSON list")
    for entry in answer:
        key = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(key, str) and REPO_KEY_RE.fullmatch(key):
            yield key
        else:
            log.warning("Artifactory reconciliation: skipping odd repository entry")


def _repo_files(session: requests.Session, base_url: str, repo: str,
                timeout: float) -> Iterator[tuple[str, str]]:
    """(path, sha256) of every file in ``repo``, from the storage API's deep listing."""
    answer = _get_json(session, f"{base_url}api/storage/{quote(repo, safe='')}/?list&deep=1",
                       timeout)
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
                or not CHECKSUM_RE.fullmatch(sha2):
            sha2 = ""
        yield uri.lstrip("/"), sha2.lower()
