"""What `namekeeper <command> --help` says: a description, examples and the exit codes."""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass

EXIT_CODES = """exit codes:
  0  every name is safe (ours, protected, excluded, or just reserved)
  1  at least one name needs attention (free, taken, a failed reservation)
  2  usage, configuration or input error; nothing was uploaded
  3  the public index (or a private index) could not be asked; the names
     that were answered are still printed"""
CHECK_EXIT_CODES = """exit codes:
  0  every name is safe (ours, protected, excluded)
  1  at least one name needs attention (free, taken)
  2  usage, configuration or input error
  3  the public index could not be asked; the names that were answered are
     still printed"""


@dataclass(frozen=True)
class Help:
    summary: str  # one line, in `namekeeper --help`
    description: str
    examples: tuple[str, ...]
    exit_codes: str = EXIT_CODES


COMMANDS = {
    "check": Help(
        "classify names against the public index (read-only)",
        "Say for each name whether it is FREE on the public index (anyone could register "
        "it), OURS, TAKEN by someone else (with a severity), PROTECTED (the index refuses it "
        "to everyone) or EXCLUDED by policy. Uploads nothing, and writes nothing but the "
        "account the index shows holding a placeholder namekeeper uploaded in the last two "
        "days (so that it is known as ours).",
        ("namekeeper check acme-utils acme-billing",
         "namekeeper check -r private-names.txt --format json",
         "pip list --format freeze | cut -d= -f1 | namekeeper check -"),
        CHECK_EXIT_CODES),
    "reserve": Help(
        "upload the placeholder for every free name",
        "Check each name and upload namekeeper's placeholder for every FREE one, within the "
        "hourly budget of new public projects. Of names the public index treats as one "
        "(acme-utils, acme_uti1s, acmeutils) only the first is uploaded. --dry-run decides "
        "and reports without uploading or writing anything, and says when a real run would "
        "stop (no token, no owner configured).",
        ("namekeeper reserve --dry-run acme-utils",
         "NAMEKEEPER_PUBLIC_TOKEN=pypi-... namekeeper reserve acme-utils acme-billing")),
    "status": Help(
        "what the store knows about every name",
        "List every name in the store with its last verdict, action, queue state and error; "
        "service-wide conditions (budget paused, index unreachable, upload credentials "
        "refused or missing) follow on stderr.",
        ("namekeeper status", "namekeeper status --format json"),
        "exit codes:\n  0  every name is safe (ours, protected, excluded) and no\n"
        "     service-wide condition holds\n"
        "  1  a name needs attention (free, taken, failed) or a condition holds\n"
        "  2  usage, configuration or store error"),
    "forget": Help(
        "remove names from the store",
        "Remove every trace of the names from the store (verdicts, history, queue, alerts "
        "sent). Nothing changes on the public index.",
        ("namekeeper forget requests",),
        "exit codes:\n  0  done (names the store did not know are reported)\n"
        "  2  usage, configuration or input error; nothing was removed"),
    "notify": Help(
        "notification tools",
        "Send a clearly labelled test message to every configured target and report each "
        "result by target host, with the reason a delivery failed.",
        ("namekeeper notify --test",),
        "exit codes:\n  0  every target accepted the test message\n"
        "  1  at least one target did not\n  2  usage or configuration error"),
    "serve": Help(
        "run the webhook receiver, pollers and queue workers",
        "Run until stopped: receive Artifactory webhooks, poll private indexes, reserve what "
        "is free, re-check every name in the store periodically, and alert.",
        ("namekeeper serve", "namekeeper serve --host 0.0.0.0 --port 8480"),
        "exit codes:\n  0  stopped cleanly\n  2  usage or configuration error (e.g. the port "
        "is in use)"),
    "plugins": Help(
        "list every loaded plugin (built-in or installed) and every broken one; exit 1 when "
        "one is broken",
        "List every plugin of the 'namekeeper' entry-point group, built-in or installed: its "
        "name, distribution, version and hooks, and every plugin that failed to load with its "
        "error (it is skipped, the others keep working). NAMEKEEPER_DISABLE_PLUGINS=1 loads "
        "the built-ins only.",
        ("namekeeper plugins", "namekeeper plugins --format json"),
        "exit codes:\n  0  every plugin loaded\n  1  at least one plugin is broken\n"
        "  2  usage or configuration error"),
    # `namekeeper store ACTION`
    "migrate": Help(
        "create or upgrade the configured store's schema (refuses a schema newer than this "
        "namekeeper)",
        "Create the schema in an empty store, or upgrade an older one to this namekeeper's; "
        "run it once after upgrading namekeeper, before starting the replicas. A store whose "
        "schema is newer than this namekeeper knows is refused and left as it is.",
        ("namekeeper store migrate", "namekeeper store migrate --config namekeeper.toml"),
        "exit codes:\n  0  the schema is this namekeeper's (upgraded, or already)\n"
        "  2  usage, configuration or store error (a newer schema, no connection)"),
    "copy": Help(
        "copy everything from one store into a new, empty one (e.g. SQLite into PostgreSQL)",
        "Copy names, history, event journal, queue, budget and delivery log from --from into "
        "--to, which must be empty (a database without a schema gets one). Stop `serve` "
        "first: writes made during the copy are not in it.",
        ("namekeeper store copy --from /var/lib/namekeeper/namekeeper.sqlite3 \\",
         "    --to postgresql://namekeeper@db.internal/namekeeper"),
        "exit codes:\n  0  copied\n"
        "  2  usage, configuration or store error (no such store, --to not empty)"),
}


def add_command(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """A subcommand parser with its description, examples and exit codes."""
    info = COMMANDS[name]
    examples = "examples:\n" + "\n".join(f"  {line}" for line in info.examples)
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=info.summary, description=textwrap.fill(info.description, 78),
        epilog=f"{examples}\n\n{info.exit_codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser
