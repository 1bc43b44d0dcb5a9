"""Which of our names does a public name imitate?  An index built once, asked per public name.

Our names (private and reserved) go in once; each public project name is then
answered in a few microseconds, so the whole public index (~800,000 names)
takes seconds.  Two kinds of question are asked, cheapest first:

* generated variants, looked up in dictionaries: the name without separators
  (``acmebilling``), its visual skeleton (``rn``→``m``, ``l``/``1``/``i``,
  ``0``/``o``, ``vv``→``w``, ``cl``→``d``), its words sorted (``billing-acme``),
  with a well-known affix added or removed (``-python``, ``py-``, ``-sdk``,
  ``2``), and the configured private prefixes;
* one-character edits by symmetric deletion: a public name and one of ours that
  become equal after deleting at most one character from each are within
  edit distance 2.  Those candidates are then measured with rapidfuzz's
  optimal-string-alignment distance (an adjacent swap costs 1), bounded by a
  threshold that grows with the length of our name: a short name has too many
  honest neighbours (``acme`` → ``acne``, ``acre``) to be worth a report.

Precision matters as much as recall: detectors that cry wolf get switched off.
`benchmarks/bench_watch.py` prints how many reports a scan makes per 1,000 of
our names; the defaults below are chosen to keep that low.

Names given to the index and asked about are canonical (PEP 503) names.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from rapidfuzz.distance import OSA

from .names import canonical_pattern, glob_matcher


class Kind(str, enum.Enum):
    """How a public name resembles one of ours (values are what reports show)."""

    OMITTED = "omitted"              # acme-biling
    REPEATED = "repeated"            # acme-billling
    INSERTED = "inserted"            # acme-billinxg
    SWAPPED = "swapped"              # acme-bililng
    SUBSTITUTED = "substituted"      # acme-bixling
    KEYBOARD = "keyboard"            # acme-billinf (g and f are neighbours)
    VISUAL = "visual"                # acme-bi11ing, acme-rnail for acme-mail
    SWAPPED_WORDS = "swapped-words"  # billing-acme
    SEPARATOR = "separator"          # acmebilling, acme-bill-ing
    AFFIX = "affix"                  # acme-billing-sdk, py-acme-billing, acme-billing2
    EDIT = "edit"                    # two edits on a long name
    PREFIX = "prefix"                # anything starting with a private prefix


@dataclass(frozen=True)
class Likeness:
    """One public name and the one of our names (or private prefix) it imitates."""

    public: str
    ours: str
    kind: Kind
    distance: int  # optimal-string-alignment distance between the two canonical names


@dataclass(frozen=True)
class Thresholds:
    """How long our name must be (without separators) before a kind of likeness is reported.

    Measured against a real public listing (see the benchmark): one-character
    edits of names shorter than 6 characters are mostly honest, unrelated projects.
    """

    min_length: int = 4         # any likeness at all (separator, visual, swapped words)
    typo_length: int = 6        # one-character edits
    edit2_length: int = 15      # distance 2 (two edits)
    affix_length: int = 5       # our name with an affix added or removed
    common_word: int = 3        # a word this many public names use is an everyday word

    def max_distance(self, length: int) -> int:
        if length >= self.edit2_length:
            return 2
        return 1 if length >= self.typo_length else 0


# Affixes that combo-squats add to a real name (FIELD-NOTES: a large share of real attacks).
AFFIX_WORDS_BEFORE = frozenset({"py", "python", "python3", "pypi", "lib"})
AFFIX_WORDS_AFTER = frozenset({
    "py", "python", "python3", "py3", "sdk", "api", "client", "lib", "cli", "dev", "core",
    "official", "pkg", "package", "tools", "utils", "v2", "new", "latest",
})

_QWERTY_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSETS = (0.0, 0.5, 0.75, 1.25)


def _keyboard_neighbours() -> dict[str, frozenset[str]]:
    # Keys are neighbours when they touch on a staggered QWERTY keyboard.
    places = {key: (row, col + _ROW_OFFSETS[row])
              for row, keys in enumerate(_QWERTY_ROWS) for col, key in enumerate(keys)}
    return {key: frozenset(other for other, (r2, x2) in places.items()
                           if other != key and abs(r2 - r) <= 1 and abs(x2 - x) <= 1.0)
            for key, (r, x) in places.items()}


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()
_VISUAL_SEQUENCES = (("rn", "m"), ("vv", "w"), ("cl", "d"))
_VISUAL_CHARS = str.maketrans({"1": "l", "i": "l", "0": "o"})


def squashed(name: str) -> str:
    """The name without separators: a separator change leaves it alone."""
    return name.replace("-", "")


def skeleton(name: str) -> str:
    """The separator-less name as it looks: characters easy to mistake for each other are merged."""
    text = name.replace("-", "")
    for seq, single in _VISUAL_SEQUENCES:
        text = text.replace(seq, single)
    return text.translate(_VISUAL_CHARS)


def _stems(name: str) -> Iterable[str]:
    """``name`` with one well-known affix taken off, for every affix it carries."""
    words = name.split("-")
    if len(words) > 1:
        if words[0] in AFFIX_WORDS_BEFORE:
            yield "-".join(words[1:])
        if words[-1] in AFFIX_WORDS_AFTER or words[-1].isdigit():
            yield "-".join(words[:-1])
    if name.startswith("python") and len(name) > 6 and name[6] != "-":
        yield name[6:]
    elif name.startswith("py") and len(name) > 2 and name[2] != "-":
        yield name[2:]
    stripped = name.rstrip("0123456789")
    if stripped != name and stripped and stripped[-1] != "-":
        yield stripped


def _edit_kind(public: str, ours: str) -> Kind | None:
    """The one-character edit that turns ``ours`` into ``public`` (separator-less forms)."""
    lp, lo = len(public), len(ours)
    i = 0
    while i < lp and i < lo and public[i] == ours[i]:
        i += 1
    if lp + 1 == lo and public[i:] == ours[i + 1:]:
        return Kind.OMITTED
    if lp == lo + 1 and public[i + 1:] == ours[i:]:
        extra = public[i]
        if (i > 0 and public[i - 1] == extra) or (i + 1 < lp and public[i + 1] == extra):
            return Kind.REPEATED
        beside = {ours[j] for j in (i - 1, i) if 0 <= j < lo}
        if any(extra in KEYBOARD_NEIGHBOURS.get(c, ()) for c in beside):
            return Kind.KEYBOARD
        return Kind.INSERTED
    if lp == lo and i < lp:
        if public[i + 1:] == ours[i + 1:]:
            if public[i] in KEYBOARD_NEIGHBOURS.get(ours[i], ()):
                return Kind.KEYBOARD
            return Kind.SUBSTITUTED
        if (i + 1 < lp and public[i] == ours[i + 1] and public[i + 1] == ours[i]
                and public[i + 2:] == ours[i + 2:]):
            return Kind.SWAPPED
    return None


_TYPO_KINDS = frozenset({Kind.OMITTED, Kind.REPEATED, Kind.INSERTED, Kind.SWAPPED,
                         Kind.SUBSTITUTED, Kind.KEYBOARD, Kind.EDIT})


def word_counts(public_names: Iterable[str]) -> Counter[str]:
    """How many public names use each word (canonical names split at ``-``); ~0.5 s for 800,000."""
    return Counter("-".join(public_names).split("-"))


def honest(found: Likeness, words: Mapping[str, int], common_at: int) -> bool:
    """True for a likeness that is most likely an unrelated project.

    ``words``: `word_counts` of the public listing; a word used by at least
    ``common_at`` public names is an everyday word.  Measured on a real listing,
    nearly every report against a name of ours made only of everyday words
    (``cart-upload`` for ``chart-upload``, ``cloud-broker`` for ``broker-cloud``,
    ``models-core`` for ``models``) is honest.  For such generic names, only visual
    look-alikes and typos that make a new, rarely used word (``biling-client``) are
    reported; a distinctive name (a word few public names use) is reported on any
    likeness.  Private prefixes are always reported: configuring one says "all
    of these are ours".
    """
    if found.kind in (Kind.VISUAL, Kind.PREFIX) or not words:
        return False
    our_words = found.ours.split("-")
    made_everyday_words = all(words.get(word, 0) >= common_at
                              for word in found.public.split("-") if word not in our_words)
    if found.kind is Kind.EDIT and made_everyday_words:
        return True  # two edits that turn one everyday word into another: cache-x for acme-x
    if any(words.get(word, 0) < common_at for word in our_words):
        return False
    return made_everyday_words if found.kind in _TYPO_KINDS else True


class _WordsLess(Mapping[str, int]):
    """Word counts less some others, without copying the (large) first."""

    def __init__(self, counts: Mapping[str, int], less: Mapping[str, int]) -> None:
        self._counts, self._less = counts, less

    def __getitem__(self, word: str) -> int:
        return self._counts.get(word, 0) - self._less.get(word, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)


class LookalikeIndex:
    """Built from our canonical names; `match` answers for one public canonical name."""

    def __init__(self, ours: Iterable[str], *, prefixes: Iterable[str] = (),
                 allow: Iterable[str] = (), thresholds: Thresholds | None = None) -> None:
        self.thresholds = t = thresholds or Thresholds()
        self.ours = frozenset(ours)
        self.prefixes = tuple(sorted({canonical_pattern(p) for p in prefixes if p}))
        self.allow_globs = tuple(sorted({canonical_pattern(g) for g in allow if g}))
        self._allowed = glob_matcher(self.allow_globs)
        # One dictionary per kind of generated variant; each maps a key to our (sorted) names.
        self._by_squashed: dict[str, list[str]] = {}
        self._by_skeleton: dict[str, list[str]] = {}
        self._by_words: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}      # our names with an affix taken off
        # Two strings within distance 2 whose edits all fall in one half share the other half:
        # our names by their first half (s[:h]) and by what follows the middle ("|" + s[h+1:]).
        # One to a few lookups per public name instead of one per character deleted.
        self._by_half: dict[str, list[tuple[int, int, str, str]]] = {}  # (n, bound, name, flat)
        self._flat: dict[str, str] = {}
        halves: dict[int, set[int]] = {}
        tails: dict[int, set[int]] = {}
        for name in sorted(self.ours):
            flat = squashed(name)
            n = len(flat)
            if n < t.min_length:
                continue
            self._flat[name] = flat
            _add(self._by_squashed, flat, name)
            _add(self._by_skeleton, skeleton(name), name)
            if "-" in name:
                _add(self._by_words, _words_key(name), name)
            for stem in _stems(name):
                if len(squashed(stem)) >= t.affix_length:
                    _add(self._by_stem, squashed(stem), name)
            bound = t.max_distance(n)
            if bound:
                h = n // 2
                entry = (n, bound, name, flat)
                self._by_half.setdefault(flat[:h], []).append(entry)
                self._by_half.setdefault("|" + flat[h + 1:], []).append(entry)
                for m in range(n - bound, n + bound + 1):
                    halves.setdefault(m, set()).add(h)
                    tails.setdefault(m, set()).add(n - h - 1)
        self._halves_for = {m: tuple(sorted(v)) for m, v in halves.items()}
        self._tails_for = {m: tuple(sorted(v)) for m, v in tails.items()}

    def words_of(self, listing: Iterable[str], lookalikes: Iterable[str] = (),
                 counts: Mapping[str, int] | None = None) -> Mapping[str, int]:
        """`word_counts` of a public listing, leaving out our names and the look-alikes in it.

        What makes a word everyday is its use by projects that do not look like
        ours: our reserved placeholders, or a squatter's ten variants of our name,
        must not make our company's word look common and silence the reports.
        ``counts``: the listing's `word_counts`, when the caller keeps them.
        """
        names = listing if isinstance(listing, (list, tuple, set, frozenset)) else list(listing)
        left_out = self.ours.intersection(names) | set(lookalikes)
        return _WordsLess(counts if counts is not None else word_counts(names),
                          word_counts(left_out))

    def __len__(self) -> int:
        return len(self.ours)

    def allowed(self, public: str) -> bool:
        return self._allowed(public)

    def match(self, public: str) -> Likeness | None:
        """The likeness of ``public`` to one of our names, the closest first; None if none."""
        if public in self.ours:
            return None
        flat = public.replace("-", "")
        found = (self._variant(public, flat) or self._near(public, flat)
                 or self._prefix(public))
        if found is None or self.allowed(public):
            return None
        return found

    def quiet(self, found: Iterable[Likeness], words: Mapping[str, int]) -> list[Likeness]:
        """``found`` without the honest neighbours (see `honest`); ``words`` from `words_of`."""
        common_at = self.thresholds.common_word
        return [hit for hit in found if not honest(hit, words, common_at)]

    def scan(self, names: Iterable[str], listing: Iterable[str] | None = None) -> list[Likeness]:
        """Every likeness among ``names``, in the order given.

        With the public ``listing`` the names come from, honest neighbours are left
        out (`quiet`); without it, every likeness is reported.
        """
        match = self.match
        found = [hit for hit in map(match, names) if hit is not None]
        if listing is None or not found:
            return found
        return self.quiet(found, self.words_of(listing, (hit.public for hit in found)))

    # -- the questions, cheapest first --------------------------------------------------------

    def _variant(self, public: str, flat: str) -> Likeness | None:
        ours = self._by_squashed.get(flat)
        if ours:
            return self._likeness(public, ours, Kind.SEPARATOR)
        ours = self._by_skeleton.get(skeleton(flat))
        if ours:
            return self._likeness(public, ours, Kind.VISUAL)
        words = public.split("-")
        if len(words) > 1:
            ours = self._by_words.get("-".join(sorted(words)))
            if ours:
                return self._likeness(public, ours, Kind.SWAPPED_WORDS)
        # Our name with an affix added (acme-billing-sdk), or with one of its affixes dropped.
        if (words[0] in AFFIX_WORDS_BEFORE or words[-1] in AFFIX_WORDS_AFTER
                or public[-1].isdigit() or public.startswith("py")):
            found = self._affixed(public)
            if found:
                return found
        ours = self._by_stem.get(flat)
        if ours:
            return self._likeness(public, ours, Kind.AFFIX)
        return None

    def _affixed(self, public: str) -> Likeness | None:
        for stem in _stems(public):
            stem_flat = stem.replace("-", "")
            ours = self._by_squashed.get(stem_flat)
            if ours and len(stem_flat) >= self.thresholds.affix_length:
                return self._likeness(public, ours, Kind.AFFIX)
        return None

    def _near(self, public: str, flat: str) -> Likeness | None:
        m = len(flat)
        get = self._by_half.get
        # Our names within distance 2 keep one half intact (see __init__): look both up.
        found = [hit for hit in (get(flat[:h]) for h in self._halves_for.get(m, ())) if hit]
        found += [hit for hit in (get("|" + flat[m - k:]) for k in self._tails_for.get(m, ()))
                  if hit]
        if not found:
            return None
        best: tuple[int, str, str, int] | None = None  # (distance, name, flat, bound)
        distance_of = OSA.distance
        for hits in found:
            for n, bound, ours, ours_flat in hits:  # a name found twice is measured twice: cheap
                if not -bound <= n - m <= bound:
                    continue
                distance = distance_of(flat, ours_flat, score_cutoff=bound)
                if 0 < distance <= bound and (best is None or (distance, ours) < best[:2]):
                    best = (distance, ours, ours_flat, bound)
        if best is None:
            return None
        distance, ours, ours_flat, bound = best
        kind = (_edit_kind(flat, ours_flat) if distance == 1 else None) or Kind.EDIT
        # A typo that also moves a separator (``boslib`` for ``bot-lib``) is two changes to
        # the eye: hold the name as written to the same bound.
        distance = distance_of(public, ours, score_cutoff=bound)
        if distance > bound:
            return None
        return Likeness(public, ours, kind, distance)

    def _prefix(self, public: str) -> Likeness | None:
        for prefix in self.prefixes:
            if public.startswith(prefix) and public != prefix.rstrip("-"):
                return Likeness(public, prefix, Kind.PREFIX, 0)
        return None

    @staticmethod
    def _likeness(public: str, ours: list[str], kind: Kind) -> Likeness:
        # Several of our names can share a key: name the closest, then the first alphabetically.
        name = min(ours, key=lambda o: (OSA.distance(public, o), o)) if len(ours) > 1 else ours[0]
        return Likeness(public, name, kind, OSA.distance(public, name))


def _add(index: dict[str, list[str]], key: str, name: str) -> None:
    names = index.setdefault(key, [])
    if name not in names:
        names.append(name)


def _words_key(name: str) -> str:
    return "-".join(sorted(name.split("-")))
