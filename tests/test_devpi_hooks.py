"""The devpi plugin's hooks in-process, with devpi-server's own fixtures (makexom, mapp)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from _fake_public import FakePublicIndex
from namekeeper.sources import devpi as devpi_plugin
from namekeeper.sources import devpi_face
from namekeeper.sources.devpi_face import INDEX_KEY, DevpiFace, face_for
from namekeeper.sources.devpi_status import whitelist_leaks
from namekeeper.store.sqlite import Store


@pytest.fixture
def nk_config(tmp_path: Path, fake_public: FakePublicIndex) -> Path:
    path = tmp_path / "namekeeper.toml"
    path.write_text(fake_public.config_toml(owners=["acme-security"])
                    + '[store]\npath = "state.sqlite3"\n')
    return path


@pytest.fixture
def nk_mapp(makexom: Any, maketestapp: Any, makemapp: Any, nk_config: Path) -> Any:
    xom = makexom(["--namekeeper-config", str(nk_config)], plugins=[devpi_plugin])
    return makemapp(maketestapp(xom))


@pytest.mark.notransaction
def test_the_option_comes_from_the_command_line_or_the_environment(
        makexom: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    xom = makexom(["--namekeeper-config", "/etc/nk.toml"], plugins=[devpi_plugin])
    assert xom.config.args.namekeeper_config == "/etc/nk.toml"
    monkeypatch.setenv("DEVPISERVER_NAMEKEEPER_CONFIG", "/srv/nk.toml")
    assert makexom([], plugins=[devpi_plugin]).config.args.namekeeper_config == "/srv/nk.toml"


@pytest.mark.notransaction
def test_the_index_key_exists_on_stage_indexes_only(nk_mapp: Any) -> None:
    nk_mapp.create_and_login_user("acme")
    nk_mapp.create_index("prod", indexconfig={INDEX_KEY: True})
    nk_mapp.create_index("plain")
    assert nk_mapp.getjson("/acme/prod")["result"][INDEX_KEY] is True
    assert nk_mapp.getjson("/acme/plain")["result"][INDEX_KEY] is False
    assert INDEX_KEY not in nk_mapp.getjson("/root/pypi")["result"]  # a mirror never opts in


@pytest.mark.notransaction
@pytest.mark.with_notifier
def test_only_release_files_of_opted_in_indexes_are_recorded(nk_mapp: Any, nk_config: Path
                                                             ) -> None:
    nk_mapp.create_and_login_user("acme")
    nk_mapp.create_index("plain")
    nk_mapp.upload_file_pypi("acme_plain-1.0.tar.gz", b"plain", "acme-plain", "1.0",
                             waithooks=True)
    nk_mapp.create_index("prod", indexconfig={INDEX_KEY: True})
    nk_mapp.upload_doc("acme_docs-1.0.doc.zip", zip_bytes(), "acme-docs", "1.0", waithooks=True)
    nk_mapp.upload_file_pypi("Acme_Secret-1.0.tar.gz", b"sdist", "Acme_Secret", "1.0",
                             waithooks=True)
    nk_mapp.upload_file_pypi("Acme_Secret-1.0-py3-none-any.whl", b"wheel", "Acme_Secret", "1.0",
                             waithooks=True)
    store = Store(nk_config.parent / "state.sqlite3")
    record = store.get("acme-secret")
    assert record is not None and record.display_name == "Acme_Secret"
    assert (record.first_source, record.first_index) == ("devpi", "acme/prod")
    assert store.get("acme-plain") is None and store.get("acme-docs") is None
    assert store.queue_counts()["pending"] == 1  # sdist + wheel: one piece of work


@pytest.mark.notransaction
def test_an_index_that_predates_the_plugin_is_left_alone(makexom: Any, maketestapp: Any,
                                                         makemapp: Any, nk_config: Path) -> None:
    xom = makexom([])  # no namekeeper: the index's config never gets the key
    mapp = makemapp(maketestapp(xom))
    mapp.create_and_login_user("acme")
    mapp.create_index("old")
    mapp.upload_file_pypi("acme_old-1.0.tar.gz", b"old", "acme-old", "1.0")
    face = DevpiFace(xom, str(nk_config))
    with xom.keyfs.read_transaction():
        stage = xom.model.getstage("acme/old")
        assert INDEX_KEY not in stage.ixconfig
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(devpi_face._FACES, xom, face)
            devpi_plugin.devpiserver_on_upload(stage=stage, project="acme-old", version="1.0",
                                               link=SimpleNamespace(rel="releasefile"))
            assert face.opted_in_indexes() == []
    assert face.service is not None and face.service.store.get("acme-old") is None


@pytest.mark.notransaction
def test_a_replica_records_nothing(makexom: Any, nk_config: Path) -> None:
    xom = makexom(["--primary-url", "http://127.0.0.1:1/", "--namekeeper-config",
                   str(nk_config)], plugins=[devpi_plugin])
    face = DevpiFace.for_server(xom)
    assert face.role == "replica" and not face.will_work() and face.service is None
    stage = SimpleNamespace(xom=xom, ixconfig={INDEX_KEY: True}, name="acme/prod")
    devpi_plugin.devpiserver_on_upload(stage=stage, project="acme-x", version="1.0",
                                       link=SimpleNamespace(rel="releasefile"))
    assert not (nk_config.parent / "state.sqlite3").exists()


@pytest.mark.notransaction
def test_an_unwritable_store_never_fails_the_hook_and_is_retried(nk_mapp: Any) -> None:
    face = face_for(nk_mapp.xom)
    assert face is not None and face.service is not None
    real_accept = face.service.store.accept_many
    calls = {"n": 0}

    def failing(events: list[Any]) -> list[bool]:
        calls["n"] += 1
        raise OSError("disk full")

    face.service.store.accept_many = failing  # type: ignore[method-assign]
    event = SimpleNamespace(name="acme-full", key="k")
    face.accept(event)  # type: ignore[arg-type]
    assert "disk full" in (face.intake_error or "") and face.unrecorded_count() == 1
    face.retry_unrecorded()
    assert face.unrecorded_count() == 1 and calls["n"] == 2
    face.service.store.accept_many = real_accept  # type: ignore[method-assign]
    from namekeeper.model import NameEvent

    face._unrecorded = [NameEvent("acme-full", "acme-full", "devpi", "acme/prod", "1.0",
                                  key="devpi:acme/prod:acme-full:1.0")]
    face.retry_unrecorded()
    assert face.unrecorded_count() == 0 and face.intake_error is None
    assert face.service.store.get("acme-full") is not None


@pytest.mark.notransaction
def test_the_status_flags_a_mirror_whitelist_that_lets_public_releases_in(nk_mapp: Any) -> None:
    nk_mapp.create_and_login_user("acme")
    nk_mapp.create_index("base", indexconfig={"bases": ["root/pypi"],
                                              "mirror_whitelist": ["acme-leaky"]})
    nk_mapp.upload_file_pypi("acme_leaky-1.0.tar.gz", b"leaky", "acme-leaky", "1.0")
    nk_mapp.upload_file_pypi("acme_safe-1.0.tar.gz", b"safe", "acme-safe", "1.0")
    nk_mapp.create_index("prod", indexconfig={"bases": ["acme/base"], INDEX_KEY: True,
                                              "mirror_whitelist": ["acme-leaky"]})
    nk_mapp.create_index("strict", indexconfig={"bases": ["acme/base"], INDEX_KEY: True})
    xom = nk_mapp.xom
    with xom.keyfs.read_transaction():
        prod = whitelist_leaks(xom.model.getstage("acme/prod"))
        strict = whitelist_leaks(xom.model.getstage("acme/strict"))
    assert [(leak["name"], leak["mirror"]) for leak in prod] == [("acme-leaky", "root/pypi")]
    assert strict == []  # intersection inheritance: prod's own empty list wins
    report = nk_mapp.getjson("/+namekeeper/status")
    leaks = {ix["index"]: ix["mirror_whitelist_leaks"] for ix in report["indexes"]}
    assert [leak["name"] for leak in leaks["acme/prod"]] == ["acme-leaky"]


def zip_bytes() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("index.html", "<html>docs</html>")
    return buffer.getvalue()


class OnlyAcmeReadsSecretIndexes:
    """Like devpi-lockdown: an index titled "secret" is readable by user acme (and root) only."""

    @staticmethod
    @devpi_plugin.hookimpl
    def devpiserver_stage_get_principals_for_pkg_read(ixconfig: dict[str, Any]) -> Any:
        return ["acme"] if ixconfig.get("title") == "secret" else None


def hidden_and_open_indexes(makexom: Any, maketestapp: Any, makemapp: Any,
                            nk_config: Path) -> tuple[Any, Any]:
    """(xom, mapp) of a devpi where acme has "hidden" (read by acme only) and "open", one
    upload each (acme-hidden, acme-open), both opted in; logged in as acme."""
    xom = makexom(["--namekeeper-config", str(nk_config)],
                  plugins=[devpi_plugin, OnlyAcmeReadsSecretIndexes()])
    mapp = makemapp(maketestapp(xom))
    mapp.create_and_login_user("acme")
    mapp.create_index("hidden", indexconfig={INDEX_KEY: True, "title": "secret"})
    mapp.upload_file_pypi("acme_hidden-1.0.tar.gz", b"h", "acme-hidden", "1.0", waithooks=True)
    mapp.create_index("open", indexconfig={INDEX_KEY: True})
    mapp.upload_file_pypi("acme_open-1.0.tar.gz", b"o", "acme-open", "1.0", waithooks=True)
    return xom, mapp


@pytest.mark.notransaction
@pytest.mark.with_notifier
def test_the_status_follows_devpis_read_access_json_and_html(makexom: Any, maketestapp: Any,
                                                             makemapp: Any, nk_config: Path
                                                             ) -> None:
    _xom, mapp = hidden_and_open_indexes(makexom, maketestapp, makemapp, nk_config)

    def shown() -> set[str]:
        return {row["name"] for row in mapp.getjson("/+namekeeper/status")["names"]}

    assert shown() == {"acme-hidden", "acme-open"}  # acme may read both
    mapp.logout()
    assert shown() == {"acme-open"}
    report = mapp.getjson("/+namekeeper/status")
    assert [ix["index"] for ix in report["indexes"]] == ["acme/open"]
    page = mapp.testapp.get("/+namekeeper/status", headers={"Accept": "text/html"})
    assert page.content_type == "text/html"
    assert "acme-open" in page.text and "acme-hidden" not in page.text
    assert report["plugin"]["config_loaded"] and report["plugin"]["role"] == "primary"


@pytest.mark.notransaction
def test_backfill_queues_every_project_once_the_most_recently_changed_first(nk_mapp: Any
                                                                           ) -> None:
    nk_mapp.create_and_login_user("acme")
    nk_mapp.create_index("legacy")
    for name in ("acme-first", "acme-second", "acme-third"):
        nk_mapp.upload_file_pypi(f"{name.replace('-', '_')}-1.0.tar.gz", name.encode(), name, "1.0")
    nk_mapp.upload_file_pypi("acme_first-2.0.tar.gz", b"again", "acme-first", "2.0")
    face = face_for(nk_mapp.xom)
    assert face is not None and face.service is not None
    assert face.backfill() == 0  # not opted in yet
    nk_mapp.set_key_value(INDEX_KEY, True, indexname="acme/legacy")
    assert face.backfill() == 3
    claimed = [face.service.store.get(n) for n in ("acme-first", "acme-second", "acme-third")]
    assert all(r is not None and r.first_index == "acme/legacy" for r in claimed)
    with nk_mapp.xom.keyfs.read_transaction():
        events = face._index_events(nk_mapp.xom.model.getstage("acme/legacy"))
    assert [(e.name, e.version) for e in events] == [
        ("acme-first", "2.0"), ("acme-third", "1.0"), ("acme-second", "1.0")]
    store = face.service.store
    claims = [store.claim("test-holder") for _ in range(3)]
    assert [c.name for c in claims if c] == ["acme-first", "acme-third", "acme-second"]
    assert face.backfill() == 0  # once per index; a restart's repeat is deduplicated
    face._backfilled.clear()
    assert face.backfill() == 0


@pytest.mark.notransaction
@pytest.mark.parametrize("requests_only", [False, True])
def test_the_worker_thread_joins_devpis_pool_except_under_requests_only(
        makexom: Any, maketestapp: Any, nk_config: Path, requests_only: bool) -> None:
    opts = ["--namekeeper-config", str(nk_config)] + (["--requests-only"] if requests_only else [])
    xom = makexom(opts, plugins=[devpi_plugin])
    maketestapp(xom)  # configures the application: our pyramid hook runs
    workers = [o for o in xom.thread_pool._objects if isinstance(o, devpi_face.DevpiWorker)]
    assert len(workers) == (0 if requests_only else 1)


@pytest.mark.notransaction
def test_the_status_leaves_another_processes_dead_loop_to_that_process(nk_mapp: Any) -> None:
    face = face_for(nk_mapp.xom)
    assert face is not None and face.service is not None
    gone = "other-host:99:0a1b2c3d"
    text = f"the event source crashing stopped with an error on {gone} (see its log)"
    face.service.store.raise_condition(f"loop-died:crashing@{gone}", text)
    face.service.store.raise_condition("watch-failed", "the look-alike scan failed")
    problems = nk_mapp.getjson("/+namekeeper/status")["plugin"]["problems"]
    assert "the look-alike scan failed" in problems  # a service-wide one is shown
    assert text not in problems


class _Stopped(Exception):
    """Ends a `DevpiWorker.thread_run` the way devpi's Shutdown does."""


