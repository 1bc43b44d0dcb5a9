"""Alerts end to end: `namekeeper serve` and `namekeeper notify --test` through real apprise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _cli import TOKEN
from _fake_public import FakePublicIndex
from _notify_servers import serving_http
from _servers import Service, free_port, payload, wait_for
from namekeeper.cli import main

pytestmark = pytest.mark.slow  # the service and its alert receivers run as real servers


def test_notify_test_reports_each_target(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    with serving_http() as receiver:
        dead = free_port()
        cfg = tmp_path / "nk.toml"
        cfg.write_text(f'[notify]\nurls = ["{receiver.url()}", "json://127.0.0.1:{dead}/x"]\n'
                       f'[store]\npath = "s.sqlite3"\n')
        code = main(["--config", str(cfg), "--format", "json", "notify", "--test"])
        out, err = capsys.readouterr()
        rows = json.loads(out)
        assert code == 1  # one target failed
        assert [r["delivered"] for r in rows] == [True, False]
        assert rows[1]["error"]
        assert err == ""  # the row says why; no log line says it again
        [got] = receiver.wait_for(1)
        assert "test" in json.dumps(got.json()).lower()


def test_notify_test_without_targets_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    cfg = tmp_path / "nk.toml"
    cfg.write_text("")
    assert main(["--config", str(cfg), "notify", "--test"]) == 2
    assert "no notification targets" in capsys.readouterr().err


def test_service_alerts_once_per_state_routes_by_tag_and_retries(tmp_path: Path,
                                                                 fake_public: FakePublicIndex
                                                                 ) -> None:
    fake = fake_public
    fake.add_user("acme-security", TOKEN)
    fake.add_project("acme-taken", owners=["mallory"], versions=["1.0"])
    with serving_http() as alerts, serving_http() as reserved_channel:
        late_port = free_port()
        notify = (f'[notify]\nretry-first = "1s"\nurls = ["{alerts.url("/alerts")}", '
                  f'"reserved={reserved_channel.url("/reserved")}", '
                  f'"json://127.0.0.1:{late_port}/late"]\n')
        svc = Service(tmp_path, fake.config_toml(), notify).start()
        try:
            assert svc.post(payload("acme-taken")).status_code == 202
            assert svc.post(payload("acme-free")).status_code == 202
            wait_for(lambda: fake.uploads["acme-free"] == 1, 60, "acme-free reserved")
            [taken] = alerts.wait_for(1, timeout=30)
            text = json.dumps(taken.json())
            assert "acme-taken" in text and "mallory" in text
            assert "/project/acme-taken/" in text  # a link to the public project page
            [reserved] = reserved_channel.wait_for(1, timeout=30)
            assert "acme-free" in json.dumps(reserved.json())
            # Untagged targets get `taken` and `failed` only; the reserved channel no taken.
            assert all("acme-free" not in json.dumps(r.json()) for r in alerts.requests)
            assert all("acme-taken" not in json.dumps(r.json())
                       for r in reserved_channel.requests)

            # The target that refused connections gets the alert once it is up: the failed
            # delivery was kept in the store and retried.
            with serving_http(late_port) as late:
                with late.cond:
                    assert late.cond.wait_for(lambda: len(late.requests) >= 1, 30)
                assert "acme-taken" in late.requests[0].body.decode()

            # The same state again (another file of the same project): no second alert.
            assert svc.post(payload("acme-taken", kind="sdist")).status_code == 202
            wait_for(lambda: svc_queue_settled(svc), 30, "the queue to settle")
        finally:
            assert svc.stop() == 0

        # After a restart the alert is still not repeated...
        svc.start()
        try:
            assert svc.post(payload("acme-taken", version="1.1")).status_code == 202
            wait_for(lambda: svc_queue_settled(svc), 30, "the queue to settle")
            assert len([r for r in alerts.requests if "acme-taken" in r.body.decode()]) == 1
            # ...but a change (a new public version) is news.
            fake.add_project("acme-taken", owners=["mallory"], versions=["1.0", "66.0"])
            assert svc.post(payload("acme-taken", version="1.2")).status_code == 202
            alerts.wait_for(2, timeout=30)
            assert "66.0" in alerts.requests[-1].body.decode()
        finally:
            assert svc.stop() == 0
        log = svc.log.read_text()
        assert TOKEN not in log
        assert "acme-taken" in log and "json" in log  # the failed delivery was logged


def svc_queue_settled(svc: Service) -> bool:
    from namekeeper.store.sqlite import Store

    counts = Store(svc.store_path).queue_counts()
    return counts["pending"] == 0 and counts["claimed"] == 0


def test_notify_test_names_each_target_by_host_with_the_real_failure_reason(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with serving_http() as receiver:
        dead = free_port()
        cfg = tmp_path / "nk.toml"
        cfg.write_text(f'[notify]\nurls = ["{receiver.url()}", '
                       f'"json://bot:hunter2secret@127.0.0.1:{dead}/hook-s3cr3t-path"]\n'
                       f'[store]\npath = "s.sqlite3"\n')
        code = main(["--config", str(cfg), "--format", "json", "notify", "--test"])
    out = capsys.readouterr().out
    rows = json.loads(out)
    assert code == 1
    assert rows[1]["target"] == f"json://127.0.0.1:{dead}"
    assert rows[0]["target"].startswith("json://127.0.0.1:")
    assert "Connection error" in rows[1]["error"]  # apprise's own reason, not a generic one
    assert "hunter2secret" not in out and "s3cr3t" not in out


def test_a_command_leaves_a_failed_alert_to_the_service_and_says_so(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_public: FakePublicIndex,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # It said "retrying in 30 s", and no command ever retries: a running serve (or the devpi
    # plugin) on the same store does.
    from namekeeper.store.sqlite import Store

    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    fake_public.add_user("acme-security", TOKEN)
    fake_public.add_project("acme-taken", owners=["mallory"])
    dead = free_port()
    cfg = tmp_path / "nk.toml"
    cfg.write_text(fake_public.config_toml(owners=["acme-security"])
                   + f'[notify]\nurls = ["json://127.0.0.1:{dead}/x"]\n[store]\npath = "s.sqlite3"\n')
    code = main(["--config", str(cfg), "reserve", "acme-taken"])
    err = capsys.readouterr().err
    assert code == 1
    assert "kept for 'namekeeper serve' (or the devpi plugin) on this store to retry in" in err
    assert "retrying in" not in err
    store = Store(tmp_path / "s.sqlite3")
    assert [r.name for r in store.delivery_log().pending_retries(float("inf"))] == ["acme-taken"]
