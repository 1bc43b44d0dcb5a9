"""The built-in store backends, chosen by ``[store] url`` through the ``namekeeper_store`` hook.

SQLite (a plain path, or ``sqlite:///path``) is the embedded default;
``postgresql://`` is the database several replicas share.  A third-party
plugin serves another scheme by implementing the same hook (it runs first:
these are ``trylast``), returning None for URLs that are not its own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..config import Config
from ..errors import StoreError
from ..hookspecs import hookimpl
from .interface import StoreBackend, StoreUnavailable

POSTGRES_SCHEMES = ("postgresql", "postgres")


@hookimpl(trylast=True)
def namekeeper_store(config: Config) -> StoreBackend | None:
    url = config.store.url
    if url is None:
        from .sqlite import Store

        path = config.store.path
        try:
            return Store(path)
        except StoreError as exc:
            raise StoreError(f"[store] path {path} is not a namekeeper database "
                             f"({exc.__cause__ or exc})") from None
        except OSError as exc:
            raise StoreError(f"[store] path {path} cannot be created or opened: "
                             f"{exc.strerror or exc}") from None
    if urlsplit(url).scheme not in POSTGRES_SCHEMES:
        return None
    try:
        from .postgres import PostgresStore
    except ImportError:
        raise StoreUnavailable("a postgresql:// store needs psycopg: "
                               "pip install 'namekeeper[postgresql]'") from None
    password = config.store.password.reveal() if config.store.password else None
    # The schema is created (first use) or refused (too old/new) by `app.open_store`.
    return PostgresStore(url, password=password, create_schema=False)
