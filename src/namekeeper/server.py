"""`namekeeper serve`: webhook receivers, pollers and queue workers in one process.

The HTTP side only accepts and journals events (sources' routes), reports
health and metrics; the workers do the public-index work.  SIGTERM stops
intake first, then lets each worker finish the item in its hands and each
periodic loop its round, within one deadline (`STOP_WITHIN`); anything not
finished is still in the durable queue for the next start.

``wsgi_app()`` is the same service without waitress, for gunicorn & co.:
``gunicorn 'namekeeper.server:wsgi_app()'`` (config from ``NAMEKEEPER_CONFIG``).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .app import build_keeper
from .config import Config, load, redact
from .errors import StoreError
from .health import Health, StoreAnswer, alive_job, died_holder, startup_problems
from .model import NameEvent
from .names import one_line
from .notify.dispatch import Dispatcher
from .plugins import get_plugin_manager
from .public.interface import PublicIndexUnavailable
from .sources.interface import CONDITION_PREFIX, EventSource, WSGIApp
from .store.interface import StoreBackend, StoreUnavailable, StoreUnusable
from .worker import WorkerPool

if TYPE_CHECKING:
    from waitress.server import BaseWSGIServer

log = logging.getLogger(__name__)

#: waitress threads of `serve`.  A webhook holds its thread while it waits for the group
#: commit, so a commit can only batch as many deliveries as there are threads: with
#: waitress's default of 4, a burst was committed 3 or 4 events at a time.
HTTP_THREADS = 16
#: The condition of a look-alike scan that cannot run (`Service._watch`).
CONDITION_WATCH = "watch-scan"
#: Seconds `serve` gives its workers and periodic jobs, together, to finish after SIGTERM:
#: well within a supervisor's patience (systemd waits 90 s by default, then kills).
STOP_WITHIN = 20.0


class _Waiter:
    """One webhook's event waiting in `GroupCommitSink`: for its answer, or for its turn to lead."""

    __slots__ = ("event", "ready", "leads", "new", "error")

    def __init__(self, event: NameEvent) -> None:
        self.event = event
        self.ready = threading.Event()
        self.leads = False
        self.new: bool | None = None
        self.error: BaseException | None = None

    def answer(self) -> bool:
        if self.error is not None:
            raise self.error
        return bool(self.new)


class GroupCommitSink:
    """The store as an `EventSink`: concurrent webhooks share one durable commit.

    Each event still waits for its own fsync before it is acknowledged, but
    the requests that arrive while a commit is in progress are committed
    together by the next leader (leader/follower group commit), so under load
    the disk is asked once per batch, not per event.  A leader commits one
    batch, its own event in it, then hands the lead to the oldest waiter: no
    request answers late because it kept committing for others.
    """

    def __init__(self, store: StoreBackend, wake: Callable[[], None], max_batch: int = 256,
                 *, holder: str = "this-process",
                 store_error: Callable[[], str | None] = lambda: None) -> None:
        self.store = store
        self.wake = wake
        self.max_batch = max_batch
        self.holder = holder
        #: Why this process must no longer write to the store (`WorkerPool.store_error`).
        self.store_error = store_error
        self._pending: list[_Waiter] = []
        self._lock = threading.Lock()
        self._committing = False
        #: Held while a source's problems are raised (`Service`) or cleared (here): a round that
        #: succeeds while its old problem is being raised still clears it.
        self.conditions_lock = threading.Lock()

    def accept(self, event: NameEvent) -> bool:
        # A store whose schema moved past this code still takes the write: refuse it here.
        refused = self.store_error()
        if refused:
            raise StoreUnusable(refused)
        waiter = _Waiter(event)
        with self._lock:
            self._pending.append(waiter)
            waiter.leads = not self._committing
            self._committing = True
        if not waiter.leads:
            waiter.ready.wait()
        if waiter.leads:  # first in the queue: the batch taken now holds this event
            self._commit_one_batch()
        return waiter.answer()

    def take_turn(self, job: str, seconds: float) -> bool:
        return self.store.lease_job(job, self.holder, seconds)

    def clear_condition(self, key: str) -> None:
        with self.conditions_lock:
            if self.store.clear_condition(key):
                log.warning("%s works again", key.removeprefix(CONDITION_PREFIX))

    def _commit_one_batch(self) -> None:
        with self._lock:
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
        results: list[bool | None]
        try:
            results = list(self.store.accept_many([w.event for w in batch]))
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
            for waiter in batch:
                waiter.error = exc
            results = [None] * len(batch)
        for waiter, new in zip(batch, results, strict=True):
            waiter.new = new
        with self._lock:
            if self._pending:
                self._pending[0].leads = True
                self._pending[0].ready.set()
            else:
                self._committing = False
        for waiter in batch:
            waiter.ready.set()
        if any(results):
            self.wake()


