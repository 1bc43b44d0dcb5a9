"""The plugin manager: built-ins first, then entry points one at a time.

pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that fails
to import; loading one by one lets a broken third-party plugin be reported by
name while every other plugin keeps working.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "namekeeper"
#: Set to 1 to load only the built-ins (e.g. to rule out a misbehaving plugin).
ENV_DISABLE_PLUGINS = "NAMEKEEPER_DISABLE_PLUGINS"

BUILTIN_PLUGINS = (
    "namekeeper.store_backends",
    "namekeeper.public.simple",
    "namekeeper.placeholder",
    "namekeeper.reserve.twine",
    "namekeeper.notify.apprise",
    "namekeeper.sources.artifactory",
    "namekeeper.sources.poll",
)


@dataclass
class PluginReport:
    """What was loaded, and what could not be, with the reason."""

    loaded: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)


def get_plugin_manager(*, load_entry_points: bool | None = None) -> tuple[pluggy.PluginManager,
                                                                          PluginReport]:
    """A ready plugin manager and a report of what was loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    report = PluginReport()
    for module_name in BUILTIN_PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a built-in that this checkout does not have yet
        pm.register(module, name=module_name)
        report.loaded.append(module_name)
    if load_entry_points is None:
        load_entry_points = os.environ.get(ENV_DISABLE_PLUGINS, "") in ("", "0")
    if load_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
                pm.check_pending()
            except Exception as exc:  # noqa: BLE001 - any plugin error must not stop the others
                if pm.has_plugin(ep.name):
                    pm.unregister(name=ep.name)
                report.broken[ep.name] = f"{type(exc).__name__}: {exc}"
                log.error("plugin %r (%s) could not be loaded and is ignored: %s",
                          ep.name, ep.value, report.broken[ep.name])
                continue
            report.loaded.append(ep.name)
    pm.check_pending()
    return pm, report
