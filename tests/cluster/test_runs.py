"""Runs against the real control plane and the local node: one document, one hardened Job,
retries, dead letters, the concurrency gate, crash recovery, and logs that outlive pods.

The operator runs as in production (a subprocess in tenant mode with a namespaced Role); the
run pods are real local processes started by the local node from the Jobs it creates.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from docrelay.runner.envcrypt import decrypt_value
from docrelay.sealing import KeyRing
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    canary,
    checked,
    create_run,
    custom,
    docrelay,
    eventually,
    get_run,
    jobs_of,
    keys_namespace,
    kubectl,
    make_integration,
    operator_rules,
    plaintext_secret,
    run_manifest,
    stored_log,
    wait_finished,
    withhold_from_operator,
)
from tests.leakcheck import assert_clean


class JobWatch:
    """Every Job created in a namespace, and the most that existed at one time."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.created: list[str] = []
        self.existing: set[str] = set()
        self.most = 0
        self._watch = watch.Watch()
        self._stopped = False
        self._uids: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            try:
                for event in self._watch.stream(self.batch.list_namespaced_job, self.namespace):
                    self._see(event["type"], event["object"])
            except Exception:  # a watch ends now and then: list again, keep counting
                if self._stopped:
                    return
                time.sleep(0.2)

    def _see(self, kind: str, job: Any) -> None:
        name = job.metadata.name
        if kind == "DELETED" or job.metadata.deletion_timestamp is not None:
            self.existing.discard(name)
        elif job.metadata.uid not in self._uids:  # a re-created Job would count twice
            self._uids.add(job.metadata.uid)
            self.created.append(name)
            self.existing.add(name)
        self.most = max(self.most, len(self.existing))

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def run_processes(run: str) -> list[int]:
    """Host pids of processes started for `run` (the local node runs pods as processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"DOCRELAY_RUN={run}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


# --- code under test -------------------------------------------------------------------------

CODE_OK = """
def lambda_handler(event, context):
    print("exporting", event["document_identifier"], "attempt", event["attempt"])
    return {"summary": "created bill INV-1042"}
"""


# --- scenarios -------------------------------------------------------------------------------


def test_success(api: client.ApiClient, namespace: str, tenant: Tenant) -> None:
    make_integration(api, namespace, "ok", CODE_OK)
    name = create_run(api, namespace, "ok", "doc-42")
    status = wait_finished(api, namespace, name)
    assert status["phase"] == "Succeeded", status
    assert status["attempt"] == 1
    assert status["resultSummary"] == "created bill INV-1042"
    assert "exporting doc-42 attempt 1" in status["logTail"]
    assert "exporting doc-42 attempt 1" in stored_log(api, namespace, name, 1)


CODE_RAISES = """
def lambda_handler(event, context):
    total = {}["total"]
"""

CODE_FLAKY = """
class DownstreamError(Exception):
    def __init__(self, status_code):
        super().__init__(f"downstream answered {status_code}")
        self.status_code = status_code

def lambda_handler(event, context):
    if event["attempt"] == 1:
        raise DownstreamError(503)
    return {"summary": f"exported on attempt {event['attempt']}"}
"""

CODE_ALWAYS_429 = """
import urllib.error

def lambda_handler(event, context):
    print("calling downstream, attempt", event["attempt"])
    raise urllib.error.HTTPError("https://api.example.com/bills", 429, "Too Many Requests",
                                 None, None)
"""

CODE_LOOP = """
def lambda_handler(event, context):
    print("looping", flush=True)
    while True:
        pass
"""

CODE_HOG = """
def lambda_handler(event, context):
    chunks = []
    while True:
        chunks.append(b"x" * (8 * 1024 * 1024))
