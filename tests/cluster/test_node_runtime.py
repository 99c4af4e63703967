"""Node.js integrations (`spec.runtime.nodejs`) against the real control plane and the local
node: the operator starts `node /opt/docrelay/node/runner.mjs`, the runner opens the run's
secret through the broker, masks what the code prints and goes out through the egress proxy;
and the hostile cases in JavaScript end as a user can read them, without harm to the machine.

The operator and the gateway (broker and egress proxy) run as subprocesses with their own
RBAC, as in tests/cluster/test_broker.py; the run pods are real local processes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devkit.cluster import Cluster
from devkit.standins.llm import canned_reply, serving_llm
from devkit.standins.platform import PlatformState
from devkit.toolchain import node as node_toolchain
from tests.cluster.harness import (
    GROUP,
    SINK_NAME,
    VERSION,
    Gateway,
    Sink,
    Tenant,
    canary,
    canary_crawl,
    create_run,
    custom,
    docrelay,
    eventually,
    gateway_kubeconfig,
    get_integration,
    get_run,
    kubectl,
    make_integration,
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

WORKSPACE, DOCTYPE = "mEFayXdO", "tVpGRBWd"  # examples/documents: two invoices
HARBOURSIDE = "XqLmNoPa"
SCOPE = {"workspace": WORKSPACE, "documentType": DOCTYPE}
NODE = {"nodejs": "24"}  # an LTS line


@pytest.fixture
def stack(
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    platform: PlatformState,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Tenant, Gateway]]:
    """Gateway + broker + egress proxy, then the operator pointing runs at both."""
    ns = namespace
    platform_secret(api, ns, platform)
    gateway, runs_env = tenant_gateway(api, ns, tmp_path)
    for name, value in runs_env.items():
        monkeypatch.setenv(name, value)
    tenant = Tenant(api, ns, tmp_path)
    try:
        gateway.wait_ready()
        tenant.start()
        yield tenant, gateway
    finally:
        stop_stack(api, ns, tenant, gateway)


CODE_EXPORT = """
export async function handler(event, context) {
  const key = process.env.API_KEY;
  console.log("raw:", key);
  console.log("base64:", Buffer.from(key).toString("base64"));
  console.log("hex:", Buffer.from(key).toString("hex"));
  console.log("url:", encodeURIComponent(key));
  console.log("json:", JSON.stringify({ key }));
  console.log("object:", { key });
  console.log("buffer:", Buffer.from(key));
  process.stdout.write("split: " + key.slice(0, 6));
  await new Promise((resolve) => setTimeout(resolve, 200));
  process.stdout.write(key.slice(6) + "\\n");
  const answer = await fetch(SINK + "/bills", {
    method: "POST",
    headers: { "X-Api-Key": key, "Content-Type": "application/json" },
    body: JSON.stringify({ document: event.document_identifier, run: context.functionName }),
  });
  console.log("sink answered", answer.status);
  return { summary: `exported ${event.document_identifier} (${answer.status})` };
}
"""


def test_a_nodejs_integration_exports_with_its_secret_masked_through_the_egress_proxy(
    api: client.ApiClient, namespace: str, stack: Any, sink: str, cluster: Cluster
) -> None:
    ns = namespace
    tenant, gateway = stack
    value = canary(header=True)  # sent as a header: printable ASCII
    set_secret(api, ns, "export-js", "API_KEY", value)
    code = f"const SINK = {json.dumps(sink_by_name(sink))};\n{CODE_EXPORT}"
    make_integration(
        api,
        ns,
        "export-js",
        code,
        runtime=NODE,
        secrets=["API_KEY"],
        egress=sink_egress(sink),
        **SCOPE,
    )
    name = create_run(api, ns, "export-js", HARBOURSIDE)
    status = wait_finished(api, ns, name)
    assert status["phase"] == "Succeeded", status
    assert status["resultSummary"] == f"exported {HARBOURSIDE} (201)"
    # The sink got the key itself, through the proxy.
    assert len(Sink.seen) == 1
    path, headers, body = Sink.seen[0]
    assert path == "/bills" and json.loads(body) == {"document": HARBOURSIDE, "run": name}
    assert {k.lower(): v for k, v in headers.items()}["x-api-key"] == value
    # What the code printed: every form masked, also the value split across two writes.
    out = stored_log(api, ns, name, 1)
    for line in ("raw: ***", "base64: ***", "hex: ***", "url: ***", "split: ***"):
        assert line in out, out
    # console.log of an object quotes the string as util.inspect does (the quote depends on
    # what the value holds); of a Buffer, its bytes in hex.
    assert re.search(r"^object: \{ key: (['\"`])\*\*\*\1 \}$", out, re.M), out
    assert "buffer: <Buffer ***>" in out, out
    assert "sink answered 201" in out
    assert_clean(out, [value], "the stored log")
    live = docrelay("logs", name, "-n", ns).stdout
    assert_clean(live, [value], "docrelay logs")
    # fetch went through the egress proxy, which recorded the allowed connection for the run.
    egress = docrelay("logs", name, "-n", ns, "--egress").stdout.splitlines()
    rows = [line.split() for line in egress[1:] if SINK_NAME in line]
    assert len(rows) == 1 and rows[0][1] == "yes", egress
    canary_crawl(cluster, [value], [*tenant.logs, gateway.log_path])


def test_kubectl_explain_says_how_to_ask_for_nodejs(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    # The API server publishes a CRD's schema a moment after it is installed.
    explained = eventually(
        lambda: " ".join(
            kubectl("explain", "integrations.spec.runtime", expect=None).stdout.split()
        ),
        lambda text: "FIELDS" in text,
        "kubectl explain to know the Integration's schema",
    )
    assert "The language and its version (python, the default, or nodejs)" in explained
    nodejs = " ".join(kubectl("explain", "integrations.spec.runtime.nodejs").stdout.split())
    assert 'JavaScript code: the Node.js version of the run image ("20", "22", "24" or "26")' in (
        nodejs)
    assert '"20" is past its end of life (April 2026, no more security fixes)' in nodejs
    assert "process.env.NAME" in nodejs


AGENT_KEY = "sk-node-agent-test"


def test_the_agent_writes_javascript_for_a_nodejs_integration_and_it_passes_its_test_runs(
    api: client.ApiClient, namespace: str, tmp_path: Path, platform: PlatformState
) -> None:
    """instructions + runtime.nodejs -> the agent asks for JavaScript (the stand-in answers in
    the language it is asked for) -> node --check and the JavaScript checks pass -> the
    revision is test-run by the Node.js runner on the type's documents, through the SDK."""
    ns = namespace
    core = client.CoreV1Api(api)
    platform_secret(api, ns, platform)
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "docrelay-agent"}, "stringData": {"api-key": AGENT_KEY}}
    )
    kubeconfig = gateway_kubeconfig(api, ns, tmp_path / "gateway.kubeconfig")
    gateway = Gateway(tmp_path, ["-n", ns], env={"KUBECONFIG": str(kubeconfig)})
    with serving_llm(api_key=AGENT_KEY, responder=canned_reply) as (llm, server):
        tenant = Tenant(
            api,
            ns,
            tmp_path,
            env={
                "DOCRELAY_BROKER_URL": gateway.url,
                "DOCRELAY_AGENT_KIND": "openai",
                "DOCRELAY_AGENT_BASE_URL": server.base_url + "/v1",
                "DOCRELAY_AGENT_MODEL": "standin-model",
                "DOCRELAY_AGENT_API_KEY_SECRET": "docrelay-agent",
                "DOCRELAY_AGENT_POLL_SECONDS": "0.5",
            },
        )
        try:
            gateway.wait_ready()
            tenant.start()
            custom(api).create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                "integrations",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Integration",
                    "metadata": {"name": "fields-js"},
                    "spec": {
                        **SCOPE,
                        "trigger": "DocumentParseCompleted",
                        "runtime": NODE,
                        "instructions": "Log which fields each invoice has.",
                    },
                },
            )
            integration = eventually(
                lambda: get_integration(api, ns, "fields-js"),
                lambda o: ((o.get("status") or {}).get("agent") or {})
                .get("generation", {})
                .get("state")
                in ("TestPassed", "TestFailed", "Failed"),
                "the agent's generation to be tested",
                seconds=180,
            )
        finally:
            stop_stack(api, ns, tenant, gateway)
    task = integration["status"]["agent"]["generation"]
    assert task["state"] == "TestPassed", task
    assert "You write JavaScript integrations" in llm.requests[0].system
    assert "Node.js 24" in llm.requests[0].system
    revision = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "integrationrevisions", task["revision"]
    )
    assert revision["spec"]["runtime"] == NODE
    assert revision["status"]["validation"]["valid"] is True
    code = client.CoreV1Api(api).read_namespaced_config_map(
        revision["spec"]["codeConfigMap"]["name"], ns
    ).data[revision["spec"]["codeConfigMap"]["key"]]
    assert "export async function handler(event, context)" in code
    assert len(task["testRuns"]) == 2  # the type's two example invoices
    for run in task["testRuns"]:
        status = get_run(api, ns, run)["status"]
        assert status["phase"] == "Succeeded", status
        assert status["resultSummary"].startswith("read "), status
        assert "fields: [" in stored_log(api, ns, run, 1)


