"""Which cache events wake an integration's waiting runs (docrelay.handlers.run_controller):
the listeners only add keys to the work queue, so what a user sees (a queued run starting as
soon as a slot frees) is decided here, without a cluster."""

from __future__ import annotations

from typing import Any

from docrelay.handlers.run_controller import Runs, SlotFreed

NS = "tenant"


def run(name: str, phase: str | None, version: int, **meta: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "metadata": {
            "namespace": NS,
            "name": name,
            "resourceVersion": str(version),
            "creationTimestamp": f"2026-01-01T00:00:{version:02d}Z",
            **meta,
        },
        "spec": {"integration": "invoices"},
    }
    if phase:
        raw["status"] = {"phase": phase}
    return raw


def machinery() -> Runs:
    runs = Runs(kube=None, memo={}, namespace=NS)  # type: ignore[arg-type]  # no API call here
    for raw in (run("active", "Pending", 1), run("waiting", "Queued", 2)):
        runs.index.on_run((NS, raw["metadata"]["name"]), None, raw, True)
    while len(runs.queue):  # what listing them queued is not what is tested
        key = runs.queue.get()
        runs.queue.done(key)
    return runs


def drain(runs: Runs) -> list[Any]:
    """The runs queued, once a worker has taken each freed slot's key (SlotFreed)."""
    queued = []
    while len(runs.queue):
        key = runs.queue.get()
        if isinstance(key, SlotFreed):
            runs._drive_key(key)
        else:
            queued.append(key)
        runs.queue.done(key)
    return queued


def change(runs: Runs, old: dict[str, Any], new: dict[str, Any] | None) -> list[Any]:
    """The event as the runs cache delivers it to its listeners (the index first): the runs
    queued."""
    key = (NS, old["metadata"]["name"])
    runs.index.on_run(key, old, new, True)
    runs._on_run(key, old, new, True)
    return drain(runs)


def test_deleting_an_active_run_wakes_the_oldest_waiting_run() -> None:
    """Its slot is free even if its Job's deletion was delivered first (whose wake found the
    run still active): the waiting run is looked at now, not at its next poll (30 s)."""
    runs = machinery()
    assert change(runs, run("active", "Pending", 1), None) == [(NS, "waiting")]


def test_an_active_run_marked_for_deletion_wakes_them_too() -> None:
    runs = machinery()
    deleting = run("active", "Pending", 3, deletionTimestamp="2026-01-01T00:01:00Z")
    assert (NS, "waiting") in change(runs, run("active", "Pending", 1), deleting)


def test_a_run_finishing_wakes_nobody_its_job_deletion_does() -> None:
    """A finished run's Job still holds the slot until the operator deletes it (that wakes
    them): waking at the status write would only drive them to be refused."""
    runs = machinery()
    assert change(runs, run("active", "Pending", 1), run("active", "Succeeded", 3)) == []


def test_deleting_a_waiting_run_wakes_nobody() -> None:
    runs = machinery()
    assert change(runs, run("waiting", "Queued", 2), None) == []


def test_a_freed_slot_drives_as_many_of_the_oldest_due_runs_as_may_start() -> None:
    """maxConcurrency 5 (the default), three active: two slots free. The two oldest due runs
    go, and one more (a count a moment stale must not strand them); a run in backoff (not
    due) and the younger ones are not driven, so a burst is not looked at 50 runs per slot."""
    runs = Runs(kube=None, memo={}, namespace=NS)  # type: ignore[arg-type]
    raws = [run(f"active-{i}", "Running", i) for i in range(3)]
    backoff = run("in-backoff", "Queued", 4)
    backoff["status"]["nextAttemptAt"] = "2999-01-01T00:00:00Z"
    raws.append(backoff)
    raws += [run(f"waiting-{i}", "Queued", 10 + i) for i in range(20)]
    for raw in raws:
        runs.index.on_run((NS, raw["metadata"]["name"]), None, raw, True)
    drain(runs)
    runs.wake(NS, "invoices")  # a Job deleted
    runs.wake(NS, "invoices")  # and another, before a worker took the first: one key
    assert len(runs.queue) == 1
    assert drain(runs) == [(NS, "waiting-0"), (NS, "waiting-1"), (NS, "waiting-2")]


def test_a_change_of_what_runs_wait_for_drives_every_waiting_run() -> None:
    runs = machinery()
    runs.wake(NS, "invoices", limit=None)  # e.g. a secret became Active
    assert drain(runs) == [(NS, "waiting")]