"""

FAST_RETRY = {"maxAttempts": 3, "backoffBaseSeconds": 1, "backoffCapSeconds": 2}


def test_outcomes_retries_and_dead_letters(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    jobs = JobWatch(api, ns)
    try:
        make_integration(api, ns, "raises", CODE_RAISES, retry=FAST_RETRY)
        make_integration(api, ns, "flaky", CODE_FLAKY, retry=FAST_RETRY)
        make_integration(api, ns, "busy", CODE_ALWAYS_429, retry=FAST_RETRY)
        make_integration(api, ns, "loop", CODE_LOOP, timeoutSeconds=3, retry={"maxAttempts": 1})
        make_integration(
            api,
            ns,
            "hog",
            CODE_HOG,
            retry={"maxAttempts": 1},
            resources={"limits": {"memory": "96Mi"}, "requests": {"memory": "64Mi"}},
        )
        raises = create_run(api, ns, "raises")
        flaky = create_run(api, ns, "flaky")
        busy = create_run(api, ns, "busy", "doc-busy")
        loop = create_run(api, ns, "loop")
        hog = create_run(api, ns, "hog")

        # The code's own exception: Failed at once, not retried.
        status = wait_finished(api, ns, raises)
        assert status["phase"] == "Failed", status
        assert (status["errorClass"], status["exceptionType"]) == ("CodeError", "KeyError")
        assert status["errorMessage"] == "KeyError: 'total'"
        assert status["retryable"] is False and status["attempt"] == 1

        # 503 from downstream on attempt 1: retried after a backoff, then succeeded.
        status = wait_finished(api, ns, flaky)
        assert status["phase"] == "Succeeded", status
        assert status["attempt"] == 2
        assert status["resultSummary"] == "exported on attempt 2"
        assert "DownstreamError: downstream answered 503" in stored_log(api, ns, flaky, 1)
        events = client.CoreV1Api(api).list_namespaced_event(
            ns, field_selector=f"involvedObject.name={flaky},reason=RetryScheduled"
        )
        assert events.items and "TransientError" in events.items[0].message

        # 429 on every attempt: dead-lettered after maxAttempts, document and logs kept.
        status = wait_finished(api, ns, busy)
        assert status["phase"] == "DeadLettered", status
        assert status["attempt"] == 3 and status["errorClass"] == "TransientError"
        assert "HTTP Error 429" in status["errorMessage"]
        assert get_run(api, ns, busy)["spec"]["documentIdentifier"] == "doc-busy"
        assert "calling downstream, attempt 3" in stored_log(api, ns, busy, 3)

        # Fixed code, then a replay of the dead letter with the current revision succeeds.
        before = custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "integrations", "busy"
        )["status"]["deployedRevision"]
        custom(api).patch_namespaced_custom_object(
            GROUP, VERSION, ns, "integrations", "busy", {"spec": {"code": CODE_OK}}
        )
        eventually(
            lambda: custom(api).get_namespaced_custom_object(
                GROUP, VERSION, ns, "integrations", "busy"
            )["status"]["deployedRevision"],
            lambda deployed: deployed != before,
            "the fixed code to be deployed",
        )
        out = docrelay("replay", "busy", "--revision", "current", "-n", ns).stdout
        assert out.startswith(f"{busy} replayed as ")
        replayed = out.split()[-1]
        assert get_run(api, ns, replayed)["spec"]["replayOf"] == busy
        assert wait_finished(api, ns, replayed)["phase"] == "Succeeded"
        assert "exporting doc-busy" in stored_log(api, ns, replayed, 1)

        # An endless loop: TimedOut within timeout + 10 s, and no process left behind.
        status = wait_finished(api, ns, loop)
        assert status["phase"] == "TimedOut", status
        assert status["errorClass"] == "Timeout"
        started = time.mktime(time.strptime(status["startTime"], "%Y-%m-%dT%H:%M:%SZ"))
        ended = time.mktime(time.strptime(status["completionTime"], "%Y-%m-%dT%H:%M:%SZ"))
        assert ended - started <= 3 + 10
        assert "looping" in stored_log(api, ns, loop, 1)
        eventually(lambda: run_processes(loop), lambda pids: pids == [], "no process of loop")

        # A memory hog: killed at its limit, classified as OutOfMemory.
        status = wait_finished(api, ns, hog)
        assert status["errorClass"] == "OutOfMemory", status
        assert status["phase"] == "DeadLettered"  # retryable, and its only attempt is used

        # One Job per attempt, and every Job deleted once its log was stored.
        assert sorted(jobs.created) == sorted(
            [
                f"{raises}-1",
                f"{flaky}-1",
                f"{flaky}-2",
                f"{busy}-1",
                f"{busy}-2",
                f"{busy}-3",
                f"{replayed}-1",
                f"{loop}-1",
                f"{hog}-1",
            ]
        )
        eventually(lambda: jobs.existing, lambda e: not e, "every Job to be deleted")

        # The Integration's status counts the outcomes.
        counted = eventually(
            lambda: custom(api).get_namespaced_custom_object(
                GROUP, VERSION, ns, "integrations", "busy"
            )["status"],
            lambda s: (s.get("runCounts") or {}).get("succeeded") == 1,
            "the dead letter and its replay counted",
        )
        assert counted["runCounts"]["deadLettered"] == 1
        assert counted["lastRun"] == {
            "name": replayed,
            "phase": "Succeeded",
            "completionTime": get_run(api, ns, replayed)["status"]["completionTime"],
        }
        assert counted["consecutiveFailures"] == 0  # the success reset it
        assert counted["activeRuns"] == 0
    finally:
        jobs.stop()


CODE_SLOW = """
import time

def lambda_handler(event, context):
    print("working on", event["document_identifier"], flush=True)
    time.sleep(1.5)
    return {"summary": "done " + event["document_identifier"]}
"""


def test_concurrency_gate_and_duplicates(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "gate", CODE_SLOW, maxConcurrency=3)
    jobs = JobWatch(api, ns)
    try:
        names = []
        for i in range(20):
            body = run_manifest(ns, "gate", f"doc-{i:02d}")
            custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns", body)
            names.append(body["metadata"]["name"])
        # The same run again: the API server refuses it (same name), so still one run.
        body = get_run(api, ns, names[0])
        duplicate = run_manifest(ns, "gate", "doc-00", body["spec"]["eventId"])
        assert duplicate["metadata"]["name"] == names[0]
        with pytest.raises(client.ApiException) as refused:
            custom(api).create_namespaced_custom_object(
                GROUP, VERSION, ns, "integrationruns", duplicate
            )
        assert refused.value.status == 409
        for name in names:
            assert wait_finished(api, ns, name, 180)["phase"] == "Succeeded"
        assert jobs.most <= 3, jobs.most
        assert sorted(jobs.created) == sorted(f"{n}-1" for n in names)
        # First in, first out: a run created in an earlier second never starts after one
        # created later (creationTimestamp has whole seconds, the finest order the API keeps).
        runs = [get_run(api, ns, n) for n in names]
        for a in runs:
            for b in runs:
                if a["metadata"]["creationTimestamp"] < b["metadata"]["creationTimestamp"]:
                    assert a["status"]["startTime"] <= b["status"]["startTime"], (a, b)
        # The Integration's counters follow each run's final status.
        eventually(
            lambda: custom(api).get_namespaced_custom_object(
                GROUP, VERSION, ns, "integrations", "gate"
            )["status"],
            lambda s: (s.get("runCounts") or {}).get("succeeded") == 20 and s["activeRuns"] == 0,
            "20 succeeded runs counted",
        )
    finally:
        jobs.stop()


CODE_SLEEPS = """
import time

def lambda_handler(event, context):
    print("started", flush=True)
    time.sleep(8)
    print("finished", flush=True)
    return {"summary": "slept"}
"""


def test_operator_killed_mid_run(api: client.ApiClient, namespace: str, tenant: Tenant) -> None:
    ns = namespace
    make_integration(api, ns, "sleepy", CODE_SLEEPS)
    jobs = JobWatch(api, ns)
    try:
        name = create_run(api, ns, "sleepy")
        eventually(
            lambda: get_run(api, ns, name),
            lambda o: (o.get("status") or {}).get("phase") == "Running",
            "the run to be running",
        )
        # While it runs, `docrelay logs` reads the live log from the pod.
        eventually(
            lambda: docrelay("logs", name, "-n", ns).stdout,
            lambda out: "started" in out,
            "the live log",
        )
        assert tenant.operator is not None
        tenant.operator.process.kill()  # SIGKILL: no cleanup, no last status write
        tenant.operator.process.wait()
        tenant.operator.log.close()
        tenant.operator = None
        time.sleep(2)
        tenant.start()
        status = wait_finished(api, ns, name)
        assert status["phase"] == "Succeeded", status
        assert status["attempt"] == 1
        assert jobs.created == [f"{name}-1"]
        assert "finished" in stored_log(api, ns, name, 1)
    finally:
        jobs.stop()


def test_logs_cli_and_masking(
    api: client.ApiClient, namespace: str, tenant: Tenant, tmp_path: Path
) -> None:
    ns = namespace
    value = canary()
    kubectl(
        "apply", "-n", ns, "-f", "-", stdin=plaintext_secret("canary", "leaky", "CANARY", value)
    )
    # Until the broker lands the runner cannot decrypt its env, so the code holds the canary
    # itself and prints it in every form; the operator masks the value of the secret the run
    # received (opened from the IntegrationSecret) in the stored log.
    code = f"""
