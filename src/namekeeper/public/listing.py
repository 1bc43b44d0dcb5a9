"""The public index's full project listing, fetched once, cached on disk, decided locally.

``GET <simple>/`` in PEP 691 JSON names every project of the public index
(about 800,000 on the public index: tens of MB).  With it, whether a name
exists and whether it is "too similar" (PyPI's ultranormalised collision, see
`names.ultranormalize`) are set lookups, so classifying thousands of names costs
one download plus one JSON-API request per name that exists.

The listing is cached under the user's cache directory, one pair of files per
index URL: ``listing-<key>.data`` (the canonical names, their ultranormalised
keys and serials, sorted and block-indexed, written atomically once per download:
see `listing_index`) and ``listing-<key>.json`` (when it was last validated, and
the validators).  A cached listing is memory-mapped, never parsed whole: a warm
audit of 10,000 names reads a few thousand small blocks of it.  `fetch_listing` revalidates with a
conditional request (``If-None-Match`` / ``If-Modified-Since``): a 304 costs a
few hundred bytes and the cached names are used.  `cached_listing` only reads
the cache (for `check`, which must not download tens of MB for one name).

API for other parts of namekeeper (audit, watch): a `PublicListing` answers
``name in listing``, `PublicListing.similar`, `PublicListing.serial`,
``len(listing)`` and `PublicListing.names` (a frozenset of canonical names);
`PublicListing.info` says where it came from and when it was last validated.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import platformdirs
import requests

from ..config import PublicConfig
from ..http import copy_capped, new_session, public_url
from ..names import ultranormalize
from ..sources.poll import MAX_LISTING_BYTES, MAX_LISTING_SECONDS, PollError, listing_names
from .interface import PublicIndexUnavailable
from .listing_index import PackedLines
from .simple import SIMPLE_JSON

log = logging.getLogger(__name__)

#: JSON preferred; an index that only speaks PEP 503 HTML still gives its names (no serials).
ACCEPT_LISTING = f"{SIMPLE_JSON}, text/html;q=0.1"
#: How old a cached listing may be for `check` to use it (too-similar names barely change).
FRESH_FOR = 24 * 3600.0
_FORMAT = 4  # 4: sorted key/name/serial lines in indexed blocks, with a CRC (listing_index.py)
_CHUNK = 1024 * 1024
# The public index's name rule: anything else in a listing is skipped, never trusted.
_VALID_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)


class ListingUnavailable(PublicIndexUnavailable):
    """The full listing could not be fetched or read; the message names the index, no secret."""


@dataclass(frozen=True)
class ListingInfo:
    """Where a listing came from and how fresh it is."""

    url: str  # the listing's URL, without credentials
    count: int  # distinct canonical names
    validated_at: float  # wall-clock time the index last confirmed (200 or 304) this content
    etag: str | None = None
    last_modified: str | None = None
    last_serial: int | None = None  # the index's serial at the time of the listing (PEP 691 meta)
    downloaded: bool = False  # True when this fetch downloaded the body; False after a 304 or cache

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.validated_at)


#: Names whose answer a listing keeps (`PublicListing._held`): more than an audit asks about.
_ASKED_KEPT = 1 << 16


class PublicListing:
    """Every project of the public index: existence and "too similar" answered locally.

    Held as sorted ``"<ultranormalised key>\\t<canonical name>\\t<serial>"`` lines in
    blocks (`listing_index.PackedLines`): every question is a binary search for a key.
    A cached listing is memory-mapped, not read: a question touches one block of it.
    """

    def __init__(self, info: ListingInfo, lines: PackedLines) -> None:
        self.info = info
        self._lines = lines
        self._canonical: list[str] | None = None
        self._names: frozenset[str] | None = None
        # Answers by name: an audit asks two to four times about each of its names (whether
        # to look it up, then `prejudge`'s `similar` and ``in``).
        self._asked: dict[str, list[tuple[str, str]]] = {}

    def _held(self, name: str) -> list[tuple[str, str]]:
        """(canonical name, serial) of every project in ``name``'s ultranormalised class."""
        held = self._asked.get(name)
        if held is None:
            if len(self._asked) >= _ASKED_KEPT:  # `serve` asks for months: bounded
                self._asked.clear()
            held = self._asked[name] = self._lines.held(ultranormalize(name))
        return held

    @classmethod
    def of(cls, names: Iterable[str], info: ListingInfo | None = None) -> PublicListing:
        """A listing of canonical ``names`` (no serials): for tests and benchmarks."""
        ordered = list(dict.fromkeys(names))
        lines = sorted(f"{ultranormalize(n)}\t{n}\t" for n in ordered)
        return cls(info or ListingInfo(url="memory:", count=len(lines), validated_at=time.time()),
                   PackedLines.pack(lines))

    def __contains__(self, name: object) -> bool:
        """True when the canonical ``name`` is a project of the index."""
        if not isinstance(name, str):
            return False
        return any(held == name for held, _ in self._held(name))

    def __len__(self) -> int:
        return self._lines.count

    def __iter__(self) -> Iterator[str]:
        """Every canonical name, in the order of their ultranormalised keys."""
        if self._canonical is None:
            self._canonical = list(self._lines.canonical_names())
        return iter(self._canonical)

    @property
    def names(self) -> frozenset[str]:
        """Every canonical project name (compare two listings with set operations)."""
        if self._names is None:
            self._names = frozenset(self)
        return self._names

    def similar(self, name: str) -> str | None:
        """The existing project that makes canonical ``name`` "too similar" to register, or None.

        None when ``name`` itself exists: then it is a project, to be looked up.
        """
        held = [n for n, _ in self._held(name)]
        if not held or name in held:
            return None
        return held[0]

    def serial(self, name: str) -> int | None:
        """The index's ``_last-serial`` of a project (changes with every release), if listed."""
        for held, serial in self._held(name):
            if held == name:
                return int(serial) if serial else None
        return None


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("namekeeper")) / "public-listing"


