"""What the operator reads from a run's Job and pods, its stored log's shape, retention groups
and the usable secret of each key: the pure pieces behind handlers/runs.py."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import pytest

from docrelay.builders.run import (
    MAX_LOG_BYTES,
    MAX_STORED_GZ,
    RUN_LABEL,
    cap_log,
    compress_log,
    resource_quantities,
)
from docrelay.models.integration import ResourceList
from docrelay.models.run import RunPhase, SecretVersion
from docrelay.reconcile.run import (
    FinishedRun,
    JobView,
    busy_runs,
    finished_by_integration,
    job_done,
    parse_time,
    run_refs,
    view_of,
)
from docrelay.reconcile.secrets import UnusableSecret, active_by_key, pick_keys, received_secrets

JOB_RUNNING: dict[str, Any] = {"status": {"active": 1}}
JOB_COMPLETE = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
JOB_DEADLINE = {
    "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}
}
JOB_FALSE_CONDITION = {"status": {"conditions": [{"type": "Failed", "status": "False"}]}}


def pod(phase: str, state: dict[str, Any], container: str = "run") -> dict[str, Any]:
    return {
        "metadata": {"name": "run-abc-1-xyz"},
        "status": {"phase": phase, "containerStatuses": [{"name": container, "state": state}]},
    }


TERMINATED = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": '{"ok":false}'}}


@pytest.mark.parametrize(
    ("job", "pods", "expected"),
    [
        pytest.param(None, [], JobView(exists=False), id="job gone"),
        pytest.param(JOB_RUNNING, [], JobView(exists=True), id="no pod yet"),
        pytest.param(JOB_FALSE_CONDITION, [], JobView(), id="a False condition counts not"),
        pytest.param(JOB_COMPLETE, [], JobView(complete=True), id="complete, pod deleted"),
        pytest.param(
            JOB_DEADLINE, [], JobView(failed_reason="DeadlineExceeded"), id="deadline, pod deleted"
        ),
        pytest.param(
            JOB_RUNNING,
            [pod("Running", {"running": {}})],
            JobView(pod_name="run-abc-1-xyz", pod_phase="Running", running=True),
            id="running",
        ),
        pytest.param(
            JOB_RUNNING,
            [pod("Failed", TERMINATED)],
            JobView(
                pod_name="run-abc-1-xyz",
                pod_phase="Failed",
                running=True,
                terminated=True,
                exit_code=137,
                reason="OOMKilled",
                message='{"ok":false}',
            ),
            id="terminated",
        ),
        pytest.param(
            JOB_RUNNING,
            [pod("Pending", {"running": {}}, container="sidecar")],
            JobView(pod_name="run-abc-1-xyz", pod_phase="Pending"),
            id="another container's state is not the run's",
        ),
    ],
)
def test_view_of_a_job_and_its_pods(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], expected: JobView
) -> None:
    assert view_of(job, pods, "run") == expected


def test_a_view_of_an_ended_job_whose_pod_is_gone_is_finished() -> None:
    assert view_of(JOB_DEADLINE, [], "run").finished
    assert not view_of(JOB_RUNNING, [], "run").finished


def test_a_short_log_is_kept_whole_and_a_long_one_says_what_went() -> None:
    assert cap_log("hello\n") == "hello\n"
    capped = cap_log("a" * 10 + "b" * MAX_LOG_BYTES)
    assert capped.startswith(
        "[docrelay: the first 10 bytes of this log were dropped (1 MiB cap)]\n"
    )
    assert capped.endswith("b" * MAX_LOG_BYTES)


def test_a_compressed_log_fits_a_config_map_and_keeps_its_newest_lines() -> None:
    text = "".join(f"{i:08d} {i * 7919 % 1000003:x}\n" for i in range(400_000))
    gz = compress_log(text)
    assert len(gz) <= MAX_STORED_GZ
    kept = gzip.decompress(gz).decode()
    assert kept.startswith("[docrelay: log shortened to fit]\n")
    assert kept.endswith("00399999 " + f"{399999 * 7919 % 1000003:x}\n")
    assert gzip.decompress(compress_log("short\n")) == b"short\n"


def test_resource_quantities() -> None:
    assert resource_quantities(None) is None
    assert resource_quantities(ResourceList(cpu="250m")) == {"cpu": "250m"}
    assert resource_quantities(ResourceList(cpu="1", memory="256Mi")) == {
        "cpu": "1",
        "memory": "256Mi",
    }


def run_obj(name: str, integration: str, phase: str | None, done: str | None = None) -> dict:
    status = {"phase": phase, "completionTime": done} if phase else {}
    return {
        "metadata": {"name": name, "namespace": "t", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"integration": integration},
        "status": status,
    }


def test_finished_runs_are_grouped_by_integration_and_unfinished_ones_left_out() -> None:
    groups = finished_by_integration(
        [
            run_obj("a1", "a", "Succeeded", "2026-01-02T00:00:00Z"),
            run_obj("a2", "a", "Running"),
            run_obj("a3", "a", "DeadLettered"),  # no completionTime: its creation counts
            run_obj("b1", "b", None),
        ]
    )
    assert groups == {
        ("t", "a"): [
            FinishedRun("a1", RunPhase.SUCCEEDED, datetime(2026, 1, 2, tzinfo=UTC)),
            FinishedRun("a3", RunPhase.DEAD_LETTERED, datetime(2026, 1, 1, tzinfo=UTC)),
        ]
    }


def test_parse_time() -> None:
    assert parse_time(None) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time("2026-12-06T03:13:33Z") == datetime(2026, 12, 6, 3, 13, 33, tzinfo=UTC)


def secret_obj(name: str, integration: str, key: str, state: str, ready: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"integration": integration, "key": key, "encryptedValue": "x"},
        "status": {
            "state": state,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "Sealed",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    }


def test_the_usable_secret_of_each_key_is_the_active_ready_one_of_that_integration() -> None:
    objects = [
        secret_obj("k-old", "export", "API_KEY", "Superseded", "True"),
        secret_obj("k-new", "export", "API_KEY", "Active", "True"),
        secret_obj("t-bad", "export", "TOKEN", "Active", "False"),
        secret_obj("other", "another", "API_KEY", "Active", "True"),
    ]
    active = active_by_key(objects, "export")
    assert {key: obj["metadata"]["name"] for key, obj in active.items()} == {"API_KEY": "k-new"}


def test_a_run_pod_event_finishes_the_run_only_once_its_container_ended() -> None:
    from docrelay.reconcile.run import container_ended

    def pod(state: dict[str, object], name: str = "run") -> dict[str, object]:
        return {"status": {"containerStatuses": [{"name": name, "state": state}]}}

    assert container_ended(pod({"terminated": {"exitCode": 0}}), "run")
    assert not container_ended(pod({"running": {}}), "run")
    assert not container_ended(pod({"terminated": {"exitCode": 0}}, name="sidecar"), "run")
    assert not container_ended({"status": {}}, "run")


def test_a_finished_run_is_not_driven_by_its_own_events() -> None:
    from docrelay.reconcile.run import run_finished

    assert run_finished({"status": {"phase": "Succeeded"}})
    assert run_finished({"status": {"phase": "DeadLettered"}})
    assert not run_finished({"status": {"phase": "Running"}})
    assert not run_finished({"status": {"phase": "Queued"}})
    assert not run_finished({"status": {}}) and not run_finished(None)
    assert not run_finished({"status": {"phase": "SomethingNew"}})


def job(owner: str, *, done: bool = False, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"{owner}-1", "labels": {RUN_LABEL: owner}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    conditions = [{"type": "Complete", "status": "True"}] if done else []
    return {"metadata": metadata, "status": {"conditions": conditions}}


def test_a_slot_is_held_by_every_job_but_deleted_ones_and_done_leftovers_of_finished_runs() -> None:
    jobs = [
        job("running"),
        job("done-unrecorded", done=True),  # its run has not recorded the end yet: still busy
        job("finished", done=True),
        job("going", deleting=True),
    ]
    assert busy_runs(jobs, finished={"finished"}) == {"running", "done-unrecorded"}
    assert job_done(job("x", done=True)) and not job_done(job("x"))


def test_the_gate_sees_the_integrations_other_uncancelled_runs() -> None:
    cancelled = run_obj("a4", "a", "Queued")
    cancelled["spec"]["cancel"] = True
    waiting = run_obj("a5", "a", "Queued")
    waiting["status"]["nextAttemptAt"] = "2026-01-01T00:01:00Z"
    refs = run_refs(
        [run_obj("a1", "a", "Running"), run_obj("me", "a", None), run_obj("b1", "b", "Running"),
         cancelled, waiting],
        "a",
        exclude="me",
    )
    assert [(r.name, r.phase, r.next_attempt_at) for r in refs] == [
        ("a1", RunPhase.RUNNING, None),
        ("a5", RunPhase.QUEUED, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)),
    ]


def test_pick_keys_names_what_is_missing() -> None:
    active = {"API_KEY": {"metadata": {"name": "k"}}}
    assert pick_keys(active, ["API_KEY"]) == active
    assert pick_keys(active, []) == {}
    with pytest.raises(UnusableSecret, match=r"^no usable IntegrationSecret for A, B \(hint\)$"):
        pick_keys(active, ["B", "API_KEY", "A"], " (hint)")


def test_a_run_masks_with_the_secrets_it_received_or_the_keys_active_one() -> None:
    v1 = {"metadata": {"name": "v1"}}
    v2 = {"metadata": {"name": "v2"}}
    received = [SecretVersion(key="API_KEY", secret="v1", fingerprint="f1")]
    assert received_secrets([v1, v2], received, {"API_KEY": v2}) == {"API_KEY": v1}
    assert received_secrets([v2], received, {"API_KEY": v2}) == {"API_KEY": v2}  # v1 deleted
    with pytest.raises(UnusableSecret, match="a secret the run received is gone"):
        received_secrets([], received, {})
