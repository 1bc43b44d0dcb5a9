"""Turn an `Outcome` into a `Message`: what happened, to which name, what to do.

Rendering is separate from delivery so every notifier sends the same content,
and it is pure: no I/O, no config.  Everything that came from outside (names,
owners, organisations, index answers) is escaped for the format it lands in,
so an owner called ``<!channel>`` or ``[click](https://evil)`` stays text.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from ..config import redact
from ..model import Action, Outcome, Severity, Verdict
from ..names import one_line
from ..sources.interface import CONDITION_PREFIX as SOURCE_CONDITION_PREFIX
from .interface import (
    TAG_CRITICAL,
    TAG_FAILED,
    TAG_PROTECTED,
    TAG_RATE_LIMITED,
    TAG_RESERVED,
    TAG_TAKEN,
    Message,
)

__all__ = ["Message", "fingerprint", "redact_text", "render", "render_condition", "tags_for"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# CommonMark punctuation that can start emphasis, code, a link or an HTML tag
# or mention (Slack ``<!channel>``, Teams ``<at>``), escaped with a backslash.
# Parentheses and ``!`` only matter next to an (escaped) bracket; block markers
# (``#``, ``-``, ``1.``) only at the start of a line: see `_BLOCK_START`.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~])")
_BLOCK_START = re.compile(r"^(\d*)([#+=>-]|(?<=\d)[.)])")
_MAX_VERSIONS = 10
#: Secrets shorter than this are not searched for: replacing a 1-3 character
#: string everywhere would garble every message while protecting nothing.
_MIN_SECRET = 4

_ADVICE = {
    TAG_TAKEN: (
        "Check who holds the public project. If it is not yours, make sure every installer "
        "resolves this name from your private index only (no --extra-index-url; pin hashes), "
        "and look for machines that may have installed the public package."
    ),
    TAG_CRITICAL: (
        "Treat this as a possible dependency-confusion attack: the public project appeared after "
        "the name was in private use, or it outranks the private version. Check build machines "
        "and developer environments that installed it, and report the project to the public "
        "index if it impersonates yours."
    ),
    # HIGH: urgent (routed like critical), but the facts of an attack were not established.
    "high": (
        "Find out whether the public project could win over your private one: compare its "
        "versions with your private package's, and treat it as an attack until you know."
    ),
    TAG_RESERVED: "Nothing to do: a harmless placeholder now holds the name on the public index.",
    TAG_PROTECTED: (
        "Nothing to do: the public index refuses this name to everyone, so nobody can take it."
    ),
    TAG_FAILED: (
        "The name is not held yet. Check the error above and the public-index token and "
        "account namekeeper uses; `namekeeper serve` tries the name again at its next "
        "re-check, or run `namekeeper reserve NAME` once the cause is fixed."
    ),
    TAG_RATE_LIMITED: (
        "Nothing to do yet: the public index limits how many new projects an account may "
        "create per hour; namekeeper retries when the budget allows."
    ),
}


def tags_for(outcome: Outcome) -> frozenset[str]:
    """The alert kinds an outcome carries; empty when nobody needs to hear about it."""
    tags: set[str] = set()
    if outcome.verdict is Verdict.TAKEN:
        tags.add(TAG_TAKEN)
        if outcome.severity.rank >= Severity.HIGH.rank:
            tags.add(TAG_CRITICAL)
    if outcome.action is Action.RESERVED:
        tags.add(TAG_RESERVED)
    if outcome.verdict is Verdict.PROTECTED:
        tags.add(TAG_PROTECTED)
    if outcome.action is Action.FAILED:
        tags.add(TAG_FAILED)
    if outcome.action is Action.RATE_LIMITED:
        tags.add(TAG_RATE_LIMITED)
    return frozenset(tags)


def fingerprint(outcome: Outcome) -> str:
    """A stable digest of what makes two alerts "the same".

    A new public version or owner, or a changed verdict or action (a FAILED
    name finally RESERVED), changes it; the time or the wording does not.
    """
    public = outcome.public
    state = [
        outcome.name,
        outcome.verdict.value,
        outcome.action.value,
        sorted(o.lower() for o in public.owners) if public else [],
        (public.organization or "").lower() if public else "",
        sorted(public.versions) if public else [],
    ]
    blob = json.dumps(state, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret long enough to be one replaced by ``***``."""
    return redact(text, secrets, min_length=_MIN_SECRET)


