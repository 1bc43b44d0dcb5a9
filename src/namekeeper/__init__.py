"""namekeeper: hold your private package names on the public index."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("namekeeper")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"
