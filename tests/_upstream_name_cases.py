"""Name and filename cases ported, as data, from the public index's and packaging's own tests.

Sources (read, not copied as code): pypa/packaging ``tests/test_utils.py`` (canonical names,
wheel and sdist filenames) and pypi/warehouse ``tests/unit/utils/test_project.py``
(``PROJECT_NAME_RE``).  Every case of those suites that is about names or filenames is here;
where namekeeper's answer differs from packaging's, the case says why.
"""

from __future__ import annotations

# warehouse: PROJECT_NAME_RE must match / must not match.
WAREHOUSE_VALID_NAMES = ["django", "zope.interface", "Twisted", "foo_bar", "abc123"]
WAREHOUSE_INVALID_NAMES = ["", "foo\n", "foo\nbar", "..."]

# packaging: canonicalize_name(name) == canonical.
PACKAGING_CANONICAL = [
    ("foo", "foo"), ("Foo", "foo"), ("fOo", "foo"), ("foo.bar", "foo-bar"),
    ("Foo.Bar", "foo-bar"), ("Foo.....Bar", "foo-bar"), ("foo_bar", "foo-bar"),
    ("foo___bar", "foo-bar"), ("foo-bar", "foo-bar"), ("foo----bar", "foo-bar"),
]
# packaging: canonicalize_name(name, validate=True) raises InvalidName.
PACKAGING_INVALID_NAMES = ["_not_legal", "hi\n", "\nhi", "h\ni", "hi\r", "\rhi", "h\ri"]

# packaging: parse_wheel_filename accepts these; (filename, canonical name, version).
PACKAGING_WHEELS = [
    ("foo-1.0-py3-none-any.whl", "foo", "1.0"),
    ("some_PACKAGE-1.0-py3-none-any.whl", "some-package", "1.0"),
    ("some_package-1.0-py3-none-any.whl", "some-package", "1.0"),  # from the compose cases
    ("foo-1.0-1000-py3-none-any.whl", "foo", "1.0"),
    ("foo-1.0-1000abc-py3-none-any.whl", "foo", "1.0"),
    ("foo_bar-1.0-42-py2.py3-none-any.whl", "foo-bar", "1.0"),
    ("pyvirtualcam-0.13.0-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
     "pyvirtualcam", "0.13.0"),
    # Unsorted compressed tags are valid by default.
    ("pyvirtualcam-0.13.0-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     "pyvirtualcam", "0.13.0"),
    ("foo-1.0-py3.py2-none-any.whl", "foo", "1.0"),
]
# packaging accepts a non-ASCII wheel name; the public index refuses such a project name,
# so namekeeper refuses the file (no project could ever be reserved for it).
PACKAGING_WHEELS_NON_ASCII = ["foo_bár-1.0-py3-none-any.whl", "foo_bár-1.0-1000-py3-none-any.whl"]
# packaging: parse_wheel_filename raises InvalidWheelFilename.
PACKAGING_INVALID_WHEELS = [
    "foo-1.0.whl",  # missing tags
    "foo-1.0-py3-none-any.wheel",  # wrong extension
    "foo__bar-1.0-py3-none-any.whl",  # "__" in the name
    "foo#bar-1.0-py3-none-any.whl",  # "#" in the name
    "foobar-1.x-py3-none-any.whl",  # invalid version
    "foo-1.0-abc-py3-none-any.whl",  # build number does not start with a digit
    "foo-1.0-200-py3-none-any-junk.whl",  # too many dashes
]

# packaging: parse_sdist_filename accepts; compose_sdist_filename builds the PEP 625 name.
PACKAGING_SDISTS = [("foo-1.0.tar.gz", "foo", "1.0"), ("foo-1.0.zip", "foo", "1.0")]
PACKAGING_SDIST_COMPOSE = [("foo", "1.0", "foo-1.0"), ("foo-bar", "1.0", "foo_bar-1.0")]
PACKAGING_INVALID_SDISTS = [
    "foo-1.0.xz",  # wrong extension
    "foo1.0.tar.gz",  # no separator
    "foo-1.x.tar.gz",  # invalid version
]
