"""The broker's pure checks, its once-per-pod key release and its document rule, with a fake
API (the real API server is in tests/cluster/test_broker.py)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from docrelay.gateway import broker as b
from docrelay.gateway.settings import GatewaySettings
from docrelay.sealing import KeyRing

EXTRA = {b.POD_NAME_EXTRA: ["run-1-abcde"], b.POD_UID_EXTRA: ["pod-uid-1"]}
USER = "system:serviceaccount:tenant-a:docrelay-run"


def review(**changes: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "authenticated": True,
        "audiences": ["docrelay-broker"],
        "user": {"username": USER, "extra": EXTRA},
    }
    status.update(changes)
    return status


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ({"authenticated": False}, 401),
        (review(audiences=["other"]), 401),
        (review(user={"username": "alice", "extra": EXTRA}), 401),
        (review(user={"username": "system:serviceaccount:tenant-a:default", "extra": EXTRA}), 403),
        (review(user={"username": USER, "extra": {}}), 401),
    ],
)
def test_identity_refusals(status: dict[str, Any], code: int) -> None:
    with pytest.raises(b.Refusal) as refused:
        b.identity_from_review(status)
    assert refused.value.status == code


def test_identity_of_a_run_pod() -> None:
    assert b.identity_from_review(review()) == ("tenant-a", "run-1-abcde", "pod-uid-1")


def pod(**meta: Any) -> dict[str, Any]:
    metadata = {
        "uid": "pod-uid-1",
        "labels": {b.RUN_LABEL: "run", b.ATTEMPT_LABEL: "2"},
        "ownerReferences": [{"kind": "Job", "name": "run-2", "uid": "job-uid"}],
        **meta,
    }
    return {"metadata": metadata, "status": {"phase": "Running"}}


def test_pod_job_run_chain() -> None:
    assert b.check_pod(pod(), "pod-uid-1") == ("run-2", "run", 2)
    for bad, code in (
        (None, 401),
        (pod(uid="other"), 401),
        (pod(deletionTimestamp="2026-01-01T00:00:00Z"), 403),
        (pod(labels={}), 403),
        (pod(ownerReferences=[]), 403),
    ):
        with pytest.raises(b.Refusal) as refused:
            b.check_pod(bad, "pod-uid-1")
        assert refused.value.status == code
    job = {"metadata": {"ownerReferences": [{"kind": "IntegrationRun", "name": "run", "uid": "u"}]}}
    assert b.check_job(job, "run") == "u"
    with pytest.raises(b.Refusal):
        b.check_job(job, "another-run")
    done = {**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    with pytest.raises(b.Refusal):
        b.check_job(done, "run")
    run = {
        "metadata": {"uid": "u"},
        "spec": {"integration": "orders", "documentIdentifier": "doc", "test": True},
        "status": {"phase": "Running", "attempt": 2, "jobName": "run-2"},
    }
    assert b.check_run(run, "u", "run-2", 2) == ("orders", "doc", True)
    for phase in ("Succeeded", "Failed", "Queued", "Cancelled"):
        with pytest.raises(b.Refusal, match="not active"):
            b.check_run({**run, "status": {**run["status"], "phase": phase}}, "u", "run-2", 2)
    with pytest.raises(b.Refusal, match="current attempt"):
        b.check_run(run, "u", "run-1", 1)
    with pytest.raises(b.Refusal, match="gone"):
        b.check_run(run, "another-uid", "run-2", 2)


@pytest.mark.parametrize(
    ("status", "attempt", "behind"),
    [
        ({}, 1, True),  # the Job exists, the run's status not yet written
        ({"phase": "Queued"}, 1, True),
        ({"phase": "Running", "attempt": 1}, 2, True),  # a retry's Job before its status
        ({"phase": "Pending", "attempt": 2}, 2, False),
        ({"phase": "Failed", "attempt": 2}, 2, False),  # finished: refuse at once
    ],
)
def test_the_broker_waits_only_for_a_status_that_trails_the_job(
    status: dict[str, Any], attempt: int, behind: bool
) -> None:
    assert b.status_behind({"metadata": {"uid": "u"}, "status": status}, attempt) is behind
    assert b.status_behind(None, attempt) is False  # a gone run is refused at once


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer " + "x" * 9000])
def test_bearer_token_refusals(header: str | None) -> None:
    with pytest.raises(b.Refusal) as refused:
        b.bearer_token(header)
    assert refused.value.status == 401


def test_rate_limiter_per_run() -> None:
    now = [0.0]
    limiter = b.RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.allow(("ns", "a")) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(("ns", "b"))  # another run has its own bucket
    now[0] = 0.5
    assert limiter.allow(("ns", "a")) and not limiter.allow(("ns", "a"))


CALLER = b.Caller(
    "tenant-a", "pod", "pod-uid-1", "run-1", "run", "run-uid", 1, "orders", "d1", False
)


class FakeKube:
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.objects: dict[str, Any] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {
            ("tenant-a-docrelay-keys", "docrelay-sealing-keys"): {
                k: base64.b64encode(v).decode() for k, v in ring.to_secret_data().items()
            }
        }

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get((namespace, name))

    async def create_json(self, path: str, body: dict[str, Any]) -> bool:
        key = f"{path}/{body['metadata']['name']}"
        if key in self.objects:
            return False
        self.objects[key] = body
        return True

    async def get_json(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)


def test_key_released_once_per_pod_even_across_replicas() -> None:
    ring = KeyRing.create()
    kube = FakeKube(ring)
    settings = GatewaySettings(namespace="tenant-a")
    first, second = b.Broker(settings, kube), b.Broker(settings, kube)  # type: ignore[arg-type]
    answer = asyncio.run(first.release_key(CALLER, datetime(2026, 1, 1, tzinfo=UTC)))
    assert base64.urlsafe_b64decode(answer["key"]) == ring.run_key("run-uid", 1)
    assert answer == {"key": answer["key"], "runUid": "run-uid", "attempt": 1}
    for replica in (first, second):  # in memory, and through the create-only record
        with pytest.raises(b.Refusal) as refused:
            asyncio.run(replica.release_key(CALLER))
        assert refused.value.status == 403
    (record,) = kube.objects.values()
    assert record["metadata"]["name"] == "docrelay-key-pod-uid-1"
    assert record["metadata"]["ownerReferences"][0]["uid"] == "run-uid"
    assert answer["key"] not in str(record)


def test_document_rule() -> None:
    kube = FakeKube(KeyRing.create())
    broker = b.Broker(GatewaySettings(namespace="tenant-a"), kube)  # type: ignore[arg-type]
    documents = {
        "d1": {"meta": {"workspace": {"identifier": "ws"}}},
        "d2": {"meta": {"workspace": {"identifier": "ws"}}},
        "d3": {"meta": {"workspace": "elsewhere"}},
    }
    kube.objects["/apis/docrelay.io/v1alpha1/namespaces/tenant-a/integrations/orders"] = {
        "spec": {"workspace": "ws"}
    }

    class Platform:
        async def __aenter__(self) -> Platform:
            return self

        async def __aexit__(self, *_: Any) -> None:
            pass

        async def get_document(self, identifier: str) -> dict[str, Any]:
            return documents[identifier]

    async def platform(_: str) -> Platform:
        return Platform()

    broker._platform = platform  # type: ignore[assignment, method-assign]
    assert asyncio.run(broker.document(CALLER, "d1")) == documents["d1"]
    with pytest.raises(b.Refusal) as refused:
        asyncio.run(broker.document(CALLER, "d2"))  # not a test run: its own document only
    assert refused.value.status == 403
    test_caller = b.Caller(**{**CALLER.__dict__, "test": True})
    assert asyncio.run(broker.document(test_caller, "d2")) == documents["d2"]
    with pytest.raises(b.Refusal) as refused:
        asyncio.run(broker.document(test_caller, "d3"))  # another workspace
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("spec", "identifier", "allowed"),
    [
        ({"documentType": "tVpGRBWd"}, "tVpGRBWd", True),
        ({"documentType": "tVpGRBWd"}, "other", False),
        ({"documentType": "tVpGRBWd"}, "tvpgrbwd", False),
        ({}, "tVpGRBWd", False),  # the Integration is gone or has no type
        ({"documentType": ""}, "", False),
    ],
)
def test_document_type_rule(spec: dict[str, Any], identifier: str, allowed: bool) -> None:
    if allowed:
        b.check_document_type(spec, identifier)
        return
    with pytest.raises(b.Refusal) as refused:
        b.check_document_type(spec, identifier)
    assert refused.value.status == 403


def test_document_type_schema_only_for_the_integrations_type() -> None:
    kube = FakeKube(KeyRing.create())
    broker = b.Broker(GatewaySettings(namespace="tenant-a"), kube)  # type: ignore[arg-type]
    integration = "/apis/docrelay.io/v1alpha1/namespaces/tenant-a/integrations/orders"
    kube.objects[integration] = {"spec": {"workspace": "ws", "documentType": "invoice"}}
    asked: list[str] = []

    class Platform:
        async def __aenter__(self) -> Platform:
            return self

        async def __aexit__(self, *_: Any) -> None:
            pass

        async def get_document_type_schema(self, identifier: str) -> dict[str, Any]:
            asked.append(identifier)
            if identifier == "invoice":
                return {"type": "object", "properties": {"n": {"type": "string"}}}
            raise b.NotFound("no such type")

    async def platform(namespace: str) -> Platform:
        assert namespace == "tenant-a"  # the tenant's credentials
        return Platform()

    broker._platform = platform  # type: ignore[assignment, method-assign]
    schema = asyncio.run(broker.document_type_schema(CALLER, "invoice"))
    assert schema["properties"] == {"n": {"type": "string"}}
    for caller in (CALLER, b.Caller(**{**CALLER.__dict__, "test": True})):  # test runs too
        with pytest.raises(b.Refusal) as refused:
            asyncio.run(broker.document_type_schema(caller, "resume"))
        assert refused.value.status == 403
    del kube.objects[integration]
    with pytest.raises(b.Refusal) as refused:
        asyncio.run(broker.document_type_schema(CALLER, "invoice"))
    assert refused.value.status == 403
    assert asked == ["invoice"]  # refused before the platform is asked


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"namespace": "tenant-a"}, "tenant-a-docrelay-keys"),
        ({"all_namespaces": True, "operator_namespace": "system"}, "system-docrelay-keys"),
        ({"namespace": "tenant-a", "keys_namespace": "vault"}, "vault"),
        ({"all_namespaces": True}, None),
    ],
)
def test_keys_namespace(given: dict[str, Any], expected: str | None) -> None:
    """The broker reads the key ring where the operator keeps it, never the tenant's own
    namespace (docs/secrets.md)."""
    assert b.keys_namespace(GatewaySettings(**given)) == expected


def test_no_key_ring_in_the_tenant_namespace() -> None:
    ring = KeyRing.create()
    kube = FakeKube(ring)
    kube.secrets = {("tenant-a", "docrelay-sealing-keys"): kube.secrets.popitem()[1]}
    broker = b.Broker(GatewaySettings(namespace="tenant-a"), kube)  # type: ignore[arg-type]
    with pytest.raises(b.KeysMissing):
        asyncio.run(broker.release_key(CALLER))
