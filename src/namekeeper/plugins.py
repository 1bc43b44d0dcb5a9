"""The plugin manager: every plugin, built-in or not, comes from an entry point.

The built-ins (public lookup, placeholder builder, twine backend, apprise,
Artifactory, poller) are declared in namekeeper's own ``pyproject.toml`` under
the ``namekeeper`` entry-point group and loaded exactly like a third party's
plugin; their hooks are ``trylast`` so an installed plugin wins a firstresult
hook.  pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that
fails to import; loading one by one lets a broken plugin, ours or not, be
reported by name while every other plugin keeps working.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

import pluggy

from . import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "namekeeper"
#: The distribution whose entry points are the built-ins.
BUILTIN_DISTRIBUTION = "namekeeper"
#: Set to 1 to load only the built-ins (e.g. to rule out a misbehaving plugin).
ENV_DISABLE_PLUGINS = "NAMEKEEPER_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin, as `namekeeper plugins` lists it."""

    name: str  # the entry point's name; also the key of its ``[plugins.<name>]`` table
    module: str  # what the entry point points at
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool


@dataclass
class PluginReport:
    """What was loaded, and what could not be, with the reason."""

    plugins: list[PluginInfo] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)

    @property
    def loaded(self) -> list[str]:
        return [p.name for p in self.plugins]


def _distribution(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = ep.dist
    if dist is None:
        return None, None
    metadata = dist.metadata  # parsed anew by every access of dist.metadata or dist.version
    return metadata["Name"], metadata["Version"]


def _entry_points() -> list[tuple[EntryPoint, str | None, str | None, bool]]:
    """The group's entry points with their distribution's name and version and whether they
    are built-in; built-ins first, each name once (the first found wins)."""
    found = []
    known: dict[int, tuple[str | None, str | None]] = {}  # a distribution's entry points share it
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if id(ep.dist) not in known:
            known[id(ep.dist)] = _distribution(ep)
        dist, version = known[id(ep.dist)]
        found.append((ep, dist, version, dist is not None and dist.lower() == BUILTIN_DISTRIBUTION))
    found.sort(key=lambda f: not f[3])
    seen: set[str] = set()
    unique = []
    for entry in found:
        if entry[0].name not in seen:
            seen.add(entry[0].name)
            unique.append(entry)
    return unique


def get_plugin_manager(*, third_party: bool | None = None) -> tuple[pluggy.PluginManager,
                                                                    PluginReport]:
    """A ready plugin manager and a report of what was loaded.

    ``third_party=False`` loads only namekeeper's own entry points; None asks
    ``$NAMEKEEPER_DISABLE_PLUGINS``.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    report = PluginReport()
    if third_party is None:
        third_party = os.environ.get(ENV_DISABLE_PLUGINS, "") in ("", "0")
    for ep, dist, version, builtin in _entry_points():
        if not (builtin or third_party) or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
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
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        report.plugins.append(PluginInfo(ep.name, ep.value, dist, version, hooks, builtin))
    if not any(p.builtin for p in report.plugins) and not report.broken:
        log.error("none of namekeeper's built-in plugins is registered as an entry point: "
                  "is namekeeper installed (pip install namekeeper, or pip install -e .)?")
    pm.check_pending()
    return pm, report
