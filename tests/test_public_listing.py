"""The public index's full listing: fetched once, cached, revalidated, decided locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _fake_public import FakePublicIndex, FaultPlan
from _servers import PORTAL_PAGE
from namekeeper.config import PublicConfig
from namekeeper.http import new_session
from namekeeper.public import listing as listing_module
from namekeeper.public.listing import (
    ListingUnavailable,
    cached_listing,
    default_cache_dir,
    fetch_listing,
)
from namekeeper.public.listing_index import BLOCK_LINES


def generated(n: int) -> list[str]:
    """``n`` distinct, ultranormalisation-distinct names, like a real index's long tail."""
    return [f"proj{i:06d}x" for i in range(n)]


def config_for(fake: FakePublicIndex) -> PublicConfig:
    return PublicConfig(simple_url=fake.simple_url, json_url=fake.json_url,
                        upload_url=fake.upload_url)


def session() -> object:
    return new_session(retries=0)


def test_listing_answers_existence_and_too_similar_locally(
        fake_public: FakePublicIndex, tmp_path: Path) -> None:
    fake_public.add_listed_projects(generated(3000))
    fake_public.add_project("Acme_Tools")
    fake_public.add_project("python-dateutil")
    listing = fetch_listing(config_for(fake_public), cache_dir=tmp_path)
    assert listing.info.downloaded and len(listing) == 3002
    assert "acme-tools" in listing and "proj000123x" in listing and "acme-free" not in listing
    # PyPI's ultranormalisation: separators deleted, o→0, l/i→1.
    assert listing.similar("acmet00ls") == "acme-tools"
    assert listing.similar("acme-t0o1s") == "acme-tools"
    assert listing.similar("python.dateuti1") == "python-dateutil"
    assert listing.similar("pr0j000123x") == "proj000123x"
    assert listing.similar("acme-tools") is None  # exists itself: a project to look up
    assert listing.similar("acme-free") is None
    assert fake_public.requests.count(("GET", "/simple/")) == 1
    assert fake_public.listing_answers == [200]


def test_second_fetch_revalidates_and_downloads_nothing(
        fake_public: FakePublicIndex, tmp_path: Path) -> None:
    fake_public.add_listed_projects(generated(2000))
    config = config_for(fake_public)
    first = fetch_listing(config, cache_dir=tmp_path)
    second = fetch_listing(config, cache_dir=tmp_path)
    assert fake_public.listing_answers == [200, 304]
    assert not second.info.downloaded and second.names == first.names
    assert second.info.validated_at >= first.info.validated_at
    conditional = [h for m, p, h in fake_public.request_headers if p == "/simple/"][1]
    assert conditional.get("If-None-Match") == first.info.etag

    fake_public.add_project("acme-new")  # the index changed: the next fetch downloads it
    third = fetch_listing(config, cache_dir=tmp_path)
    assert fake_public.listing_answers == [200, 304, 200]
    assert third.info.downloaded and "acme-new" in third


def test_serials_are_kept_for_incremental_scans(fake_public: FakePublicIndex,
                                                tmp_path: Path) -> None:
    fake_public.add_project("acme-one")
    fake_public.add_project("acme-two")
    config = config_for(fake_public)
    fetched = fetch_listing(config, cache_dir=tmp_path)
    cached = cached_listing(config, cache_dir=tmp_path)
    assert cached is not None
    for listing in (fetched, cached):
        assert listing.serial("acme-one") is not None and listing.serial("acme-two") is not None
        assert listing.serial("acme-two") > listing.serial("acme-one")  # type: ignore[operator]
        assert listing.serial("acme-none") is None
        assert listing.info.last_serial is not None


def test_cached_listing_reads_only_the_cache_and_honours_max_age(
        fake_public: FakePublicIndex, tmp_path: Path) -> None:
    config = config_for(fake_public)
    assert cached_listing(config, cache_dir=tmp_path) is None
    fake_public.add_project("acme-tools")
    fetch_listing(config, cache_dir=tmp_path)
    requests_before = len(fake_public.requests)
    listing = cached_listing(config, cache_dir=tmp_path)
    assert listing is not None and "acme-tools" in listing
    assert len(fake_public.requests) == requests_before
    meta_path = next(tmp_path.glob("listing-*.json"))
    meta = json.loads(meta_path.read_text())
    meta["validated_at"] -= 3 * 24 * 3600
    meta_path.write_text(json.dumps(meta))
    assert cached_listing(config, cache_dir=tmp_path) is None
    assert cached_listing(config, cache_dir=tmp_path, max_age=None) is not None
    # Another index (another URL) never sees this cache.
    other = PublicConfig(simple_url="http://127.0.0.1:9/simple/", json_url=None,
                         upload_url="http://127.0.0.1:9/legacy/")
    assert cached_listing(other, cache_dir=tmp_path, max_age=None) is None


