"""The HTTP listener of `namekeeper serve`: waitress, with bounded connections.

waitress buffers a request's headers and body before the application sees it,
so a slow client costs a connection, not a thread.  What it lacks is a deadline:
its ``channel_timeout`` counts *inactivity*, and every dribbled byte resets it,
so a hundred clients sending a byte every few seconds hold every connection
(``connection_limit``) for as long as they like.  Here a request must arrive
whole within ``[serve] body-timeout`` of its first byte, or it is answered
``408`` and closed; ``[serve] connection-limit`` is waitress's own setting.
"""

from __future__ import annotations

import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from .config import ServeConfig

_TIMEOUT_BODY = b"request not received in time\n"
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: "
                     + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


class DeadlineChannel(HTTPChannel):
    """A waitress channel that remembers when the request it is reading began."""

    #: monotonic time of the first byte of the request being read; None between requests.
    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        if data and self.request is None and self.request_started is None:
            self.request_started = time.monotonic()
        result = super().received(data)
        if self.request is None:  # everything read so far forms complete requests
            self.request_started = None
        return bool(result)

    def answer_timeout(self) -> None:
        """Send 408 and close once it is flushed; read nothing more."""
        with self.outbuf_lock:
            self.outbufs[-1].append(_TIMEOUT_RESPONSE)
            self.current_outbuf_count += len(_TIMEOUT_RESPONSE)
            self.total_outbufs_len += len(_TIMEOUT_RESPONSE)
        self.request = None
        self.request_started = None
        self.close_when_flushed = True


def make_http_server(app: Any, serve: ServeConfig, *, threads: int) -> BaseWSGIServer:
    """A waitress server for ``app`` that enforces ``serve.body_timeout`` and its connection limit."""
    server = create_server(app, host=serve.host, port=serve.port, threads=threads,
                           ident="namekeeper", max_request_body_size=serve.max_body + 1,
                           clear_untrusted_proxy_headers=True,
                           connection_limit=serve.connection_limit,
                           # waitress checks its channels every cleanup_interval seconds.
                           cleanup_interval=max(1, int(serve.body_timeout / 2)))
    server.channel_class = DeadlineChannel
    inactivity_check = server.maintenance
    deadline = serve.body_timeout

    def maintenance(now: float) -> None:
        inactivity_check(now)
        started_before = time.monotonic() - deadline
        for channel in list(server.active_channels.values()):
            if not isinstance(channel, DeadlineChannel):
                continue
            started = channel.request_started
            if (started is not None and started < started_before and not channel.requests
                    and not channel.will_close and not channel.close_when_flushed):
                channel.answer_timeout()

    server.maintenance = maintenance
    return server
