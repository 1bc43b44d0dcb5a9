"""A third-party namekeeper notifier: each alert becomes one JSON line in a file.

The file is named by the environment variable NAMEKEEPER_EXAMPLE_NOTIFIER_FILE;
without it the plugin contributes no notifier.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from namekeeper.hookspecs import hookimpl
from namekeeper.model import Outcome
from namekeeper.notify.interface import Message, Notifier
from namekeeper.notify.render import render

ENV_FILE = "NAMEKEEPER_EXAMPLE_NOTIFIER_FILE"


class JsonLinesNotifier(Notifier):
    """Appends one JSON object per alert to ``path``."""

    def __init__(self, path: Path) -> None:
        self.name = "example:jsonl"
        self.path = path

    def wants(self, tags: frozenset[str]) -> bool:
        return True  # every alert worth telling; look at ``tags`` to be choosier

    def notify(self, outcome: Outcome) -> bool:
        return self.deliver(render(outcome), outcome)

    def deliver(self, message: Message, outcome: Outcome) -> bool:
        line = json.dumps({
            "name": outcome.name,
            "verdict": outcome.verdict.value,
            "action": outcome.action.value,
            "tags": sorted(message.tags),
            "title": message.title,
            "text": message.text,
        })
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        return True


@hookimpl
def namekeeper_notifiers(config: object) -> list[Notifier]:
    path = os.environ.get(ENV_FILE)
    return [JsonLinesNotifier(Path(path))] if path else []
