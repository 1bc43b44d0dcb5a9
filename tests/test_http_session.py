"""The one HTTP session factory: proxies and CA bundles from the environment, read once per host."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
import requests

from namekeeper.http import new_session

# (environment, URL, proxies given with the request): what requests itself would do decides.
CASES = [
    ({}, "http://127.0.0.1:1/simple/", {}),
    ({"HTTP_PROXY": "http://proxy.internal:3128"}, "http://index.internal/simple/", {}),
    ({"https_proxy": "http://proxy.internal:3128"}, "https://index.internal/simple/", {}),
    ({"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "index.internal"},
     "https://index.internal/simple/", {}),
    ({"HTTPS_PROXY": "http://proxy.internal:3128", "no_proxy": ".internal"},
     "https://other.internal:8443/simple/", {}),
    ({"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "index.internal"},
     "https://elsewhere.example/simple/", {}),
    ({"ALL_PROXY": "socks5://proxy.internal:1080"}, "https://index.internal/", {}),
    ({"HTTPS_PROXY": "http://proxy.internal:3128"}, "https://index.internal/",
     {"https": "http://explicit.internal:8080"}),
    ({"HTTPS_PROXY": "http://proxy.internal:3128"}, "https://index.internal/",
     {"no_proxy": "index.internal"}),
    ({"REQUESTS_CA_BUNDLE": "/etc/ssl/corp.pem"}, "https://index.internal/", {}),
    ({"CURL_CA_BUNDLE": "/etc/ssl/curl.pem"}, "https://index.internal/", {}),
]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
                   "CURL_CA_BUNDLE")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in PROXY_VARIABLES:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    return monkeypatch


@pytest.mark.parametrize("env, url, proxies", CASES)
def test_the_environment_is_honoured_as_requests_honours_it(
        clean_environment: pytest.MonkeyPatch, env: dict[str, str], url: str,
        proxies: dict[str, str]) -> None:
    for var, value in env.items():
        clean_environment.setenv(var, value)
    ours = new_session()
    theirs = requests.Session()
    for verify in (None, True, False, "/etc/ssl/given.pem"):
        for _ in range(2):  # the second answer comes from what the first one read
            assert ours.merge_environment_settings(url, dict(proxies), None, verify, None) == \
                theirs.merge_environment_settings(url, dict(proxies), None, verify, None)


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP proxy that answers every request itself and remembers what it was asked."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)  # a proxied request names the whole URL
            body = b"via the proxy"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_requests_go_through_the_environments_proxy_except_for_no_proxy_hosts(
        clean_environment: pytest.MonkeyPatch, proxy: tuple[str, list[str]]) -> None:
    proxy_url, seen = proxy
    clean_environment.setenv("HTTP_PROXY", proxy_url)
    clean_environment.setenv("NO_PROXY", "direct.invalid")
    session = new_session()
    for _ in range(3):
        assert session.get("http://index.invalid/simple/", timeout=10).text == "via the proxy"
    assert seen == ["http://index.invalid/simple/"] * 3
    with pytest.raises(requests.ConnectionError):  # not proxied: the name does not resolve
        session.get("http://direct.invalid/simple/", timeout=10)
    assert len(seen) == 3
