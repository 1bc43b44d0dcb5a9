"""Plugins load one at a time: a broken one is named and skipped, the others keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from namekeeper import plugins

#: The built-ins, as namekeeper's pyproject.toml declares them in the `namekeeper` group.
BUILTINS = {"store", "simple-index", "placeholder", "twine", "apprise", "artifactory", "poll"}


def install_fake_distribution(site: Path, dist: str, entry_points: dict[str, str],
                              modules: dict[str, str], version: str = "1.0") -> None:
    """A minimal installed distribution (dist-info + modules) on a directory for sys.path."""
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[namekeeper]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


def test_a_broken_plugin_is_reported_and_the_rest_still_load(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    install_fake_distribution(
        tmp_path, "nk_broken_plugins",
        {"crashes-on-import": "nk_crashes", "misspelled": "nk_misspelled", "fine": "nk_fine"},
        {
            "nk_crashes": "raise RuntimeError('this plugin is broken')\n",
            "nk_misspelled": ("from namekeeper.hookspecs import hookimpl\n"
                              "@hookimpl\ndef namekeeper_notifyers(config):\n    return []\n"),
            "nk_fine": ("from namekeeper.hookspecs import hookimpl\n"
                        "@hookimpl\ndef namekeeper_notifiers(config):\n    return []\n"),
        })
    monkeypatch.syspath_prepend(str(tmp_path))
    pm, report = plugins.get_plugin_manager()
    assert set(report.broken) == {"crashes-on-import", "misspelled"}
    assert "this plugin is broken" in report.broken["crashes-on-import"]
    assert "namekeeper_notifyers" in report.broken["misspelled"]
    assert "fine" in report.loaded
    assert BUILTINS <= set(report.loaded)
    assert "crashes-on-import" in caplog.text
    # The built-ins still answer.
    from namekeeper.config import Config

    assert pm.hook.namekeeper_public_index(config=Config()) is not None


def test_third_party_plugins_can_be_switched_off(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_distribution(tmp_path, "nk_other", {"other": "nk_other_mod"},
                              {"nk_other_mod": "raise RuntimeError('must not be imported')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV_DISABLE_PLUGINS, "1")
    _, report = plugins.get_plugin_manager()
    assert report.broken == {}
    assert set(report.loaded) == BUILTINS


def test_an_installed_plugin_wins_over_the_builtin(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_distribution(
        tmp_path, "nk_lookup", {"lookup": "nk_lookup_mod"},
        {"nk_lookup_mod": ("from namekeeper.hookspecs import hookimpl\n"
                           "SENTINEL = object()\n"
                           "@hookimpl\ndef namekeeper_public_index(config):\n"
                           "    return SENTINEL\n")})
    monkeypatch.syspath_prepend(str(tmp_path))
    pm, _ = plugins.get_plugin_manager()
    import nk_lookup_mod  # type: ignore[import-not-found]

    from namekeeper.config import Config

    assert pm.hook.namekeeper_public_index(config=Config()) is nk_lookup_mod.SENTINEL


def test_the_builtins_are_entry_points_of_namekeeper_itself_and_trylast() -> None:
    pm, report = plugins.get_plugin_manager(third_party=False)
    builtins = {p.name: p for p in report.plugins}
    assert set(builtins) == BUILTINS
    assert all(p.builtin and p.distribution == "namekeeper" for p in builtins.values())
    assert builtins["twine"].hooks == ("namekeeper_reservation_backend",)
    for name in BUILTINS:
        for impl in pm.get_hookcallers(pm.get_plugin(name)) or ():
            [own] = [i for i in impl.get_hookimpls() if i.plugin_name == name]
            assert own.trylast, (name, impl.name)


def test_a_broken_builtin_does_not_take_the_other_builtins_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "namekeeper.reserve.twine", None)  # its import now fails
    pm, report = plugins.get_plugin_manager(third_party=False)
    assert "namekeeper.reserve.twine" in report.broken["twine"]
    assert set(report.loaded) == BUILTINS - {"twine"}
    from namekeeper.config import Config

    assert pm.hook.namekeeper_public_index(config=Config()) is not None
    assert pm.hook.namekeeper_placeholder_builder(config=Config()) is not None


def test_plugins_command_lists_builtins_third_party_and_broken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from namekeeper.cli import main

    install_fake_distribution(tmp_path, "nk_broken_dist", {"shaky": "nk_shaky"},
                              {"nk_shaky": "raise RuntimeError('shaky plugin exploded')\n"},
                              version="2.3")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["plugins", "--format", "json"]) == 1  # a broken plugin needs attention
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert BUILTINS | {"example", "shaky"} <= set(rows)
    assert rows["apprise"]["distribution"] == "namekeeper"
    assert rows["apprise"]["hooks"] == ["namekeeper_notifiers"] and rows["apprise"]["builtin"]
    example = rows["example"]
    assert (example["distribution"], example["version"]) == ("namekeeper-example-notifier",
                                                              "1.0.0")
    assert not example["builtin"] and example["error"] is None
    assert "shaky plugin exploded" in rows["shaky"]["error"]

    assert main(["plugins"]) == 1
    table = capsys.readouterr().out
    assert "namekeeper-example-notifier" in table and "shaky plugin exploded" in table


def test_the_example_notifier_gets_its_table_and_never_shows_its_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    import hashlib
    import hmac
    import json
    import logging

    from namekeeper.cli import main

    key = "example-signing-key-0123456789"
    monkeypatch.setenv("EXAMPLE_SIGNING_KEY", key)
    out = tmp_path / "alerts.jsonl"
    cfg = tmp_path / "nk.toml"
    cfg.write_text(f'[store]\npath = "s.sqlite3"\n[plugins.example]\nfile = "{out}"\n'
                   'signing-key = { env = "EXAMPLE_SIGNING_KEY" }\n')
    caplog.set_level(logging.DEBUG)
    assert main(["--config", str(cfg), "-vv", "--format", "json", "notify", "--test"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row == {"target": "example:jsonl", "delivered": True, "error": None}
    [line] = out.read_text().splitlines()
    record = json.loads(line)
    signature = record.pop("hmac")
    body = json.dumps(record, sort_keys=True).encode()
    assert signature == hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    assert main(["--config", str(cfg), "plugins", "--format", "json"]) == 0
    captured = capsys.readouterr()
    for text in (line, captured.out, captured.err, caplog.text):
        assert key not in text


def test_plugin_tables_read_env_secrets_and_redact_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from namekeeper.config import ConfigError, Secret, from_dict

    monkeypatch.setenv("NK_TEST_PLUGIN_TOKEN", "plugin-token-value-42")
    monkeypatch.delenv("NK_TEST_UNSET", raising=False)
    config = from_dict({"plugins": {"acme": {"url": "http://127.0.0.1:1/", "retries": 3,
                                             "token": {"env": "NK_TEST_PLUGIN_TOKEN"},
                                             "nested": {"key": {"env": "NK_TEST_UNSET"}}}}})
    acme = config.plugin("acme")
    assert acme["url"] == "http://127.0.0.1:1/" and acme["retries"] == 3
    assert isinstance(acme["token"], Secret) and acme["token"].reveal() == "plugin-token-value-42"
    assert acme["nested"]["key"] is None  # unset: the plugin decides what that means
    assert config.plugin("not-there") == {}
    assert "plugin-token-value-42" not in repr(config)
    assert "plugin-token-value-42" in [s.reveal() for s in config.secrets()]
    for bad in ({"plugins": []}, {"plugins": {"acme": 3}}, {"plugins": {"acme": {"t": {"env": ""}}}}):
        with pytest.raises(ConfigError):
            from_dict(bad)
