"""The built-in notifier: apprise, one `AppriseNotifier` per delivery target.

Each URL in ``[notify] urls`` and each service in the optional apprise config
file is its own target, so a target that fails is retried alone and the
others are never sent the same alert twice.

Routing uses apprise's tags: a URL may be written in apprise's TEXT syntax
``"taken,critical=slack://..."``, and a config file carries its own tags. A
target receives an alert when their tags meet (apprise's special ``always``
tag receives everything); a target without tags receives ``taken`` and
``failed``.

apprise never raises on a failed delivery, and its own log lines may carry
URLs with credentials: every result is checked, and a logging filter on
apprise's logger masks each target's secrets before anything is written.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..config import ConfigError
from ..hookspecs import hookimpl
from ..model import Outcome
from .interface import DEFAULT_TAGS, TAG_TEST, Message, Notifier
from .render import redact_text

if TYPE_CHECKING:
    from apprise import AppriseAsset
    from apprise.common import NotifyFormat

    from ..config import Config

# apprise itself (about 60 ms of imports, asyncio among them) is imported where a notifier is
# built or used: a process with no notifier configured, and audit (which sends none), never
# pays for it.

log = logging.getLogger(__name__)

#: Seconds one delivery may take before apprise gives up on it.
SERVICE_TIMEOUT = 30.0
_SCHEMA = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_TOKENS = re.compile(r"[/:@?&=#,;]+")


class _SecretMask(logging.Filter):
    """Masks registered secrets in every record apprise logs (and in its result logs)."""

    def __init__(self) -> None:
        super().__init__("namekeeper-secret-mask")
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def mask(self, text: str) -> str:
        with self._lock:
            secrets = tuple(self._secrets)
        return redact_text(text, secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logged as is, never raised
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_MASK = _SecretMask()
for _name in ("apprise", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(_MASK)


def _raw_secrets(raw: str) -> set[str]:
    """What to mask before apprise parses a configured URL: the whole entry and its password.

    apprise logs an entry it cannot parse verbatim, so this is registered first.
    """
    url = raw.strip()
    if not _SCHEMA.match(url) and "=" in url:
        url = url.split("=", 1)[1].strip()  # "tag1,tag2=url"
    secrets = {raw, raw.strip(), url}
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        secrets |= {password, unquote(password)}
    return secrets


def _secret_parts(service: Any) -> set[str]:
    """The pieces of a service's URL that its privacy form hides: tokens, passwords, keys."""
    full = str(service.url(privacy=False))
    private = str(service.url(privacy=True))
    public_tokens = set(_URL_TOKENS.split(private))
    secrets = {t for t in _URL_TOKENS.split(full) if t and t not in public_tokens}
    secrets |= {unquote(t) for t in secrets}
    secrets.add(full)
    password = getattr(service, "password", None)
    if isinstance(password, str):
        secrets.add(password)
    return secrets


def _schema_of(service: Any) -> str:
    match = _SCHEMA.match(str(service.url(privacy=True)))
    return match[1].lower() if match else "service"


def _body_for(service: Any, message: Message) -> tuple[str, NotifyFormat]:
    """Markdown for chat services (Slack, Teams), HTML with a text part for e-mail, else text."""
    from apprise.common import NotifyFormat

    target = service.resolve_format(None)
    if target == NotifyFormat.HTML:
        return message.html, NotifyFormat.HTML
    if target == NotifyFormat.MARKDOWN:
        return message.markdown, NotifyFormat.MARKDOWN
    return message.text, NotifyFormat.TEXT


