"""The agent against the real control plane: code from instructions, fixes of failed runs, each
test-run before it is deployed (docs/agent.md).

The operator and the gateway (intake and run broker) run as subprocesses with the RBAC the docs
list; the LLM stand-in, the platform stand-in and the downstream sink run in this process over
real HTTP on 127.0.0.1. Run pods are local processes running `python -m docrelay.runner`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from devkit.cluster import Cluster
from devkit.standins.llm import Fault, LLMStandIn, Recorded, Reply, serving_llm
from devkit.standins.platform import PlatformState
from docrelay.gateway.signatures import sign_resthook
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Gateway,
    Sink,
    Tenant,
    canary,
    canary_crawl,
    cleanup_cluster_scoped,
    condition,
    create_run,
    custom,
    docrelay,
    eventually,
    get_integration,
    get_run,
    platform_secret,
    set_secret,
    sink_by_name,
    sink_egress,
    stop_stack,
    stored_log,
    tenant_gateway,
    wait_finished,
)
from tests.leakcheck import assert_clean

pytestmark = pytest.mark.cluster

WORKSPACE, DOCTYPE = "mEFayXdO", "tVpGRBWd"  # examples/documents: two invoices
HARBOURSIDE, NORTHWIND = "XqLmNoPa", "VbTrEwQz"
LLM_KEY = canary(header=True)  # sent in a header
SIGNING_KEY = b"agent-tests-signing-key-0123456789"
# Values of the example documents that must not reach a prompt (allow_document_values is off).
DOCUMENT_VALUES = (
    "INV-2025-0418",
    "Harbourside Office Supplies",
    "accounts@harbourside-supplies.example",
    "1902.84",
    "Northwind",
)


# What the agent adds to the operator's Role (docs/operator.md): it creates test runs.
@dataclass
class Stack:
    ns: str
    tenant: Tenant
    gateway: Gateway
    llm: LLMStandIn
    platform: PlatformState
    sink: str


def agent_env(base_url: str, **overrides: str) -> dict[str, str]:
    return {
        "DOCRELAY_AGENT_KIND": "openai",
        "DOCRELAY_AGENT_BASE_URL": base_url + "/v1",
        "DOCRELAY_AGENT_MODEL": "standin-model",
        "DOCRELAY_AGENT_API_KEY_SECRET": "docrelay-agent",
        "DOCRELAY_AGENT_POLL_SECONDS": "0.5",
        "DOCRELAY_AGENT_RETRY_SECONDS": "1",
        "DOCRELAY_AGENT_HTTP_ATTEMPTS": "2",
        "DOCRELAY_AGENT_BACKOFF_BASE_SECONDS": "0.1",
        "DOCRELAY_AGENT_BACKOFF_CAP_SECONDS": "0.2",
        **overrides,
    }


@pytest.fixture
def stack(
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    platform: PlatformState,
    sink: str,
) -> Iterator[Stack]:
    """Gateway + broker, the LLM stand-in, then the operator with the agent configured."""
    ns = namespace
    core = client.CoreV1Api(api)
    platform_secret(api, ns, platform)
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "docrelay-agent"}, "stringData": {"api-key": LLM_KEY}}
    )
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "docrelay-gateway-signing"},
            "data": {"resthook-current": base64.b64encode(SIGNING_KEY).decode()},
        },
    )
    gateway, runs_env = tenant_gateway(api, ns, tmp_path)
    with serving_llm(api_key=LLM_KEY) as (llm, server):
        tenant = Tenant(
            api,
            ns,
            tmp_path,
            env={
                **runs_env,
                **agent_env(server.base_url),
            },
        )
        try:
            gateway.wait_ready()
            tenant.start()
            yield Stack(ns, tenant, gateway, llm, platform, sink)
        finally:
            stop_stack(api, ns, tenant, gateway)
            for number, request in enumerate(llm.requests, 1):
                print(f"\n--- prompt {number} ---\n{request.prompt[-3000:]}")


def agent_integration(api: client.ApiClient, ns: str, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Integration",
        "metadata": {"name": name},
        "spec": {
            "workspace": WORKSPACE,
            "documentType": DOCTYPE,
            "trigger": "DocumentParseCompleted",
            **spec,
        },
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrations", body)


def agent_status(api: client.ApiClient, ns: str, name: str, task: str, states: set[str]) -> dict:
    obj = eventually(
        lambda: get_integration(api, ns, name),
        lambda o: ((o.get("status") or {}).get("agent") or {}).get(task, {}).get("state") in states,
        f"status.agent.{task} of {name} to reach {sorted(states)}",
        seconds=150,
    )
    return dict(obj["status"]["agent"][task])


def get_revision(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return custom(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "integrationrevisions", name
    )


def revisions_of(api: client.ApiClient, ns: str, integration: str) -> list[dict[str, Any]]:
    items = custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, "integrationrevisions")[
        "items"
    ]
    return [r for r in items if r["spec"]["integration"] == integration]


def fenced(code: str, words: str = "Here is the integration.") -> str:
    return f"{words}\n\n```python\n{code.strip()}\n```\n"


def assert_prompts_clean(requests: list[Recorded], secrets: list[str]) -> None:
    """No secret value (any encoding) and no document value in anything the model read."""
    assert requests, "the stand-in recorded no prompt"
    for request in requests:
        text = request.prompt
        assert_clean(text, secrets, "a prompt")
        for value in DOCUMENT_VALUES:
            assert value not in text, f"the document value {value!r} reached a prompt"
        assert request.authorized, "the agent did not send the API key"


def send_event(gateway: Gateway, ns: str, platform: PlatformState, document: str) -> None:
    body = json.dumps(
        {
            "event": "document.parse.completed",
            "timestamp": int(time.time()),
            "payload": platform.event_payload(platform.documents[document]),
        }
    ).encode()
    answer = httpx.post(
        f"{gateway.url}/v1/events/{ns}",
        content=body,
        headers={
            "content-type": "application/json",
            "X-Hook-Signature": sign_resthook(body, SIGNING_KEY, int(time.time())),
        },
        timeout=30,
    )
    assert answer.status_code in (200, 202), answer.text


EXPORT_CODE = """
import json
import os
import urllib.request

