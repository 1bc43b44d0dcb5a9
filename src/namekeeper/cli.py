"""The command line: `check`, `reserve`, `status`, `forget`, `notify --test`, `serve`, ...

Exit codes (scripts and CI rely on them; `cli_help.EXIT_CODES`): 0 every name is safe
(ours, protected, excluded, or just reserved); 1 at least one name needs attention
(free, taken, or a failed reservation); 2 usage, configuration or input error, with
nothing uploaded; 3 an index could not be asked (the answered names are still printed).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__, cli_store, names
from .cli_help import add_command
from .cli_table import Columns, print_table
from .config import Config, load
from .errors import IndexUnreachable, NamekeeperError, UsageError
from .model import Action, NameEvent, Outcome, Verdict, iso

log = logging.getLogger("namekeeper")

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: What each command can print; `serve` prints its log, and takes no --format.
FORMATS = ("table", "json")
AUDIT_FORMATS = ("table", "json", "csv", "markdown")
WATCH_FORMATS = ("table", "json", "csv")
_FAILED_ACTIONS = {Action.FAILED, Action.RATE_LIMITED, Action.TAKEN}
_FAILED_STATUS_ACTIONS = {Action.FAILED.value, Action.RATE_LIMITED.value}


def _common(parser: argparse.ArgumentParser, *, top: bool,
            formats: tuple[str, ...] = FORMATS) -> None:
    # Accepted before and after the subcommand; SUPPRESS keeps a subcommand's
    # absent option from overwriting the value given before it.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--config", metavar="PATH", default=default,
                        help="config file (TOML); default: $NAMEKEEPER_CONFIG")
    # Any word parses, in either place: `_check_format` refuses, in one line, a format the
    # command cannot print, wherever it was given.
    parser.add_argument(
        "--format", default=default, metavar="{" + ",".join(formats) + "}",
        help=("output format: table (the default) or json; audit also csv and markdown, "
              "watch also csv" if top else
              f"output format: {_words(formats)} (default table)" if formats
              else argparse.SUPPRESS))
    if not top:
        parser.set_defaults(formats=formats)
    parser.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                        help="more log output on stderr (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="print only what needs attention (nothing when all is well)")


def _words(formats: Sequence[str]) -> str:
    return ", ".join(formats[:-1]) + f" or {formats[-1]}" if len(formats) > 1 else formats[0]


def _check_format(args: argparse.Namespace) -> None:
    """``args.format`` is one the command prints ("table" when none was given), or a
    one-line usage error: a format is never silently ignored."""
    command = " ".join(filter(None, (args.command, getattr(args, "store_command", None))))
    given, formats = args.format, args.formats
    args.format = given or "table"
    if given is None or given in formats:
        return
    if not formats:
        raise UsageError(f"{command} takes no --format: what it prints is its log")
    raise UsageError(f"{command} cannot print {names.shown(given)}: --format is "
                     f"{_words(formats)}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="namekeeper",
        description="Hold your private package names on the public index; raise the alarm "
                    "when someone else holds one.")
    parser.add_argument("--version", action="version", version=f"namekeeper {__version__}")
    _common(parser, top=True, formats=AUDIT_FORMATS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for command in ("check", "reserve"):
        p = add_command(sub, command)
        p.add_argument("names", nargs="*", metavar="NAME",
                       help="project names; '-' reads names from stdin, one per line")
        p.add_argument("-r", "--names-from", action="append", default=[], metavar="FILE",
                       type=Path, help="read names from FILE, one per line ('#' comments)")
        if command == "reserve":
            p.add_argument("--dry-run", action="store_true",
                           help="decide and report; upload and write nothing")
        _common(p, top=False)

    p = add_command(sub, "status")
    _common(p, top=False)

    p = add_command(sub, "forget")
    p.add_argument("names", nargs="+", metavar="NAME")
    _common(p, top=False)

    p = add_command(sub, "notify")
    p.add_argument("--test", action="store_true",
                   help="send a test message to every configured target and report each result")
    p.set_defaults(help_parser=p)
    _common(p, top=False)

    p = add_command(sub, "serve")
    p.add_argument("--host", help="address to listen on (overrides [serve] host)")
    p.add_argument("--port", type=int, help="port to listen on (overrides [serve] port)")
    _common(p, top=False, formats=())

    p = sub.add_parser(
        "audit", help="classify every private name of an index or lock file (start here)",
        description="Classify every project of private simple indexes (--index) and every "
                    "package locked from a non-public index (--lock), against the public "
                    "index's full listing. Uploads nothing unless --reserve queues the FREE "
                    "names for `namekeeper serve`. Exit: 0 safe, 1 something FREE or TAKEN, "
                    "2 bad input, 3 an index could not be read.",
        epilog="example: namekeeper audit --index https://devpi.example.com/acme/prod/+simple/")
    p.add_argument("--index", action="append", default=[], metavar="URL",
                   help="root of a private simple index (PEP 503/691); credentials from "
                        "NAMEKEEPER_INDEX_TOKEN or NAMEKEEPER_INDEX_USERNAME + "
                        "NAMEKEEPER_INDEX_PASSWORD, or its [[poll]] entry")
    p.add_argument("--lock", action="append", default=[], metavar="PATH", type=Path,
                   help="a pylock.toml or uv.lock; packages from non-public indexes are audited")
    p.add_argument("--reserve", action="store_true",
                   help="queue every FREE name (one per ultranormalised class) for reservation")
    p.add_argument("--workers", type=int, default=8, metavar="N",
                   help="concurrent public-index lookups (default 8)")
    _common(p, top=False, formats=AUDIT_FORMATS)

    p = sub.add_parser(
        "watch", help="report public projects that look like our names or sit in our prefixes",
        description="Scan the public index's listing for projects that imitate one of our names "
                    "(every name in the store) or start with a [watch] prefix. The first scan "
                    "and any scan after our names or settings changed examine every project; "
                    "later ones only projects new since the last scan. New look-alikes go to "
                    "the notifiers (tag 'lookalike'). Exit: 0 nothing new, 1 something new, "
                    "2 bad input, 3 the public index could not be read.")
    p.add_argument("--once", action="store_true", help="scan now, report, exit")
    p.add_argument("--full", action="store_true", help="examine every public project")
    p.add_argument("--allow", action="append", default=[], metavar="GLOB",
                   help="never report public names matching this glob again (kept in the store)")
    _common(p, top=False, formats=WATCH_FORMATS)

    p = add_command(sub, "plugins")
    _common(p, top=False)
    cli_store.add_parser(sub, _common)
    return parser


def _validated(raw_names: Sequence[str]) -> list[tuple[str, str]]:
    """(canonical, display) for every name, or one UsageError naming every invalid one."""
    result, seen, problems = [], set(), []
    for raw in raw_names:
        try:
            canonical = names.canonical(raw)
        except names.InvalidName as exc:
            problems.append(str(exc))
            continue
        if canonical not in seen:
            seen.add(canonical)
            result.append((canonical, raw))
    if len(problems) == 1:
        raise UsageError(problems[0])
    if problems:
        raise UsageError(f"{len(problems)} invalid names: " + "; ".join(problems))
    return result


def _names_given(args: argparse.Namespace) -> list[str]:
    """The names of the command line, of ``-r FILE`` and of stdin (``-``), in that order."""
    given = [n for n in args.names if n != "-"]
    sources = [(str(path), path) for path in args.names_from]
    if "-" in args.names:
        sources.append(("stdin", None))
    for label, path in sources:
        try:
            text = sys.stdin.read() if path is None else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"cannot read names from {label}: {reason}") from None
        for line in text.splitlines():
            name = line.split("#", 1)[0].strip()
            if name:
                given.append(name)
    if not given:
        raise UsageError(f"no names given: name them, or use -r FILE or '-' for stdin "
                         f"(see namekeeper {args.command} --help)")
    return given


def outcome_json(outcome: Outcome, *, with_action: bool) -> dict[str, Any]:
    """The command line's public view of an outcome: a flat projection of `outcome_to_dict`.

    Built field by field (the same values): an audit renders 10,000 of these, and the full
    dict would convert the event and timestamps no row shows.
    """
    public = outcome.public
    data: dict[str, Any] = {
        "name": outcome.name, "display_name": outcome.display_name,
        "verdict": outcome.verdict.value, "severity": outcome.severity.value,
        "reason": outcome.reason,
        "owners": list(public.owners) if public else [],
        "organization": public.organization if public else None,
        "exists": public.exists if public else None,
        "highest_version": public.highest_version if public and public.versions else None,
        "first_release": iso(public.first_release) if public else None,
        "first_seen_private": iso(outcome.first_seen_private),
    }
    if with_action:
        data["action"] = outcome.action.value
        data["message"] = outcome.message
    return data


def _print_table(rows: list[dict[str, Any]], columns: Columns) -> None:
    print_table(rows, columns)


def needs_attention(outcome: Outcome) -> bool:
    """FREE (a dry run's too: it is still free), TAKEN, or a reservation that did not hold."""
    return (outcome.verdict in (Verdict.TAKEN, Verdict.FREE)
            or outcome.action in _FAILED_ACTIONS)


def _exit_code(outcomes: list[Outcome], unreachable: list[str]) -> int:
    if unreachable:
        return EXIT_UNREACHABLE
    return EXIT_ATTENTION if any(needs_attention(o) for o in outcomes) else EXIT_OK


_CHECK_COLUMNS = Columns(key=("name", "verdict", "severity"),
                         optional=("owners", "highest_version", "organization", "first_release"),
                         text="reason")
# The index's answer (message) says more than the prediction's reason.
_RESERVE_COLUMNS = Columns(key=("name", "verdict", "severity", "action"),
                           optional=("owners", "highest_version"), text="message")


def _run_names(args: argparse.Namespace, config: Config) -> int:
    from .app import build_keeper
    from .keeper_ours import missing_owner

    reserving = args.command == "reserve"
    real_run = reserving and not args.dry_run and not config.policy.dry_run
    todo = _validated(_names_given(args))
    keeper, store = build_keeper(config, with_notifiers=real_run)
    with store:
        stoppers = [why for why in (keeper.missing_credentials(), missing_owner(config)) if why]
        if real_run and stoppers:
            raise UsageError("; ".join(stoppers))
        if reserving and not real_run and stoppers and not args.quiet:
            print(f"namekeeper: note: a real run would stop here: {'; '.join(stoppers)}",
                  file=sys.stderr)
        outcomes, unreachable = [], []
        for canonical, display in todo:
            try:
                if real_run:  # the user says these are private names: remember them
                    store.note_seen(NameEvent(name=canonical, display_name=display, source="cli",
                                              index="command line"))
                    outcome = keeper.reserve_name(canonical, display, dry_run=False,
                                                  budget=keeper.budget_spender())
                elif reserving:
                    outcome = keeper.reserve_name(canonical, display, dry_run=True, record_it=False)
                else:
                    outcome = keeper.check(canonical, display)
            except IndexUnreachable as exc:
                unreachable.append(canonical)
                print(f"namekeeper: error: {canonical}: {_one_line(exc)}", file=sys.stderr)
                continue
            outcomes.append(outcome)
        shown = [o for o in outcomes if needs_attention(o)] if args.quiet else outcomes
        rows = [outcome_json(o, with_action=reserving) for o in shown]
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        elif rows:
            _print_table(rows, _RESERVE_COLUMNS if reserving else _CHECK_COLUMNS)
        if not reserving:  # a reserve run has said so already (or stopped)
            _note_missing_owner(config, taken=any(o.verdict is Verdict.TAKEN for o in outcomes))
        return _exit_code(outcomes, unreachable)


def _status(args: argparse.Namespace, config: Config) -> int:
    from .app import open_store

    with open_store(config) as store:
        queue = {item["name"]: item for item in store.queue_items()}
        rows = []
        attention = False
        for rec in store.all_names():
            q = queue.get(rec.name, {})
            rows.append({
                "name": rec.name, "verdict": rec.verdict, "severity": rec.severity,
                "action": rec.action, "owners": list(rec.owners), "organization": rec.organization,
                "reserved_at": rec.reserved_at.isoformat() if rec.reserved_at else None,
                "first_seen_private": rec.first_seen_private.isoformat()
                if rec.first_seen_private else None,
                "first_source": rec.first_source, "queue": q.get("state"),
                "attempts": q.get("attempts", rec.attempts),
                # A `reserve` run's failure is never queued: its outcome's message is the error.
                "last_error": q.get("last_error") or (
                    rec.message if rec.action in _FAILED_STATUS_ACTIONS else None),
                "message": rec.message,
            })
            if rec.verdict in (Verdict.TAKEN.value, Verdict.FREE.value) or q.get("state") == "failed":
                attention = True
        if args.quiet:
            rows = [r for r in rows if r["verdict"] in (Verdict.TAKEN.value, Verdict.FREE.value)
                    or r["queue"] == "failed"]
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        elif rows:
            _print_table(rows, Columns(key=("name", "verdict", "severity"),
                                       optional=("action", "queue", "reserved_at", "owners",
                                                 "first_seen_private"),
                                       text="last_error"))
        elif not args.quiet:
            print(f"namekeeper: the store {store.location} knows no names yet "
                  "(audit, reserve or serve record them)", file=sys.stderr)
        # Service-wide conditions (budget paused, public index unreachable) need a human too.
        paused = store.budget_paused_until() is not None
        for condition in store.conditions():
            if condition.key == "budget-paused" and not paused:
                continue  # the pause is over; the condition clears when a slot is next spent
            print(f"namekeeper: attention: {condition.text}", file=sys.stderr)
            attention = True
        return EXIT_ATTENTION if attention else EXIT_OK


def _notify_test(args: argparse.Namespace, config: Config) -> int:
    from .app import notifiers_for
    from .notify.dispatch import send_test

    if not args.test:  # `namekeeper notify` alone: say what it can do
        args.help_parser.print_help()
        return EXIT_OK
    notifiers = notifiers_for(config)
    if not notifiers:
        raise UsageError("no notification targets configured: add [notify] urls or config")
    results = send_test(config, notifiers)
    where = {n.name: n.target() for n in notifiers}
    rows = [{"target": where.get(name, name), "delivered": ok, "error": err}
            for name, ok, err in results]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, Columns(key=("target", "delivered"), text="error"))
    return EXIT_OK if all(ok for _, ok, _ in results) else EXIT_ATTENTION


