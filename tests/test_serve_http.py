"""`serve`'s HTTP listener answers /healthz from its event loop: a flood of checks wakes no thread."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from _doubles import sign
from _fake_public import FakePublicIndex
from _servers import HOOK_SECRET, payload, wait_for
from namekeeper import config as cfg
from namekeeper.server import Service, http_server


@pytest.fixture
def listening(tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[tuple[Service, int, list[str]]]:
    """A started service behind `serve`'s own server; the paths its WSGI routes were run for."""
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-http-token")
    monkeypatch.setenv("NAMEKEEPER_ARTIFACTORY_SECRET", HOOK_SECRET)
    path = tmp_path / "nk.toml"
    path.write_text(fake_public.config_toml() + '[store]\npath = "s.sqlite3"\n'
                    '[serve]\nhost = "127.0.0.1"\nport = 0\n'
                    '[artifactory]\nsigning = true\nrepos = ["pypi-local"]\n')
    service = Service(cfg.load(path))
    through_wsgi: list[str] = []
    for route, app in list(service.routes.items()):
        def recording(environ: dict[str, Any], start_response: Any, app: Any = app,
                      route: str = route) -> Iterable[bytes]:
            through_wsgi.append(route)
            return app(environ, start_response)  # type: ignore[no-any-return]
        service.routes[route] = recording
    service.start()
    server = http_server(service)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        wait_for(lambda: service.health.fresh_store_answer(), 10, "the health loop's first answer")
        yield service, server.effective_port, through_wsgi
    finally:
        service.shutdown(5)
        server.close()
        service.store.close()


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` HTTP answers (status, headers, body) from ``sock``."""
    data, answers = b"", []

    def more() -> bytes:
        chunk = sock.recv(65536)
        assert chunk, "the service closed the connection"
        return chunk

    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            data += more()
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            data += more()
        answers.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return answers


def get(path: str, version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n\r\n".encode()


def test_healthz_is_answered_by_the_event_loop_and_tells_the_truth(
        listening: tuple[Service, int, list[str]]) -> None:
    service, port, through_wsgi = listening
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(50):  # a load balancer's checks, on one keep-alive connection
            sock.sendall(get("/healthz"))
            [(status, headers, body)] = read_answers(sock, 1)
            assert status == 200 and headers["content-type"] == "application/json"
            assert json.loads(body) == {"status": "ok", "reasons": [], "store": True,
                                        "workers": True, "sources": True}
        assert through_wsgi == []  # no worker thread ran the WSGI route for any of them
        service.store.raise_condition("public-index-unreachable", "the index is unreachable")

        def red() -> bool:
            sock.sendall(get("/healthz"))
            [(status, _, body)] = read_answers(sock, 1)
            return status == 503 and "the index is unreachable" in json.loads(body)["reasons"]

        wait_for(red, 10, "/healthz to turn red")
        assert through_wsgi == []


def test_pipelined_requests_are_answered_in_order(listening: tuple[Service, int, list[str]]) -> None:
    _, port, through_wsgi = listening
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # One packet: a check, a request for a worker thread, a check again.
        sock.sendall(get("/healthz") + get("/metrics") + get("/healthz"))
        answers = read_answers(sock, 3)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert json.loads(answers[0][2])["status"] == "ok"
    assert answers[1][2].startswith(b"# HELP namekeeper_healthy")
    assert json.loads(answers[2][2])["status"] == "ok"
    assert "/metrics" in through_wsgi  # the middle one went through a worker thread


def test_other_requests_for_healthz_take_the_usual_path(
        listening: tuple[Service, int, list[str]]) -> None:
    # HTTP/1.0 (its connection closes after the answer) and HEAD go through WSGI as before.
    service, port, through_wsgi = listening
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(get("/healthz", "1.0"))
        [(status, _, body)] = read_answers(sock, 1)
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert through_wsgi == ["/healthz"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.recv(65536)
    assert through_wsgi == ["/healthz", "/healthz"]


def test_a_burst_of_webhooks_is_committed_together(
        listening: tuple[Service, int, list[str]]) -> None:
    # Each delivery holds an HTTP thread while it waits for the group commit, so the
    # commit can batch only as many deliveries as serve has threads.
    service, port, _ = listening
    store, sink, batches = service.store, service.sink, []
    accept_many = store.accept_many

    def recording(events: list[Any]) -> list[bool]:
        if not batches:  # a slow first commit: the rest of the burst arrives meanwhile
            wait_for(lambda: len(sink._pending) >= 15, 10, "the burst to queue up behind it")
        batches.append(len(events))
        return accept_many(events)

    store.accept_many = recording  # type: ignore[method-assign]
    answers: list[int] = []

    def deliver(name: str) -> None:
        body = payload(name)
        answers.append(requests.post(
            f"http://127.0.0.1:{port}/webhooks/artifactory", data=body, timeout=30,
            headers={"X-JFrog-Event-Auth": sign(body, HOOK_SECRET)}).status_code)

    clients = [threading.Thread(target=deliver, args=(f"acme-burst-{k}",)) for k in range(16)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert answers == [202] * 16
    assert batches == [1, 15]
    assert sum(store.queue_counts().values()) == 16  # every one queued (some claimed by now)
