"""Local stand-ins for notification targets: an HTTP receiver and an SMTP sink.

Both listen on 127.0.0.1 on a free port, record what they receive, and let a
test wait on a condition instead of sleeping.
"""

from __future__ import annotations

import base64
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from _servers import serving


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records POSTs; answers with ``status`` (change it to simulate an outage)."""

    server: ThreadingHTTPServer
    status: int = 200
    #: Seconds each POST is held, once recorded, before it is answered (a slow notifier).
    answer_after: float = 0.0
    requests: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


@contextmanager
def serving_http(port: int = 0) -> Iterator[HttpReceiver]:
    """An `HttpReceiver` (on ``port``, or any free one) for the duration of the block."""
    holder: dict[str, HttpReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = holder["r"]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with receiver.cond:
                receiver.requests.append(Received(self.path, dict(self.headers), body))
                receiver.cond.notify_all()
            time.sleep(receiver.answer_after)
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler, port) as server:
        holder["r"] = HttpReceiver(server)
        yield holder["r"]


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    auth: str | None


@dataclass
class SmtpSink:
    """Just enough SMTP (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, QUIT) to receive mail."""

    server: socketserver.ThreadingTCPServer
    mails: list[Mail] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.mails) >= count, timeout)
            return list(self.mails)


def _start_smtp() -> SmtpSink:
    holder: dict[str, SmtpSink] = {}

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def readline(self) -> str:
            return self.rfile.readline().decode("utf-8", "replace").rstrip("\r\n")

        def handle(self) -> None:
            sink = holder["s"]
            sender, recipients, auth = "", [], None
            self.reply("220 sink ESMTP ready")
            while True:
                line = self.readline()
                if not line and self.rfile.closed:
                    return
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.wfile.write(b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
                elif verb == "AUTH":
                    parts = line.split()
                    if parts[1].upper() == "PLAIN":
                        auth = base64.b64decode(parts[2]).decode() if len(parts) > 2 else None
                    else:  # LOGIN: two challenges
                        self.reply("334 VXNlcm5hbWU6")
                        user = base64.b64decode(self.readline()).decode()
                        self.reply("334 UGFzc3dvcmQ6")
                        auth = user + ":" + base64.b64decode(self.readline()).decode()
                    self.reply("235 ok")
                elif verb == "MAIL":
                    sender, recipients = line.split(":", 1)[1].strip(" <>"), []
                    self.reply("250 ok")
                elif verb == "RCPT":
                    recipients.append(line.split(":", 1)[1].strip(" <>"))
                    self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 go ahead")
                    data = bytearray()
                    while True:
                        raw = self.rfile.readline()
                        if raw in (b".\r\n", b".\n", b""):
                            break
                        data += raw[1:] if raw.startswith(b"..") else raw
                    msg = message_from_bytes(bytes(data), policy=policy.default)
                    assert isinstance(msg, EmailMessage)
                    with sink.cond:
                        sink.mails.append(Mail(sender, recipients, msg, auth))
                        sink.cond.notify_all()
                    self.reply("250 queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                elif verb in ("RSET", "NOOP"):
                    self.reply("250 ok")
                elif not line:
                    return
                else:
                    self.reply("502 not implemented")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink = SmtpSink(server)
    holder["s"] = sink
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return sink


@contextmanager
def serving_smtp() -> Iterator[SmtpSink]:
    """An `SmtpSink` for the duration of the block."""
    sink = _start_smtp()
    try:
        yield sink
    finally:
        sink.server.shutdown()
        sink.server.server_close()
