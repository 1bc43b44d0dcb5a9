"""`namekeeper watch`: look-alikes of our names on the (fake) public index, end to end."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from _cli import write_config
from _fake_public import FakePublicIndex
from _lookalike_names import public_names
from _notify_servers import HttpReceiver, serving_http
from namekeeper.cli import main
from namekeeper.config import ConfigError, from_dict
from namekeeper.model import NameEvent, PublicProject
from namekeeper.public.interface import PublicIndex
from namekeeper.public.listing import ListingInfo, PublicListing
from namekeeper.store.sqlite import Store
from namekeeper.watch import WatchState, run_watch

pytestmark = pytest.mark.slow  # the public listing comes from the fake public index

OURS = ["acme-billing", "acme-payments", "acme-mail", "zorbit-sync", "acme-invoice-renderer",
        "acme-billing-client", "internal-auth"]
#: (public name, the one of ours it imitates, kind), each planted on the fake public index.
PLANTED = [
    ("acme-biling", "acme-billing", "omitted"),
    ("acme-paymennts", "acme-payments", "repeated"),
    ("acme-paymenxts", "acme-payments", "inserted"),
    ("acme-paymnets", "acme-payments", "swapped"),
    ("acme-paymants", "acme-payments", "substituted"),
    ("acme-paymentd", "acme-payments", "keyboard"),
    ("acme-rnail", "acme-mail", "visual"),
    ("acme-bi11ing", "acme-billing", "visual"),
    ("sync-zorbit", "zorbit-sync", "swapped-words"),
    ("acmebilling", "acme-billing", "separator"),
    ("acme-payments-python", "acme-payments", "affix"),
    ("py-acme-payments", "acme-payments", "affix"),
    ("acme-payments-sdk", "acme-payments", "affix"),
    ("acme-payments2", "acme-payments", "affix"),
    ("acme-invoise-renderar", "acme-invoice-renderer", "edit"),
    ("internal-auth-client", "internal-auth", "affix"),
    ("acme-brand-new", "acme-", "prefix"),
]
ALLOWED = ["acme-fork-of-billing", "acme-biliing"]  # look-alikes on the allow-list
RELEASED = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
WATCH = '\n[watch]\nprefixes = ["acme_"]\nallow = ["acme-fork-of-*", "acme-biliing"]\n'


@pytest.fixture
def public(fake_public: FakePublicIndex) -> FakePublicIndex:
    fake_public.add_listed_projects(public_names(5_000))
    for name in OURS[:2]:  # our reserved placeholders are public too
        fake_public.add_project(name, owners=["acme-security"])
    for name, _, _ in PLANTED:
        fake_public.add_project(name, owners=["mallory"], first_release=RELEASED)
    fake_public.add_listed_projects(ALLOWED)
    return fake_public


def _store_ours(tmp_path: Path, names: list[str]) -> None:
    store = Store(tmp_path / "state.sqlite3")
    for name in names:
        store.note_seen(NameEvent(name=name, display_name=name, source="cli", index="test"))
    store.close()


@pytest.fixture
def cfg(tmp_path: Path, public: FakePublicIndex) -> Path:
    _store_ours(tmp_path, OURS)
    return write_config(tmp_path, public.config_toml(), WATCH)


def watch(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str,
          fmt: str = "json") -> tuple[int, object]:
    code = main(["--config", str(cfg), "--format", fmt, "watch", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if fmt == "json" else out


def test_planted_lookalikes_are_all_found_with_kind_target_and_facts(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex) -> None:
    code, doc = watch(capsys, cfg, "--once")
    assert code == 1  # something new to look at
    rows = {r["public"]: r for r in doc["lookalikes"]}
    assert {name: (r["ours"], r["kind"]) for name, r in rows.items()} == {
        name: (ours, kind) for name, ours, kind in PLANTED}
    # our own names (public placeholders included) and allowed names are not reported
    assert not set(rows) & (set(OURS) | set(ALLOWED))
    row = rows["acme-biling"]
    assert row["owners"] == ["mallory"] and row["first_release"].startswith("2026-11-30T12:00")
    assert row["distance"] == 1 and row["new"] is True
    assert doc["summary"]["full"] is True and doc["summary"]["scanned"] == doc["summary"]["listed"]
    # the JSON API is asked about reported names only
    json_api = {p for _, p in public.requests if p.startswith("/pypi/")}
    assert json_api == {f"/pypi/{name}/json" for name, _, _ in PLANTED}


def test_a_second_scan_reports_nothing_new_and_examines_only_new_projects(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex) -> None:
    assert watch(capsys, cfg, "--once")[0] == 1
    code, doc = watch(capsys, cfg, "--once")
    assert code == 0
    assert doc["summary"] == {**doc["summary"], "full": False, "scanned": 0, "new": 0}
    assert all(r["new"] is False for r in doc["lookalikes"])
    assert len(doc["lookalikes"]) == len(PLANTED)

    # Incremental: only the projects added since are examined, only their look-alikes are new.
    public.add_listed_projects(["acme-mial", "harmless-newcomer", "another-one"])
    public.add_project("acme-invoice-renderer-cli", owners=["eve"])
    code, doc = watch(capsys, cfg, "--once")
    assert code == 1
    assert doc["summary"]["scanned"] == 4 and doc["summary"]["full"] is False
    new = {r["public"]: r["kind"] for r in doc["lookalikes"] if r["new"]}
    assert new == {"acme-mial": "swapped", "acme-invoice-renderer-cli": "affix"}


def test_a_new_name_of_ours_makes_the_next_scan_a_full_one(
        capsys: pytest.CaptureFixture[str], cfg: Path, tmp_path: Path,
        public: FakePublicIndex) -> None:
    public.add_listed_projects(["payroll-enginne"])
    assert watch(capsys, cfg, "--once")[0] == 1
    _store_ours(tmp_path, ["payroll-engine"])
    code, doc = watch(capsys, cfg, "--once")
    assert code == 1 and doc["summary"]["full"] is True
    assert [r["public"] for r in doc["lookalikes"] if r["new"]] == ["payroll-enginne"]


def test_allow_on_the_command_line_is_kept_and_silences_a_reported_name(
        capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    assert watch(capsys, cfg, "--once")[0] == 1
    assert main(["--config", str(cfg), "watch", "--allow", "acme-payments-*"]) == 0
    code, doc = watch(capsys, cfg, "--once")
    assert code == 0
    shown = {r["public"] for r in doc["lookalikes"]}
    assert "acme-payments-sdk" not in shown and "acme-biling" in shown
    assert Store(cfg.parent / "state.sqlite3").watch_allowed() == ["acme-payments-*"]


def test_public_projects_of_our_own_accounts_or_organisation_are_not_lookalikes(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex) -> None:
    # Our own open-source releases sit in our prefix and next to our private names.
    public.add_project("acme-open-sdk", owners=["acme-security"])       # our account
    public.add_project("acme-billing-cli", owners=["jane"], organization="ACME")  # our org
    public.add_project("acme-billing-tools", owners=["mallory"], organization="evil")
    cfg.write_text(cfg.read_text().replace('owners = ["acme-security"]',
                                           'owners = ["Acme-Security"]\norganization = "acme"'))
    code, doc = watch(capsys, cfg, "--once")
    assert code == 1
    shown = {r["public"] for r in doc["lookalikes"]}
    assert "acme-billing-tools" in shown and "acme-brand-new" in shown
    assert not shown & {"acme-open-sdk", "acme-billing-cli"}


def test_a_lookalike_on_record_that_turns_out_to_be_ours_is_forgotten(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex) -> None:
    public.add_project("acme-billing-cli", owners=["jane"], organization="acme")
    assert watch(capsys, cfg, "--once")[0] == 1  # nothing says it is ours yet
    cfg.write_text(cfg.read_text().replace('owners = ["acme-security"]',
                                           'owners = ["acme-security"]\norganization = "acme"'))
    code, doc = watch(capsys, cfg, "--once")
    assert code == 0
    assert "acme-billing-cli" not in {r["public"] for r in doc["lookalikes"]}


def test_csv_and_table_formats(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out = watch(capsys, cfg, "--once", fmt="csv")
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(str(out))))
    assert {r["public"] for r in rows} == {name for name, _, _ in PLANTED}
    assert rows[0].keys() >= {"public", "ours", "kind", "distance", "owners", "first_release"}
    code, out = watch(capsys, cfg, "--once", fmt="table")
    assert code == 0 and "acme-biling" in str(out)


def test_bad_input_is_one_line_exit_2_and_changes_nothing(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex) -> None:
    assert main(["--config", str(cfg), "watch"]) == 2
    assert "--once" in capsys.readouterr().err
    assert main(["--config", str(cfg), "watch", "--allow", "bad glob/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a glob" in err
    assert public.requests == []
    with pytest.raises(ConfigError, match=r"\[watch\] prefixes"):
        from_dict({"watch": {"prefixes": ["-acme"]}})
    with pytest.raises(ConfigError, match=r"\[watch\] has an unknown key 'prefix'"):
        from_dict({"watch": {"prefix": ["acme-"]}})


def test_an_unreachable_public_index_is_exit_3(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    _store_ours(tmp_path, OURS)
    cfg = write_config(tmp_path, '[public]\nsimple-url = "http://127.0.0.1:9/simple/"\n'
                                 'json-url = "http://127.0.0.1:9/pypi/"\nretries = 0\n')
    assert main(["--config", str(cfg), "watch", "--once"]) == 3
    assert capsys.readouterr().err.startswith("namekeeper: error:")


def _notify_cfg(cfg: Path, receiver: HttpReceiver) -> None:
    cfg.write_text(cfg.read_text() + f'\n[notify]\nurls = ["{receiver.url()}"]\n')


def test_the_lookalike_alert_goes_out_once_with_the_facts(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex) -> None:
    with serving_http() as receiver:
        _notify_cfg(cfg, receiver)
        assert watch(capsys, cfg, "--once")[0] == 1
        got = receiver.wait_for(len(PLANTED))
        titles = {r.json()["title"]: r.json()["message"] for r in got}
        assert len(titles) == len(PLANTED)  # one alert per look-alike
        text = titles["namekeeper: acme-biling on the public index looks like our acme-billing"]
        assert "omitted, edit distance 1" in text and "mallory" in text
        assert "2026-11-30 12:00 UTC" in text
        assert "namekeeper: acme-brand-new appeared on the public index in our prefix acme-" in titles
        # A second scan and an incremental one alert only what is new.
        assert watch(capsys, cfg, "--once")[0] == 0
        public.add_project("acme-paymentss", owners=["eve"])
        assert watch(capsys, cfg, "--once")[0] == 1
        got = receiver.wait_for(len(PLANTED) + 1)
        assert len(got) == len(PLANTED) + 1
        assert "acme-paymentss" in json.dumps(got[-1].json())


def test_a_lookalike_taken_down_and_registered_again_is_alerted_again(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex) -> None:
    with serving_http() as receiver:
        _notify_cfg(cfg, receiver)
        assert watch(capsys, cfg, "--once")[0] == 1
        receiver.wait_for(len(PLANTED))
        public.remove_project("acme-biling")  # reported, and taken down by the index
        assert watch(capsys, cfg, "--once")[0] == 0
        public.add_project("acme-biling", owners=["mallory"])  # the same account, again
        code, doc = watch(capsys, cfg, "--once")
        assert code == 1 and [r["public"] for r in doc["lookalikes"] if r["new"]] == ["acme-biling"]
        got = receiver.wait_for(len(PLANTED) + 1)
        assert "acme-biling" in got[-1].json()["title"]


def test_a_failed_alert_is_sent_again_on_the_next_scan(
        capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    with serving_http() as receiver:
        _notify_cfg(cfg, receiver)
        receiver.status = 500
        assert watch(capsys, cfg, "--once")[0] == 1
        failed = len(receiver.wait_for(len(PLANTED)))
        receiver.status = 200
        assert watch(capsys, cfg, "--once")[0] == 0  # nothing new to look at ...
        receiver.wait_for(failed + len(PLANTED))  # ... but the alerts are delivered now
        assert watch(capsys, cfg, "--once")[0] == 0
        assert len(receiver.requests) == failed + len(PLANTED)


class _Facts(PublicIndex):
    def lookup(self, name: str) -> PublicProject:
        return PublicProject(name=name, exists=True, owners=("mallory",), ownership_known=True)


def _listing(names: list[str]) -> PublicListing:
    return PublicListing.of(names, ListingInfo(url="test://", count=len(names), validated_at=0.0))


@pytest.mark.parametrize("kept", [True, False], ids=["serve", "fresh-process"])
def test_a_lookalike_that_leaves_the_listing_and_returns_is_new_again(
        tmp_path: Path, kept: bool) -> None:
    _store_ours(tmp_path, OURS)
    config = from_dict({"store": {"path": str(tmp_path / "state.sqlite3")}})
    store = Store(tmp_path / "state.sqlite3")
    state = WatchState() if kept else None
    base = public_names(2_000)

    def scan(names: list[str]) -> list[str]:
        return run_watch(config, store, _Facts(), listing=_listing(names), state=state).new

    assert scan([*base, "acme-biling"]) == ["acme-biling"]
    assert scan([*base, "acme-biling", "unrelated-new"]) == []
    assert scan(base) == []  # taken down: forgotten
    assert store.lookalikes() == []
    assert scan([*base, "acme-biling"]) == ["acme-biling"]  # back: reported again


def test_a_lookalike_of_what_is_no_longer_ours_is_forgotten(tmp_path: Path) -> None:
    _store_ours(tmp_path, OURS)
    store = Store(tmp_path / "state.sqlite3")
    listing = _listing([*public_names(2_000), "acme-biling", "zorbit-synk", "acmeister"])

    def scan(prefix: str) -> set[str]:
        config = from_dict({"store": {"path": str(tmp_path / "state.sqlite3")},
                            "watch": {"prefixes": [prefix]}})
        result = run_watch(config, store, _Facts(), listing=listing)
        return {item.public for item in result.lookalikes}

    assert {"acme-biling", "zorbit-synk", "acmeister"} <= scan("acme")
    store.forget(["zorbit-sync"])  # not ours after all
    on_record = scan("acme-")  # and the prefix made narrower
    assert "acme-biling" in on_record
    assert not on_record & {"zorbit-synk", "acmeister"}
    assert not {item.public for item in store.lookalikes()} & {"zorbit-synk", "acmeister"}


def test_lookalike_alerts_are_routed_by_their_tag(capsys: pytest.CaptureFixture[str],
                                                 cfg: Path) -> None:
    with serving_http() as receiver:
        cfg.write_text(cfg.read_text() + '\n[notify]\nurls = ['
                       f'"lookalike={receiver.url("/watchers")}", '
                       f'"taken,failed={receiver.url("/others")}"]\n')
        assert watch(capsys, cfg, "--once")[0] == 1
        got = receiver.wait_for(len(PLANTED))
        assert {r.path for r in got} == {"/watchers"}
