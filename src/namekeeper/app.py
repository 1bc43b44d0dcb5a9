"""The composition root: one config → plugins → store → keeper.

The CLI and the server both start here, so a third-party plugin is picked up
the same way whichever face of namekeeper runs.
"""

from __future__ import annotations

import pluggy

from .config import Config
from .errors import ConfigError, StoreError
from .keeper import Keeper
from .notify.interface import Notifier
from .plugins import get_plugin_manager
from .store.interface import StoreBackend


def open_store(config: Config, pm: pluggy.PluginManager | None = None, *,
               any_schema: bool = False) -> StoreBackend:
    """The store ``config.store`` names, from whichever plugin serves its URL.

    A store that cannot be used raises a one-line `StoreError` saying why; so does one
    whose schema is older or newer than this code's, unless ``any_schema`` (for `migrate`).
    """
    pm = pm or get_plugin_manager()[0]
    store: StoreBackend | None = pm.hook.namekeeper_store(config=config)
    if store is None:
        scheme = (config.store.url or "").partition(":")[0]
        raise ConfigError(f"[store] url: no installed plugin provides a {scheme!r} store")
    if any_schema:
        return store
    try:
        version = store.schema_version()
        if version.found == 0:  # an empty database: created on first use, like a new SQLite file
            store.migrate()
            version = store.schema_version()
        problem = version.problem()
        if problem:
            raise StoreError(f"the store at {store.location}: {problem}")
    except BaseException:
        store.close()  # a pool left to the garbage collector dies noisily in its own thread
        raise
    return store


def notifiers_for(config: Config, pm: pluggy.PluginManager | None = None) -> list[Notifier]:
    """Every notifier every plugin contributes, flattened."""
    pm = pm or get_plugin_manager()[0]  # it logs any broken plugin itself
    return [n for batch in pm.hook.namekeeper_notifiers(config=config) for n in (batch or [])]


def build_keeper(config: Config, *, with_notifiers: bool = True,
                 store: StoreBackend | None = None, pm: pluggy.PluginManager | None = None,
                 with_listing: bool = True, for_queue: bool = False) -> tuple[Keeper, StoreBackend]:
    """A keeper wired to the plugins' lookup, builder, backend and (optionally) notifiers.

    ``for_queue``: the keeper of a `WorkerPool`, which retries transient failures itself and
    alerts only when it gives up, so the keeper does not alert on them; its service also
    retries the deliveries that failed (a command leaves them to a service on its store).
    """
    pm = pm or get_plugin_manager()[0]  # it logs any broken plugin itself
    public = pm.hook.namekeeper_public_index(config=config)
    if public is None:
        raise RuntimeError("no plugin provides a public index lookup")
    builder = pm.hook.namekeeper_placeholder_builder(config=config)
    backend = pm.hook.namekeeper_reservation_backend(config=config)
    notifiers = notifiers_for(config, pm) if with_notifiers else []
    store = store or open_store(config, pm)  # last: nothing above can leave it open
    alerts = None
    if notifiers:
        from .notify.dispatch import Dispatcher

        alerts = Dispatcher.from_config(config, notifiers, store.delivery_log(),
                                        retries_here=for_queue)
    keeper = Keeper(config, store, public, builder, backend, alerts, notify_transient=not for_queue)
    if with_listing:
        from .public.listing import cached_listing

        # A fresh listing left by `audit` lets a "too similar" name be PROTECTED before any upload.
        keeper.listing = cached_listing(config.public)
        keeper.reads_listing_cache = True
    return keeper, store
