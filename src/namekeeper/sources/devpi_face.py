"""namekeeper inside one devpi-server process: intake, backfill and the worker thread.

devpi's threads never wait on the public index: an upload becomes a durable
`NameEvent` in namekeeper's store (the journal dedups devpi's replays), and a
thread registered with devpi's thread pool runs the same `Service` as
``namekeeper serve`` (queue, `WorkerPool`, budget, re-checks, alerts).  Nothing
namekeeper does can fail an upload: a broken config, an unwritable store or an
unreachable public index is logged, kept for the status route, and retried
where retrying makes sense.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from ..config import Config, load
from ..model import NameEvent
from ..names import highest_version
from ..store.interface import StoreUnavailable

log = logging.getLogger(__name__)

#: The per-index key (``devpi index acme/prod reserve_public_names=True``).
INDEX_KEY = "reserve_public_names"
#: The option's ``dest``; devpi-init and devpi-import do not load plugin options.
OPTION_DEST = "namekeeper_config"
SOURCE = "devpi"
#: How often the worker thread looks for newly opted-in indexes and retries unrecorded uploads.
SCAN_INTERVAL = 2.0
#: How often the worker thread tries again to open a store it could not reach at start-up.
STORE_RETRY = 10.0

_FACES: weakref.WeakKeyDictionary[Any, DevpiFace] = weakref.WeakKeyDictionary()


def face_for(xom: Any) -> DevpiFace | None:
    """The face of this devpi-server process, once its application is configured."""
    return _FACES.get(xom)


def event_key(index: str, project: str, version: str | None) -> str:
    # Per index, name and version: sdist + wheel, a re-upload, a replay → one event.
    return f"devpi:{index}:{project}:{version or ''}"


def upload_event(stage: Any, project: str, version: str) -> NameEvent:
    """The `NameEvent` for a release file; ``project`` is canonical, the display name is devpi's."""
    display = project
    try:
        display = stage.get_versiondata(project, version).get("name") or project
    except Exception:  # noqa: BLE001 - the display name is cosmetic; never fail the hook for it
        log.debug("no version data for %s %s on %s", project, version, stage.name)
    return NameEvent(name=project, display_name=display, source=SOURCE, index=stage.name,
                     version=version, key=event_key(stage.name, project, version))


