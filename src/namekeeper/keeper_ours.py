"""The keeper's knowledge of its own placeholders (mixed into `keeper.Keeper`).

namekeeper must never cry wolf about its own work: it refuses to upload when it could not
recognise the result as ours, it remembers the owners the public index reports for a
placeholder it uploaded, and of an ultranormalised class it uploads one name and counts
the others as covered by it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta

from .config import Config
from .errors import IndexUnreachable
from .model import Classification, PublicProject, Severity, Verdict, utcnow
from .public.interface import PublicIndex
from .public.listing import PublicListing
from .store.interface import NameRecord, StoreBackend, other_holder

log = logging.getLogger("namekeeper.keeper")

# How long after our successful upload the owners the index shows are taken as ours.
OWNERS_LEARNING_WINDOW = timedelta(days=2)


def missing_owner(config: Config) -> str | None:
    """Why uploading would lead to false alarms (no owner to recognise ours by), or None."""
    public = config.public
    if public.json_url and not public.owners and not public.organization:
        return ("set [public] owners = [\"<your account on the public index>\"] (or [public] "
                "organization): the index publishes owners, and without ours namekeeper "
                "cannot tell its own placeholders from someone else's project")
    return None


class OwnPlaceholders:
    """Needs ``config``, ``store`` and ``public`` (the keeper's)."""

    config: Config
    store: StoreBackend
    public: PublicIndex

    def covered(self, cls: Classification, planned: str | None = None, *,
                held: Mapping[str, Sequence[str]] | None = None) -> Classification:
        """A FREE name whose ultranormalised class we already hold is PROTECTED by that hold.

        ``planned``: the name of the class a dry run would reserve (nothing held yet).
        ``held``: the store's `held_classes`, read once for many names (an audit).
        """
        if cls.verdict is not Verdict.FREE:
            return cls
        holder = planned or (self.store.held_in_class(cls.name) if held is None
                             else other_holder(held, cls.name))
        if holder is None:
            return cls
        return Classification(cls.name, Verdict.PROTECTED, Severity.NONE,
                              f"Covered by our placeholder for {holder}: the public index "
                              "refuses names this similar to it to everyone.", cls.public)

    def still_held(self, held: Mapping[str, Sequence[str]],
                   listing: PublicListing) -> Mapping[str, Sequence[str]]:
        """``held`` (`held_classes`) less the placeholders a fresh ``listing`` shows are gone.

        One the index removed (under PEP 541, say) covers nothing: its class is free to
        anyone.  One the listing lacks but may not show yet (an upload in flight, or within
        the CDN grace of its upload) still counts.
        """
        absent = [name for names in held.values() for name in names if name not in listing]
        if not absent:
            return held
        records = self.store.records(absent)
        grace = timedelta(seconds=self.config.public.cdn_grace)
        now = utcnow()
        gone = {name for name, record in records.items()
                if record.reserved_at is not None and now - record.reserved_at >= grace}
        return {key: kept for key, names in held.items()
                if (kept := [name for name in names if name not in gone])}

    def learn_placeholder_owners(self, name: str, public: PublicProject,
                                 record: NameRecord | None) -> None:
        """Remember who the index says owns the placeholder we uploaded, the first time it shows.

        Only shortly after our own successful upload: a project that shows up long after
        could be someone else's registration of a placeholder that was removed.
        """
        if (record is None or record.reserved_at is None or not public.exists
                or not public.ownership_known or not public.owners):
            return
        if utcnow() - record.reserved_at > OWNERS_LEARNING_WINDOW:
            return
        if not self.store.placeholder_owners(name):
            self.store.record_placeholder_owners(name, public.owners)

    def show_upload(self, name: str, public: PublicProject, record: NameRecord | None) -> None:
        """Record what the index shows of the placeholder we uploaded (owners, organisation,
        versions) as the name's public project, as `status` shows it: the upload's outcome
        was decided before the index had the project, and showed no owners."""
        if record is not None and record.reserved_at is not None and public.exists:
            self.store.record_public(name, public)

    def _learn_owners_now(self, name: str) -> PublicProject | None:
        """Right after our upload, ask who the index says owns it (a CDN-stale 404 says
        nothing): what the index shows, when it shows the project and its owners."""
        if not self.public.publishes_owners():
            return None
        try:
            public = self.public.lookup(name)
        except IndexUnreachable as exc:
            log.info("%s: could not ask for the placeholder's owners yet: %s", name, exc)
            return None
        record = self.store.get(name)
        self.learn_placeholder_owners(name, public, record)
        self.show_upload(name, public, record)
        return public if public.exists else None
