"""The built-in public-index lookup against the fake public index."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from _fake_public import FakePublicIndex, FaultPlan, post_upload
from namekeeper import __version__
from namekeeper.config import Config, PublicConfig, Secret
from namekeeper.plugins import get_plugin_manager
from namekeeper.public.interface import PublicIndexUnavailable
from namekeeper.public.simple import SimplePublicIndex

TOKEN = "pypi-test-token-alice"


def index_for(fake: FakePublicIndex, *, json_api: bool = True, timeout: float = 10.0,
              retries: int = 3) -> SimplePublicIndex:
    config = PublicConfig(simple_url=fake.simple_url,
                          json_url=fake.json_url if json_api else None,
                          upload_url=fake.upload_url, timeout=timeout)
    # No backoff sleeps: the retries themselves are what is under test.
    return SimplePublicIndex(config, retries=retries, backoff_factor=0.0, max_retry_after=1.0)


def test_free_name(fake_public: FakePublicIndex) -> None:
    project = index_for(fake_public).lookup("acme-free")
    assert project.exists is False
    assert project.ownership_known is True  # the JSON API exists, and nobody owns the name
    assert project.owners == () and project.versions == ()


def test_existing_name_with_owners_organization_versions(fake_public: FakePublicIndex) -> None:
    released = datetime(2023, 5, 17, 8, 30, tzinfo=timezone.utc)
    fake_public.add_project("Acme_Utils", owners=["Mallory", "eve"], organization="evil-corp",
                            versions=["0.1", "9.9.9"], first_release=released,
                            author_email="security@acme.example")
    project = index_for(fake_public).lookup("acme-utils")
    assert project.exists and project.ownership_known
    assert project.owners == ("mallory", "eve")  # from ownership, never from author_email
    assert project.organization == "evil-corp"
    assert set(project.versions) == {"0.1", "9.9.9"} and project.highest_version == "9.9.9"
    assert project.first_release == released
    assert project.url == f"{fake_public.url}project/acme-utils/"


def test_first_release_is_the_earliest_upload(fake_public: FakePublicIndex) -> None:
    now = [1_700_000_000.0]
    fake_public.clock = lambda: now[0]
    fake_public.add_user("alice", TOKEN)
    assert post_upload(fake_public, "acme-mine", "1.0", token=TOKEN).status_code == 200
    now[0] += 86400
    assert post_upload(fake_public, "acme-mine", "2.0", token=TOKEN).status_code == 200
    project = index_for(fake_public).lookup("acme-mine")
    assert project.owners == ("alice",) and project.organization is None
    assert project.first_release == datetime.fromtimestamp(1_700_000_000, timezone.utc)


def test_html_only_simple_index(fake_public: FakePublicIndex) -> None:
    fake_public.serve_json = False
    fake_public.add_project("acme-utils", versions=["1.0", "2.0rc1"])
    project = index_for(fake_public, json_api=False).lookup("acme-utils")
    assert project.exists and set(project.versions) == {"1.0", "2.0rc1"}
    assert project.ownership_known is False and project.owners == ()
    assert project.url is None


def test_json_simple_page_without_versions_key(fake_public: FakePublicIndex) -> None:
    fake_public.simple_api_version = "1.0"
    fake_public.add_project("acme-utils", versions=["1.0", "1.1"])
    project = index_for(fake_public, json_api=False).lookup("acme-utils")
    assert set(project.versions) == {"1.0", "1.1"}


@pytest.mark.parametrize("api", ["json-api", "simple-json", "simple-html"])
def test_versions_pip_would_never_offer_are_left_out(fake_public: FakePublicIndex,
                                                      api: str) -> None:
    # A yanked release (PEP 592) is installed only when pinned; one whose files were all
    # deleted is listed by the JSON API with no files: neither can outrank our package.
    fake_public.serve_json = api != "simple-html"
    fake_public.add_project("acme-utils", versions=["0.1", "98.0", "99.0"])
    fake_public.yank("acme-utils", "99.0", reason="broken")
    fake_public.delete_files("acme-utils", "98.0")
    project = index_for(fake_public, json_api=api == "json-api").lookup("acme-utils")
    assert project.exists
    assert project.versions == ("0.1",) and project.highest_version == "0.1"


def test_lookup_asks_for_pep_691_json(fake_public: FakePublicIndex) -> None:
    fake_public.add_project("acme-utils")
    index_for(fake_public, json_api=False).lookup("acme-utils")
    (_, _, headers), = [r for r in fake_public.request_headers if r[1] == "/simple/acme-utils/"]
    assert headers["Accept"].startswith("application/vnd.pypi.simple.v1+json")


def test_non_canonical_name_follows_the_redirect(fake_public: FakePublicIndex) -> None:
    fake_public.add_project("acme-utils", owners=["bob"])
    project = index_for(fake_public).lookup("Acme_Utils")
    assert project.exists and project.owners == ("bob",)
    assert ("GET", "/simple/Acme_Utils/") in fake_public.requests
    assert ("GET", "/simple/acme-utils/") in fake_public.requests


def test_without_json_api_ownership_is_unknown(fake_public: FakePublicIndex) -> None:
    fake_public.add_project("acme-utils", owners=["bob"])
    index = index_for(fake_public, json_api=False)
    assert index.lookup("acme-utils").ownership_known is False
    assert index.lookup("acme-free") == index.lookup("acme-free")
    assert index.lookup("acme-free").ownership_known is False
    assert not [path for _, path in fake_public.requests if path.startswith("/pypi/")]
    assert index.project_url("acme-utils") is None


def test_stale_json_api_means_exists_with_unknown_owners(fake_public: FakePublicIndex) -> None:
    fake_public.add_project("acme-new", versions=["0.0.0"])
    fake_public.json_hidden.add("acme-new")
    project = index_for(fake_public).lookup("acme-new")
    assert project.exists and not project.ownership_known
    assert project.versions == ("0.0.0",)


def test_hostile_name_stays_inside_the_index(fake_public: FakePublicIndex) -> None:
    project = index_for(fake_public).lookup("../../x")
    assert project.exists is False
    assert all(path.startswith("/simple/") for _, path in fake_public.requests)


def test_retries_server_errors_and_resets(fake_public: FakePublicIndex) -> None:
    fake_public.add_project("acme-utils", owners=["bob"])
    fake_public.faults = FaultPlan(rate=0.5, kinds=("500", "reset"), seed=1)
    index = index_for(fake_public)
    for _ in range(6):
        project = index.lookup("acme-utils")
        assert project.exists and project.owners == ("bob",)
    assert {kind for _, _, kind in fake_public.faulted} == {"500", "reset"}


def test_retries_429_honouring_retry_after(fake_public: FakePublicIndex) -> None:
    fake_public.add_project("acme-utils")
    # With seed 4 the first request draws a 429 and the next ones do not.
    fake_public.faults = FaultPlan(rate=0.5, kinds=("429",), seed=4)
    assert index_for(fake_public, json_api=False).lookup("acme-utils").exists
    assert [path for _, path, _ in fake_public.faulted] == ["/simple/acme-utils/"]


def test_retries_come_from_the_public_config(fake_public: FakePublicIndex) -> None:
    fake_public.faults = FaultPlan(rate=1.0, kinds=("500",), seed=1)
    config = PublicConfig(simple_url=fake_public.simple_url, json_url=None,
                          upload_url=fake_public.upload_url, retries=0)
    with pytest.raises(PublicIndexUnavailable):
        SimplePublicIndex(config).lookup("acme-utils")
    assert len(fake_public.faulted) == 1  # [public] retries = 0: the first try only


def test_stall_times_out_and_reports_unavailable(fake_public: FakePublicIndex) -> None:
    fake_public.faults = FaultPlan(rate=1.0, kinds=("stall",), stall_seconds=60)
    with pytest.raises(PublicIndexUnavailable):
        index_for(fake_public, timeout=0.2, retries=1).lookup("acme-utils")
    assert len(fake_public.faulted) == 2  # the first try and one retry


def test_persistent_5xx_is_unavailable_without_leaking_credentials(
        fake_public: FakePublicIndex) -> None:
    fake_public.faults = FaultPlan(rate=1.0, kinds=("500",))
    port = fake_public.url.rsplit(":", 1)[1]
    config = PublicConfig(simple_url=f"http://mirror-user:hunter2@127.0.0.1:{port}simple/",
                          json_url=fake_public.json_url, upload_url=fake_public.upload_url,
                          token=Secret("pypi-secret-token"))
    index = SimplePublicIndex(config, retries=2, backoff_factor=0.0)
    with pytest.raises(PublicIndexUnavailable) as caught:
        index.lookup("acme-utils")
    message = str(caught.value)
    assert "500" in message
    assert "hunter2" not in message and "pypi-secret-token" not in message
    assert len(fake_public.faulted) == 3


def test_unreachable_index_is_unavailable(fake_public: FakePublicIndex) -> None:
    index = index_for(fake_public, retries=1)
    fake_public.stop()
    with pytest.raises(PublicIndexUnavailable, match="unreachable"):
        index.lookup("acme-utils")


def test_user_agent_names_namekeeper(fake_public: FakePublicIndex) -> None:
    fake_public.add_project("acme-utils")
    index_for(fake_public).lookup("acme-utils")
    agents = {headers["User-Agent"] for _, _, headers in fake_public.request_headers}
    assert len(agents) == 1
    assert agents.pop().startswith(f"namekeeper/{__version__} requests/")


def test_builtin_plugin_provides_the_lookup(fake_public: FakePublicIndex) -> None:
    pm, _report = get_plugin_manager(third_party=False)
    config = Config(public=PublicConfig(simple_url=fake_public.simple_url,
                                        json_url=fake_public.json_url,
                                        upload_url=fake_public.upload_url))
    index = pm.hook.namekeeper_public_index(config=config)
    assert isinstance(index, SimplePublicIndex)
    fake_public.add_project("acme-utils", owners=["bob"])
    assert index.lookup("acme-utils").owners == ("bob",)
