"""The config file: every documented key, secrets from the environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from namekeeper import config as cfg

FULL = """
[public]
simple-url = "http://127.0.0.1:9/simple"
json-url = ""
upload-url = "http://127.0.0.1:9/legacy/"
username = "__token__"
owners = ["Acme-Security"]
organization = "acme"
retries = 0
[placeholder]
organization = "ACME Corp"
contact = "security@acme.example"
version = "0.0.0.dev0"
template = "tpl"
[policy]
include = ["acme-*"]
exclude = ["acme-fork-*"]
dry-run = true
[store]
path = "state/nk.sqlite3"
[serve]
host = "127.0.0.1"
port = 8480
[artifactory]
signing = false
repos = ["pypi-local"]
base-url = "https://artifactory.example.com/artifactory"
[[poll]]
url = "https://nexus.example.com/repository/pypi-internal/simple/"
interval = "10m"
token-env = "NEXUS_TOKEN"
[queue]
new-projects-per-hour = 5
max-attempts = 3
[notify]
urls = ["json://127.0.0.1:9/hook"]
"""


def test_every_documented_key_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-tok")
    monkeypatch.setenv("NAMEKEEPER_ARTIFACTORY_SECRET", "af-secret")
    monkeypatch.setenv("NEXUS_TOKEN", "nexus-tok")
    path = tmp_path / "nk.toml"
    path.write_text(FULL)
    c = cfg.load(path)
    assert c.public.simple_url == "http://127.0.0.1:9/simple/"
    assert c.public.json_url is None  # "" = the index has no JSON API
    assert c.public.owners == ("acme-security",) and c.public.retries == 0
    assert c.public.token is not None and c.public.token.reveal() == "pypi-tok"
    assert c.placeholder.template == (tmp_path / "tpl").resolve()
    assert c.placeholder.version == "0.0.0.dev0"
    assert c.policy.include == ("acme-*",) and c.policy.dry_run
    assert c.store.path == (tmp_path / "state/nk.sqlite3").resolve()
    assert c.artifactory.secret is not None and c.artifactory.secret.reveal() == "af-secret"
    assert c.artifactory.signing is False and c.artifactory.repos == ("pypi-local",)
    assert c.polls[0].interval == 600 and c.polls[0].token.reveal() == "nexus-tok"
    assert c.queue.new_projects_per_hour == 5 and c.queue.max_attempts == 3


def test_secrets_never_show_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-SECRET-token")
    monkeypatch.setenv("NAMEKEEPER_ARTIFACTORY_SECRET", "SECRET-hook")
    monkeypatch.setenv("NEXUS_TOKEN", "SECRET-nexus")
    path = tmp_path / "nk.toml"
    path.write_text(FULL.replace("json://127.0.0.1:9/hook", "slack://SECRET/B/C"))
    text = repr(cfg.load(path)) + str(cfg.load(path))
    assert "SECRET" not in text


def test_defaults_point_at_the_public_index_from_twines_constants() -> None:
    from twine import utils

    c = cfg.load(None)
    assert c.public.upload_url == utils.DEFAULT_REPOSITORY
    assert c.public.simple_url.endswith("/simple/") and c.public.json_url.endswith("/pypi/")
    assert c.public.token is None


@pytest.mark.parametrize(("text", "fragment"), [
    ("[public\nowners = 1", "not valid TOML"),
    ("x = " + "[" * 5000 + "]" * 5000, r"is not valid TOML: nested too deeply$"),
    ("[public]\nowners = 'acme'", "owners"),
    ("[public]\nsimple-url = 'ftp://x'", "simple-url"),
    ("[publik]\n", r"unknown section \[publik\] \(did you mean \[public\]\?\)"),
    ("[public]\nowner = ['acme']", r"unknown key 'owner' \(did you mean 'owners'\?\)"),
    # pip's and twine's words for the same things
    ("[public]\nindex-url = 'http://127.0.0.1/simple/'",
     r"unknown key 'index-url' \(did you mean 'simple-url'\?\)"),
    ("[public]\nrepository-url = 'http://127.0.0.1/legacy/'",
     r"unknown key 'repository-url' \(did you mean 'upload-url'\?\)"),
    ("[public]\nindex = 'http://127.0.0.1/simple/'",
     r"got 'http://127.0.0.1/simple/' \(a URL goes in simple-url, json-url and upload-url\)"),
    ("[public]\ntimeout = 'soon'", "timeout must be a number of seconds, got 'soon'"),
    ("[public]\nretries = -1", "retries must be 0 or more, got -1"),
    ("[serve]\nport = true", "port must be a port number, got True"),
    ("[placeholder]\nversion = 'not a version'", "version"),
    ("[queue]\nnew-projects-per-hour = 0", "new-projects-per-hour"),
    ("[queue]\nlease = '0.1s'", r"\[queue\] lease must be at least 1s, got 0.1s"),
    ("[[poll]]\nurl = 'http://127.0.0.1/simple/'\ninterval = 'soon'", "interval"),
    ("[serve]\nport = 'x'", "port"),
])
def test_a_corrupt_config_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "nk.toml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError, match=fragment):
        cfg.load(path)


def test_a_config_file_that_is_missing_or_not_text_is_one_line_naming_it(tmp_path: Path) -> None:
    binary = tmp_path / "nk.toml"
    binary.write_bytes(b"\xff\xfe[public]\n")
    with pytest.raises(cfg.ConfigError, match=r"^config file \S*nk\.toml is not UTF-8 text$"):
        cfg.load(binary)
    with pytest.raises(cfg.ConfigError, match=r"^cannot read config file \S*gone\.toml: "):
        cfg.load(tmp_path / "gone.toml")


def test_a_password_in_the_file_is_used_but_warned_about(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "nk.toml"
    path.write_text("[public]\npassword = 'in-file-secret'\n")
    c = cfg.load(path)
    assert c.public.token is not None and c.public.token.reveal() == "in-file-secret"
    assert "NAMEKEEPER_PUBLIC_TOKEN" in caplog.text and "in-file-secret" not in caplog.text


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "nope.toml")


def test_credentials_in_a_poll_url_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nk.toml"
    path.write_text("[[poll]]\nurl = 'https://bot:hunter2@nexus.example.com/simple/'\n")
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path)
    assert "hunter2" not in str(err.value) and "environment" in str(err.value)


def test_every_problem_of_a_config_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "nk.toml"
    path.write_text("[publik]\n[public]\ntimeout = 'x'\n[serve]\nport = 'y'\n"
                    "[queue]\nrecheck-interval = 'soon'\n")
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path)
    message = str(err.value)
    assert "4 problems" in message and "\n" not in message
    for fragment in ("[publik]", "timeout must be a number of seconds", "port must be",
                     "recheck-interval"):
        assert fragment in message
    assert "<class" not in message


@pytest.mark.parametrize("preset", ["pypi", "testpypi"])
def test_an_index_preset_takes_all_three_urls_from_twines_constants(
        tmp_path: Path, preset: str) -> None:
    from twine import utils

    upload = {"pypi": utils.DEFAULT_REPOSITORY, "testpypi": utils.TEST_REPOSITORY}[preset]
    path = tmp_path / "nk.toml"
    path.write_text(f"[public]\nindex = '{preset}'\n")
    c = cfg.load(path).public
    assert c.upload_url == upload
    root = c.simple_url.removesuffix("simple/")
    assert c.json_url == root + "pypi/"
    assert root.split("//")[1].strip("/") in upload  # the same host family as twine's URL
    if preset == "testpypi":
        assert c.simple_url != cfg.DEFAULT_SIMPLE_URL


def test_explicit_urls_override_the_preset_and_an_unknown_preset_is_an_error(
        tmp_path: Path) -> None:
    path = tmp_path / "nk.toml"
    path.write_text("[public]\nindex = 'testpypi'\nsimple-url = 'http://127.0.0.1:9/simple/'\n")
    c = cfg.load(path).public
    assert c.simple_url == "http://127.0.0.1:9/simple/"
    assert c.upload_url == cfg.INDEX_PRESETS["testpypi"].upload_url
    path.write_text("[public]\nindex = 'warehouse'\n")
    with pytest.raises(cfg.ConfigError, match="index must be one of 'pypi', 'testpypi'"):
        cfg.load(path)


def test_every_problem_of_a_poll_entry_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "nk.toml"
    path.write_text("[[poll]]\nurl = 'ftp://nexus.example.com/'\ninterval = 'soon'\n"
                    "token-env = 3\nnaem = 'x'\n[[poll]]\ninterval = '10x'\n")
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path)
    message = str(err.value)
    assert message.startswith(f"config file {path} has 6 problems: "), message
    for fragment in ("[[poll]] entry 1 has an unknown key 'naem' (did you mean 'name'?)",
                     "[[poll]] entry 1 url must be an http(s) URL, got 'ftp://nexus.example.com/'",
                     "[[poll]] entry 1 interval: expected a duration",
                     "[[poll]] entry 1 token-env must be a string, got 3",
                     "[[poll]] entry 2 needs a url", "[[poll]] entry 2 interval: expected"):
        assert fragment in message, fragment


def test_a_url_refused_for_its_scheme_is_shown_without_its_password(tmp_path: Path) -> None:
    path = tmp_path / "nk.toml"
    for text, shown in (
            ("[[poll]]\nurl = 'ftp://deploy:hunter2-pw@nexus.example.com/simple/'\n",
             "[[poll]] entry 1 url must be an http(s) URL, got 'ftp://nexus.example.com/simple/'"),
            ("[public]\nsimple-url = 'ftp://deploy:hunter2-pw@mirror.example.com/simple/'\n",
             "must be an http(s) URL, got 'ftp://mirror.example.com/simple/'")):
        path.write_text(text)
        with pytest.raises(cfg.ConfigError) as err:
            cfg.load(path)
        assert shown in str(err.value) and "hunter2-pw" not in str(err.value)


def test_a_bad_notify_url_is_named_after_its_config_file_as_every_config_error(
        tmp_path: Path) -> None:
    from namekeeper.app import notifiers_for

    path = tmp_path / "nk.toml"
    path.write_text("[notify]\nurls = ['json://127.0.0.1:9/x', 'nosuch://a', 'also bad', "
                    "'mailto://']\n")
    with pytest.raises(cfg.ConfigError) as err:
        notifiers_for(cfg.load(path))
    assert str(err.value) == (f"config file {path}: [notify] urls entries 2, 3 and 4 are not "
                              "valid apprise URLs (see apprise's list of supported services)")

