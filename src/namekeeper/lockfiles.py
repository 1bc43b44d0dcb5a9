"""Lock files that record which index each package came from: PEP 751 ``pylock.toml``, ``uv.lock``.

A package resolved from an index other than the public one is a private name,
whether or not anybody listed it: `audit --lock` classifies exactly those.
Packages from the public index, and packages that came from no index at all
(a VCS checkout, a path, a URL), are left out.

- PEP 751: ``lock-version = "1.0"``; ``[[packages]]`` with ``name``,
  ``version`` and ``index`` (the base URL of the simple index it was found on).
  ``index`` is optional, and pip's own locks leave it out: a package with files
  (``sdist``, ``wheels``: a URL and a sha256 each) but no index is public exactly
  when the public index serves one of those files (`LockedPackage.digests`; the
  audit asks).
- ``uv.lock``: ``version = 1``; ``[[package]]`` with ``name``, ``version`` and
  ``source = { registry = "<url>" }`` (a directory for a local index: a ``file:`` URL here;
  or ``git``, ``path``, ``editable``, ``url``, ``virtual``).

Unknown lock versions and malformed files are refused with one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import NamekeeperError
from .http import public_url, web_url
from .names import InvalidName, canonical, shown
from .toml_file import read_toml

#: Major versions of each format we understand (PEP 751: refuse an unknown major version).
PYLOCK_MAJOR = "1"
UV_LOCK_VERSIONS = (1,)


class LockFileError(NamekeeperError):
    """A lock file we cannot read; the one-line message names the file."""


@dataclass(frozen=True)
class LockedPackage:
    """One package of a lock file that came from an index."""

    name: str  # canonical
    display_name: str
    version: str | None
    index: str  # the index URL as the lock file states it, without credentials
    lock_file: str
    #: Set when the lock names no index: the sha256 of its files, which tell whether the
    #: public index is where they came from (``index`` is then their host).
    digests: frozenset[str] = frozenset()


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def index_key(url: str) -> str:
    """How two spellings of one index URL compare: no credentials, case-folded scheme and
    host, no default port, no final /."""
    parts = urlsplit(public_url(url.strip()))
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc[:-len(default)]
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def read_lock(path: Path) -> list[LockedPackage]:
    """Every package of ``path`` that came from an index; `LockFileError` for a bad file."""
    where = str(path)
    data = read_toml(path, "lock file", LockFileError)
    if "lock-version" in data:
        return _pylock(data, where)
    if "version" in data and isinstance(data.get("package", []), list):
        return _uv_lock(data, where)
    raise LockFileError(f"{where} is neither a PEP 751 pylock.toml (no 'lock-version') nor a "
                        "uv.lock (no 'version')")


def _pylock(data: dict[str, Any], where: str) -> list[LockedPackage]:
    version = data.get("lock-version")
    if not isinstance(version, str) or version.split(".", 1)[0] != PYLOCK_MAJOR:
        raise LockFileError(f"{where}: lock-version {shown(str(version))} is not supported "
                            f"(namekeeper reads {PYLOCK_MAJOR}.x)")
    return _packages(data.get("packages", []), "packages", where,
                     lambda entry: entry.get("index"), _pylock_files)


def _pylock_files(entry: dict[str, Any], where: str) -> tuple[str, frozenset[str]] | None:
    """(the files' host, their sha256s) of a package that records files but no index."""
    wheels = entry.get("wheels")
    files = [entry.get("sdist"), *(wheels if isinstance(wheels, list) else [])]
    host, digests = None, set()
    for f in files:
        if not isinstance(f, dict):
            continue
        url, hashes = f.get("url"), f.get("hashes")
        digest = hashes.get("sha256") if isinstance(hashes, dict) else None
        if isinstance(digest, str) and web_url(url, ("http", "https", "file")):
            parts = urlsplit(str(url))
            host = host or public_url(f"{parts.scheme}://{parts.netloc}/")
            digests.add(digest.lower())
    return (host, frozenset(digests)) if host else None


def _uv_lock(data: dict[str, Any], where: str) -> list[LockedPackage]:
    version = data.get("version")
    if isinstance(version, bool) or version not in UV_LOCK_VERSIONS:
        raise LockFileError(f"{where}: uv.lock version {shown(str(version))} is not supported "
                            f"(namekeeper reads {', '.join(map(str, UV_LOCK_VERSIONS))})")

    def registry(entry: dict[str, Any]) -> Any:
        source = entry.get("source")
        if source is not None and not isinstance(source, dict):
            raise LockFileError(f"{where}: package {shown(str(entry.get('name')))} has a "
                                "malformed 'source'")
        found = source.get("registry") if source else None
        if isinstance(found, str) and "://" not in found:
            # A directory of distributions (uv's flat or local index), relative to the lock.
            return (Path(where).parent / found).resolve().as_uri()
        return found

    return _packages(data.get("package", []), "package", where, registry, lambda e, w: None)


def _packages(entries: Any, table: str, where: str, index_of: Any,
              files_of: Any) -> list[LockedPackage]:
    if not isinstance(entries, list):
        raise LockFileError(f"{where}: '{table}' must be an array of tables")
    found: list[LockedPackage] = []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise LockFileError(f"{where}: {table} entry {i} is not a table")
        raw_name = entry.get("name")
        if not isinstance(raw_name, str):
            raise LockFileError(f"{where}: {table} entry {i} has no name")
        try:
            name = canonical(raw_name)
        except InvalidName as exc:
            raise LockFileError(f"{where}: {table} entry {i}: {exc}") from None
        index = index_of(entry)
        version = entry.get("version")
        version = version if isinstance(version, str) else None
        if index is None:
            files = files_of(entry, where)
            if files is not None:  # files from an index the lock does not name
                found.append(LockedPackage(name=name, display_name=raw_name, version=version,
                                           index=files[0], lock_file=where, digests=files[1]))
            continue  # VCS, path, URL, the project itself: no index to confuse
        if not web_url(index, ("http", "https", "file")):
            raise LockFileError(f"{where}: package {name} has an index that is not a URL: "
                                f"{shown(public_url(str(index)))}")
        found.append(LockedPackage(name=name, display_name=raw_name, version=version,
                                   index=public_url(index), lock_file=where))
    return found


def private_packages(paths: list[Path], public_simple_url: str) -> list[LockedPackage]:
    """The packages of every lock file that came from an index other than the public one.

    Names in the order first met.  A name some lock has from a private index comes once, with
    the first such index, whatever other locks say of it.  A name known only by its files (a
    lock that names no index) comes once per lock that has it, with its ``digests``: the
    caller asks the public index whether it serves one of those files (then that lock's
    package is public; another lock's may still be private).
    """
    public = index_key(public_simple_url)
    entries: dict[str, list[LockedPackage]] = {}
    for path in paths:
        for package in read_lock(path):
            if package.digests or index_key(package.index) != public:
                entries.setdefault(package.name, []).append(package)
    found: list[LockedPackage] = []
    for packages in entries.values():
        from_an_index = [p for p in packages if not p.digests]
        found += from_an_index[:1] or packages
    return found
