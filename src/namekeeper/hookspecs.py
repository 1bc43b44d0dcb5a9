"""The extension points of namekeeper.

Every hook is a factory called once per process with the loaded `Config`: it
returns the object that does the work (see each folder's ``interface.py``).
Built-in capabilities implement these hooks exactly as a third-party plugin
would, marked ``trylast`` so that an installed plugin wins a firstresult hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config import Config
    from .notify.interface import Notifier
    from .placeholder.interface import PlaceholderBuilder
    from .public.interface import PublicIndex
    from .reserve.interface import ReservationBackend
    from .sources.interface import EventSource
    from .store.interface import StoreBackend

PROJECT_NAME = "namekeeper"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def namekeeper_event_sources(config: Config) -> list[EventSource]:
    """Return the sources (webhook receivers, pollers) this plugin runs under `namekeeper serve`."""


@hookspec(firstresult=True)
def namekeeper_public_index(config: Config) -> PublicIndex | None:
    """Return the object that answers "who holds this name on the public index?"."""


@hookspec(firstresult=True)
def namekeeper_placeholder_builder(config: Config) -> PlaceholderBuilder | None:
    """Return the object that builds the placeholder files uploaded for a name."""


@hookspec(firstresult=True)
def namekeeper_reservation_backend(config: Config) -> ReservationBackend | None:
    """Return the object that uploads a placeholder and reports the public index's answer."""


@hookspec
def namekeeper_notifiers(config: Config) -> list[Notifier]:
    """Return the notifiers this plugin contributes; each receives every `Outcome` worth telling."""


@hookspec(firstresult=True)
def namekeeper_store(config: Config) -> StoreBackend | None:
    """Return the store for ``config.store`` (its ``url``'s scheme, or SQLite at its ``path``).

    Return None for a URL this plugin does not serve, so that another plugin can.
    """
