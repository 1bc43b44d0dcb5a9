"""What the public index (or a proxy in front of it) answers is untrusted.

An error body that echoes the upload token never leaks it (redaction happens
before any text is cut short, whatever the offset, split by markup, or as Basic
auth); a 2xx with a garbage body is not believed until a lookup confirms it.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from _doubles import Clock
from _fake_public import FakePublicIndex, FaultPlan
from _notify_helpers import Recorder
from namekeeper import config as cfg
from namekeeper.app import build_keeper
from namekeeper.cli import main
from namekeeper.config import redact
from namekeeper.model import Action, NameEvent
from namekeeper.notify.dispatch import Dispatcher, MemoryDeliveryLog
from namekeeper.reserve.twine import _Answer, _result_for_answer
from namekeeper.store.sqlite import Store
from namekeeper.worker import WorkerPool

#: As long as a real account-wide upload token.
TOKEN = "pypi-" + secrets.token_urlsafe(132)
BASIC = base64.b64encode(f"__token__:{TOKEN}".encode()).decode()


#: Every piece of 20 characters of either: a cut-off token leaks as surely as a whole one.
_PIECES = {form[i:i + 20] for form in (TOKEN, BASIC) for i in range(len(form) - 19)}


def leaked(text: str) -> bool:
    """True when ``text`` holds any 20 characters of the token or of its Basic-auth form."""
    return any(piece in text for piece in _PIECES)


def _response(status: int, reason: str, body: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response._content = body.encode()
    response.encoding = "utf-8"
    return response


@dataclass(frozen=True)
class Rig:
    """One worker on a SQLite store, uploading with ``TOKEN``, its alerts kept by ``recorder``."""

    path: Path  # the config file
    clock: Clock
    store: Store
    recorder: Recorder
    pool: WorkerPool

    @classmethod
    def start(cls, tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
              queue: str, **public: str) -> Rig:
        """``queue``: the [queue] keys; ``public``: overrides of the fake's [public] table."""
        monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
        fake_public.add_user("acme-security", TOKEN)
        path = tmp_path / "nk.toml"
        path.write_text(fake_public.config_toml(owners=["acme-security"], **public)
                        + f'[store]\npath = "s.sqlite3"\n[queue]\n{queue}\n')
        config = cfg.load(path)
        clock = Clock()
        store = Store(config.store.path, clock=clock)
        keeper, _ = build_keeper(config, with_notifiers=False, store=store)
        recorder = Recorder("audit")
        keeper.alerts = Dispatcher([recorder], MemoryDeliveryLog(), secrets=config.secret_values())
        return cls(path, clock, store, recorder,
                   WorkerPool(keeper, store, config.queue, threads=1, clock=clock))


@pytest.mark.parametrize("markup", [False, True])
def test_a_token_at_every_offset_of_an_error_body_is_redacted(markup: bool) -> None:
    secrets_ = (TOKEN, BASIC)
    filler = "x" * 600
    token = f"{TOKEN[:30]}<b>{TOKEN[30:]}</b>" if markup else TOKEN
    for offset in range(0, 520, 1):
        body = f"{filler[:offset]}{token} Authorization: Basic {BASIC} {filler}"
        result = _result_for_answer("acme-a", "acme_a-0.0.0.tar.gz",
                                    _Answer.from_response(_response(400, "Bad Request", body),
                                                          secrets_), secrets_)
        assert not leaked(result.message), offset


def test_the_one_redaction_helper_finds_every_form() -> None:
    for text in (f"a{TOKEN}b", f"Basic {BASIC}", f"{TOKEN[:9]}<i>{TOKEN[9:]}</i>",
                 base64.b64encode(f"someone-else:{TOKEN}".encode()).decode(),
                 TOKEN.replace("-", "&#45;")):
        assert not leaked(redact(text, [TOKEN])), text


@pytest.mark.parametrize("user", ["u", "ab", "abc", "__token__", "deploy-bot"])
@pytest.mark.parametrize("password", ["12345678", "abcdefghi", "abcdefghij", "s3cret-passw0rd"])
def test_basic_auth_credentials_leave_no_character_of_the_password(user: str,
                                                                  password: str) -> None:
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    # In a header's echo: hidden whole, even the group that mixes the user's last bytes
    # with the password's first ones, and even when the password is not one we know.
    for known in ([password], []):
        assert redact(f"proxy saw 'Authorization: Basic {basic}'.", known) == \
            "proxy saw 'Authorization: Basic ***'."
        assert redact(f"authorization: basic {basic}", known) == "authorization: basic ***"
    # Bare base64 of the pair: nothing after the redaction, not even the padded last group.
    assert redact(f"seen {basic}", [password]).endswith("***")


