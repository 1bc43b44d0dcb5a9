"""Lock files: which packages came from an index other than the public one."""

from __future__ import annotations

from pathlib import Path

import pytest

from namekeeper.lockfiles import LockFileError, private_packages, read_lock

PUBLIC = "http://127.0.0.1:1/simple/"
PRIVATE = "https://devpi.example.com/acme/prod/+simple/"

PYLOCK = f"""
lock-version = "1.0"
created-by = "pip"

[[packages]]
name = "requests"
version = "2.32.3"
index = "http://127.0.0.1:1/simple"

[[packages]]
name = "Acme_Billing"
version = "1.4.0"
index = "{PRIVATE}"
[[packages.wheels]]
url = "https://devpi.example.com/acme/prod/+f/acme_billing-1.4.0-py3-none-any.whl"

[[packages]]
name = "acme-vcs-tool"
version = "0.1"
[packages.vcs]
type = "git"
url = "https://git.example.com/acme/tool.git"
commit-id = "0123456789abcdef"
"""

UV_LOCK = f"""
version = 1
revision = 2
requires-python = ">=3.11"

[[package]]
name = "acme-utils"
version = "2.0"
source = {{ registry = "{PRIVATE}" }}

[[package]]
name = "idna"
version = "3.7"
source = {{ registry = "http://127.0.0.1:1/simple/" }}

[[package]]
name = "my-app"
version = "0.1.0"
source = {{ editable = "." }}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_pylock_and_uv_lock_give_only_packages_from_other_indexes(tmp_path: Path) -> None:
    pylock = write(tmp_path, "pylock.toml", PYLOCK)
    uv_lock = write(tmp_path, "uv.lock", UV_LOCK)
    assert [p.name for p in read_lock(pylock)] == ["requests", "acme-billing"]
    assert [p.name for p in read_lock(uv_lock)] == ["acme-utils", "idna"]
    private = private_packages([pylock, uv_lock], PUBLIC)
    assert [(p.name, p.display_name, p.version, p.index) for p in private] == [
        ("acme-billing", "Acme_Billing", "1.4.0", PRIVATE),
        ("acme-utils", "acme-utils", "2.0", PRIVATE),
    ]
    assert private[0].lock_file == str(pylock)


def test_credentials_in_an_index_url_are_never_kept(tmp_path: Path) -> None:
    lock = write(tmp_path, "uv.lock", UV_LOCK.replace("https://devpi", "https://bot:s3cret@devpi"))
    [package] = private_packages([lock], PUBLIC)
    assert "s3cret" not in repr(package) and package.index == PRIVATE


@pytest.mark.parametrize(("text", "message"), [
    ('lock-version = "2.0"\n', r"lock-version '2\.0' is not supported"),
    ("version = 7\n", r"uv\.lock version '7' is not supported"),
    ("this is = not toml [\n", r"is not valid TOML"),
    ('name = "x"\n', r"is neither a PEP 751 pylock\.toml"),
    ('lock-version = "1.0"\npackages = "nope"\n', r"'packages' must be an array of tables"),
    ('lock-version = "1.0"\n[[packages]]\nversion = "1"\n', r"packages entry 1 has no name"),
    ('lock-version = "1.0"\n[[packages]]\nname = "bad name!"\nindex = "https://x/"\n',
     r"not a valid project name"),
    ('version = 1\n[[package]]\nname = "a"\nsource = "registry"\n', r"malformed 'source'"),
])
def test_bad_lock_files_get_one_line_naming_the_file(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = write(tmp_path, "some.lock", text)
    with pytest.raises(LockFileError, match=message) as err:
        read_lock(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("index", ["https://[::1/simple/", "http://a]b/simple/",
                                   "https://host:99999/simple/", "ftp://host/simple/"])
def test_an_index_that_is_not_a_url_is_one_line_not_a_traceback(tmp_path: Path,
                                                                 index: str) -> None:
    path = write(tmp_path, "uv.lock", f'version = 1\n[[package]]\nname = "acme-a"\n'
                                      f'source = {{ registry = "{index}" }}\n')
    with pytest.raises(LockFileError, match="has an index that is not a URL") as err:
        read_lock(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_default_port_is_the_same_index(tmp_path: Path) -> None:
    lock = write(tmp_path, "uv.lock", 'version = 1\n'
                 '[[package]]\nname = "requests"\nsource = { registry = "HTTPS://Pub.example:443/simple" }\n'
                 '[[package]]\nname = "acme-a"\nsource = { registry = "https://pub.example:8443/simple/" }\n')
    assert [p.name for p in private_packages([lock], "https://pub.example/simple/")] == ["acme-a"]


def test_a_uv_local_directory_index_is_private_and_relative_to_the_lock(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    lock = write(tmp_path / "project", "uv.lock", 'version = 1\n'
                 '[[package]]\nname = "acme-local"\nsource = { registry = "../wheels" }\n'
                 f'[[package]]\nname = "acme-utils"\nsource = {{ registry = "{PRIVATE}" }}\n')
    found = {p.name: p.index for p in private_packages([lock], PUBLIC)}
    assert found == {"acme-local": (tmp_path / "wheels").as_uri(), "acme-utils": PRIVATE}


def test_a_lock_file_nested_too_deeply_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    # tomllib recurses once per nested array: 5,000 deep exhausts Python's stack.
    path = write(tmp_path, "uv.lock", "version = 1\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(LockFileError,
                       match=r"^lock file \S*uv\.lock is not valid TOML: nested too deeply$"):
        read_lock(path)


def test_missing_lock_file(tmp_path: Path) -> None:
    with pytest.raises(LockFileError, match=r"cannot read lock file .*missing\.lock"):
        read_lock(tmp_path / "missing.lock")


def test_a_lock_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "uv.lock"
    path.write_bytes(b"\xff\xfeversion = 1\n")
    with pytest.raises(LockFileError, match=r"^lock file \S*uv\.lock is not UTF-8 text$"):
        read_lock(path)


def test_a_pylock_package_without_an_index_carries_its_files_digests(tmp_path: Path) -> None:
    lock = write(tmp_path, "pylock.toml", 'lock-version = "1.0"\ncreated-by = "pip"\n'
                 '[[packages]]\nname = "acme-a"\nversion = "1.0"\n'
                 '[packages.sdist]\nurl = "https://files.example/acme_a-1.0.tar.gz"\n'
                 'hashes = { sha256 = "AB12" }\n'
                 '[[packages.wheels]]\nurl = "https://files.example/acme_a-1.0-py3-none-any.whl"\n'
                 'hashes = { sha256 = "cd34" }\n'
                 '[[packages]]\nname = "acme-unhashed"\nversion = "1.0"\n'
                 '[packages.sdist]\nurl = "https://files.example/acme_unhashed-1.0.tar.gz"\n')
    [package] = private_packages([lock], PUBLIC)  # nothing to compare: left out
    assert (package.name, package.index) == ("acme-a", "https://files.example/")
    assert package.digests == {"ab12", "cd34"}


def test_a_name_known_only_by_its_files_is_asked_once_per_lock(tmp_path: Path) -> None:
    def pip_lock(name: str, digest: str) -> Path:
        return write(tmp_path, name, 'lock-version = "1.0"\ncreated-by = "pip"\n'
                     '[[packages]]\nname = "acme-a"\nversion = "1.0"\n'
                     '[packages.sdist]\nurl = "https://files.example/acme_a-1.0.tar.gz"\n'
                     f'hashes = {{ sha256 = "{digest}" }}\n')
    # One lock's file may be the public one and another's not: each is judged by its own.
    found = private_packages([pip_lock("a.toml", "aa"), pip_lock("b.toml", "bb")], PUBLIC)
    assert [(p.name, p.digests) for p in found] == [("acme-a", {"aa"}), ("acme-a", {"bb"})]
    # A lock that names a private index for it settles it: no file to compare.
    uv_lock = write(tmp_path, "uv.lock", 'version = 1\n[[package]]\nname = "acme-a"\n'
                    f'source = {{ registry = "{PRIVATE}" }}\n')
    [package] = private_packages([pip_lock("a.toml", "aa"), uv_lock], PUBLIC)
    assert (package.index, package.digests) == (PRIVATE, frozenset())


@pytest.mark.parametrize("control", ["\x1b[2J", "\n", "\x00", "\u2028"])
def test_an_index_url_with_a_control_character_is_refused_not_reported(
        tmp_path: Path, control: str) -> None:
    import json

    url = json.dumps(f"https://devpi.example.com/simple/{control}x")  # TOML reads its \uXXXX
    lock = write(tmp_path, "uv.lock", 'version = 1\n[[package]]\nname = "acme-a"\n'
                 f'source = {{ registry = {url} }}\n')
    with pytest.raises(LockFileError, match="has an index that is not a URL") as refused:
        private_packages([lock], PUBLIC)
    assert control not in str(refused.value)


@pytest.mark.parametrize("index", [
    '{ url = "https://bot:s3cret@devpi.example.com/simple/" }',  # a table, not a string
    '["https://bot:s3cret@devpi.example.com/simple/"]',
    '"bot:s3cret@devpi.example.com/simple/"',  # no scheme
    '"https:/bot:s3cret@devpi.example.com/simple/"',  # one slash: no host to take it from
])
def test_credentials_in_an_index_that_is_not_a_url_are_not_printed(tmp_path: Path,
                                                                     index: str) -> None:
    texts = [f'lock-version = "1.0"\n[[packages]]\nname = "acme-a"\nindex = {index}\n']
    if not index.startswith('"'):  # uv reads a string without "://" as a directory
        texts.append(f'version = 1\n[[package]]\nname = "acme-a"\nsource = {{ registry = {index} }}\n')
    for text in texts:
        lock = write(tmp_path, "some.lock", text)
        with pytest.raises(LockFileError, match="has an index that is not a URL") as refused:
            read_lock(lock)
        assert "s3cret" not in str(refused.value)
