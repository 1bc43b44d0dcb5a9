"""How `namekeeper audit` says what it found: table, JSON, CSV or Markdown, and one summary line.

Rows come riskiest first: TAKEN, names the public index could not answer, FREE,
OURS, PROTECTED, EXCLUDED; within a verdict, higher severity first, then by name.

- ``table`` (a terminal): the rows, then the summary line.
- ``json``: ``{"summary": {...}, "unreadable": [...], "queued": [...], "estimate": ...,
  "names": [...]}``, one name per line; each name as in ``check --format json`` plus
  ``index`` and ``error``.
- ``csv``: a header and one line per name; the summary goes to stderr.
- ``markdown``: a GitHub table and the summary line in bold (for a CI job summary).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import IO, Any

from .audit import AuditResult, AuditRow, Progress
from .model import Severity, Verdict
from .names import one_line

FORMATS = ("table", "json", "csv", "markdown")
COLUMNS = ["name", "verdict", "severity", "owners", "index", "reason"]
CSV_COLUMNS = ["name", "display_name", "verdict", "severity", "owners", "organization",
               "highest_version", "index", "reason"]
_ORDER = {"taken": 0, "unknown": 1, "free": 2, "ours": 3, "protected": 4, "excluded": 5}
_RANK = {severity.value: severity.rank for severity in Severity}


def row_data(row: AuditRow) -> dict[str, Any]:
    """A name's result as plain data (the JSON and CSV shape)."""
    from .cli import outcome_json

    if row.outcome is None:
        data: dict[str, Any] = {
            "name": row.private.name, "display_name": row.private.display_name,
            "verdict": "unknown", "severity": Severity.HIGH.value, "owners": [],
            "organization": None, "highest_version": None,
            "reason": f"The public index could not be asked: {row.error}",
        }
    else:
        data = outcome_json(row.outcome, with_action=False)
    data["index"] = row.private.index
    data["error"] = row.error
    return data


def ordered(rows: Sequence[AuditRow]) -> list[dict[str, Any]]:
    data = [row_data(r) for r in rows]
    data.sort(key=lambda d: (_ORDER.get(d["verdict"], 9), -_RANK[d["severity"]], d["name"]))
    return data


def summary(rows: Sequence[AuditRow]) -> dict[str, int]:
    counts = Counter(r.outcome.verdict.value if r.outcome else "unknown" for r in rows)
    critical = sum(1 for r in rows if r.outcome and r.outcome.verdict is Verdict.TAKEN
                   and r.outcome.severity is Severity.CRITICAL)
    return {"total": len(rows), "free": counts["free"], "ours": counts["ours"],
            "taken": counts["taken"], "critical": critical, "protected": counts["protected"],
            "excluded": counts["excluded"], "unknown": counts["unknown"]}


def summary_line(counts: dict[str, int]) -> str:
    line = (f"{counts['free']} FREE — at risk, {counts['ours']} OURS, {counts['taken']} TAKEN — "
            f"of which {counts['critical']} critical, {counts['protected']} PROTECTED, "
            f"{counts['excluded']} EXCLUDED")
    if counts["unknown"]:
        line += f"; {counts['unknown']} not answered by the public index"
    return line


def render(result: AuditResult, fmt: str, *, stream: IO[str] | None = None,
           listed: Sequence[AuditRow] | None = None) -> tuple[str, str]:
    """(stdout text, stderr text) of the report in ``fmt``; a table fits ``stream``.

    ``listed`` are the rows to show (every row by default); the summary counts them all.
    """
    rows = ordered(result.rows if listed is None else listed)
    counts = summary(result.rows)
    line = summary_line(counts)
    notes = [f"private index not read: {u}" for u in result.unreadable]
    if result.estimate:
        notes.append(f"queued for reservation: {result.estimate}")
    if fmt == "json":
        doc = {"summary": {**counts, "line": line}, "names": rows,
               "unreadable": result.unreadable, "queued": result.queued,
               "estimate": result.estimate}
        return _json_document(doc, "names"), ""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for data in rows:
            writer.writerow({**data, "owners": " ".join(data["owners"])})
        return out.getvalue(), "\n".join([line, *notes]) + "\n"
    if fmt == "markdown":
        return _markdown(rows, line, notes), ""
    return _table(rows, stream or sys.stdout) + "\n".join([line, *notes]) + "\n", ""


def _json_document(doc: dict[str, Any], rows_key: str) -> str:
    """``doc`` as JSON, each item of its ``rows_key`` list on a line of its own.

    ``json.dumps(indent=...)`` runs the encoder in pure Python (a third of a second for
    10,000 names); compact items keep the C encoder and still read one name per line.
    """
    rows = doc[rows_key]
    head = {k: v for k, v in doc.items() if k != rows_key}
    fields = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()]
    items = ",\n".join("  " + json.dumps(row) for row in rows)
    listed = f"[\n{items}\n]" if rows else "[]"
    return "{" + ", ".join([*fields, f"{json.dumps(rows_key)}: {listed}"]) + "}\n"


def _cell(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(value)
    # A pipe or a line break (\r too, in CommonMark) would end the cell early: outside text
    # (an organisation, an index URL) may hold either.
    return "" if value is None else one_line(str(value)).replace("|", "\\|")


def _markdown(rows: list[dict[str, Any]], line: str, notes: list[str]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    lines += ["", f"**{line}**"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict[str, Any]], stream: IO[str]) -> str:
    """The CLI's table (80 columns on a terminal, plain in a pipe), for ``stream``."""
    import os

    from rich.console import Console

    from .cli_table import Columns
    from .cli_table import render as render_table

    if not rows:  # a header over nothing reads as a report; the summary says "0" alone
        return ""
    terminal = stream.isatty()
    return render_table(rows, Columns(key=("name", "verdict", "severity"),
                                      optional=("owners", "index"), text="reason"),
                        width=Console(file=stream).width if terminal else 80, terminal=terminal,
                        color=terminal and not os.environ.get("NO_COLOR"))


class _RichProgress(Progress):
    """A rich progress bar on stderr: one task, re-labelled per stage."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._task = bar.add_task("starting", total=None)

    def stage(self, description: str, total: int | None = None) -> None:
        self._bar.update(self._task, description=description, total=total, completed=0)

    def advance(self, units: int = 1) -> None:
        self._bar.advance(self._task, units)


@contextlib.contextmanager
def terminal_progress() -> Iterator[Progress]:
    """A progress bar when stderr is a terminal; silence when it is piped or redirected."""
    if not sys.stderr.isatty():
        yield Progress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
             TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True) as bar:
        yield _RichProgress(bar)
