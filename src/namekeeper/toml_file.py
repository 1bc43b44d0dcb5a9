"""TOML files (the config, lock files): one `tomllib` for every Python we run on, one reader.

`read_toml` refuses an unreadable, non-UTF-8 or malformed file with one line that names
the file, raised as the caller's own error type so the command line shows it as such.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib as tomllib  # "as": re-exported for the modules that parse TOML text
else:  # pragma: no cover
    import tomli as tomllib

from .errors import NamekeeperError


def read_toml(path: Path, what: str, error: type[NamekeeperError]) -> dict[str, Any]:
    """The document of ``path``; ``error("... {what} {path} ...")`` when it cannot be one.

    ``what`` says what the file is for, e.g. ``"config file"``.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None
    except (RecursionError, MemoryError):
        # tomllib parses nested arrays and tables recursively: a file nested thousands deep
        # exhausts the stack (or memory) instead of raising TOMLDecodeError.
        raise error(f"{what} {path} is not valid TOML: nested too deeply") from None
