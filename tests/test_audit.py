"""`namekeeper audit` end to end: private indexes and lock files against the fake public index."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from _cli import write_config
from _devpi import DevpiServer, make_sdist
from _fake_public import FakePublicIndex
from _servers import PORTAL_PAGE, serving_page
from namekeeper.audit import budget_estimate, index_auth, reservation_order
from namekeeper.cli import main
from namekeeper.model import Action, Outcome, Severity, Verdict, utcnow
from namekeeper.store.sqlite import Store

pytestmark = pytest.mark.slow  # private and public indexes are fake servers

PRIVATE_NAMES = [
    "acme-taken",          # held by someone else on the public index
    "acme-ours",           # held by our account
    "acme-t00ls",          # o/0 look-alike of the public acme-tools
    "acme_too1s",          # l/1 look-alike
    "acmetools",           # separators dropped
    "asyncio",             # standard library
    "acme-fork-requests",  # excluded by policy
    "acme-billing",        # free
    "acme-free-one",       # free ...
    "acme-free-0ne",       # ... and the same ultranormalised class
]
EXPECTED = {
    "acme-taken": "taken", "acme-ours": "ours", "acme-t00ls": "protected",
    "acme-too1s": "protected", "acmetools": "protected", "asyncio": "protected",
    "acme-fork-requests": "excluded", "acme-billing": "free", "acme-free-one": "free",
    "acme-free-0ne": "free",
}


@pytest.fixture
def public(fake_public: FakePublicIndex) -> FakePublicIndex:
    fake_public.add_listed_projects(f"proj{i:05d}q" for i in range(5000))
    fake_public.add_project("acme-taken", owners=["mallory"])
    fake_public.add_project("acme-ours", owners=["acme-security"])
    fake_public.add_project("acme-tools", owners=["someone"])
    return fake_public


@pytest.fixture
def private() -> Iterator[FakePublicIndex]:
    """A private PEP 503 index (HTML only, like Artifactory's)."""
    index = FakePublicIndex().start()
    index.serve_json = False
    for name in PRIVATE_NAMES:
        index.add_project(name, owners=["acme"])
    try:
        yield index
    finally:
        index.stop()


@pytest.fixture
def cfg(tmp_path: Path, public: FakePublicIndex) -> Path:
    return write_config(tmp_path, public.config_toml())


def audit(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str,
          fmt: str = "json") -> tuple[int, object, str]:
    code = main(["--config", str(cfg), "--format", fmt, "audit", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if fmt == "json" else out, err


def verdicts(doc: object) -> dict[str, str]:
    assert isinstance(doc, dict)
    return {row["name"]: row["verdict"] for row in doc["names"]}


def api_requests(fake: FakePublicIndex) -> tuple[int, int, int]:
    """(listing requests, JSON-API requests, per-project simple pages)."""
    paths = [p for m, p in fake.requests]
    return (paths.count("/simple/"), sum(p.startswith("/pypi/") for p in paths),
            sum(p.startswith("/simple/") and p != "/simple/" for p in paths))


def test_audit_of_a_private_index_gives_every_verdict_with_few_requests(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tmp_path: Path) -> None:
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    assert code == 1  # FREE and TAKEN names
    assert verdicts(doc) == EXPECTED
    rows = {r["name"]: r for r in doc["names"]}
    assert "too similar to the existing project acme-tools" in rows["acme-t00ls"]["reason"]
    assert rows["acme-taken"]["owners"] == ["mallory"]
    assert rows["acme-billing"]["index"] == private.simple_url
    assert doc["summary"]["line"] == ("3 FREE — at risk, 1 OURS, 1 TAKEN — of which 0 critical, "
                                      "4 PROTECTED, 1 EXCLUDED")
    # One listing, one JSON-API request per existing name, no per-name existence checks.
    assert api_requests(public) == (1, 2, 0)
    assert public.listing_answers == [200]
    assert sum(public.attempts.values()) == 0

    store = Store(tmp_path / "state.sqlite3")
    for name in EXPECTED:
        record = store.get(name)
        assert record is not None and record.first_index == private.simple_url
        assert record.first_seen_private is not None and record.verdict == EXPECTED[name]
    assert store.queue_items() == []  # without --reserve nothing is queued

    # A second audit revalidates the cached listing and downloads nothing.
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    assert code == 1 and verdicts(doc) == EXPECTED
    assert public.listing_answers == [200, 304]
    assert api_requests(public) == (2, 4, 0)


def test_a_cache_directory_that_cannot_be_made_costs_the_cache_not_the_answer(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))  # NotADirectoryError
    for _ in range(2):  # nothing cached: each audit downloads the listing, and answers
        code, doc, err = audit(capsys, cfg, "--index", private.simple_url)
        assert code == 1 and verdicts(doc) == EXPECTED
        assert "Traceback" not in err and "cannot cache the public listing" in err
    assert public.listing_answers == [200, 200]


def test_a_revalidation_that_cannot_be_recorded_still_answers(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    audit(capsys, cfg, "--index", private.simple_url)  # caches the listing
    real_replace = os.replace

    def read_only_meta(src: str, dst: object) -> None:  # a meta file we may not overwrite
        if str(dst).endswith(".json"):
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", read_only_meta)
    code, doc, err = audit(capsys, cfg, "--index", private.simple_url)
    assert code == 1 and verdicts(doc) == EXPECTED
    assert "Traceback" not in err and "cannot record the public listing's revalidation" in err
    assert public.listing_answers == [200, 304]


@pytest.mark.parametrize("tab", ["after the key", "before the serial"])
def test_a_damaged_cached_listing_is_downloaded_afresh_not_believed(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tab: str) -> None:
    # One byte: the key's tab changed, acme-taken read as absent (FREE); the serial's, a
    # line that did not parse (a traceback on every audit, the 304 keeping the damage).
    from namekeeper.public.listing import default_cache_dir

    audit(capsys, cfg, "--index", private.simple_url)  # caches the listing
    [data] = default_cache_dir().glob("listing-*.data")
    whole = data.read_bytes()
    at = whole.index(b"\nacmetaken\tacme-taken\t") + len(
        b"\nacmetaken" if tab == "after the key" else b"\nacmetaken\tacme-taken")
    assert whole[at:at + 1] == b"\t"
    data.write_bytes(whole[:at] + b"x" + whole[at + 1:])
    for _ in range(2):  # the download replaced the damaged file: the next audit revalidates
        code, doc, err = audit(capsys, cfg, "--index", private.simple_url)
        assert code == 1 and verdicts(doc) == EXPECTED and "Traceback" not in err
    assert public.listing_answers == [200, 200, 304]
    refetch = [h for m, p, h in public.request_headers if p == "/simple/"][1]
    assert "If-None-Match" not in refetch and "If-Modified-Since" not in refetch
    assert data.read_bytes() == whole


def test_reserve_queues_one_name_per_class_in_order_and_uploads_nothing(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tmp_path: Path) -> None:
    code, out, err = audit(capsys, cfg, "--index", private.simple_url, "--reserve", fmt="table")
    assert code == 1
    assert ("queued for reservation: 2 names at 20/hour: at once, within this hour's free "
            "slots") in " ".join(str(out).split())
    store = Store(tmp_path / "state.sqlite3")
    queued = [item["name"] for item in store.queue_items()]
    assert sorted(queued) == ["acme-billing", "acme-free-0ne"]  # one of the o/0 class
    assert [store.claim("w1").name, store.claim("w1").name] == ["acme-billing",  # type: ignore[union-attr]
                                                                "acme-free-0ne"]
    assert sum(public.attempts.values()) == 0 and not public.uploads
    # The hour nearly spent: one goes at once, the other when the oldest slot frees.
    for i in range(19):
        assert store.take_budget(f"acme-earlier-{i}", 20) is None
    code, out, err = audit(capsys, cfg, "--index", private.simple_url, "--reserve", fmt="table")
    assert "queued for reservation: 2 names at 20/hour: about 60 min" in str(out)


def test_reservation_order_is_riskiest_then_oldest_then_by_name() -> None:
    from datetime import datetime, timezone

    from namekeeper.model import Action, Outcome, Severity, Verdict

    def free(name: str, severity: Severity, day: int) -> Outcome:
        return Outcome(name=name, display_name=name, verdict=Verdict.FREE, action=Action.SKIPPED,
                       severity=severity, reason="", message="",
                       first_seen_private=datetime(2024, 1, day, tzinfo=timezone.utc))

    order = reservation_order([free("b-new", Severity.LOW, 9), free("a-new", Severity.LOW, 9),
                               free("old", Severity.LOW, 1), free("vanished", Severity.HIGH, 5),
                               free("o1d", Severity.LOW, 2)])  # same class as "old": covered
    assert [o.name for o in order] == ["vanished", "old", "a-new", "b-new"]


def test_budget_estimate_reads_like_a_person_wrote_it() -> None:
    # An unspent hour: its 20 slots go at once, then 20 more each hour.
    assert budget_estimate(240, 20) == "240 names at 20/hour: about 11 h"
    assert budget_estimate(1, 20) == "1 name at 20/hour: at once, within this hour's free slots"
    assert budget_estimate(20, 20) == "20 names at 20/hour: at once, within this hour's free slots"
    assert budget_estimate(30, 20) == "30 names at 20/hour: about 1.0 h"
    assert budget_estimate(2000, 20) == "2000 names at 20/hour: about 4.1 days"
    assert budget_estimate(0, 20) == "0 names: nothing to queue"


def test_budget_estimate_counts_the_slots_spent_and_a_pause() -> None:
    now = 10_000.0
    # The hour is spent (the oldest slot 10 min ago): nothing goes before it frees, in 50 min.
    assert budget_estimate(3, 20, spent_at=[now - 600] * 20, now=now) == \
        "3 names at 20/hour: about 50 min"
    # Two slots left: two go at once, the third when the oldest of the others is an hour old.
    spent = [now - 3000] + [now - 60] * 17
    assert budget_estimate(2, 20, spent_at=spent, now=now).endswith("at once, within this "
                                                                    "hour's free slots")
    assert budget_estimate(3, 20, spent_at=spent, now=now) == "3 names at 20/hour: about 10 min"
    # Slots older than the hour are free again; a pause the index asked for delays everything.
    assert budget_estimate(5, 20, spent_at=[now - 4000] * 20, now=now).endswith("free slots")
    assert budget_estimate(1, 20, now=now, paused_until=now + 1800) == \
        "1 name at 20/hour: about 30 min"


def test_lock_files_with_two_indexes_classify_only_the_private_packages(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        tmp_path: Path) -> None:
    private_url = "https://devpi.example.com/acme/prod/+simple/"
    public_url = public.simple_url.rstrip("/")  # lock files write it without the final slash
    (tmp_path / "pylock.toml").write_text(f"""
lock-version = "1.0"
[[packages]]
name = "acme-taken"
version = "1.0"
index = "{private_url}"
[[packages]]
name = "proj00042q"
version = "1.0"
index = "{public_url}"
""")
    (tmp_path / "uv.lock").write_text(f"""
version = 1
[[package]]
name = "acme-billing"
version = "2.0"
source = {{ registry = "{private_url}" }}
[[package]]
name = "proj00043q"
version = "1.0"
source = {{ registry = "{public.simple_url}" }}
[[package]]
name = "my-app"
version = "0.1"
source = {{ virtual = "." }}
""")
    code, doc, _ = audit(capsys, cfg, "--lock", str(tmp_path / "pylock.toml"),
                         "--lock", str(tmp_path / "uv.lock"))
    assert code == 1
    assert verdicts(doc) == {"acme-taken": "taken", "acme-billing": "free"}
    assert {r["index"] for r in doc["names"]} == {private_url}
    record = Store(tmp_path / "state.sqlite3").get("acme-billing")
    assert record is not None and record.first_index == private_url
    assert record.first_source == "lock" and record.highest_private_version == "2.0"


@pytest.mark.parametrize("simple", ["json", "html"])
def test_a_lock_that_names_no_index_is_judged_by_the_files_the_public_index_serves(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        tmp_path: Path, simple: str) -> None:
    # pip writes no "index": only each file's URL and sha256.
    public.serve_json = simple == "json"
    public.add_project("idna", versions=["3.7"])
    [(idna_file, served)] = public.project("idna")["files"].items()  # type: ignore[index]
    private_host = "https://devpi.example.com/acme/prod/+f"
    (tmp_path / "pylock.toml").write_text(f"""
lock-version = "1.0"
created-by = "pip"
[[packages]]
name = "idna"
version = "3.7"
[[packages.wheels]]
url = "{private_host}/{idna_file}"
hashes = {{ sha256 = "{served["sha256"]}" }}
[[packages]]
name = "acme-taken"
version = "1.0"
[packages.sdist]
url = "{private_host}/acme_taken-1.0.tar.gz"
hashes = {{ sha256 = "{"1" * 64}" }}
[[packages]]
name = "acme-billing"
version = "2.0"
[[packages.wheels]]
url = "{private_host}/acme_billing-2.0-py3-none-any.whl"
hashes = {{ sha256 = "{"2" * 64}" }}
""")
    code, doc, _ = audit(capsys, cfg, "--lock", str(tmp_path / "pylock.toml"))
    assert code == 1
    # idna's file is the public one (through a mirror): public.  acme-taken's is not: ours,
    # shadowed by mallory's project of the same name.
    assert verdicts(doc) == {"acme-taken": "taken", "acme-billing": "free"}
    assert {r["index"] for r in doc["names"]} == {"https://devpi.example.com/"}


@pytest.mark.parametrize("pip_lock_first", [True, False])
def test_a_name_one_lock_has_from_a_private_index_is_audited_whatever_a_pip_lock_says(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        tmp_path: Path, pip_lock_first: bool) -> None:
    # The same name from both sides is exactly the confusion audit is for: the pip lock took
    # the public file, the uv lock the private index's package.
    public.add_project("idna", versions=["3.7"])
    [(idna_file, served)] = public.project("idna")["files"].items()  # type: ignore[index]
    pip_lock = tmp_path / "pylock.toml"
    pip_lock.write_text(f"""
lock-version = "1.0"
created-by = "pip"
[[packages]]
name = "idna"
version = "3.7"
[[packages.wheels]]
url = "https://mirror.example/{idna_file}"
hashes = {{ sha256 = "{served["sha256"]}" }}
""")
    uv_lock = tmp_path / "uv.lock"
    uv_lock.write_text('version = 1\n[[package]]\nname = "idna"\nversion = "9.0"\n'
                       'source = { registry = "https://nexus.acme.example/simple/" }\n')
    locks = [pip_lock, uv_lock] if pip_lock_first else [uv_lock, pip_lock]
    _, doc, _ = audit(capsys, cfg, *(a for lock in locks for a in ("--lock", str(lock))))
    [row] = doc["names"]
    assert (row["name"], row["index"]) == ("idna", "https://nexus.acme.example/simple/")


def test_all_four_formats_parse(capsys: pytest.CaptureFixture[str], cfg: Path,
                                private: FakePublicIndex) -> None:
    _, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    expected = verdicts(doc)

    _, out, err = audit(capsys, cfg, "--index", private.simple_url, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(str(out))))
    assert {r["name"]: r["verdict"] for r in rows} == expected
    assert "3 FREE — at risk" in err  # the summary stays out of the CSV

    _, out, _ = audit(capsys, cfg, "--index", private.simple_url, fmt="markdown")
    lines = str(out).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["name", "verdict", "severity", "owners", "index", "reason"]
    assert set(lines[1]) <= {"|", "-"}
    table = [dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")), strict=True))
             for line in lines[2:2 + len(expected)]]
    assert {r["name"]: r["verdict"] for r in table} == expected
    assert lines[-1].startswith("**3 FREE — at risk")

    _, out, _ = audit(capsys, cfg, "--index", private.simple_url, fmt="table")
    for name in expected:
        assert name in str(out)
    assert str(out).rstrip().endswith("1 EXCLUDED")
    # Riskiest first: the TAKEN row comes before every FREE one.
    assert str(out).index("acme-taken") < str(out).index("acme-billing")


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown", "table"])
def test_quiet_shows_only_the_names_that_need_attention_in_every_format(
        capsys: pytest.CaptureFixture[str], cfg: Path, private: FakePublicIndex,
        tmp_path: Path, fmt: str) -> None:
    attention = {name for name, verdict in EXPECTED.items() if verdict in ("free", "taken")}
    _, everything, _ = audit(capsys, cfg, "--index", private.simple_url)
    assert isinstance(everything, dict)
    code, out, err = audit(capsys, cfg, "-q", "--index", private.simple_url, fmt=fmt)
    assert code == 1 and "Traceback" not in err
    text = json.dumps(out) if fmt == "json" else str(out)
    assert all(name in text for name in attention)
    assert not [name for name in set(EXPECTED) - attention if name in text]
    if fmt == "json":
        assert set(verdicts(out)) == attention
        assert isinstance(out, dict) and out["summary"] == everything["summary"]
    else:  # the summary still counts the names not listed (OURS, PROTECTED, EXCLUDED)
        assert everything["summary"]["line"] in str(out) + err

    # Nothing needs attention: nothing printed (an empty list in JSON), exit 0.
    calm = FakePublicIndex().start()
    try:
        calm.serve_json = False
        for name in ("acme-ours", "asyncio", "acme-fork-requests"):
            calm.add_project(name, owners=["acme"])
        code, out, err = audit(capsys, cfg, "-q", "--index", calm.simple_url, fmt=fmt)
    finally:
        calm.stop()
    assert code == 0 and "Traceback" not in err
    if fmt == "json":
        assert verdicts(out) == {}
    else:
        assert (out, err) == ("", "")


def test_a_line_break_or_pipe_from_the_public_index_cannot_split_a_markdown_row(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex) -> None:
    # CommonMark ends a line at \r as at \n: the row would end, and "FREE" start a new one.
    public.add_project("acme-taken", owners=["mallory"], organization="Evil|Corp\r| FREE | x")
    _, out, _ = audit(capsys, cfg, "--index", private.simple_url, fmt="markdown")
    [row] = [line for line in str(out).splitlines() if line.startswith("| acme-taken |")]
    assert "\r" not in str(out) and "Evil\\|Corp \\| FREE \\| x" in row


def test_progress_is_drawn_on_a_terminal_and_absent_when_piped(
        cfg: Path, private: FakePublicIndex) -> None:
    cmd = [sys.executable, "-m", "namekeeper", "--config", str(cfg), "audit", "--index",
           private.simple_url]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 1, piped.stderr
    assert "classifying" not in piped.stderr and "\x1b[" not in piped.stdout + piped.stderr

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 1
    assert b"classifying" in seen or b"public index" in seen
    assert b"acme-billing" in out  # the report itself still goes to stdout


def test_an_audit_imports_no_uploader_notifier_or_table_drawing(
        cfg: Path, private: FakePublicIndex) -> None:
    # Start-up is a large share of a warm audit: what it never uses, it never imports.
    heavy = ("apprise", "build", "twine.commands.upload", "twine.repository", "keyring", "rich")
    script = ("import sys\nfrom namekeeper.cli import main\n"
              f"code = main(['--config', {str(cfg)!r}, '--format', 'json', 'audit', '--index', "
              f"{private.simple_url!r}])\n"
              f"print([m for m in {heavy!r} if m in sys.modules], file=sys.stderr)\n"
              "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert verdicts(json.loads(done.stdout)) == EXPECTED
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_throttled_json_api_is_waited_for_not_failed(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex) -> None:
    public.throttle_json = 2  # the next two JSON-API requests get 429 with Retry-After: 1
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    assert code == 1 and verdicts(doc) == EXPECTED
    assert [kind for _, path, kind in public.faulted] == ["429", "429"]


def test_bad_input_is_one_line_exit_2_and_changes_nothing(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        tmp_path: Path) -> None:
    (tmp_path / "pylock.toml").write_text('lock-version = "9.0"\n')
    (tmp_path / "uv.lock").write_text("version = 1\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    for args in (["--lock", str(tmp_path / "pylock.toml")],
                 ["--lock", str(tmp_path / "uv.lock")],  # nested too deeply for tomllib
                 ["--index", "https://bot:s3cret@private.example/simple/"],
                 ["--index", "ftp://private.example/simple/"],
                 []):
        code = main(["--config", str(cfg), "audit", *args])
        out, err = capsys.readouterr()
        assert code == 2, err
        assert err.startswith("namekeeper: error: ") and err.count("\n") == 1
        assert "s3cret" not in err and "Traceback" not in err
    assert public.requests == []
    assert not (tmp_path / "state.sqlite3").exists() or Store(tmp_path / "state.sqlite3").all_names() == []


def test_an_unreadable_index_is_exit_3_and_the_others_are_still_reported(
        capsys: pytest.CaptureFixture[str], cfg: Path, private: FakePublicIndex) -> None:
    from _servers import free_port

    dead = f"http://127.0.0.1:{free_port()}/simple/"
    code, doc, _ = audit(capsys, cfg, "--index", dead, "--index", private.simple_url)
    assert code == 3
    assert isinstance(doc, dict) and len(doc["unreadable"]) == 1 and dead in doc["unreadable"][0]
    assert verdicts(doc) == EXPECTED


@pytest.mark.parametrize("reserve", [False, True])
def test_a_page_that_is_no_index_is_unreadable_and_nothing_of_it_is_recorded_or_queued(
        capsys: pytest.CaptureFixture[str], cfg: Path, private: FakePublicIndex,
        tmp_path: Path, reserve: bool) -> None:
    with serving_page(PORTAL_PAGE) as portal:  # the URL mistyped: a sign-in page
        code, out, _ = audit(capsys, cfg, "--index", portal, "--index", private.simple_url,
                             *(["--reserve"] if reserve else []), fmt="table")
    assert code == 3
    notes = [line for line in str(out).splitlines() if portal in line]
    assert notes == [f"private index not read: {portal} does not look like a simple index: its links "
                     "do not lead to project pages (is it the index's /simple/ root?)"]
    assert "acme-billing" in str(out)  # the good index is still reported
    store = Store(tmp_path / "state.sqlite3")
    assert [r.name for r in store.all_names()] == sorted(EXPECTED)  # no Home, Blog, Login...
    queued = sorted(item["name"] for item in store.queue_items())
    assert queued == (["acme-billing", "acme-free-0ne"] if reserve else [])


def test_an_unreachable_public_index_is_exit_3_in_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, private: FakePublicIndex) -> None:
    from _servers import free_port

    port = free_port()
    cfg = write_config(tmp_path, f'[public]\nsimple-url = "http://127.0.0.1:{port}/simple/"\n'
                                 f'json-url = "http://127.0.0.1:{port}/pypi/"\nretries = 0\n')
    code = main(["--config", str(cfg), "audit", "--index", private.simple_url])
    _, err = capsys.readouterr()
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"namekeeper: error: the public index's listing: "
                          f"GET http://127.0.0.1:{port}/simple/ failed")  # which index it was


def test_index_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                     cfg: Path) -> None:
    import requests

    from namekeeper.config import load

    config = load(cfg)
    assert index_auth("https://private.example/simple/", config) is None
    monkeypatch.setenv("NAMEKEEPER_INDEX_USERNAME", "bot")
    monkeypatch.setenv("NAMEKEEPER_INDEX_PASSWORD", "pw-secret")
    basic = index_auth("https://private.example/simple/", config)
    request = requests.Request("GET", "https://private.example/simple/", auth=basic).prepare()
    assert request.headers["Authorization"].startswith("Basic ")
    monkeypatch.setenv("NAMEKEEPER_INDEX_TOKEN", "tok-secret")
    bearer = index_auth("https://private.example/simple/", config)
    request = requests.Request("GET", "https://private.example/simple/", auth=bearer).prepare()
    assert request.headers["Authorization"] == "Bearer tok-secret"
    assert "tok-secret" not in repr(bearer)


