"""The fake public index behaves like the public index's documented upload and lookup rules.

Other tests trust this fake to say "no" the way the public index does, so each
rule of FIELD-NOTES' table is checked here, with its status and reason text.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from _fake_public import (
    FakePublicIndex,
    FaultPlan,
    build_sdist,
    make_sdist_bytes,
)
from _fake_public import post_upload as upload
from namekeeper import config as nk_config
from namekeeper.toml_file import tomllib

pytestmark = pytest.mark.slow  # the fake public index is a server, driven by real twine

TOKEN = "pypi-test-token-alice"


def post_upload(fake: FakePublicIndex, name: str, version: str = "0.0.0", *,
                token: str | None = TOKEN, **kwargs: Any) -> requests.Response:
    return upload(fake, name, version, token=token, **kwargs)


@pytest.fixture
def fake(fake_public: FakePublicIndex) -> FakePublicIndex:
    fake_public.add_user("alice", TOKEN)
    return fake_public


def test_real_twine_upload_is_accepted_and_served(fake: FakePublicIndex, tmp_path: Path) -> None:
    sdist = build_sdist(tmp_path, "Acme-Private", "0.0.0")
    result = subprocess.run(
        [sys.executable, "-m", "twine", "upload", "--repository-url", fake.upload_url,
         "-u", "__token__", "-p", TOKEN, "--non-interactive", "--disable-progress-bar", str(sdist)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert fake.uploads["acme-private"] == 1
    stored = fake.project("acme-private")
    assert stored is not None and stored["owners"] == ["alice"] and stored["versions"] == ["0.0.0"]

    served = requests.get(fake.url + "files/acme_private-0.0.0.tar.gz", timeout=10)
    assert served.content == sdist.read_bytes()
    doc = requests.get(fake.json_url + "acme-private/json", timeout=10).json()
    assert doc["ownership"] == {"roles": [{"role": "Owner", "user": "alice"}],
                                "organization": None}
    assert list(doc["releases"]) == ["0.0.0"]


@pytest.mark.parametrize("auth", [None, "wrong-token", "user-not-token"])
def test_upload_without_valid_token_is_refused(fake: FakePublicIndex, auth: str | None) -> None:
    if auth is None:
        answer = post_upload(fake, "acme-thing", token=None)
    elif auth == "wrong-token":
        answer = post_upload(fake, "acme-thing", token="nope")
    else:
        answer = post_upload(fake, "acme-thing", username="alice")
    assert answer.status_code == 403
    assert "Invalid or non-existent authentication information" in answer.reason
    assert fake.project("acme-thing") is None


def test_invalid_name(fake: FakePublicIndex) -> None:
    answer = post_upload(fake, "-acme-")
    assert answer.status_code == 400
    assert "'-acme-' is an invalid value for Name" in answer.reason
    assert "is an invalid value for Name" in answer.text  # warehouse repeats it in the body


def test_name_owned_by_someone_else(fake: FakePublicIndex) -> None:
    fake.add_project("Taken.Name", owners=["mallory"])
    answer = post_upload(fake, "taken_name")
    assert answer.status_code == 403
    assert "The user 'alice' isn't allowed to upload to project 'Taken.Name'" in answer.reason
    stored = fake.project("taken-name")
    assert stored is not None and stored["owners"] == ["mallory"]


@pytest.mark.parametrize("name", ["os", "asyncore", "xml.etree", "Tkinter", "asyncio_base_events"])
def test_standard_library_names(fake: FakePublicIndex, name: str) -> None:
    answer = post_upload(fake, name)
    assert answer.status_code == 400
    assert f"The name {name!r} isn't allowed (conflict with Python Standard Library" \
        in answer.reason


def test_a_name_under_a_stdlib_package_that_is_no_module_is_not_refused(
        fake: FakePublicIndex) -> None:
    # Warehouse checks the canonical name against the set of modules and their prefixes.
    answer = post_upload(fake, "xml.acme")
    assert "Standard Library" not in answer.reason


def test_prohibited_name(fake: FakePublicIndex) -> None:
    fake.prohibit("Forbidden_Name")
    answer = post_upload(fake, "forbidden-name")
    assert answer.status_code == 400
    assert answer.reason.startswith("The name 'forbidden-name' isn't allowed. ")


@pytest.mark.parametrize("candidate", ["acmeutils", "ACME_UTI1S", "acme.uti.ls", "acme-ut1ls"])
def test_ultranormalised_collision(fake: FakePublicIndex, candidate: str) -> None:
    fake.add_project("acme-utils")
    answer = post_upload(fake, candidate)
    assert answer.status_code == 400
    assert f"The name {candidate!r} is too similar to an existing project" in answer.reason
    assert fake.project(candidate) is None


def test_checks_run_in_the_public_index_order(fake: FakePublicIndex) -> None:
    fake.prohibit("os")
    assert "Standard Library" in post_upload(fake, "os").reason  # stdlib before prohibited
    fake.prohibit("acme-blocked")
    fake.add_project("acmeblocked")
    assert post_upload(fake, "acme-blocked").reason.startswith(
        "The name 'acme-blocked' isn't allowed. ")  # prohibited before too-similar
    assert post_upload(fake, "acme.blocked").status_code == 400


def test_rate_limit_counts_new_projects_in_the_clock_window() -> None:
    now = [1_000_000.0]
    limited = FakePublicIndex(new_projects_per_hour=3, clock=lambda: now[0]).start()
    try:
        limited.add_user("alice", TOKEN)
        for i, name in enumerate(["acme-one", "acme-two", "acme-three"]):
            now[0] += 100 * i
            assert post_upload(limited, name).status_code == 200
        # now = start + 300: the oldest creation (at start) leaves the window at start + 3600.
        refused = post_upload(limited, "acme-four")
        assert refused.status_code == 429
        assert "Too many new projects created" in refused.reason
        assert refused.headers["Retry-After"] == str(3600 - 300)
        assert limited.project("acme-four") is None
        # New versions of one's own projects are not new projects.
        assert post_upload(limited, "acme-one", "0.0.1").status_code == 200
        # Rate limiting comes before the name rules.
        assert post_upload(limited, "os").status_code == 429
        now[0] += 3600 - 300
        assert post_upload(limited, "acme-four").status_code == 200
        assert limited.uploads == {"acme-one": 2, "acme-two": 1, "acme-three": 1, "acme-four": 1}
    finally:
        limited.stop()


def test_file_already_exists(fake: FakePublicIndex) -> None:
    assert post_upload(fake, "acme-files").status_code == 200
    different = make_sdist_bytes("acme-files", "0.0.0", summary="another build")
    answer = post_upload(fake, "acme-files", content=different)
    assert answer.status_code == 400
    assert answer.reason.startswith("File already exists ('acme_files-0.0.0.tar.gz', "
                                    "with blake2_256 hash ")
    # Like warehouse, an identical re-upload is a no-op success.
    assert post_upload(fake, "acme-files").status_code == 200
    assert fake.uploads["acme-files"] == 1
    assert fake.attempts["acme-files"] == 3


@pytest.mark.parametrize("filename", ["Acme-Files-0.0.0.tar.gz", "acme_files-0.0.1.tar.gz",
                                      "acme-files-0.0.0.tar.gz", "acme_files-0.0.0.zip"])
def test_sdist_filename_must_follow_pep_625(fake: FakePublicIndex, filename: str) -> None:
    answer = post_upload(fake, "acme-files", filename=filename)
    assert answer.status_code == 400
    assert "Invalid distribution file" in answer.reason or "Invalid file extension" in answer.reason
    assert fake.project("acme-files") is None


@pytest.mark.parametrize(("metadata_version", "accepted"),
                         [("1.0", True), ("2.4", True), ("2.5", True), ("2.6", False), ("", False)])
def test_metadata_version_range(fake: FakePublicIndex, metadata_version: str,
                                accepted: bool) -> None:
    answer = post_upload(fake, "acme-meta", metadata_version=metadata_version)
    assert (answer.status_code == 200) is accepted
    if not accepted:
        assert answer.status_code == 400 and "Metadata-Version" in answer.reason


def test_garbage_upload_is_refused_without_change(fake: FakePublicIndex) -> None:
    answer = post_upload(fake, "acme-garbage", content=b"not a tarball")
    assert answer.status_code == 400
    answer = requests.post(fake.upload_url, data=b"\x00\xff", auth=("__token__", TOKEN),
                           headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=10)
    assert answer.status_code == 400
    assert fake.project("acme-garbage") is None and not fake.uploads


def test_simple_api_json_html_redirect_and_404(fake: FakePublicIndex) -> None:
    fake.add_project("Acme_Utils", versions=["1.0", "2.0"])
    as_json = requests.get(fake.simple_url + "acme-utils/", timeout=10,
                           headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert as_json.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    assert as_json.json()["versions"] == ["1.0", "2.0"]
    as_html = requests.get(fake.simple_url + "acme-utils/", timeout=10)
    assert as_html.headers["Content-Type"] == "text/html"
    assert 'acme_utils-2.0.tar.gz#sha256=' in as_html.text
    assert "data-requires-python" not in as_html.text

    moved = requests.get(fake.simple_url + "Acme_Utils/", allow_redirects=False, timeout=10)
    assert moved.status_code == 301 and moved.headers["Location"] == "/simple/acme-utils/"
    assert requests.get(fake.simple_url + "acme-other/", timeout=10).status_code == 404
    assert requests.get(fake.json_url + "acme-other/json", timeout=10).status_code == 404
    assert requests.get(fake.url + "project/acme-utils/", timeout=10).status_code == 200
    assert requests.get(fake.url + "project/acme-other/", timeout=10).status_code == 404
    listing = requests.get(fake.simple_url, timeout=10,
                           headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    assert [p["name"] for p in listing["projects"]] == ["Acme_Utils"]


def test_json_api_for_seeded_project(fake: FakePublicIndex) -> None:
    fake.add_project("acme-org", owners=["Bob", "carol"], organization="acme",
                     versions=["1.0", "1.10", "1.9"])
    doc = requests.get(fake.json_url + "acme-org/json", timeout=10).json()
    assert doc["info"]["version"] == "1.10"
    assert doc["ownership"]["organization"] == "acme"
    assert [r["user"] for r in doc["ownership"]["roles"]] == ["Bob", "carol"]
    times = {f["upload_time_iso_8601"] for files in doc["releases"].values() for f in files}
    assert times == {"2020-01-01T00:00:00.000000Z"}


def test_faults(fake: FakePublicIndex) -> None:
    fake.add_project("acme-utils")
    url = fake.simple_url + "acme-utils/"
    fake.faults = FaultPlan(rate=1.0, kinds=("500",))
    assert requests.get(url, timeout=10).status_code == 500
    fake.faults = FaultPlan(rate=1.0, kinds=("429",))
    limited = requests.get(url, timeout=10)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    fake.faults = FaultPlan(rate=1.0, kinds=("reset",))
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=10)
    fake.faults = FaultPlan(rate=1.0, kinds=("stall",), stall_seconds=30)
    with pytest.raises(requests.ReadTimeout):
        requests.get(url, timeout=0.2)
    fake.faults = FaultPlan(rate=1.0, kinds=("500",), paths=("/legacy/",))
    assert requests.get(url, timeout=10).status_code == 200  # other paths are untouched
    assert post_upload(fake, "acme-faulted").status_code == 500
    assert fake.project("acme-faulted") is None and fake.attempts["acme-faulted"] == 1
    fake.faults = None
    assert post_upload(fake, "acme-faulted").status_code == 200
    assert [kind for _, _, kind in fake.faulted] == ["500", "429", "reset", "stall", "500"]


def test_stop_and_restart_keep_port_and_state(fake: FakePublicIndex) -> None:
    fake.add_project("acme-utils")
    url = fake.simple_url + "acme-utils/"
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    fake.start()
    assert requests.get(url, timeout=10).status_code == 200


def test_config_toml_points_namekeeper_at_the_fake(fake: FakePublicIndex) -> None:
    public = nk_config.from_dict(tomllib.loads(fake.config_toml(owners=["alice"]))).public
    assert (public.simple_url, public.json_url, public.upload_url) == \
        (fake.simple_url, fake.json_url, fake.upload_url)
    assert public.owners == ("alice",)
    without_json = nk_config.from_dict(tomllib.loads(fake.config_toml(json_url=None))).public
    assert without_json.json_url is None
