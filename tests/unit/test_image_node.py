"""The operator image carries `node` for the agent's JavaScript syntax check (`node --check`):
the official binary of the newest pinned Node.js line, taken from that line's runner base, and
the image is rebuilt when that binary is re-pinned (tests/images runs the check in the image).
"""

from __future__ import annotations

import dataclasses

import pytest

from devkit import images
from devkit.toolchain import node


def operator() -> images.Image:
    return next(i for i in images.all_images() if i.name == "operator")


def test_the_operator_image_takes_node_from_the_newest_pinned_lines_runner_base() -> None:
    newest = max(node.majors(), key=int)
    assert operator().node_major == images.operator_node() == newest
    runner = next(i for i in images.all_images() if i.name == f"runner-node-{newest}")
    assert runner.debian_base == images.node_base(newest)
    assert runner.public_base == images.public_node_base(newest)
    dockerfile = images.IMAGES.joinpath("Dockerfile.operator").read_text()
    assert f"ARG NODE_IMAGE={images.public_node_base(newest)}" in dockerfile
    assert "COPY --from=node /out/node /usr/local/bin/node" in dockerfile


def test_re_pinning_the_operators_node_rebuilds_the_operator_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = operator()
    assert image.node_major is not None
    before = image.key("debian")
    pinned = node.pin(image.node_major)
    monkeypatch.setitem(
        node.PINS, image.node_major, dataclasses.replace(pinned, version=pinned.version + ".1")
    )
    assert image.key("debian") != before
    # The other lines' pins are not the operator's business.
    others = [m for m in node.majors() if m != image.node_major]
    monkeypatch.undo()
    for major in others:
        pinned = node.pin(major)
        monkeypatch.setitem(
            node.PINS, major, dataclasses.replace(pinned, version=pinned.version + ".1")
        )
    assert image.key("debian") == before
