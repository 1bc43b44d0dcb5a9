"""A look-alike found by `namekeeper watch`, as one alert (tag ``lookalike``).

Same formats and escaping as every other alert (`render`): the public name, owners and
organisation come from outside and stay text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .interface import TAG_LOOKALIKE, Message
from .render import _as_html, _as_markdown, _as_text, _Facts, _safe_url, _when

if TYPE_CHECKING:
    from ..store.interface import StoredLookalike

_ADVICE = (
    "Check who published it and what it contains. If it imitates your package, report it to "
    "the public index as malicious or as name squatting (PEP 541), make sure installers "
    "resolve your names from your private index only, and look for machines that installed "
    "it. If it is benign, add it to [watch] allow or run `namekeeper watch --allow NAME`."
)


def lookalike_fingerprint(item: StoredLookalike) -> str:
    """What makes two look-alike alerts the same: the names, the kind, the owners, and when it
    was found (a project taken down and registered again is found again: a new alert)."""
    state = [item.public, item.ours, item.kind, sorted(o.lower() for o in item.owners or ()),
             item.found_at.timestamp()]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()


def render_lookalike(item: StoredLookalike, project_url: str | None = None,
                     secrets: Iterable[str] = ()) -> Message:
    facts = _Facts(tuple(secrets))
    public, ours = facts.clean(item.public), facts.clean(item.ours)
    if item.kind == "prefix":
        headline = f"{public} appeared on the public index in our prefix {ours}"
    else:
        headline = f"{public} on the public index looks like our {ours}"
    facts.add("Public project", public)
    facts.add("Looks like", ours)
    facts.add("Likeness", f"{item.kind}, edit distance {item.distance}")
    if item.owners is None:
        facts.add("Public holder", "unknown (the public index did not say)")
    else:
        holders = ", ".join(item.owners) or "no listed owners"
        if item.organization:
            holders += f" (organisation: {item.organization})"
        facts.add("Public holder", holders)
    facts.add("First public release", _when(item.first_release))
    facts.add("Found", _when(item.found_at))
    facts.add("What to do now", _ADVICE)
    url = _safe_url(project_url)
    return Message(title=f"namekeeper: {headline}", text=_as_text(headline, facts.lines, url),
                   markdown=_as_markdown(headline, facts.lines, url),
                   html=_as_html(headline, facts.lines, url),
                   tags=frozenset({TAG_LOOKALIKE}))