def test_the_environments_credentials_are_never_sent_to_a_second_host(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cfg: Path,
        private: FakePublicIndex) -> None:
    other = FakePublicIndex().start()  # another host: 127.0.0.1 on another port
    try:
        other.serve_json = False
        other.add_project("acme-other")
        monkeypatch.setenv("NAMEKEEPER_INDEX_TOKEN", "tok-secret")
        code = main(["--config", str(cfg), "audit", "--index", private.simple_url,
                     "--index", other.simple_url])
        _, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1 and "tok-secret" not in err
        assert "NAMEKEEPER_INDEX_TOKEN would be sent to 2 hosts (127.0.0.1:" in err
        assert not private.requests and not other.requests  # refused before any request
        # One host, two of its indexes: that index's credentials, as documented.
        code = main(["--config", str(cfg), "audit", "--index", other.simple_url,
                     "--index", other.simple_url.replace("/simple/", "/other/simple/")])
        capsys.readouterr()
        assert code != 2
        assert other.request_headers and all(
            h.get("Authorization") == "Bearer tok-secret" for _, p, h in other.request_headers)
    finally:
        other.stop()


def test_audit_of_a_real_devpi_index(capsys: pytest.CaptureFixture[str], cfg: Path,
                                     devpi: DevpiServer, tmp_path: Path) -> None:
    index = devpi.new_index("audit")
    index.upload(*(make_sdist(tmp_path, name) for name in ("acme-taken", "Acme_T00ls",
                                                             "acme-billing")))
    code, doc, _ = audit(capsys, cfg, "--index", index.simple_url)
    assert code == 1
    assert verdicts(doc) == {"acme-taken": "taken", "acme-t00ls": "protected",
                             "acme-billing": "free"}
    assert {r["index"] for r in doc["names"]} == {index.simple_url}


