"""The image tier: the images `make images` builds, run in real containers.

`make test-images` runs these with DOCRELAY_IMAGE_TESTS=1: the engine (devkit.engine, Debian's
docker.io in a private namespace, or the engine DOCKER_HOST names) is started when needed and
each image is built or taken from the cache. Anywhere else (`make test`) they are skipped, and
under `make test-images` they are skipped, with the reason, when no engine can run here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import engine, images

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("DOCRELAY_IMAGE_TESTS"):
        return
    skip = pytest.mark.skip(
        reason="the image tier runs through `make test-images` (builds the images, needs a "
        "container engine: devkit.engine starts Debian's docker.io here)"
    )
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """The engine's DOCKER_HOST; devkit.engine is stopped again at the end when this session
    started it (the images stay in its cache for the next start)."""
    ours = not os.environ.get("DOCKER_HOST") or os.environ["DOCKER_HOST"] == engine.docker_host()
    started = ours and not engine.running()
    try:
        host = engine.selected_host()
    except engine.EngineError as exc:
        pytest.skip(f"no container engine here: {exc}")
    yield host
    if started:
        engine.down()


@pytest.fixture(scope="session")
def built(docker_host: str) -> images.Result:
    """Every image built or cached (python -m devkit.images build), loaded into the engine."""
    result = images.build()
    for ref in result.built:
        images.ensure_loaded(ref)
    return result


def image(built: images.Result, name: str) -> str:
    """The reference of the image called ``name``; the test is skipped, with the reason the
    build gave, when no base here offers it (an image RUNNER_PYTHONS or RUNNER_NODES names
    that no Debian-made base offers)."""
    ref = next(i.ref for i in images.all_images() if i.name == name)
    if ref in built.skipped:
        pytest.skip(f"{ref} is not built here: {built.skipped[ref]}")
    assert ref in built.built, f"{ref} was neither built nor skipped"
    return ref
