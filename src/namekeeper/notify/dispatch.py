"""Send each alert to every notifier that wants it, once, and retry what failed.

The dispatcher renders an outcome once, asks each notifier whether the
alert's tags are for it, skips targets that already received this exact
alert (same name, same state: see `render.fingerprint`), and records every
attempt in a `DeliveryLog`.  A failed or raising notifier is scheduled for a
retry with exponential backoff; it never stops the other notifiers, and
nothing it does escapes as an exception.

The `DeliveryLog` contract (`store.interface`) is small and stores only strings and
numbers, so every store implements it; outcomes travel as JSON
(`model.outcome_to_json` / `model.outcome_from_json`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..model import Action, Outcome, Severity, Verdict, outcome_to_json
from ..store.interface import Condition, DeliveryLog, Retry
from .interface import TAG_TEST, Message, Notifier
from .render import fingerprint, redact_text, render, render_condition

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_BACKOFF_FIRST = 30.0  # seconds before the first retry; doubles each time
DEFAULT_BACKOFF_MAX = 3600.0
#: How long a retry claimed for sending stays with its sender (`DeliveryLog.claim_retry`):
#: well past the longest delivery (apprise gives up after 30 s), short enough that the alert
#: of a sender killed mid-send is not late by much.
RETRY_CLAIM = 300.0

#: The delivery log's name for the alert about a service-wide condition.
CONDITION_PREFIX = "condition:"


# ---------------------------------------------------------------------------
# The delivery record


class MemoryDeliveryLog(DeliveryLog):
    """A `DeliveryLog` in a few dicts: for tests and one-shot CLI runs."""

    def __init__(self) -> None:
        self.delivered: dict[tuple[str, str], str] = {}
        self.attempts: list[tuple[str, str, str, bool, str | None]] = []
        self.retries: dict[tuple[str, str], Retry] = {}

    def was_delivered(self, target: str, name: str, fingerprint: str) -> bool:
        return self.delivered.get((target, name)) == fingerprint

    def record_delivery(self, target: str, name: str, fingerprint: str, ok: bool,
                        error: str | None) -> None:
        self.attempts.append((target, name, fingerprint, ok, error))
        if ok:
            self.delivered[(target, name)] = fingerprint

    def schedule_retry(self, retry: Retry) -> None:
        pending = self.retries.get((retry.target, retry.name))
        if retry.attempts == 1 or pending is None or pending.fingerprint == retry.fingerprint:
            self.retries[(retry.target, retry.name)] = retry

    def retry_for(self, target: str, name: str) -> Retry | None:
        return self.retries.get((target, name))

    def clear_retry(self, target: str, name: str, fingerprint: str | None = None) -> None:
        pending = self.retries.get((target, name))
        if pending is not None and fingerprint in (None, pending.fingerprint):
            del self.retries[(target, name)]

    def pending_retries(self, now: float) -> list[Retry]:
        return sorted((r for r in self.retries.values() if r.next_at <= now),
                      key=lambda r: r.next_at)

    def claim_retry(self, retry: Retry, until: float) -> bool:
        if self.retries.get((retry.target, retry.name)) != retry:
            return False
        self.retries[(retry.target, retry.name)] = replace(retry, next_at=until)
        return True

    def current_state(self, name: str) -> tuple[Verdict, Action] | None:
        return None  # no store behind it: every retry is still current

    def active_condition(self, key: str) -> Condition | None:
        return None  # no store behind it: no condition outlasts the call that raised it


# ---------------------------------------------------------------------------
# The dispatcher


def project_page(web_url: str | None, name: str) -> str | None:
    """The public index's human page for ``name`` (``<root>/project/<name>/``)."""
    if not web_url:
        return None
    return web_url.rstrip("/") + "/project/" + quote(name, safe="") + "/"


def condition_fingerprint(key: str, since: float) -> str:
    """One alert per raising of a condition: raised again after it cleared, it is new."""
    return f"{key}@{since!r}"


