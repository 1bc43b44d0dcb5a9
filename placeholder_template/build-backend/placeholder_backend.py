"""In-tree PEP 517 backend of a namekeeper placeholder: it builds an sdist and refuses wheels.

This project only holds a private package's name on the public index. An
installer that downloads it must stop with a clear message before anything is
installed, and without running anyone else's build code: ``requires = []`` in
pyproject.toml means no build dependencies are fetched, and every wheel hook
below exits with the message. Only ``build_sdist`` works, because that is how
the placeholder itself is made.

Everything project-specific (name, version, metadata, the message) is read from
``placeholder.json`` next to pyproject.toml, which namekeeper writes as JSON, so
no configured text is ever pasted into Python source. Standard library only.
"""

import gzip
import io
import json
import os
import tarfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATA_FILE = "placeholder.json"
# Without SOURCE_DATE_EPOCH every build of the same input gives the same bytes.
_DEFAULT_MTIME = 315532800  # 1980-01-01, the oldest date every archive format accepts
_SKIPPED_DIRS = ("__pycache__",)


class PrivatePackage(SystemExit):
    """Stops an install with the message alone (a SystemExit prints no traceback)."""


def _data():
    with open(os.path.join(_ROOT, _DATA_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def _one_line(value):
    """Header values must stay on one line, or PKG-INFO's headers would be corrupted."""
    text = " ".join(str(value).split())
    return "".join(ch for ch in text if ch.isprintable())


def _refuse(*_args, **_kwargs):
    try:
        message = _one_line(_data()["message"])
    except (OSError, ValueError, KeyError):
        message = "this is a placeholder that holds a private package's name; it cannot be installed"
    raise PrivatePackage(message)  # printed once, on stderr, without a traceback


# Every hook that leads to a wheel or an editable install refuses: an installer
# given the sdist calls get_requires_for_build_wheel first, so it stops there.
get_requires_for_build_wheel = _refuse
prepare_metadata_for_build_wheel = _refuse
build_wheel = _refuse
get_requires_for_build_editable = _refuse
prepare_metadata_for_build_editable = _refuse
build_editable = _refuse


def get_requires_for_build_sdist(config_settings=None):
    return []


def _pkg_info(data):
    lines = []
    for key, value in data["metadata"]:
        lines.append(f"{_one_line(key)}: {_one_line(value)}\n")
    with open(os.path.join(_ROOT, data["readme"]), encoding="utf-8") as handle:
        description = handle.read()
    return ("".join(lines) + "\n" + description).encode("utf-8")


def _files(sdist_directory):
    """Every file of the project, relative to its root, in a stable order."""
    skip = os.path.abspath(sdist_directory)
    found = []
    for folder, dirs, files in os.walk(_ROOT):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and d not in _SKIPPED_DIRS
            and os.path.abspath(os.path.join(folder, d)) != skip
        )
        for name in sorted(files):
            if name.startswith(".") or name.endswith((".pyc", ".pyo")) or name == "PKG-INFO":
                continue
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            found.append(os.path.relpath(path, _ROOT).replace(os.sep, "/"))
    return found


def _add(archive, arcname, payload, mtime):
    info = tarfile.TarInfo(arcname)
    info.size = len(payload)
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(payload))


def build_sdist(sdist_directory, config_settings=None):
    data = _data()
    base = data["sdist_basename"]
    if not base or "/" in base or "\\" in base or base.startswith("."):
        raise ValueError("placeholder.json has an unusable sdist_basename")
    filename = base + ".tar.gz"
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", _DEFAULT_MTIME))
    target = os.path.join(sdist_directory, filename)
    partial = target + ".part"
    members = _files(sdist_directory)  # listed before the archive exists, so never part of it
    with open(partial, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as zipped:
            with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
                _add(archive, base + "/PKG-INFO", _pkg_info(data), mtime)
                for relative in members:
                    with open(os.path.join(_ROOT, relative), "rb") as handle:
                        _add(archive, base + "/" + relative, handle.read(), mtime)
    os.replace(partial, target)
    return filename