# --- hostile code, in JavaScript -----------------------------------------------------------


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


def finished_js(
    api: client.ApiClient, ns: str, name: str, code: str, **spec: Any
) -> tuple[str, dict[str, Any]]:
    make_integration(
        api, ns, name, code, **{"runtime": NODE, "retry": {"maxAttempts": 1}, **SCOPE, **spec}
    )
    run = create_run(api, ns, name, HARBOURSIDE)
    return run, wait_finished(api, ns, run)


@pytest.mark.parametrize("major", ["20", "22", "24", "26"])
def test_the_code_runs_under_the_nodejs_version_the_integration_names(
    api: client.ApiClient, namespace: str, tenant: Tenant, major: str
) -> None:
    # The run image runner-node:<major> holds that Node.js; the local node, which runs no
    # images, offers the pinned official build of the line (devkit/toolchain/node.py).
    code = "export async function handler() {\n  return { summary: process.versions.node };\n}\n"
    _, status = finished_js(api, namespace, f"version-js-{major}", code,
                            runtime={"nodejs": major})
    assert status["phase"] == "Succeeded", status
    assert status["resultSummary"] == node_toolchain.pin(major).version
    assert status["resultSummary"].startswith(f"{major}.")
    # Node.js 20 is past its end of life: it still runs, and the Integration's Events say so
    # (once); the supported lines get no such Event.
    def end_of_life_events() -> list[Any]:
        return list(client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name=version-js-{major},"
                                      "reason=EndOfLifeRuntime").items)
    if major == "20":
        events = eventually(end_of_life_events, bool, "the EndOfLifeRuntime Event")
        assert [(e.type, e.count or 1) for e in events] == [("Warning", 1)]
        assert 'Node.js 20 is past its end of life (since April 2026' in events[0].message
        assert 'move to a supported line ("22", "24", "26")' in events[0].message
    else:
        assert end_of_life_events() == []


