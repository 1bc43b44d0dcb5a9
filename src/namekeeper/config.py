"""One TOML config file, plus environment variables for every secret.

Secrets are wrapped in `Secret`, whose ``repr``/``str`` never show the value, so
a config object can be logged, put in an exception or a notification without
leaking a token.
"""

from __future__ import annotations

import base64
import difflib
import html
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import platformdirs
from twine import utils as twine_utils

from .errors import ConfigError
from .http import public_url, web_url
from .toml_file import read_toml

log = logging.getLogger(__name__)

ENV_CONFIG = "NAMEKEEPER_CONFIG"
ENV_PUBLIC_TOKEN = "NAMEKEEPER_PUBLIC_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_ARTIFACTORY_SECRET = "NAMEKEEPER_ARTIFACTORY_SECRET"  # noqa: S105
ENV_ARTIFACTORY_TOKEN = "NAMEKEEPER_ARTIFACTORY_TOKEN"  # noqa: S105
ENV_STORE_PASSWORD = "NAMEKEEPER_STORE_PASSWORD"  # noqa: S105


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


_MARKUP = re.compile(r"<[^>]{0,200}>")


def _base64_cores(secret: str) -> list[str]:
    """What any base64 text containing ``secret`` surely contains (``user:secret`` in Basic auth).

    A secret's bytes encode differently by their offset modulo 3 in the encoded
    text; for each offset the characters that depend only on the secret are the
    same whatever precedes or follows it.
    """
    raw = secret.encode()
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii").rstrip("=")
        start = 4 if offset else 0  # the first group mixes in what precedes
        whole = (offset + len(raw)) // 3 * 4  # groups made of secret bytes only
        core = encoded[start:whole]
        if len(core) >= 8:
            # Its last group and padding too, for a secret that ends the text, as the
            # password does in Basic auth: they depend on the secret alone there.
            cores += [core, base64.b64encode(b"\0" * offset + raw).decode("ascii")[start:]]
    return cores


#: ``Basic <base64 of user:password>``, whoever's credentials they are.
_BASIC_AUTH = re.compile(r"\b((?i:basic)\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")


def _basic_auth_hidden(match: re.Match[str]) -> str:
    try:
        credentials = base64.b64decode(match[2], validate=True).decode()
    except ValueError:  # UnicodeDecodeError too
        return match[0]
    # Decoded, the group that mixes the user name with the password's first bytes would
    # give those away.  Prose is no base64 of a readable "user:password" ("Basic
    # authentication", "Basic HttpOnly", which decodes to bytes with a colon in them).
    return (match[1] + "***" if ":" in credentials and credentials.isprintable()
            else match[0])


def _replace_all(text: str, forms: list[str]) -> str:
    for form in forms:
        text = text.replace(form, "***")
    return text


def redact(text: str, secrets: Iterable[str], *, min_length: int = 1) -> str:
    """``text`` with every secret at least ``min_length`` long replaced by ``***``.

    The one redaction helper: call it on the whole text *before* cutting it short.
    Besides the secret itself it finds its URL-quoted and base64 forms (Basic auth),
    a secret split by markup (``tok<b>en</b>``) or written with HTML entities; and any
    ``Basic`` credentials, known or not, are hidden whole.
    Longest first, so a secret that contains another is never half-replaced.
    """
    forms: list[str] = []
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= min_length:
            forms += [secret, quote(secret, safe="")]
            if len(secret) >= 8:
                forms += _base64_cores(secret)
    text = _BASIC_AUTH.sub(_basic_auth_hidden, text)
    if not forms:
        return text
    forms = sorted(set(forms), key=len, reverse=True)
    text = _replace_all(text, forms)
    # Markup or entities between the secret's characters: judge the text without them.
    for variant in (html.unescape(text), _MARKUP.sub("", text), _MARKUP.sub("", html.unescape(text))):
        if variant != text and _replace_all(variant, forms) != variant:
            text = _replace_all(variant, forms)
    return text


def _public_base(upload_url: str) -> str:
    """The public index's web root, derived from twine's upload URL constant.

    The upload host of the public index is its web host prefixed by ``upload.``;
    deriving it keeps registry host names out of our code.
    """
    parts = urlsplit(upload_url)
    host = parts.netloc.removeprefix("upload.")
    return urlunsplit((parts.scheme, host, "/", "", ""))