class DevpiFace:
    """What namekeeper is doing in this devpi-server: configured or not, working or why not."""

    def __init__(self, xom: Any, config_path: str | None) -> None:
        from ..server import Service

        self.xom = xom
        self.config_path = config_path
        self.role = "replica" if xom.is_replica() else "primary"
        self.config: Config | None = None
        self.service: Service | None = None
        #: Why namekeeper cannot protect anything in this process (None: it can).
        self.problem: str | None = None
        #: The last failure to record an upload (None once recorded again).
        self.intake_error: str | None = None
        self.running = False
        #: True while the store could not be reached: the worker thread tries again.
        self.waiting_for_store = False
        self._unrecorded: list[NameEvent] = []
        self._backfilled: set[str] = set()
        self._lock = threading.Lock()
        if config_path is None:
            self.problem = ("not configured: pass --namekeeper-config PATH (or set "
                            "DEVPISERVER_NAMEKEEPER_CONFIG); the plugin does nothing")
            log.warning("namekeeper plugin: %s", self.problem)
            return
        if self.role == "replica":
            log.info("namekeeper plugin: this is a replica; the primary reserves names")
            return
        try:
            self.config = load(config_path, required=True)
        except Exception as exc:  # noqa: BLE001 - devpi must start and take uploads regardless
            self.problem = f"cannot start: {exc}"
            log.error("namekeeper plugin %s; uploads are not protected", self.problem)
            return
        self.connect()

    @classmethod
    def for_server(cls, xom: Any) -> DevpiFace:
        face = _FACES.get(xom)
        if face is None:
            face = cls(xom, getattr(xom.config.args, OPTION_DEST, None))
            _FACES[xom] = face
        return face

    def will_work(self) -> bool:
        """True when this process reserves names (a configured primary), or will once its
        store answers."""
        return self.service is not None or self.waiting_for_store

    def connect(self) -> None:
        """Start the `Service`; on a store that cannot be reached (a database down while devpi
        starts) the worker thread calls this again every `STORE_RETRY` s."""
        from ..server import Service

        assert self.config is not None
        retrying = self.waiting_for_store
        try:
            self.service = Service(self.config)
        except StoreUnavailable as exc:
            problem = f"cannot start: {exc}"
            if not retrying:
                log.error("namekeeper plugin %s; uploads are kept and recorded once it answers "
                          "(tried again every %.0f s)", problem, STORE_RETRY)
            elif problem != self.problem:
                log.error("namekeeper plugin %s", problem)
            self.waiting_for_store, self.problem = True, problem
            return
        except Exception as exc:  # noqa: BLE001 - devpi must start and take uploads regardless
            self.waiting_for_store = False
            self.problem = f"cannot start: {exc}"
            log.error("namekeeper plugin %s; uploads are not protected", self.problem)
            return
        self.waiting_for_store, self.problem = False, None
        if retrying:
            log.warning("namekeeper plugin: the store answers again; reserving names")

    def worker_thread(self) -> DevpiWorker:
        return DevpiWorker(self)

    # -- intake (devpi's event thread) ---------------------------------------------------------

    def accept(self, event: NameEvent) -> None:
        """Journal ``event`` durably; on failure keep it for the worker thread to retry."""
        if self.service is None:
            if self.waiting_for_store:
                with self._lock:
                    self._unrecorded.append(event)
            return
        try:
            self.service.sink.accept(event)
        except Exception as exc:  # noqa: BLE001 - never fail devpi's hook
            with self._lock:
                self._unrecorded.append(event)
            self._intake_failed(exc)
        else:
            self.intake_error = None

    def _intake_failed(self, exc: BaseException) -> None:
        message = f"recording uploads in the store failed: {type(exc).__name__}: {exc}"
        if message != self.intake_error:
            log.error("namekeeper plugin: %s (kept in memory, retried)", message)
        self.intake_error = message

    def retry_unrecorded(self) -> None:
        with self._lock:
            todo, self._unrecorded = self._unrecorded, []
        if not todo or self.service is None:
            return
        try:
            self.service.store.accept_many(todo)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the events wait for the next try
            with self._lock:
                self._unrecorded[:0] = todo
            self._intake_failed(exc)
            return
        self.intake_error = None
        self.service.workers.notify_work()
        log.warning("namekeeper plugin: recorded %d upload(s) that had failed to record",
                    len(todo))

    def unrecorded_count(self) -> int:
        with self._lock:
            return len(self._unrecorded)

    # -- backfill (the worker thread) ----------------------------------------------------------

    def opted_in_indexes(self) -> list[Any]:
        """Every stage index with the key set (call inside a keyfs transaction)."""
        stages = []
        model = self.xom.model
        for user in model.get_userlist():
            for index, ixconfig in sorted((user.get().get("indexes") or {}).items()):
                if ixconfig.get("type") == "stage" and ixconfig.get(INDEX_KEY, False):
                    stage = model.getstage(user.name, index)
                    if stage is not None:
                        stages.append(stage)
        return stages

    def backfill(self) -> int:
        """Queue every project of each newly opted-in index, the most recently changed first.

        An index's projects are queued once per process when its key is first seen
        set; the event keys make a repeat (a restart, the key switched off and on)
        cost nothing and upload nothing.  Returns how many events were new.
        """
        if self.service is None:
            return 0
        with self.xom.keyfs.read_transaction():
            stages = self.opted_in_indexes()
            opted = {s.name for s in stages}
            todo = [(s.name, self._index_events(s)) for s in stages if s.name not in self._backfilled]
        self._backfilled &= opted  # switched off: queue its projects again when it is back
        new = 0
        for index, events in todo:
            if events:
                results = self.service.store.accept_many(events)
                new += sum(results)
                if any(results):
                    log.warning("namekeeper plugin: queued %d existing project(s) of %s",
                                sum(results), index)
            self._backfilled.add(index)
        if new:
            self.service.workers.notify_work()
        return new

    def _index_events(self, stage: Any) -> list[NameEvent]:
        # Riskiest first: the project that changed last is the one builds install today.
        projects = stage.list_projects_perstage()
        names = dict(projects) if isinstance(projects, dict) else {p: p for p in projects}
        ranked = []
        for project, display in names.items():
            version = highest_version(stage.list_versions_perstage(project) or ())
            serial = stage.get_last_project_change_serial_perstage(project)
            ranked.append((-(serial or 0), project, str(display or project), version))
        ranked.sort()
        return [NameEvent(name=project, display_name=display, source=SOURCE, index=stage.name,
                          version=version, key=event_key(stage.name, project, version))
                for _, project, display, version in ranked]

    def tick(self) -> None:
        """One round of the worker thread's housekeeping; never raises."""
        if self.service is not None and self.service.workers.store_error:
            return  # the store must not be written to (the sink refuses too): events wait
        try:
            self.retry_unrecorded()
            self.backfill()
        except Exception:
            log.exception("namekeeper plugin: scanning devpi's indexes failed")


class DevpiWorker:
    """The thread devpi's thread pool runs for namekeeper (``thread_run``/``thread_shutdown``)."""

    thread: Any  # set by devpi's ThreadPool.register

    def __init__(self, face: DevpiFace) -> None:
        self.face = face

    def thread_run(self) -> None:
        face = self.face
        while face.service is None and face.waiting_for_store:
            self.thread.sleep(STORE_RETRY)  # raises devpi's Shutdown when the server stops
            face.connect()
        service = face.service
        if service is None:
            return
        try:
            service.start()
        except Exception as exc:
            face.problem = f"cannot start the workers: {exc}"
            log.exception("namekeeper plugin: %s", face.problem)
            return
        face.running = True
        log.info("namekeeper plugin: reserving names of opted-in indexes (%s=True)", INDEX_KEY)
        while True:
            face.tick()
            self.thread.sleep(SCAN_INTERVAL)  # raises devpi's Shutdown when the server stops

    def thread_shutdown(self) -> None:
        face, service = self.face, self.face.service
        if service is not None and face.running:
            face.running = False
            service.shutdown(timeout=10.0)
            service.store.close()
