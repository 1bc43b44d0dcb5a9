"""Keep twine's console output off stdout: route it, scrubbed, into our logger.

twine talks to a person at a terminal: it prints through ``rich`` and logs
under the ``twine`` logger.  In a service, stdout belongs to the service, and
anything twine says may repeat the upload token.  This module diverts both,
per thread, into the ``namekeeper.reserve.twine`` logger (the backend's own,
so one logger holds everything about uploads) at DEBUG/INFO, with every form
of the secrets replaced by ``***``.

It lives apart from the backend because it is process-wide plumbing (a patch
of twine's modules, installed once) rather than anything about uploads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..config import redact

#: The backend's logger (`namekeeper.reserve.twine`): twine's output is part of its story.
log = logging.getLogger("namekeeper.reserve.twine")


_capture = threading.local()
_install_lock = threading.Lock()
_installed = False


def _current_secrets() -> tuple[str, ...]:
    return getattr(_capture, "secrets", ())


class _TwineLogBridge(logging.Handler):
    """Re-logs twine's records under our logger, scrubbed; INFO and below become DEBUG."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text = f"{text} ({type(exc).__name__}: {exc})"
            level = logging.DEBUG if record.levelno < logging.WARNING else logging.INFO
            log.log(level, "twine: %s", redact(text, _current_secrets()))
        except Exception:  # noqa: BLE001 - logging must never break an upload
            self.handleError(record)


def _plain(objects: tuple[Any, ...], sep: str) -> str:
    """What ``rich.print`` would have shown, without its markup."""
    text = sep.join(str(o) for o in objects)
    try:
        from rich.errors import MarkupError
        from rich.text import Text
    except ImportError:  # twine without rich: its text is already plain
        return text
    try:
        return Text.from_markup(text).plain
    except MarkupError:  # malformed markup: show it raw
        return text


def _make_router(original: Callable[..., None]) -> Callable[..., None]:
    def routed_print(*objects: Any, sep: str = " ", end: str = "\n", **kwargs: Any) -> None:
        if not getattr(_capture, "active", False):
            original(*objects, sep=sep, end=end, **kwargs)
            return
        text = _plain(objects, sep).strip()
        if text:
            log.debug("twine: %s", redact(text, _current_secrets()))

    routed_print.namekeeper_router = True  # type: ignore[attr-defined]
    return routed_print


def install_output_capture() -> None:
    """Route twine's rich prints and log records into our logger (once per process).

    ``redirect_stdout`` would swap the process-wide ``sys.stdout`` under every
    other thread; instead the ``print`` that twine's modules imported from
    ``rich`` is replaced by a router that diverts only calls made inside our
    `capturing` block on the same thread and passes every other call through.
    The ``twine`` logger stops propagating: its records reach the root handlers
    through our logger, scrubbed.
    """
    import twine.commands.upload  # here: a process that never uploads never imports twine's
    import twine.repository  # upload machinery (keyring, rich, requests-toolbelt)

    global _installed
    with _install_lock:
        if _installed:
            return
        for module in (twine.commands.upload, twine.repository):
            original = getattr(module, "print", None)
            if callable(original) and not getattr(original, "namekeeper_router", False):
                setattr(module, "print", _make_router(original))  # noqa: B010 - mypy-safe patch
        twine_logger = logging.getLogger("twine")
        if not any(isinstance(h, _TwineLogBridge) for h in twine_logger.handlers):
            twine_logger.addHandler(_TwineLogBridge())
        twine_logger.propagate = False
        _installed = True


@contextmanager
def capturing(secrets: tuple[str, ...]) -> Iterator[None]:
    """Inside this block, on this thread, twine's output goes to our logger with ``secrets`` scrubbed."""
    install_output_capture()
    previous = getattr(_capture, "active", False), _current_secrets()
    _capture.active, _capture.secrets = True, secrets
    try:
        yield
    finally:
        _capture.active, _capture.secrets = previous
