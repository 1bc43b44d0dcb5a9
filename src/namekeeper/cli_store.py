"""`namekeeper store migrate` and `namekeeper store copy --from A --to B`.

A store is named as ``[store] url`` names it: a path, ``sqlite:///path`` or
``postgresql://user@host/db`` (password from NAMEKEEPER_STORE_PASSWORD).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace

from .cli_help import add_command
from .config import Config, store_config_for
from .errors import StoreError


def add_parser(sub: argparse._SubParsersAction,
               common: Callable[..., None]) -> None:
    p = sub.add_parser("store", help="create, upgrade or copy the store")
    actions = p.add_subparsers(dest="store_command", metavar="ACTION")
    actions.required = True
    m = add_command(actions, "migrate")
    common(m, top=False)
    c = add_command(actions, "copy")
    c.add_argument("--from", dest="source", required=True, metavar="STORE",
                   help="path, sqlite:///path or postgresql://user@host/db")
    c.add_argument("--to", dest="target", required=True, metavar="STORE",
                   help="an empty store (created if missing), named the same way")
    common(c, top=False)
    common(p, top=False)


def run(args: argparse.Namespace, config: Config) -> int:
    from .app import open_store

    if args.store_command == "migrate":
        store = open_store(config, any_schema=True)
        try:
            version = store.migrate()
        finally:
            store.close()
        _report(args, {"store": store.location, "from_version": version.found,
                       "to_version": version.known},
                f"store at {store.location}: schema version {version.found} -> {version.known}"
                if version.found != version.known else
                f"store at {store.location}: schema version {version.known}, nothing to do")
        return 0
    source_config = store_config_for(args.source, "--from")
    if source_config.url is None and not source_config.path.exists():
        # Opening it would create an empty store, and copying that would look like success.
        raise StoreError(f"--from {args.source}: no such store (no file at {source_config.path})")
    source = open_store(replace(config, store=source_config), any_schema=True)
    try:
        if source.schema_version().found == 0:
            raise StoreError(f"--from {source.location}: it holds no namekeeper store")
        problem = source.schema_version().problem()
        if problem:
            raise StoreError(f"the store at {source.location}: {problem}")
        target = open_store(replace(config, store=store_config_for(args.target, "--to")), any_schema=True)
        try:
            if target.schema_version().found == 0:
                target.migrate()  # a brand-new database
            problem = target.schema_version().problem()
            if problem:
                raise StoreError(f"the store at {target.location}: {problem}")
            if source.location == target.location:
                raise StoreError("--from and --to name the same store")
            snapshot = source.snapshot()
            target.restore(snapshot)
        finally:
            target.close()
    finally:
        source.close()
    counts = {table: len(rows) for table, rows in snapshot.tables.items()}
    _report(args, {"from": source.location, "to": target.location, "rows": counts},
            f"copied {counts['names']} name(s), {counts['history']} history entries, "
            f"{counts['queue']} queue item(s), {counts['events']} event(s), "
            f"{counts['delivered'] + counts['delivery_retries']} delivery record(s) "
            f"from {source.location} to {target.location}")
    return 0


def _report(args: argparse.Namespace, data: dict[str, object], line: str) -> None:
    print(json.dumps(data, indent=2) if args.format == "json" else line)
