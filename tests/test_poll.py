"""The simple-index pollers, against a real devpi-server and tiny local HTTP servers."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from _devpi import DevpiServer, make_sdist
from _doubles import MemorySink
from _servers import PORTAL_PAGE, serving, url_of
from namekeeper import config as nk_config
from namekeeper.config import PollConfig, Secret
from namekeeper.model import NameEvent
from namekeeper.names import canonical
from namekeeper.plugins import get_plugin_manager
from namekeeper.simple_html import anchors
from namekeeper.sources import poll
from namekeeper.sources.interface import SourceMetrics
from namekeeper.sources.poll import PollError, SimpleIndexPoller, list_projects

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; return whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- a tiny local index ---------------------------------------------------------------------


@dataclass
class Page:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html"
    declare_length: bool = True  # False: no Content-Length, the body ends when the server closes


@dataclass
class LocalIndex:
    """An HTTP server on 127.0.0.1 answering each path with a `Page` (or a queue of them)."""

    url: str
    pages: dict[str, list[Page]] = field(default_factory=dict)
    required_auth: str | None = None  # exact Authorization header demanded, else 401
    requests: list[dict[str, str]] = field(default_factory=list)

    def serve(self, path: str, *pages: Page) -> str:
        """Serve ``pages`` in turn at ``path`` (the last one forever); return its URL."""
        self.pages[path] = list(pages)
        return self.url.rstrip("/") + path


@pytest.fixture
def local_index() -> Iterator[LocalIndex]:
    index = LocalIndex(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            index.requests.append(dict(self.headers.items()))
            if index.required_auth and self.headers.get("Authorization") != index.required_auth:
                self._send(Page(401, b"unauthorized", "text/plain"))
                return
            queue = index.pages.get(self.path)
            if not queue:
                self._send(Page(404, b"not found", "text/plain"))
                return
            self._send(queue.pop(0) if len(queue) > 1 else queue[0])

        def _send(self, page: Page) -> None:
            self.send_response(page.status)
            self.send_header("Content-Type", page.content_type)
            if page.declare_length:
                self.send_header("Content-Length", str(len(page.body)))
            self.end_headers()
            self.wfile.write(page.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as server:
        index.url = url_of(server)
        yield index


def html_listing(*anchor_texts: str) -> bytes:
    anchors = "\n".join(f'<a href="/simple/{quote(t, safe="")}/">{t}</a><br>' for t in anchor_texts)
    return f"<!DOCTYPE html><html><body>\n{anchors}\n</body></html>".encode()


# --- the devpi fixture itself ---------------------------------------------------------------


@pytest.mark.slow
def test_twine_upload_of_make_sdist_appears_in_devpi_simple_index(
        devpi: DevpiServer, tmp_path: Path) -> None:
    index = devpi.new_index("fixture-check")
    index.upload(make_sdist(tmp_path, "Acme.Utils", "1.0"))

    as_json = requests.get(index.simple_url, headers={"Accept": JSON_ACCEPT}, timeout=30)
    assert as_json.headers["Content-Type"].startswith(JSON_ACCEPT)
    assert [p["name"] for p in as_json.json()["projects"]] == ["acme-utils"]
    as_html = requests.get(index.simple_url, headers={"Accept": "text/html"}, timeout=30)
    assert ">acme-utils</a>" in as_html.text
    files = requests.get(index.simple_url + "acme-utils/", headers={"Accept": JSON_ACCEPT},
                         timeout=30).json()["files"]
    assert [f["filename"] for f in files] == ["acme_utils-1.0.tar.gz"]
    # the default index of the fixture is left empty for others
    other = requests.get(devpi.simple_url, headers={"Accept": JSON_ACCEPT}, timeout=30)
    assert other.json()["projects"] == []


# --- polling devpi --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("form", ["json", "html"])
def test_poller_reports_each_devpi_project_once_and_then_new_uploads(
        devpi: DevpiServer, tmp_path: Path, form: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if form == "html":  # an index that only speaks PEP 503, like Artifactory
        monkeypatch.setattr(poll, "ACCEPT", "text/html")
    index = devpi.new_index(f"poll-{form}")
    index.upload(make_sdist(tmp_path, "Acme.Utils"), make_sdist(tmp_path, "foo_bar", "2.0"))
    poller = SimpleIndexPoller(PollConfig(url=index.simple_url, interval=60))
    sink = MemorySink()

    assert poller.poll_once(sink) == 2
    assert sink.names == {"acme-utils", "foo-bar"}
    event = sink.by_key(f"poll:{index.simple_url}:acme-utils")
    assert (event.source, event.index, event.display_name) == ("poll", index.simple_url,
                                                               "acme-utils")

    assert poller.poll_once(sink) == 0, "a second poll must not repeat known names"

    index.upload(make_sdist(tmp_path, "Zeta-Lib", "0.1"))
    assert poller.poll_once(sink) == 1
    assert sink.names == {"acme-utils", "foo-bar", "zeta-lib"}
    assert (poller.polls_ok, poller.polls_failed, poller.last_error) == (3, 0, None)
    assert poller.last_poll_at is not None
    assert poller.metrics() == SourceMetrics(last_poll_at=poller.last_poll_at, label=poller.label)


# --- hostile and malformed listings ---------------------------------------------------------


def test_hostile_anchors_are_skipped_and_logged_once_while_valid_names_still_arrive(
        local_index: LocalIndex, caplog: pytest.LogCaptureFixture) -> None:
    long_name = "a" * 300
    url = local_index.serve("/simple/", Page(body=html_listing(
        "Good.One", "../x", 'a"]\n[tool', long_name, "", "other_pkg", "good-one",
    )))
    poller = SimpleIndexPoller(PollConfig(url=url, interval=60))
    sink = MemorySink()
    caplog.set_level(logging.WARNING, logger="namekeeper")

    assert poller.poll_once(sink) == 2
    assert sink.names == {"good-one", "other-pkg"}
    assert sink.by_key(f"poll:{url}:good-one").display_name == "Good.One"  # first spelling wins
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "4 invalid project name(s)" in warnings[0]
    assert "'../x'" in warnings[0] and long_name not in warnings[0] and "\n" not in warnings[0]

    caplog.clear()
    assert poller.poll_once(sink) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
        "the same invalid names are not logged again on every poll"


def test_list_projects_reads_pep_691_json_and_refuses_malformed_or_oversized_listings(
        local_index: LocalIndex) -> None:
    body = json.dumps({"meta": {"api-version": "1.1"},
                       "projects": [{"name": "Acme_Utils"}, {"name": "../x"}, {"nope": 1}]})
    good = local_index.serve("/json/", Page(body=body.encode(), content_type=JSON_ACCEPT))
    bad = local_index.serve("/bad/", Page(body=b'{"projects": "x"}', content_type=JSON_ACCEPT))
    broken = local_index.serve("/broken/", Page(body=b"{not json", content_type=JSON_ACCEPT))
    undeclared = local_index.serve("/undeclared/", Page(body=body.encode(), content_type=JSON_ACCEPT,
                                                        declare_length=False))

    with requests.Session() as session:
        assert list_projects(good, session) == [("Acme_Utils", "acme-utils")]
        assert local_index.requests[-1]["Accept"] == poll.ACCEPT
        with pytest.raises(PollError, match="'projects' list"):
            list_projects(bad, session)
        with pytest.raises(PollError, match="malformed JSON"):
            list_projects(broken, session)
        with pytest.raises(PollError, match="over the 10 bytes limit"):
            list_projects(good, session, max_bytes=10)
        with pytest.raises(PollError, match="over the 10 bytes limit"):
            list_projects(undeclared, session, max_bytes=10)
        assert list_projects(undeclared, session) == [("Acme_Utils", "acme-utils")]


# Root pages as each index writes them (their links' layouts; the names are ours).
REAL_ROOTS = {
    "warehouse": '<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.3">'
                 '<title>Simple index</title></head><body>\n'
                 '<a href="/simple/acme-tools/">Acme_Tools</a>\n'
                 '<a href="/simple/zope-interface/">zope.interface</a>\n</body></html>',
    "devpi": '<html><head><title>acme/prod: simple list</title></head><body>\n'
             '<a href="/acme/prod/+simple/acme-tools/">acme-tools</a><br>\n'
             '<a href="/acme/prod/+simple/zope-interface/">zope-interface</a><br>\n</body></html>',
    "artifactory, nexus": '<html><head><title>Simple Index</title></head><body>\n'
                          '<a href="acme-tools/" rel="internal">acme-tools</a><br/>\n'
                          '<a href="zope-interface/" rel="internal">zope-interface</a><br/>\n'
                          '</body></html>',
    "gitlab": '<!DOCTYPE html><html><head><title>Links for acme</title></head><body>'
              '<h1>Links for acme</h1>'
              '<a href="https://gitlab.example.com/api/v4/projects/1/packages/pypi/simple/'
              'acme-tools" data-requires-python="">acme-tools</a><br>'
              '<a href="https://gitlab.example.com/api/v4/projects/1/packages/pypi/simple/'
              'zope-interface" data-requires-python="">zope.interface</a><br></body></html>',
    "pypiserver": '<html><head><title>Simple Index</title></head><body>\n'
                  '<h1>Simple Index</h1>\n<a href="acme-tools/">acme-tools</a><br>\n'
                  "<a href='zope.interface/'>zope.interface</a><br>\n</body></html>",
    "percent-encoded, with a query": '<a href="/simple/Acme%5FTools/?format=html">Acme_Tools</a>'
                                     '<a href="/simple/zope.interface#top">zope.interface</a>',
    "behind the parser (a comment)": '<!-- generated --><a href="/simple/acme-tools/">acme-tools'
                                     '</a><a href="/simple/zope-interface/">zope.interface</a>',
}


@pytest.mark.parametrize("layout", REAL_ROOTS)
def test_every_index_layout_links_its_projects_and_is_read(layout: str) -> None:
    names = poll.listing_names(REAL_ROOTS[layout].encode(), "text/html", "idx")
    assert [canonical(n) for n in names] == ["acme-tools", "zope-interface"]


def test_a_few_odd_links_among_project_links_are_read_and_no_links_is_an_empty_index() -> None:
    odd = ['<a href="../">Parent Directory</a>', '<a href="/">Home</a>',
           '<a href="/ui/login?next=%2F">Login</a>']
    projects = [f'<a href="acme-{i}/">acme-{i}</a>' for i in range(3)]
    assert poll.listing_names("".join(odd + projects).encode(), "text/html", "idx") == [
        "Parent Directory", "Home", "Login", "acme-0", "acme-1", "acme-2"]  # half: accepted
    assert poll.listing_names(b"<html><body></body></html>", "text/html", "idx") == []


@pytest.mark.parametrize("page", [PORTAL_PAGE,  # a script: read by the HTML parser
                                  PORTAL_PAGE.replace(b"<script", b"<noscript"),  # the fast path
                                  b'<a href="../">../</a><a href="acme-tools/">acme-tools/</a>'
                                  b'<a href="zope/">zope/</a>'],  # a repository's folders
                         ids=["sign-in page", "sign-in page, no script", "folder listing"])
def test_a_page_whose_links_lead_elsewhere_is_refused(page: bytes) -> None:
    with pytest.raises(PollError) as refused:
        poll.listing_names(page, "text/html; charset=utf-8", "http://127.0.0.1:1/")
    assert str(refused.value) == (
        "http://127.0.0.1:1/ does not look like a simple index: its links do not lead to "
        "project pages (is it the index's /simple/ root?)")


def test_a_poller_of_a_page_that_is_no_index_fails_and_emits_nothing(
        local_index: LocalIndex) -> None:
    url = local_index.serve("/", Page(body=PORTAL_PAGE))
    poller = SimpleIndexPoller(PollConfig(url=url, interval=60), timeout=5)
    sink = MemorySink()
    with pytest.raises(PollError, match="does not look like a simple index"):
        poller.poll_once(sink)
    assert sink.names == set() and poller.seen == set()
    assert (poller.polls_ok, poller.polls_failed) == (0, 1)
    assert poller.last_error is not None and poller.last_error.startswith(
        f"{url} does not look like a simple index: its links do not lead to project pages")
    [problem] = poller.problems(time.time() + 61)
    assert "does not look like a simple index" in problem and "\n" not in problem


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bearer", "basic", "url-userinfo"])
def test_auth_is_sent_and_a_refused_poll_fails_without_leaking_the_secret(
        local_index: LocalIndex, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    secret = "s3cr3t-Value-42"
    path_url = local_index.serve("/simple/", Page(body=html_listing("acme-utils")))
    if kind == "bearer":
        local_index.required_auth = f"Bearer {secret}"
        good = PollConfig(url=path_url, token=Secret(secret))
        wrong = PollConfig(url=path_url, token=Secret(secret + "-wrong"))
    elif kind == "basic":
        import base64

        local_index.required_auth = "Basic " + base64.b64encode(f"bot:{secret}".encode()).decode()
        good = PollConfig(url=path_url, username="bot", password=Secret(secret))
        wrong = PollConfig(url=path_url, username="bot", password=Secret(secret + "-wrong"))
    else:
        import base64

        local_index.required_auth = "Basic " + base64.b64encode(f"bot:{secret}".encode()).decode()
        good = PollConfig(url=path_url.replace("http://", f"http://bot:{secret}@"))
        wrong = PollConfig(url=path_url.replace("http://", "http://bot:nope@"))
    caplog.set_level(logging.DEBUG)

    anonymous = SimpleIndexPoller(PollConfig(url=path_url))
    refused = SimpleIndexPoller(wrong)
    sink = MemorySink()
    for poller in (anonymous, refused):
        with pytest.raises(PollError, match="401") as failure:
            poller.poll_once(sink)
        assert (poller.polls_ok, poller.polls_failed) == (0, 1)
        assert secret not in str(failure.value)
        assert "nope" not in str(failure.value)
    assert not sink.events

    allowed = SimpleIndexPoller(good)
    assert allowed.poll_once(sink) == 1
    event = sink.events[0]
    assert event.index == path_url, "the event names the index without credentials"
    shown = [caplog.text, repr(event), repr(allowed), str(refused.last_error)]
    if kind != "url-userinfo":  # a URL with userinfo is the user's choice, kept as written
        shown.append(repr(allowed.config))
    for text in shown:
        assert secret not in text


@pytest.mark.parametrize("kind", ["bearer", "basic", "url-userinfo"])
def test_a_refusal_that_echoes_the_authorization_header_never_shows_the_secret(kind: str) -> None:
    import base64

    secret = "s3cr3t-Value-42"

    class Echo(BaseHTTPRequestHandler):  # a proxy's debug answer: the request's header back
        def do_GET(self) -> None:
            self.send_response(401, f"Unauthorized: {self.headers.get('Authorization')}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Echo) as server:
        url = url_of(server) + "simple/"
        if kind == "bearer":
            config = PollConfig(url=url, token=Secret(secret))
        elif kind == "basic":
            config = PollConfig(url=url, username="bot", password=Secret(secret))
        else:
            config = PollConfig(url=url.replace("http://", f"http://bot:{secret}@"))
        with pytest.raises(PollError, match="401") as failure:
            list_projects(config.url, requests.Session(), auth=poll.auth_for(config))
        with pytest.raises(PollError, match="401") as polled:
            SimpleIndexPoller(config).poll_once(MemorySink())
    header = base64.b64encode(f"bot:{secret}".encode()).decode()
    for text in (str(failure.value), str(polled.value)):
        assert secret not in text and header not in text and "***" in text


# --- the loop -------------------------------------------------------------------------------


def test_run_survives_failing_polls_and_stops_when_asked(
        local_index: LocalIndex, caplog: pytest.LogCaptureFixture) -> None:
    url = local_index.serve("/simple/", Page(503, b"down", "text/plain"),
                            Page(500, b"oops", "text/plain"),
                            Page(body=html_listing("acme-utils")))
    poller = SimpleIndexPoller(PollConfig(url=url, interval=0.01), max_backoff=0.05)
    sink = MemorySink()
    stop = threading.Event()
    caplog.set_level(logging.WARNING, logger="namekeeper")
    thread = threading.Thread(target=poller.run, args=(sink, stop), daemon=True)
    thread.start()
    try:
        assert sink.arrived.wait(timeout=30), "the loop died before the index recovered"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert sink.names == {"acme-utils"}
    assert poller.polls_failed == 2 and poller.polls_ok >= 1 and poller.last_error is None
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert any("503" in m for m in failures) and any("500" in m for m in failures)


def test_run_with_a_long_interval_returns_as_soon_as_stop_is_set(local_index: LocalIndex) -> None:
    url = local_index.serve("/simple/", Page(body=html_listing("acme-utils")))
    poller = SimpleIndexPoller(PollConfig(url=url, interval=3600))
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(MemorySink(), stop), daemon=True)
    thread.start()
    assert wait_until(lambda: poller.polls_ok == 1)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "run() must not sleep out its interval once stop is set"


def test_run_survives_an_unreachable_index_and_a_failing_sink(local_index: LocalIndex) -> None:
    url = local_index.serve("/simple/", Page(body=html_listing("acme-utils")))

    class BrokenSink:
        calls = 0

        def accept(self, event: NameEvent) -> bool:
            BrokenSink.calls += 1
            raise OSError("disk full")

        def take_turn(self, job: str, seconds: float) -> bool:
            return True  # one process: every periodic round is its turn

        def clear_condition(self, key: str) -> None:
            pass  # no conditions here

    poller = SimpleIndexPoller(PollConfig(url=url, interval=0.01), max_backoff=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(BrokenSink(), stop), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: BrokenSink.calls >= 2), "a failing sink must be retried"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert poller.seen == set(), "a name the sink did not take is not marked as seen"
    assert poller.last_error is not None and "disk full" in poller.last_error


def test_backoff_doubles_the_interval_per_consecutive_failure_up_to_a_ceiling() -> None:
    poller = SimpleIndexPoller(PollConfig(url="http://127.0.0.1:9/simple/", interval=60),
                               max_backoff=300)
    delays = []
    for failures in range(6):
        poller.consecutive_failures = failures
        delays.append(poller.next_delay())
    assert delays == [60, 60, 120, 240, 300, 300]


def test_unreachable_index_is_a_poll_error_naming_the_url_without_credentials() -> None:
    from _servers import free_port

    url = f"http://bot:hunter2@127.0.0.1:{free_port()}/simple/?token=abc"
    poller = SimpleIndexPoller(PollConfig(url=url, interval=60), timeout=5)
    with pytest.raises(PollError) as failure:
        poller.poll_once(MemorySink())
    message = str(failure.value)
    assert "127.0.0.1" in message
    assert "hunter2" not in message and "abc" not in message
    assert poller.polls_failed == 1


# --- plugin wiring --------------------------------------------------------------------------


def test_each_poll_entry_of_the_config_becomes_a_poller_source(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NK_TEST_POLL_TOKEN", "tok")
    cfg = nk_config.from_dict({
        "public": {"timeout": 3},
        "poll": [{"url": "http://127.0.0.1:1/gitlab/simple", "interval": "5m",
                  "token-env": "NK_TEST_POLL_TOKEN"},
                 {"url": "http://127.0.0.1:1/artifactory/api/pypi/pypi-local/simple/",
                  "name": "artifactory"}],
    })
    pm, _report = get_plugin_manager(third_party=False)
    sources = [s for group in pm.hook.namekeeper_event_sources(config=cfg) for s in group]
    pollers = [s for s in sources if isinstance(s, SimpleIndexPoller)]
    assert [(p.index, p.config.interval, p.timeout) for p in pollers] == [
        ("http://127.0.0.1:1/gitlab/simple/", 300.0, 3.0),
        ("http://127.0.0.1:1/artifactory/api/pypi/pypi-local/simple/", 600.0, 3.0),
    ]
    assert pollers[0].name == "poll" and pollers[1].label == "artifactory"


def _parsed_by_the_html_parser(page: str) -> list[tuple[str, str]]:
    return [(anchor.href, anchor.text) for anchor in anchors(page)]


_ANCHOR_TEXT = st.lists(st.sampled_from([*"aZ09._- \t\n&;#x<>\"'/=", "&amp;", "&lt;", "&#65;",
                                          "\u00e9"]), max_size=12).map("".join)
_ATTRS = st.sampled_from(['', ' href="/simple/x/"', " href='/a>b/'", ' data-x="1" href=/y/',
                          ' href="a"b"', ' href=/y/', ' href=x/', ' HREF = "z" ',
                          ' href="/simple/x/" data-requires-python=""', ' rel="internal" href="x/"',
                          ' href="/a/" href=\'/b/\'', ' href="/a/" HREF=b', ' href', ' href=""',
                          ' href="/s/a&amp;b/?x=1&#38;y"', ' data-href="q" href="&lt;"'])


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(_ATTRS, _ANCHOR_TEXT), max_size=6),
       st.sampled_from(["", "<title>Simple index</title>", "<title>x<a>y</a></title>",
                        "<!-- <a>hidden</a> -->", "<script>'<a>s</a>'</script>"]))
def test_the_fast_listing_reader_gives_what_the_html_parser_gives(
        anchors: list[tuple[str, str]], head: str) -> None:
    page = f"<!DOCTYPE html><html><head>{head}</head><body>\n" + "".join(
        f"<a{attrs}>{text}</a><br/>\n" for attrs, text in anchors) + "</body></html>"
    assert poll.html_links(page) == _parsed_by_the_html_parser(page)
