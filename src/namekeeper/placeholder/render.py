"""Render the placeholder project for a name: validated values, escaped per file, checked.

This is the first half of building a placeholder (`namekeeper.placeholder`
has the template contract; `namekeeper.placeholder.build` the second half).
Everything here is pure file work on a fresh directory: configured text is
validated and folded to one line, escaped for the file type it lands in, and
the rendered ``pyproject.toml`` is checked so that no installer would ever
fetch build code for the placeholder.  Nothing here runs code from the
template.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version

from .. import names
from ..config import PlaceholderConfig
from ..errors import PlaceholderError
from ..names import one_line
from ..toml_file import tomllib

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

BUNDLED_TEMPLATE = "namekeeper.placeholder_template"
DATA_FILE = "placeholder.json"
README_FILE = "README.md"
METADATA_VERSION = "2.4"
LICENSE_EXPRESSION = "MIT-0"  # the placeholder holds no work worth restricting
INACTIVE = "Development Status :: 7 - Inactive"
SUMMARY_LIMIT = 512  # the public index refuses longer summaries


# --- values -----------------------------------------------------------------------------

# Configured text goes through `names.one_line`: it ends up in PKG-INFO headers (a newline
# there would start a new header) and in installer output (an escape sequence there would
# drive the user's terminal).


_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def contact_email(contact: str) -> str | None:
    """The e-mail address in ``contact`` (``a@b.c`` or ``Team <a@b.c>``), if it holds one."""
    _real_name, address = email.utils.parseaddr(contact)
    return address if address and _EMAIL.match(address) else None


def contact_url(contact: str) -> str | None:
    """``contact`` when it is an http(s) URL (it then becomes a ``Project-URL``)."""
    parts = urlsplit(contact)
    if parts.scheme in ("http", "https") and parts.netloc and not any(c.isspace() for c in contact):
        return contact
    return None


@dataclass(frozen=True)
class PlaceholderFacts:
    """Everything that varies between placeholders, validated and cleaned once."""

    name: str
    display_name: str
    version: str
    organization: str
    contact: str

    @property
    def dist_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def sdist_basename(self) -> str:
        return names.sdist_basename(self.name, self.version)

    @property
    def contact_or_org(self) -> str:
        return self.contact or self.organization

    @property
    def message(self) -> str:
        org = self.organization
        return (f"{self.display_name} is a private package of {org}, reserved on the public "
                f"index to prevent dependency confusion; configure your installer to use "
                f"{org}'s index; contact {self.contact_or_org}")

    @property
    def summary(self) -> str:
        text = (f"Placeholder, not installable: {self.display_name} is a private package of "
                f"{self.organization}. Contact {self.contact_or_org}.")
        return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"

    def variables(self) -> dict[str, str]:
        """The template variables, unescaped."""
        return {
            "name": self.name, "display_name": self.display_name, "dist_name": self.dist_name,
            "version": self.version, "organization": self.organization, "contact": self.contact,
            "contact_or_org": self.contact_or_org, "message": self.message,
            "summary": self.summary,
        }

    def metadata(self) -> list[tuple[str, str]]:
        """PKG-INFO headers (core metadata 2.4), in order."""
        headers = [
            ("Metadata-Version", METADATA_VERSION),
            ("Name", self.display_name),
            ("Version", self.version),
            ("Summary", self.summary),
            ("Author", self.organization),
        ]
        address = contact_email(self.contact)
        if address:
            headers.append(("Author-email", address))
        headers.append(("Maintainer", self.organization))
        if address:
            headers.append(("Maintainer-email", address))
        headers.append(("License-Expression", LICENSE_EXPRESSION))
        url = contact_url(self.contact)
        if url:
            headers.append(("Project-URL", f"Contact, {url}"))
        headers += [("Classifier", INACTIVE), ("Description-Content-Type", "text/markdown")]
        return [(key, one_line(value)) for key, value in headers]

    def data(self) -> dict[str, Any]:
        """The content of ``placeholder.json``: all the backend ever reads."""
        return {
            "name": self.name, "display_name": self.display_name, "version": self.version,
            "sdist_basename": self.sdist_basename, "organization": self.organization,
            "contact": self.contact, "message": self.message, "summary": self.summary,
            "readme": README_FILE, "metadata": [list(pair) for pair in self.metadata()],
        }


def placeholder_facts(config: PlaceholderConfig, name: str, display_name: str) -> PlaceholderFacts:
    """Validate the name pair and the configured values; raise before anything is written."""
    canonical = names.canonical(name)
    names.validate_name(display_name)
    if names.canonical(display_name) != canonical:
        raise names.InvalidName(
            f"display name {display_name!r} does not belong to project {canonical!r}")
    try:
        version = Version(config.version)
    except InvalidVersion:
        raise PlaceholderError(
            f"[placeholder] version {config.version!r} is not a valid version") from None
    if version.local:
        raise PlaceholderError(
            f"[placeholder] version {config.version!r}: the public index refuses local versions")
    organization = one_line(config.organization) or PlaceholderConfig.organization
    return PlaceholderFacts(name=canonical, display_name=display_name, version=str(version),
                            organization=organization, contact=one_line(config.contact))


# --- escaping per file type -------------------------------------------------------------

_TOML_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
               "\r": "\\r"}


def escape_toml(value: str) -> str:
    """Content of a TOML basic (double-quoted) string that reads back as ``value``."""
    out = []
    for ch in value:
        if ch in _TOML_SHORT:
            out.append(_TOML_SHORT[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


_MARKDOWN_SPECIAL = set("\\`*_[]<>!&|~#")


def escape_markdown(value: str) -> str:
    """``value`` as literal Markdown text: no emphasis, links, HTML or entities."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in one_line(value))