def test_a_devpi_index_inheriting_a_mirror_is_audited_for_its_own_names_only(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        devpi: DevpiServer, tmp_path: Path) -> None:
    # devpi's usual set-up: the private index inherits a mirror of the public index, and
    # its simple page lists the mirror's projects too. Those are the public index's own
    # names, not private ones: auditing them would raise an alarm per public project.
    mirror = devpi.new_index("public-mirror", type="mirror", mirror_url=public.simple_url)
    team = devpi.new_index("team")
    prod = devpi.new_index("prod", bases=[mirror.index, team.index])
    team.upload(make_sdist(tmp_path, "acme-team-lib"))
    prod.upload(make_sdist(tmp_path, "acme-billing"))
    code, doc, _ = audit(capsys, cfg, "--index", prod.simple_url)
    assert verdicts(doc) == {"acme-billing": "free", "acme-team-lib": "free"}
    assert code == 1


def reserved(store: Store, name: str, ago: timedelta = timedelta(0)) -> None:
    """Our placeholder for ``name``, uploaded ``ago`` (a moment ago: within the CDN grace)."""
    store.record_outcome(Outcome(
        name=name, display_name=name, verdict=Verdict.OURS, action=Action.RESERVED,
        severity=Severity.NONE, reason="reserved", message=f"{name}: reserved",
        at=utcnow() - ago), reserved=True)


