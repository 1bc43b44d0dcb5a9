"""The built-in public-index lookup: the simple API for "does it exist", the JSON API for "whose".

``GET <simple>/<name>/`` (PEP 691 JSON, or PEP 503 HTML from indexes that only
speak HTML) is the cheapest existence check.  When a JSON API is configured,
``GET <json>/<name>/json`` adds ``ownership`` (roles and organisation),
versions and upload times.  Ownership comes only from ``ownership``: the
``author_email`` field is free text anyone can fill in with our address.

Both answers are CDN-cached predictions; the answer to an upload is the final
word.  A 200 from the simple API with a 404 from the JSON API is a stale
cache: the project exists and its owners are unknown.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from ..config import Config, PublicConfig
from ..hookspecs import hookimpl
from ..http import new_session, public_url
from ..model import PublicProject
from ..names import InvalidName, name_from_filename, one_line
from ..simple_html import anchors
from .interface import PublicIndex, PublicIndexUnavailable

log = logging.getLogger(__name__)

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
ACCEPT_SIMPLE = f"{SIMPLE_JSON}, text/html;q=0.1"


def _versions_from_filenames(filenames: list[str]) -> tuple[str, ...]:
    versions: list[str] = []
    for filename in filenames:
        try:
            _display, _canonical, version = name_from_filename(filename)
        except InvalidName:
            continue  # not a distribution (signature, hostile name...): says nothing about versions
        if version not in versions:
            versions.append(version)
    return tuple(versions)


def _is_json(response: requests.Response) -> bool:
    """Whether a simple page came as PEP 691 JSON (else it is PEP 503 HTML)."""
    content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return content_type in (SIMPLE_JSON, "application/json")


def _parse_time(raw: object) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class SimplePublicIndex(PublicIndex):
    """Lookups against a PEP 503/691 simple index, plus warehouse's JSON API when configured."""

    def __init__(self, config: PublicConfig, *, session: requests.Session | None = None,
                 retries: int | None = None, backoff_factor: float = 0.5,
                 max_retry_after: float = 15.0) -> None:
        self.config = config
        retries = config.retries if retries is None else retries
        self.session = session or new_session(retries=retries, backoff_factor=backoff_factor,
                                              max_retry_after=max_retry_after)

    def project_url(self, name: str) -> str | None:
        web = self.config.web_url
        return f"{web}project/{quote(name, safe='')}/" if web and self.config.json_url else None

    def publishes_owners(self) -> bool:
        return bool(self.config.json_url)

    def lookup_existing(self, name: str) -> PublicProject:
        """One JSON-API request for a name the listing holds; the simple page when it has no
        JSON API or the JSON API does not know the name yet (a stale cache)."""
        if not self.config.json_url:
            return self.lookup(name)
        detail = self._get(f"{self.config.json_url}{quote(name, safe='')}/json", "application/json")
        if detail.status_code == 404:
            return self.lookup(name)
        self._expect_ok(detail)
        return self._from_json(name, self._json(detail), (), self.project_url(name))

    def file_digests(self, name: str) -> frozenset[str] | None:
        simple = self._get(f"{self.config.simple_url}{quote(name, safe='')}/", ACCEPT_SIMPLE)
        if simple.status_code == 404:
            return None
        self._expect_ok(simple)
        if _is_json(simple):
            files = self._json(simple).get("files")
            return frozenset(
                f["hashes"]["sha256"].lower() for f in (files if isinstance(files, list) else [])
                if isinstance(f, dict) and isinstance(f.get("hashes"), dict)
                and isinstance(f["hashes"].get("sha256"), str))
        # PEP 503: the hash is the link's fragment, "#sha256=<hex>".
        return frozenset(a.href.rsplit("#sha256=", 1)[1].lower()
                         for a in anchors(simple.text) if "#sha256=" in a.href)

    def lookup(self, name: str) -> PublicProject:
        json_api = bool(self.config.json_url)
        simple = self._get(f"{self.config.simple_url}{quote(name, safe='')}/", ACCEPT_SIMPLE)
        if simple.status_code == 404:
            return PublicProject(name=name, exists=False, ownership_known=json_api)
        self._expect_ok(simple)
        versions = self._simple_versions(simple)
        url = self.project_url(name)
        if not self.config.json_url:
            return PublicProject(name=name, exists=True, versions=versions, url=url)

        detail = self._get(f"{self.config.json_url}{quote(name, safe='')}/json", "application/json")
        if detail.status_code == 404:
            log.info("%s: the simple API lists it but the JSON API does not yet (stale cache); "
                     "owners unknown", name)
            return PublicProject(name=name, exists=True, versions=versions, url=url)
        self._expect_ok(detail)
        return self._from_json(name, self._json(detail), versions, url)

    # -- HTTP ------------------------------------------------------------------------------

    def _get(self, url: str, accept: str) -> requests.Response:
        try:
            return self.session.get(url, headers={"Accept": accept},
                                    timeout=(self.config.timeout, self.config.timeout))
        except requests.RequestException as exc:
            # str(exc) can embed request details; name the failure and the redacted URL only.
            raise PublicIndexUnavailable(
                f"public index unreachable at {public_url(url)} ({type(exc).__name__})"
            ) from None

    @staticmethod
    def _expect_ok(response: requests.Response) -> None:
        if response.status_code != 200:
            raise PublicIndexUnavailable(
                f"public index answered {response.status_code} for {public_url(response.url)}"
            )

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except (ValueError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            raise PublicIndexUnavailable(
                f"public index sent an unreadable answer for {public_url(response.url)}"
            )
        return data

    # -- parsing ---------------------------------------------------------------------------

    def _simple_versions(self, response: requests.Response) -> tuple[str, ...]:
        # Versions pip could install: a file that is yanked (PEP 592) it takes only when
        # pinned, and a version whose files are all yanked or deleted it never offers.
        if _is_json(response):
            data = self._json(response)
            files = data.get("files")
            if isinstance(files, list):
                return _versions_from_filenames([
                    f["filename"] for f in files if isinstance(f, dict)
                    and isinstance(f.get("filename"), str) and not f.get("yanked")])
            raw_versions = data.get("versions")
            if isinstance(raw_versions, list):
                return tuple(v for v in raw_versions if isinstance(v, str))
            return ()
        # A project page's anchor text is the file name; else the href's last segment is.
        return _versions_from_filenames([
            a.text or unquote(urlsplit(a.href).path.rstrip("/").rsplit("/", 1)[-1])
            for a in anchors(response.text) if not a.yanked])

    @staticmethod
    def _from_json(name: str, data: dict[str, Any], simple_versions: tuple[str, ...],
                   url: str | None) -> PublicProject:
        raw_ownership = data.get("ownership")
        # A JSON API without ``ownership`` (an older warehouse, a mirror) says nothing about owners.
        ownership_known = isinstance(raw_ownership, dict)
        ownership = raw_ownership if isinstance(raw_ownership, dict) else {}
        roles = ownership.get("roles")
        owners: list[str] = []
        for role in roles if isinstance(roles, list) else []:
            user = _text(role.get("user") if isinstance(role, dict) else None).lower()
            if user and user not in owners:
                owners.append(user)
        organization = _text(ownership.get("organization"))
        releases = data.get("releases")
        releases = releases if isinstance(releases, dict) else {}
        times = [
            t for files in releases.values() if isinstance(files, list)
            for f in files if isinstance(f, dict)
            if (t := _parse_time(f.get("upload_time_iso_8601"))) is not None
        ]
        return PublicProject(
            name=name,
            exists=True,
            owners=tuple(owners),
            organization=organization or None,
            versions=tuple(
                str(v) for v, files in releases.items() if isinstance(files, list)
                and any(isinstance(f, dict) and not f.get("yanked") for f in files)
            ) if releases else simple_versions,
            first_release=min(times) if times else None,
            ownership_known=ownership_known,
            url=url,
        )


def _text(value: object) -> str:
    """An owner's or an organisation's name as the index sent it, less what no name holds: a
    lone surrogate (no UTF-8 spelling: the store refuses the row), a NUL (PostgreSQL's text
    has none), an escape sequence (it would paint the terminal)."""
    return one_line(value, 100) if isinstance(value, str) else ""


@hookimpl(trylast=True)
def namekeeper_public_index(config: Config) -> PublicIndex:
    """The built-in lookup; an installed plugin answering this hook takes precedence."""
    return SimplePublicIndex(config.public)