def test_prose_about_basic_auth_is_left_alone() -> None:
    for text in ("Basic authentication failed", "use Basic auth over TLS",
                 "Basic dXNlcg== is only a user name", "Basic Open", "Basic HttpOnly cookies"):
        assert redact(text, ["unrelated-secret"]) == text


def test_a_token_echoed_by_the_index_reaches_no_log_store_status_or_alert(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    rig = Rig.start(tmp_path, fake_public, monkeypatch, "max-attempts = 1")
    store, pool, recorder = rig.store, rig.pool, rig.recorder
    names = []
    caplog.set_level(logging.DEBUG)
    for offset in (0, 55, 200, 239, 240, 241, 400, 3999):
        name = f"acme-echo-{offset}"
        names.append(name)
        fake_public.faults = FaultPlan(rate=1.0, kinds=("echo",), paths=("/legacy/",),
                                       echo_offset=offset)
        store.accept(NameEvent(name=name, display_name=name, source="t", index="x", key=name))
        assert pool.run_once()
    fake_public.faults = None
    assert len(recorder.messages) == len(names)  # each failure was alerted...
    for message in recorder.messages:  # ...without the token
        assert not leaked(message.title + message.text + message.markdown + message.html)
    # What reaches the log's handlers: pytest also hooks the ``twine`` logger itself, whose
    # records namekeeper routes (redacted) through its own logger and never propagates.
    shown = [r.getMessage() for r in caplog.records if not r.name.startswith("twine")]
    assert shown and not any(leaked(line) for line in shown)
    for name in names:
        record = store.get(name)
        assert record.action == Action.FAILED.value
        assert not leaked(record.message or "")
    assert not any(leaked(item["last_error"] or "") for item in store.queue_items())
    main(["--config", str(rig.path), "--format", "json", "status"])
    out = capsys.readouterr().out
    assert not leaked(out) and all(n in out for n in names)


def test_a_garbage_2xx_is_not_believed_until_a_lookup_confirms_it(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig.start(tmp_path, fake_public, monkeypatch, 'confirm-after = "1s"', cdn_grace="1ms")
    store, pool, recorder, clock = rig.store, rig.pool, rig.recorder, rig.clock
    fake_public.faults = FaultPlan(rate=1.0, kinds=("garbage-2xx",), paths=("/legacy/",))
    store.accept(NameEvent(name="acme-garbage", display_name="acme-garbage", source="t",
                           index="x", key="g"))
    assert pool.run_once()
    fake_public.faults = None
    assert store.get("acme-garbage").reserved  # what the 2xx claimed...
    assert not pool.run_once()  # ...until the confirmation is due
    clock.t += 2
    assert pool.run_once()
    record = store.get("acme-garbage")
    assert not record.reserved and record.verdict == "free" and record.severity == "high"
    assert fake_public.project("acme-garbage") is None
    alerted = [json.dumps(m.text) for m in recorder.messages if "failed" in m.tags]
    assert alerted and "acme-garbage" in alerted[-1]


def test_unprintable_owner_names_from_the_index_are_stored_shown_and_alerted_cleanly(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A lone surrogate cannot be written as UTF-8 (SQLite refused the row), a NUL cannot be
    # PostgreSQL text, an escape sequence would paint the terminal: none is a user's name.
    rig = Rig.start(tmp_path, fake_public, monkeypatch, "max-attempts = 1")
    fake_public.add_project("acme-hostile", owners=["mallory\ud800", "eve\x00x", "\x1b[31mred"],
                            organization="org\udfff")
    rig.store.accept(NameEvent(name="acme-hostile", display_name="acme-hostile", source="t",
                               index="x", key="k"))
    assert rig.pool.run_once()
    record = rig.store.get("acme-hostile")
    assert record is not None and record.verdict == "taken" and record.action == "taken"
    assert record.owners == ("mallory", "evex", "[31mred")
    [message] = rig.recorder.messages
    assert "mallory" in message.text and "\x1b" not in message.text
    main(["--config", str(rig.path), "--format", "json", "status"])
    assert "mallory" in capsys.readouterr().out
