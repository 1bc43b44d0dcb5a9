"""`namekeeper serve` as a real process: webhooks in, placeholders out, through crashes and faults."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from _cli import TOKEN
from _devpi import DevpiServer, make_sdist
from _doubles import sign
from _fake_public import FakePublicIndex, FaultPlan
from _servers import HOOK_SECRET, Service, payload, wait_for
from namekeeper.store.sqlite import Store

pytestmark = pytest.mark.slow  # every test runs `namekeeper serve` as a subprocess

@pytest.fixture
def service(tmp_path: Path, fake: FakePublicIndex) -> Iterator[Service]:
    svc = Service(tmp_path, fake.config_toml()).start()
    yield svc
    if svc.proc and svc.proc.poll() is None:
        svc.stop()


def test_webhooks_become_placeholders(service: Service, fake: FakePublicIndex) -> None:
    answers = [
        service.post(payload("acme-wheel")),
        service.post(payload("acme-sdist", kind="sdist")),
        service.post(payload("acme-as-string", as_string=True)),
    ]
    assert [r.status_code for r in answers] == [202, 202, 202]
    prop = json.dumps({"domain": "artifact_property", "event_type": "added",
                       "data": {"repo_key": "pypi-local", "path": "acme-prop/1.0/x.whl",
                                "name": "acme_prop-1.0-py3-none-any.whl",
                                "property_key": "pypi.name", "property_values": ["acme-prop"]}}
                      ).encode()
    assert service.post(prop).status_code == 202
    names = ["acme-wheel", "acme-sdist", "acme-as-string", "acme-prop"]
    wait_for(lambda: all(fake.uploads[n] == 1 for n in names), 60, "the placeholders")
    # The same delivery again is acknowledged and changes nothing.
    assert service.post(payload("acme-wheel")).status_code == 202
    # An item is done only once a lookup has confirmed its upload (confirm-after), a moment later.
    def metrics() -> str:
        return requests.get(service.url + "metrics", timeout=5).text
    wait_for(lambda: 'namekeeper_queue_depth{state="done"} 4' in metrics(), 30, "the confirmations")
    assert 'namekeeper_reservations_total{action="reserved"} 4' in metrics()
    assert "namekeeper_budget_left 16" in metrics()
    assert service.stop() == 0
    assert all(fake.uploads[n] == 1 for n in names)
    log = service.log.read_text()
    assert TOKEN not in log and HOOK_SECRET not in log


def test_rejections_are_4xx_and_change_nothing(service: Service, fake: FakePublicIndex) -> None:
    body = payload("acme-x")
    assert service.post(body, auth="").status_code == 401
    assert service.post(body, auth=sign(body, "wrong")).status_code == 401
    assert service.post(body, auth=HOOK_SECRET).status_code == 401  # signing is on
    assert service.post(b"x" * (1024 * 1024 + 10)).status_code == 413
    r = service.post(b"{not json")
    assert r.status_code == 400 and r.json()["reason"]
    assert service.post(json.dumps({"domain": "artifact"}).encode()).status_code == 400
    assert service.post(payload("acme-x", repo="other-repo")).status_code == 200
    assert service.post(payload("acme-x", event_type="deleted")).status_code == 200
    hostile = payload("acme-x").replace(b"acme_x-1.0-py3", b"..%2F_x-1.0-py3")
    assert service.post(hostile).status_code in (200, 400)
    assert requests.get(service.url + "nope", timeout=5).status_code == 404
    time.sleep(0.5)  # give a (wrongly) queued event the chance to show
    assert sum(fake.attempts.values()) == 0
    assert not Store(service.store_path).all_names()


def test_a_crash_loses_nothing_and_does_nothing_twice(tmp_path: Path) -> None:
    with FakePublicIndex(new_projects_per_hour=10_000) as fake:
        fake.add_user("acme-security", TOKEN)
        svc = Service(tmp_path, fake.config_toml(),
                      "[queue]\nnew-projects-per-hour = 10000\n").start()
        names = [f"acme-crash-{i}" for i in range(200)]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda n: svc.post(payload(n)).status_code, names))
        assert codes == [202] * 200
        assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
        in_flight = sum(fake.uploads.values())
        assert in_flight < 200, "the crash came too late to prove anything"
        svc.start()
        wait_for(lambda: all(fake.uploads[n] >= 1 for n in names), 240, "every name reserved")
        assert svc.stop() == 0
        assert {n: fake.uploads[n] for n in names} == dict.fromkeys(names, 1)
        store = Store(svc.store_path)
        assert all(store.get(n).reserved for n in names)


def test_faults_end_in_reserved_or_failed_without_busy_looping(tmp_path: Path) -> None:
    with FakePublicIndex(new_projects_per_hour=10_000) as fake:
        fake.add_user("acme-security", TOKEN)
        fake.faults = FaultPlan(rate=0.3, seed=7, stall_seconds=3.0)
        svc = Service(tmp_path, fake.config_toml(timeout=1),
                      "[queue]\nnew-projects-per-hour = 10000\nmax-attempts = 6\n"
                      "backoff-base = 1.3\nbackoff-max = 2\n").start()
        names = [f"acme-fault-{i}" for i in range(30)]
        for n in names:
            assert svc.post(payload(n)).status_code == 202
        store = Store(svc.store_path)

        def settled() -> bool:
            items = store.queue_items()
            return len(items) == len(names) and all(i["state"] in ("done", "failed")
                                                    for i in items)

        wait_for(settled, 240, "every name to be reserved or failed")
        # Names that ended FAILED are not held: /healthz says so (and which), until held.
        count, some = store.failed_names()

        def told() -> requests.Response | None:
            answer = requests.get(svc.url + "healthz", timeout=5)
            return answer if (answer.status_code == 503) == bool(count) else None

        health = wait_for(told, 10, "/healthz to tell")
        if count:
            assert [r for r in health.json()["reasons"]
                    if f"{count} name(s) ended FAILED" in r and some[0] in r], health.json()
        assert svc.stop() == 0
        done = {i["name"] for i in store.queue_items("done")}
        for n in names:
            assert fake.uploads[n] <= 1
            if n in done:
                assert store.get(n).reserved
        assert len(done) > len(names) // 2
        # No busy loop: a bounded number of requests per name and attempt.
        assert len(fake.requests) <= len(names) * 6 * 12


def test_a_poller_finds_names_on_a_devpi_index(tmp_path: Path, fake: FakePublicIndex,
                                               devpi: DevpiServer) -> None:
    private = devpi.new_index("private-for-serve")
    dists = tmp_path / "dists"
    dists.mkdir()
    private.upload(make_sdist(dists, "acme-polled", "1.0"))
    svc = Service(tmp_path, fake.config_toml(),
                  f'[[poll]]\nurl = "{private.simple_url}"\ninterval = "1s"\n').start()
    try:
        wait_for(lambda: fake.uploads["acme-polled"] == 1, 60, "the polled name reserved")
        private.upload(make_sdist(dists, "acme-later", "2.0"))
        wait_for(lambda: fake.uploads["acme-later"] == 1, 60, "a later upload reserved")
        metrics = requests.get(svc.url + "metrics", timeout=5).text
        assert "namekeeper_poll_last_timestamp_seconds" in metrics
    finally:
        assert svc.stop() == 0


def test_the_service_is_a_wsgi_callable_for_any_wsgi_server(tmp_path: Path, fake: FakePublicIndex,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import webtest

    from namekeeper import config as cfg
    from namekeeper.server import wsgi_app

    svc = Service(tmp_path, fake.config_toml())  # writes the config; not started as a process
    monkeypatch.setenv("NAMEKEEPER_CONFIG", str(svc.config))
    for key in ("NAMEKEEPER_PUBLIC_TOKEN", "NAMEKEEPER_ARTIFACTORY_SECRET"):
        monkeypatch.setenv(key, svc.env[key])
    app = wsgi_app()
    try:
        client = webtest.TestApp(app)
        assert client.get("/healthz").status_int == 200
        body = payload("acme-gunicorn")
        answer = client.post("/webhooks/artifactory", body,
                             headers={"X-JFrog-Event-Auth": sign(body, HOOK_SECRET),
                                      "Content-Type": "application/json"})
        assert answer.status_int == 202
        wait_for(lambda: fake.uploads["acme-gunicorn"] == 1, 60, "the placeholder")
    finally:
        app.shutdown()
    assert cfg.load().serve.port == svc.port
