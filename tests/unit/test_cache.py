"""The watch-fed store's promises that need no API server: an older version never replaces a
newer one (a write-through followed by a late watch event), and read-your-writes waits only
for versions it can compare. The watch itself runs in every cluster test that drives runs."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from docrelay.kube import Kube
from docrelay.kube.cache import Gone, Store


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


def test_listeners_see_every_change_and_a_deletion_made_here_wins_over_late_events() -> None:
    s = store()
    seen: list[tuple[str, str | None, bool]] = []
    s.add_listener(
        lambda key, old, new, watched: seen.append(
            (key[1], (new or {}).get("status", {}).get("phase") if new else None, watched)
        )
    )
    s._apply({"type": "ADDED", "object": run("a", "10", "Running")})
    s.observe(run("a", "20", "Succeeded"))
    s.forget("ns", "a")  # this process deleted it
    s._apply({"type": "MODIFIED", "object": run("a", "30", "Succeeded")})  # late: ignored
    assert s.get("ns", "a") is None
    s._apply({"type": "DELETED", "object": run("a", "31", "Succeeded")})
    assert seen == [("a", "Running", True), ("a", "Succeeded", False), ("a", None, False)]
    assert s.seen == 31  # the watch's position moves on with every event


def test_an_expired_watch_lists_again() -> None:
    s = store()
    try:
        s._apply({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Gone"}})
    except Gone:
        pass
    else:
        raise AssertionError("a 410 ERROR event must make the store list again")


def test_managed_fields_are_not_kept() -> None:
    s = store()
    obj = run("a", "5")
    obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    s._apply({"type": "ADDED", "object": obj})
    assert "managedFields" not in s.get("ns", "a")["metadata"]


def test_the_watch_confirming_a_write_through_is_told_once_as_no_change() -> None:
    s = store()
    calls: list[tuple[str | None, str | None, bool]] = []
    s.add_listener(
        lambda key, old, new, watched: calls.append(
            (
                (old or {}).get("metadata", {}).get("resourceVersion"),
                (new or {}).get("metadata", {}).get("resourceVersion"),
                watched,
            )
        )
    )
    s._apply({"type": "ADDED", "object": run("a", "10")})
    s.observe(run("a", "11", "Succeeded"))  # this process's write
    s._apply({"type": "MODIFIED", "object": run("a", "11", "Succeeded")})  # its watch event
    s._apply({"type": "MODIFIED", "object": run("a", "11", "Succeeded")})  # again: nothing
    assert calls == [(None, "10", True), ("10", "11", False), ("11", "11", True)]
