"""Names from users and webhooks are validated before anything else sees them."""

from __future__ import annotations

import pytest

import _upstream_name_cases as up
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


# --- the public index's and packaging's own cases (tests/_upstream_name_cases.py) -----------

@pytest.mark.parametrize("name", up.WAREHOUSE_VALID_NAMES)
def test_warehouse_valid_project_names(name: str) -> None:
    assert names.validate_name(name) == name


@pytest.mark.parametrize("name", up.WAREHOUSE_INVALID_NAMES + up.PACKAGING_INVALID_NAMES)
def test_upstream_invalid_project_names_are_refused(name: str) -> None:
    with pytest.raises(names.InvalidName):
        names.canonical(name)


@pytest.mark.parametrize(("name", "canonical"), up.PACKAGING_CANONICAL)
def test_packaging_canonical_names(name: str, canonical: str) -> None:
    assert names.canonical(name) == canonical


@pytest.mark.parametrize(("filename", "canonical", "version"),
                         up.PACKAGING_WHEELS + up.PACKAGING_SDISTS)
def test_packaging_valid_filenames(filename: str, canonical: str, version: str) -> None:
    _display, got_canonical, got_version = names.name_from_filename(filename)
    assert (got_canonical, got_version) == (canonical, version)


@pytest.mark.parametrize("filename", up.PACKAGING_INVALID_WHEELS + up.PACKAGING_INVALID_SDISTS
                         + up.PACKAGING_WHEELS_NON_ASCII)
def test_packaging_invalid_filenames_are_refused(filename: str) -> None:
    with pytest.raises(names.InvalidName):
        names.name_from_filename(filename)


@pytest.mark.parametrize(("name", "version", "stem"), up.PACKAGING_SDIST_COMPOSE)
def test_packaging_sdist_filenames(name: str, version: str, stem: str) -> None:
    assert names.sdist_basename(name, version) == stem


def test_a_trailing_newline_is_not_part_of_a_valid_name() -> None:
    for raw in ("foo\n", "foo\r\n", "acme-utils\n"):
        with pytest.raises(names.InvalidName):
            names.canonical(raw)


# --- the standard-library block ---------------------------------------------------------------

def _warehouse_stdlib_block() -> set[str]:
    """Built here independently, the way warehouse's packaging/services.py builds it."""
    from itertools import chain

    import stdlib_list
    from packaging.utils import canonicalize_name

    def namespaces(modules: list[str]) -> object:
        for module in modules:
            parts = module.split(".")
            for i in range(len(parts)):
                yield ".".join(parts[: i + 1])

    return {canonicalize_name(s.rstrip("-_.").lstrip("-_."))
            for s in chain.from_iterable(namespaces(stdlib_list.stdlib_list(v))
                                         for v in stdlib_list.short_versions)}


def test_the_stdlib_block_is_the_public_index_s_whole_list() -> None:
    block = _warehouse_stdlib_block()
    assert len(names.stdlib_names()) == len(block) == 2363  # stdlib-list 0.12.x
    assert names.stdlib_names() == block
    for name in ("xml-etree", "encodings-utf-8-sig", "asyncio-base-events", "main", "future",
                 "test", "cgihttpserver", "xml.etree", "Asyncio.Base_Events", "os.path"):
        assert names.is_stdlib_name(name), name
