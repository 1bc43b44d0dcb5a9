"""The keeper's verdicts and severities, from what the public index says (no I/O)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from namekeeper.config import Config, PolicyConfig, PublicConfig, StoreConfig
from namekeeper.keeper import Keeper
from namekeeper.model import NameEvent, PublicProject, Severity, Verdict
from namekeeper.public.interface import PublicIndex
from namekeeper.store.sqlite import Store

SEEN = datetime(2026, 3, 1, tzinfo=timezone.utc)


class Unreachable(PublicIndex):
    """Proves that some verdicts are reached without asking the public index."""

    def lookup(self, name: str) -> PublicProject:
        raise AssertionError(f"the public index was asked about {name}")


@pytest.fixture
def keeper(tmp_path: Path) -> Keeper:
    config = Config(public=PublicConfig(owners=("acme-security",), organization="acme"),
                    policy=PolicyConfig(include=("*",), exclude=("acme-fork-*",)),
                    store=StoreConfig(path=tmp_path / "s.sqlite3"))
    return Keeper(config, Store(config.store.path), Unreachable())


def seen(keeper: Keeper, name: str, version: str | None = "1.0") -> None:
    keeper.store.note_seen(NameEvent(name=name, display_name=name, source="poll", index="x",
                                     version=version, seen_at=SEEN))


def project(**kw: object) -> PublicProject:
    base = {"name": "acme-a", "exists": True, "ownership_known": True, "owners": ("mallory",),
            "versions": ("0.1",), "first_release": datetime(2020, 1, 1, tzinfo=timezone.utc)}
    base.update(kw)
    return PublicProject(**base)  # type: ignore[arg-type]


def test_a_missing_name_is_free(keeper: Keeper) -> None:
    cls = keeper.judge("acme-a", PublicProject("acme-a", exists=False), None)
    assert cls.verdict is Verdict.FREE


def test_our_account_or_organisation_makes_it_ours(keeper: Keeper) -> None:
    assert keeper.judge("acme-a", project(owners=("Acme-Security",)), None).verdict is Verdict.OURS
    assert keeper.judge("acme-a", project(organization="ACME"), None).verdict is Verdict.OURS


def test_someone_else_older_and_lower_is_taken_medium(keeper: Keeper) -> None:
    seen(keeper, "acme-a", "2.0")
    cls = keeper.judge("acme-a", project(), keeper.store.get("acme-a"))
    assert (cls.verdict, cls.severity) == (Verdict.TAKEN, Severity.MEDIUM)
    assert "mallory" in cls.reason


def test_appearing_after_we_saw_it_privately_is_critical(keeper: Keeper) -> None:
    seen(keeper, "acme-a", "2.0")
    cls = keeper.judge("acme-a", project(first_release=datetime(2026, 4, 1, tzinfo=timezone.utc)),
                       keeper.store.get("acme-a"))
    assert cls.severity is Severity.CRITICAL and "after we first saw it" in cls.reason


def test_a_higher_public_version_is_critical(keeper: Keeper) -> None:
    seen(keeper, "acme-a", "2.0")
    cls = keeper.judge("acme-a", project(versions=("0.1", "99.0")), keeper.store.get("acme-a"))
    assert cls.severity is Severity.CRITICAL and "99.0 outranks" in cls.reason


def test_unknown_private_version_is_high(keeper: Keeper) -> None:
    seen(keeper, "acme-a", None)
    cls = keeper.judge("acme-a", project(), keeper.store.get("acme-a"))
    assert (cls.verdict, cls.severity) == (Verdict.TAKEN, Severity.HIGH)


@pytest.mark.parametrize("version", ["1.0-SNAPSHOT-r5", "2019.03.05-custom"])
def test_a_private_version_pip_cannot_compare_is_high_not_lower_than_ours(
        keeper: Keeper, version: str) -> None:
    # A legacy (non-PEP 440) version, as devpi and Artifactory keep them: nothing says the
    # public one is lower (pip skips such a version altogether).
    seen(keeper, "acme-a", version)
    cls = keeper.judge("acme-a", project(versions=("0.1", "5.0")), keeper.store.get("acme-a"))
    assert (cls.verdict, cls.severity) == (Verdict.TAKEN, Severity.HIGH)
    assert "lower version than ours" not in cls.reason


def test_author_email_never_decides_ownership(keeper: Keeper) -> None:
    # No JSON API (ownership unknown): existing and not reserved by us means TAKEN,
    # whatever the metadata claims.
    cls = keeper.judge("acme-a", project(ownership_known=False, owners=()), None)
    assert cls.verdict is Verdict.TAKEN and "unknown owners" in cls.reason


def test_without_json_api_our_own_reservation_is_ours(keeper: Keeper) -> None:
    from namekeeper.model import Action, Outcome

    keeper.store.record_outcome(Outcome(name="acme-a", display_name="acme-a", verdict=Verdict.OURS,
                                        action=Action.RESERVED, severity=Severity.NONE, reason="",
                                        message=""), reserved=True)
    rec = keeper.store.get("acme-a")
    assert keeper.judge("acme-a", project(ownership_known=False, owners=()), rec).verdict is Verdict.OURS
    # ...and a stale CDN 404 right after our upload does not make it FREE again.
    assert keeper.judge("acme-a", PublicProject("acme-a", exists=False), rec).verdict is Verdict.OURS


def test_a_placeholder_gone_from_the_index_is_free_again_and_says_so(keeper: Keeper) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from namekeeper.model import Action, Outcome, utcnow

    CDN_GRACE = timedelta(seconds=keeper.config.public.cdn_grace)

    keeper.store.record_outcome(Outcome(name="acme-a", display_name="acme-a", verdict=Verdict.OURS,
                                        action=Action.RESERVED, severity=Severity.NONE, reason="",
                                        message="", at=utcnow() - 2 * CDN_GRACE), reserved=True)
    rec = keeper.store.get("acme-a")
    cls = keeper.judge("acme-a", PublicProject("acme-a", exists=False), rec)
    assert (cls.verdict, cls.severity) == (Verdict.FREE, Severity.HIGH)
    assert "no longer has it" in cls.reason
    fresh = replace(rec, reserved_at=utcnow())
    assert keeper.judge("acme-a", PublicProject("acme-a", exists=False), fresh).verdict is Verdict.OURS
    # The grace is [public] cdn-grace, not a constant.
    two_minutes = replace(rec, reserved_at=utcnow() - timedelta(minutes=2))
    assert keeper.judge("acme-a", PublicProject("acme-a", exists=False),
                        two_minutes).verdict is Verdict.OURS
    keeper.config = replace(keeper.config, public=replace(keeper.config.public, cdn_grace=60.0))
    assert keeper.judge("acme-a", PublicProject("acme-a", exists=False),
                        two_minutes).verdict is Verdict.FREE


class Answers(PublicIndex):
    """The public index as a table: a name it does not list does not exist."""

    def __init__(self, **projects: PublicProject) -> None:
        self.projects = {name.replace("_", "-"): p for name, p in projects.items()}

    def lookup(self, name: str) -> PublicProject:
        return self.projects.get(name) or PublicProject(name, exists=False)


@pytest.mark.parametrize("name", ["asyncio", "xml-etree", "asyncio-base-events",
                                  "encodings-utf-8-sig", "main", "future", "cgihttpserver"])
def test_stdlib_names_nobody_holds_are_protected(keeper: Keeper, name: str) -> None:
    # Callers pass canonical names: submodules arrive as "xml-etree", never "xml.etree".
    keeper.public = Answers()
    cls = keeper.classify(name, None)
    assert (cls.verdict, cls.severity) == (Verdict.PROTECTED, Severity.NONE)
    assert "standard-library" in cls.reason


@pytest.mark.parametrize("name", ["logging", "email-utils"])
def test_a_stdlib_name_registered_before_the_rule_is_judged_like_any_other(
        keeper: Keeper, name: str) -> None:
    # The rule refuses new projects only; older ones exist, and pip installs them.
    keeper.public = Answers(**{name: project(name=name, owners=("mallory",))})
    cls = keeper.classify(name, None)
    assert cls.verdict is Verdict.TAKEN and "mallory" in cls.reason


@pytest.mark.parametrize("pattern", ["acme-fork-*", "acme_fork_*", "Acme.Fork.*", "ACME--fork*"])
def test_policy_exclusions_are_not_looked_up(tmp_path: Path, pattern: str) -> None:
    # Patterns match canonical names, however the configuration spells them.
    config = Config(policy=PolicyConfig(exclude=(pattern,)),
                    store=StoreConfig(path=tmp_path / "s.sqlite3"))
    keeper = Keeper(config, Store(config.store.path), Unreachable())
    assert keeper.classify("acme-fork-requests", None).verdict is Verdict.EXCLUDED
    assert not keeper.policy_excludes("acme-billing")


def test_an_include_pattern_spelt_with_underscores_includes_the_canonical_names(
        tmp_path: Path) -> None:
    config = Config(policy=PolicyConfig(include=("acme_*",)),
                    store=StoreConfig(path=tmp_path / "s.sqlite3"))
    keeper = Keeper(config, Store(config.store.path), Unreachable())
    assert not keeper.policy_excludes("acme-billing")
    assert keeper.policy_excludes("zeta-billing")


def test_a_name_registered_between_lookup_and_upload_is_critical_and_says_why(
        tmp_path: Path) -> None:
    from namekeeper.model import Action, UploadResult
    from namekeeper.notify.render import render
    from namekeeper.placeholder.interface import PlaceholderBuilder
    from namekeeper.reserve.interface import ReservationBackend

    class Absent(PublicIndex):
        def lookup(self, name: str) -> PublicProject:
            return PublicProject(name, exists=False, ownership_known=True)

    class Builder(PlaceholderBuilder):
        def build(self, name: str, display_name: str, outdir: Path) -> list[Path]:
            return [outdir / f"{name}-0.0.0.tar.gz"]

    class SomeoneWasFaster(ReservationBackend):
        def upload(self, name: str, files: list[Path]) -> UploadResult:
            return UploadResult(Action.TAKEN, "403 isn't allowed to upload to project")

    config = Config(public=PublicConfig(owners=("acme-security",)),
                    store=StoreConfig(path=tmp_path / "s.sqlite3"))
    keeper = Keeper(config, Store(config.store.path), Absent(), Builder(), SomeoneWasFaster())
    outcome = keeper.reserve_name("acme-a")
    assert (outcome.verdict, outcome.severity) == (Verdict.TAKEN, Severity.CRITICAL)
    assert "registered between our lookup and our upload" in outcome.reason
    assert "cannot tell" not in outcome.reason
    message = render(outcome)
    assert message.title.startswith("namekeeper [CRITICAL]")
    assert "dependency-confusion attack" in message.text


def test_a_listing_older_than_a_day_no_longer_makes_a_name_protected(
        keeper: Keeper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `serve` keeps the listing it started with; acmeutils has been removed since, and
    # someone registered acme-utils.
    import time

    from namekeeper.public.listing import FRESH_FOR, ListingInfo, PublicListing

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no fresher copy on disk
    keeper.public = Answers(**{"acme-utils": project(name="acme-utils")})
    keeper.listing = PublicListing.of(["acmeutils"])
    assert keeper.classify("acme-utils", None).verdict is Verdict.PROTECTED  # fresh: no lookup
    keeper.listing = PublicListing.of(["acmeutils"], ListingInfo(
        url="memory:", count=1, validated_at=time.time() - FRESH_FOR - 60))
    cls = keeper.classify("acme-utils", None)
    assert cls.verdict is Verdict.TAKEN and "mallory" in cls.reason


# (public versions, our highest private version): pip's choice decides, which packaging's own
# filter (what pip applies: no pre-release while a final release is on offer) tells us.
PIP_CASES = [
    (("0.1",), "2.0.dev1"),          # a final beats our pre-release, however low
    (("2.0rc1",), "1.0"),            # their pre-release is skipped: ours is final
    (("0.1", "2.0rc1"), "1.0"),
    (("99.0",), "2.0"),
    (("1.0",), "2.0"),
    (("2.0b1",), "2.0a1"),           # pre-releases only: the highest wins
    (("1.0rc1",), "2.0a1"),
    (("1.0.post1",), "1.0"),         # a post-release is final
    (("2.0", "3.0.dev0"), "2.0"),    # equal: pip keeps ours (the private index is asked too)
    (("not a version", "0.5"), "1.0"),
]


@pytest.mark.parametrize(("public", "private"), PIP_CASES)
def test_critical_exactly_when_pip_would_install_the_public_version(
        keeper: Keeper, public: tuple[str, ...], private: str) -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    def valid(v: str) -> bool:
        try:
            Version(v)
            return True
        except InvalidVersion:
            return False

    offered = [v for v in public if valid(v)] + [private]
    picked = max(SpecifierSet("").filter(offered), key=Version)
    pip_takes_theirs = picked != private and Version(picked) != Version(private)
    seen(keeper, "acme-a", private)
    cls = keeper.judge("acme-a", project(versions=public), keeper.store.get("acme-a"))
    assert (cls.severity is Severity.CRITICAL) is pip_takes_theirs, cls.reason
    if pip_takes_theirs:
        assert f"its version {picked} outranks our private {private}" in cls.reason
