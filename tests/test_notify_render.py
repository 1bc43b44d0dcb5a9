"""What an alert says, which kinds it carries, and that outside values stay text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from apprise.plugins.slack import NotifySlack
from apprise.plugins.workflows import WORKFLOWS_MENTION_RE

from _notify_helpers import FIRST_RELEASE, PAGE, simple, taken, with_public
from namekeeper.model import Action, Severity, Verdict
from namekeeper.notify.render import fingerprint, render, tags_for


@pytest.mark.parametrize(("outcome", "expected"), [
    (taken(Severity.LOW), {"taken"}),
    (taken(Severity.MEDIUM), {"taken"}),
    (taken(Severity.HIGH), {"taken", "critical"}),
    (taken(Severity.CRITICAL), {"taken", "critical"}),
    (simple(Verdict.FREE, Action.RESERVED), {"reserved"}),
    (simple(Verdict.PROTECTED, Action.PROTECTED), {"protected"}),
    (simple(Verdict.FREE, Action.FAILED), {"failed"}),
    (simple(Verdict.FREE, Action.RATE_LIMITED), {"rate-limited"}),
    (simple(Verdict.OURS, Action.ALREADY_OURS), set()),
    (simple(Verdict.FREE, Action.DRY_RUN), set()),
    (simple(Verdict.EXCLUDED, Action.SKIPPED), set()),
    (simple(Verdict.FREE, Action.DEFERRED), set()),
])
def test_each_outcome_carries_the_tags_of_its_kind(outcome, expected):
    assert tags_for(outcome) == expected
    assert render(outcome).tags == expected


def test_a_taken_alert_says_what_where_who_when_and_what_to_do():
    message = render(taken())
    for body in (message.text, message.markdown, message.html):
        assert "Acme" in body and "acme-utils" in body
        assert "pypi-local" in body and "artifactory" in body  # where we saw it privately
        assert "2026-03-01 09:30 UTC" in body  # when
        assert "mallory" in body and "Evil Corp" in body  # who holds it publicly
        assert "99.0.0" in body and "0.0.1" in body
        assert FIRST_RELEASE.strftime("%Y-%m-%d %H:%M") in body
        assert "CRITICAL" in body and "appeared after we first saw the name" in body
        assert "dependency-confusion" in body and "private index only" in body  # what to do
        assert PAGE in body
    assert "CRITICAL" in message.title and "Acme_Utils" in message.title
    assert f"[Public project page](<{PAGE}>)" in message.markdown
    assert f'<a href="{PAGE}">' in message.html


def test_the_project_url_argument_is_used_when_the_lookup_gave_none():
    outcome = with_public(taken(), url=None)
    assert "https://index.invalid/project/acme-utils/" in render(
        outcome, "https://index.invalid/project/acme-utils/").text
    assert "javascript" not in render(outcome, "javascript:alert(1)").html


def test_ownership_unknown_is_said_not_guessed():
    text = render(with_public(taken(), ownership_known=False, owners=())).text
    assert "Public holder: unknown" in text


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k == "href"]

    def handle_data(self, data):
        self.text += data


HOSTILE = ("<script>alert(1)</script>", "<!channel>", "[win](https://evil.invalid)",
           "<at>boss</at>", "**bold**")


def test_html_escapes_every_outside_value():
    outcome = with_public(taken(display_name='Acme"<img src=x>'), owners=HOSTILE,
                          organization="<b>Org</b> & co")
    parsed = _Collect()
    parsed.feed(render(outcome).html)
    assert set(parsed.tags) <= {"p", "strong", "ul", "li", "br", "a"}
    assert parsed.hrefs == [PAGE]
    for value in (*HOSTILE, "<b>Org</b> & co", 'Acme"<img src=x>'):
        assert value in parsed.text  # shown literally


def test_markdown_cannot_be_turned_into_links_or_mentions():
    outcome = with_public(taken(), owners=HOSTILE, organization="[x](https://evil.invalid)")
    markdown = render(outcome).markdown
    # Slack: apprise turns our Markdown into mrkdwn; only our own link may survive.
    slack = NotifySlack._commonmark_to_slack(markdown)
    assert re.findall(r"<([^>]*)>", slack) == [f"{PAGE}|Public project page"]
    assert "<!channel>" not in slack and "*bold*" not in slack
    # Teams: no <at> mention entity, and no Markdown link but ours.
    assert not WORKFLOWS_MENTION_RE.search(markdown)
    assert re.findall(r"(?<!\\)\[[^\]]*\]\(", markdown) == ["[Public project page]("]


def test_a_multi_line_message_cannot_open_markdown_blocks():
    outcome = taken(message="upload refused\n# Heading\n- item\n1. one\n    code")
    markdown = render(outcome).markdown
    assert not re.search(r"^(#|- item|1\.|\s{4})", markdown.split("What happened")[1],
                         re.MULTILINE)


def test_secrets_are_masked_in_every_format_even_when_escaping_would_change_them():
    token = "pypi-Ag_secret*token<>value"
    outcome = taken(message=f"upload failed: 403 for token {token}", reason=f"x {token}")
    message = render(outcome, secrets=[token])
    for body in (message.title, message.text, message.markdown, message.html):
        assert "secret" not in body
    assert "***" in message.text


def test_fingerprint_ignores_wording_and_time_but_not_state():
    base = taken()
    assert fingerprint(base) == fingerprint(taken(message="other words", at=FIRST_RELEASE))
    assert fingerprint(base) == fingerprint(with_public(base, versions=("99.0.0", "0.0.1")))
    assert fingerprint(base) != fingerprint(with_public(base, versions=("0.0.1", "99.0.0", "100")))
    assert fingerprint(base) != fingerprint(with_public(base, owners=("mallory", "eve")))
    assert fingerprint(base) != fingerprint(with_public(base, organization=None))
    failed = simple(Verdict.FREE, Action.FAILED)
    assert fingerprint(failed) != fingerprint(simple(Verdict.FREE, Action.RESERVED))
    assert fingerprint(failed) != fingerprint(simple(Verdict.FREE, Action.FAILED, name="other"))


def test_a_high_finding_is_titled_and_advised_as_high_not_critical():
    message = render(taken(Severity.HIGH, reason="Held by mallory; we cannot tell whether it "
                                                 "outranks our private package."))
    assert message.title.startswith("namekeeper [HIGH]:") and "CRITICAL" not in message.title
    for body in (message.text, message.markdown, message.html):
        assert "HIGH" in body and "CRITICAL" not in body
        assert "appeared after the name was in private use" not in body  # critical's advice
        assert "compare its versions" in body
    assert "critical" in message.tags  # still routed to the urgent targets


def test_title_severity_and_advice_agree_for_every_severity():
    for severity in Severity:
        message = render(taken(severity))
        critical_advice = "dependency-confusion attack" in message.text
        assert critical_advice == (severity is Severity.CRITICAL)
        if severity.rank >= Severity.HIGH.rank:
            assert message.title.startswith(f"namekeeper [{severity.value.upper()}]")
        else:
            assert "[" not in message.title.split(":")[0]


def test_a_condition_alert_is_titled_in_words_not_by_its_internal_key():
    from namekeeper.notify.render import render_condition

    text = ("the private index https://nexus.example.com/simple/ could not be read for 10 s "
            "(GET https://nexus.example.com/simple/ answered 401 'Unauthorized')")
    message = render_condition("source:poll:https://nexus.example.com/simple/", text,
                               frozenset({"failed"}))
    assert message.title.startswith("namekeeper needs attention: the private index "
                                    "https://nexus.example.com/simple/ could not be read")
    assert "source:poll" not in message.title + message.text
    assert "not seen, so not protected" in message.text  # not "kept in the queue"
    paused = render_condition("budget-paused", "the public index paused new projects for 1 h",
                              frozenset({"paused"}))
    assert "budget-paused" not in paused.title and "kept in the queue" in paused.text