def test_damaged_cache_is_downloaded_again(fake_public: FakePublicIndex, tmp_path: Path) -> None:
    fake_public.add_project("acme-tools")
    config = config_for(fake_public)
    fetch_listing(config, cache_dir=tmp_path)
    data = next(tmp_path.glob("listing-*.data"))
    data.write_text(data.read_text()[:20])
    assert cached_listing(config, cache_dir=tmp_path) is None
    listing = fetch_listing(config, cache_dir=tmp_path)
    assert listing.info.downloaded and "acme-tools" in listing
    assert fake_public.listing_answers == [200, 200]
    last = [h for m, p, h in fake_public.request_headers if p == "/simple/"][-1]
    assert "If-None-Match" not in last  # no validators for a cache we cannot read


def test_an_html_page_whose_links_lead_elsewhere_is_refused_not_read_as_all_free(
        fake_public: FakePublicIndex, tmp_path: Path) -> None:
    fake_public.serve_json = False
    fake_public._listing_cache = (0, b"{}", PORTAL_PAGE, '"portal"')  # a portal's sign-in page
    with pytest.raises(ListingUnavailable) as refused:
        fetch_listing(config_for(fake_public), cache_dir=tmp_path)
    assert str(refused.value) == (
        f"the public index's listing {fake_public.url}simple/ does not look like a simple "
        "index: its links do not lead to project pages (is it the index's /simple/ root?)")
    assert cached_listing(config_for(fake_public), cache_dir=tmp_path) is None


def test_html_only_index_gives_names(fake_public: FakePublicIndex, tmp_path: Path) -> None:
    fake_public.serve_json = False
    fake_public.add_project("Acme.Tools")
    listing = fetch_listing(config_for(fake_public), cache_dir=tmp_path)
    assert "acme-tools" in listing and listing.similar("acmet001s") == "acme-tools"


def test_unreadable_listing_is_one_clear_error(fake_public: FakePublicIndex,
                                               tmp_path: Path) -> None:
    fake_public.faults = FaultPlan(rate=1.0, kinds=("500",), paths=("/simple/",))
    with pytest.raises(ListingUnavailable, match=r"^the public index's listing: "
                                                 r"GET http://127\.0\.0\.1:\d+/simple/ answered 500$"):
        fetch_listing(config_for(fake_public), cache_dir=tmp_path, session=new_session(retries=0))


