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
