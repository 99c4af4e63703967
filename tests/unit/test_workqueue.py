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


def test_a_delayed_add_arrives_once_due_and_the_earliest_time_wins() -> None:
    q = WorkQueue()
    q.add_after("a", 30.0)
    q.add_after("a", 0.05)  # earlier: replaces the later one
    q.add_after("a", 10.0)  # later than the pending one: ignored
    assert len(q) == 0 and q.delayed() == 1
    assert q.get() == "a"  # blocks until the timer adds it
    q.done("a")
    assert q.delayed() == 0 and len(q) == 0
    q.shut_down()


def test_failures_back_off_per_key_until_forgotten() -> None:
    q = WorkQueue()
    delays = [q.add_rate_limited("a") for _ in range(9)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 60.0  # capped
    assert q.add_rate_limited("b") == 0.5  # another key starts from the beginning
    q.forget("a")
    assert q.add_rate_limited("a") == 0.5
    q.shut_down()