@dataclass(frozen=True)
class IndexPreset:
    """The three URLs of a well-known public index, all derived from twine's upload URL."""

    upload_url: str

    @property
    def simple_url(self) -> str:
        return _public_base(self.upload_url) + "simple/"

    @property
    def json_url(self) -> str:
        return _public_base(self.upload_url) + "pypi/"


#: ``[public] index = "..."``: twine's own constants, so no host name is spelt in our code.
INDEX_PRESETS = {
    "pypi": IndexPreset(twine_utils.DEFAULT_REPOSITORY),
    "testpypi": IndexPreset(twine_utils.TEST_REPOSITORY),
}
DEFAULT_UPLOAD_URL = INDEX_PRESETS["pypi"].upload_url
DEFAULT_SIMPLE_URL = INDEX_PRESETS["pypi"].simple_url
DEFAULT_JSON_URL = INDEX_PRESETS["pypi"].json_url


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
    # How long the index may answer 404 for a project we just uploaded (CDN-cached answers).
    cdn_grace: float = 3600.0
    # Lookups retry connection errors, 5xx and 429 this many times (with backoff) before failing.
    retries: int = 3

    def holds(self, owners: Iterable[str], organization: str | None) -> bool:
        """Whether a public project with these owners and organisation is ours: one of
        ``owners`` is one of our accounts, or the organisation is ours (case aside)."""
        mine = {o.lower() for o in self.owners}
        return bool(mine & {o.lower() for o in owners}) or bool(
            self.organization and organization
            and self.organization.lower() == organization.lower())

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
    body_timeout: float = 10.0  # a request body must arrive within this, else 408
    connection_limit: int = 100  # open connections at most (waitress's connection_limit)


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


MIN_LEASE = 1.0  # seconds; `[queue] lease` below it is refused


@dataclass(frozen=True)
class QueueConfig:
    new_projects_per_hour: int = 20
    max_attempts: int = 8
    backoff_base: float = 2.0
    backoff_max: float = 600.0
    recheck_interval: float = 6 * 3600.0  # how often `serve` looks at every known name again
    lease: float = 120.0  # a claim expires unless renewed within this; then anyone reclaims it
    max_pause: float = 3600.0  # the longest Retry-After we obey
    confirm_after: float = 180.0  # a 2xx upload is confirmed by a lookup this much later
    outage_after: float = 300.0  # public index unreachable this long: one alert, /healthz red


@dataclass(frozen=True)
class NotifyConfig:
    urls: tuple[Secret, ...] = field(default=(), repr=False)  # apprise URLs embed credentials
    config: Path | None = None
    retry_first: float = 30.0  # first wait before a failed delivery is tried again; then doubling