def test_an_endless_loop_ends_at_the_deadline_as_a_timeout(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    code = "export async function handler() {\n  console.log('looping');\n  while (true) {}\n}\n"
    run, status = finished_js(api, namespace, "loop-js", code, timeoutSeconds=3)
    assert status["errorClass"] == "Timeout", status
    assert status["errorMessage"] == "the code did not finish within 3 s (timeoutSeconds)"
    assert "looping" in stored_log(api, namespace, run, 1)
    eventually(lambda: run_processes(run), lambda pids: pids == [], "the run's processes to end")


MEMORY_HOG = """
export async function handler() {
  const chunks = [];
  while (true) chunks.push(Buffer.alloc(8 * 1024 * 1024, 1)); // every page touched
}
"""
HEAP_HOG = """
export async function handler() {
  const kept = [];
  while (true) kept.push(new Array(100000).fill({ n: kept.length }));
}
"""


@pytest.mark.parametrize(
    ("code", "message"),
    [
        # Buffers live outside the JavaScript heap: the kernel kills the container at its
        # limit (OOMKilled), which the operator reads as OutOfMemory.
        (MEMORY_HOG, None),
        # The heap is sized below the limit: the runner reports it itself.
        (HEAP_HOG, "the code ran out of memory (JavaScript heap)"),
    ],
    ids=["buffers", "heap"],
)
def test_a_memory_hog_is_stopped_at_its_limit_as_out_of_memory(
    api: client.ApiClient, namespace: str, tenant: Tenant, code: str, message: str | None
) -> None:
    run, status = finished_js(
        api, namespace, "hog-js", code, resources={"limits": {"memory": "128Mi"}}
    )
    assert status["errorClass"] == "OutOfMemory", status
    if message:
        assert status["errorMessage"] == message, status
    eventually(lambda: run_processes(run), lambda pids: pids == [], "the run's processes to end")


SPAWN_BOMB = """
import { spawn } from "node:child_process";

export async function handler() {
  let spawned = 0;
  for (;;) {
    const outcome = await new Promise((resolve) => {
      const child = spawn("sleep", ["120"], { stdio: "ignore" });
      child.once("spawn", () => resolve("ok"));
      child.once("error", (error) => resolve(error.code || error.message));
    });
    if (outcome !== "ok") return { summary: `spawned ${spawned}, then ${outcome}` };
    spawned += 1;
  }
}
"""


def test_a_spawn_bomb_stops_at_the_pods_pids_limit_and_leaves_nothing_behind(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    run, status = finished_js(api, namespace, "bomb-js", SPAWN_BOMB, timeoutSeconds=120)
    assert status["phase"] == "Succeeded", status
    summary = status["resultSummary"]
    spawned = int(summary.split()[1].rstrip(","))
    # The pod's 1024 pids (the local node's default, the kubelet's podPidsLimit) hold the
    # init, node's threads and the children: the bomb stops there.
    assert 800 <= spawned < 1024 and summary.endswith("then EAGAIN"), summary
    # The runner exited; the pod's PID namespace went with it, children and all.
    eventually(lambda: run_processes(run), lambda pids: pids == [], "the run's processes to end")


PROBE = """
import fs from "node:fs";

function attempt(action) {
  try {
    action();
    return "ok";
  } catch (error) {
    return error.code || error.name;
  }
}

export async function handler() {
  return {
    serviceAccount: attempt(() =>
      fs.readFileSync("/var/run/secrets/kubernetes.io/serviceaccount/token")),
    writeEtc: attempt(() => fs.writeFileSync("/etc/docrelay-was-here", "x")),
    writeRunner: attempt(() => fs.writeFileSync("/opt/docrelay/node/runner.mjs", "x")),
    writeCode: attempt(() => fs.writeFileSync("/var/run/docrelay/code/handler.js", "x")),
    writeTmp: attempt(() => fs.writeFileSync("/tmp/scratch", "x")),
    checkout: attempt(() => fs.readFileSync(CHECKOUT_FILE)),
  };
}
"""


def test_code_reads_no_service_account_token_and_writes_only_tmp(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    checkout_file = Path(__file__).resolve().parents[2] / "pyproject.toml"
    code = f"const CHECKOUT_FILE = {json.dumps(str(checkout_file))};\n{PROBE}"
    _, status = finished_js(api, namespace, "probe-js", code)
    assert status["phase"] == "Succeeded", status
    assert json.loads(status["resultSummary"]) == {
        "serviceAccount": "ENOENT",  # automountServiceAccountToken: false
        "writeEtc": "EROFS",  # readOnlyRootFilesystem
        "writeRunner": "EROFS",
        "writeCode": "EROFS",  # the code's ConfigMap is mounted read-only
        "writeTmp": "ok",  # the one writable place, an emptyDir
        "checkout": "ENOENT",  # the machine's files beyond the runtime are not there
    }
