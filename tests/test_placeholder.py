"""The placeholder sdist: name, layout, metadata, safe rendering, and that installers refuse it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import build
import pyproject_hooks
import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.metadata import Metadata, parse_email
from twine.commands.check import check as twine_check

from namekeeper import names
from namekeeper.config import Config, from_dict
from namekeeper.errors import PlaceholderError
from namekeeper.names import one_line
from namekeeper.placeholder.builder import TemplatePlaceholderBuilder
from namekeeper.placeholder.render import LICENSE_EXPRESSION, bundled_template, escape_toml
from namekeeper.plugins import get_plugin_manager
from namekeeper.toml_file import tomllib

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

ORG = "Acme Corp"
CONTACT = "security@acme.example"
BACKEND = "build-backend/placeholder_backend.py"


def make_config(**placeholder_keys: str) -> Config:
    keys = {"organization": ORG, "contact": CONTACT, **placeholder_keys}
    return from_dict({"placeholder": keys})


def build_one(tmp_path: Path, config: Config | None = None, name: str = "acme-utils",
              display_name: str = "Acme_Utils") -> Path:
    files = TemplatePlaceholderBuilder(config or make_config()).build(
        name, display_name, tmp_path / "dist")
    assert len(files) == 1
    return files[0]


def members(sdist: Path) -> dict[str, bytes]:
    with tarfile.open(sdist) as archive:
        return {m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
                for m in archive.getmembers() if m.isfile()}


def pkg_info(sdist: Path) -> bytes:
    base = sdist.name.removesuffix(".tar.gz")
    return members(sdist)[f"{base}/PKG-INFO"]


def copy_bundled_template(dest: Path) -> Path:
    """The bundled template as a plain directory a test can change."""
    def copy(node: Traversable, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for child in node.iterdir():
            if child.name == "__pycache__":
                continue
            if child.is_dir():
                copy(child, target / child.name)
            else:
                (target / child.name).write_bytes(child.read_bytes())

    copy(bundled_template(), dest)
    return dest


def pip_install(sdist: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-index",
         "--target", str(target), str(sdist)],
        capture_output=True, text=True, env=env, timeout=120)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- filename, layout, metadata -------------------------------------------------------

def test_sdist_has_the_pep_625_name_and_one_top_level_folder(tmp_path: Path) -> None:
    sdist = build_one(tmp_path)

    assert sdist == tmp_path / "dist" / "acme_utils-0.0.0.tar.gz"
    assert sorted(members(sdist)) == [
        "acme_utils-0.0.0/PKG-INFO",
        "acme_utils-0.0.0/README.md",
        f"acme_utils-0.0.0/{BACKEND}",
        "acme_utils-0.0.0/placeholder.json",
        "acme_utils-0.0.0/pyproject.toml",
    ]


def test_configured_version_is_normalised_in_filename_and_metadata(tmp_path: Path) -> None:
    sdist = build_one(tmp_path, make_config(version="0.0.0-dev"))

    assert sdist.name == "acme_utils-0.0.0.dev0.tar.gz"
    assert Metadata.from_email(pkg_info(sdist)).version.public == "0.0.0.dev0"


def test_pkg_info_says_what_it_is_and_whom_to_contact(tmp_path: Path) -> None:
    raw = pkg_info(build_one(tmp_path))
    meta = Metadata.from_email(raw, validate=True)

    assert meta.metadata_version == "2.4"
    assert meta.name == "Acme_Utils"
    assert str(meta.version) == "0.0.0"
    assert meta.classifiers == ["Development Status :: 7 - Inactive"]
    assert meta.license_expression == LICENSE_EXPRESSION
    assert meta.license is None and b"\nLicense:" not in raw
    assert meta.author == ORG and meta.maintainer == ORG
    assert meta.author_email == CONTACT and meta.maintainer_email == CONTACT
    assert ORG in (meta.summary or "") and CONTACT in (meta.summary or "")
    assert meta.description_content_type == "text/markdown"
    assert "private package of Acme Corp" in (meta.description or "")
    assert CONTACT in (meta.description or "")


def test_a_contact_url_becomes_a_project_url_not_an_email(tmp_path: Path) -> None:
    url = "https://acme.example/security"
    meta = Metadata.from_email(pkg_info(build_one(tmp_path, make_config(contact=url))))

    assert meta.author_email is None
    assert meta.project_urls == {"Contact": url}
    assert url in (meta.summary or "")


def test_without_a_contact_the_message_points_to_the_organisation(tmp_path: Path) -> None:
    sdist = build_one(tmp_path, make_config(contact=""))
    data = json.loads(members(sdist)["acme_utils-0.0.0/placeholder.json"])

    assert data["message"].endswith(f"contact {ORG}")


def test_twine_check_strict_passes(tmp_path: Path) -> None:
    sdist = build_one(tmp_path)

    assert twine_check([str(sdist)], strict=True) is False  # True means failure


def test_building_twice_gives_identical_bytes(tmp_path: Path) -> None:
    first = build_one(tmp_path / "a").read_bytes()
    second = build_one(tmp_path / "b").read_bytes()

    assert first == second


def test_the_sdist_rebuilds_from_its_own_unpacked_tree(tmp_path: Path) -> None:
    sdist = build_one(tmp_path)
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    tree = tmp_path / "unpacked" / "acme_utils-0.0.0"

    builder = build.ProjectBuilder(tree, python_executable=sys.executable,
                                   runner=pyproject_hooks.quiet_subprocess_runner)
    rebuilt = Path(builder.build("sdist", tmp_path / "again"))

    assert rebuilt.name == sdist.name
    assert members(rebuilt) == members(sdist)


def test_the_builtin_plugin_provides_the_builder() -> None:
    pm, _report = get_plugin_manager(third_party=False)

    builder = pm.hook.namekeeper_placeholder_builder(config=make_config())

    assert isinstance(builder, TemplatePlaceholderBuilder)


# --- hostile input ----------------------------------------------------------------------

HOSTILE = [
    'a"]\n[tool',
    "'''",
    "\\",
    'x"""\ny = 1\n#',
    "line one\r\nline two\x1b[31m red\x00",
    "<script>alert(1)</script> [click](http://evil.example) **bold** &amp;",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_config_values_stay_data(tmp_path: Path, value: str) -> None:
    sdist = build_one(tmp_path, make_config(organization=value, contact=value))
    files = members(sdist)
    shown = one_line(value)

    pyproject = tomllib.loads(files["acme_utils-0.0.0/pyproject.toml"].decode())
    assert set(pyproject) == {"build-system", "project"}
    assert pyproject["build-system"]["requires"] == []
    assert pyproject["project"]["name"] == "Acme_Utils"

    data = json.loads(files["acme_utils-0.0.0/placeholder.json"])
    assert data["organization"] == shown
    assert data["message"].startswith(f"Acme_Utils is a private package of {shown},")
    assert data["message"].endswith(f"contact {shown}")

    bundled = bundled_template().joinpath(*BACKEND.split("/")).read_bytes()
    assert files[f"acme_utils-0.0.0/{BACKEND}"] == bundled  # code is never rendered

    raw, unparsed = parse_email(files["acme_utils-0.0.0/PKG-INFO"])
    assert unparsed == {}
    assert raw["author"] == shown and raw["summary"].count("\n") == 0
    assert twine_check([str(sdist)], strict=True) is False


