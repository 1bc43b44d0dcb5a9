"""Shared test setup: keep every test away from the user's real state and plugins."""

from __future__ import annotations

import pytest

# Fixtures of the fakes and servers the tests start: the fake public index, devpi-server,
# PostgreSQL, and a config for the command line pointing at the fake (`fake`, `cfg`).
# devpi-server's own fixtures (makexom, mapp, testapp) drive its hooks in-process.
pytest_plugins = ["_fake_public", "_devpi", "_postgres", "_cli", "pytest_devpi_server",
                  "test_devpi_server.plugin"]

# `pytest -m "not slow"` is the developer's inner loop.  A test is slow when it starts a server,
# a subprocess or builds a package: every test using one of these fixtures (directly or through
# another fixture) is marked here, so a new test cannot forget it; files that start servers
# inline say so with a module-level `pytestmark`.
SERVER_FIXTURES = frozenset({
    "fake_public",  # the fake public index (an HTTP server)
    "devpi", "makexom",  # devpi-server, as a process or in-process with its own database
    "postgres",  # a PostgreSQL cluster
    "fake_artifactory", "local_index", "scripted", "http_receiver", "smtp_sink",  # local servers
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the developer's config, token or data directory by accident."""
    for var in ("NAMEKEEPER_CONFIG", "NAMEKEEPER_PUBLIC_TOKEN", "NAMEKEEPER_ARTIFACTORY_SECRET",
                "NAMEKEEPER_ARTIFACTORY_TOKEN", "TWINE_USERNAME", "TWINE_PASSWORD",
                "TWINE_REPOSITORY_URL"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    # twine falls back to ~/.pypirc and keyring for credentials; neither may leak in.
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")


@pytest.fixture(autouse=True)
def _reset_cli_logging() -> object:
    """`namekeeper.cli.main` configures the "namekeeper" logger for a process; undo it per test."""
    import logging

    yield
    logger = logging.getLogger("namekeeper")
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
