"""Dispatch: once per state, retries with backoff, broken notifiers contained,
secrets kept out, and a third-party notifier found through its entry point."""

from __future__ import annotations

import json
import logging

import pytest

from _notify_helpers import Recorder, simple, taken, with_public
from namekeeper import config as nk_config
from namekeeper import plugins
from namekeeper.model import Action, Outcome, Severity, Verdict, outcome_from_json, outcome_to_json
from namekeeper.notify.dispatch import (
    Dispatcher,
    MemoryDeliveryLog,
)
from namekeeper.notify.interface import Message, Notifier
from namekeeper.store.sqlite import Store

TOKEN = "pypi-AgEIcHlwaS5vcmcCJGNhZmUtc2VjcmV0LXRva2Vu"


def test_the_same_alert_is_sent_once_and_a_change_is_sent_again():
    recorder = Recorder("r")
    dispatcher = Dispatcher([recorder], MemoryDeliveryLog())
    assert dispatcher.dispatch(taken()) == {"r": True}
    assert dispatcher.dispatch(taken(message="checked again, same state")) == {}
    assert dispatcher.dispatch(with_public(taken(), versions=("0.0.1", "99.0.0", "99.0.1"))) == {
        "r": True}  # a new public version
    assert dispatcher.dispatch(with_public(taken(), versions=("0.0.1", "99.0.0", "99.0.1"),
                                           owners=("mallory", "eve"))) == {"r": True}  # new owner
    assert dispatcher.dispatch(simple(Verdict.FREE, Action.FAILED, name="beta")) == {"r": True}
    assert dispatcher.dispatch(simple(Verdict.FREE, Action.FAILED, name="beta")) == {}
    assert dispatcher.dispatch(simple(Verdict.FREE, Action.RESERVED, name="beta")) == {"r": True}
    assert len(recorder.messages) == 5
    assert "reserved" in recorder.messages[-1].tags


def test_nothing_is_sent_for_outcomes_nobody_needs_to_hear_about():
    recorder = Recorder("r")
    dispatcher = Dispatcher([recorder], MemoryDeliveryLog())
    for outcome in (simple(Verdict.OURS, Action.ALREADY_OURS), simple(Verdict.FREE, Action.DRY_RUN),
                    simple(Verdict.EXCLUDED, Action.SKIPPED)):
        assert dispatcher.dispatch(outcome) == {}
    assert recorder.messages == []


def test_dedup_and_pending_retries_survive_a_restart(tmp_path):
    """The real delivery log (the store's): what was sent and what is owed outlive a process."""
    db = tmp_path / "deliveries.sqlite3"
    up, down = Recorder("up"), Recorder("down", ok=False)
    first = Store(db)
    assert Dispatcher([up, down], first.delivery_log(), clock=lambda: 100.0).dispatch(taken()) == {
        "up": True, "down": False}
    first.close()

    # A new process: fresh notifier objects, the same database.
    up2, down2 = Recorder("up"), Recorder("down")
    second = Store(db)
    restarted = Dispatcher([up2, down2], second.delivery_log(), clock=lambda: 100_000.0)
    assert restarted.dispatch(taken()) == {}  # delivered before, or owned by the retry queue
    assert restarted.retry_due() == 1
    assert up2.messages == [] and len(down2.messages) == 1
    assert "acme-utils" in down2.messages[0].text
    assert restarted.dispatch(taken()) == {}
    second.close()


class Exploding(Notifier):
    """A third-party notifier with a bug: its delivery raises, with a secret in the text."""

    name = "exploding"

    def deliver(self, message: Message, outcome: Outcome) -> bool:
        raise RuntimeError(f"cannot reach the pager with token {TOKEN}")


class Plain(Notifier):
    """Only the one method a notifier must have: every alert, no routing."""

    name = "plain"

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def deliver(self, message: Message, outcome: Outcome) -> bool:
        self.outcomes.append(outcome)
        return True


def test_a_raising_notifier_is_a_failure_never_an_exception(caplog):
    plain, after = Plain(), Recorder("after")
    delivery_log = MemoryDeliveryLog()
    dispatcher = Dispatcher([Exploding(), plain, after], delivery_log,
                            secrets=[TOKEN])
    assert dispatcher.dispatch(taken()) == {"exploding": False, "plain": True, "after": True}
    assert plain.outcomes == [taken()]  # no wants(): receives everything worth telling
    [failure] = [a for a in delivery_log.attempts if not a[3]]
    assert failure[0] == "exploding" and "RuntimeError: cannot reach the pager" in failure[4]
    assert TOKEN not in str(delivery_log.attempts) and TOKEN not in caplog.text