from docrelay.sdk import get_document

SINK = {sink!r}


def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    number = document["data"]["invoiceNumber"]
    request = urllib.request.Request(
        SINK + "/bills",
        data=json.dumps({{"invoiceNumber": number, "test": event["test_run"]}}).encode(),
        headers={{"X-Api-Key": os.environ["API_KEY"], "Content-Type": "application/json"}},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
    return {{"summary": "exported " + number}}
"""


def test_instructions_make_a_tested_revision_that_runs_on_a_signed_event(
    api: client.ApiClient, stack: Stack
) -> None:
    """instructions -> revision -> test runs pass -> deploy -> a signed event runs it. The
    provider's first answer is a 429 with Retry-After: the client retries and gets the 200."""
    ns, llm = stack.ns, stack.llm
    secret_value = canary(header=True)  # the code sends it as a header
    set_secret(api, ns, "bills", "API_KEY", secret_value)
    llm.script(
        Fault.rate_limited(retry_after="1"),
        Reply(fenced(EXPORT_CODE.format(sink=sink_by_name(stack.sink)))),
        Reply.judgement(True, "each run POSTed its invoice number to /bills"),
    )
    agent_integration(
        api,
        ns,
        "bills",
        instructions="Export each invoice's number to our bills API; authenticate with API_KEY.",
        secrets=["API_KEY"],
        egress=sink_egress(stack.sink),
    )
    task = agent_status(api, ns, "bills", "generation", {"TestPassed", "TestFailed", "Failed"})
    assert task["state"] == "TestPassed", task
    # 429 then 200: two HTTP requests, one question to the model; then the judge's question.
    assert len(llm.requests) == 3 and task["attempts"] == 1, task
    assert "did what the user asked" in llm.requests[2].system
    assert "/bills -> 200 (dry run: simulated, not sent)" in llm.requests[2].prompt
    revision = get_revision(api, ns, task["revision"])
    source = revision["spec"]["source"]
    assert source["type"] == "Agent" and source["model"] == "standin-model"
    assert source["promptHash"].startswith("sha256:")
    assert condition(revision, "Tested")["status"] == "True"
    assert condition(revision, "Tested")["reason"] == "JudgedPassed"
    assert revision["status"]["validation"]["valid"] is True
    # Tested on the documents of the type the platform lists (the integration saw none yet),
    # dry: their POSTs were answered by the egress proxy and never reached the bills API.
    tested = {r["name"] for r in revision["status"]["testRuns"]}
    assert tested == set(task["testRuns"]) and len(tested) == 2
    for name in tested:
        assert get_run(api, ns, name)["spec"]["test"] is True
        assert get_run(api, ns, name)["spec"]["dryRun"] is True
    assert [path for path, _, _ in Sink.seen] == []
    integration = get_integration(api, ns, "bills")
    assert condition(integration, "AgentAvailable")["status"] == "True"
    assert not integration["status"].get("deployedRevision")  # Manual: waits for deploy
    assert condition(integration, "CodeReady")["reason"] == "NoCode"

    # The prompt: instructions, contract, schema and secret names; no values.
    prompt = llm.requests[1].prompt
    for expected in ("lambda_handler", "API_KEY", "invoiceNumber", "bills API"):
        assert expected in prompt, expected
    assert_prompts_clean(llm.requests, [secret_value])

    deployed = docrelay("deploy", task["revision"], "-n", ns)
    assert f"deployed revision {task['revision']}" in deployed.stdout
    Sink.seen.clear()
    stack.gateway.wait_ready(integrations=1)
    send_event(stack.gateway, ns, stack.platform, HARBOURSIDE)
    runs = eventually(
        lambda: custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns"),
        lambda listed: any(not r["spec"].get("test") for r in listed["items"]),
        "the event's run",
    )
    (run,) = [r for r in runs["items"] if not r["spec"].get("test")]
    status = wait_finished(api, ns, run["metadata"]["name"])
    assert status["phase"] == "Succeeded", status
    assert status["revision"] == task["revision"]
    assert status["resultSummary"] == "exported INV-2025-0418"
    exported = [json.loads(body) for path, _, body in Sink.seen if path == "/bills"]
    assert {"invoiceNumber": "INV-2025-0418", "test": False} in exported
    assert docrelay("generate", "bills", "-n", ns, "--wait", "0").returncode == 0
    # Neither the API key nor the secret value is in the operator's or the gateway's log.
    logs = stack.tenant.log_text() + stack.gateway.log_text()
    assert_clean(logs, [secret_value, LLM_KEY], "the operator's and the gateway's logs")


BROKEN_CODE = """
import os

from docrelay.sdk import get_document


def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    print("authenticating with", os.environ["API_KEY"])
    return {"summary": "exported " + document["data"]["invoiceNumbr"]}
"""

FIXED_CODE = """
from docrelay.sdk import get_document


def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    return {"summary": "exported " + document["data"]["invoiceNumber"]}
"""


def test_fix_of_a_failed_run_is_tested_deployed_and_replayed(
    api: client.ApiClient, stack: Stack, cluster: Cluster
) -> None:
    """A failing run -> docrelay fix --one-shot -> the stand-in answers corrected code when
    shown the error -> the proposal passes on the failed run's document -> deployed
    (Automatic) -> the replay of the failed run succeeds."""
    ns, llm = stack.ns, stack.llm
    secret_value = canary()
    set_secret(api, ns, "fixme", "API_KEY", secret_value)
    agent_integration(
        api,
        ns,
        "fixme",
        code=BROKEN_CODE,
        instructions="Report each invoice's number.",
        secrets=["API_KEY"],
        deployPolicy="Automatic",
        retry={"maxAttempts": 1},
    )
    original = eventually(
        lambda: get_integration(api, ns, "fixme"),
        lambda o: bool((o.get("status") or {}).get("deployedRevision")),
        "the inline code to be deployed",
    )["status"]["deployedRevision"]
    failed = create_run(api, ns, "fixme", HARBOURSIDE)
    status = wait_finished(api, ns, failed)
    assert (status["phase"], status["exceptionType"]) == ("Failed", "KeyError"), status
    assert "authenticating with ***" in stored_log(api, ns, failed, 1)
    # Inline code: the agent generates nothing by itself.
    assert llm.requests == []

    def answer(request: Recorded) -> str:
        if JUDGE in request.system:
            return Reply.judgement(True, "it reports the invoice number without an error").text
        shown_error = "KeyError" in request.prompt and "invoiceNumbr" in request.prompt
        return fenced(FIXED_CODE if shown_error else BROKEN_CODE, "The key is misspelt.")

    llm.respond_with(answer)
    fixed = docrelay("fix", failed, "--one-shot", "-n", ns, "--wait", "150", expect=None)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert_clean(fixed.stdout + fixed.stderr, [secret_value, LLM_KEY], "docrelay fix's output")
    proposal = fixed.stdout.split("proposal: ", 1)[1].split()[0]
    # Accepted on the first answer, then judged once (the instructions and the fixed run).
    assert [JUDGE in r.system for r in llm.requests] == [False, True]
    assert "fixes the failed run" in llm.requests[1].prompt

    revision = get_revision(api, ns, proposal)
    assert revision["spec"]["source"]["type"] == "Fix"
    assert revision["spec"]["source"]["fixOfRun"] == failed
    assert revision["spec"]["parent"] == original
    assert condition(revision, "Tested")["status"] == "True"
    (test_run,) = [r["name"] for r in revision["status"]["testRuns"]]
    assert get_run(api, ns, test_run)["spec"]["documentIdentifier"] == HARBOURSIDE
    # Automatic: deployed by the agent, recorded as such.
    integration = eventually(
        lambda: get_integration(api, ns, "fixme"),
        lambda o: o["status"].get("deployedRevision") == proposal,
        "the proposal to be deployed",
    )
    assert integration["status"]["history"][-1]["reason"] == "AgentAutomatic"
    assert integration["status"]["history"][-1]["deployedBy"] == "docrelay-agent"
    fix = eventually(
        lambda: get_run(api, ns, failed)["status"]["fix"],
        lambda f: f["state"] == "Deployed",
        "the run's fix status to say Deployed",
    )
    assert fix["revision"] == proposal and fix["testRun"] == test_run
    assert [a["state"] for a in fix["history"]] == ["Deployed"]
    agent_fix = agent_status(api, ns, "fixme", "fix", {"Deployed"})
    assert agent_fix["revision"] == proposal and agent_fix["fixOfRun"] == failed

    # What the model was shown: the code, the error, the masked log; no values.
    prompt = llm.requests[0].prompt
    for expected in ("invoiceNumbr", "KeyError", "authenticating with ***", "invoiceNumber"):
        assert expected in prompt, expected
    assert_prompts_clean(llm.requests, [secret_value])

    diff = docrelay("diff", original, proposal, "-n", ns).stdout
    assert '-    return {"summary": "exported " + document["data"]["invoiceNumbr"]}' in diff
    assert '+    return {"summary": "exported " + document["data"]["invoiceNumber"]}' in diff

    replayed = docrelay(
        "replay", "fixme", "--phase", "Failed", "--revision", "current", "-n", ns
    ).stdout
    new = replayed.split(" replayed as ", 1)[1].split()[0]
    status = wait_finished(api, ns, new)
    assert status["phase"] == "Succeeded", status
    assert (status["revision"], status["resultSummary"]) == (proposal, "exported INV-2025-0418")
    assert_clean(stack.tenant.log_text(), [secret_value, LLM_KEY], "the operator's log")
    assert_clean(json.dumps(get_run(api, ns, failed)), [secret_value], "the failed run")
    # After the runs (the failed one printed the value) and the agent's work: the full crawl.
    # The LLM key is not searched: the docrelay-agent Secret holds it, as it should.
    canary_crawl(cluster, [secret_value], [*stack.tenant.logs, stack.gateway.log_path])


def test_invalid_code_is_refused_a_bounded_number_of_times_and_nothing_is_deployed(
    api: client.ApiClient, stack: Stack
) -> None:
    ns, llm = stack.ns, stack.llm
    bad = "import pandas\n\n\ndef handler(event):\n    return pandas.__version__\n"
    llm.respond_with(lambda request: fenced(bad))
    agent_integration(api, ns, "badcode", instructions="Count the invoice's line items.")
    task = agent_status(api, ns, "badcode", "generation", {"Failed", "TestPassed", "Testing"})
    assert task["state"] == "Failed", task
    assert task["attempts"] == 3 and len(llm.requests) == 3
    assert "refused 3 times" in task["message"]
    assert "import of 'pandas'" in task["message"] and "lambda_handler" in task["message"]
    # Each question after the first carried the problems of the answer before.
    assert "import of 'pandas'" in llm.requests[1].last_user
    settled = eventually(
        lambda: get_integration(api, ns, "badcode"),
        lambda o: (
            o["status"].get("observedGeneration") == 1
            and bool(condition(o, "AgentAvailable"))
            and bool(condition(o, "CodeReady"))
        ),
        "the Integration handler and the agent to have written the status",
    )
    before = settled["metadata"]["resourceVersion"]
    time.sleep(3)  # a failed generation is not retried by itself
    assert len(llm.requests) == 3
    # and the worker does not rewrite an unchanged status
    assert get_integration(api, ns, "badcode")["metadata"]["resourceVersion"] == before
    assert revisions_of(api, ns, "badcode") == []
    integration = get_integration(api, ns, "badcode")
    assert not integration["status"].get("deployedRevision")
    assert condition(integration, "CodeReady")["reason"] == "NoCode"
    assert condition(integration, "AgentAvailable")["status"] == "True"
    events = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector="involvedObject.name=badcode,reason=AgentCodeRefused"
    )
    assert events.items and "nothing was deployed" in events.items[0].message


