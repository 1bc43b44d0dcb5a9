"""What a public index lookup is."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..errors import IndexUnreachable
from ..model import PublicProject


class PublicIndexUnavailable(IndexUnreachable):
    """The public index could not be asked (network, 5xx after retries): try again later."""


class PublicIndex(ABC):
    """Answers "does this name exist on the public index, and whose is it?".

    A lookup is a prediction; the answer to an upload is the final word.
    """

    @abstractmethod
    def lookup(self, name: str) -> PublicProject:
        """Describe the canonical ``name``; raise `PublicIndexUnavailable` on a transient failure."""

    def lookup_existing(self, name: str) -> PublicProject:
        """Describe a name the full listing says exists; an index may skip its existence check.

        The default is `lookup`; the built-in index asks only its JSON API (one request).
        """
        return self.lookup(name)

    def file_digests(self, name: str) -> frozenset[str] | None:
        """The sha256 of every file the index serves for canonical ``name`` (yanked ones too);
        None when it has no such project.  An index that cannot say raises
        `PublicIndexUnavailable`, as the default does."""
        raise PublicIndexUnavailable(f"{type(self).__name__} cannot list the files of {name}")

    def publishes_owners(self) -> bool:
        """True when a lookup can say who owns a project (the index has a JSON API)."""
        return True

    def project_url(self, name: str) -> str | None:
        """The human page of a project, for messages; None when the index has none."""
        return None
