"""The apprise notifier against local targets: JSON over HTTP, e-mail over SMTP,
Slack and Teams intercepted at the requests layer, tag routing, failures."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response

from _notify_helpers import PAGE, simple, taken, with_public
from _notify_servers import serving_http, serving_smtp
from _servers import free_port
from namekeeper import config as nk_config
from namekeeper.config import ConfigError
from namekeeper.model import Action, Severity, Verdict
from namekeeper.notify import apprise as nk_apprise
from namekeeper.notify.apprise import notifiers_from_config_file, notifiers_from_urls
from namekeeper.notify.dispatch import Dispatcher, MemoryDeliveryLog, send_test
from namekeeper.notify.render import render
from namekeeper.store.sqlite import Store

pytestmark = pytest.mark.slow  # real apprise to local HTTP and SMTP receivers

PASSWORD = "pa55-Word-never-shown"
SLACK_TOKEN = "zQ8vR2sLk4NwXy7TpA1bC3dE"
TEAMS_SIGNATURE = "sIgNaTuRe-0123456789abcdef"


def _config(urls: list[str], config_file: Path | None = None) -> nk_config.Config:
    return nk_config.from_dict({"notify": {"urls": urls, **(
        {"config": str(config_file)} if config_file else {})}})


@pytest.fixture
def http_receiver():
    with serving_http() as receiver:
        yield receiver


@pytest.fixture
def smtp_sink():
    with serving_smtp() as sink:
        yield sink


def answer_every_request(monkeypatch: pytest.MonkeyPatch, status: int,
                         body: bytes) -> list[PreparedRequest]:
    """Every HTTP request apprise makes from now on, answered ``status`` without leaving the
    process; the list of the requests sent."""
    sent: list[PreparedRequest] = []

    def send(self, request, **kwargs):
        sent.append(request)
        response = Response()
        response.status_code = status
        response._content = body
        response.request, response.url = request, request.url
        return response

    monkeypatch.setattr(HTTPAdapter, "send", send)
    return sent


@pytest.fixture
def intercepted(monkeypatch):
    """Every HTTP request apprise makes, answered 200 without leaving the process."""
    return answer_every_request(monkeypatch, 200, b"ok")


def test_json_target_receives_the_rendered_alert(http_receiver):
    [notifier] = notifiers_from_urls([f"json://nk:{PASSWORD}@127.0.0.1:{http_receiver.port}/alerts"])
    assert notifier.name == "apprise:json#1"
    assert notifier.deliver(render(taken()), taken())
    [request] = http_receiver.wait_for(1)
    payload = request.json()
    assert request.path == "/alerts"
    assert payload["title"].startswith("namekeeper [CRITICAL]: Acme_Utils is held by someone else")
    assert "Public holder: mallory (organisation: Evil Corp)" in payload["message"]
    assert f"Public project page: {PAGE}" in payload["message"]
    assert PASSWORD not in payload["message"]


def test_email_has_a_text_and_an_html_part(smtp_sink):
    url = (f"mailto://nk:{PASSWORD}@127.0.0.1:{smtp_sink.port}"
           "?to=sec@acme.example&from=namekeeper@acme.example&mode=insecure")
    [notifier] = notifiers_from_urls([url])
    outcome = with_public(taken(), owners=("<b>mallory</b>",))
    assert notifier.deliver(render(outcome), outcome)
    [mail] = smtp_sink.wait_for(1)
    assert mail.recipients == ["sec@acme.example"]
    assert mail.auth is not None and PASSWORD in mail.auth  # it logged in with the URL's credentials
    assert "Acme_Utils is held by someone else" in str(mail.message["Subject"])
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    assert "Public holder: <b>mallory</b>" in text
    assert "&lt;b&gt;mallory&lt;/b&gt;" in html and "<b>mallory</b>" not in html
    assert f'<a href="{PAGE}">' in html
    assert PAGE in text and "What to do now" in text


@pytest.mark.parametrize("url", [
    f"slack://T0001AAAA/B0002BBBB/{SLACK_TOKEN}",
    f"https://hooks.slack.com/services/T0001AAAA/B0002BBBB/{SLACK_TOKEN}",
])
def test_slack_gets_mrkdwn_with_our_link_and_no_mentions(intercepted, url):
    [notifier] = notifiers_from_urls([url])
    assert SLACK_TOKEN not in notifier.name
    outcome = with_public(taken(), owners=("<!channel>",))
    assert notifier.deliver(render(outcome), outcome)
    [request] = intercepted
    assert request.url.endswith(f"/services/T0001AAAA/B0002BBBB/{SLACK_TOKEN}")
    body = json.loads(request.body)
    assert body["mrkdwn"] is True
    [attachment] = body["attachments"]
    assert attachment["title"].startswith("namekeeper [CRITICAL]")
    assert "*Acme\\_Utils is held by someone else on the public index*" in attachment["text"]
    assert f"<{PAGE}|Public project page>" in attachment["text"]
    assert "&lt;!channel&gt;" in attachment["text"] and "<!channel>" not in attachment["text"]


def test_teams_workflow_gets_an_adaptive_card_in_markdown(intercepted):
    url = f"workflows://prod-00.westus.logic.invalid:443/wf0123/{TEAMS_SIGNATURE}/"
    [notifier] = notifiers_from_urls([url])
    assert notifier.name == "apprise:workflow#1"
    outcome = with_public(taken(), owners=("<at>boss</at>",))
    assert notifier.deliver(render(outcome), outcome)
    [request] = intercepted
    body = json.loads(request.body)
    assert body["type"] == "message"
    card = body["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    blocks = {b.get("id"): b for b in card["content"]["body"]}
    assert blocks["title"]["text"].startswith("namekeeper [CRITICAL]")
    assert "**Public holder:**" in blocks["body"]["text"]
    assert f"[Public project page](<{PAGE}>)" in blocks["body"]["text"]
    assert "entities" not in card["content"]["msteams"]  # the owner did not mention anyone


def test_tags_route_alerts_like_apprise_does(http_receiver):
    base = f"127.0.0.1:{http_receiver.port}"
    notifiers = notifiers_from_urls([
        f"json://{base}/untagged",
        f"reserved=json://{base}/reserved",
        f"critical=json://{base}/critical",
        f"protected, rate-limited=json://{base}/quiet",
        f"always=json://{base}/always",
    ])
    dispatcher = Dispatcher(notifiers, MemoryDeliveryLog())

    def paths_for(outcome) -> set[str]:
        before = len(http_receiver.requests)
        sent = dispatcher.dispatch(outcome)
        assert all(sent.values())
        return {r.path.lstrip("/") for r in http_receiver.wait_for(before + len(sent))[before:]}

    assert paths_for(taken(Severity.LOW)) == {"untagged", "always"}
    assert paths_for(taken(Severity.HIGH, name="acme-two")) == {"untagged", "critical", "always"}
    assert paths_for(simple(Verdict.FREE, Action.RESERVED)) == {"reserved", "always"}
    assert paths_for(simple(Verdict.FREE, Action.FAILED, name="x2")) == {"untagged", "always"}
    assert paths_for(simple(Verdict.PROTECTED, Action.PROTECTED, name="x3")) == {"quiet", "always"}
    assert paths_for(simple(Verdict.OURS, Action.ALREADY_OURS, name="x4")) == set()


def test_a_config_file_carries_its_own_tags(tmp_path, http_receiver):
    base = f"127.0.0.1:{http_receiver.port}"
    config_file = tmp_path / "apprise.yml"
    config_file.write_text(f"""
