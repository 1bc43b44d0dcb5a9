"""Project names: PyPI's rule, the PEP 503 canonical form, filenames, ultranormalisation.

Every name that enters namekeeper from outside (a command line, a webhook, a
filename on a private index) passes through `validate_name` or
`name_from_filename` first, so the rest of the code can paste a canonical name
into a URL, a path or a template without a second thought.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Iterator

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .errors import InvalidName

# PyPI's own rule (warehouse: utils/project.py), ASCII only, case-insensitive; always applied
# with fullmatch: "$" would also match before a trailing newline ("foo\n").
_PYPI_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE | re.ASCII)
# Longer names than this are refused by the metadata validators anyway; a bound keeps logs sane.
MAX_NAME_LENGTH = 128

#: PyPI's "too similar" key (`ultranormalize`): these are dropped, then these letters replaced.
ULTRA_DROPPED = "._-"
ULTRA_REPLACED = {"l": "1", "i": "1", "o": "0"}
_ULTRA_DELETE = str.maketrans("", "", ULTRA_DROPPED)
_ULTRA_MAP = str.maketrans(ULTRA_REPLACED)


def shown(value: str, limit: int = 60) -> str:
    """A hostile value, safe to print in one line of an error message or a log."""
    text = repr(value[:limit])
    return text + ("…" if len(value) > limit else "")


def one_line(text: str, limit: int | None = None) -> str:
    """Outside text (configured, a server's answer, an exception) safe for one line of a
    message, a header or a terminal: whitespace folded, unprintable characters (escape
    sequences above all) dropped, cut to ``limit`` characters with "…"."""
    folded = " ".join(str(text).split())
    clean = "".join(ch for ch in folded if ch.isprintable())
    return clean if limit is None or len(clean) <= limit else clean[: limit - 1] + "…"


def validate_name(name: str) -> str:
    """Return ``name`` unchanged if PyPI would accept it as a project name, else raise."""
    if not isinstance(name, str) or not name:
        raise InvalidName("a project name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"project name {shown(name)} is longer than {MAX_NAME_LENGTH} characters")
    if not _PYPI_NAME.fullmatch(name):
        raise InvalidName(
            f"{shown(name)} is not a valid project name: use ASCII letters, digits, '.', '_' "
            "and '-', starting and ending with a letter or digit"
        )
    return name


def canonical(name: str) -> str:
    """The PEP 503 canonical form of a validated name (``Acme_Utils`` → ``acme-utils``)."""
    return canonicalize_name(validate_name(name))


def same_name(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one name in the PEP 503 canonical form, valid names or not
    (a link's text and the last segment of its href)."""
    return a == b or canonicalize_name(a) == canonicalize_name(b)


def canonical_pattern(pattern: str) -> str:
    """A configured prefix or glob (``Acme_Fork_*``) in the form canonical names take
    (``acme-fork-*``), so that it matches every spelling of the names it means."""
    return re.sub(r"[-_.]+", "-", pattern.lower())


def glob_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether a canonical name matches any of ``patterns`` (configured globs, any spelling).

    One compiled expression for them all: asked once per name, of thousands in an audit.
    """
    globs = sorted({canonical_pattern(p) for p in patterns if p})
    if not globs:
        return lambda name: False
    matches = re.compile("|".join(fnmatch.translate(g) for g in globs)).fullmatch
    return lambda name: matches(name) is not None


def ultranormalize(name: str) -> str:
    """PyPI's "too similar" key: one registered name blocks every name with the same key."""
    return name.lower().translate(_ULTRA_DELETE).translate(_ULTRA_MAP)


def is_stdlib_name(name: str) -> bool:
    """True when the public index refuses ``name`` as a standard-library module name.

    Warehouse's own check: the canonical name against `stdlib_names`.
    """
    return canonicalize_name(name) in stdlib_names()


def _with_prefixes(module: str) -> Iterator[str]:
    """``xml.etree.ElementTree`` → ``xml``, ``xml.etree``, ``xml.etree.ElementTree``."""
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


@functools.cache
def stdlib_names() -> frozenset[str]:
    """The names the public index refuses as standard-library modules (about 2,400).

    Built the way warehouse builds ``STDLIB_PROHIBITED`` (packaging/services.py) from the same
    data, the `stdlib-list` package (warehouse pins 0.12.0; we require 0.12.x): every module
    and submodule of every Python version it lists, with every dotted prefix, stripped of
    leading/trailing ``-_.`` and canonicalised.
    """
    import stdlib_list

    # The versions' lists overlap almost entirely: 17,000 entries, 2,400 distinct modules.
    modules = {module for version in stdlib_list.short_versions
               for module in stdlib_list.stdlib_list(version)}
    return frozenset(
        canonicalize_name(prefix.strip("-_."))
        for module in modules
        for prefix in _with_prefixes(module)
    )


_EGG = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.]*?)-(?P<version>[^-]+)(-py\d.*)?\.egg")


