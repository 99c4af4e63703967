"""The run builders against golden files, and the hardening each Job must have.

Regenerate the golden files after an intended change with DOCRELAY_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from docrelay.builders.run import (
    RunAttempt,
    build_log_config_map,
    build_run_job,
    build_run_secret,
    build_run_service_account,
)
from docrelay.runner.envcrypt import EnvDecryptError, decrypt_value, encrypt_value

GOLDEN = Path(__file__).parent / "golden"

ATTEMPT = RunAttempt(
    namespace="tenant-a",
    run="orders-0123456789abcde",
    run_uid="6f1c2d3e-0000-4000-8000-000000000001",
    attempt=2,
    integration="orders",
    revision="orders-a1b2c3d4e5",
    code_config_map="orders-a1b2c3d4e5-code",
    code_key="handler.py",
    code_hash="sha256:" + "ab" * 32,
    event={"document_identifier": "doc-1", "attempt": 2},
    idempotency_key="idem-" + "0" * 48,
    timeout_seconds=120,
    python="3.12",
    runtime_class_name="gvisor",
    limits={"memory": "256Mi"},
)


def golden(name: str, value: dict[str, Any]) -> None:
    path = GOLDEN / name
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if os.environ.get("DOCRELAY_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden file {path.name}; set DOCRELAY_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed; set DOCRELAY_UPDATE_GOLDEN=1 if intended"


def test_job_golden() -> None:
    golden("run_job.json", build_run_job(ATTEMPT, ("API_KEY",)))


def test_secret_golden() -> None:
    golden("run_secret.json", build_run_secret(ATTEMPT, {"API_KEY": "v1.c2VhbGVk"}))


def test_service_account_golden() -> None:
    golden("run_service_account.json", build_run_service_account("tenant-a"))


def test_log_config_map_golden() -> None:
    golden(
        "run_log_config_map.json",
        build_log_config_map("tenant-a", ATTEMPT.run, ATTEMPT.run_uid, 2, "orders", b"gz"),
    )


def test_job_is_hardened() -> None:
    job = build_run_job(ATTEMPT, ("API_KEY",))
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] >= ATTEMPT.timeout_seconds
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "docrelay-run"
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] != 0
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}
    assert container["resources"]["requests"]["memory"] == "128Mi"
    assert container["command"] == ["python", "-m", "docrelay.runner"]
    assert pod["runtimeClassName"] == "gvisor"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"code", "tmp", "broker-token"}  # PSS restricted volume types only
    (token,) = volumes["broker-token"]["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == "docrelay-broker"
    assert token["serviceAccountToken"]["expirationSeconds"] <= 3600
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["code"]["readOnly"] is True and mounts["tmp"]["mountPath"] == "/tmp"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "IntegrationRun"
    assert job["metadata"]["name"] == "orders-0123456789abcde-2"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DOCRELAY_IDEMPOTENCY_KEY"] == ATTEMPT.idempotency_key
    assert container["envFrom"] == [{"secretRef": {"name": "orders-0123456789abcde-2-env"}}]


def test_no_secret_no_env_from() -> None:
    container = build_run_job(ATTEMPT)["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in container


def test_run_env_values_are_bound_to_run_attempt_and_name() -> None:
    key = bytes(range(32))
    sealed = encrypt_value(key, "uid-1", 1, "API_KEY", b"s3cret-value")
    assert sealed.startswith("v1.") and b"s3cret" not in base64.urlsafe_b64decode(sealed[3:])
    assert decrypt_value(key, "uid-1", 1, "API_KEY", sealed) == b"s3cret-value"
    for run_uid, attempt, name in (
        ("uid-2", 1, "API_KEY"),
        ("uid-1", 2, "API_KEY"),
        ("uid-1", 1, "OTHER"),
    ):
        with pytest.raises(EnvDecryptError):
            decrypt_value(key, run_uid, attempt, name, sealed)
    with pytest.raises(EnvDecryptError):
        decrypt_value(bytes(32), "uid-1", 1, "API_KEY", sealed)


def test_the_code_receives_the_platform_contract_event() -> None:
    from docrelay.builders.run import build_run_event
    from docrelay.models.integration import IntegrationSpec
    from docrelay.models.run import IntegrationRun

    run = IntegrationRun.model_validate({
        "apiVersion": "docrelay.io/v1alpha1", "kind": "IntegrationRun",
        "metadata": {"name": "invoices-0123456789abcde", "namespace": "tenant-a"},
        "spec": {"integration": "invoices", "documentIdentifier": "XqLmNoPa",
                 "trigger": "DocumentParseCompleted", "eventId": "evt-1",
                 "idempotencyKey": "idem-1", "test": True},
    })
    integration = IntegrationSpec.model_validate({
        "workspace": "mEFayXdO", "documentType": "tVpGRBWd",
        "trigger": "DocumentParseCompleted", "code": "def lambda_handler(e, c): pass\n",
    })
    event = build_run_event(run, integration, attempt=2)
    assert event == {
        "document_identifier": "XqLmNoPa", "trigger": "DocumentParseCompleted",
        "workspace": "mEFayXdO", "document_type": "tVpGRBWd", "event_id": "evt-1",
        "idempotency_key": "idem-1", "test_run": True, "dry_run": False, "attempt": 2,
        "run": "invoices-0123456789abcde", "integration": "invoices", "replay_of": None,
    }


NODE_ATTEMPT = dataclasses.replace(ATTEMPT, nodejs="20", code_key="handler.js")


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_a_nodejs_run_gets_the_node_runner_its_image_and_a_js_code_file() -> None:
    job = build_run_job(NODE_ATTEMPT, ("API_KEY",))
    container = _container(job)
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert container["command"] == ["node", "/opt/docrelay/node/runner.mjs"]
    assert container["image"] == "ghcr.io/docrelay/runner-node:20"
    assert env["DOCRELAY_CODE_PATH"] == "/var/run/docrelay/code/handler.js"
    assert "PYTHONUNBUFFERED" not in env and env["HOME"] == "/tmp"
    memory = next(e for e in container["env"] if e["name"] == "DOCRELAY_MEMORY_LIMIT_MIB")
    assert memory["valueFrom"]["resourceFieldRef"] == {
        "containerName": "run",
        "resource": "limits.memory",
        "divisor": "1Mi",
    }
    code = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]
    assert code["items"] == [{"key": "handler.js", "path": "handler.js"}]
    # The same hardening as a Python run: only the runner differs.
    assert container["securityContext"] == _container(build_run_job(ATTEMPT))["securityContext"]


@pytest.mark.parametrize(
    ("attempt", "images", "image"),
    [
        (NODE_ATTEMPT, {"nodejs20": "local/node-runner:20"}, "local/node-runner:20"),
        (NODE_ATTEMPT, {"nodejs22": "local/node-runner:22"}, "ghcr.io/docrelay/runner-node:20"),
        (ATTEMPT, {"python3.12": "registry.local/runner:3.12"}, "registry.local/runner:3.12"),
        (dataclasses.replace(ATTEMPT, image="mine/own:1"), {"python3.12": "x/y:1"}, "mine/own:1"),
    ],
)
def test_the_image_map_picks_the_image_per_runtime_and_spec_image_wins(
    attempt: RunAttempt, images: dict[str, str], image: str
) -> None:
    job = build_run_job(dataclasses.replace(attempt, images=images))
    assert _container(job)["image"] == image


def test_every_run_is_named_and_keyed_from_its_event_by_one_builder() -> None:
    """The gateway's runs, a person's test runs and the agent's: the same event makes the
    same name and idempotency key (a second create is the API server's 409); what each adds
    comes after what every run has."""
    from docrelay.builders.agent import build_test_run
    from docrelay.builders.run import new_run
    from docrelay.naming import idempotency_key, run_name

    run = new_run("ns", "int", "evt-1", "doc", "DocumentValidated", metadata={"labels": {"a": "b"}})
    assert run["metadata"] == {
        "name": run_name("int", "evt-1", "doc", "DocumentValidated"),
        "labels": {"a": "b"},
    }
    assert run["spec"] == {
        "integration": "int",
        "documentIdentifier": "doc",
        "trigger": "DocumentValidated",
        "eventId": "evt-1",
        "idempotencyKey": idempotency_key("ns", "int", "evt-1", "doc", "DocumentValidated"),
    }
    assert new_run("ns", "int", "evt-1", "doc", "DocumentValidated") == {**run, "metadata": {
        "name": run["metadata"]["name"]}}  # fmt: skip
    tested = build_test_run(
        namespace="ns", integration="int", revision="int-r1", document="doc",
        trigger="DocumentParseCompleted",
    )  # fmt: skip
    assert list(tested["spec"])[-3:] == ["test", "dryRun", "revision"]
    event_id = tested["spec"]["eventId"]
    key = idempotency_key("ns", "int", event_id, "doc", "DocumentParseCompleted")
    assert tested["spec"]["idempotencyKey"] == key
