"""A third-party namekeeper notifier: each alert becomes one JSON line in a file.

Its settings come from its own table in namekeeper's config file, named after
its entry point (``example``)::

    [plugins.example]
    file = "/var/log/namekeeper-alerts.jsonl"
    signing-key = { env = "EXAMPLE_SIGNING_KEY" }   # a secret: read from the environment

Without ``file`` the plugin contributes no notifier.  With a signing key each
line carries an HMAC of its content, so a reader can tell it came from us; the
key itself is a `Secret` and never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from namekeeper.config import Config, Secret
from namekeeper.hookspecs import hookimpl
from namekeeper.model import Outcome
from namekeeper.notify.interface import Message, Notifier

PLUGIN_NAME = "example"  # the entry point's name, hence the [plugins.example] table


class JsonLinesNotifier(Notifier):
    """Appends one JSON object per alert to ``path``."""

    def __init__(self, path: Path, signing_key: Secret | None = None) -> None:
        self.name = "example:jsonl"
        self.path = path
        self.signing_key = signing_key

    def wants(self, tags: frozenset[str]) -> bool:
        return True  # every alert worth telling; look at ``tags`` to be choosier

    def deliver(self, message: Message, outcome: Outcome) -> bool:
        record = {
            "name": outcome.name,
            "verdict": outcome.verdict.value,
            "action": outcome.action.value,
            "tags": sorted(message.tags),
            "title": message.title,
            "text": message.text,
        }
        body = json.dumps(record, sort_keys=True)
        if self.signing_key is not None:
            record["hmac"] = hmac.new(self.signing_key.reveal().encode(), body.encode(),
                                      hashlib.sha256).hexdigest()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return True


@hookimpl
def namekeeper_notifiers(config: Config) -> list[Notifier]:
    settings = config.plugin(PLUGIN_NAME)
    path = settings.get("file")
    return [JsonLinesNotifier(Path(path), settings.get("signing-key"))] if path else []