def name_from_filename(filename: str) -> tuple[str, str, str]:
    """(display name, canonical name, version) of a distribution filename.

    Accepts wheels, sdists (``.tar.gz``, ``.zip``, and the legacy ``.tar.bz2``/``.tgz``)
    and eggs.  Anything with a path separator or that is not a distribution is
    refused: the name must come from the file's own name, never from a folder.
    """
    if not isinstance(filename, str) or not filename:
        raise InvalidName("a distribution filename must be a non-empty string")
    if "/" in filename or "\\" in filename or "\x00" in filename or filename in {".", ".."}:
        raise InvalidName(f"{shown(filename)} is not a bare filename")
    if len(filename) > 512:
        raise InvalidName("distribution filename is too long")
    try:
        if filename.endswith(".whl"):
            _name, version, _build, _tags = parse_wheel_filename(filename)
            display = filename.split("-", 1)[0]
        elif filename.endswith((".tar.gz", ".zip")):
            _name, version = parse_sdist_filename(filename)
            display = filename.rsplit("-", 1)[0]
        elif filename.endswith((".tar.bz2", ".tgz", ".tar")):
            stem = re.sub(r"\.(tar\.bz2|tgz|tar)$", "", filename)
            display, _, raw_version = stem.rpartition("-")
            if not display or not raw_version:
                raise InvalidName(f"{shown(filename)} has no version")
            version = raw_version  # type: ignore[assignment]
        elif filename.endswith(".egg"):
            m = _EGG.fullmatch(filename)
            if not m:
                raise InvalidName(f"{shown(filename)} is not a valid egg filename")
            display, version = m["name"], m["version"]  # type: ignore[assignment]
        else:
            raise InvalidName(f"{shown(filename)} is not a Python distribution")
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise InvalidName(f"{shown(filename)} is not a valid distribution filename") from exc
    validate_name(display)
    return display, canonical(display), str(version)


def sdist_basename(name: str, version: str) -> str:
    """PEP 625 sdist filename stem: ``acme-utils`` 1.0 → ``acme_utils-1.0``."""
    return f"{canonical(name).replace('-', '_')}-{version}"


# -- versions: the one comparison, as pip makes it ----------------------------------------------

def parsed_version(raw: str | None) -> Version | None:
    """``raw`` as a PEP 440 version; None when empty or not one (it then never wins)."""
    if not raw:
        return None
    try:
        return Version(raw)
    except InvalidVersion:
        return None


def highest_version(versions: Iterable[str]) -> str | None:
    """The highest valid version of ``versions``, as written; unparsable ones are skipped."""
    best: tuple[Version, str] | None = None
    for raw in versions:
        parsed = parsed_version(raw)
        if parsed is not None and (best is None or parsed > best[0]):
            best = (parsed, raw)
    return best[1] if best else None


def pip_prefers_public(public_versions: Iterable[str], private: str | None) -> str | None:
    """The public version pip would install instead of our private ``private``, or None.

    Offered both indexes, pip takes the highest version but skips pre-releases
    whenever a final release is on offer.  The store keeps only our highest private
    version: a private pre-release is taken to be all we publish, so any public final
    release beats it (the case a final placeholder ``0.0.0`` is for).
    """
    ours = parsed_version(private)
    theirs = [v for v in map(parsed_version, public_versions) if v is not None]
    if ours is None or not theirs:
        return None
    finals = [v for v in theirs if not v.is_prerelease]
    if finals:
        best = max(finals)
        return str(best) if ours.is_prerelease or best > ours else None
    if not ours.is_prerelease:
        return None  # our final release is on offer: their pre-releases are skipped
    best = max(theirs)
    return str(best) if best > ours else None
