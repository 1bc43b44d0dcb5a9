"""Where the upload password comes from, decided by us rather than by twine.

With no password twine looks in the keyring, then, for the public index,
tries *trusted publishing over the network*, then prompts: none of that may
happen inside a service.  `find_credentials` looks, in order, at the
``NAMEKEEPER_PUBLIC_TOKEN`` token, a credential written into the upload URL,
the ``.pypirc`` section whose ``repository`` is our upload URL, and the
keyring; the backend then always hands twine an explicit password, or fails
before any request leaves the process.

`Credentials.secrets` lists every form in which the password could show up in
text, so the backend and the output capture can scrub them all.
"""

from __future__ import annotations

import base64
import configparser
import logging
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from twine import exceptions as twine_exceptions
from twine import utils as twine_utils

from ..config import ENV_PUBLIC_TOKEN, PublicConfig
from ._twine_output import capturing

#: The backend's logger (`namekeeper.reserve.twine`): where credentials came from is its story.
log = logging.getLogger("namekeeper.reserve.twine")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str  # where they came from, for messages; never the value

    def secrets(self) -> tuple[str, ...]:
        """Every form in which the password could show up in text: raw, URL-quoted, basic-auth."""
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        forms = {self.password, quote(self.password, safe=""), basic}
        return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its ``user:password@`` part, and that user and password (unquoted)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, unquote(user) or None, unquote(password) or None


def same_url(a: str, b: str) -> bool:
    """Whether two repository URLs name the same place, as twine normalises them."""
    def key(url: str) -> tuple[str, str, str]:
        p = urlsplit(twine_utils.normalize_repository_url(url))
        return p.scheme.lower(), p.netloc.lower(), p.path.rstrip("/")

    return key(a) == key(b)


def find_credentials(public: PublicConfig, url: str, url_credentials: Credentials | None, *,
                     config_file: str | None, use_keyring: bool) -> Credentials | None:
    """The first credentials found for ``url``: token, then URL, then ``.pypirc``, then keyring."""
    token = public.token
    if token is not None and token.reveal():
        return Credentials(public.username, token.reveal(), ENV_PUBLIC_TOKEN)
    if url_credentials is not None:
        return url_credentials
    if config_file:
        found = from_pypirc(config_file, url, public.username)
        if found is not None:
            return found
    if use_keyring:
        return from_keyring(url, public.username)
    return None


def from_pypirc(path: str, url: str, default_username: str) -> Credentials | None:
    """The ``.pypirc`` section whose ``repository`` is ``url``, if it has a password."""
    try:
        with capturing(()):
            sections = twine_utils.get_config(path)
    except (OSError, configparser.Error, twine_exceptions.TwineException) as exc:
        log.debug("no credentials from %s: %s", path, type(exc).__name__)
        return None
    for section in sections.values():
        repository, password = section.get("repository"), section.get("password")
        if repository and password and same_url(repository, url):
            username = section.get("username") or default_username
            return Credentials(username, password, path)
    return None


def from_keyring(url: str, username: str) -> Credentials | None:
    """The system keyring's password for ``url`` and ``username``, if there is a keyring."""
    try:
        import keyring
    except ImportError:
        return None
    try:
        password = keyring.get_password(url, username)
    except Exception as exc:  # noqa: BLE001 - no backend, locked keyring, ...
        log.debug("no credentials from the keyring: %s", type(exc).__name__)
        return None
    return Credentials(username, password, "the keyring") if password else None