def test_provider_down_sets_a_condition_and_the_operator_carries_on(
    api: client.ApiClient, stack: Stack
) -> None:
    ns, llm = stack.ns, stack.llm
    llm.respond_with(lambda request: Fault.server_error(503))
    agent_integration(api, ns, "later", instructions="Count the invoice's line items.")
    integration = eventually(
        lambda: get_integration(api, ns, "later"),
        lambda o: condition(o, "AgentAvailable").get("reason") == "Unreachable",
        "AgentAvailable=False (Unreachable)",
    )
    available = condition(integration, "AgentAvailable")
    assert available["status"] == "False"
    assert "503" in available["message"] and LLM_KEY not in available["message"]
    task = integration["status"]["agent"]["generation"]
    assert task["state"] == "Waiting" and task["nextAttemptAt"]
    assert stack.tenant.operator is not None and stack.tenant.operator.process.poll() is None
    # Inline-code integrations are unaffected meanwhile.
    agent_integration(api, ns, "inline", code="def lambda_handler(event, context):\n    return 1\n")
    inline = eventually(
        lambda: get_integration(api, ns, "inline"),
        lambda o: condition(o, "Ready").get("status") == "True",
        "the inline integration to be Ready",
    )
    assert condition(inline, "AgentAvailable") == {}
    # The provider comes back: the waiting generation is tried again and succeeds.
    llm.respond_with(
        lambda request: Reply.judgement(True, "it runs").text
        if JUDGE in request.system
        else fenced("def lambda_handler(event, context):\n    return {'summary': 'ok'}\n")
    )
    task = agent_status(api, ns, "later", "generation", {"TestPassed", "TestFailed"})
    assert task["state"] == "TestPassed", task
    assert condition(get_integration(api, ns, "later"), "AgentAvailable")["status"] == "True"


