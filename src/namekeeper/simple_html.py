"""A PEP 503 HTML page of a simple index (the listing, or a project's files): its anchors.

The one HTML reader for both pages: in the listing an anchor's text *is* the project name;
on a project page it is the file name (else the href's last segment says it).  An anchor
left open ends where the next one begins, or at the end of the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass(frozen=True)
class Anchor:
    href: str
    text: str  # stripped, character references decoded
    yanked: bool = False  # PEP 592's data-yanked: pip installs such a file only when pinned


class _AnchorReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[Anchor] = []
        self._href: str | None = None
        self._text: list[str] = []
        self._yanked = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._finish()
            found = dict(attrs)
            self._href = found.get("href") or ""
            self._yanked = "data-yanked" in found
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._finish()

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        self._finish()

    def _finish(self) -> None:
        if self._href is not None:
            self.anchors.append(Anchor(self._href, "".join(self._text).strip(), self._yanked))
            self._href = None


def anchors(page: str) -> list[Anchor]:
    """Every ``<a>`` of ``page``, in order."""
    reader = _AnchorReader()
    reader.feed(page)
    reader.close()
    return reader.anchors