def test_an_oversized_listing_is_refused_and_nothing_cached(
        fake_public: FakePublicIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_public.add_listed_projects(generated(100))
    monkeypatch.setattr(listing_module, "MAX_LISTING_BYTES", 100)
    with pytest.raises(ListingUnavailable, match=r"/simple/ listing is \d+ bytes, over the 100 "):
        fetch_listing(config_for(fake_public), cache_dir=tmp_path, session=session())
    assert cached_listing(config_for(fake_public), cache_dir=tmp_path) is None


def test_default_cache_dir_is_the_users_cache(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "namekeeper" / "public-listing"


def test_check_and_reserve_use_a_fresh_cached_listing_for_too_similar_names(
        fake_public: FakePublicIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from namekeeper.cli import main

    token = "pypi-listing-test-token"
    fake_public.add_user("acme-security", token)
    fake_public.add_project("acme-tools")
    config = tmp_path / "namekeeper.toml"
    config.write_text(fake_public.config_toml() + 'owners = ["acme-security"]\n'
                      '[store]\npath = "state.sqlite3"\n')
    fetch_listing(config_for(fake_public))  # what `audit` leaves behind, in the user's cache
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", token)
    code = main(["--config", str(config), "--format", "json", "reserve", "acme_t0o1s"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (rows[0]["verdict"], rows[0]["action"]) == ("protected", "protected")
    assert "too similar to the existing project acme-tools" in rows[0]["reason"]
    assert sum(fake_public.attempts.values()) == 0  # no upload was even tried
    # Without the cache the same name would have been tried (the index says "too similar").
    for path in default_cache_dir().glob("listing-*"):
        path.unlink()
    main(["--config", str(config), "--format", "json", "reserve", "acme_t0o1s"])
    capsys.readouterr()
    assert sum(fake_public.attempts.values()) == 1


def serve_listing(fake: FakePublicIndex, body: bytes) -> None:
    """Make the fake answer ``/simple/`` (JSON) with exactly ``body``."""
    fake._listing_cache = (0, body, b"<html></html>", '"custom"')


@pytest.mark.parametrize("layout", ["warehouse", "other key order"])
def test_invalid_names_and_two_spellings_of_one_project_in_any_layout(
        fake_public: FakePublicIndex, tmp_path: Path, layout: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [("Acme_Tools", 3), ("acme.tools", 4), ("bad name!", 5), ("caf\u00e9", 6),
               ("ok-one", 7)]
    if layout == "warehouse":
        projects = [{"name": n, "_last-serial": s} for n, s in entries]
    else:
        projects = [{"_last-serial": s, "name": n} for n, s in entries]
    serve_listing(fake_public, json.dumps({"meta": {"api-version": "1.1", "_last-serial": 9},
                                           "projects": projects}, ensure_ascii=False).encode())
    if layout == "warehouse":  # read by the one-pass fast path, never the full JSON parse
        import namekeeper.public.listing as listing_module

        monkeypatch.setattr(listing_module, "_parse_json", None)
    listing = fetch_listing(config_for(fake_public), cache_dir=tmp_path)
    for got in (listing, cached_listing(config_for(fake_public), cache_dir=tmp_path)):
        assert got is not None
        assert sorted(got) == ["acme-tools", "ok-one"] and len(got) == 2
        assert got.serial("acme-tools") == 3 and got.info.last_serial == 9
        assert got.similar("acmet001s") == "acme-tools"


def test_a_truncated_listing_is_refused_not_half_read(fake_public: FakePublicIndex,
                                                      tmp_path: Path) -> None:
    serve_listing(fake_public, b'{"meta": {"api-version": "1.1"}, "projects": ['
                               b'{"name": "a", "_last-serial": 1}, {"name": "b", "_last-serial": 2}')
    with pytest.raises(ListingUnavailable, match="malformed JSON"):
        fetch_listing(config_for(fake_public), cache_dir=tmp_path)


def test_names_sharing_one_ultranormalised_key_all_exist(fake_public: FakePublicIndex,
                                                         tmp_path: Path) -> None:
    # Legacy projects predating the rule: both exist, and a third spelling is too similar.
    fake_public.add_project("pool")
    fake_public.add_project("p00l")
    listing = fetch_listing(config_for(fake_public), cache_dir=tmp_path)
    assert "pool" in listing and "p00l" in listing and "po0l" not in listing
    assert listing.similar("pool") is None and listing.similar("po0l") in ("pool", "p00l")
    assert listing.names == frozenset({"pool", "p00l"})


def one_class(word: str) -> list[str]:
    """Every canonical spelling of ``word`` under PyPI's ultranormalisation (o/0, l/i/1,
    hyphens between letters): one "too similar" class holding many legacy projects."""
    import itertools

    choices = [{"o": "o0", "l": "li1"}.get(ch, ch) for ch in word]
    spellings = ["".join(p) for p in itertools.product(*choices)]
    gaps = list(itertools.product(("", "-"), repeat=len(word) - 1))
    return [spelling[0] + "".join(g + ch for g, ch in zip(gap, spelling[1:], strict=True))
            for spelling in spellings for gap in gaps[:4]]


def test_a_class_spanning_many_blocks_is_answered_whole_fresh_and_cached(
        fake_public: FakePublicIndex, tmp_path: Path) -> None:
    crowded = one_class("lollipop")  # hundreds of names, one ultranormalised key
    assert len(crowded) > 4 * BLOCK_LINES
    fake_public.add_listed_projects(generated(3000) + crowded + ["lollip0ps", "lollipo"])
    config = config_for(fake_public)
    fetched = fetch_listing(config, cache_dir=tmp_path)
    cached = cached_listing(config, cache_dir=tmp_path)
    assert cached is not None
    for listing in (fetched, cached):
        assert all(name in listing for name in crowded)
        assert all(listing.similar(name) is None for name in crowded)  # each exists itself
        assert listing.similar("l-o-l-l-i-p-o-p") in crowded  # a new spelling: too similar
        assert "lollipopx" not in listing and listing.similar("lollipopx") is None
        assert "lollip0ps" in listing and "lollipo" in listing  # the neighbours either side
        assert "proj000000x" in listing and "proj002999x" in listing  # the first and last
        assert sorted(listing) == sorted(generated(3000) + crowded + ["lollip0ps", "lollipo"])


def test_a_cached_listing_answers_without_being_read_into_memory(
        fake_public: FakePublicIndex, tmp_path: Path) -> None:
    import tracemalloc

    fake_public.add_listed_projects(generated(50_000))
    config = config_for(fake_public)
    fetch_listing(config, cache_dir=tmp_path)
    size = next(tmp_path.glob("listing-*.data")).stat().st_size
    tracemalloc.start()
    try:
        listing = cached_listing(config, cache_dir=tmp_path)
        assert listing is not None
        assert [f"proj{i:06d}x" in listing for i in range(0, 50_000, 500)] == [True] * 100
        assert listing.similar("pr0j012345x") == "proj012345x"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(listing) == 50_000
    assert peak < size / 10  # the names stay on disk: a warm audit of a few names reads a few blocks


def test_a_cache_cut_short_or_damaged_anywhere_is_downloaded_again(fake_public: FakePublicIndex,
                                                        tmp_path: Path) -> None:
    fake_public.add_listed_projects(generated(500))
    config = config_for(fake_public)
    fetch_listing(config, cache_dir=tmp_path)
    data = next(tmp_path.glob("listing-*.data"))
    whole = data.read_bytes()
    for cut in (len(whole) - 1, len(whole) // 2, whole.index(b"\n") + 5):
        data.write_bytes(whole[:cut])
        assert cached_listing(config, cache_dir=tmp_path) is None
    data.write_bytes(whole + b"proj999999x\tproj999999x\t\n")  # grown: not what was written
    assert cached_listing(config, cache_dir=tmp_path) is None
    for at in (whole.index(b"\n") + 3, len(whole) // 2, len(whole) - 2):
        flipped = bytes([whole[at] ^ 1])  # one byte of the block index, a line, the last line
        data.write_bytes(whole[:at] + flipped + whole[at + 1:])
        assert cached_listing(config, cache_dir=tmp_path) is None, at
    data.write_bytes(whole)
    assert cached_listing(config, cache_dir=tmp_path) is not None


def test_serve_picks_up_a_listing_an_audit_cached_after_it_started(
        fake_public: FakePublicIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # serve starts before anyone ran audit: no listing; a later audit caches one, and from
    # then on a name too similar to a public project is PROTECTED without an upload.
    from namekeeper import config as cfg
    from namekeeper import keeper as keeper_module
    from namekeeper.app import build_keeper
    from namekeeper.model import Verdict

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(keeper_module, "LOOK_IN_CACHE_EVERY", 0.0)
    path = tmp_path / "nk.toml"
    path.write_text(fake_public.config_toml() + f'[store]\npath = "{tmp_path / "s.sqlite3"}"\n')
    config = cfg.load(path)
    fake_public.add_project("acme-tools")
    keeper, store = build_keeper(config, with_notifiers=False)
    with store:
        assert keeper.classify("acmet00ls", None).verdict is Verdict.FREE  # no listing yet
        fetch_listing(config.public)  # what audit does
        assert keeper.classify("acmet00ls", None).verdict is Verdict.PROTECTED


@pytest.mark.parametrize("body", [b'{"meta": {"api-version": "1.1"}, "projects": []}',
                                  b'{"meta": {"api-version": "1.1"}, "projects": '
                                  b'[{"name": "bad name!", "_last-serial": 1}]}'])
def test_a_listing_without_projects_is_refused_not_read_as_all_free(
        fake_public: FakePublicIndex, tmp_path: Path, body: bytes) -> None:
    serve_listing(fake_public, body)
    with pytest.raises(ListingUnavailable, match=r"/simple/ lists no projects$"):
        fetch_listing(config_for(fake_public), cache_dir=tmp_path)
    assert cached_listing(config_for(fake_public), cache_dir=tmp_path) is None


def test_an_html_page_without_projects_is_refused(fake_public: FakePublicIndex,
                                                  tmp_path: Path) -> None:
    fake_public.serve_json = False  # e.g. a proxy's sign-in page answering for the index
    with pytest.raises(ListingUnavailable, match="lists no projects"):
        fetch_listing(config_for(fake_public), cache_dir=tmp_path)