def _paths(cache_dir: Path, url: str) -> tuple[Path, Path]:
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir / f"listing-{key}.data", cache_dir / f"listing-{key}.json"


# -- the disk cache --------------------------------------------------------------------------------

def _read_meta(meta_path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == _FORMAT else None


def _write_atomically(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _header(info: ListingInfo) -> dict[str, Any]:
    return {"format": _FORMAT, "url": info.url, "etag": info.etag,
            "last_modified": info.last_modified, "last_serial": info.last_serial,
            "count": info.count}


def _save(cache_dir: Path, info: ListingInfo, lines: PackedLines) -> None:
    data_path, meta_path = _paths(cache_dir, info.url)
    header = _header(info)
    _write_atomically(data_path, lambda out: lines.write(out, header))
    _save_meta(meta_path, header, info.validated_at)


def _save_meta(meta_path: Path, header: dict[str, Any], validated_at: float) -> None:
    meta = {**header, "validated_at": validated_at}
    _write_atomically(meta_path, lambda out: out.write(json.dumps(meta).encode()))


def _load(cache_dir: Path, url: str, meta: dict[str, Any]) -> PublicListing | None:
    """The cached listing whose header matches ``meta``; None when missing or damaged.

    The data file is memory-mapped, not read: loading costs the block index only."""
    data_path, _ = _paths(cache_dir, url)
    opened = PackedLines.open(data_path)
    if opened is None:
        if data_path.exists():  # a download replaces it; until then it is not used
            log.warning("the cached public listing %s is damaged or incomplete; not used",
                        data_path)
        return None
    header, lines = opened
    # The header line is outside the CRC: its fields are the meta file's, compared here.
    if any(header.get(k) != meta.get(k) for k in ("format", "url", "etag", "last_modified",
                                                  "last_serial", "count")):
        return None  # a crash between the two writes: the pair does not belong together
    info = ListingInfo(url=url, count=lines.count, validated_at=float(meta["validated_at"]),
                       etag=header.get("etag"), last_modified=header.get("last_modified"),
                       last_serial=header.get("last_serial"))
    return PublicListing(info, lines)


def cached_listing(public: PublicConfig, *, cache_dir: Path | None = None,
                   max_age: float | None = FRESH_FOR) -> PublicListing | None:
    """The cached listing of ``public``'s index if validated less than ``max_age`` s ago; no I/O
    beyond the cache.  None when there is none (never raises for a damaged cache)."""
    cache_dir = cache_dir or default_cache_dir()
    url = public_url(public.simple_url)
    meta = _read_meta(_paths(cache_dir, url)[1])
    if meta is None or not isinstance(meta.get("validated_at"), (int, float)):
        return None
    if max_age is not None and time.time() - float(meta["validated_at"]) > max_age:
        return None
    return _load(cache_dir, url, meta)


# -- fetching --------------------------------------------------------------------------------------

def fetch_listing(public: PublicConfig, *, cache_dir: Path | None = None,
                  session: requests.Session | None = None) -> PublicListing:
    """The listing of ``public``'s index, revalidated: a conditional GET, downloading only
    when the index's copy changed.  Raises `ListingUnavailable`."""
    cache_dir = cache_dir or default_cache_dir()
    url = public_url(public.simple_url)
    data_path, meta_path = _paths(cache_dir, url)
    meta = _read_meta(meta_path)
    cached = _load(cache_dir, url, meta) if meta is not None else None
    headers = {"Accept": ACCEPT_LISTING}
    if cached is not None and meta is not None:
        if meta.get("etag"):
            headers["If-None-Match"] = str(meta["etag"])
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = str(meta["last_modified"])
    session = session or new_session(retries=public.retries)
    started = time.monotonic()
    try:
        with session.get(public.simple_url, headers=headers, stream=True,
                         timeout=(public.timeout, public.timeout)) as response:
            if response.status_code == 304 and cached is not None and meta is not None:
                now = time.time()
                try:
                    _save_meta(meta_path, {k: v for k, v in meta.items() if k != "validated_at"},
                               now)
                except OSError as exc:  # the cached names are still the index's: answer
                    log.warning("cannot record the public listing's revalidation in %s: %s",
                                cache_dir, exc.strerror or exc)
                return _revalidated(cached, now)
            if response.status_code != 200:
                raise ListingUnavailable(f"the public index's listing: GET {url} answered "
                                         f"{response.status_code}")
            with _download_file(cache_dir) as body:
                copy_capped(response, body.write, where=url, max_bytes=MAX_LISTING_BYTES,
                            max_seconds=MAX_LISTING_SECONDS, started=started,
                            error=ListingUnavailable, chunk_size=_CHUNK)
                body.seek(0)
                raw, last_serial = _parse(body, response.headers.get("Content-Type", ""), url)
            etag = response.headers.get("ETag")
            last_modified = response.headers.get("Last-Modified")
    except requests.RequestException as exc:
        # requests' messages can carry request details; name the failure class only.
        raise ListingUnavailable(f"the public index's listing: GET {url} failed: "
                                 f"{type(exc).__name__}") from None
    lines = PackedLines.pack(_lines(raw))
    if not lines.count:
        # A public index always has projects: an empty page is a proxy's or a portal's
        # answer, and believing it would call every private name FREE.
        raise ListingUnavailable(f"the public index's listing {url} lists no projects")
    info = ListingInfo(url=url, count=lines.count, validated_at=time.time(), etag=etag,
                       last_modified=last_modified, last_serial=last_serial, downloaded=True)
    try:
        _save(cache_dir, info, lines)
    except OSError as exc:  # a read-only cache costs a download next time, never the answer
        log.warning("cannot cache the public listing in %s: %s", cache_dir, exc.strerror or exc)
    return PublicListing(info, lines)


def _revalidated(cached: PublicListing, now: float) -> PublicListing:
    cached.info = replace(cached.info, validated_at=now, downloaded=False)
    return cached


def _download_file(cache_dir: Path) -> IO[bytes]:
    """A scratch file for the listing's body: in the cache directory (the disk the cache
    goes to), else the system's temporary directory, else memory.  An unusable cache
    directory costs the cache (`_save` says so), never the answer."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryFile(dir=cache_dir)
    except OSError:
        pass
    try:
        return tempfile.TemporaryFile()
    except OSError:
        return io.BytesIO()  # the body is read whole by `_parse` anyway


# A project of PEP 691's root page as warehouse writes it; the fast path reads these with
# one regex pass (C speed, no object per project) and falls back to a full JSON parse
# whenever the page is laid out any other way.
_PROJECT = re.compile(rb'\{\s*"name"\s*:\s*"([^"\\]*)"\s*,\s*"_last-serial"\s*:\s*(\d+)\s*\}')
_PROJECTS_CLOSED = re.compile(rb'[^{}]*\}\s*\]')
_META_SERIAL = re.compile(rb'"meta"\s*:\s*\{[^{}]*"_last-serial"\s*:\s*(\d+)')
_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_CANONICAL_TABLE = bytes.maketrans(_UPPER + b"_.", _UPPER.lower() + b"--")
_ULTRA_TABLE = bytes.maketrans(b"lio", b"110")
_NAME_BYTES = b"\n-_." + _UPPER + _UPPER.lower() + b"0123456789"


def _project_pair(obj: dict[str, Any]) -> Any:
    # Called for every JSON object as it is decoded: a project becomes a small tuple at
    # once, so 800,000 of them never exist as dicts together.
    name = obj.get("name")
    if isinstance(name, str):
        serial = obj.get("_last-serial")
        return (name, serial if isinstance(serial, int) and not isinstance(serial, bool) else None)
    return obj


def _parse(body: IO[bytes], content_type: str,
           url: str) -> tuple[list[list[bytes]], int | None]:
    """([raw names, their serials as digits or b""], the index's last serial) of a listing."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    data = body.read()
    if not media_type.endswith("json"):
        # PEP 503 HTML: the poller's parser, one implementation of that format, and its
        # refusal of a page whose links lead elsewhere (a portal's): believed, every
        # private name would be FREE.
        try:
            names = listing_names(data, content_type, f"the public index's listing {url}")
        except PollError as exc:
            raise ListingUnavailable(str(exc)) from None
        return [[n.encode("utf-8", "replace") for n in names], [b""] * len(names)], None
    pairs = _PROJECT.findall(data)
    last = data.rfind(b'"name"')
    if (pairs and len(pairs) == data.count(b'"name"') and data[:64].lstrip()[:1] == b"{"
            and data[-64:].rstrip()[-1:] == b"}" and _PROJECTS_CLOSED.match(data, last)):
        meta = _META_SERIAL.search(data)
        del data  # 40 MB less while the columns are built
        names, serials = [n for n, _ in pairs], [v for _, v in pairs]
        del pairs
        return [names, serials], int(meta[1]) if meta else None
    return _parse_json(data, url)


def _parse_json(data: bytes, url: str) -> tuple[list[list[bytes]], int | None]:
    try:
        doc = json.loads(data, object_hook=_project_pair)
    except (ValueError, UnicodeDecodeError):
        raise ListingUnavailable(f"the public index's listing {url} is malformed JSON") from None
    projects = doc.get("projects") if isinstance(doc, dict) else None
    if not isinstance(projects, list):
        raise ListingUnavailable(f"the public index's listing {url} has no 'projects' list")
    names: list[bytes] = []
    serials: list[bytes] = []
    for item in projects:
        if isinstance(item, tuple):
            names.append(item[0].encode("utf-8", "replace"))
            serials.append(b"" if item[1] is None else str(item[1]).encode())
    meta = doc.get("meta")
    serial = meta.get("_last-serial") if isinstance(meta, dict) else None
    return [names, serials], serial if isinstance(serial, int) else None


def _lines(raw: list[list[bytes]]) -> list[str]:
    """The sorted ``key\\tcanonical\\tserial`` lines of ``[raw names, serials]``.

    Whole-column operations: 800,000 names are checked, canonicalised (``[-_.]+``
    → ``-``, lowercase: PEP 503) and ultranormalised in a few C-speed passes.  ``raw``
    is emptied, so each column is freed as soon as it has been used (peak memory).
    """
    serials = raw.pop()
    names = raw.pop()
    text = b"\n".join(names)
    if not _all_valid(text, len(names)):  # rare: drop what is no project name
        kept = [(n, s) for n, s in zip(names, serials, strict=True)
                if b"\n" not in n and _VALID_NAME.fullmatch(n.decode("latin-1"))]
        log.info("the public listing has %d entries that are not valid project names; skipped",
                 len(names) - len(kept))
        names, serials = [n for n, _ in kept], [s for _, s in kept]
        text = b"\n".join(names)
    if not names:
        return []
    del names
    serial_text = b"\n".join(serials)
    del serials
    canonical = text.translate(_CANONICAL_TABLE)
    del text
    while b"--" in canonical:  # a run of separators is one hyphen
        canonical = canonical.replace(b"--", b"-")
    ultra = canonical.translate(_ULTRA_TABLE, b"-").decode("ascii").split("\n")
    canon = canonical.decode("ascii").split("\n")
    serial = serial_text.decode("ascii").split("\n")
    del serial_text, canonical
    if len(set(canon)) < len(canon):  # two spellings of one project: the first counts
        first: dict[str, tuple[str, str]] = {}
        for c, u, v in zip(canon, ultra, serial, strict=True):
            first.setdefault(c, (u, v))
        canon, ultra, serial = list(first), [u for u, _ in first.values()], \
            [v for _, v in first.values()]
    lines = [f"{u}\t{c}\t{v}" for u, c, v in zip(ultra, canon, serial, strict=True)]
    lines.sort()
    return lines


def _all_valid(text: bytes, count: int) -> bool:
    """True when each of the ``count`` lines of ``text`` is a valid project name."""
    if count == 0 or text.count(b"\n") != count - 1 or text.translate(None, _NAME_BYTES):
        return False
    edges = (b"\n\n", *(p for sep in (b"-", b"_", b".") for p in (b"\n" + sep, sep + b"\n")))
    return (not any(edge in text for edge in edges)
            and text[:1] not in b"-_." and text[-1:] not in b"-_.")
