"""The watch-fed store's promises that need no API server: an older version never replaces a
newer one (a write-through followed by a late watch event), and read-your-writes waits only
for versions it can compare. The watch itself runs in every cluster test that drives runs."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from docrelay.kube import Kube
from docrelay.kube.cache import Store


def run(name: str, version: str, phase: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": version},
        "status": {"phase": phase} if phase else {},
    }


def store() -> Store:
    return Store(Kube(client.ApiClient(client.Configuration())), "integrationruns", "ns")


def test_a_late_older_version_does_not_replace_what_was_written() -> None:
    s = store()
    s.observe(run("a", "120", "Running"))
    s.observe(run("a", "110"))  # the watch's event of the creation, delivered late
    assert s.get("ns", "a") == run("a", "120", "Running")
    s.observe(run("a", "130", "Succeeded"))
    assert [o["status"]["phase"] for o in s.list_shallow("ns")] == ["Succeeded"]
    assert s.list_shallow("other") == []


def test_read_your_writes_waits_for_a_version_only_once_synced() -> None:
    s = store()
    assert not s.wait_for(5, timeout=0.01)  # never listed: callers list from the API
    s.synced, s.seen = True, 100
    assert s.wait_for(100, timeout=0.01)
    assert not s.wait_for(101, timeout=0.01)  # the watch has not delivered it yet
    assert not s.wait_for(None, timeout=0.01)  # not comparable: callers list instead