@dataclass(frozen=True)
class WatchConfig:
    """``[watch]``: look-alikes of our names on the public index (see `namekeeper.watch`)."""

    enabled: bool = False  # a [watch] table is present: `serve` scans too
    interval: float = 3600.0  # how often `serve` scans the public listing again; 0: never
    prefixes: tuple[str, ...] = ()  # any public project starting with one is reported
    allow: tuple[str, ...] = ()  # globs on canonical names: benign look-alikes, never reported


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
    watch: WatchConfig = field(default_factory=WatchConfig)
    source: Path | None = None  # the file this came from, for messages
    #: ``[plugins.<entry-point-name>]`` tables; ``{ env = "VAR" }`` values are `Secret`s.
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def plugin(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` table of the plugin registered under entry point ``name``.

        Empty when the file has none.  A value written ``{ env = "VAR" }`` is read from
        the environment as a `Secret` (None when the variable is unset or empty).
        """
        return self.plugins.get(name, MappingProxyType({}))

    def error(self, problem: str) -> ConfigError:
        """A problem of this config found after loading (a plugin checking its settings),
        named as loading names every problem: after the file it is in."""
        return ConfigError(f"{_where(self.source)}: {problem}")

    def secrets(self) -> list[Secret]:
        """Every secret this config holds (ours and the plugins'), so none slips into text."""
        found: list[Secret | None] = [self.public.token, self.artifactory.secret,
                                      self.artifactory.token, *self.notify.urls]
        for poll in self.polls:
            found += [poll.token, poll.password]
        found += [s for table in self.plugins.values() for s in _secrets_in(table)]
        return [s for s in found if s is not None and s.reveal()]

    def secret_values(self) -> tuple[str, ...]:
        """The text of every secret (`secrets`): what `redact` masks in messages."""
        return tuple(s.reveal() for s in self.secrets())


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


def _where(source: Path | None) -> str:
    """How an error names the config it is about (before the colon)."""
    return f"config file {source}" if source else "the configuration"


class _Problems:
    """Every problem of one config file, so the user fixes them all in one go."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def checked(self, check: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """``check(*args)``, or ``default`` with its ConfigError noted."""
        try:
            return check(*args)
        except ConfigError as exc:
            self.add(str(exc))
            return default

    def raise_if_any(self, source: Path | None) -> None:
        if not self.messages:
            return
        where = _where(source)
        if len(self.messages) == 1:
            raise ConfigError(f"{where}: {self.messages[0]}")
        raise ConfigError(f"{where} has {len(self.messages)} problems: "
                          + "; ".join(self.messages))


# What a value of each kind is, in words (the message names the key and what it must be).
_KIND_WORDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


def _kind_words(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and str in kinds:
        return "a duration like '30s' or a number of seconds"
    if float in kinds:
        return "a number"
    return " or ".join(_KIND_WORDS.get(k, k.__name__) for k in kinds)


#: Keys people bring from pip's and twine's configuration, and what they mean here.
_FAMILIAR_KEYS = {
    ("public", "index-url"): "simple-url",
    ("public", "url"): "simple-url",
    ("public", "repository"): "upload-url",
    ("public", "repository-url"): "upload-url",
}


def _closest(key: str, known: set[str], where: str = "") -> str | None:
    familiar = _FAMILIAR_KEYS.get((where, key))
    if familiar in known:
        return familiar
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


class _Table:
    """Typed, key-checked access to one TOML table, so typos are errors, not silent defaults.

    A problem is noted in ``problems`` and the default used, so that the rest of the file is
    still checked and every problem is reported at once.
    """

    def __init__(self, data: Any, where: str, known: set[str], problems: _Problems,
                 *, sections: bool = False, label: str | None = None) -> None:
        self.where, self.problems = where, problems
        #: How messages name the table: ``[queue]``; ``[[poll]] entry 2`` for an array's.
        self.label = label or f"[{where}]"
        if not isinstance(data, dict):
            problems.add(f"{self.label} must be a table")
            data = {}
        for key in sorted(set(data) - known):
            close = _closest(key, known, where)
            if sections:
                problems.add(f"unknown section [{key}]"
                             + (f" (did you mean [{close}]?)" if close else ""))
            else:
                problems.add(f"{self.label} has an unknown key {key!r}"
                             + (f" (did you mean {close!r}?)" if close else ""))
        self.data = {k: v for k, v in data.items() if k in known}

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            *, what: str | None = None) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wrong_bool = bool not in kinds and isinstance(value, bool)
        if wrong_bool or not isinstance(value, kind):
            self.problems.add(f"{self.label} {key} must be {what or _kind_words(kind)}, "
                              f"got {_shown_value(value)}")
            return default
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None, what="a list of strings")
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            self.problems.add(f"{self.label} {key} must be a list of strings")
            return default
        return tuple(value)


def _shown_value(value: Any) -> str:
    """A config value for an error message: short, one line (values here are never secrets)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _secrets_in(value: Any) -> Iterator[Secret]:
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _secrets_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _secrets_in(v)


def _plugin_value(value: Any, where: str) -> Any:
    """A plugin table's value with every ``{ env = "VAR" }`` replaced by the variable's `Secret`."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            if not isinstance(value["env"], str) or not value["env"]:
                raise ConfigError(f"[{where}] env must name an environment variable")
            return _env_secret(value["env"])
        return MappingProxyType({k: _plugin_value(v, f"{where}.{k}") for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_plugin_value(v, where) for v in value)
    return value


def _plugin_tables(data: Any) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(data, dict):
        raise ConfigError("[plugins] must be a table of [plugins.<name>] tables")
    tables = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[plugins.{name}] must be a table")
        tables[name] = _plugin_value(table, f"plugins.{name}")
    return MappingProxyType(tables)


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
    return from_dict(read_toml(file, "config file", ConfigError), file)


def store_config_for(location: str, option: str) -> StoreConfig:
    """The `StoreConfig` for a store named on the command line by ``option`` (``--to``), as
    ``[store] url`` takes it."""
    problems = _Problems()
    store = _store_config(_Table({"url": location}, "store", {"url"}, problems), None, problems)
    if problems.messages:  # the user typed an option, not the config file's [store] url
        raise ConfigError(f"{option}: " + "; ".join(
            m.replace("[store] url", "the store URL", 1) for m in problems.messages))
    return store


def _store_config(st: _Table, source: Path | None, problems: _Problems) -> StoreConfig:
    """``[store] path`` or ``url``: a plain path or ``sqlite:///path`` is SQLite, anything else
    with a scheme (``postgresql://``) goes to the backend that claims it."""
    store_path, url = st.get("path", str), st.get("url", str)
    if store_path and url:
        problems.add("[store] takes either path or url, not both")
        url = None
    if url:
        try:
            parts = urlsplit(url)
            has_password = parts.password is not None or "password=" in parts.query
        except ValueError:
            problems.add("[store] url is not a valid URL")
            parts, has_password, url = None, False, None
        if parts is None:
            pass
        elif parts.scheme == "sqlite":
            if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
                problems.add("[store] url: a SQLite store is written sqlite:///path/to/file")
                url = None
            else:
                store_path, url = url[len("sqlite://"):], None
        elif len(parts.scheme) < 2:  # no scheme, or a Windows drive letter: a path
            store_path, url = url, None
        elif has_password:
            # Never in a file (or a log line that quotes the setting): from the environment.
            problems.add(f"[store] url must not contain a password: set {ENV_STORE_PASSWORD}")
            url = None
    if store_path and source is not None:
        store_path = str((source.parent / Path(store_path).expanduser()).resolve())
    return StoreConfig(path=Path(store_path) if store_path else StoreConfig().path, url=url,
                       password=_env_secret(ENV_STORE_PASSWORD))


def _url(value: str, key: str) -> str:
    if not web_url(value):
        # Shown without its userinfo: a URL refused for its scheme may still hold a password.
        raise ConfigError(f"{key} must be an http(s) URL, got {public_url(value)!r}")
    return value if value.endswith("/") else value + "/"


#: Every section of the file: its keys, read by one function per section (below).
_SECTION_KEYS: dict[str, set[str]] = {
    "placeholder": {"organization", "contact", "version", "template"},
    "policy": {"include", "exclude", "dry-run"},
    "store": {"path", "url"},
    "serve": {"host", "port", "max-body", "workers", "body-timeout", "connection-limit"},
    "artifactory": {"signing", "repos", "base-url", "reconcile-interval"},
    "queue": {"new-projects-per-hour", "max-attempts", "backoff-base", "backoff-max",
              "recheck-interval", "lease", "max-pause", "confirm-after", "outage-after"},
    "notify": {"urls", "config", "retry-first"},
    "watch": {"interval", "prefixes", "allow"},
}


def from_dict(data: dict[str, Any], source: Path | None = None) -> Config:
    """Build a `Config` from parsed TOML; every secret comes from the environment.

    Each section is read by its own function; every problem in the file is reported in
    one `ConfigError`.
    """
    problems = _Problems()
    top = _Table(data, "config", {"public", "poll", "plugins", *_SECTION_KEYS}, problems,
                 sections=True)

    def section(name: str, keys: set[str] | None = None) -> _Table:
        return _Table(top.get(name, dict, {}), name, keys or _SECTION_KEYS[name], problems)

    public = _public_config(section("public", _PUBLIC_KEYS))
    placeholder = _placeholder_config(section("placeholder"), source)
    policy = _policy_config(section("policy"))
    store = _store_config(section("store"), source, problems)
    serve = _serve_config(section("serve"))
    artifactory = _artifactory_config(section("artifactory"))
    polls = []
    for i, entry in enumerate(top.get("poll", list, [], what="a list of [[poll]] tables")):
        where = f"[[poll]] entry {i + 1}"
        poll = _poll_config(_Table(entry, "poll", _POLL_KEYS, problems, label=where), where)
        if poll is not None:
            polls.append(poll)
    queue = _queue_config(section("queue"))
    notify = _notify_config(section("notify"), source)
    plugins = problems.checked(_plugin_tables, top.get("plugins", dict, {}),
                               default=MappingProxyType({}))
    watch = _watch_config(section("watch"), problems, enabled="watch" in data)

    problems.raise_if_any(source)
    return Config(public=public, placeholder=placeholder, policy=policy, store=store,
                  serve=serve, artifactory=artifactory, polls=tuple(polls), queue=queue,
                  notify=notify, watch=watch, source=source, plugins=plugins)


def _relative_to(source: Path | None, path: str | None) -> str | None:
    """A path written in the file, relative to the file's folder."""
    if path and source is not None:
        return str((source.parent / path).resolve())
    return path


def _placeholder_config(ph: _Table, source: Path | None) -> PlaceholderConfig:
    template = _relative_to(source, ph.get("template", str))
    version = ph.problems.checked(_check_version, ph.get("version", str, "0.0.0"),
                                  default="0.0.0")
    return PlaceholderConfig(
        organization=ph.get("organization", str, PlaceholderConfig.organization),
        contact=ph.get("contact", str, ""),
        version=version,
        template=Path(template) if template else None,
    )


def _policy_config(pol: _Table) -> PolicyConfig:
    return PolicyConfig(
        include=pol.strings("include", ("*",)),
        exclude=pol.strings("exclude"),
        dry_run=pol.get("dry-run", bool, False),
    )


def _serve_config(sv: _Table) -> ServeConfig:
    problems = sv.problems
    port = sv.get("port", int, 8480, what="a port number")
    if not 0 <= port <= 65535:
        problems.add("[serve] port must be between 0 and 65535")
        port = 8480
    serve = ServeConfig(
        host=sv.get("host", str, "127.0.0.1"),
        port=port,
        max_body=sv.get("max-body", int, 1024 * 1024, what="a number of bytes"),
        workers=max(1, sv.get("workers", int, 2)),
        body_timeout=problems.checked(parse_duration,
                                      sv.get("body-timeout", _DURATION_KINDS, "10s"),
                                      "[serve] body-timeout", default=10.0),
        connection_limit=sv.get("connection-limit", int, 100, what="a number of connections"),
    )
    if serve.connection_limit < 4:
        problems.add("[serve] connection-limit must be at least 4")
    return serve


def _artifactory_config(af: _Table) -> ArtifactoryConfig:
    problems = af.problems
    base_url = af.get("base-url", str)
    return ArtifactoryConfig(
        secret=_env_secret(ENV_ARTIFACTORY_SECRET),
        signing=af.get("signing", bool, True),
        repos=af.strings("repos"),
        base_url=problems.checked(_url, base_url, "[artifactory] base-url") if base_url else None,
        token=_env_secret(ENV_ARTIFACTORY_TOKEN),
        reconcile_interval=problems.checked(
            parse_duration, af.get("reconcile-interval", _DURATION_KINDS, "1h"),
            "[artifactory] reconcile-interval", default=3600.0),
    )


def _queue_config(q: _Table) -> QueueConfig:
    problems = q.problems
    queue = QueueConfig(
        new_projects_per_hour=q.get("new-projects-per-hour", int, 20),
        max_attempts=q.get("max-attempts", int, 8),
        backoff_base=float(q.get("backoff-base", (int, float), 2.0, what=_SECONDS)),
        backoff_max=float(q.get("backoff-max", (int, float), 600.0, what=_SECONDS)),
        recheck_interval=problems.checked(
            parse_duration, q.get("recheck-interval", _DURATION_KINDS, "6h"),
            "[queue] recheck-interval", default=6 * 3600.0),
        **{field_: problems.checked(parse_duration, q.get(key, _DURATION_KINDS, default),
                                    f"[queue] {key}", default=parse_duration(default, key))
           for field_, key, default in (("lease", "lease", "2m"), ("max_pause", "max-pause", "1h"),
                                        ("confirm_after", "confirm-after", "3m"),
                                        ("outage_after", "outage-after", "5m"))},
    )
    if queue.new_projects_per_hour < 1 or queue.max_attempts < 1:
        problems.add("[queue] new-projects-per-hour and max-attempts must be at least 1")
    if queue.lease < MIN_LEASE:
        # Renewed every third of it: any shorter and a claim lapses between renewals, so
        # every name is taken from its worker and tried again, over and over.
        problems.add(f"[queue] lease must be at least {MIN_LEASE:.0f}s, got {queue.lease:g}s")
    return queue


def _notify_config(nt: _Table, source: Path | None) -> NotifyConfig:
    notify_config = _relative_to(source, nt.get("config", str))
    return NotifyConfig(
        urls=tuple(Secret(u) for u in nt.strings("urls")),
        config=Path(notify_config) if notify_config else None,
        retry_first=nt.problems.checked(
            parse_duration, nt.get("retry-first", _DURATION_KINDS, "30s"),
            "[notify] retry-first", default=30.0),
    )


_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
GLOB_PATTERN = re.compile(r"[A-Za-z0-9._*?\[\]!-]+", re.ASCII)


def _watch_config(w: _Table, problems: _Problems, *, enabled: bool) -> WatchConfig:
    prefixes = w.strings("prefixes")
    for prefix in prefixes:
        if not _PREFIX.fullmatch(prefix):
            problems.add(f"[watch] prefixes: {_shown_value(prefix)} is not the start of a "
                         "project name (letters, digits, '.', '_', '-', starting with a letter "
                         "or digit)")
    allow = w.strings("allow")
    for glob in allow:
        if not GLOB_PATTERN.fullmatch(glob):
            problems.add(f"[watch] allow: {_shown_value(glob)} is not a glob on project names")
    interval = problems.checked(parse_duration, w.get("interval", _DURATION_KINDS, "1h"),
                                "[watch] interval", default=3600.0)
    return WatchConfig(enabled=enabled, interval=interval, prefixes=prefixes, allow=allow)


_SECONDS = "a number of seconds"
_DURATION_KINDS = (str, int, float)
_PUBLIC_KEYS = {"index", "simple-url", "json-url", "upload-url", "username", "password", "owners",
                "organization", "timeout", "cdn-grace", "retries"}
_POLL_KEYS = {"url", "interval", "token-env", "username", "password-env", "name"}


def _public_config(pub: _Table) -> PublicConfig:
    problems = pub.problems
    preset_name = pub.get("index", str, "pypi")
    preset = INDEX_PRESETS.get(preset_name)
    if preset is None:
        problems.add(f"[public] index must be one of {', '.join(map(repr, INDEX_PRESETS))} "
                     f"(or leave it out and give the URLs), got {_shown_value(preset_name)}"
                     + (" (a URL goes in simple-url, json-url and upload-url)"
                        if "://" in str(preset_name) else ""))
        preset = INDEX_PRESETS["pypi"]
    token = _env_secret(ENV_PUBLIC_TOKEN)
    if "password" in pub.data:
        log.warning("[public] password is set in the config file; prefer the %s environment "
                    "variable so the secret stays out of files", ENV_PUBLIC_TOKEN)
        if token is None:
            password = pub.get("password", str)
            token = Secret(password) if password else None

    def url(key: str, default: str) -> str:
        return problems.checked(_url, pub.get(key, str, default), f"[public] {key}",
                                default=default)

    json_url = pub.get("json-url", str, preset.json_url)
    retries = pub.get("retries", int, 3, what="a whole number of retries")
    if retries < 0:
        problems.add(f"[public] retries must be 0 or more, got {retries}")
        retries = 3
    return PublicConfig(
        simple_url=url("simple-url", preset.simple_url),
        json_url=problems.checked(_url, json_url, "[public] json-url") if json_url else None,
        upload_url=url("upload-url", preset.upload_url),
        username=pub.get("username", str, "__token__"),
        token=token,
        owners=tuple(o.lower() for o in pub.strings("owners")),
        organization=(pub.get("organization", str) or None),
        timeout=float(pub.get("timeout", (int, float), 10.0, what=_SECONDS)),
        cdn_grace=problems.checked(parse_duration, pub.get("cdn-grace", _DURATION_KINDS, "1h"),
                                   "[public] cdn-grace", default=3600.0),
        retries=retries,
    )


def _poll_config(p: _Table, where: str) -> PollConfig | None:
    """One ``[[poll]]`` entry (``where`` names it), or None when its url is unusable; every
    problem of the entry is noted, not only the first."""
    problems = p.problems
    url = p.get("url", str)
    if not url:
        problems.add(f"{where} needs a url")
    elif not web_url(url):
        problems.add(f"{where} url must be an http(s) URL, got {public_url(url)!r}")
        url = None
    elif urlsplit(url).username or urlsplit(url).password:
        problems.add(f"{where}: put credentials in environment variables "
                     "(token-env, username + password-env), not in the url")
        url = None
    interval = problems.checked(parse_duration, p.get("interval", _DURATION_KINDS, "10m"),
                                f"{where} interval", default=600.0)
    token_env, password_env = p.get("token-env", str), p.get("password-env", str)
    username, name = p.get("username", str), p.get("name", str)
    if not url:
        return None
    return PollConfig(url=_url(url, f"{where} url"), interval=interval,
                      token=_env_secret(token_env), username=username,
                      password=_env_secret(password_env), name=name)


def _check_version(version: str) -> str:
    from packaging.version import InvalidVersion, Version

    try:
        Version(version)
    except InvalidVersion:
        raise ConfigError(f"[placeholder] version {version!r} is not a valid version") from None
    return version
