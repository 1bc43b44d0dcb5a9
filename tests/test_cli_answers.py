"""The command line gives right answers: no false alarm on our own work, read-only checks,
one upload per ultranormalised class, exit codes people can script."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from _cli import TOKEN, run, write_config
from _fake_public import FakePublicIndex
from namekeeper.model import (
    Action,
    NameEvent,
    Outcome,
    PublicProject,
    Severity,
    Verdict,
    outcome_to_dict,
)
from namekeeper.store.sqlite import Store


def test_reserving_without_an_owner_is_refused_when_the_index_publishes_owners(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    cfg = write_config(tmp_path, fake.config_toml(), ours="")
    code, _, err = run(capsys, "--config", str(cfg), "reserve", "acme-billing")
    assert code == 2 and err.count("\n") == 1
    assert "[public] owners" in err and "organization" in err
    assert sum(fake.attempts.values()) == 0
    # A dry run says the same, and still answers.
    code, rows, err = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                          "--dry-run", "acme-billing")
    assert code == 1 and rows[0]["action"] == "dry-run"
    assert "a real run would stop" in err and "[public] owners" in err


def test_our_own_placeholder_is_ours_by_the_owners_the_index_reported(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the organisation is configured; the token belongs to a personal account that is
    # not (yet) in it: the index lists that account as the placeholder's owner.
    fake.add_user("acme-bot", "pypi-bot-token-for-tests")
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-bot-token-for-tests")
    cfg = write_config(tmp_path, fake.config_toml(), ours='organization = "acme"')
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve", "acme-pay")
    assert (code, rows[0]["action"]) == (0, "reserved")
    assert fake.project("acme-pay")["owners"] == ["acme-bot"]
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "check", "acme-pay")
    assert rows[0]["verdict"] == "ours", rows[0]
    assert rows[0]["severity"] == "none" and code == 0
    assert "acme-bot" in rows[0]["reason"]


def test_check_is_read_only(capsys: pytest.CaptureFixture[str], fake: FakePublicIndex,
                            cfg: Path) -> None:
    fake.add_project("requests", owners=["psf"])
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "check",
                        "requests", "acme-new")
    assert [r["verdict"] for r in rows] == ["taken", "free"]
    code, status, _ = run(capsys, "--config", str(cfg), "--format", "json", "status")
    assert (code, status) == (0, [])


def test_forget_removes_names_from_the_store(capsys: pytest.CaptureFixture[str],
                                             fake: FakePublicIndex, cfg: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    fake.add_project("acme-utils", owners=["mallory"])
    run(capsys, "--config", str(cfg), "reserve", "acme-utils", "acme-keep")
    code, status, _ = run(capsys, "--config", str(cfg), "--format", "json", "status")
    assert code == 1 and {r["name"] for r in status} == {"acme-utils", "acme-keep"}
    code, out, _ = run(capsys, "--config", str(cfg), "forget", "Acme_Utils", "acme-never")
    assert code == 0
    assert "acme-utils: forgotten" in out and "acme-never: was not in the store" in out
    code, status, _ = run(capsys, "--config", str(cfg), "--format", "json", "status")
    assert code == 0 and [r["name"] for r in status] == ["acme-keep"]


def test_one_upload_per_ultranormalised_class(capsys: pytest.CaptureFixture[str],
                                              fake: FakePublicIndex, cfg: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                        "--dry-run", "acme-utils", "acme-uti1s", "acmeutils")
    assert [r["action"] for r in rows] == ["dry-run", "protected", "protected"]
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                        "acme-utils", "acme-uti1s", "acmeutils")
    assert code == 0
    by_name = {r["name"]: r for r in rows}
    assert by_name["acme-utils"]["action"] == "reserved"
    for other in ("acme-uti1s", "acmeutils"):
        assert by_name[other]["verdict"] == "protected"
        assert "covered by our placeholder for acme-utils" in by_name[other]["reason"].lower()
    assert sum(fake.attempts.values()) == 1  # no upload tried for the look-alikes
    assert Store(cfg.parent / "state.sqlite3").budget_left(20) == 19


def test_every_name_in_the_store_is_rechecked_whatever_its_source(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    run(capsys, "--config", str(cfg), "reserve", "acme-from-cli")
    store = Store(cfg.parent / "state.sqlite3")
    assert store.queue_items() == []  # reserved from the command line: never queued
    assert store.schedule_recheck(3600.0) == 1
    [item] = store.queue_items()
    assert (item["name"], item["state"]) == ("acme-from-cli", "pending")


def test_an_unreachable_index_exits_3_and_prints_what_was_answered(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[public]\nsimple-url = "http://127.0.0.1:9/simple/"\n'
                                 'json-url = "http://127.0.0.1:9/pypi/"\ntimeout = 1\n'
                                 'retries = 0\n')
    code, rows, err = run(capsys, "--config", str(cfg), "--format", "json", "check",
                          "acme-fork-x", "acme-x")
    assert code == 3
    assert [r["name"] for r in rows] == ["acme-fork-x"]  # answered without asking
    assert "acme-x" in err and "Traceback" not in err


def test_names_come_from_files_and_stdin(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         fake: FakePublicIndex, cfg: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "names.txt"
    listing.write_text("# our private packages\nacme-one\n\nacme-two  # billing\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("acme-three\nasyncio\n"))
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "check", "acme-zero",
                        "-", "-r", str(listing))
    assert [r["name"] for r in rows] == ["acme-zero", "acme-one", "acme-two", "acme-three",
                                         "asyncio"]
    code, _, err = run(capsys, "--config", str(cfg), "check")
    assert code == 2 and "no names given" in err


def test_all_invalid_names_are_reported_at_once(capsys: pytest.CaptureFixture[str],
                                                cfg: Path) -> None:
    code, _, err = run(capsys, "--config", str(cfg), "check", "--", "a b", "ok", "-x", "y\n")
    assert code == 2 and err.count("\n") == 1
    assert "3 invalid names" in err and "'a b'" in err and "'-x'" in err


def test_quiet_prints_only_what_needs_attention(capsys: pytest.CaptureFixture[str],
                                                fake: FakePublicIndex, cfg: Path) -> None:
    fake.add_project("acme-core", owners=["acme-security"])
    code, out, err = run(capsys, "--config", str(cfg), "check", "-q", "acme-core", "asyncio")
    assert (code, out, err) == (0, "", "")
    code, out, _ = run(capsys, "--config", str(cfg), "check", "-q", "acme-core", "acme-new")
    assert code == 1 and "acme-new" in out and "acme-core" not in out


def test_notify_alone_shows_its_help(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, err = run(capsys, "--config", str(cfg), "notify")
    assert code == 0 and "--test" in out and "usage:" in out and err == ""


@pytest.mark.parametrize("command", ["check", "reserve", "status", "forget", "notify", "serve",
                                     "plugins", "store migrate", "store copy"])
def test_every_subcommand_has_a_description_an_example_and_its_exit_codes(
        capsys: pytest.CaptureFixture[str], command: str) -> None:
    from namekeeper.cli import main

    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "examples:" in out and f"namekeeper {command}" in out.split("examples:")[1]
    assert "exit codes:" in out and "  2  " in out
    assert len(out.split("usage:")[1].split("\n\n")[1]) > 40  # a description paragraph
    # Only the commands that ask an index exit 3, and only they may say so.
    assert ("  3  " in out) == (command in ("check", "reserve")), out
    if command == "check":  # it never uploads: no exit code of its speaks of reserving
        assert "reserv" not in out.split("exit codes:")[1]


@pytest.mark.parametrize("where", ["before the subcommand", "after it"])
def test_format_is_taken_in_either_place_and_one_the_command_cannot_print_is_refused(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str) -> None:
    config = tmp_path / "nk.toml"
    config.write_text('[store]\npath = "s.sqlite3"\n')

    def run_with(fmt: str, *command: str) -> tuple[int, list | str, str]:
        option = ["--format", fmt]
        words = [*option, *command] if where == "before the subcommand" else [*command, *option]
        return run(capsys, "--config", str(config), *words)

    assert run_with("json", "status")[:2] == (0, [])
    for fmt, command, error in [
            ("csv", ["status"], "status cannot print 'csv': --format is table or json"),
            ("markdown", ["watch", "--once"],
             "watch cannot print 'markdown': --format is table, json or csv"),
            ("csv", ["store", "migrate"],
             "store migrate cannot print 'csv': --format is table or json"),
            ("xml", ["check", "acme-x"], "check cannot print 'xml': --format is table or json"),
            ("json", ["serve"], "serve takes no --format: what it prints is its log")]:
        code, out, err = run_with(fmt, *command)
        assert (code, out, err) == (2, "", f"namekeeper: error: {error}\n"), command


def test_json_rows_are_valid_json_with_quiet_and_all_safe(
        capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, _ = run(capsys, "--config", str(cfg), "--format", "json", "check", "-q",
                       "asyncio")
    assert code == 0 and out == [] or json.loads(out) == []


@pytest.mark.parametrize("public", [
    None,
    PublicProject(name="acme-x", exists=False, ownership_known=True),
    PublicProject(name="acme-x", exists=True, owners=("mallory",), organization="evil",
                  versions=("0.9", "1.0-RC1", "not a version"), ownership_known=True,
                  first_release=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                  url="http://127.0.0.1:9/project/acme-x/"),
])
def test_a_json_row_is_the_outcome_as_the_store_codec_writes_it(public: PublicProject | None,
                                                                 ) -> None:
    # `check --format json` and audit rows project `outcome_to_dict`: the same values.
    from namekeeper.cli import outcome_json

    outcome = Outcome(name="acme-x", display_name="Acme_X", verdict=Verdict.TAKEN,
                      action=Action.SKIPPED, severity=Severity.CRITICAL, reason="why",
                      message="what", public=public,
                      first_seen_private=datetime(2024, 5, 6, tzinfo=timezone.utc),
                      event=NameEvent(name="acme-x", display_name="Acme_X", source="audit",
                                      index="http://127.0.0.1:9/simple/"))
    full = outcome_to_dict(outcome)
    shown = full["public"] or {}
    expected = {key: full[key] for key in ("name", "display_name", "verdict", "severity",
                                           "reason", "first_seen_private")}
    expected.update(owners=shown.get("owners", []), organization=shown.get("organization"),
                    exists=shown.get("exists"), first_release=shown.get("first_release"),
                    highest_version=public.highest_version if public else None)
    assert outcome_json(outcome, with_action=False) == expected
    assert outcome_json(outcome, with_action=True) == {
        **expected, "action": full["action"], "message": full["message"]}
    assert public is None or public.versions == () or expected["highest_version"] == "1.0rc1"
