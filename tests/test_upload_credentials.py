"""Upload credentials the public index refuses, or none at all, are one condition of `serve`.

Every upload would meet the same refusal, so the names are not failed one by one (one alert
each, then hours until the re-check): the service raises one condition (alerted once,
/healthz red), the names wait without spending attempts while one upload at a time finds out
whether the credentials work again, and they resume once the index takes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _doubles import Clock
from _fake_public import FakePublicIndex
from _notify_servers import HttpReceiver, serving_http
from _servers import wait_for
from namekeeper import config as cfg
from namekeeper.app import build_keeper
from namekeeper.health import Health
from namekeeper.model import Action, NameEvent
from namekeeper.public.simple import SimplePublicIndex
from namekeeper.server import Service
from namekeeper.store.sqlite import Store
from namekeeper.upload_hold import CONDITION_MISSING, CONDITION_REFUSED
from namekeeper.worker import WorkerPool
from test_service_promises import Alerts, accept, drain, watched_pool
from test_worker import TOKEN

pytestmark = pytest.mark.slow  # the fake public index, a receiver, a service


def upload_times(pool: WorkerPool, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each upload of ``pool``'s backend is made, from now on."""
    times: list[float] = []
    upload = pool.keeper.backend.upload  # type: ignore[union-attr]

    def timed(*args: Any) -> Any:
        times.append(clock.t)
        return upload(*args)

    monkeypatch.setattr(pool.keeper.backend, "upload", timed)
    return times


def tokenless_pool(tmp_path: Path, fake: FakePublicIndex, clock: Clock
                   ) -> tuple[WorkerPool, Alerts]:
    """A queue whose service has no NAMEKEEPER_PUBLIC_TOKEN: twine's own sources or nothing."""
    fake.add_user("acme-security", TOKEN)
    path = tmp_path / "nk.toml"
    path.write_text(fake.config_toml(owners=["acme-security"]))
    config = cfg.load(path)
    keeper, store = build_keeper(config, with_notifiers=False,
                                 store=Store(tmp_path / "s.sqlite3", clock=clock), for_queue=True)
    keeper.alerts = alerts = Alerts()  # type: ignore[assignment]
    keeper.public = SimplePublicIndex(config.public, retries=0)
    return WorkerPool(keeper, store, config.queue, threads=1, clock=clock), alerts


def pypirc_with(fake: FakePublicIndex, token: str) -> None:
    """``~/.pypirc`` (the test's own home) giving twine ``token`` for the fake's upload URL."""
    (Path.home() / ".pypirc").write_text(
        f"[distutils]\nindex-servers = public\n\n[public]\nrepository = {fake.upload_url}\n"
        f"username = __token__\npassword = {token}\n")


def queue_attempts(pool: WorkerPool) -> list[int]:
    return [item["attempts"] for item in pool.store.queue_items()]


def test_a_refused_token_is_one_condition_one_probe_at_a_time_and_names_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    with FakePublicIndex(clock=clock) as fake:
        pool, alerts = watched_pool(tmp_path, fake, monkeypatch, clock,
                                    "[queue]\nmax-attempts = 3\nbackoff-max = 60\n")
        fake.revoke_tokens()  # the index refuses our token from now on
        sent = upload_times(pool, clock, monkeypatch)
        names = [f"acme-cred-{i}" for i in range(20)]
        accept(pool, *names)
        start = clock.t
        drain(pool, clock, until=start + 2 * 3600)  # hours of refusals

        assert [c.key for c in pool.store.conditions()] == [CONDITION_REFUSED]
        [(key, text, _tags)] = alerts.conditions  # one alert, not one per name
        assert key == CONDITION_REFUSED
        assert "refuses our upload credentials (403 Invalid or non-existent authentication" in text
        assert "account-wide" in text and "2FA" in text and TOKEN not in text
        assert not [o for o in alerts.outcomes if o.action is Action.FAILED]
        assert pool.store.queue_items("failed") == [] and pool.store.failed_names() == (0, [])
        assert queue_attempts(pool) == [0] * len(names)  # waiting is not failing
        # One upload at a time found out, the wait between them doubling up to backoff-max,
        # while every name was looked at again: the others never reached the index.
        gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
        assert gaps[:6] == [2, 4, 8, 16, 32, 60] and set(gaps[5:]) == {60}
        assert sum(fake.attempts.values()) == len(sent)
        health = Health(pool.keeper.config, pool.store, pool, [], [])
        assert [r for r in health.store_answer().reasons if "refuses our upload credentials" in r]

        fake.add_user("acme-security", TOKEN)  # the operator fixed the account's token
        drain(pool, clock, until=clock.t + 3600)
        assert all(fake.uploads[n] == 1 for n in names)
        assert all(pool.store.get(n).reserved for n in names)  # type: ignore[union-attr]
        assert pool.store.conditions() == []  # /healthz green again
        assert not health.refresh().reasons
        assert len(alerts.conditions) == 1 and not alerts.failed(names[0])
        assert [i["state"] for i in pool.store.queue_items()] == ["done"] * len(names)


