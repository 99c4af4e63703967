"""High availability: two operator processes with --leader-elect, one active over the Lease
docrelay-operator; the active one is SIGKILLed in the middle of a burst of runs and the standby
takes over. What a user sees: every run of the burst Succeeded, on its first attempt, with
exactly one Job; none lost, none run twice (docs/operator.md, "High availability")."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from devkit import rbac
from tests.cluster.harness import (
    Operator,
    Tenant,
    cleanup_cluster_scoped,
    create_run,
    eventually,
    free_port,
    get_run,
    make_integration,
    wait_finished,
)

BURST = 24
CODE = "def lambda_handler(event, context):\n    return {'summary': 'exported'}\n"


class JobsCreated:
    """Every Job created in the namespace (a Job made twice, even under one name, counts twice)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.batch, self.namespace = client.BatchV1Api(api), namespace
        self.created: list[str] = []
        self.seen_at: list[float] = []  # monotonic, per created
        self._uids: set[str] = set()
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            try:
                for event in self._watch.stream(self.batch.list_namespaced_job, self.namespace):
                    job = event["object"]
                    if event["type"] != "DELETED" and job.metadata.uid not in self._uids:
                        self._uids.add(job.metadata.uid)
                        self.created.append(job.metadata.name)
                        self.seen_at.append(time.monotonic())
            except Exception:  # a watch ends now and then: list again, keep counting
                if self._stopped:
                    return
                time.sleep(0.2)

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def lease(api: client.ApiClient, namespace: str) -> Any:
    return client.CoordinationV1Api(api).read_namespaced_lease("docrelay-operator", namespace).spec


def holder_pid(api: client.ApiClient, namespace: str) -> int | None:
    """The pid in the holder's identity (<host>-<pid>-<random>)."""
    spec = lease(api, namespace)
    parts = (spec.holder_identity or "").rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 else None


def active_webhook_port(tenant: Tenant) -> str:
    """The port the first process serves its webhooks on (Tenant.start chose it)."""
    assert tenant.operator is not None
    args = [str(a) for a in tenant.operator.process.args]  # type: ignore[union-attr]
    return args[args.index("--webhook-port") + 1]


def certificate(port: int) -> bytes | None:
    """The DER certificate served on a loopback port (None: nothing answers TLS there)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None


def test_the_active_replica_killed_mid_burst(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    rbac.grant(api, ns, "docrelay-operator", rbac.LEASE_RULES, role="docrelay-operator-lease")
    tenant = Tenant(api, ns, tmp_path, extra=["--leader-elect"])
    standby: Operator | None = None
    jobs = JobsCreated(api, ns)
    try:
        tenant.start()  # the first process: the Lease is free, it becomes active
        assert tenant.operator is not None
        active = tenant.operator
        eventually(
            lambda: holder_pid(api, ns), lambda pid: pid == active.process.pid, "the first holder"
        )
        standby_port = free_port()
        standby = Operator(
            tenant.kubeconfig,
            tmp_path / "operator-standby.log",
            [
                "--leader-elect",
                "--webhook-host",
                "127.0.0.1",
                "--webhook-port",
                str(standby_port),
                "--key-check-seconds",
                "1",
            ],
        )
        standby.wait_healthy()  # alive (its standby /healthz), not acting
        # Its webhook port is the active process's, passed through: the same certificate.
        active_port = int(active_webhook_port(tenant))
        eventually(
            lambda: certificate(standby_port),
            lambda cert: cert == certificate(active_port),
            "the standby's webhook port to reach the active process",
        )
        make_integration(api, ns, "ha", CODE, maxConcurrency=4)

        names: list[str] = []
        killed_at = 0.0
        for i in range(BURST):
            names.append(create_run(api, ns, "ha", f"doc{i}"))
            if i == BURST // 3:  # some runs done or under way, some only created
                eventually(
                    lambda: len(jobs.created), lambda n: n >= 2, "the active replica at work"
                )
                active.process.kill()  # SIGKILL: no lease given back, no last write
                active.process.wait()
                killed_at = time.monotonic()
            time.sleep(0.1)
        eventually(
            lambda: holder_pid(api, ns),
            lambda pid: pid == standby.process.pid,
            "the standby to take the lease over",
        )
        failover = time.monotonic() - killed_at
        eventually(
            lambda: [t for t in jobs.seen_at if t > killed_at],
            bool,
            "a Job made by the new active process",
        )
        first_job = min(t for t in jobs.seen_at if t > killed_at) - killed_at
        # A figure, not an assertion (no timed assertions): docs/operator.md records it.
        print(
            f"failover: lease taken over {failover:.1f} s and first Job {first_job:.1f} s "
            "after the SIGKILL"
        )
        spec = lease(api, ns)
        assert spec.lease_duration_seconds == 8
        assert spec.lease_transitions >= 1

        for name in names:
            status = wait_finished(api, ns, name)
            assert status["phase"] == "Succeeded", (name, status)
            assert status["attempt"] == 1, (name, status)
        # Exactly one Job per run: none lost, none run twice across the failover.
        eventually(lambda: sorted(jobs.created), lambda c: len(c) >= BURST, "every Job seen")
        assert sorted(jobs.created) == sorted(f"{name}-1" for name in names)
        assert standby.process.poll() is None
        assert "lost the operator lease" not in standby.output()
        assert all(get_run(api, ns, n)["status"]["phase"] == "Succeeded" for n in names)
    finally:
        jobs.stop()
        if standby is not None:
            standby.stop()
            print(f"\n--- standby log ---\n{standby.output()}")
        tenant.stop()
        cleanup_cluster_scoped(api, ns)
        print(f"\n--- first operator log ---\n{tenant.log_text()}")