def _forget(args: argparse.Namespace, config: Config) -> int:
    from .app import open_store

    todo = [canonical for canonical, _ in _validated(args.names)]
    with open_store(config) as store:
        known = set(store.forget(todo))
    rows = [{"name": n, "forgotten": n in known} for n in todo]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif not args.quiet:
        for name in todo:
            print(f"{name}: {'forgotten' if name in known else 'was not in the store'}")
    return EXIT_OK


def _serve(args: argparse.Namespace, config: Config) -> int:
    from .server import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        config = replace(config, serve=replace(config.serve, **overrides))
    _check_port_free(config.serve.host, config.serve.port)
    if not config.policy.dry_run:
        from .keeper_ours import missing_owner

        missing = missing_owner(config)
        if missing:  # the service would upload, then cry wolf about its own placeholders
            raise UsageError(missing)
    return serve(config)


def _check_port_free(host: str, port: int) -> None:
    """Say "in use" in one line before the service starts anything, rather than a traceback."""
    import socket

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise UsageError(f"cannot listen on {host}:{port}: {reason}") from None


def _plugins(args: argparse.Namespace, config: Config) -> int:
    from .config import redact
    from .plugins import get_plugin_manager

    _, report = get_plugin_manager()
    secrets = config.secret_values()
    rows: list[dict[str, Any]] = [
        {"name": p.name, "distribution": p.distribution, "version": p.version,
         "hooks": list(p.hooks), "builtin": p.builtin, "error": None} for p in report.plugins]
    rows += [{"name": name, "distribution": None, "version": None, "hooks": [], "builtin": None,
              "error": redact(error, secrets)} for name, error in sorted(report.broken.items())]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, Columns(key=("name",), optional=("distribution", "version", "hooks"),
                                   text="error"))
    return EXIT_ATTENTION if report.broken else EXIT_OK