def condition_outcome(key: str, message: Message) -> Outcome:
    """What a notifier is handed beside the message about a condition (no name is at stake)."""
    return Outcome(name=CONDITION_PREFIX + key, display_name=key, verdict=Verdict.EXCLUDED,
                   action=Action.DEFERRED, severity=Severity.HIGH, reason=message.text,
                   message=message.text)


class Dispatcher:
    """Delivers alerts to notifiers, once per state, with retries for failures."""

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        delivery_log: DeliveryLog,
        *,
        web_url: str | None = None,
        secrets: Iterable[str] = (),
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_first: float = DEFAULT_BACKOFF_FIRST,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        clock: Callable[[], float] = time.time,
        retries_here: bool = True,
    ) -> None:
        """``retries_here``: this process runs `retry_due` (a service's); a command's
        failed deliveries wait for a service on the same store."""
        names = [n.name for n in notifiers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two notifiers share the name(s) {', '.join(duplicates)}; "
                             "deliveries are recorded per name")
        self.notifiers = list(notifiers)
        self.log = delivery_log
        self.web_url = web_url
        self.secrets = tuple(secrets)
        self.max_attempts = max_attempts
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.clock = clock
        self.retries_here = retries_here

    @classmethod
    def from_config(cls, config: Config, notifiers: Sequence[Notifier],
                    delivery_log: DeliveryLog, **kwargs: Any) -> Dispatcher:
        kwargs.setdefault("backoff_first", config.notify.retry_first)
        return cls(notifiers, delivery_log, web_url=config.public.web_url,
                   secrets=config.secret_values(), max_attempts=config.queue.max_attempts,
                   **kwargs)

    def render(self, outcome: Outcome) -> Message:
        return render(outcome, project_page(self.web_url, outcome.name), self.secrets)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts: 30 s, 1 min, 2 min, ... capped."""
        return float(min(self.backoff_max, self.backoff_first * 2 ** max(0, attempts - 1)))

    def dispatch(self, outcome: Outcome) -> dict[str, bool]:
        """Deliver ``outcome`` to each notifier that wants it and has not had it; name → ok."""
        message = self.render(outcome)
        fp = fingerprint(outcome)
        self._drop_stale_retries(outcome.name, fp, message.tags)
        if not message.tags:
            return {}
        payload = outcome_to_json(outcome)
        results: dict[str, bool] = {}
        for notifier in self._not_yet_sent(message.tags, outcome.name, fp):
            pending = self.log.retry_for(notifier.name, outcome.name)
            if pending is not None and pending.fingerprint == fp:
                continue  # the retry queue already owns this alert
            results[notifier.name] = self._attempt(notifier, message, outcome, fp, payload, 1)
        return results

    def dispatch_condition(self, key: str, text: str, tags: frozenset[str], *,
                           since: float) -> dict[str, bool]:
        """Deliver a service-wide condition to each notifier that wants ``tags``; name → ok.

        Raised once by the store (`Store.raise_condition`, at ``since``), so it is sent
        once; a failed delivery is retried with backoff while the condition lasts.
        """
        message = render_condition(key, text, tags, self.secrets)
        about = condition_outcome(key, message)
        fp, payload = condition_fingerprint(key, since), json.dumps({"tags": sorted(tags)})
        return {notifier.name: self._attempt(notifier, message, about, fp, payload, 1)
                for notifier in self._not_yet_sent(tags, about.name, fp)}

    def _retry_condition(self, notifier: Notifier, retry: Retry) -> bool:
        """Send the alert about a condition again, in its current words, unless it is over."""
        key = retry.name.removeprefix(CONDITION_PREFIX)
        condition = self.log.active_condition(key)
        if condition is None or condition_fingerprint(key, condition.since) != retry.fingerprint:
            log.info("dropping the retry of the alert about the condition %s to %r: it is over",
                     key, retry.target)
            self.log.clear_retry(retry.target, retry.name, retry.fingerprint)
            return False
        tags = frozenset(json.loads(retry.payload)["tags"])
        message = render_condition(key, condition.text, tags, self.secrets)
        return self._attempt(notifier, message, condition_outcome(key, message),
                             retry.fingerprint, retry.payload, retry.attempts + 1)

    def _drop_stale_retries(self, name: str, fp: str, tags: frozenset[str]) -> None:
        """A newer state of ``name`` makes every pending alert about an older one stale.

        A target that wants the new alert gets it (and its retry replaced) in `dispatch`;
        one that does not must not receive the old one later either.
        """
        for notifier in self.notifiers:
            pending = self.log.retry_for(notifier.name, name)
            if (pending is not None and pending.fingerprint != fp
                    and not (tags and self._wants(notifier, tags))):
                log.info("dropping the pending alert about %s to %r: its state changed",
                         name, notifier.name)
                self.log.clear_retry(notifier.name, name, pending.fingerprint)

    def _is_stale(self, outcome: Outcome) -> bool:
        """True when the store's current state of the name is not the one this alert is about."""
        current = self.log.current_state(outcome.name)
        return current is not None and current != (outcome.verdict, outcome.action)

    def dispatch_rendered(self, message: Message, about: Outcome, fp: str) -> dict[str, bool]:
        """Deliver an alert rendered elsewhere (a look-alike: `notify.render_lookalike`) to
        each notifier that wants it and has not had it in this state; name → ok.

        A failure is recorded, not queued for retry here: the caller sends the alert
        again later (`watch` on its next scan), and targets that have it are skipped.
        """
        results: dict[str, bool] = {}
        for notifier in self._not_yet_sent(message.tags, about.name, fp):
            error = self.send_once(notifier, message, about)
            self.log.record_delivery(notifier.name, about.name, fp, error is None, error)
            results[notifier.name] = error is None
        return results

    def retry_due(self, now: float | None = None) -> int:
        """Send every retry that is due; return how many were delivered this time."""
        now = self.clock() if now is None else now
        by_name = {n.name: n for n in self.notifiers}
        delivered = 0
        for retry in self.log.pending_retries(now):
            # The list is as it was when the round began: another replica's round may have
            # taken a retry since (a round of slow targets outlasts the job's lease).
            if not self.log.claim_retry(retry, self.clock() + RETRY_CLAIM):
                continue
            # Dropped, it ends only its own alert: a newer one may have been recorded since
            # the claim (by another replica, as the name changed), and stays pending.
            notifier = by_name.get(retry.target)
            if notifier is None:
                log.warning("dropping retry for %s: notifier %r is no longer configured",
                            retry.name, retry.target)
                self.log.clear_retry(retry.target, retry.name, retry.fingerprint)
                continue
            try:
                if retry.name.startswith(CONDITION_PREFIX):
                    delivered += self._retry_condition(notifier, retry)
                    continue
                outcome = retry.outcome
            except (ValueError, KeyError, TypeError) as exc:
                log.error("dropping unreadable retry for %s to %r: %s",
                          retry.name, retry.target, exc)
                self.log.clear_retry(retry.target, retry.name, retry.fingerprint)
                continue
            if self._is_stale(outcome):
                log.info("dropping the retry of the %s alert about %s to %r: the name is %s now",
                         outcome.action.value, retry.name, retry.target,
                         "/".join(self.log.current_state(outcome.name) or ()))
                self.log.clear_retry(retry.target, retry.name, retry.fingerprint)
                continue
            if self._attempt(notifier, self.render(outcome), outcome, retry.fingerprint,
                             retry.payload, retry.attempts + 1):
                delivered += 1
        return delivered

    def _not_yet_sent(self, tags: frozenset[str], name: str, fp: str) -> Iterator[Notifier]:
        """The notifiers that want ``tags`` and have not had the alert about ``name`` in the
        state ``fp`` delivered."""
        for notifier in self.notifiers:
            if self._wants(notifier, tags) and not self.log.was_delivered(notifier.name, name, fp):
                yield notifier

    @staticmethod
    def _wants(notifier: Notifier, tags: frozenset[str]) -> bool:
        try:
            return bool(notifier.wants(tags))
        except Exception:
            log.exception("notifier %r failed to answer wants(); sending anyway", notifier.name)
            return True

    def send_once(self, notifier: Notifier, message: Message, outcome: Outcome) -> str | None:
        """Deliver ``message`` to ``notifier`` once, no routing, no record, no retry: None when
        delivered, else why not (secrets masked); never raises."""
        try:
            ok = notifier.deliver(message, outcome)
        except Exception as exc:  # noqa: BLE001 - a notifier's bug must not stop the others
            return redact_text(f"{type(exc).__name__}: {exc}", self.secrets)
        if ok:
            return None
        return redact_text(notifier.last_failure() or "the target did not accept the "
                           "notification", self.secrets)

    def _attempt(self, notifier: Notifier, message: Message, outcome: Outcome, fp: str,
                 payload: str, attempt: int) -> bool:
        error = self.send_once(notifier, message, outcome)
        ok = error is None
        self.log.record_delivery(notifier.name, outcome.name, fp, ok, error)
        # A new alert supersedes any pending one; a retry ends only its own alert's, since
        # another replica may have recorded a newer alert while it was being sent.
        ours = None if attempt == 1 else fp
        if ok:
            self.log.clear_retry(notifier.name, outcome.name, ours)
            return True
        if attempt >= self.max_attempts:
            log.error("giving up on notifying %r about %s after %d attempts: %s",
                      notifier.name, outcome.name, attempt, error)
            self.log.clear_retry(notifier.name, outcome.name, ours)
            return False
        delay = self.backoff(attempt)
        log.warning("notifying %r about %s failed (attempt %d of %d): %s; %s in %.0f s",
                    notifier.name, outcome.name, attempt, self.max_attempts, error,
                    "retrying" if self.retries_here else
                    "kept for 'namekeeper serve' (or the devpi plugin) on this store to retry",
                    delay)
        self.log.schedule_retry(Retry(notifier.name, outcome.name, fp, payload, attempt,
                                      self.clock() + delay))
        return False


