"""`StoreBackend` in SQL both built-in backends run: every part of the store in one class.

A backend subclasses `SqlStore` and supplies its connections, transactions and
the few things only it knows (see `sql.SqlBase`): `sqlite.Store` and
`postgres.PostgresStore`.
"""

from __future__ import annotations

from .sql_budget import SqlBudget
from .sql_placeholders import SqlPlaceholders
from .sql_queue import SqlQueue
from .sql_transfer import SqlTransfer
from .sql_watch import SqlWatch


class SqlStore(SqlQueue, SqlBudget, SqlPlaceholders, SqlWatch, SqlTransfer):
    """The store's contract on SQL; abstract until a backend gives it connections."""