def _audit(args: argparse.Namespace, config: Config) -> int:
    from .audit import run_audit
    from .audit_report import render, terminal_progress

    if not args.index and not args.lock:
        raise UsageError("audit needs at least one --index URL or --lock file")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    with terminal_progress() as progress:
        result = run_audit(config, indexes=args.index, locks=args.lock, reserve=args.reserve,
                           workers=args.workers, progress=progress)
    listed = result.rows
    if args.quiet:  # as `check -q`: only the names that need attention are listed
        listed = [r for r in result.rows if r.outcome is None or needs_attention(r.outcome)]
    if listed or result.unreadable or not args.quiet or args.format == "json":
        out, err = render(result, args.format, listed=listed)
        sys.stdout.write(out)
        sys.stderr.write(err)
    _note_missing_owner(config, taken=any(
        r.outcome.verdict is Verdict.TAKEN for r in result.rows if r.outcome), queued=result.queued)
    if result.unreadable or any(r.outcome is None for r in result.rows):
        return EXIT_UNREACHABLE
    if any(r.outcome.verdict in (Verdict.FREE, Verdict.TAKEN) for r in result.rows if r.outcome):
        return EXIT_ATTENTION
    return EXIT_OK


def _note_missing_owner(config: Config, *, taken: bool, queued: Sequence[str] = ()) -> None:
    """Without an owner, our own public projects read as TAKEN and `serve` refuses to start:
    say so next to the verdicts, before anyone acts on a false alarm."""
    from .keeper_ours import missing_owner

    missing = missing_owner(config) if taken or queued else None
    if missing:
        then = "; `namekeeper serve` will not reserve the queued names until then" if queued else ""
        print(f"namekeeper: note: a TAKEN name may be one of your own projects: {missing}{then}",
              file=sys.stderr)


