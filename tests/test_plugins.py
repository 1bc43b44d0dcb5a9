"""Plugins load one at a time: a broken one is named and skipped, the others keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from namekeeper import plugins


def install_fake_distribution(site: Path, dist: str, entry_points: dict[str, str],
                              modules: dict[str, str]) -> None:
    """A minimal installed distribution (dist-info + modules) on a directory for sys.path."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
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
    assert all(b in report.loaded for b in plugins.BUILTIN_PLUGINS)
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
    assert report.loaded == list(plugins.BUILTIN_PLUGINS)


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
