"""Tables at 80 columns: names, verdicts and severities whole; reasons wrap; pipes stay plain."""

from __future__ import annotations

import pytest

from namekeeper.cli_table import Columns, render

ROWS = [
    {"name": "requests", "verdict": "taken", "severity": "high", "owners": ["psf", "nateprewitt"],
     "highest_version": "2.32.3", "reason": "Held by psf, nateprewitt; we cannot tell whether "
                                            "it outranks our private package."},
    {"name": "asyncio", "verdict": "protected", "severity": "none", "owners": [],
     "reason": "The public index refuses standard-library module names to everyone."},
    {"name": "acme-internal-billing-service-client", "verdict": "free", "severity": "low",
     "owners": [], "reason": "Nobody holds this name on the public index; anyone could "
                             "register it."},
]
COLUMNS = Columns(key=("name", "verdict", "severity"),
                  optional=("owners", "highest_version", "organization", "first_release"),
                  text="reason")


def test_at_80_columns_no_key_cell_is_cut_and_the_reason_wraps() -> None:
    out = render(ROWS, COLUMNS, width=80, terminal=True, color=False)
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for row in ROWS:
        assert any(row["name"] in line and row["verdict"] in line and row["severity"] in line
                   for line in lines), row["name"]
    assert "…" not in out
    assert "register it." in out  # the reason is all there, wrapped
    assert len(lines) <= 12  # three names fit a screen


def test_a_very_narrow_terminal_moves_the_reason_below() -> None:
    out = render(ROWS, COLUMNS, width=60, terminal=True, color=False)
    assert all(len(line) <= 60 for line in out.splitlines())
    assert "acme-internal-billing-service-client" in out
    assert "asyncio: The public index refuses" in out.replace("\n", " ")


def test_piped_output_is_plain_one_line_per_row() -> None:
    out = render(ROWS, COLUMNS, width=80, terminal=False, color=False)
    lines = out.rstrip("\n").splitlines()
    assert len(lines) == 1 + len(ROWS)  # a header and one line per name
    assert not any(ch in out for ch in "─━│┃┏┓└┘╭╮")
    assert "\x1b[" not in out
    assert lines[1].split()[:3] == ["requests", "taken", "high"]


def test_colour_only_when_asked() -> None:
    plain = render(ROWS, COLUMNS, width=80, terminal=True, color=False)
    coloured = render(ROWS, COLUMNS, width=80, terminal=True, color=True)
    assert "\x1b[" not in plain and "\x1b[" in coloured


def test_outside_text_brings_no_escape_sequence_or_line_break_to_the_terminal() -> None:
    # An index URL from a lock file in a pull request, an organisation from the public index.
    hostile = {"name": "acme-a", "verdict": "taken", "severity": "high",
               "organization": "Evil\x1b[2J\x1b[31mCorp\r\nFREE", "reason": "Held\rby mallory."}
    for terminal in (True, False):
        out = render([hostile], COLUMNS, width=200, terminal=terminal, color=False)
        assert "\x1b" not in out and "\r" not in out
        assert len(out.strip().splitlines()) == (3 if terminal else 2)  # header (+rule), a row


def test_an_audit_whose_only_index_is_unreadable_says_so_without_an_empty_table() -> None:
    import io

    from namekeeper.audit import AuditResult
    from namekeeper.audit_report import render

    result = AuditResult(unreadable=["GET http://127.0.0.1:1/simple/ failed: ConnectionError"])
    out, _ = render(result, "table", stream=io.StringIO())
    assert out.splitlines() == [
        "0 FREE — at risk, 0 OURS, 0 TAKEN — of which 0 critical, 0 PROTECTED, 0 EXCLUDED",
        "private index not read: GET http://127.0.0.1:1/simple/ failed: ConnectionError"]


def test_a_warning_during_the_audit_progress_bar_is_printed_above_it_not_through_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging
    import sys

    from namekeeper import cli
    from namekeeper.audit_report import terminal_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("COLUMNS", "200")
    cli._configure_logging(0)
    with terminal_progress() as progress:
        progress.stage("listing http://127.0.0.1:1/simple/")
        logging.getLogger("namekeeper.sources.poll").warning("lists 3 invalid project name(s)")
    drawn = terminal.getvalue()
    assert "━" in drawn  # the bar was drawn before the warning
    # What the terminal shows of the warning's line: what follows the line's last \r.
    lines = [line.rsplit("\r", 1)[-1] for line in drawn.split("\n") if "invalid project" in line]
    assert len(lines) == 1 and "━" not in lines[0], drawn