urls:
  - json://{base}/security:
      tag: critical
  - json://{base}/ops:
      tag: failed, rate-limited
  - json://{base}/everything
""")
    notifiers = nk_apprise.namekeeper_notifiers(_config([], config_file))
    assert [n.name for n in notifiers] == ["apprise:config:json#1", "apprise:config:json#2",
                                           "apprise:config:json#3"]
    dispatcher = Dispatcher(notifiers, MemoryDeliveryLog())
    assert set(dispatcher.dispatch(taken(Severity.CRITICAL))) == {"apprise:config:json#1",
                                                                  "apprise:config:json#3"}
    assert set(dispatcher.dispatch(simple(Verdict.FREE, Action.RATE_LIMITED))) == {
        "apprise:config:json#2"}
    paths = sorted(r.path for r in http_receiver.wait_for(3))
    assert paths == ["/everything", "/ops", "/security"]


def test_a_missing_config_file_stops_startup_with_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read apprise config file .*missing.yml"):
        nk_apprise.namekeeper_notifiers(_config([], tmp_path / "missing.yml"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="empty.txt"):
        notifiers_from_config_file(empty)


def test_a_bad_url_is_refused_without_echoing_its_credentials(caplog):
    with pytest.raises(ConfigError, match="urls entry 2") as err:
        notifiers_from_urls(["json://127.0.0.1:9/x", f"nosuchservice://admin:{PASSWORD}@host/"])
    assert PASSWORD not in str(err.value)
    assert PASSWORD not in caplog.text


def test_failing_targets_are_logged_retried_and_never_stop_the_others(caplog):
    with serving_http() as good, serving_http() as broken:
        _failing_targets(good, broken, caplog)


def _failing_targets(good, broken, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    broken.status = 500
    notifiers = notifiers_from_urls([
        f"json://nk:{PASSWORD}@127.0.0.1:{broken.port}/hook",
        f"json://nk:{PASSWORD}@127.0.0.1:{free_port()}/hook",
        f"json://127.0.0.1:{good.port}/hook",
    ])
    now = [1000.0]
    delivery_log = MemoryDeliveryLog()
    dispatcher = Dispatcher(notifiers, delivery_log, clock=lambda: now[0])

    results = dispatcher.dispatch(taken())

    assert results == {"apprise:json#1": False, "apprise:json#2": False, "apprise:json#3": True}
    assert len(good.wait_for(1)) == 1
    assert len(broken.wait_for(1)) == 1
    failures = [r.getMessage() for r in caplog.records if r.name.startswith("namekeeper")
                and r.levelno >= logging.WARNING]
    assert any("apprise:json#1" in m and "500" in m for m in failures)
    assert any("apprise:json#2" in m and "retrying in" in m for m in failures)
    assert PASSWORD not in caplog.text
    assert sorted(r.target for r in delivery_log.retries.values()) == ["apprise:json#1",
                                                                      "apprise:json#2"]

    # Nothing is due yet; later the 500 target has recovered, the refusing one has not.
    assert dispatcher.retry_due(now[0]) == 0
    broken.status = 200
    now[0] += 3600
    assert dispatcher.retry_due(now[0]) == 1
    assert broken.wait_for(2)[-1].json()["title"].startswith("namekeeper [CRITICAL]")
    [still_failing] = delivery_log.retries.values()
    assert still_failing.target == "apprise:json#2" and still_failing.attempts == 2
    assert len(good.requests) == 1  # the healthy target was never sent the alert twice


def test_apprise_debug_logging_never_shows_a_webhook_token(monkeypatch, caplog):
    answer_every_request(monkeypatch, 500, b"boom")
    caplog.set_level(logging.DEBUG)
    [notifier] = notifiers_from_urls([f"slack://T0001AAAA/B0002BBBB/{SLACK_TOKEN}"])
    assert not notifier.deliver(render(taken()), taken())
    assert "Slack POST URL" in caplog.text  # apprise did log the URL it posted to ...
    assert SLACK_TOKEN not in caplog.text  # ... with the token masked


def test_notify_test_reaches_every_target_and_reports_each(http_receiver):
    config = _config([f"reserved=json://127.0.0.1:{http_receiver.port}/ok",
                      f"json://127.0.0.1:{free_port()}/down"])
    notifiers = nk_apprise.namekeeper_notifiers(config)
    results = send_test(config, notifiers)
    assert [(name, ok) for name, ok, _ in results] == [("apprise:json#1", True),
                                                       ("apprise:json#2", False)]
    assert results[1][2]
    [request] = http_receiver.wait_for(1)
    assert "test" in request.json()["title"]


def test_two_processes_retrying_a_slow_target_at_once_send_each_alert_once(tmp_path,
                                                                          http_receiver):
    # A round of slow deliveries outlasts its job's lease and another process's round begins:
    # both read the same due retries (here two processes on one SQLite file).
    db, url = tmp_path / "s.sqlite3", http_receiver.url()
    http_receiver.status = 500
    failing = Dispatcher(notifiers_from_urls([url]), Store(db).delivery_log(),
                         clock=lambda: 1000.0)
    names = ["acme-a", "acme-b", "acme-c"]
    for name in names:
        assert failing.dispatch(simple(Verdict.TAKEN, Action.TAKEN, name=name)) == {
            "apprise:json#1": False}
    http_receiver.status, http_receiver.answer_after = 200, 0.5
    rounds = [Dispatcher(notifiers_from_urls([url]), Store(db).delivery_log()) for _ in range(2)]
    start = threading.Barrier(len(rounds))

    def retry(dispatcher: Dispatcher) -> int:
        start.wait()
        return dispatcher.retry_due()

    with ThreadPoolExecutor(len(rounds)) as pool:
        assert sum(pool.map(retry, rounds)) == 3
    retried = [json.dumps(r.json()) for r in http_receiver.requests[len(names):]]
    assert sorted(n for text in retried for n in names if n in text) == names
