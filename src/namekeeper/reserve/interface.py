"""What a reservation backend is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..model import UploadResult


class ReservationBackend(ABC):
    """Uploads placeholder files and translates the public index's answer into an `Action`."""

    @abstractmethod
    def upload(self, name: str, files: list[Path]) -> UploadResult:
        """Upload ``files`` for canonical ``name``; never raise for an answer of the index."""

    def unready_reason(self) -> str | None:
        """Why no upload can be attempted at all (no credentials, ...), worded for the person who
        can fix it; None when uploads can go ahead.  Checked before work starts; sends nothing."""
        return None