import base64, json, sys, time, urllib.parse
VALUE = {value!r}

def lambda_handler(event, context):
    print("raw:", VALUE)
    print("base64:", base64.b64encode(VALUE.encode()).decode())
    print("json:", json.dumps({{"key": VALUE}}))
    print("url:", urllib.parse.quote_plus(VALUE))
    print("quote:", urllib.parse.quote(VALUE))
    print("bytes:", VALUE.encode())
    sys.stdout.write("split: " + VALUE[:7])
    sys.stdout.flush()
    time.sleep(0.2)
    sys.stdout.write(VALUE[7:] + "\\n")
    sys.stdout.flush()
    time.sleep(3)
    print("the env holds", len(__import__("os").environ["CANARY"]), "characters of ciphertext")
    raise RuntimeError("failed with " + VALUE)
"""
    make_integration(api, ns, "leaky", code, secrets=["CANARY"], retry={"maxAttempts": 1})
    secret = checked(api, ns, "canary")
    assert secret["status"]["state"] == "Active"
    name = create_run(api, ns, "leaky")

    # While it runs: the per-run Secret holds only ciphertext under the one-run key.
    env = eventually(
        lambda: client.CoreV1Api(api).read_namespaced_secret(f"{name}-1-env", ns),
        lambda s: s is not None,
        "the per-run Secret",
    )
    sealed = base64.b64decode(env.data["CANARY"]).decode()
    assert sealed.startswith("v1.")
    assert_clean(sealed, [value], "the per-run Secret")
    keys = client.CoreV1Api(api).read_namespaced_secret(
        "docrelay-sealing-keys", keys_namespace(ns)
    )
    ring = KeyRing.from_secret_data({k: base64.b64decode(v) for k, v in keys.data.items()})
    run_uid = get_run(api, ns, name)["metadata"]["uid"]
    opened = decrypt_value(ring.run_key(run_uid, 1), run_uid, 1, "CANARY", sealed)
    assert opened.decode() == value

    status = wait_finished(api, ns, name)
    assert status["phase"] == "Failed"
    assert status["secretVersions"] == [
        {"key": "CANARY", "secret": "canary", "fingerprint": secret["status"]["fingerprint"]}
    ]
    # Logs are read after the Job and pod are gone.
    eventually(lambda: jobs_of(api, ns, name), lambda j: j == [], "the Job to be deleted")
    eventually(
        lambda: client.CoreV1Api(api).list_namespaced_pod(ns).items,
        lambda pods: not pods,
        "the pod to be deleted",
    )
    stored = stored_log(api, ns, name, 1)
    out = docrelay("logs", name, "-n", ns).stdout
    assert out == stored
    for line in ("raw: ***", "base64: ***", "url: ***", "quote: ***", "split: ***"):
        assert line in out, out
    assert_clean(out, [value], "the output of docrelay logs")
    assert_clean(json.dumps(status), [value], "the run's status")
    assert "failed with ***" in status["errorMessage"]
    assert "characters of ciphertext" in out

    listing = docrelay("runs", "leaky", "-n", ns).stdout
    assert name in listing and "Failed" in listing and "RuntimeError: failed with ***" in listing


def test_test_command(api: client.ApiClient, namespace: str, tenant: Tenant) -> None:
    ns = namespace
    make_integration(api, ns, "tried", CODE_OK)
    ok = docrelay("test", "tried", "--document", "doc-7", "-n", ns)
    assert "exporting doc-7 attempt 1" in ok.stdout
    assert "Succeeded: created bill INV-1042" in ok.stdout
    make_integration(api, ns, "broken", CODE_RAISES)
    failed = docrelay("test", "broken", "--document", "doc-8", "-n", ns, expect=1)
    assert "Failed: CodeError: KeyError: 'total'" in failed.stdout
    status = custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "integrations", "broken")
    assert "runCounts" not in status["status"]  # test runs are not counted


def test_pause_after_consecutive_failures(
    api: client.ApiClient, namespace: str, pausing_tenant: Tenant
) -> None:
    ns = namespace
    make_integration(api, ns, "fragile", CODE_RAISES)
    for document in ("d1", "d2"):
        assert wait_finished(api, ns, create_run(api, ns, "fragile", document))["phase"] == "Failed"

    def integration_status() -> dict[str, Any]:
        obj = custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "integrations", "fragile"
        )
        return dict(obj["status"])

    def paused(status: dict[str, Any]) -> str | None:
        found = [c for c in status.get("conditions", []) if c["type"] == "Paused"]
        return found[0]["status"] if found else None

    status = eventually(integration_status, lambda s: paused(s) == "True", "the pause")
    assert status["consecutiveFailures"] == 2
    # The Event is posted right after the status: it may trail the condition by a moment.
    eventually(
        lambda: client.CoreV1Api(api).list_namespaced_event(
            ns, field_selector="involvedObject.name=fragile,reason=Paused"
        ),
        lambda events: bool(events.items),
        "a Paused Event about the integration",
    )
    # The pause is a condition, never a write to the user's spec (GitOps stays quiet): the
    # Integration's spec.suspend is still false, as it was admitted, and its generation is
    # still the one it was created at.
    paused_obj = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", "fragile"
    )
    assert paused_obj["spec"]["suspend"] is False
    assert paused_obj["metadata"]["generation"] == 1
    waiting = create_run(api, ns, "fragile", "d3")
    time.sleep(4)
    assert get_run(api, ns, waiting)["status"]["phase"] == "Queued"  # waits, not lost
    assert "resumed" in docrelay("resume", "fragile", "-n", ns).stdout
    assert wait_finished(api, ns, waiting)["phase"] == "Failed"
    assert paused(integration_status()) == "False"

    # The metrics count the outcomes by phase (labels: names and phases only).
    import httpx

    port = pausing_tenant.env["DOCRELAY_METRICS_PORT"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    finished = {
        (sample.labels["integration"], sample.labels["phase"]): sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "docrelay_runs_finished"
        for sample in family.samples
        if sample.name == "docrelay_runs_finished_total"
    }
    assert finished == {("fragile", "Failed"): 3.0}
    assert "docrelay_run_duration_seconds_bucket" in metrics


def test_operator_killed_between_creating_the_job_and_recording_it(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    """The window exactly-once rests on: the attempt's Job exists but the run's status does not
    say so (the operator died right after the create). A restarted operator must find that
    Job (its name is the attempt's), make no second one, and carry the run to its end."""
    ns = namespace
    make_integration(api, ns, "sleepy", CODE_SLEEPS)
    # The state a crash after the create leaves, made by the real operator: it may create the
    # Job but every write of the run's status is refused.
    granted = withhold_from_operator(api, ns, "integrationruns/status")
    jobs = JobWatch(api, ns)
    try:
        name = create_run(api, ns, "sleepy")
        assert tenant.operator is not None
        operator = tenant.operator
        # It tried again (its poller) and found the Job it had made: still not recorded.
        eventually(
            operator.output,
            lambda out: f"run {ns}/{name}: attempt 1 already started" in out,
            "the operator to retry the start and find its Job",
        )
        assert jobs.created == [f"{name}-1"]
        assert "attempt" not in (get_run(api, ns, name).get("status") or {})

        operator.process.kill()  # SIGKILL, in that window
        operator.process.wait()
        operator.log.close()
        tenant.operator = None
        operator_rules(api, ns, granted)
        tenant.start()
        status = wait_finished(api, ns, name)
        assert status["phase"] == "Succeeded", status
        assert (status["attempt"], status["jobName"]) == (1, f"{name}-1")
        assert jobs.created == [f"{name}-1"]  # exactly one Job, ever
        assert "finished" in stored_log(api, ns, name, 1)
    finally:
        jobs.stop()