def test_markdown_description_escapes_markup(tmp_path: Path) -> None:
    value = "<b>Evil</b> [x](http://evil.example)"
    sdist = build_one(tmp_path, make_config(organization=value))
    readme = members(sdist)["acme_utils-0.0.0/README.md"].decode()

    assert "<b>" not in readme and "[x]" not in readme
    assert r"\<b\>Evil\</b\> \[x\](http://evil.example)" in readme


@given(st.text())
def test_toml_escaping_round_trips_any_text(value: str) -> None:
    document = f'key = "{escape_toml(value)}"\n'

    assert tomllib.loads(document) == {"key": value}


@pytest.mark.parametrize("name", ["../x", "a\"]\n[tool", "", "-x", "x/y", "ünïcode", "a" * 200])
def test_invalid_names_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    outdir = tmp_path / "dist"

    with pytest.raises(names.InvalidName):
        TemplatePlaceholderBuilder(make_config()).build(name, name, outdir)

    assert not outdir.exists()


def test_a_display_name_of_another_project_is_refused(tmp_path: Path) -> None:
    with pytest.raises(names.InvalidName, match="does not belong"):
        TemplatePlaceholderBuilder(make_config()).build("acme-utils", "other", tmp_path / "d")

    assert not (tmp_path / "d").exists()


def test_a_local_version_is_refused(tmp_path: Path) -> None:
    config = make_config(version="1.0+local")

    with pytest.raises(PlaceholderError, match="local versions"):
        TemplatePlaceholderBuilder(config).build("acme-utils", "acme-utils", tmp_path / "d")


# --- custom templates -------------------------------------------------------------------

def test_a_custom_template_is_rendered_and_built(tmp_path: Path) -> None:
    template = copy_bundled_template(tmp_path / "tpl")
    (template / "README.md").write_text(
        "# $display_name\n\nHeld for $organization, costs $$0. Ask $contact_or_org.\n",
        encoding="utf-8")
    (template / "NOTES.txt").write_text("$message\n", encoding="utf-8")
    config = make_config(template=str(template))

    sdist = build_one(tmp_path, config)
    files = members(sdist)

    readme = files["acme_utils-0.0.0/README.md"].decode()
    assert readme == f"# Acme\\_Utils\n\nHeld for {ORG}, costs $0. Ask {CONTACT}.\n"
    assert files["acme_utils-0.0.0/NOTES.txt"].decode().startswith(
        "Acme_Utils is a private package of Acme Corp")
    assert "acme_utils-0.0.0/__init__.py" not in files
    assert twine_check([str(sdist)], strict=True) is False