def test_a_name_in_the_class_of_our_fresh_placeholder_is_protected_as_check_says(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tmp_path: Path) -> None:
    # We reserved acme-free-one a moment ago; the public listing does not show it yet.
    # acme-free-0ne is in its class: the index will refuse it to everyone, so it is not
    # at risk, and audit must not raise the alarm that check does not.
    reserved(Store(tmp_path / "state.sqlite3"), "acme-free-one")
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    rows = {r["name"]: r for r in doc["names"]}  # type: ignore[index]
    assert verdicts(doc) == {**EXPECTED, "acme-free-one": "ours", "acme-free-0ne": "protected"}
    assert "Covered by our placeholder for acme-free-one" in rows["acme-free-0ne"]["reason"]
    assert main(["--config", str(cfg), "--format", "json", "check", "acme-free-0ne"]) == 0
    [checked] = json.loads(capsys.readouterr().out)
    assert (checked["verdict"], checked["reason"]) == ("protected", rows["acme-free-0ne"]["reason"])


def test_a_placeholder_the_index_removed_covers_no_name_of_its_class(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tmp_path: Path) -> None:
    # We reserved acme-free-one a month ago; the index has since removed it (PEP 541, say).
    # Its class is open to anyone again: acme-free-0ne is at risk, not covered.
    reserved(Store(tmp_path / "state.sqlite3"), "acme-free-one", ago=timedelta(days=30))
    private.remove_project("acme-free-one")  # an audit that does not even list it
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    rows = {r["name"]: r for r in doc["names"]}  # type: ignore[index]
    assert code == 1 and rows["acme-free-0ne"]["verdict"] == "free"
    # And once a re-check or an audit has found it gone, `check` says so too.
    private.add_project("acme-free-one", owners=["acme"])
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    rows = {r["name"]: r for r in doc["names"]}  # type: ignore[index]
    assert (rows["acme-free-one"]["verdict"], rows["acme-free-one"]["severity"]) == ("free", "high")
    assert main(["--config", str(cfg), "--format", "json", "check", "acme-free-0ne"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["verdict"] == "free"


def test_reserve_queues_a_placeholder_the_index_removed(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tmp_path: Path) -> None:
    reserved(Store(tmp_path / "state.sqlite3"), "acme-billing", ago=timedelta(days=30))
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url, "--reserve")
    queued = [item["name"] for item in Store(tmp_path / "state.sqlite3").queue_items()]
    assert doc["queued"][0] == "acme-billing"  # type: ignore[index]  # the riskiest first
    assert sorted(queued) == sorted(doc["queued"]) == ["acme-billing", "acme-free-0ne"]  # type: ignore[index]


def test_our_placeholder_seen_for_the_first_time_by_an_audit_is_ours(
        capsys: pytest.CaptureFixture[str], cfg: Path, public: FakePublicIndex,
        private: FakePublicIndex, tmp_path: Path) -> None:
    # The upload ran a moment ago under a bot account that [public] owners does not list.
    # The index names that account as the owner: as check does, the audit learns it as our
    # placeholder's owner instead of raising the alarm that someone else holds the name.
    reserved(Store(tmp_path / "state.sqlite3"), "acme-newly")
    public.add_project("acme-newly", owners=["acme-upload-bot"])
    private.add_project("acme-newly", owners=["acme"])
    code, doc, _ = audit(capsys, cfg, "--index", private.simple_url)
    row = next(r for r in doc["names"] if r["name"] == "acme-newly")  # type: ignore[index]
    assert row["verdict"] == "ours" and "acme-upload-bot" in row["reason"]
    assert Store(tmp_path / "state.sqlite3").placeholder_owners("acme-newly") == {"acme-upload-bot"}
