"""One TOML config file, plus environment variables for every secret.

Secrets are wrapped in `Secret`, whose ``repr``/``str`` never show the value, so
a config object can be logged, put in an exception or a notification without
leaking a token.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import platformdirs
from twine import utils as twine_utils

log = logging.getLogger(__name__)

ENV_CONFIG = "NAMEKEEPER_CONFIG"
ENV_PUBLIC_TOKEN = "NAMEKEEPER_PUBLIC_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_ARTIFACTORY_SECRET = "NAMEKEEPER_ARTIFACTORY_SECRET"  # noqa: S105
ENV_ARTIFACTORY_TOKEN = "NAMEKEEPER_ARTIFACTORY_TOKEN"  # noqa: S105
ENV_STORE_PASSWORD = "NAMEKEEPER_STORE_PASSWORD"  # noqa: S105


class ConfigError(Exception):
    """The configuration is unusable; the message says which key and why."""


class Secret:
    """A value that must never be printed: logs and tracebacks see ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact(text: str, secrets: Iterable[str], *, min_length: int = 1) -> str:
    """``text`` with every secret at least ``min_length`` long replaced by ``***``.

    Longest first, so a secret that contains another is never half-replaced.
    """
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= min_length:
            text = text.replace(secret, "***")
    return text


def _public_base(upload_url: str) -> str:
    """The public index's web root, derived from twine's upload URL constant.

    The upload host of the public index is its web host prefixed by ``upload.``;
    deriving it keeps registry host names out of our code.
    """
    parts = urlsplit(upload_url)
    host = parts.netloc.removeprefix("upload.")
    return urlunsplit((parts.scheme, host, "/", "", ""))


DEFAULT_UPLOAD_URL = twine_utils.DEFAULT_REPOSITORY
DEFAULT_SIMPLE_URL = _public_base(DEFAULT_UPLOAD_URL) + "simple/"
DEFAULT_JSON_URL = _public_base(DEFAULT_UPLOAD_URL) + "pypi/"


@dataclass(frozen=True)
class PublicConfig:
    simple_url: str = DEFAULT_SIMPLE_URL
    json_url: str | None = DEFAULT_JSON_URL  # None: the index has no JSON API
    upload_url: str = DEFAULT_UPLOAD_URL
    username: str = "__token__"
    token: Secret | None = field(default=None, repr=False)
    owners: tuple[str, ...] = ()
    organization: str | None = None
    timeout: float = 10.0

    @property
    def web_url(self) -> str | None:
        """Root of the human project pages (``<root>/project/<name>/``), when it is the JSON host."""
        if not self.json_url:
            return None
        parts = urlsplit(self.json_url)
        return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


@dataclass(frozen=True)
class PlaceholderConfig:
    organization: str = "the owner of this name"
    contact: str = ""
    version: str = "0.0.0"
    template: Path | None = None


@dataclass(frozen=True)
class PolicyConfig:
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    dry_run: bool = False


@dataclass(frozen=True)
class StoreConfig:
    """Where the state lives: a SQLite file (``path``), or a database ``url`` shared by replicas."""

    path: Path = field(
        default_factory=lambda: Path(platformdirs.user_data_dir("namekeeper")) / "namekeeper.sqlite3"
    )
    #: ``postgresql://user@host:port/db`` (or a third-party backend's URL); None: SQLite at path.
    url: str | None = None
    #: The database password, from NAMEKEEPER_STORE_PASSWORD (libpq's own sources work too).
    password: Secret | None = None


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8480
    max_body: int = 1024 * 1024
    workers: int = 2


@dataclass(frozen=True)
class ArtifactoryConfig:
    secret: Secret | None = field(default=None, repr=False)
    signing: bool = True
    repos: tuple[str, ...] = ()
    base_url: str | None = None
    token: Secret | None = field(default=None, repr=False)
    reconcile_interval: float = 3600.0


@dataclass(frozen=True)
class PollConfig:
    url: str
    interval: float = 600.0
    token: Secret | None = field(default=None, repr=False)
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    name: str | None = None


@dataclass(frozen=True)
class QueueConfig:
    new_projects_per_hour: int = 20
    max_attempts: int = 8
    backoff_base: float = 2.0
    backoff_max: float = 600.0
    recheck_interval: float = 6 * 3600.0  # how often `serve` looks at every known name again


@dataclass(frozen=True)
class NotifyConfig:
    urls: tuple[Secret, ...] = field(default=(), repr=False)  # apprise URLs embed credentials
    config: Path | None = None
    retry_first: float = 30.0  # first wait before a failed delivery is tried again; then doubling


