"""The HTTP listener of `namekeeper serve`: waitress, with bounded connections.

waitress buffers a request's headers and body before the application sees it,
so a slow client costs a connection, not a thread.  What it lacks is a deadline:
its ``channel_timeout`` counts *inactivity*, and every dribbled byte resets it,
so a hundred clients sending a byte every few seconds hold every connection
(``connection_limit``) for as long as they like.  Here a request must arrive
whole within ``[serve] body-timeout`` of its first byte, or it is answered
``408`` and closed; ``[serve] connection-limit`` is waitress's own setting.

A GET that the application can answer from memory (``/healthz``: a load
balancer may ask hundreds of times a second) is answered by the event loop
itself, as it reads the request: no worker thread is woken for it, which costs
the service several times the answer's own work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.utilities import build_http_date

from .config import ServeConfig

log = logging.getLogger(__name__)

_TIMEOUT_BODY = b"request not received in time\n"
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: "
                     + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


#: ``path -> (status line, JSON body)`` of a GET the application answers from memory, or None
#: (then a worker thread runs the application as for any request).  Must never block.
QuickAnswer = Callable[[str], "tuple[str, bytes] | None"]

# Set while the event loop's thread parses what a client sent (a channel's `received`).
_reading = threading.local()


class DeadlineChannel(HTTPChannel):
    """A waitress channel that remembers when the request it is reading began."""

    #: monotonic time of the first byte of the request being read; None between requests.
    request_started: float | None = None

    @staticmethod
    def quick_answer(path: str) -> tuple[str, bytes] | None:
        """Overridden by `make_http_server` with the application's `QuickAnswer`."""
        return None

    def received(self, data: bytes) -> bool:
        if data and self.request is None and self.request_started is None:
            self.request_started = time.monotonic()
        _reading.active = True
        try:
            result = super().received(data)
        finally:
            _reading.active = False
        if self.request is None:  # everything read so far forms complete requests
            self.request_started = None
        return bool(result)

    def answer_in_loop(self) -> bool:
        """Answer the request just queued here if it is a GET answered from memory; True if so.

        Only in the event loop's thread, while it reads: the request is then this channel's only
        one (waitress hands a channel to a worker thread only when its first request is queued),
        so no task writes to the channel meanwhile and the answers stay in order.
        """
        if not getattr(_reading, "active", False) or len(self.requests) != 1:
            return False
        request = self.requests[0]
        if (request.error is not None or request.command != "GET" or request.version != "1.1"
                or request.connection_close or request.content_length):
            return False
        try:
            answer = self.quick_answer(request.path)
        except Exception:  # a bug there must not cost the connection: the worker path answers
            log.exception("answering %s from memory failed", request.path)
            return False
        if answer is None:
            return False
        status, body = answer
        response = (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                    f"Content-Type: application/json\r\nDate: {build_http_date(time.time())}\r\n"
                    f"Server: {self.adj.ident}\r\n\r\n").encode("latin-1") + body
        with self.outbuf_lock:
            self.outbufs[-1].append(response)
            self.current_outbuf_count += len(response)
            self.total_outbufs_len += len(response)
        self.requests.pop(0)
        request.close()
        return True

    def answer_timeout(self) -> None:
        """Send 408 and close once it is flushed; read nothing more."""
        with self.outbuf_lock:
            self.outbufs[-1].append(_TIMEOUT_RESPONSE)
            self.current_outbuf_count += len(_TIMEOUT_RESPONSE)
            self.total_outbufs_len += len(_TIMEOUT_RESPONSE)
        self.request = None
        self.request_started = None
        self.close_when_flushed = True


def make_http_server(app: Any, serve: ServeConfig, *, threads: int,
                     quick_answer: QuickAnswer | None = None) -> BaseWSGIServer:
    """A waitress server for ``app`` that enforces ``serve.body_timeout`` and its connection limit.

    With ``quick_answer``, the GETs it answers are answered by the event loop (see above).
    """
    server = create_server(app, host=serve.host, port=serve.port, threads=threads,
                           ident="namekeeper", max_request_body_size=serve.max_body + 1,
                           clear_untrusted_proxy_headers=True,
                           connection_limit=serve.connection_limit,
                           # waitress checks its channels every cleanup_interval seconds.
                           cleanup_interval=max(1, int(serve.body_timeout / 2)))
    server.channel_class = DeadlineChannel
    if quick_answer is not None:
        server.channel_class = type("QuickAnswerChannel", (DeadlineChannel,),
                                    {"quick_answer": staticmethod(quick_answer)})
        dispatch = server.add_task

        def add_task(channel: Any) -> None:
            # waitress hands a channel whose first request is queued to a worker thread here.
            if not (isinstance(channel, DeadlineChannel) and channel.answer_in_loop()):
                dispatch(channel)

        server.add_task = add_task
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
