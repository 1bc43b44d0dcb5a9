"""Helpers of the command-line tests: a config for the fake public index, a captured run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from _fake_public import FakePublicIndex
from namekeeper.cli import main

TOKEN = "pypi-AgEIcHlwaS5vcmcSECRETVALUE-for-tests"


def write_config(tmp_path: Path, public_toml: str, extra: str = "", *,
                 ours: str = 'owners = ["acme-security"]') -> Path:
    """``ours``: the [public] line(s) naming our account or organisation ("" for none)."""
    path = tmp_path / "namekeeper.toml"
    path.write_text(public_toml + ours + "\n" + """
[placeholder]
organization = "ACME Corp"
contact = "security@acme.example"
[policy]
exclude = ["acme-fork-*"]
[store]
path = "state.sqlite3"
""" + extra)
    return path


@pytest.fixture
def fake(fake_public: FakePublicIndex) -> FakePublicIndex:
    fake_public.add_user("acme-security", TOKEN)
    return fake_public


@pytest.fixture
def cfg(tmp_path: Path, fake: FakePublicIndex) -> Path:
    return write_config(tmp_path, fake.config_toml())


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list | str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


def reserve_then_status(capsys: pytest.CaptureFixture[str], config: Path,
                        *names: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """`reserve` ``names``, then `status` as JSON: (status's exit code, its rows by name)."""
    run(capsys, "--config", str(config), "reserve", *names)
    code, rows, _ = run(capsys, "--config", str(config), "--format", "json", "status")
    assert isinstance(rows, list), rows
    return code, {row["name"]: row for row in rows}
