"""``GET /+namekeeper/status``: what the devpi plugin has done, and whether it can.

JSON by default, a plain HTML page for a browser.  It follows devpi's own read
access: a name is shown only when the requester may read (``pkg_read``) the
index it was uploaded to.  Nothing secret is in it: the token is reported as
present or not, messages were scrubbed before they were stored.

It also flags a devpi setting that lets dependency confusion through devpi
itself: an opted-in index whose inheritance reaches a mirror while
``mirror_whitelist`` covers one of its private names (devpi then merges the
public releases of that name into the private index).
"""

from __future__ import annotations

import html
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .devpi_face import DevpiFace

log = logging.getLogger(__name__)

ROUTE_NAME = "namekeeper-status"
ROUTE_PATH = "/+namekeeper/status"


def add_status_route(pyramid_config: Any, face: DevpiFace) -> None:
    def view(request: Any) -> Any:
        report = status_report(face, request)
        if _wants_html(request):
            return _response(request, render_html(report).encode(), "text/html; charset=utf-8")
        return _response(request, json.dumps(report, indent=2).encode(), "application/json")

    pyramid_config.add_route(ROUTE_NAME, ROUTE_PATH)
    pyramid_config.add_view(view, route_name=ROUTE_NAME, request_method="GET")


def _wants_html(request: Any) -> bool:
    # No Accept header, or */*: JSON.  A browser ranks text/html above */*.
    offers = request.accept.acceptable_offers(["application/json", "text/html"])
    return bool(offers) and offers[0][0] == "text/html"


def _response(request: Any, body: bytes, content_type: str) -> Any:
    from pyramid.response import Response

    return Response(body=body, content_type=content_type.split(";")[0],
                    charset="utf-8" if "charset" in content_type else None)


# ---------------------------------------------------------------------------------------------
# the report


def status_report(face: DevpiFace, request: Any) -> dict[str, Any]:
    """The status as plain data (runs inside devpi's request transaction)."""
    readable, indexes = _readable_indexes(face, request)
    return {"plugin": _health(face, readable), "indexes": indexes,
            "names": _names(face, readable)}


def _readable_indexes(face: DevpiFace, request: Any) -> tuple[set[str], list[dict[str, Any]]]:
    from .devpi_face import INDEX_KEY

    readable: set[str] = set()
    opted = []
    model = face.xom.model
    for user in model.get_userlist():
        for stage in user.getstages():
            if not request.has_permission("pkg_read", context=stage):
                continue
            readable.add(stage.name)
            if stage.ixconfig.get("type") == "stage" and stage.ixconfig.get(INDEX_KEY, False):
                opted.append({"index": stage.name, "mirror_whitelist_leaks": whitelist_leaks(stage)})
    return readable, opted


def whitelist_leaks(stage: Any) -> list[dict[str, str]]:
    """Private names of ``stage`` whose public releases devpi would merge in from a mirror.

    devpi's own rule (model.py ``op_sro_check_mirror_whitelist``), read from the
    index configs alone so that no mirror is asked anything: walking the
    inheritance order, each private stage's ``mirror_whitelist`` is combined
    (``intersection`` for indexes made since devpi 6, ``union`` when the key is
    missing), and a name the combined list covers (or ``*``) is not hidden when
    the walk reaches a mirror.
    """
    inheritance = stage.ixconfig.get("mirror_whitelist_inheritance", "union")
    sro = list(stage.sro())
    mirrors = [s for s in sro if s.ixconfig.get("type") == "mirror"]
    if not mirrors:
        return []
    private_names: set[str] = set()
    for s in sro:
        if s.ixconfig.get("type") != "mirror":
            private_names.update(s.list_projects_perstage())
    leaks = []
    for name in sorted(private_names):
        whitelist: set[str] | None = None
        for s in sro:
            if s.ixconfig.get("type") == "mirror":
                break  # not whitelisted before the first mirror: devpi hides its releases
            own = set(s.ixconfig.get("mirror_whitelist") or ())
            if whitelist is None:
                whitelist = own
            elif inheritance == "intersection":
                whitelist &= own
            else:
                whitelist |= own
            if whitelist & {"*", name}:  # once whitelisted, devpi lets the mirror's releases in
                mirror = mirrors[0].name
                leaks.append({"name": name, "mirror": mirror,
                              "reason": f"mirror_whitelist of {s.name} lets {mirror}'s releases "
                                        f"of {name} into {stage.name}"})
                break
    return leaks


