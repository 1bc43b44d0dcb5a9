"""namekeeper as a devpi-server plugin (entry point ``namekeeper`` in the ``devpi_server`` group).

Install ``namekeeper[devpi]`` into devpi-server's environment, start it with
``--namekeeper-config /etc/namekeeper.toml`` (or ``DEVPISERVER_NAMEKEEPER_CONFIG``),
and opt an index in with ``devpi index acme/prod reserve_public_names=True``.

These are only the hook implementations; the work is in `devpi_face` (intake,
backfill, the worker thread) and `devpi_status` (the ``/+namekeeper/status``
route).  devpi calls the upload hook in its event thread, on every replica, for
doc uploads, pushes and imports too, and swallows what it raises (FIELD-NOTES,
"devpi-server"): so the hook only journals a `NameEvent` durably and returns;
the public index is spoken to by namekeeper's own workers, on devpi's thread
pool, with the same `Service` (store, queue, `WorkerPool`, budget, alerts) as
``namekeeper serve``.
"""

from __future__ import annotations

import logging
from typing import Any

from pluggy import HookimplMarker

from .devpi_face import INDEX_KEY, DevpiFace, face_for, upload_event

log = logging.getLogger(__name__)

hookimpl = HookimplMarker("devpiserver")

#: What ``GET /+api`` lists among the server's features when the plugin is installed.
FEATURE = "namekeeper"


@hookimpl
def devpiserver_add_parser_options(parser: Any) -> None:
    group = parser.addgroup("namekeeper")
    group.addoption(
        "--namekeeper-config", metavar="PATH", default=None,
        help="namekeeper's config file (TOML). Release files uploaded to an index with "
             f"{INDEX_KEY}=True get their names held on the public index. Without it the "
             "namekeeper plugin does nothing.")


@hookimpl
def devpiserver_indexconfig_defaults(index_type: str) -> dict[str, Any]:
    # Only private (stage) indexes hold our names; a mirror never opts in.
    return {INDEX_KEY: False} if index_type == "stage" else {}


@hookimpl
def devpiserver_get_features() -> set[str]:
    return {FEATURE}


@hookimpl
def devpiserver_pyramid_configure(config: Any, pyramid_config: Any) -> None:
    from .devpi_status import add_status_route

    xom = pyramid_config.registry["xom"]
    face = DevpiFace.for_server(xom)
    add_status_route(pyramid_config, face)
    # devpi-web registers its threads the same way; --requests-only runs no background work.
    if face.will_work() and not config.requests_only:
        xom.thread_pool.register(face.worker_thread())


@hookimpl
def devpiserver_on_upload(stage: Any, project: str, version: str, link: Any) -> None:
    if link.rel != "releasefile" or stage.xom.is_replica():
        return  # doc zips, toxresults; a replica replaying history
    if not stage.ixconfig.get(INDEX_KEY, False):  # an index created before the plugin lacks it
        return
    face = face_for(stage.xom)
    if face is not None:
        face.accept(upload_event(stage, project, version))
