"""Names from users and webhooks are validated before anything else sees them."""

from __future__ import annotations

import pytest

from namekeeper import names


@pytest.mark.parametrize("hostile", [
    "../x", 'a"]\n[tool', "", "-lead", "trail-", "a b", "naïve", "a/b", "a\\b", "x" * 129,
    "a\x00b", "{{name}}", "$name",
])
def test_hostile_names_are_refused_with_a_clear_message(hostile: str) -> None:
    with pytest.raises(names.InvalidName) as err:
        names.validate_name(hostile)
    assert "\n" not in str(err.value)  # one printable line, even for a name with a newline


@pytest.mark.parametrize(("raw", "canonical"), [
    ("Acme_Utils", "acme-utils"), ("acme.utils", "acme-utils"), ("A", "a"),
    ("acme--__..utils", "acme-utils"), ("Zope.Interface2", "zope-interface2"),
])
def test_canonical_form_follows_pep_503(raw: str, canonical: str) -> None:
    assert names.canonical(raw) == canonical


@pytest.mark.parametrize(("filename", "expected"), [
    ("acme_utils-1.0-py3-none-any.whl", ("acme_utils", "acme-utils", "1.0")),
    ("acme_utils-1.0-1-cp311-cp311-manylinux_2_17_x86_64.whl", ("acme_utils", "acme-utils", "1.0")),
    ("acme_utils-2.0.tar.gz", ("acme_utils", "acme-utils", "2.0")),
    ("Acme.Utils-1.0rc1.zip", ("Acme.Utils", "acme-utils", "1.0rc1")),
    ("acme_utils-3.1-py3.11.egg", ("acme_utils", "acme-utils", "3.1")),
])
def test_project_name_comes_from_the_distribution_filename(filename: str, expected: tuple) -> None:
    assert names.name_from_filename(filename) == expected


@pytest.mark.parametrize("bad", [
    "acme-utils/1.0/acme_utils-1.0.tar.gz", "../acme_utils-1.0.tar.gz", "acme_utils-1.0.json",
    "README.md", "acme_utils.whl", "-1.0.tar.gz", "", "..",
])
def test_non_distributions_and_paths_are_refused(bad: str) -> None:
    with pytest.raises(names.InvalidName):
        names.name_from_filename(bad)


def test_ultranormalisation_groups_confusable_names() -> None:
    assert names.ultranormalize("acme-utils") == names.ultranormalize("Acme_Uti1s")
    assert names.ultranormalize("acme-utils") == names.ultranormalize("acmeutiIs")
    assert names.ultranormalize("foo") == names.ultranormalize("F00")
    assert names.ultranormalize("acme-utils") != names.ultranormalize("acme-tools")


@pytest.mark.parametrize("name", ["json", "asyncio", "os.path", "distutils", "Asyncio", "telnetlib"])
def test_standard_library_names_are_known(name: str) -> None:
    assert names.is_stdlib_name(name)


@pytest.mark.parametrize("name", ["requests", "acme-utils", "jsonschema"])
def test_ordinary_names_are_not_stdlib(name: str) -> None:
    assert not names.is_stdlib_name(name)


def test_pep_625_sdist_basename() -> None:
    assert names.sdist_basename("Acme.Utils", "0.0.0") == "acme_utils-0.0.0"