@dataclass(frozen=True)
class Config:
    public: PublicConfig = field(default_factory=PublicConfig)
    placeholder: PlaceholderConfig = field(default_factory=PlaceholderConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    artifactory: ArtifactoryConfig = field(default_factory=ArtifactoryConfig)
    polls: tuple[PollConfig, ...] = ()
    queue: QueueConfig = field(default_factory=QueueConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: Path | None = None  # the file this came from, for messages


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any, key: str) -> float:
    """``"10m"`` → 600.0; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like '10m', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{key}: expected a duration like '30s', '10m' or '1h', got {value!r}")
        seconds = float(m[1]) * _UNITS[m[2]]
    if seconds <= 0:
        raise ConfigError(f"{key}: a duration must be positive")
    return seconds


class _Table:
    """Typed, key-checked access to one TOML table, so typos are errors, not silent defaults."""

    def __init__(self, data: Any, where: str, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"[{where}] must be a table")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"[{where}] has unknown key(s): {', '.join(unknown)}")
        self.data, self.where = data, where

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is not bool and isinstance(value, bool) and kind in (int, float):
            raise ConfigError(f"[{self.where}] {key} must be a number")
        if not isinstance(value, kind):
            expected = getattr(kind, "__name__", str(kind))
            raise ConfigError(f"[{self.where}] {key} must be of type {expected}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"[{self.where}] {key} must be a list of strings")
        return tuple(value)


def _env_secret(name: str | None) -> Secret | None:
    if not name:
        return None
    value = os.environ.get(name)
    return Secret(value) if value else None


def load(path: str | os.PathLike[str] | None = None, *, required: bool = False) -> Config:
    """Load the config from ``path``, ``$NAMEKEEPER_CONFIG``, or defaults when neither is given."""
    chosen = path or os.environ.get(ENV_CONFIG)
    if not chosen:
        if required:
            raise ConfigError("no configuration file: pass --config or set NAMEKEEPER_CONFIG")
        return from_dict({}, None)
    file = Path(chosen)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {file} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    return from_dict(data, file)


def _store_config(st: _Table, source: Path | None) -> StoreConfig:
    """``[store] path`` or ``url``: a plain path or ``sqlite:///path`` is SQLite, anything else
    with a scheme (``postgresql://``) goes to the backend that claims it."""
    store_path, url = st.get("path", str), st.get("url", str)
    if store_path and url:
        raise ConfigError("[store] takes either path or url, not both")
    if url:
        scheme = urlsplit(url).scheme
        if scheme == "sqlite":
            if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
                raise ConfigError("[store] url: a SQLite store is written sqlite:///path/to/file")
            store_path, url = url[len("sqlite://"):], None
        elif len(scheme) < 2:  # no scheme, or a Windows drive letter: a path
            store_path, url = url, None
        else:
            try:
                parts = urlsplit(url)
                has_password = parts.password is not None or "password=" in parts.query
            except ValueError:
                raise ConfigError("[store] url is not a valid URL") from None
            if has_password:
                raise ConfigError(f"[store] url must not contain a password: set "
                                  f"{ENV_STORE_PASSWORD} instead")
    if store_path and source is not None:
        store_path = str((source.parent / Path(store_path).expanduser()).resolve())
    return StoreConfig(path=Path(store_path) if store_path else StoreConfig().path, url=url,
                       password=_env_secret(ENV_STORE_PASSWORD))


def _url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{key} must be an http(s) URL, got {value!r}")
    return value if value.endswith("/") else value + "/"


def from_dict(data: dict[str, Any], source: Path | None = None) -> Config:
    """Build a `Config` from parsed TOML; every secret comes from the environment."""
    top = _Table(
        data,
        "config",
        {"public", "placeholder", "policy", "store", "serve", "artifactory", "poll", "queue",
         "notify"},
    )

    pub = _Table(top.get("public", dict, {}), "public",
                 {"simple-url", "json-url", "upload-url", "username", "password", "owners",
                  "organization", "timeout"})
    token = _env_secret(ENV_PUBLIC_TOKEN)
    if "password" in pub.data:
        log.warning("[public] password is set in the config file; prefer the %s environment "
                    "variable so the secret stays out of files", ENV_PUBLIC_TOKEN)
        if token is None:
            token = Secret(pub.get("password", str))
    json_url = pub.get("json-url", str, DEFAULT_JSON_URL)
    public = PublicConfig(
        simple_url=_url(pub.get("simple-url", str, DEFAULT_SIMPLE_URL), "[public] simple-url"),
        json_url=_url(json_url, "[public] json-url") if json_url else None,
        upload_url=_url(pub.get("upload-url", str, DEFAULT_UPLOAD_URL), "[public] upload-url"),
        username=pub.get("username", str, "__token__"),
        token=token,
        owners=tuple(o.lower() for o in pub.strings("owners")),
        organization=(pub.get("organization", str) or None),
        timeout=float(pub.get("timeout", (int, float), 10.0)),
    )

    ph = _Table(top.get("placeholder", dict, {}), "placeholder",
                {"organization", "contact", "version", "template"})
    template = ph.get("template", str)
    if template and source is not None:
        template = str((source.parent / template).resolve())
    version = ph.get("version", str, "0.0.0")
    _check_version(version)
    placeholder = PlaceholderConfig(
        organization=ph.get("organization", str, PlaceholderConfig.organization),
        contact=ph.get("contact", str, ""),
        version=version,
        template=Path(template) if template else None,
    )

    pol = _Table(top.get("policy", dict, {}), "policy", {"include", "exclude", "dry-run"})
    policy = PolicyConfig(
        include=pol.strings("include", ("*",)),
        exclude=pol.strings("exclude"),
        dry_run=pol.get("dry-run", bool, False),
    )

    store = _store_config(_Table(top.get("store", dict, {}), "store", {"path", "url"}), source)

    sv = _Table(top.get("serve", dict, {}), "serve", {"host", "port", "max-body", "workers"})
    port = sv.get("port", int, 8480)
    if not 0 <= port <= 65535:
        raise ConfigError("[serve] port must be between 0 and 65535")
    serve = ServeConfig(
        host=sv.get("host", str, "127.0.0.1"),
        port=port,
        max_body=sv.get("max-body", int, 1024 * 1024),
        workers=max(1, sv.get("workers", int, 2)),
    )

    af = _Table(top.get("artifactory", dict, {}), "artifactory",
                {"signing", "repos", "base-url", "reconcile-interval"})
    base_url = af.get("base-url", str)
    artifactory = ArtifactoryConfig(
        secret=_env_secret(ENV_ARTIFACTORY_SECRET),
        signing=af.get("signing", bool, True),
        repos=af.strings("repos"),
        base_url=_url(base_url, "[artifactory] base-url") if base_url else None,
        token=_env_secret(ENV_ARTIFACTORY_TOKEN),
        reconcile_interval=parse_duration(af.get("reconcile-interval", (str, int, float), "1h"),
                                          "[artifactory] reconcile-interval"),
    )

    polls_raw = top.get("poll", list, [])
    polls = []
    for i, entry in enumerate(polls_raw):
        p = _Table(entry, f"poll {i + 1}",
                   {"url", "interval", "token-env", "username", "password-env", "name"})
        url = p.get("url", str)
        if not url:
            raise ConfigError(f"[[poll]] entry {i + 1} needs a url")
        if urlsplit(url).username or urlsplit(url).password:
            raise ConfigError(f"[[poll]] entry {i + 1}: put credentials in environment variables "
                              "(token-env, username + password-env), not in the url")
        polls.append(PollConfig(
            url=_url(url, f"[[poll]] {i + 1} url"),
            interval=parse_duration(p.get("interval", (str, int, float), "10m"),
                                    f"[[poll]] {i + 1} interval"),
            token=_env_secret(p.get("token-env", str)),
            username=p.get("username", str),
            password=_env_secret(p.get("password-env", str)),
            name=p.get("name", str),
        ))

    q = _Table(top.get("queue", dict, {}), "queue",
               {"new-projects-per-hour", "max-attempts", "backoff-base", "backoff-max",
                "recheck-interval"})
    queue = QueueConfig(
        new_projects_per_hour=q.get("new-projects-per-hour", int, 20),
        max_attempts=q.get("max-attempts", int, 8),
        backoff_base=float(q.get("backoff-base", (int, float), 2.0)),
        backoff_max=float(q.get("backoff-max", (int, float), 600.0)),
        recheck_interval=parse_duration(q.get("recheck-interval", (str, int, float), "6h"),
                                        "[queue] recheck-interval"),
    )
    if queue.new_projects_per_hour < 1 or queue.max_attempts < 1:
        raise ConfigError("[queue] new-projects-per-hour and max-attempts must be at least 1")

    nt = _Table(top.get("notify", dict, {}), "notify", {"urls", "config", "retry-first"})
    notify_config = nt.get("config", str)
    if notify_config and source is not None:
        notify_config = str((source.parent / notify_config).resolve())
    notify = NotifyConfig(
        urls=tuple(Secret(u) for u in nt.strings("urls")),
        config=Path(notify_config) if notify_config else None,
        retry_first=parse_duration(nt.get("retry-first", (str, int, float), "30s"),
                                   "[notify] retry-first"),
    )

    return Config(public=public, placeholder=placeholder, policy=policy, store=store,
                  serve=serve, artifactory=artifactory, polls=tuple(polls), queue=queue,
                  notify=notify, source=source)


def _check_version(version: str) -> None:
    from packaging.version import InvalidVersion, Version

    try:
        Version(version)
    except InvalidVersion:
        raise ConfigError(f"[placeholder] version {version!r} is not a valid version") from None
