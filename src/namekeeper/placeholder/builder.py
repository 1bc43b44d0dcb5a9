"""The built-in placeholder builder: render the configured (or bundled) template, build its sdist.

The template contract is in `namekeeper.placeholder`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import PlaceholderError
from ..hookspecs import hookimpl
from .build import SdistBuildError, build_sdist, in_process_runner, subprocess_runner
from .interface import PlaceholderBuilder
from .render import bundled_template, check_build_system, placeholder_facts, render

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)


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
        # Environment variables carrying any of these are hidden from a user's backend.
        self._secret_values = frozenset(config.secret_values())

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
            runner = (in_process_runner(backend_file) if self.custom_template is None
                      else subprocess_runner(self._secret_values))
            try:
                built = build_sdist(project, outdir, runner)
            except SdistBuildError as exc:
                raise PlaceholderError(f"building the placeholder for {display_name} failed: "
                                       f"{exc}") from None
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