def _when(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _safe_url(url: str | None) -> str | None:
    """Only http(s) links, with characters that could end a Markdown or HTML link quoted."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return quote(url, safe=":/?#@!$&'*+,;=%-._~")


def _advice_keys(outcome: Outcome, tags: frozenset[str]) -> list[str]:
    """The advice paragraphs for ``outcome``, chosen by its severity like its title."""
    keys = []
    if TAG_CRITICAL in tags:
        keys.append(TAG_CRITICAL if outcome.severity is Severity.CRITICAL else "high")
    keys += [t for t in (TAG_TAKEN, TAG_RESERVED, TAG_PROTECTED, TAG_FAILED, TAG_RATE_LIMITED)
             if t in tags]
    return keys


def _headline(tags: frozenset[str], name: str) -> str:
    if TAG_TAKEN in tags:
        return f"{name} is held by someone else on the public index"
    if TAG_RESERVED in tags:
        return f"{name} is now reserved on the public index"
    if TAG_PROTECTED in tags:
        return f"{name} is protected by the public index"
    if TAG_FAILED in tags:
        return f"reserving {name} on the public index failed"
    if TAG_RATE_LIMITED in tags:
        return f"reserving {name} waits for the public index's rate limit"
    return f"{name}: nothing to report"


class _Facts:
    """Label/value lines gathered once and written out in three formats."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = secrets
        self.lines: list[tuple[str, str]] = []

    def clean(self, value: str, *, one_line: bool = True) -> str:
        value = redact_text(_CONTROL.sub("", value), self.secrets)
        if one_line:
            value = " ".join(value.split())
        return value.strip()

    def add(self, label: str, value: str | None, *, one_line: bool = True) -> None:
        if value:
            cleaned = self.clean(value, one_line=one_line)
            if cleaned:
                self.lines.append((label, cleaned))


def _public_facts(outcome: Outcome, facts: _Facts) -> None:
    public = outcome.public
    if public is None:
        return
    if not public.exists:
        facts.add("Public holder", "nobody (the name is free on the public index)")
        return
    if public.ownership_known:
        holders = ", ".join(public.owners) or "no listed owners"
        if public.organization:
            holders += f" (organisation: {public.organization})"
    else:
        holders = "unknown (this index does not publish ownership)"
    facts.add("Public holder", holders)
    if public.versions:
        shown = list(public.versions[-_MAX_VERSIONS:])
        more = len(public.versions) - len(shown)
        listing = ", ".join(shown) + (f" and {more} earlier" if more > 0 else "")
        highest = public.highest_version
        if highest:
            listing += f" (highest {highest})"
        facts.add("Public versions", listing)
    facts.add("First public release", _when(public.first_release))


def render(outcome: Outcome, project_url: str | None = None,
           secrets: Iterable[str] = ()) -> Message:
    """Render ``outcome`` as title, plain text, Markdown and HTML, plus its tags.

    ``project_url`` is the public project page (``outcome.public.url`` wins
    when set). Any of ``secrets`` found in a value is replaced by ``***``
    before escaping, so a token quoted in an index's error never goes out.
    """
    tags = tags_for(outcome)
    facts = _Facts(tuple(secrets))
    name = facts.clean(outcome.display_name or outcome.name)
    if outcome.display_name and outcome.display_name != outcome.name:
        name_line = f"{name} ({facts.clean(outcome.name)})"
    else:
        name_line = name
    headline = _headline(tags, name)

    facts.add("What happened", outcome.message, one_line=False)
    facts.add("Name", name_line)
    event = outcome.event
    if event is not None:
        where = f"{event.index} (via {event.source})"
        if event.version:
            where += f", version {event.version}"
        seen = _when(event.seen_at)
        facts.add("Seen privately", f"{where} at {seen}" if seen else where)
    facts.add("First seen privately", _when(outcome.first_seen_private))
    _public_facts(outcome, facts)
    severity = outcome.severity.value.upper()
    facts.add("Severity", f"{severity}: {outcome.reason}" if outcome.reason else severity)
    facts.add("Verdict", f"{outcome.verdict.value}, action {outcome.action.value}")
    facts.add("When", _when(outcome.at))
    advice = " ".join(_ADVICE[t] for t in _advice_keys(outcome, tags))
    facts.add("What to do now", advice)
    url = _safe_url(project_url if outcome.public is None or not outcome.public.url
                    else outcome.public.url)

    # The title says the outcome's own severity: the reason and advice are about the same one.
    marker = f" [{severity}]" if TAG_CRITICAL in tags else ""
    title = f"namekeeper{marker}: {headline}"
    return Message(
        title=title,
        text=_as_text(headline, facts.lines, url),
        markdown=_as_markdown(headline, facts.lines, url),
        html=_as_html(headline, facts.lines, url),
        tags=tags,
    )


def _as_text(headline: str, lines: list[tuple[str, str]], url: str | None) -> str:
    out = [headline, ""]
    out += [f"{label}: {value}" for label, value in lines]
    if url:
        out.append(f"Public project page: {url}")
    return "\n".join(out)


def _md(value: str) -> str:
    lines = [_MARKDOWN_SPECIAL.sub(r"\\\1", line).strip() for line in value.split("\n")]
    # A continuation line must not open a block (heading, list, quote, code).
    lines[1:] = [_BLOCK_START.sub(r"\1\\\2", line) for line in lines[1:]]
    return "  \n".join(lines)  # hard line breaks inside one paragraph


def _as_markdown(headline: str, lines: list[tuple[str, str]], url: str | None) -> str:
    out = [f"**{_md(headline)}**", ""]
    out += [f"- **{label}:** {_md(value)}" for label, value in lines]
    if url:
        out += ["", f"[Public project page](<{url}>)"]
    return "\n".join(out)


def _h(value: str) -> str:
    return html.escape(value, quote=True).replace("\n", "<br>")


def _as_html(headline: str, lines: list[tuple[str, str]], url: str | None) -> str:
    out = [f"<p><strong>{_h(headline)}</strong></p>", "<ul>"]
    out += [f"<li><strong>{_h(label)}:</strong> {_h(value)}</li>" for label, value in lines]
    out.append("</ul>")
    if url:
        out.append(f'<p><a href="{_h(url)}">Public project page</a>: {_h(url)}</p>')
    return "\n".join(out)


def render_condition(key: str, text: str, tags: frozenset[str],
                     secrets: Iterable[str] = ()) -> Message:
    """A service-wide condition (budget paused, public index unreachable...) as one alert."""
    clean = " ".join(redact_text(text, secrets).split())
    # The key is an internal slug ("source:poll:<url>"); the title is the first thing read.
    headline = one_line(f"namekeeper needs attention: {clean}", 160)
    if key.startswith(SOURCE_CONDITION_PREFIX):
        now = ("Names published there are not seen, so not protected, until it works again; "
               "/healthz reports it until then.")
    else:
        now = "Names are kept in the queue and handled when this is over; /healthz reports it until then."
    lines = [("Condition", clean), ("What happens now", now)]
    return Message(title=headline, text=_as_text(headline, lines, None),
                   markdown=_as_markdown(headline, lines, None),
                   html=_as_html(headline, lines, None), tags=tags)
