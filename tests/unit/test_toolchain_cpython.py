"""How the harness gets the CPython 3.12 that no Debian release ships: a Go module's zip,
pinned by its go.sum hash and sha256, unpacked as its files.json lists it.

A module zip is made here in go-embed-python's layout (binary files gzip'ed one by one,
modes in Go's fs.FileMode bits); ``go`` is a script answering ``go mod download -json`` with it,
and ``bin/python3.12`` a script reporting the pinned version.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import zipfile
from pathlib import Path

import pytest

from devkit.toolchain import ToolchainError, cpython

VERSION = "v0.0.0-3.12.3-20240415-1"
PREFIX = f"{cpython.MODULE}@{VERSION}/python/internal/data/linux-amd64/"
PYTHON = b"#!/bin/sh\necho 3.12.3\n"
DIR, LINK = cpython.MODE_DIR, cpython.MODE_SYMLINK


def entry(name: str, perm: int, data: bytes = b"", **extra: object) -> dict[str, object]:
    return {"name": name, "size": len(data), "perm": perm, **extra}


def module_zip(path: Path, entries: list[dict[str, object]], files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(PREFIX + "files.json", json.dumps({"contentHash": "x", "files": entries}))
        for name, data in files.items():
            archive.writestr(PREFIX + name, data)
        archive.writestr(f"{cpython.MODULE}@{VERSION}/README.md", "not unpacked")
    return path


def good_zip(path: Path) -> Path:
    os_py = b"# the os module\n"
    return module_zip(path, [
        entry("bin", DIR | 0o755),
        entry("bin/python3.12", 0o775, PYTHON, compressed=True),
        entry("bin/python3", LINK, symlink="python3.12"),
        entry("bin/python", LINK, symlink="python3.12"),
        entry("bin/pip3.12", 0o775, b"#!/install/bin/python3\n"),
        entry("bin/python3.12-config", 0o775, b"#!/bin/sh\n"),
        entry("lib", DIR | 0o755),
        entry("lib/python3.12", DIR | 0o755),
        entry("lib/python3.12/os.py", 0o664, os_py),
        entry("lib/libpython3.12.so", LINK, symlink="libpython3.12.so.1.0"),
        entry("lib/libpython3.12.so.1.0", 0o775, b"\0lib", compressed=True),
    ], {
        "bin/python3.12.gz": gzip.compress(PYTHON),
        "bin/pip3.12": b"#!/install/bin/python3\n",
        "bin/python3.12-config": b"#!/bin/sh\n",
        "lib/python3.12/os.py": os_py,
        "lib/libpython3.12.so.1.0.gz": gzip.compress(b"\0lib"),
    })


def test_the_tree_is_written_as_files_json_lists_it_gunzipped_without_the_broken_scripts(
    tmp_path: Path,
) -> None:
    target = tmp_path / "tree"
    target.mkdir()
    count = cpython.unpack(good_zip(tmp_path / "m.zip"), VERSION, target, "linux-amd64")
    assert count == 3
    assert (target / "bin/python3.12").read_bytes() == PYTHON
    assert os.readlink(target / "bin/python3") == "python3.12"
    assert os.readlink(target / "lib/libpython3.12.so") == "libpython3.12.so.1.0"
    assert (target / "lib/libpython3.12.so.1.0").read_bytes() == b"\0lib"
    assert sorted(p.name for p in (target / "bin").iterdir()) == [
        "python", "python3", "python3.12"]  # pip and python-config name a missing Python
    modes = {name: stat.S_IMODE((target / name).stat().st_mode)
             for name in ("bin/python3.12", "lib/python3.12/os.py", "lib/python3.12")}
    assert modes == {"bin/python3.12": 0o755, "lib/python3.12/os.py": 0o644,
                     "lib/python3.12": 0o755}  # group-writable in files.json, not here


@pytest.mark.parametrize(("bad", "says"), [
    (entry("../evil", 0o644, b"x"), "outside its tree"),
    (entry("/etc/evil", 0o644, b"x"), "outside its tree"),
    (entry("lib/evil", LINK, symlink="../../etc/passwd"), "leaves its tree"),
    (entry("lib/evil", LINK, symlink="/etc/passwd"), "leaves its tree"),
    ({**entry("lib/short.py", 0o644, b"x"), "size": 5}, "files.json says 5"),
])
def test_an_entry_leaving_the_tree_or_of_the_wrong_size_is_refused(
    tmp_path: Path, bad: dict[str, object], says: str,
) -> None:
    archive = module_zip(tmp_path / "m.zip", [bad], {"../evil": b"x", "/etc/evil": b"x",
                                                     "lib/short.py": b"x"})
    with pytest.raises(ToolchainError, match=says):
        cpython.unpack(archive, VERSION, tmp_path, "linux-amd64")
    assert not (tmp_path.parent / "evil").exists()


def pinned_for(archive: Path, go_sum: str = "h1:pinned=") -> cpython.CPythonPin:
    return cpython.CPythonPin("3.12.3", "20240415", VERSION, go_sum,
                              hashlib.sha256(archive.read_bytes()).hexdigest())


def test_a_download_is_accepted_only_when_its_go_sum_hash_and_sha256_match_the_pins(
    tmp_path: Path,
) -> None:
    archive = good_zip(tmp_path / "m.zip")
    pinned = pinned_for(archive)
    answer = {"Zip": str(archive), "Sum": "h1:pinned="}
    assert cpython.check_download(answer, pinned) == archive
    with pytest.raises(ToolchainError, match="not the pinned h1:pinned="):
        cpython.check_download({**answer, "Sum": "h1:other="}, pinned)
    with pytest.raises(ToolchainError, match=r"sha256 .* not the pinned"):
        cpython.check_download(answer, cpython.CPythonPin(
            pinned.version, pinned.release, VERSION, pinned.go_sum, "0" * 64))
    with pytest.raises(ToolchainError, match="403 Forbidden"):
        cpython.check_download({"Error": "reading ...: 403 Forbidden"}, pinned)


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``go`` on PATH answering ``go mod download -json`` with the zip at tmp_path/m.zip."""
    archive = good_zip(tmp_path / "m.zip")
    tools = tmp_path / "tools"
    tools.mkdir()
    answer = json.dumps({"Path": cpython.MODULE, "Version": VERSION, "Zip": str(archive),
                         "Sum": "h1:pinned="})
    (tools / "go").write_text(f"#!/bin/sh\necho '{answer}'\n")
    (tools / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCRELAY_CACHE_DIR", str(tmp_path / "cache"))
    return archive


def test_ensure_unpacks_the_pinned_build_once_into_the_cache_and_checks_its_version(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cpython.PINS, "3.12", pinned_for(fake_go))
    messages: list[str] = []
    tree = cpython.ensure("3.12", log=messages.append)
    assert tree == cpython.cache_dir("3.12")
    assert tree.name.startswith("cpython-3.12.3-20240415-linux-")
    assert (tree / "bin/python3").read_bytes() == PYTHON
    assert any("go.sum hash and sha256 match the pins" in m for m in messages)
    fake_go.unlink()  # a second call finds the cache and fetches nothing
    assert cpython.ensure("3.12") == tree


def test_a_build_reporting_another_version_is_not_cached(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pinned = pinned_for(fake_go)
    monkeypatch.setitem(cpython.PINS, "3.12", cpython.CPythonPin(
        "3.12.9", pinned.release, pinned.module_version, pinned.go_sum, pinned.zip_sha256))
    with pytest.raises(ToolchainError, match=re.escape("reports '3.12.3', not 3.12.9")):
        cpython.ensure("3.12")
    assert cpython.find("3.12") is None
    assert not any(cpython.cache_dir("3.12").parent.glob("*.partial.*"))
