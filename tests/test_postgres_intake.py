"""Round trips to PostgreSQL: a batch of webhooks costs a fixed number of statements, whatever
its size, and a read is one statement.

Each statement is a round trip to the database server, and intake throughput on
a shared database is bounded by round trips, not by the database's work: a
batch of 200 webhooks must cost what a batch of 2 does (the group commit's
whole point).  The answers themselves are the contract suite's business
(tests/test_store_contract.py, on both backends).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg._connection_base import BaseConnection

from _postgres import PostgresServer
from namekeeper.model import NameEvent
from namekeeper.store.postgres import PooledConnection, PostgresStore

pytestmark = pytest.mark.slow


def ev(name: str, key: str, version: str = "1.0") -> NameEvent:
    return NameEvent(name=name, display_name=name, source="artifactory", index="pypi-local",
                     version=version, key=key)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the store sends from here on (in this process), BEGIN and COMMIT too."""
    sent: list[str] = []
    real = psycopg.Cursor.execute
    # psycopg sends BEGIN, COMMIT and ROLLBACK through this one (private) method.
    real_command = BaseConnection._exec_command

    def counted(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return real(self, query, *args, **kwargs)

    def command(self: BaseConnection[Any], command: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(command.decode() if isinstance(command, bytes) else str(command))
        return real_command(self, command, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    monkeypatch.setattr(BaseConnection, "_exec_command", command)
    return sent


@pytest.fixture
def store(postgres: PostgresServer) -> Iterator[PostgresStore]:
    # One connection: every call draws the one the call before gave back.
    opened = PostgresStore(postgres.new_database(), password=postgres.password, max_size=1)
    yield opened
    opened.close()


def statements_for(store: PostgresStore, sent: list[str], events: list[NameEvent]) -> int:
    sent.clear()
    assert store.accept_many(events) == [True] * len(events)
    return len(sent)


def test_a_batch_of_new_names_costs_what_two_cost(store: PostgresStore,
                                                   statements: list[str]) -> None:
    two = statements_for(store, statements, [ev(f"acme-{i}", f"a{i}") for i in range(2)])
    many = statements_for(store, statements, [ev(f"acme-b{i}", f"b{i}") for i in range(200)])
    assert many == two
    assert store.queue_counts()["pending"] == 202


def test_a_batch_of_known_names_with_new_versions_costs_what_two_cost(
        store: PostgresStore, statements: list[str]) -> None:
    store.accept_many([ev(f"acme-{i}", f"a{i}") for i in range(200)])
    two = statements_for(store, statements, [ev(f"acme-{i}", f"b{i}", "2.0") for i in range(2)])
    many = statements_for(store, statements,
                          [ev(f"acme-{i}", f"c{i}", "3.0") for i in range(200)])
    assert many == two
    record = store.get("acme-150")
    assert record is not None and record.highest_private_version == "3.0"


def test_a_read_is_one_statement(store: PostgresStore, statements: list[str]) -> None:
    store.accept(ev("acme-a", "a"))  # the connection was given back just now
    statements.clear()
    record = store.get("acme-a")
    assert store.get("acme-b") is None
    assert record is not None and record.name == "acme-a"
    # Neither a check of the connection nor a BEGIN and COMMIT around it.
    assert statements == ["SELECT * FROM names WHERE name = %s"] * 2


def test_a_batch_is_one_transaction_of_three_statements(store: PostgresStore,
                                                        statements: list[str]) -> None:
    store.accept(ev("acme-a", "a"))
    assert statements_for(store, statements, [ev("acme-b", "b"), ev("acme-c", "c")]) == 5
    assert (statements[0], statements[-1]) == ("BEGIN", "COMMIT")


def test_a_connection_that_sat_idle_is_checked_before_it_is_used(
        store: PostgresStore, statements: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PooledConnection, "UNCHECKED_FOR", 0.0)  # every connection "sat idle"
    statements.clear()
    assert store.get("acme-a") is None
    assert statements == ["", "SELECT * FROM names WHERE name = %s"]


def test_a_connection_the_server_closed_while_it_sat_in_the_pool_is_replaced_not_failed(
        store: PostgresStore, postgres: PostgresServer, statements: list[str]) -> None:
    # As a restart or an administrator does: the server says "terminating connection" and
    # hangs up, moments after the connection came back (too soon for the idle check).
    store.accept(ev("acme-a", "a"))
    database = urlsplit(store.url).path.lstrip("/")
    with postgres.connect() as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s", (database,))
        for _ in range(100):  # a backend says why before it exits
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                (database,)).fetchone()
            if row and row[0] == 0:
                break
            time.sleep(0.05)
    statements.clear()
    assert store.accept(ev("acme-b", "b")) is True  # not StoreUnavailable
    assert store.get("acme-b") is not None
    assert statements[0] == ""  # the closed connection was checked, and a new one drawn
