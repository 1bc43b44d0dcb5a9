"""What a placeholder builder is: the files uploaded to hold a name (see `namekeeper.placeholder`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class PlaceholderBuilder(ABC):
    """Builds the files uploaded to hold a name."""

    @abstractmethod
    def build(self, name: str, display_name: str, outdir: Path) -> list[Path]:
        """Build the placeholder for canonical ``name`` into ``outdir``; return the files.

        Raises `namekeeper.errors.PlaceholderError` when it cannot.
        """
