"""The engine's runtime wrapper (devkit/engine/bounded_runc.py): a privileged container's
capabilities are cut to the machine's bounding set, and nothing else changes."""

from __future__ import annotations

import json
from pathlib import Path

from devkit.engine import bounded_runc

ALL = "000001ffffffffff"
NO_SYS_RESOURCE = "000001fffeffffff"  # this machine's: bit 24 (CAP_SYS_RESOURCE) clear


def status(bounding: str) -> str:
    return f"Name:\tpython\nCapEff:\t{bounding}\nCapBnd:\t{bounding}\nCapAmb:\t0\n"


def test_missing_names_the_capabilities_the_bounding_set_lacks() -> None:
    assert bounded_runc.missing(status(NO_SYS_RESOURCE)) == {"CAP_SYS_RESOURCE"}
    assert bounded_runc.missing(status(ALL)) == set()
    assert bounded_runc.CAPS[24] == "SYS_RESOURCE" and len(bounded_runc.CAPS) == 41


def write_bundle(tmp_path: Path) -> Path:
    caps = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]
    config = {"process": {"args": ["/sbin/init"], "capabilities": {
        k: list(caps) for k in ("bounding", "effective", "permitted")}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "config.json"


def test_create_drops_only_what_the_machine_lacks(tmp_path: Path) -> None:
    config = write_bundle(tmp_path)
    bounded_runc.rewrite(
        ["--root", "/run/x", "create", "--bundle", str(tmp_path), "abc"], {"CAP_SYS_RESOURCE"}
    )
    process = json.loads(config.read_text())["process"]
    assert process["args"] == ["/sbin/init"]
    for names in process["capabilities"].values():
        assert names == ["CAP_CHOWN", "CAP_NET_ADMIN"]


def test_exec_filters_the_process_file(tmp_path: Path) -> None:
    process = tmp_path / "process.json"
    caps = {"effective": ["CAP_SYS_RESOURCE", "CAP_KILL"]}
    process.write_text(json.dumps({"capabilities": caps}))
    bounded_runc.rewrite(["exec", "--process", str(process), "abc"], {"CAP_SYS_RESOURCE"})
    assert json.loads(process.read_text())["capabilities"]["effective"] == ["CAP_KILL"]


def test_other_commands_and_full_bounding_sets_change_nothing(tmp_path: Path) -> None:
    config = write_bundle(tmp_path)
    before = config.read_text()
    bounded_runc.rewrite(["state", "abc"], {"CAP_SYS_RESOURCE"})
    bounded_runc.rewrite(["create", "--bundle", str(tmp_path), "abc"], set())
    assert config.read_text() == before