def test_retries_back_off_and_give_up_after_max_attempts(caplog):
    flaky = Recorder("flaky", ok=False)
    delivery_log = MemoryDeliveryLog()
    now = [0.0]
    dispatcher = Dispatcher([flaky], delivery_log, max_attempts=3, backoff_first=10,
                            clock=lambda: now[0])
    dispatcher.dispatch(taken())
    [retry] = delivery_log.retries.values()
    assert (retry.attempts, retry.next_at) == (1, 10.0)
    assert dispatcher.retry_due(9.0) == 0 and len(flaky.messages) == 1  # not due yet
    now[0] = 10.0
    assert dispatcher.retry_due(10.0) == 0 and len(flaky.messages) == 2
    [retry] = delivery_log.retries.values()
    assert (retry.attempts, retry.next_at) == (2, 30.0)  # the delay doubled
    now[0] = 30.0
    with caplog.at_level(logging.ERROR):
        dispatcher.retry_due(30.0)
    assert len(flaky.messages) == 3 and delivery_log.retries == {}
    assert "giving up" in caplog.text
    assert dispatcher.retry_due(10_000.0) == 0 and len(flaky.messages) == 3


def test_a_newer_alert_replaces_the_retry_of_an_older_one():
    target = Recorder("t", ok=False)
    delivery_log = MemoryDeliveryLog()
    dispatcher = Dispatcher([target], delivery_log, clock=lambda: 0.0)
    dispatcher.dispatch(simple(Verdict.FREE, Action.FAILED))
    target.ok = True
    assert dispatcher.dispatch(simple(Verdict.FREE, Action.RESERVED)) == {"t": True}
    assert delivery_log.retries == {}  # the stale "failed" alert is not sent late
    assert dispatcher.retry_due(1e9) == 0


def test_the_public_token_never_appears_in_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv(nk_config.ENV_PUBLIC_TOKEN, TOKEN)
    config = nk_config.load(_write(tmp_path, "[public]\norganization = \"acme\"\n"))
    assert config.public.token is not None
    recorder = Recorder("r")
    dispatcher = Dispatcher.from_config(config, [recorder], MemoryDeliveryLog())
    quoting = simple(Verdict.FREE, Action.FAILED,
                     message=f"upload refused: 403 Invalid API Token: {TOKEN} (user __token__)")
    dispatcher.dispatch(quoting)
    dispatcher.dispatch(taken(reason=f"lookup with {TOKEN}"))
    assert len(recorder.messages) == 2
    for message in recorder.messages:
        for body in (message.title, message.text, message.markdown, message.html):
            assert TOKEN not in body
    assert "upload refused: 403 Invalid API Token: ***" in recorder.messages[0].text


def test_the_project_page_comes_from_the_public_web_root():
    recorder = Recorder("r")
    outcome = with_public(taken(), url=None)
    Dispatcher([recorder], MemoryDeliveryLog(),
               web_url="https://public.invalid/").dispatch(outcome)
    assert "https://public.invalid/project/acme-utils/" in recorder.messages[0].text


def test_outcomes_round_trip_through_json():
    for outcome in (taken(), with_public(taken(), first_release=None, url=None),
                    simple(Verdict.FREE, Action.RATE_LIMITED, Severity.LOW)):
        text = outcome_to_json(outcome)
        assert json.loads(text)["name"] == outcome.name
        assert outcome_from_json(text) == outcome
    with pytest.raises(ValueError, match="not a stored outcome"):
        outcome_from_json('{"name": "x"}')
    with pytest.raises(ValueError):
        outcome_from_json("not json")


def test_two_notifiers_with_one_name_are_refused():
    with pytest.raises(ValueError, match="share the name"):
        Dispatcher([Recorder("a"), Recorder("a")], MemoryDeliveryLog())


def _write(tmp_path, text: str):
    path = tmp_path / "namekeeper.toml"
    path.write_text(text)
    return path


def test_an_installed_third_party_notifier_is_discovered_and_used(monkeypatch, tmp_path):
    out = tmp_path / "alerts.jsonl"
    monkeypatch.delenv(plugins.ENV_DISABLE_PLUGINS, raising=False)
    pm, report = plugins.get_plugin_manager()
    assert "example" in report.loaded, report.broken
    config = nk_config.from_dict({"plugins": {"example": {"file": str(out)}}})
    notifiers = [n for group in pm.hook.namekeeper_notifiers(config=config) for n in group]
    assert [n.name for n in notifiers] == ["example:jsonl"]  # no apprise targets configured

    Dispatcher(notifiers, MemoryDeliveryLog()).dispatch(taken())
    [line] = out.read_text().splitlines()
    record = json.loads(line)
    assert record["name"] == "acme-utils" and record["tags"] == ["critical", "taken"]
    assert record["title"].startswith("namekeeper [CRITICAL]")