def escape_text(value: str) -> str:
    return one_line(value)


ESCAPERS: dict[str, Callable[[str], str]] = {
    ".toml": escape_toml, ".md": escape_markdown, ".txt": escape_text,
}


# --- rendering --------------------------------------------------------------------------

def bundled_template() -> Traversable:
    return resources.files(BUNDLED_TEMPLATE)


def _template_files(node: Traversable, where: PurePosixPath) -> Iterator[tuple[PurePosixPath,
                                                                             Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        name = child.name
        if name.startswith(".") or name == "__pycache__" or name.endswith((".pyc", ".pyo")):
            continue
        if not where.parts and name in ("__init__.py", DATA_FILE):
            continue
        if isinstance(child, Path) and child.is_symlink():
            raise PlaceholderError(f"template file {where / name} is a symbolic link; copy it "
                                   "into the template instead")
        if child.is_dir():
            yield from _template_files(child, where / name)
        else:
            yield where / name, child


def render(template: Traversable, dest: Path, facts: PlaceholderFacts) -> None:
    """Render ``template`` into the empty directory ``dest`` (see the contract above)."""
    raw = facts.variables()
    for relative, source in _template_files(template, PurePosixPath()):
        target = dest.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = source.read_bytes()
        escape = ESCAPERS.get(target.suffix)
        if escape is not None:
            escaped = {key: escape(value) for key, value in raw.items()}
            try:
                payload = Template(payload.decode("utf-8")).substitute(escaped).encode("utf-8")
            except UnicodeDecodeError:
                raise PlaceholderError(f"template file {relative} is not UTF-8 text") from None
            except KeyError as exc:
                raise PlaceholderError(
                    f"template file {relative} uses unknown variable ${exc.args[0]}; known: "
                    + ", ".join(sorted(raw))) from None
            except ValueError as exc:
                raise PlaceholderError(f"template file {relative}: {exc} (write $$ for a "
                                       "literal $)") from None
        target.write_bytes(payload)
    (dest / DATA_FILE).write_text(json.dumps(facts.data(), indent=2, ensure_ascii=True) + "\n",
                                  encoding="utf-8")


def check_build_system(project: Path) -> Path:
    """Refuse a rendered project an installer would fetch build code for; return the backend file.

    The answer is the backend module's file, located the way PEP 517 frontends
    do (``backend-path`` entries, then the dotted module name).
    """
    try:
        pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlaceholderError("the placeholder template has no pyproject.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlaceholderError(f"the rendered pyproject.toml is not valid TOML: {exc}") from None
    system = pyproject.get("build-system")
    if not isinstance(system, dict):
        raise PlaceholderError("pyproject.toml has no [build-system] table")
    if system.get("requires") != []:
        raise PlaceholderError("pyproject.toml must declare requires = [] so that installers "
                               "fetch no build code")
    backend = system.get("build-backend")
    paths = system.get("backend-path")
    if not isinstance(backend, str) or not isinstance(paths, list) or not paths:
        raise PlaceholderError("pyproject.toml must name an in-tree build-backend with "
                               "backend-path")
    module = backend.split(":", 1)[0].strip()
    relative = Path(*module.split("."))
    for entry in paths:
        base = (project / str(entry)).resolve()
        if not base.is_relative_to(project.resolve()):
            raise PlaceholderError(f"backend-path entry {entry!r} leaves the project")
        for candidate in (base / relative.with_suffix(".py"), base / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    raise PlaceholderError(f"build-backend {backend!r} is not in the backend-path")