def test_a_token_replaced_in_pypirc_is_used_without_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    with FakePublicIndex(clock=clock) as fake:
        pool, alerts = tokenless_pool(tmp_path, fake, clock)
        pypirc_with(fake, "pypi-revoked-token")
        accept(pool, "acme-a", "acme-b")
        drain(pool, clock, until=clock.t + 600)
        assert [c.key for c in pool.store.conditions()] == [CONDITION_REFUSED]
        pypirc_with(fake, TOKEN)  # the backend looks again after a refusal
        drain(pool, clock, until=clock.t + 3600)
        assert fake.uploads["acme-a"] == fake.uploads["acme-b"] == 1
        assert pool.store.conditions() == []
        assert [c[0] for c in alerts.conditions] == [CONDITION_REFUSED]


def test_no_token_at_all_is_the_condition_from_the_start_and_sends_nothing(
        tmp_path: Path) -> None:
    clock = Clock()
    with FakePublicIndex(clock=clock) as fake:
        pool, alerts = tokenless_pool(tmp_path, fake, clock)
        pool.look_for_credentials()  # what `serve` does at start
        [condition] = pool.store.conditions()
        assert condition.key == CONDITION_MISSING and "NAMEKEEPER_PUBLIC_TOKEN" in condition.text
        accept(pool, "acme-a", "acme-b")
        drain(pool, clock, until=clock.t + 3600)
        assert not fake.attempts and queue_attempts(pool) == [0, 0]
        assert [c[0] for c in alerts.conditions] == [CONDITION_MISSING]
        assert not [o for o in alerts.outcomes if o.action is Action.FAILED]

        pypirc_with(fake, TOKEN)  # a token given to twine, without a restart
        drain(pool, clock, until=clock.t + 3600)
        assert fake.uploads["acme-a"] == fake.uploads["acme-b"] == 1
        assert pool.store.conditions() == []


def test_a_restart_with_a_token_the_index_takes_resumes_the_waiting_names_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The names waited for the next probe, up to backoff-max (10 min) away; restarted with a
    # good token, nothing was tried and /healthz stayed red until then.
    clock = Clock()
    with FakePublicIndex(clock=clock) as fake:
        pool, _alerts = watched_pool(tmp_path, fake, monkeypatch, clock)
        fake.revoke_tokens()
        names = [f"acme-r-{i}" for i in range(5)]
        accept(pool, *names)
        drain(pool, clock, until=clock.t + 3600)  # the probes are backoff-max apart by now
        assert [c.key for c in pool.store.conditions()] == [CONDITION_REFUSED]
        ready = pool.store.next_ready_at()
        assert ready is not None and ready > clock.t + 60

        fake.add_user("acme-security", TOKEN)  # the operator fixed the token and restarts
        keeper, store = build_keeper(pool.keeper.config, with_notifiers=False, store=pool.store,
                                     for_queue=True)
        keeper.public = SimplePublicIndex(keeper.config.public, retries=0)
        restarted = WorkerPool(keeper, store, keeper.config.queue, threads=1, clock=clock)
        restarted.look_for_credentials()  # what `serve` does at start
        drain(restarted, clock, until=clock.t + 5)
        assert all(fake.uploads[n] == 1 for n in names)
        assert store.conditions() == []