class _PoolThread:
    """devpi's thread object as the worker sees it: ``sleep`` runs ``at_sleep`` per call, then
    raises `_Stopped` once ``at_sleep`` returns False (the server stopping)."""

    def __init__(self, at_sleep: Any) -> None:
        self.at_sleep = at_sleep
        self.sleeps = 0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if not self.at_sleep(self.sleeps):
            raise _Stopped


@pytest.mark.notransaction
@pytest.mark.with_notifier
def test_a_store_unreachable_when_devpi_starts_is_connected_later_and_no_upload_is_lost(
        makexom: Any, maketestapp: Any, makemapp: Any, tmp_path: Path,
        fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    from _postgres import running_postgres
    from namekeeper.store.postgres import PostgresStore

    with running_postgres() as pg:
        url = pg.new_database()
        monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", pg.password)
        config = tmp_path / "namekeeper.toml"
        config.write_text(fake_public.config_toml(owners=["acme-security"])
                          + f'[store]\nurl = "{url}"\n[policy]\ndry-run = true\n')
        pg.stop()  # the database is down (a restart, a failover) while devpi-server starts
        xom = makexom(["--namekeeper-config", str(config)], plugins=[devpi_plugin])
        mapp = makemapp(maketestapp(xom))
        face = face_for(xom)
        assert face is not None and face.service is None
        assert "cannot connect to the store" in (face.problem or "")
        report = mapp.getjson("/+namekeeper/status")["plugin"]
        assert not report["healthy"] and any("cannot connect" in p for p in report["problems"])
        [worker] = [o for o in xom.thread_pool._objects if isinstance(o, devpi_face.DevpiWorker)]
        mapp.create_and_login_user("acme")
        mapp.create_index("prod", indexconfig={INDEX_KEY: True})
        mapp.upload_file_pypi("Acme_Early-1.0.tar.gz", b"early", "Acme_Early", "1.0",
                              waithooks=True)
        assert face.unrecorded_count() == 1  # kept until the store answers

        def at_sleep(n: int) -> bool:
            if n == 1:
                pg.start()  # the database is back before the worker's next try
            return n == 1

        worker.thread = _PoolThread(at_sleep)
        with pytest.raises(_Stopped):
            worker.thread_run()
        assert face.service is not None and face.problem is None and face.running
        assert face.unrecorded_count() == 0
        worker.thread_shutdown()
        store = PostgresStore(url, password=pg.password, create_schema=False)
        try:
            record = store.get("acme-early")
            assert record is not None and record.display_name == "Acme_Early"
            assert (record.first_source, record.first_index) == ("devpi", "acme/prod")
        finally:
            store.close()


@pytest.mark.notransaction
@pytest.mark.with_notifier
def test_the_status_names_failed_names_only_of_indexes_the_requester_may_read(
        makexom: Any, maketestapp: Any, makemapp: Any, nk_config: Path) -> None:
    from namekeeper.model import Action, NameEvent, Outcome, Severity, Verdict

    xom, mapp = hidden_and_open_indexes(makexom, maketestapp, makemapp, nk_config)
    face = face_for(xom)
    assert face is not None and face.service is not None
    store = face.service.store
    for name in ("acme-hidden", "acme-open"):
        store.record_outcome(Outcome(
            name=name, display_name=name, verdict=Verdict.FREE, action=Action.FAILED,
            severity=Severity.HIGH, reason="free", message="the upload failed"))
    for _ in range(2):  # the queue ended both (failed for good), as after the last attempt
        item = store.claim("test")
        assert item is not None
        assert store.complete(item.name, item.claim, error="the upload failed")
    # A third failed, and the queue is to try it again: it has not ended FAILED (/healthz's
    # count, which the page gives too).
    assert store.accept(NameEvent(name="acme-retrying", display_name="acme-retrying",
                                  source="devpi", index="acme/open", key="retrying"))
    store.record_outcome(Outcome(
        name="acme-retrying", display_name="acme-retrying", verdict=Verdict.FREE,
        action=Action.FAILED, severity=Severity.HIGH, reason="free", message="a 503"))
    face.running = True  # as with the worker thread running: serve's reasons are shown too

    def problems() -> str:
        return "\n".join(mapp.getjson("/+namekeeper/status")["plugin"]["problems"])

    assert "acme-hidden" in problems() and "acme-open" in problems()  # acme may read both
    mapp.logout()
    shown = problems()
    assert "2 name(s) ended FAILED" in shown and "acme-open" in shown
    assert "acme-hidden" not in shown
    page = mapp.testapp.get("/+namekeeper/status", headers={"Accept": "text/html"}).text
    assert "acme-open" in page and "acme-hidden" not in page
