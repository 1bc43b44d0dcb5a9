"""Tables for the command line that read well in an 80-column terminal and in a pipe.

On a terminal: the key columns (name, verdict, severity) are never cut, optional
columns are shown only while they fit, and the long text (reason, message) wraps in
the space left, or moves below the table when none is left.  Colour marks what
needs attention, unless ``NO_COLOR`` is set.  In a pipe: no colour, no box
drawing and no wrapping: one line per row, columns separated by spaces.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from .names import one_line

#: Below this many columns for the long text, it moves below the table instead.
MIN_TEXT_WIDTH = 24
#: An optional column is shown only if the long text keeps at least this many.
ROOMY_TEXT_WIDTH = 40
# Between two columns: one space of padding either side, plus the (blank) divider on a
# terminal's table; a pipe's table has no divider.
_GAP_TERMINAL, _GAP_PIPE = 3, 2

_STYLES = {
    "taken": "bold red", "critical": "bold red", "high": "red", "failed": "bold red",
    "free": "yellow", "rate-limited": "yellow", "ours": "green", "reserved": "green",
    "already-ours": "green", "protected": "cyan", "False": "bold red", "True": "green",
}
_TIME_COLUMNS = {"first_release", "reserved_at", "first_seen_private"}


@dataclass(frozen=True)
class Columns:
    """Which columns a table has: ``key`` never cut, ``optional`` while they fit, one ``text``."""

    key: tuple[str, ...]
    optional: tuple[str, ...] = ()
    text: str | None = None


def cell(column: str, value: Any) -> str:
    """A value as one line for a terminal: outside text (an index URL from a lock file, an
    organisation from the public index) never brings its escape sequences or newlines."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return one_line(", ".join(str(v) for v in value))
    if isinstance(value, str) and column in _TIME_COLUMNS:
        return value[:16].replace("T", " ")  # minutes are enough on screen; JSON has all
    return one_line(str(value))


def _header(column: str) -> str:
    return column.replace("_", " ")


def _natural(rows: Sequence[dict[str, Any]], column: str) -> int:
    return max([len(_header(column))] + [len(cell(column, r.get(column))) for r in rows])


def fit(rows: Sequence[dict[str, Any]], columns: Columns, width: int) -> tuple[list[str], bool]:
    """The columns shown at ``width``, and whether the text column stays in the table."""
    if columns.text and not any(cell(columns.text, r.get(columns.text)) for r in rows):
        columns = Columns(columns.key, columns.optional)  # nothing to say: room for the rest
    shown = list(columns.key)
    used = sum(_natural(rows, c) for c in shown) + _GAP_TERMINAL * (len(shown) - 1)
    text_room = MIN_TEXT_WIDTH + _GAP_TERMINAL if columns.text else 0
    roomy = ROOMY_TEXT_WIDTH + _GAP_TERMINAL if columns.text else 0
    for column in columns.optional:
        if not any(cell(column, r.get(column)) for r in rows):
            continue  # nothing to say in it
        need = _natural(rows, column) + _GAP_TERMINAL
        if used + need + roomy <= width:
            shown.append(column)
            used += need
    inline = columns.text is not None and used + text_room <= width
    if inline and columns.text:
        shown.append(columns.text)
    return shown, inline


def render(rows: Sequence[dict[str, Any]], columns: Columns, *, width: int, terminal: bool,
           color: bool) -> str:
    """The table as text: ``terminal`` fits ``width``; otherwise one line per row."""
    out = io.StringIO()
    _print(rows, columns, out, width=width, terminal=terminal, color=color)
    return out.getvalue()


def print_table(rows: Sequence[dict[str, Any]], columns: Columns, file: IO[str] | None = None
                ) -> None:
    """Print to stdout the way the terminal (or pipe) it goes to wants it."""
    from rich.console import Console  # here: the JSON, CSV and Markdown outputs never need rich

    file = file or sys.stdout
    terminal = file.isatty()
    width = Console(file=file).width if terminal else 80
    color = terminal and not os.environ.get("NO_COLOR")
    _print(rows, columns, file, width=width, terminal=terminal, color=color)


def _print(rows: Sequence[dict[str, Any]], columns: Columns, file: IO[str], *, width: int,
           terminal: bool, color: bool) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if terminal:
        shown, inline = fit(rows, columns, width)
    else:  # a pipe: every column, nothing wrapped
        shown = [*columns.key, *columns.optional] + ([columns.text] if columns.text else [])
        inline = True
        width = sum(_natural(rows, c) for c in shown) + _GAP_PIPE * len(shown)
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, highlight=False,
                      soft_wrap=False, emoji=False, markup=False)
    table = Table(box=box.SIMPLE_HEAD if terminal else None, show_edge=False, pad_edge=False,
                  header_style="bold" if color else "", expand=False)
    for column in shown:
        wraps = column == columns.text and terminal
        table.add_column(_header(column), no_wrap=not wraps, overflow="fold",
                         min_width=None if wraps else _natural(rows, column))
    for row in rows:
        table.add_row(*[Text(cell(c, row.get(c)), style=_STYLES.get(cell(c, row.get(c)), ""))
                        for c in shown])
    console.print(table)
    if not inline and columns.text:
        for row in rows:
            text = cell(columns.text, row.get(columns.text))
            if text:
                console.print(Text(f"{cell(columns.key[0], row.get(columns.key[0]))}: {text}"))
    # rich pads every cell to its column's width: no trailing blanks in what we print.
    file.write("".join(line.rstrip(" ") + "\n" for line in out.getvalue().splitlines()))
