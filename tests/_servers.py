"""Local servers for the tests: one way to serve a request handler on 127.0.0.1, one free port.

Every fake that speaks HTTP (the notification receiver, a private index, Artifactory's
API, a scripted upload endpoint) is served by `serving`: a thread, a short shutdown poll
(the tests do not wait half a second per server), and a clean close.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (a connection is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], port: int = 0,
            server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer
            ) -> Iterator[ThreadingHTTPServer]:
    """``handler`` served on 127.0.0.1 (``port``, or any free one) for the block."""
    server = server_class(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def url_of(server: ThreadingHTTPServer) -> str:
    """The server's root URL, ``http://127.0.0.1:<port>/``."""
    return f"http://127.0.0.1:{server.server_address[1]}/"
