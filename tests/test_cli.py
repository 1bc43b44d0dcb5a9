"""`namekeeper check / reserve / status` end to end, against the fake public index and devpi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _cli import TOKEN, reserve_then_status, run, write_config
from _devpi import DevpiServer, make_sdist
from _fake_public import FakePublicIndex
from namekeeper.cli import main

# The command line against the fake public index, building real placeholders.
pytestmark = pytest.mark.slow


def test_reserve_then_pip_refuses_to_install_and_a_second_reserve_uploads_nothing(
        tmp_path: Path, fake: FakePublicIndex, cfg: Path) -> None:
    env = {**os.environ, "NAMEKEEPER_PUBLIC_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "namekeeper.cli", "--config", str(cfg), "--format", "json",
           "reserve", "Acme.Billing"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    [row] = json.loads(first.stdout)
    assert (row["name"], row["verdict"], row["action"]) == ("acme-billing", "ours", "reserved")
    assert fake.uploads["acme-billing"] == 1
    assert fake.project("acme-billing")["owners"] == ["acme-security"]

    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                          "--disable-pip-version-check", "--isolated", "--index-url", fake.simple_url,
                          "--target", str(target), "acme-billing"],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode != 0
    assert "private package of ACME Corp" in pip.stdout + pip.stderr
    assert "security@acme.example" in pip.stdout + pip.stderr
    assert not target.exists() or not any(target.iterdir())

    attempts = sum(fake.attempts.values())
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)[0]["action"] == "already-ours"
    assert sum(fake.attempts.values()) == attempts  # nothing was uploaded, not even tried
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert TOKEN not in text


def test_a_placeholder_removed_by_the_index_cannot_be_uploaded_again_and_says_so(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # PEP 541: the administrators remove our placeholder project; its file name stays used.
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    cfg = write_config(tmp_path, fake.config_toml() + 'cdn-grace = "0.1s"\n')
    code, rows, err = run(capsys, "--config", str(cfg), "--format", "json", "reserve", "acme-gone")
    assert (code, rows[0]["action"]) == (0, "reserved"), err
    fake.remove_project("acme-gone")
    time.sleep(0.2)  # past the CDN grace: the index's "not found" now means it
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve", "acme-gone")
    [row] = rows
    assert (row["verdict"], row["severity"], row["action"]) == ("free", "high", "failed")
    assert "acme_gone-0.0.0.tar.gz" in row["message"] and "0.0.0.post1" in row["message"]
    assert code == 1 and fake.project("acme-gone") is None  # not held, and not called ours
    cfg.write_text(cfg.read_text().replace("[placeholder]\n",
                                           '[placeholder]\nversion = "0.0.0.post1"\n'))
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve", "acme-gone")
    assert (code, rows[0]["action"]) == (0, "reserved") and fake.project("acme-gone")


def test_check_reports_every_verdict_with_owners_and_exit_code(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path) -> None:
    fake.add_project("acme-utils", owners=["mallory"], organization="evil-corp",
                     versions=["99.0"])
    fake.add_project("acme-core", owners=["acme-security"])
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "check",
                        "acme-utils", "acme-core", "acme-new", "asyncio", "acme-fork-x")
    by_name = {r["name"]: r for r in rows}
    assert code == 1
    assert by_name["acme-utils"]["verdict"] == "taken"
    assert by_name["acme-utils"]["owners"] == ["mallory"]
    assert by_name["acme-utils"]["organization"] == "evil-corp"
    assert by_name["acme-utils"]["highest_version"] == "99.0"
    assert by_name["acme-utils"]["severity"] in ("high", "critical")
    assert by_name["acme-core"]["verdict"] == "ours"
    assert by_name["acme-new"]["verdict"] == "free"
    assert by_name["asyncio"]["verdict"] == "protected"
    assert by_name["acme-fork-x"]["verdict"] == "excluded"
    assert sum(fake.attempts.values()) == 0  # check never uploads
    assert all(r["reason"] for r in rows)


def test_only_safe_names_exit_zero_and_print_a_table(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path) -> None:
    fake.add_project("acme-core", owners=["acme-security"])
    code, out, _ = run(capsys, "check", "acme-core", "json", "--config", str(cfg))
    assert code == 0
    assert "acme-core" in out and "ours" in out.lower() and "protected" in out.lower()


@pytest.mark.parametrize("hostile", ["../x", 'a"]\n[tool', "-x", "x" * 200])
def test_invalid_names_exit_2_and_touch_nothing(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path,
        monkeypatch: pytest.MonkeyPatch, hostile: str) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    code, out, err = run(capsys, "--config", str(cfg), "reserve", "--", "acme-ok", hostile)
    assert code == 2
    assert err.startswith("namekeeper: error:") and err.count("\n") == 1
    assert fake.requests == []  # validated before anything was asked or uploaded


def test_missing_token_is_a_clear_error_and_nothing_is_uploaded(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path) -> None:
    code, _, err = run(capsys, "--config", str(cfg), "reserve", "acme-billing")
    assert code == 2
    assert "NAMEKEEPER_PUBLIC_TOKEN" in err
    assert sum(fake.attempts.values()) == 0


def test_dry_run_uploads_nothing(capsys: pytest.CaptureFixture[str], fake: FakePublicIndex,
                                 cfg: Path) -> None:
    code, rows, err = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                          "acme-billing", "--dry-run")
    assert rows[0]["action"] == "dry-run" and rows[0]["verdict"] == "free"
    assert sum(fake.attempts.values()) == 0
    # It exits as `check` would (the name is still free), says why a real run would stop
    # (no token here), and writes nothing.
    check_code, _, _ = run(capsys, "--config", str(cfg), "check", "acme-billing")
    assert code == check_code == 1
    assert "a real run would stop" in err and "NAMEKEEPER_PUBLIC_TOKEN" in err
    _, status, _ = run(capsys, "--config", str(cfg), "--format", "json", "status")
    assert status == []


def test_check_writes_only_the_owner_of_a_placeholder_we_just_uploaded(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path) -> None:
    # As its help says: the upload ran a moment ago under a bot account [public] owners does
    # not list; check learns it as our placeholder's owner, and writes nothing else.
    from datetime import timedelta

    from namekeeper.model import Action, Outcome, Severity, Verdict, utcnow
    from namekeeper.store.sqlite import Store

    store = Store(cfg.parent / "state.sqlite3")
    for name, ago in (("acme-newly", timedelta(0)), ("acme-older", timedelta(days=3))):
        store.record_outcome(Outcome(
            name=name, display_name=name, verdict=Verdict.OURS, action=Action.RESERVED,
            severity=Severity.NONE, reason="reserved", message="reserved", at=utcnow() - ago),
            reserved=True)
        fake.add_project(name, owners=["acme-upload-bot"])
    before = {n: store.history(n) for n in ("acme-newly", "acme-older")}
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "check",
                        "acme-newly", "acme-older")
    assert [(r["name"], r["verdict"]) for r in rows] == [("acme-newly", "ours"),
                                                         ("acme-older", "taken")]
    assert store.placeholder_owners("acme-newly") == {"acme-upload-bot"}
    assert store.placeholder_owners("acme-older") == frozenset()  # too late to be sure
    assert {n: store.history(n) for n in before} == before


def test_every_upload_answer_is_reported(capsys: pytest.CaptureFixture[str],
                                         fake: FakePublicIndex, cfg: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    fake.add_project("acme-utils", owners=["mallory"])
    fake.prohibit("acme-banned")
    code, rows, err = run(capsys, "--config", str(cfg), "--format", "json", "-vv", "reserve",
                          "acme-new", "acme-banned", "acme_uti1s", "acme-utils")
    by_name = {r["name"]: r for r in rows}
    assert by_name["acme-new"]["action"] == "reserved"
    assert by_name["acme-banned"]["action"] == "protected"
    assert by_name["acme-uti1s"]["action"] == "protected"  # too similar to acme-utils
    assert "similar" in by_name["acme-uti1s"]["message"]
    assert by_name["acme-utils"]["action"] == "taken"
    assert code == 1
    assert TOKEN not in err and TOKEN not in json.dumps(rows)
    state = (Path(cfg).parent / "state.sqlite3").read_bytes()
    assert TOKEN.encode() not in state


def test_the_public_index_rate_limit_is_reported(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with FakePublicIndex(new_projects_per_hour=1) as fake:
        fake.add_user("acme-security", TOKEN)
        cfg = write_config(tmp_path, fake.config_toml())
        monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
        code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                            "acme-one", "acme-two")
    assert [r["action"] for r in rows] == ["reserved", "rate-limited"]
    assert code == 1


def test_our_own_budget_is_never_exceeded(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          fake: FakePublicIndex,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    cfg = write_config(tmp_path, fake.config_toml(), "[queue]\nnew-projects-per-hour = 2\n")
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                        "acme-a", "acme-b", "acme-c")
    assert [r["action"] for r in rows] == ["reserved", "reserved", "rate-limited"]
    assert sum(fake.uploads.values()) == 2 and code == 1
    assert rows[2]["message"].endswith("; next slot in 60 min.")  # not "in 3600 s"


def test_status_shows_what_the_store_knows(capsys: pytest.CaptureFixture[str],
                                           fake: FakePublicIndex, cfg: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    fake.add_project("acme-utils", owners=["mallory"])
    code, by_name = reserve_then_status(capsys, cfg, "acme-billing", "acme-utils")
    assert by_name["acme-billing"]["verdict"] == "ours" and by_name["acme-billing"]["reserved_at"]
    assert by_name["acme-utils"]["verdict"] == "taken"
    assert code == 1


def test_a_taken_verdict_without_an_owner_configured_says_it_may_be_ours(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, tmp_path: Path) -> None:
    fake.add_project("acme-billing", owners=["acme-security"])
    unowned = write_config(tmp_path, fake.config_toml(), ours="")
    code, _, err = run(capsys, "--config", str(unowned), "check", "acme-billing")
    assert code == 1 and "may be one of your own projects: set [public] owners" in err
    assert err.count("\n") == 1
    owned = write_config(tmp_path, fake.config_toml())
    code, _, err = run(capsys, "--config", str(owned), "check", "acme-billing")
    assert code == 0 and err == ""


def test_status_says_why_a_reservation_of_the_command_line_failed(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-not-the-token")
    code, by_name = reserve_then_status(capsys, cfg, "acme-billing")
    row = by_name["acme-billing"]
    assert code == 1 and row["action"] == "failed" and row["queue"] is None
    assert "refused our credentials" in (row["last_error"] or "")
    _, out, _ = run(capsys, "--config", str(cfg), "status")  # the table shows it too
    assert "refused our credentials" in str(out)


def test_a_failed_reservation_is_said_once_in_its_row_and_logged_with_verbose(
        capsys: pytest.CaptureFixture[str], fake: FakePublicIndex, cfg: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-not-the-token")
    code, out, err = run(capsys, "--config", str(cfg), "reserve", "acme-billing")
    assert code == 1 and "refused our credentials" in str(out)
    assert err == ""  # no timestamped line saying the row again
    # -v (serve's level: its log is its output) shows the upload's answer as it came.
    _, _, err = run(capsys, "--config", str(cfg), "-v", "reserve", "acme-invoices")
    assert "INFO namekeeper.reserve.twine: the public index refused our credentials" in err


def test_a_name_reserved_from_the_command_line_shows_its_owners_as_one_the_service_reserved(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex, cfg: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from _doubles import Clock
    from test_service_promises import accept, drain, make_pool

    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                        "acme-billing")
    assert code == 0 and rows[0]["owners"] == ["acme-security"]  # the row says it too
    _, [row], _ = run(capsys, "--config", str(cfg), "--format", "json", "status")
    assert (row["action"], row["owners"]) == ("reserved", ["acme-security"])
    # The service's confirmation records the same, and no second outcome.
    clock = Clock()
    served = tmp_path / "served"
    served.mkdir()
    pool = make_pool(served, fake, monkeypatch, clock)
    accept(pool, "acme-invoices")
    drain(pool, clock, until=clock.t + 3600)
    record = pool.store.get("acme-invoices")
    assert record is not None and (record.action, record.owners) == ("reserved",
                                                                     ("acme-security",))
    assert [h["kind"] for h in pool.store.history("acme-invoices")] == [
        "seen", "upload-started", "outcome"]


def test_status_table_shows_the_queue_state_in_words(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path, cfg: Path) -> None:
    from namekeeper.model import NameEvent
    from namekeeper.store.sqlite import Store

    with Store(tmp_path / "state.sqlite3") as store:
        store.accept(NameEvent(name="acme-queued", display_name="acme-queued", source="cli",
                               index="i", key="k"))
    code, out, _ = run(capsys, "--config", str(cfg), "status")
    [line] = [line for line in str(out).splitlines() if line.startswith("acme-queued")]
    assert " pending " in line and "QueueState" not in line


def test_status_of_an_empty_store_says_so(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, err = run(capsys, "--config", str(cfg), "status")
    assert code == 0 and not out and "knows no names yet" in err


def test_a_corrupt_config_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[public\n")
    code, _, err = run(capsys, "--config", str(bad), "check", "acme-a")
    assert code == 2 and "not valid TOML" in err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and "namekeeper" in capsys.readouterr().out


def test_devpi_as_a_public_index_without_json_api(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, devpi: DevpiServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    index = devpi.new_index("public-standin")
    someone = tmp_path / "dists"
    someone.mkdir()
    index.upload(make_sdist(someone, "acme-theirs", "5.0"))
    public = (f'[public]\nsimple-url = "{index.simple_url}"\njson-url = ""\n'
              f'upload-url = "{index.upload_url}"\nusername = "{index.user}"\n')
    cfg = write_config(tmp_path, public)
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", index.password)
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "reserve",
                        "acme-mine", "acme-theirs")
    by_name = {r["name"]: r for r in rows}
    assert by_name["acme-mine"]["action"] == "reserved"
    assert by_name["acme-theirs"]["verdict"] == "taken"
    assert by_name["acme-theirs"]["owners"] == []  # devpi publishes no owners
    # The placeholder is really on devpi, and the store remembers it is ours.
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "check", "acme-mine")
    assert rows[0]["verdict"] == "ours" and code == 0