def test_disabling_plugins_leaves_the_third_party_notifier_out(monkeypatch):
    monkeypatch.setenv(plugins.ENV_DISABLE_PLUGINS, "1")
    pm, report = plugins.get_plugin_manager()
    assert "example" not in report.loaded and not pm.has_plugin("example")
    assert "apprise" in report.loaded


def test_a_stale_failed_alert_is_dropped_for_a_target_that_does_not_want_the_new_one():
    # This target hears only about failures: the "reserved" alert is not for it, but the
    # failure it could not receive is no longer true and must not arrive late.
    failures_only = Recorder("failures", ok=False, tags=frozenset({"failed"}))
    delivery_log = MemoryDeliveryLog()
    dispatcher = Dispatcher([failures_only], delivery_log, clock=lambda: 0.0)
    dispatcher.dispatch(simple(Verdict.FREE, Action.FAILED))
    assert delivery_log.retries
    failures_only.ok = True
    assert dispatcher.dispatch(simple(Verdict.OURS, Action.RESERVED)) == {}
    assert dispatcher.retry_due(1e9) == 0 and len(failures_only.messages) == 1


def test_a_retry_whose_state_is_no_longer_current_in_the_store_is_dropped(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    target = Recorder("t", ok=False)
    now = [0.0]
    dispatcher = Dispatcher([target], store.delivery_log(), clock=lambda: now[0])
    failed = simple(Verdict.FREE, Action.FAILED)
    store.record_outcome(failed)
    dispatcher.dispatch(failed)
    # Another process (a CLI `reserve` without notifiers) reserved the name meanwhile.
    store.record_outcome(simple(Verdict.OURS, Action.RESERVED), reserved=True)
    target.ok = True
    now[0] = 1e9
    assert dispatcher.retry_due(1e9) == 0
    assert len(target.messages) == 1  # only the first, failed attempt
    assert store.delivery_log().pending_retries(1e9) == []


def test_a_condition_alert_that_failed_is_retried_while_the_condition_lasts(tmp_path):
    # The chat target was down when the budget paused: the alert must still arrive.
    store, now = Store(tmp_path / "s.sqlite3"), [1000.0]
    pager = Recorder("pager", ok=False)
    dispatcher = Dispatcher([pager], store.delivery_log(), clock=lambda: now[0])
    assert store.raise_condition("budget-paused", "no uploads until 12:00 UTC")
    [condition] = store.conditions()
    tags = frozenset({"paused"})
    assert dispatcher.dispatch_condition(condition.key, condition.text, tags,
                                         since=condition.since) == {"pager": False}
    store.raise_condition("budget-paused", "no uploads until 13:00 UTC")  # paused for longer
    pager.ok = True
    now[0] += 29
    assert dispatcher.retry_due() == 0  # the first retry waits 30 s
    now[0] += 2
    assert dispatcher.retry_due() == 1
    assert len(pager.messages) == 2 and "13:00 UTC" in pager.messages[1].text  # its words now
    assert pager.messages[1].tags == tags
    now[0] += 100_000
    assert dispatcher.retry_due() == 0 and len(pager.messages) == 2  # delivered: done
    assert dispatcher.dispatch_condition(condition.key, condition.text, tags,
                                         since=condition.since) == {}  # and never sent twice


def test_the_retry_of_a_condition_that_is_over_is_dropped_and_a_new_one_is_sent(tmp_path):
    store, now = Store(tmp_path / "s.sqlite3"), [1000.0]
    pager = Recorder("pager", ok=False)
    dispatcher = Dispatcher([pager], store.delivery_log(), clock=lambda: now[0])
    store.raise_condition("public-index-unreachable", "unreachable for 300 s")
    [first] = store.conditions()
    dispatcher.dispatch_condition(first.key, first.text, frozenset({"failed"}), since=first.since)
    assert store.clear_condition("public-index-unreachable")
    pager.ok, now[0] = True, now[0] + 31
    assert dispatcher.retry_due() == 0 and len(pager.messages) == 1  # over: nobody is woken
    assert store.delivery_log().pending_retries(now[0]) == []
    store.raise_condition("public-index-unreachable", "unreachable again")  # a new outage
    [second] = store.conditions()
    assert dispatcher.dispatch_condition(second.key, second.text, frozenset({"failed"}),
                                         since=second.since) == {"pager": True}
    assert "unreachable again" in pager.messages[-1].text