class Service:
    """Everything `serve` runs, with an explicit start/stop for tests and embedding."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        pm, _ = get_plugin_manager()  # one load of the plugins for keeper and sources
        self.keeper, self.store = build_keeper(config, pm=pm, for_queue=True)
        try:
            self.sources: list[EventSource] = [
                s for batch in pm.hook.namekeeper_event_sources(config=config) for s in (batch or [])]
            self.workers = WorkerPool(self.keeper, self.store, config.queue,
                                      threads=config.serve.workers, clock=clock)
            self.sink = GroupCommitSink(self.store, self.workers.notify_work,
                                        holder=self.workers.holder,
                                        store_error=lambda: self.workers.store_error)
            self.stop = threading.Event()
            self._source_threads: dict[int, threading.Thread] = {}  # by id() of the source
            self.routes: dict[str, WSGIApp] = {"/healthz": self._healthz, "/metrics": self._metrics}
            for source in self.sources:
                self.routes.update(source.routes(self.sink))
            self._notify_thread: threading.Thread | None = None
            self._source_watch_thread: threading.Thread | None = None
            self._recheck_thread: threading.Thread | None = None
            self._watch_thread: threading.Thread | None = None
            self.watch_scans = 0  # look-alike scans finished (for tests and /metrics readers)
            self.health = Health(config, self.store, self.workers, self.sources,
                                 startup_problems(config), wall=clock)
            #: Who holds this process's leases, on queue items and on periodic jobs alike.
            self.holder = self.workers.holder
        except BaseException:
            self.store.close()  # a pool left to the garbage collector dies noisily
            raise

    def start(self) -> None:
        for problem in self.health.fixed:
            log.warning("%s", problem)
        # Before /healthz first answers: with no upload credentials it is red from the start.
        self.workers.look_for_credentials()
        self._maintenance = self.store.background_maintenance(self.stop)
        # /healthz answers from memory; this loop keeps the store's part of it fresh.
        self._health_thread = self.health.run_in_background(self.stop)
        # Work queued by another replica (or process) wakes this one's idle workers.
        self._work_watch = self.store.watch_for_work(self.workers.notify_work, self.stop)
        self.workers.start()
        for source in self.sources:
            if type(source).run is EventSource.run:
                continue  # a webhook-only source has no loop to run
            t = threading.Thread(target=self._run_source, args=(source,),
                                 name=f"namekeeper-source-{source.name}", daemon=True)
            t.start()
            self._source_threads[id(source)] = t
        self._forget_sources_gone()
        self._forget_dead_processes_loops()
        self._source_watch_thread = threading.Thread(target=self._watch_sources, daemon=True,
                                                     name="namekeeper-source-watch")
        self._source_watch_thread.start()
        self._recheck_thread = threading.Thread(target=self._recheck, daemon=True,
                                                name="namekeeper-recheck")
        self._recheck_thread.start()
        if self.config.watch.enabled and self.config.watch.interval > 0:
            self._watch_thread = threading.Thread(target=self._watch, daemon=True,
                                                  name="namekeeper-watch")
            self._watch_thread.start()
        if self.keeper.alerts is not None:
            self._notify_thread = threading.Thread(target=self._retry_notifications,
                                                   args=(self.keeper.alerts,), daemon=True,
                                                   name="namekeeper-notify-retry")
            self._notify_thread.start()

    def _run_source(self, source: EventSource) -> None:
        try:
            source.run(self.sink, self.stop)
        except Exception:
            log.exception("event source %s stopped with an error", source.name)

    #: How often the sources' problems are looked at, and a lasting one's words brought up to date.
    source_watch_every = 1.0
    source_restate_every = 30.0
    #: How long a process whose loop died is taken for alive after it last said so: ten
    #: restatements, so that slow alert deliveries on the same thread do not outlast it.
    alive_lease = 300.0

    def _watch_sources(self) -> None:
        """Raise each source's problems as its condition: alerted once, red on every replica.

        Only the replica that runs a source's rounds sees its problems; the round that works
        again clears them (`EventSink.clear_condition`), wherever it runs.
        """
        stated: dict[str, float] = {}
        swept = time.monotonic()  # at start, by `_forget_sources_gone`
        while not self.stop.wait(self.source_watch_every):
            dead = self._dead_sources()
            for source in self.sources:
                raised: list[tuple[str, str]] = []
                # Locked from looking to recording only: the alert's delivery (as slow as a
                # notifier's timeout) must not hold up the round that clears the problem.
                with self.sink.conditions_lock:
                    conditions = self.health.conditions_of(
                        source, time.time(), loop_died=source.condition_key in dead)
                    for key, found in conditions.items():
                        if not found:
                            stated.pop(key, None)
                            continue
                        if time.monotonic() - stated.get(key, -self.source_restate_every) \
                                < self.source_restate_every:
                            continue
                        died = died_holder(key) is not None
                        if died and self.stop.is_set():
                            continue  # stopping: its loops end because they were told to
                        text = "; ".join(found)
                        try:
                            if died:  # alive, and still saying so
                                self.store.lease_job(alive_job(self.holder), self.holder,
                                                     self.alive_lease)
                            if self.keeper.record_condition(key, text):
                                raised.append((key, text))
                        except Exception as exc:  # noqa: BLE001 - _job_failed logs it
                            if self._job_failed(exc, f"raising the problem of {key}"):
                                return
                            continue
                        stated[key] = time.monotonic()
                for key, text in raised:
                    self.keeper.alert_condition(key, text)
            if time.monotonic() - swept >= self.source_restate_every:
                swept = time.monotonic()
                self._forget_dead_processes_loops()

    def _dead_sources(self) -> set[str]:
        """The `condition_key` of each source whose loop ended (with an error: it never returns
        before ``stop``)."""
        if self.stop.is_set():
            return set()  # they end because they were told to
        return {source.condition_key for source in self.sources
                if (t := self._source_threads.get(id(source))) is not None and not t.is_alive()}

    def _forget_sources_gone(self) -> None:
        """Clear the conditions of sources no longer configured: no round would ever clear them."""
        keys = {source.condition_key for source in self.sources}
        try:
            for condition in self.store.conditions():
                if condition.key.startswith(CONDITION_PREFIX) and condition.key not in keys:
                    self.store.clear_condition(condition.key)
                    log.warning("cleared a problem of a source that is no longer configured: %s",
                                condition.text)
        except StoreError as exc:
            log.warning("could not read the store's conditions at start: %s", exc)

    def _recheck(self) -> None:
        """Every known name is looked at again each ``recheck-interval``."""
        interval = self.config.queue.recheck_interval
        period = min(interval / 4, 60.0)
        while not self.stop.wait(period) and not self.workers.store_error:
            try:
                # One replica at a time: the lease outlives a round, so its holder keeps it.
                if not self.store.lease_job("recheck", self.holder, 3 * period):
                    continue
                if self.store.schedule_recheck(interval):
                    self.workers.notify_work()
            except Exception as exc:  # noqa: BLE001 - _job_failed logs it (a bug: with traceback)
                if self._job_failed(exc, "scheduling the periodic re-check"):
                    return

    def _watch(self) -> None:
        """A look-alike scan at start, then every ``[watch] interval`` (`namekeeper.watch`)."""
        from .watch import WatchState, dispatcher_alerts, run_watch

        alerts = dispatcher_alerts(self.keeper.alerts) if self.keeper.alerts else None
        state = WatchState()  # between scans: only new public projects cost anything
        # One replica scans at a time; the holder's next scan renews the lease.
        lease = 2 * self.config.watch.interval + 60
        while not self.stop.is_set() and not self.workers.store_error:
            try:
                if not self.store.lease_job("watch", self.workers.holder, lease):
                    if self.stop.wait(self.config.watch.interval):
                        return
                    continue
                result = run_watch(self.config, self.store, self.keeper.public, alerts=alerts,
                                   state=state)
                self.watch_scans += 1
                log.info("watch: %d new look-alike(s) among %d public projects scanned",
                         len(result.new), result.scanned)
                if self.store.clear_condition(CONDITION_WATCH):
                    log.warning("the look-alike scan works again")
            except PublicIndexUnavailable as exc:
                self._watch_failed(str(exc))
            except Exception as exc:  # noqa: BLE001 - _job_failed logs it (a bug: with traceback)
                if self._job_failed(exc, "the look-alike scan"):
                    return
                if not isinstance(exc, StoreError):
                    self._watch_failed(f"{type(exc).__name__}: {exc}")
            if self.stop.wait(self.config.watch.interval):
                return

    def _watch_failed(self, reason: str) -> None:
        """A scan that cannot run is the service's condition (alerted once, /healthz red):
        look-alikes registered meanwhile go unseen."""
        reason = redact(reason, self.config.secret_values())  # before it is cut short
        text = one_line(f"the look-alike scan cannot run: {reason}; new look-alikes of our "
                        "names are not seen until it works", 500)
        try:
            self.keeper.raise_condition(CONDITION_WATCH, text)
        except StoreError as exc:
            log.warning("could not record that the look-alike scan cannot run: %s", exc)

    def _job_failed(self, exc: Exception, what: str) -> bool:
        """Report a periodic job's failure; True when the job must stop (a corrupt store).

        A lost or busy store is one line (the job tries again next round, as the workers
        do); anything else is a bug and gets its traceback.
        """
        if isinstance(exc, StoreUnusable):
            self.workers.store_unusable(exc)  # the workers stop, once
            return True
        if isinstance(exc, StoreUnavailable):
            log.warning("%s failed: %s", what, exc)
        else:
            log.exception("%s failed", what)
        return False

    def _retry_notifications(self, dispatcher: Dispatcher) -> None:
        while not self.stop.wait(1.0) and not self.workers.store_error:
            try:
                # One replica's round at a time spares the others the work; a round that
                # outlasts the lease still sends each alert once (`DeliveryLog.claim_retry`).
                if not self.store.lease_job("notify-retry", self.holder, 30.0):
                    continue
                dispatcher.retry_due(time.time())
            except Exception as exc:  # noqa: BLE001 - _job_failed logs it (a bug: with traceback)
                if self._job_failed(exc, "retrying notifications"):
                    return

    def shutdown(self, timeout: float = STOP_WITHIN) -> list[str]:
        """Stop intake; let the workers and the periodic jobs finish what they hold, all of
        them within ``timeout`` seconds together.  Nothing accepted is lost: what is not
        finished stays in the durable queue.

        Returns what was still running at the deadline, [] after a clean stop.  Past the
        deadline nothing more waits: that is logged at WARNING, a worker's name in hand goes
        back to the queue (`WorkerPool.shutdown`), and this process's job leases lapse on
        their own.
        """
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self.stop.set()
        self.workers.shutdown(left())
        # Each loop ends the round in hand first: the source watch could state a dead loop
        # again, and a round still running when its job is given up would run twice (another
        # replica takes it at once).
        loops = [*self._source_threads.values(), *(t for t in (
            self._source_watch_thread, self._recheck_thread, self._watch_thread,
            self._notify_thread) if t is not None)]
        for t in loops:
            t.join(left())
        workers = self.workers.alive_count()
        running = [t.name for t in loops if t.is_alive()] + (
            [f"{workers} queue worker(s) (the name in hand is queued again)"] if workers else [])
        if not running and self.sink.conditions_lock.acquire(timeout=left()):
            try:
                self._forget_own_dead_loops()
            finally:
                self.sink.conditions_lock.release()
            try:  # another replica takes over the polls and rounds now, not when the leases lapse
                self.store.release_jobs(self.holder)
            except StoreError as exc:
                log.warning("could not give up this process's periodic jobs at stop: %s", exc)
            return []
        running = running or ["a source clearing its condition"]
        log.warning("stopping after %.0f s without waiting any longer; still running: %s; "
                    "this process's periodic jobs are taken over once their leases lapse",
                    timeout, ", ".join(running))
        return running

    def _forget_own_dead_loops(self) -> None:
        """A loop that died here is over with this process (a later start says so again)."""
        try:  # under `GroupCommitSink.conditions_lock`, held by the caller
            for source in self.sources:
                self.store.clear_condition(self.health.died_key(source))
        except StoreError as exc:
            log.warning("could not clear this process's problems at stop: %s", exc)

    def _forget_dead_processes_loops(self) -> None:
        """Clear the loop-died conditions of processes that are gone (killed, say, with -9).

        A process whose loop died keeps the job `alive_job` leased while it says so; when the
        lease is free, nobody holds it: the process is gone.
        """
        try:
            for condition in self.store.conditions():
                holder = died_holder(condition.key)
                if (holder not in (None, self.holder)
                        and self.store.lease_job(alive_job(holder), self.holder, 1.0)):
                    self.store.clear_condition(condition.key)
                    log.warning("cleared a problem of a process that is gone: %s", condition.text)
        except StoreError as exc:
            log.warning("could not look at the loops of other processes: %s", exc)

    # -- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        route = self.routes.get(path) or self.routes.get(path.rstrip("/"))
        if self.stop.is_set() and route not in (self._healthz, self._metrics):
            return _json(start_response, "503 Service Unavailable",
                         {"status": "stopping", "reason": "namekeeper is shutting down"})
        if route is None:
            return _json(start_response, "404 Not Found", {"status": "not-found",
                                                           "reason": "no such endpoint"})
        return route(environ, start_response)

    def healthy(self, store: StoreAnswer | None = None) -> tuple[bool, dict[str, Any]]:
        """Whether names are being protected, and the reasons when they are not."""
        store = store or self.health.store_answer()
        dead = self._dead_sources()
        reasons = self.health.reasons(stopping=self.stop.is_set(), dead_sources=dead,
                                      store=store)
        detail = {"reasons": reasons, "store": store.problem is None,
                  "workers": self.workers.alive(), "sources": not dead}
        return not reasons, detail

    def _healthz_answer(self, store: StoreAnswer | None = None) -> tuple[str, dict[str, Any]]:
        ok, detail = self.healthy(store)
        return ("200 OK" if ok else "503 Service Unavailable",
                {"status": "ok" if ok else "unhealthy", **detail})

    def _healthz(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        return _json(start_response, *self._healthz_answer())

    def answer_from_memory(self, path: str) -> tuple[str, bytes] | None:
        """``GET path``'s answer when it needs nothing but memory (`serve_http.QuickAnswer`).

        That is ``/healthz`` while the health loop keeps the store's part fresh; anything else,
        or a stale store answer, is None: a worker thread then runs the WSGI route as usual.
        """
        if path != "/healthz":
            return None
        store = self.health.fresh_store_answer()
        if store is None:
            return None
        status, payload = self._healthz_answer(store)
        return status, json.dumps(payload).encode()

    def _metrics(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        body = self.metrics_text().encode()
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def metrics_text(self) -> str:
        ok, detail = self.healthy()
        lines = ["# HELP namekeeper_healthy 1 when names are being protected (see /healthz).",
                 "# TYPE namekeeper_healthy gauge", f"namekeeper_healthy {int(ok)}",
                 "# HELP namekeeper_unhealthy_reasons How many reasons /healthz gives.",
                 "# TYPE namekeeper_unhealthy_reasons gauge",
                 f"namekeeper_unhealthy_reasons {len(detail['reasons'])}"]
        try:
            lines += self._store_metrics()
        except StoreError:
            pass  # the store is unreadable: /healthz says so; the other figures still count
        lines += ["# HELP namekeeper_events_total Webhook/poll events by source and result.",
                 "# TYPE namekeeper_events_total counter"]
        figures = [(source, source.metrics()) for source in self.sources]
        for source, metrics in figures:
            for key, value in sorted(metrics.events.items()):
                result, _, reason = str(key).partition(":")
                labels = f'source="{_label(source.name)}",result="{_label(result)}"'
                if reason:
                    labels += f',reason="{_label(reason)}"'
                lines.append(f"namekeeper_events_total{{{labels}}} {value}")
        lines += ["# HELP namekeeper_reservations_total Outcomes of queue work by action.",
                  "# TYPE namekeeper_reservations_total counter"]
        for action, n in sorted(self.workers.actions.items()):
            lines.append(f'namekeeper_reservations_total{{action="{action}"}} {n}')
        lines += ["# HELP namekeeper_poll_last_timestamp_seconds When each poller last ran.",
                  "# TYPE namekeeper_poll_last_timestamp_seconds gauge"]
        for source, metrics in figures:
            if metrics.last_poll_at is not None:
                ident = metrics.label or source.name
                lines.append(f'namekeeper_poll_last_timestamp_seconds{{poller="{_label(ident)}"}}'
                             f" {metrics.last_poll_at:.3f}")
        return "\n".join(lines) + "\n"


    def _store_metrics(self) -> list[str]:
        lines = ["# HELP namekeeper_queue_depth Names in the queue by state.",
                 "# TYPE namekeeper_queue_depth gauge"]
        for state, n in sorted(self.store.queue_counts().items()):
            lines.append(f'namekeeper_queue_depth{{state="{_label(state)}"}} {n}')
        limit = self.config.queue.new_projects_per_hour
        paused_until = self.store.budget_paused_until()
        # While paused, nothing can be spent: the budget left is 0, whatever the window says.
        left = 0 if paused_until is not None else self.store.budget_left(limit)
        lines += ["# HELP namekeeper_budget_left New public projects still allowed this hour.",
                  "# TYPE namekeeper_budget_left gauge", f"namekeeper_budget_left {left}",
                  "# HELP namekeeper_budget_paused_seconds How long the index asked us to wait.",
                  "# TYPE namekeeper_budget_paused_seconds gauge",
                  f"namekeeper_budget_paused_seconds "
                  f"{max(0.0, (paused_until or 0.0) - time.time()):.0f}",
                  "# HELP namekeeper_condition Service-wide conditions raised (1 each).",
                  "# TYPE namekeeper_condition gauge"]
        for condition in self.store.conditions():
            lines.append(f'namekeeper_condition{{key="{_label(condition.key)}"}} 1')
        return lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _json(start_response: Callable[..., Any], status: str, payload: dict[str, Any]
          ) -> Iterable[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def wsgi_app(config: Config | None = None) -> Service:
    """A started service as a WSGI callable (for gunicorn, uwsgi, ...)."""
    service = Service(config or load(required=True))
    service.start()
    return service


def http_server(service: Service) -> BaseWSGIServer:
    """The waitress server `serve` runs for ``service``; its event loop answers ``/healthz``."""
    from .serve_http import make_http_server

    return make_http_server(service, service.config.serve,
                            threads=HTTP_THREADS,
                            quick_answer=service.answer_from_memory)


def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code.

    waitress runs in a daemon thread.  On a signal, intake stops at once (new
    webhooks get 503, which Artifactory retries), the workers finish or release
    the item in their hands, and the process exits; an open keep-alive
    connection cannot hold the shutdown hostage.
    """
    service = Service(config)
    try:
        service.start()
        server = http_server(service)
        stopping = threading.Event()

        def _stop(signum: int, _frame: object) -> None:
            if not stopping.is_set():
                log.warning("signal %d: stopping intake, finishing work in hand", signum)
            stopping.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        host, port = server.effective_host, server.effective_port
        http = threading.Thread(target=server.run, name="namekeeper-http", daemon=True)
        http.start()
        # One line on stdout says where (scripts read the port from it); the log says what runs.
        print(f"namekeeper: serving on http://{host}:{port}/", flush=True)
        log.info("running %d source(s) (%s), %d queue worker(s), budget %d new project(s)/hour",
                 len(service.sources), ", ".join(s.name for s in service.sources) or "none",
                 config.serve.workers, config.queue.new_projects_per_hour)
        while not stopping.wait(0.5):
            if not http.is_alive():
                log.error("the HTTP server stopped unexpectedly")
                break
        cut_off = service.shutdown(STOP_WITHIN)
    finally:
        service.store.close()
    log.warning("namekeeper stopped" if cut_off else "namekeeper stopped cleanly")
    return 0