def _health(face: DevpiFace, readable: set[str]) -> dict[str, Any]:
    from ..health import FAILED_REASON
    from ..store.interface import QueueState
    from ..upload_hold import CONDITION_MISSING
    from ..worker import CONDITION_UNREACHABLE
    from .interface import CONDITION_PREFIX, LOOP_DIED_PREFIX

    service = face.service
    problems = [p for p in (face.problem, face.intake_error) if p]
    data: dict[str, Any] = {
        "role": face.role,
        "config": str(face.config_path) if face.config_path else None,
        "config_loaded": face.config is not None,
        "working": face.running,
        "problems": problems,
        "unrecorded_uploads": face.unrecorded_count(),
    }
    if service is None or face.config is None:
        data["healthy"] = face.role == "replica" and face.config_path is not None
        return data
    keeper = service.keeper
    limit = face.config.queue.new_projects_per_hour
    conditions = []
    try:
        pending = service.store.queue_items(QueueState.PENDING)
        data["budget_left"] = service.store.budget_left(limit)
        data["queue"] = service.store.queue_counts()
        conditions = service.store.conditions()  # service-wide problems serve would report too
    except Exception as exc:  # noqa: BLE001 - a broken store is what the page must show
        problems.append(f"the store cannot be read: {type(exc).__name__}: {exc}")
        pending = []
    # While the service runs, its reasons below give a source's problem in the live words of
    # the replica that runs the source; the condition's copy would say it twice.  A loop that
    # died in a process is that process's problem (its own reasons say so), not this one's.
    problems += [c.text for c in conditions
                 if not (face.running and c.key.startswith(CONDITION_PREFIX))
                 and not c.key.startswith(LOOP_DIED_PREFIX)]
    data["budget_limit"] = limit
    missing = keeper.missing_credentials()
    data["token_present"] = missing is None
    if missing and not any(c.key == CONDITION_MISSING for c in conditions):  # said once
        problems.append(missing)
    unreachable = [i for i in pending if "public index unavailable" in (i.get("last_error") or "")]
    data["public_index_reachable"] = not unreachable and not any(
        c.key == CONDITION_UNREACHABLE for c in conditions)
    if unreachable:
        problems.append(f"the public index is unreachable ({len(unreachable)} name(s) waiting)")
    if face.running:
        # The same reasons `namekeeper serve` gives on /healthz (budget paused, stuck leases, ...),
        # but FAILED names only of indexes the requester may read, as in "names".
        problems += [r for r in service.healthy()[1]["reasons"]
                     if r not in problems and FAILED_REASON not in r]
        failed = _failed_reason(face, readable)
        if failed:
            problems.append(failed)
    else:
        problems.append("the background worker is not running (--requests-only, or it stopped)")
    data["healthy"] = not problems
    return data


def _failed_reason(face: DevpiFace, readable: set[str], sample: int = 3) -> str | None:
    """How many names ended FAILED, naming only those of indexes the requester may read."""
    from ..health import FAILED_REASON
    from .devpi_face import SOURCE

    assert face.service is not None
    store = face.service.store
    try:  # the store's own count, as /healthz gives it; the first thousand to choose from
        count, some = store.failed_names(sample=1000)
        failed = store.records(some).values()
    except Exception:  # noqa: BLE001 - reported in the health part
        return None
    if not count:
        return None
    shown = sorted(rec.name for rec in failed
                   if rec.first_source == SOURCE and rec.first_index in readable)
    text = f"{count} {FAILED_REASON}"
    if shown:
        more = f" and {len(shown) - sample} more" if len(shown) > sample else ""
        text += f": {', '.join(shown[:sample])}{more}"
    hidden = count - len(shown)
    return text + (f" ({hidden} not shown here: `namekeeper status` lists them)" if hidden else "")


def _names(face: DevpiFace, readable: set[str]) -> list[dict[str, Any]]:
    from .devpi_face import SOURCE

    service = face.service
    if service is None:
        return []
    try:
        queue = {item["name"]: item for item in service.store.queue_items()}
        records = service.store.all_names()
    except Exception:  # noqa: BLE001 - reported in the health part
        return []
    rows = []
    for rec in records:
        if rec.first_source != SOURCE or rec.first_index not in readable:
            continue
        q = queue.get(rec.name, {})
        rows.append({
            "name": rec.name, "display_name": rec.display_name, "index": rec.first_index,
            "verdict": rec.verdict, "severity": rec.severity, "action": rec.action,
            "message": rec.message,
            "first_seen": rec.first_seen_private.isoformat() if rec.first_seen_private else None,
            "updated_at": rec.updated_at.isoformat() if rec.updated_at else None,
            "reserved_at": rec.reserved_at.isoformat() if rec.reserved_at else None,
            "queue": q.get("state"), "attempts": q.get("attempts", 0),
            "last_error": q.get("last_error"),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# HTML


def render_html(report: dict[str, Any]) -> str:
    e = html.escape
    plugin = report["plugin"]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>"
             "<title>namekeeper status</title></head><body>", "<h1>namekeeper</h1>",
             f"<p>{'healthy' if plugin.get('healthy') else 'NOT healthy'} "
             f"({e(str(plugin.get('role')))})</p>"]
    if plugin.get("problems"):
        parts.append("<ul>" + "".join(f"<li>{e(p)}</li>" for p in plugin["problems"]) + "</ul>")
    facts = {k: v for k, v in plugin.items() if k not in ("problems",)}
    parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>"
                                     for k, v in facts.items()) + "</table>")
    parts.append("<h2>Opted-in indexes</h2><ul>")
    for ix in report["indexes"]:
        leaks = "".join(f"<br>WARNING: {e(leak['reason'])}" for leak in ix["mirror_whitelist_leaks"])
        parts.append(f"<li>{e(ix['index'])}{leaks}</li>")
    parts.append("</ul><h2>Names</h2>")
    columns = ["name", "index", "verdict", "severity", "action", "queue", "updated_at", "message"]
    parts.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
    for row in report["names"]:
        parts.append("<tr>" + "".join(f"<td>{e(str(row.get(c) or ''))}</td>" for c in columns)
                     + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
