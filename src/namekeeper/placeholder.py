"""Render the placeholder project for a name and build its sdist.

The placeholder is an sdist-only project whose in-tree build backend refuses
every wheel hook with a message saying whose private package the name is and
whom to contact. Installers stop at "Getting requirements to build wheel",
nothing is installed, and no build dependency is ever fetched (``requires =
[]``). A wheel that installs and fails on import would install silently for
dotted names and break tools that import everything, hence no wheel.

Template contract
=================

A template is a directory (the bundled one is the package
``namekeeper.placeholder_template``; a user's is ``[placeholder] template`` in
the config). It is copied into a fresh temporary directory, file by file:

* ``*.toml``, ``*.md`` and ``*.txt`` files are rendered with
  `string.Template`: ``$var`` / ``${var}`` is replaced, ``$$`` is a literal
  ``$``, an unknown variable is an error. Each value is escaped for the file
  type: TOML basic-string escaping for ``.toml`` (so put variables only inside
  ``"double-quoted"`` strings), Markdown backslash escaping for ``.md``, none
  for ``.txt``.
* Every other file (``.py`` above all) is copied byte for byte and never
  substituted: code gets its values from the data file below, so no configured
  text is ever pasted into Python.
* namekeeper writes ``placeholder.json`` at the top (replacing any file of that
  name) with the keys ``name``, ``display_name``, ``version``,
  ``sdist_basename``, ``organization``, ``contact``, ``message``, ``summary``,
  ``readme`` (the file that becomes the description) and ``metadata`` (the
  PKG-INFO header lines, as ``[key, value]`` pairs, single-line). The bundled
  backend (``build-backend/placeholder_backend.py``) reads only this file, plus
  the rendered ``README.md`` as the long description; a custom template can
  reuse it unchanged (keep a ``README.md`` then).
* Skipped: hidden files and folders (``.*``), ``__pycache__``, ``*.pyc``,
  and the top-level ``__init__.py`` (it only makes the bundled template an
  importable resource). Symbolic links are refused.
* The rendered ``pyproject.toml`` must declare ``requires = []`` and an
  in-tree backend (``backend-path``); anything else is refused, because an
  installer would otherwise fetch and run build code from the public index.
* The backend's ``build_sdist`` must produce ``{sdist_basename}.tar.gz``
  (PEP 625) holding one top-level folder with ``PKG-INFO``.

Variables: ``name`` (canonical, ``acme-utils``), ``display_name``
(``Acme_Utils``), ``dist_name`` (``acme_utils``), ``version`` (normalised),
``organization``, ``contact`` (may be empty), ``contact_or_org`` (the contact,
or the organisation when none is configured), ``message`` (what installers
print), ``summary``. Names and versions are validated before use; the
organisation and contact are folded to one line and stripped of control
characters, since they also go into PKG-INFO headers.

Version: ``[placeholder] version``, default ``0.0.0``. A final ``0.0.0``
outranks private packages that have only pre-releases (pip skips pre-releases
once a final exists); such organisations should set ``0.0.0.dev0``.

Speed: building runs the backend's ``build_sdist`` through
``build.ProjectBuilder`` without isolation. For the bundled template the hook
runs in-process (our own backend, a few milliseconds); a user's template runs
in a subprocess, as any PEP 517 frontend would, with namekeeper's secret
environment variables removed.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import build
from packaging.version import InvalidVersion, Version

from . import names
from .config import Config, PlaceholderConfig
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

BUNDLED_TEMPLATE = "namekeeper.placeholder_template"
DATA_FILE = "placeholder.json"
README_FILE = "README.md"
METADATA_VERSION = "2.4"
LICENSE_EXPRESSION = "MIT-0"  # the placeholder holds no work worth restricting
INACTIVE = "Development Status :: 7 - Inactive"
SUMMARY_LIMIT = 512  # the public index refuses longer summaries
SUBPROCESS_TIMEOUT = 120.0

Runner = Callable[..., None]  # pyproject_hooks: runner(cmd, cwd, extra_environ)


class PlaceholderError(Exception):
    """The placeholder could not be rendered or built; the message says why."""


class PlaceholderBuilder(ABC):
    """Builds the files uploaded to hold a name."""

    @abstractmethod
    def build(self, name: str, display_name: str, outdir: Path) -> list[Path]:
        """Build the placeholder for canonical ``name`` into ``outdir``; return the files."""


# --- values -----------------------------------------------------------------------------

def one_line(value: str) -> str:
    """``value`` folded to one line, without control characters.

    Configured text ends up in PKG-INFO headers (a newline there would start a
    new header) and in installer output (an escape sequence there would drive
    the user's terminal).
    """
    folded = " ".join(str(value).split())
    return "".join(ch for ch in folded if ch.isprintable())


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


# --- running the backend ----------------------------------------------------------------

_compiled: dict[bytes, types.CodeType] = {}


def _in_process_runner(backend_file: Path) -> Runner:
    """A pyproject_hooks runner that runs our own bundled backend without a subprocess.

    It speaks the same protocol as pyproject_hooks' helper script (hook name and
    control directory as the last two arguments, ``input.json`` in,
    ``output.json`` out). The backend finds its project from its own file, so
    no ``chdir`` (process-wide, unsafe under threads) is needed.
    """

    def run(cmd: Sequence[str], cwd: str | None = None,
            extra_environ: Mapping[str, str] | None = None) -> None:
        hook_name, control_dir = cmd[-2], Path(cmd[-1])
        kwargs = json.loads((control_dir / "input.json").read_text(encoding="utf-8"))["kwargs"]
        source = backend_file.read_bytes()
        code = _compiled.get(source)
        if code is None:
            code = _compiled[source] = compile(source, str(backend_file), "exec")
        module = types.ModuleType("namekeeper_placeholder_backend")
        module.__file__ = str(backend_file)
        result: dict[str, Any] = {"unsupported": False, "return_val": None}
        try:
            exec(code, module.__dict__)  # noqa: S102 - our own bundled backend, copied verbatim
            if hook_name == "_supported_features":
                result["return_val"] = []
            elif not hasattr(module, hook_name):
                result = {"hook_missing": True, "missing_hook_name": hook_name}
            else:
                result["return_val"] = getattr(module, hook_name)(**kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the backend exits with SystemExit on purpose
            raise subprocess.CalledProcessError(1, list(cmd), output=str(exc).encode()) from exc
        (control_dir / "output.json").write_text(json.dumps(result), encoding="utf-8")

    return run


def _secret_values(config: Config) -> frozenset[str]:
    """Every secret the config holds, so the environment variables carrying them can be hidden."""
    secrets = [config.public.token, config.artifactory.secret, config.artifactory.token,
               *config.notify.urls]
    for poll in config.polls:
        secrets += [poll.token, poll.password]
    return frozenset(s.reveal() for s in secrets if s is not None and s.reveal())


def _subprocess_runner(secret_values: frozenset[str]) -> Runner:
    """pyproject_hooks' quiet runner, minus our secrets: a user's backend gets no tokens."""

    def run(cmd: Sequence[str], cwd: str | None = None,
            extra_environ: Mapping[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NAMEKEEPER_") and v not in secret_values}
        env.update(extra_environ or {})
        subprocess.run(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, check=True, timeout=SUBPROCESS_TIMEOUT)

    return run


def _failure_text(exc: BaseException) -> str:
    inner = getattr(exc, "exception", None)
    output = getattr(inner, "output", None)
    if isinstance(output, bytes):
        tail = output.decode("utf-8", "replace").strip().splitlines()[-15:]
        if tail:
            return f"{exc}: " + "\n".join(tail)
    return str(exc)


# --- the builder ------------------------------------------------------------------------

class TemplatePlaceholderBuilder(PlaceholderBuilder):
    """Renders the configured (or bundled) template and builds its sdist."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.custom_template = config.placeholder.template
        if self.custom_template is not None:
            if not self.custom_template.is_dir():
                raise PlaceholderError(f"[placeholder] template {self.custom_template} is not a "
                                       "directory")
            if not (self.custom_template / "pyproject.toml").is_file():
                raise PlaceholderError(f"[placeholder] template {self.custom_template} has no "
                                       "pyproject.toml")
        self._secret_values = _secret_values(config)

    @property
    def template(self) -> Traversable:
        return self.custom_template if self.custom_template is not None else bundled_template()

    def build(self, name: str, display_name: str, outdir: Path) -> list[Path]:
        facts = placeholder_facts(self.config.placeholder, name, display_name)
        with tempfile.TemporaryDirectory(prefix="namekeeper-placeholder-") as tmp:
            project = Path(tmp) / facts.sdist_basename
            project.mkdir()
            render(self.template, project, facts)
            backend_file = check_build_system(project)
            runner = (_in_process_runner(backend_file) if self.custom_template is None
                      else _subprocess_runner(self._secret_values))
            try:
                builder = build.ProjectBuilder(project, python_executable=sys.executable,
                                               runner=runner)
                built = Path(builder.build("sdist", outdir))
            except (build.BuildException, build.BuildBackendException) as exc:
                raise PlaceholderError(f"building the placeholder for {display_name} failed: "
                                       f"{_failure_text(exc)}") from None
        expected = facts.sdist_basename + ".tar.gz"
        if built.name != expected:
            built.unlink(missing_ok=True)
            raise PlaceholderError(f"the placeholder backend built {built.name!r}; PEP 625 "
                                   f"requires {expected!r}")
        log.debug("built placeholder %s", built)
        return [built]


@hookimpl(trylast=True)
def namekeeper_placeholder_builder(config: Config) -> PlaceholderBuilder:
    return TemplatePlaceholderBuilder(config)
