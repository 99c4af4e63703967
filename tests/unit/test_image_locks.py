"""The images' lock files (images/requirements/) pin what the images need, by hash.

A dependency added to pyproject.toml or images/requirements/runner.in without re-running
`python -m devkit.images lock` would make an image without it (the build installs the lock
only, --no-index); these tests name the missing package instead.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from devkit import images

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^([a-z0-9-]+)==(\S+) --hash=sha256:[0-9a-f]{64}$")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        assert match, f"{path.name}: not a hash-pinned line: {line!r}"
        found[match.group(1)] = match.group(2)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(name: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    if name == "operator":
        return [Requirement(r) for r in project["project"]["dependencies"]]
    if name == "build":
        return [Requirement(r) for r in project["build-system"]["requires"]]
    lines = (REPO / "images/requirements/runner.in").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


LOCKS = [("operator", images.DEBIAN_PYTHON), ("build", images.DEBIAN_PYTHON)] + [
    ("runner", python) for python in ("3.11", "3.12", "3.13")
]


@pytest.mark.parametrize(("name", "python"), LOCKS)
def test_each_lock_pins_every_requirement_at_a_version_it_allows(name: str, python: str) -> None:
    pinned = pins(images.lock_file(name, python))
    for requirement in wanted(name):
        version = pinned.get(canonical(requirement.name))
        assert version is not None, (
            f"{requirement.name} is not in {name}-{python}.txt: python -m devkit.images lock")
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}-{python}.txt pins {requirement.name}=={version}, outside {requirement}")


def test_the_dockerfiles_install_from_the_wheelhouse_only() -> None:
    for name in ("Dockerfile.operator", "Dockerfile.runner"):
        text = (REPO / "images" / name).read_text()
        installs = re.findall(r"pip install ([^&]*)", text)
        assert installs, name
        for args in installs:
            assert "--no-index" in args, f"{name}: pip install without --no-index: {args}"