class AppriseNotifier(Notifier):
    """One apprise service (one configured URL, or one entry of the config file)."""

    def __init__(self, name: str, service: Any, secrets: Iterable[str] = ()) -> None:
        self.name = name
        self._service = service
        self.tags = frozenset(str(t).lower() for t in service.tags)
        self._last_failure: str | None = None
        _MASK.register(secrets)

    def target(self) -> str:
        """``scheme://host[:port]`` from apprise's privacy form of the URL: no token, no path."""
        private = str(self._service.url(privacy=True))
        try:
            parts = urlsplit(private)
            host = parts.hostname
            port = parts.port
        except ValueError:
            host, port = None, None
        if not host or "..." in host or "*" in host:  # a token-only service (Slack): no host
            return f"{_schema_of(self._service)} ({self.name})"
        return f"{parts.scheme}://{host}" + (f":{port}" if port else "")

    def last_failure(self) -> str | None:
        return self._last_failure

    def __repr__(self) -> str:
        return f"AppriseNotifier({self.name!r}, tags={sorted(self.tags)})"

    def wants(self, tags: frozenset[str]) -> bool:
        """Apprise's own tag matching (OR over the alert's tags, ``always``); untagged: defaults."""
        if TAG_TEST in tags:
            return True
        if not self.tags:
            return bool(tags & DEFAULT_TAGS)
        from apprise.common import MATCH_ALL_TAG, MATCH_ALWAYS_TAG
        from apprise.utils.logic import is_exclusive_match

        return bool(tags) and bool(is_exclusive_match(
            logic=sorted(tags), data=self._service.tags,
            match_all=MATCH_ALL_TAG, match_always=MATCH_ALWAYS_TAG))

    def deliver(self, message: Message, outcome: Outcome) -> bool:
        import apprise as apprise_lib

        body, body_format = _body_for(self._service, message)
        sender = apprise_lib.Apprise(asset=self._service.asset)
        sender.add(self._service)
        result = sender.notify(body=body, title=message.title, body_format=body_format,
                               timeout=SERVICE_TIMEOUT)
        if result:
            log.info("notification %r about %s delivered", self.name, outcome.name)
            return True
        reasons = "; ".join(_MASK.mask(entry.message) for entry in result.logs()
                            if entry.level in ("WARNING", "ERROR", "CRITICAL"))
        self._last_failure = reasons or None
        # At INFO, as a delivery is: the caller says it once, with what happens next (the
        # dispatcher's retry or giving up, in the log; `notify --test`, in its row).
        log.info("notification %r about %s was not delivered: %s", self.name, outcome.name,
                 reasons or "the service reported a failure")
        return False


def _asset() -> AppriseAsset:
    import apprise as apprise_lib

    # memory: apprise keeps nothing on disk; a bounded time per delivery.
    return apprise_lib.AppriseAsset(storage_mode="memory", service_timeout=SERVICE_TIMEOUT)


def notifiers_from_urls(urls: Iterable[str]) -> list[AppriseNotifier]:
    """One notifier per URL; ``"tag1,tag2=url"`` (apprise's TEXT syntax) tags it."""
    import apprise as apprise_lib
    from apprise.config.base import ConfigBase

    notifiers, bad = [], []
    asset = _asset()
    for number, raw in enumerate(urls, start=1):
        _MASK.register(_raw_secrets(raw))
        services, _ = ConfigBase.config_parse_text(raw.strip(), asset=asset)
        if len(services) != 1 or not isinstance(services[0], apprise_lib.NotifyBase):
            bad.append(str(number))
            continue
        service = services[0]
        name = f"apprise:{_schema_of(service)}#{number}"
        notifiers.append(AppriseNotifier(name, service, _secret_parts(service)))
    # A URL may hold credentials: the error names the entries, never their text.
    if len(bad) == 1:
        raise ConfigError(f"[notify] urls entry {bad[0]} is not a valid apprise URL "
                          "(see apprise's list of supported services)")
    if bad:
        raise ConfigError(f"[notify] urls entries {', '.join(bad[:-1])} and {bad[-1]} are "
                          "not valid apprise URLs (see apprise's list of supported services)")
    return notifiers


def notifiers_from_config_file(path: Path) -> list[AppriseNotifier]:
    """One notifier per service of an apprise YAML/TEXT config file, checked now, not at send."""
    import apprise as apprise_lib

    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"[notify] config: cannot read apprise config file {path}: "
                          f"{exc.strerror}") from None
    config = apprise_lib.AppriseConfig(asset=_asset())
    if not config.add(str(path.resolve())):
        raise ConfigError(f"[notify] config: {path} is not a usable apprise config file")
    services = [s for s in config.services() if isinstance(s, apprise_lib.NotifyBase)]
    if not services:
        raise ConfigError(f"[notify] config: {path} defines no usable apprise URL")
    return [AppriseNotifier(f"apprise:config:{_schema_of(s)}#{n}", s, _secret_parts(s))
            for n, s in enumerate(services, start=1)]


@hookimpl(trylast=True)
def namekeeper_notifiers(config: Config) -> list[Notifier]:
    """Every configured apprise target; a bad URL or a missing config file stops start-up."""
    notifiers: list[Notifier] = []
    try:
        notifiers.extend(notifiers_from_urls(u.reveal() for u in config.notify.urls))
        if config.notify.config is not None:
            notifiers.extend(notifiers_from_config_file(config.notify.config))
    except ConfigError as exc:  # found now, not by `config.load`: named the same way
        raise config.error(str(exc)) from None
    return notifiers
