"""The run work queue's promises (client-go's workqueue shape), without threads racing."""

from __future__ import annotations

from docrelay.kube.workqueue import WorkQueue


def test_repeated_events_for_a_waiting_key_count_once() -> None:
    q = WorkQueue()
    for key in ("a", "b", "a", "a"):
        q.add(key)
    assert len(q) == 2
    assert q.get() == "a" and q.get() == "b"


def test_a_key_added_while_held_waits_until_done_then_comes_back_once() -> None:
    q = WorkQueue()
    q.add("a")
    assert q.get() == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0  # never handed to a second worker while the first holds it
    q.done("a")
    assert len(q) == 1 and q.get() == "a"
    q.done("a")
    assert len(q) == 0


def test_shut_down_releases_workers() -> None:
    q = WorkQueue()
    q.add("a")
    q.shut_down()
    assert q.get() is None