@pytest.mark.slow
def test_the_subprocess_build_of_the_same_template_gives_the_same_bytes(tmp_path: Path) -> None:
    """The bundled template runs its backend in-process; a copy runs it as any frontend would."""
    in_process = build_one(tmp_path / "a")
    copy = copy_bundled_template(tmp_path / "tpl")
    as_subprocess = build_one(tmp_path / "b", make_config(template=str(copy)))

    assert in_process.read_bytes() == as_subprocess.read_bytes()


@pytest.mark.slow
def test_a_custom_backend_never_sees_our_secrets(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "pypi-secret-token-value"
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", secret)
    monkeypatch.setenv("SOME_OTHER_NAME_FOR_IT", secret)
    template = copy_bundled_template(tmp_path / "tpl")
    (template / "build-backend" / "spy_backend.py").write_text(
        "import os\n"
        "from placeholder_backend import *  # noqa\n"
        "from placeholder_backend import build_sdist as _build_sdist\n"
        "def build_sdist(sdist_directory, config_settings=None):\n"
        "    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n"
        "    seen = sorted(k for k, v in os.environ.items() if 'pypi-secret-token-value' in v)\n"
        "    with open(os.path.join(root, 'seen.txt'), 'w') as f:\n"
        "        f.write(repr(seen) + ' PATH' * ('PATH' in os.environ))\n"
        "    return _build_sdist(sdist_directory, config_settings)\n",
        encoding="utf-8")
    pyproject = template / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"placeholder_backend"', '"spy_backend"'))

    sdist = build_one(tmp_path, make_config(template=str(template)))

    assert members(sdist)["acme_utils-0.0.0/seen.txt"] == b"[] PATH"


def test_an_unknown_template_variable_is_named(tmp_path: Path) -> None:
    template = copy_bundled_template(tmp_path / "tpl")
    (template / "README.md").write_text("Hello $nobody\n", encoding="utf-8")

    with pytest.raises(PlaceholderError, match=r"README.md uses unknown variable \$nobody"):
        build_one(tmp_path, make_config(template=str(template)))


def test_a_template_that_needs_build_dependencies_is_refused(tmp_path: Path) -> None:
    template = copy_bundled_template(tmp_path / "tpl")
    pyproject = template / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("requires = []",
                                                       'requires = ["setuptools"]'))

    with pytest.raises(PlaceholderError, match=r"requires = \[\]"):
        build_one(tmp_path, make_config(template=str(template)))
    assert not (tmp_path / "dist").exists()


def test_a_missing_template_directory_is_reported_at_start(tmp_path: Path) -> None:
    with pytest.raises(PlaceholderError, match="not a directory"):
        TemplatePlaceholderBuilder(make_config(template=str(tmp_path / "nope")))


# --- the real proof: installers refuse it ------------------------------------------------

@pytest.mark.slow
def test_pip_install_stops_with_the_message_and_installs_nothing(tmp_path: Path) -> None:
    sdist = build_one(tmp_path)
    target = tmp_path / "target"

    result = pip_install(sdist, target)

    assert result.returncode != 0
    output = flat(result.stdout + result.stderr)
    assert flat(
        "Acme_Utils is a private package of Acme Corp, reserved on the public index to prevent "
        "dependency confusion; configure your installer to use Acme Corp's index; contact "
        "security@acme.example") in output
    assert "Traceback" not in output
    assert not target.exists() or not any(target.iterdir())


@pytest.mark.slow
def test_pip_shows_a_hostile_organisation_verbatim(tmp_path: Path) -> None:
    sdist = build_one(tmp_path, make_config(organization='a"]\n[tool'))

    result = pip_install(sdist, tmp_path / "target")

    assert result.returncode != 0
    assert 'private package of a"] [tool, reserved' in flat(result.stdout + result.stderr)


@pytest.mark.parametrize("hook", ["get_requires_for_build_wheel", "prepare_metadata_for_build_wheel",
                                  "build_wheel", "get_requires_for_build_editable",
                                  "build_editable"])
def test_every_wheel_hook_refuses(tmp_path: Path, hook: str) -> None:
    sdist = build_one(tmp_path)
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    caller = pyproject_hooks.BuildBackendHookCaller(
        str(tmp_path / "unpacked" / "acme_utils-0.0.0"), "placeholder_backend",
        backend_path=["build-backend"], runner=pyproject_hooks.quiet_subprocess_runner)
    args = [] if hook.startswith("get_requires") else [str(tmp_path / "out")]

    with pytest.raises(subprocess.CalledProcessError) as failure:
        getattr(caller, hook)(*args)

    assert b"is a private package of Acme Corp" in failure.value.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_uv_pip_install_stops_with_the_message(tmp_path: Path) -> None:
    sdist = build_one(tmp_path)
    target = tmp_path / "target"

    result = subprocess.run(
        ["uv", "pip", "install", "--offline", "--no-cache", "--target", str(target), str(sdist)],
        capture_output=True, text=True, timeout=120)

    assert result.returncode != 0
    assert "is a private package of Acme Corp" in flat(result.stdout + result.stderr)
    assert not target.exists() or not any(target.iterdir())