# ---------------------------------------------------------------------------
# namekeeper notify --test


def make_test_outcome() -> Outcome:
    """The harmless outcome a test message describes."""
    return Outcome(
        name="namekeeper-test", display_name="namekeeper-test", verdict=Verdict.EXCLUDED,
        action=Action.SKIPPED, severity=Severity.NONE, reason="test message",
        message="This is a test message from namekeeper: this target is configured correctly.",
    )


def make_test_message() -> Message:
    text = ("This is a test message from namekeeper (namekeeper notify --test).\n"
            "If you can read it, alerts about your private package names reach this target.")
    return Message(
        title="namekeeper: test notification",
        text=text,
        markdown=text.replace("\n", "  \n").replace("(", "\\(").replace(")", "\\)"),
        html="<p>" + text.replace("\n", "<br>") + "</p>",
        tags=frozenset({TAG_TEST}),
    )


def send_test(config: Config, notifiers: Sequence[Notifier]) -> list[tuple[str, bool, str | None]]:
    """Send a clearly labelled test message to every notifier: (name, ok, error) each.

    Routing and deduplication do not apply: every target is tried, and one
    failing never stops the next.
    """
    dispatcher = Dispatcher.from_config(config, notifiers, MemoryDeliveryLog())
    message, outcome = make_test_message(), make_test_outcome()
    results = []
    for notifier in notifiers:
        error = dispatcher.send_once(notifier, message, outcome)
        results.append((notifier.name, error is None, error))
    return results