def test_unconfigured_agent_says_so_and_inline_code_is_unaffected(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    tenant = Tenant(api, ns, tmp_path)
    try:
        tenant.start()
        agent_integration(api, ns, "wants-agent", instructions="Export the invoice.")
        agent_integration(
            api, ns, "inline", code="def lambda_handler(event, context):\n    return 1\n"
        )
        integration = eventually(
            lambda: get_integration(api, ns, "wants-agent"),
            lambda o: bool(condition(o, "AgentAvailable")),
            "the AgentAvailable condition",
        )
        available = condition(integration, "AgentAvailable")
        assert (available["status"], available["reason"]) == ("False", "NotConfigured")
        assert "DOCRELAY_AGENT_KIND" in available["message"]
        task = integration["status"]["agent"]["generation"]
        assert task["state"] == "Failed" and "not configured" in task["message"]
        inline = eventually(
            lambda: get_integration(api, ns, "inline"),
            lambda o: condition(o, "Ready").get("status") == "True",
            "the inline integration to be Ready",
        )
        assert condition(inline, "AgentAvailable") == {}
        assert "agent" not in inline["status"]
        fixed = docrelay("generate", "inline", "-n", ns, expect=1)
        assert "no spec.instructions" in fixed.stderr
    finally:
        tenant.stop()
        cleanup_cluster_scoped(api, ns)
        print(f"\n--- operator log ---\n{tenant.log_text()}")


JUDGE = "did what the user asked"  # in the judge's system prompt


def test_a_generation_that_ignores_the_instructions_is_judged_failed_and_not_deployable(
    api: client.ApiClient, stack: Stack
) -> None:
    """The one-shot flow judges too: code that runs without an error but posts nothing, for
    instructions that ask for a POST, is TestFailed (JudgedFailed), not TestPassed."""
    ns, llm = stack.ns, stack.llm
    ignoring = "def lambda_handler(event, context):\n    return {'summary': 'done'}\n"
    llm.script(
        Reply(fenced(ignoring)),
        Reply.judgement(False, "no POST to the bills API was made; the instructions ask for one"),
    )
    agent_integration(
        api, ns, "ignored", instructions="POST each invoice's number to our bills API."
    )
    task = agent_status(api, ns, "ignored", "generation", {"TestPassed", "TestFailed"})
    assert task["state"] == "TestFailed", task
    assert "judged not to do what the instructions ask" in task["message"]
    assert "no POST to the bills API was made" in task["message"]
    revision = task["revision"]
    for name in task["testRuns"]:
        assert get_run(api, ns, name)["status"]["phase"] == "Succeeded"
    tested = condition(get_revision(api, ns, revision), "Tested")
    assert (tested["status"], tested["reason"]) == ("False", "JudgedFailed")
    judged = llm.requests[-1]
    assert JUDGE in judged.system and "POST each invoice's number" in judged.prompt
    assert "outbound connections:\n(none)" in judged.prompt
    refused = docrelay("deploy", "ignored", "--revision", revision, "-n", ns, expect=1)
    assert "its test runs failed" in refused.stderr
    # Judged once: later looks keep the verdict without asking the model again.
    time.sleep(2)
    assert len(llm.requests) == 2
    assert agent_status(api, ns, "ignored", "generation", {"TestFailed"})["state"] == "TestFailed"


def test_deploy_refuses_an_agent_revision_whose_tests_failed(
    api: client.ApiClient, stack: Stack
) -> None:
    ns, llm = stack.ns, stack.llm
    failing = "def lambda_handler(event, context):\n    raise RuntimeError('not yet')\n"
    llm.script(Reply(fenced(failing)))
    agent_integration(api, ns, "untested", instructions="Export the invoice.")
    task = agent_status(api, ns, "untested", "generation", {"TestPassed", "TestFailed"})
    assert task["state"] == "TestFailed", task
    revision = task["revision"]
    assert condition(get_revision(api, ns, revision), "Tested")["status"] == "False"
    refused = docrelay("deploy", "untested", "--revision", revision, "-n", ns, expect=1)
    assert "its test runs failed" in refused.stderr
    assert not get_integration(api, ns, "untested")["status"].get("deployedRevision")
    # The operator refuses it too (a request written by hand, not through the CLI).
    request = json.dumps(
        {
            "id": uuid.uuid4().hex,
            "action": "deploy",
            "revision": revision,
            "requestedBy": "someone",
            "requestedAt": "2026-01-01T00:00:00+00:00",
        }
    )
    custom(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "integrations",
        "untested",
        {"metadata": {"annotations": {"deploy.docrelay.io/request": request}}},
    )
    eventually(
        lambda: client.CoreV1Api(api).list_namespaced_event(
            ns, field_selector="involvedObject.name=untested,reason=DeployRejected"
        ),
        lambda events: any("test runs failed" in e.message for e in events.items),
        "a DeployRejected event",
    )
    assert not get_integration(api, ns, "untested")["status"].get("deployedRevision")