def _watch(args: argparse.Namespace, config: Config) -> int:
    from .app import build_keeper
    from .config import GLOB_PATTERN
    from .watch import dispatcher_alerts, row_of, run_watch

    if not args.once and not args.allow:
        raise UsageError("watch needs --once (or --allow GLOB); `namekeeper serve` scans on "
                         "the [watch] interval")
    for glob in args.allow:
        if not GLOB_PATTERN.fullmatch(glob):
            raise UsageError(f"--allow {names.shown(glob)} is not a glob on project names")
    keeper, store = build_keeper(config, with_listing=False)
    with store:
        if args.allow:
            store.allow_lookalikes(g.lower() for g in args.allow)
            if not args.once:
                return EXIT_OK
        alerts = dispatcher_alerts(keeper.alerts) if keeper.alerts is not None else None
        result = run_watch(config, store, keeper.public, alerts=alerts, full=args.full)
        new = set(result.new)
        rows = [row_of(item, item.public in new) for item in result.lookalikes]
        columns = ["public", "ours", "kind", "distance", "owners", "organization", "first_release",
                   "new"]
        if args.format == "json":
            summary = {"listed": result.listed, "scanned": result.scanned, "full": result.full,
                       "new": len(new), "lookalikes": len(rows)}
            print(json.dumps({"lookalikes": rows, "summary": summary}, indent=2))
        elif args.format == "csv":
            import csv

            writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "owners": "; ".join(row["owners"] or [])})  # type: ignore[arg-type]
        else:
            _print_table(rows, Columns(key=("public", "ours", "kind"), optional=tuple(columns[3:])))
            scope = "every project" if result.full else "projects new since the last scan"
            print(f"{len(new)} new look-alike(s); {len(rows)} on record; scanned {result.scanned} "
                  f"of {result.listed} public projects ({scope})", file=sys.stderr)
        return EXIT_ATTENTION if new else EXIT_OK


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives: while the audit's progress
    bar is drawn, that is rich's proxy, which prints the line above the bar instead of
    through it."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("namekeeper")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _one_line(exc: BaseException) -> str:
    return names.one_line(str(exc)) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose if args.command != "serve" else max(args.verbose, 1))
    commands = {"check": _run_names, "reserve": _run_names, "status": _status, "forget": _forget,
                "notify": _notify_test, "serve": _serve, "plugins": _plugins,
                "audit": _audit, "watch": _watch, "store": cli_store.run}
    config = None
    try:
        _check_format(args)
        config = load(args.config)
        return commands[args.command](args, config)
    except IndexUnreachable as exc:
        print(f"namekeeper: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except NamekeeperError as exc:
        print(f"namekeeper: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