def test_a_dry_run_started_after_no_token_is_not_red_for_it(tmp_path: Path) -> None:
    # Started without a token, then switched to a dry run (which uploads nothing): /healthz
    # and status said "no upload token ... names wait in the queue" for as long as it ran.
    clock = Clock()
    with FakePublicIndex(clock=clock) as fake:
        pool, _alerts = tokenless_pool(tmp_path, fake, clock)
        pool.look_for_credentials()
        assert [c.key for c in pool.store.conditions()] == [CONDITION_MISSING]
        path = tmp_path / "nk.toml"
        path.write_text(path.read_text() + "\n[policy]\ndry-run = true\n")
        keeper, store = build_keeper(cfg.load(path), with_notifiers=False, store=pool.store,
                                     for_queue=True)
        dry = WorkerPool(keeper, store, keeper.config.queue, threads=1, clock=clock)
        dry.look_for_credentials()  # what `serve` does at start
        assert store.conditions() == []
        accept(dry, "acme-a")
        drain(dry, clock, until=clock.t + 600)
        assert not fake.attempts and store.conditions() == []


# -- the service, with its real notification path -------------------------------------------


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with serving_http() as r:
        yield r


def alerts(receiver: HttpReceiver) -> list[str]:
    return [f"{r.json()['title']}\n{r.json()['message']}" for r in receiver.requests]


def test_serve_with_a_refused_token_sends_one_alert_and_resumes_once_it_is_accepted(
        tmp_path: Path, fake_public: FakePublicIndex, receiver: HttpReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)  # not (yet) a token of the index's
    path = tmp_path / "nk.toml"
    path.write_text(fake_public.config_toml(owners=["acme-security"]) + f"""
[store]
path = "{(tmp_path / 's.sqlite3').as_posix()}"
[notify]
urls = ["{receiver.url()}"]
[queue]
max-attempts = 2
backoff-max = 1
confirm-after = "1s"
""")
    service = Service(cfg.load(path))
    names = [f"acme-serve-{i}" for i in range(12)]
    service.start()
    try:
        for name in names:
            service.sink.accept(NameEvent(name=name, display_name=name, source="t", index="x",
                                          key=name))

        def every_name_waits() -> bool:
            items = service.store.queue_items()
            return len(items) == len(names) and all(i["last_error"] for i in items)

        wait_for(every_name_waits, 60, "every name to be tried and to wait")
        wait_for(lambda: alerts(receiver), 30, "the alert about the credentials")
        attempts = sum(fake_public.attempts.values())
        wait_for(lambda: sum(fake_public.attempts.values()) >= attempts + 2, 30,
                 "the credentials to be tried again")
        [alert] = alerts(receiver)  # one, for the service; none per name
        assert "refuses our upload credentials" in alert and "account-wide" in alert
        assert TOKEN not in alert
        ok, detail = service.healthy()
        assert not ok
        assert [r for r in detail["reasons"] if "refuses our upload credentials" in r]
        assert [c.key for c in service.store.conditions()] == [CONDITION_REFUSED]
        items = service.store.queue_items()
        assert {str(i["state"]) for i in items} <= {"pending", "claimed"}  # waiting, in work
        assert [i["attempts"] for i in items] == [0] * len(names)
        assert service.store.failed_names() == (0, [])

        fake_public.add_user("acme-security", TOKEN)  # the token is accepted from now on
        wait_for(lambda: all(fake_public.uploads[n] == 1 for n in names), 60,
                 "every name to be reserved")
        wait_for(lambda: service.store.conditions() == [], 30, "the condition to clear")
        wait_for(lambda: service.healthy()[0], 10, "/healthz to turn green")
        assert len(alerts(receiver)) == 1
    finally:
        service.shutdown(5)
        service.store.close()
