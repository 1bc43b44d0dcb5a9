"""`namekeeper serve` re-scans for look-alikes on the [watch] interval and alerts each once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from _fake_public import FakePublicIndex
from _notify_servers import serving_http
from _servers import Service, payload, wait_for


@pytest.mark.slow
def test_serve_alerts_new_lookalikes_once_per_scan_interval(
        tmp_path: Path, fake: FakePublicIndex) -> None:
    fake.add_listed_projects(f"unrelated-{i}" for i in range(500))
    fake.add_project("acme-biling", owners=["mallory"])
    with serving_http() as receiver:
        extra = (f'\n[notify]\nurls = ["{receiver.url()}"]\n'
                 '\n[watch]\ninterval = "1s"\nprefixes = ["acme-corp-"]\n')
        svc = Service(tmp_path, fake.config_toml(), extra).start()
        try:
            assert svc.post(payload("acme-billing")).status_code == 202
            wait_for(lambda: fake.uploads["acme-billing"] == 1, 60, "the placeholder")

            def lookalike_alerts() -> list[str]:
                bodies = [json.dumps(r.json()) for r in receiver.requests]
                return [b for b in bodies if "looks like our" in b or "in our prefix" in b]

            [first] = wait_for(lookalike_alerts, 60, "the look-alike alert")
            assert "acme-biling" in first and "mallory" in first

            fake.add_project("acme-corp-tools", owners=["eve"])
            wait_for(lambda: len(lookalike_alerts()) == 2, 60, "the prefix alert")
            assert "acme-corp-tools" in lookalike_alerts()[1]
            time.sleep(3)  # three more scans: nothing is alerted twice
            assert len(lookalike_alerts()) == 2
        finally:
            svc.stop()


@pytest.mark.slow
def test_a_scan_that_cannot_run_is_alerted_once_and_turns_healthz_red_until_it_works(
        tmp_path: Path, fake: FakePublicIndex) -> None:
    # It was a traceback in the log every interval, no alert, /healthz green: look-alikes
    # registered meanwhile went unseen and nobody knew.
    import requests

    from _fake_public import FaultPlan

    fake.add_listed_projects(f"unrelated-{i}" for i in range(50))
    with serving_http() as receiver:
        extra = (f'\n[notify]\nurls = ["{receiver.url()}"]\n'
                 '\n[watch]\ninterval = "1s"\nprefixes = ["acme-corp-"]\n')
        svc = Service(tmp_path, fake.config_toml(), extra).start()
        try:
            fake.faults = FaultPlan(rate=1.0, kinds=("500",), paths=("/simple/",))

            def health(code: int) -> dict[str, list[str]] | None:
                answer = requests.get(svc.url + "healthz", timeout=5)
                return answer.json() if answer.status_code == code else None

            red = wait_for(lambda: health(503), 60, "/healthz to say the scan cannot run")
            assert any("look-alike scan cannot run" in r for r in red["reasons"]), red

            def scan_alerts() -> list[str]:
                bodies = [json.dumps(r.json()) for r in receiver.requests]
                return [b for b in bodies if "look-alike scan cannot run" in b]

            wait_for(scan_alerts, 30, "the alert")
            time.sleep(3)  # three more failed scans: one alert
            assert len(scan_alerts()) == 1
            fake.faults = None
            wait_for(lambda: health(200), 60, "/healthz green once the scan works")
        finally:
            svc.stop()
