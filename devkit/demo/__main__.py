"""python -m devkit.demo: the whole story on this machine, from a document event to the export.

1. a fresh local cluster (real etcd, kube-apiserver, controllers, scheduler, the local node);
2. the CRDs; the operator (tenant mode) and the gateway with its run broker, each as a process
   with its own ServiceAccount and only the rules the docs list (devkit.rbac);
3. the document platform stand-in and an HTTP sink (the downstream accounting API);
4. `docrelay subscribe`: the stand-in's handshake with the gateway, which activates it;
5. an API key sealed on this machine with `docrelay seal`, applied with kubectl;
6. an Integration whose inline code reads the invoice and posts its fields to the sink, sending
   the key as a header (and printing it, to show the masking);
7. the stand-in sends a signed `document.parse.completed`; the demo prints the run's phases,
   its log and what the sink received as they happen, redelivers the event (nothing new), and
   sums up.

Everything is stopped at the end; `--keep` leaves it all running until Ctrl-C, to explore with
kubectl and docrelay. The secret value is never printed: every line the demo prints is checked
for it, and a leak fails the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import yaml
from kubernetes import client, config

from devkit import rbac, toolchain
from devkit.cluster import Cluster
from devkit.cluster.apply import install_crds
from devkit.cluster.controlplane import REPO_ROOT, ClusterError, free_port
from devkit.standins import server as standin_server
from devkit.standins.platform import PlatformState
from devkit.standins.platform import create_app as platform_app
from devkit.standins.sink import Received, Sink
from docrelay.masking import Masker, contains_any_form

GROUP, VERSION = "docrelay.io", "v1alpha1"
NAMESPACE = "docrelay-demo"
INTEGRATION = "invoices-to-sink"
# The sink as the run's code calls it: by a name the gateway's egress proxy resolves to the
# sink's loopback address (a run pod's only ways out are the broker and the proxy).
SINK_NAME = "accounting.demo.test"
DOCUMENT = "XqLmNoPa"  # examples/documents/invoice-harbourside.json
WORKSPACE, DOCTYPE = "mEFayXdO", "tVpGRBWd"
EVENT = "document.parse.completed"
DEFAULT_STATE_DIR = REPO_ROOT / ".devkit" / "demo"
FINISHED = {"Succeeded", "Failed", "TimedOut", "DeadLettered", "Cancelled"}
# Subprocesses import the product and the devkit from this checkout.
PYTHONPATH = os.pathsep.join((str(REPO_ROOT / "operator"), str(REPO_ROOT)))

CODE = """\
import json, os, urllib.request

from docrelay.sdk import get_document

SINK = "{sink}"


def lambda_handler(event, context):
    invoice = get_document(event["document_identifier"])["data"]
    bill = {{
        "invoiceNumber": invoice["invoiceNumber"],
        "supplier": invoice["supplier"]["name"],
        "invoiceDate": invoice["invoiceDate"],
        "dueDate": invoice["dueDate"],
        "currency": invoice["currencyCode"],
        "total": invoice["total"],
    }}
    api_key = os.environ["API_KEY"]
    # Printing a secret is a mistake; the runner masks it in every form anyway.
    print("exporting", bill["invoiceNumber"], "with API key", api_key)
    request = urllib.request.Request(
        SINK + "/bills",
        data=json.dumps(bill).encode(),
        headers={{
            "Content-Type": "application/json",
            "X-Api-Key": api_key,
            "Idempotency-Key": event["idempotency_key"],
        }},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        created = json.load(answer)
    print("the sink created", created["id"])
    return {{"summary": f"exported {{bill['invoiceNumber']}} as {{created['id']}}"}}
"""


class DemoError(Exception):
    """A step failed; the message says which and why."""


class Output:
    """Prints lines for several threads, each checked for the secret before it is printed."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._secret: str | None = None
        self._masker = Masker([])
        self.leaks: list[str] = []

    def secret(self, value: str) -> None:
        self._secret, self._masker = value, Masker([value])

    def line(self, text: str, source: str = "demo") -> None:
        if self._secret and contains_any_form(text, [self._secret]):
            self.leaks.append(source)
            text = self._masker.mask(text) + "   <-- LEAK: the secret was printed unmasked"
        with self._lock:
            print(text, flush=True)

    def step(self, text: str) -> None:
        self.line(f"==> [{time.monotonic() - self.started:5.1f}s] {text}")

    def detail(self, text: str, source: str = "demo") -> None:
        self.line(f"    {text}", source)


class Process:
    """One of docrelay's processes (operator, gateway) with its log in the state directory."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "docrelay.cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1", **env},
            cwd=REPO_ROOT,
            # Its own session: Ctrl-C reaches the demo only, which stops everything in order.
            start_new_session=True,
        )

    def check(self) -> None:
        if self.process.poll() is not None:
            raise DemoError(f"the {self.name} exited ({self.process.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {self.name} | {line}" for line in text)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def wait_for(what: str, check: Callable[[], Any], seconds: float = 60, every: float = 0.2) -> Any:
    """Poll `check` until it returns something true (a 404 counts as not yet)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = check()
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        except httpx.HTTPError:
            pass
        else:
            if value:
                return value
        time.sleep(every)
    raise DemoError(f"timed out after {seconds:.0f}s waiting for {what}")


def leftover_processes(work_dir: Path) -> list[int]:
    """The operator and gateway of an earlier demo in this state directory that was killed
    before it could stop them: their arguments name their kubeconfigs in `work_dir`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "docrelay.cli" in argv and any(a.startswith(f"{work_dir}/") for a in argv):
                found.append(int(proc.name))
    return found


def cli(*argv: str, stdin: str = "", what: str) -> str:
    """Run a command as a person would (kubectl, or the docrelay CLI); fail naming `what`."""
    command = list(argv)
    if command[0] == "docrelay":
        command[:1] = [sys.executable, "-m", "docrelay.cli"]
    result = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    if result.returncode != 0:
        raise DemoError(
            f"{what}: `{' '.join(argv[:2])} ...` exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-1500:]}"
        )
    return result.stdout


class Demo:
    def __init__(self, state_dir: Path, out: Output, api_key: str) -> None:
        self.state_dir = state_dir.resolve()
        self.out = out
        self.api_key = api_key
        self.cluster: Cluster | None = None
        self.processes: list[Process] = []
        self.servers: list[Callable[[], None]] = []
        self.followers: list[subprocess.Popen[str]] = []
        self.sink: Sink | None = None
        self.platform: PlatformState | None = None
        self.gateway_url = ""
        self.run_name = ""
        self.summary: dict[str, str] = {}

    # -- the story ------------------------------------------------------------------------------

    def run(self) -> None:
        self.start_cluster()
        api = config.new_client_from_config(config_file=str(self.cluster_kubeconfig))
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.install()
        self.start_services()
        self.subscribe()
        self.seal_and_apply()
        self.deliver_and_follow()
        self.redeliver()
        self.print_summary()

    @property
    def cluster_kubeconfig(self) -> Path:
        assert self.cluster is not None
        return self.cluster.kubeconfig

    def start_cluster(self) -> None:
        self.out.step(
            "starting a fresh local cluster: etcd, kube-apiserver, controllers, "
            "scheduler, the local node"
        )
        previous = Cluster.attach(self.state_dir / "cluster")
        if previous is not None and any(previous.alive().values()):
            raise DemoError(
                f"a cluster from another demo is still running in {self.state_dir} (one with "
                "--keep, or a demo that was killed). Stop that demo with Ctrl-C, or a leftover "
                f"with `python -m devkit.cluster --state-dir {self.state_dir / 'cluster'} down`; "
                "or give this one another --state-dir"
            )
        for pid in leftover_processes(self.state_dir / "docrelay"):
            self.out.detail(f"stopping process {pid}, left over by a demo that was killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # A fresh cluster every time: old etcd data would hold objects of an earlier API.
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True)
        (self.state_dir / "docrelay").mkdir()
        self.cluster = Cluster(self.state_dir / "cluster")
        try:
            self.cluster.start(log=lambda message: self.out.detail(message))
        except ClusterError as exc:
            raise DemoError(f"the local cluster did not start: {exc}") from None
        # kubectl as built for this cluster, first on the PATH of every command below.
        os.environ["PATH"] = f"{toolchain.bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"
        os.environ["KUBECONFIG"] = str(self.cluster.kubeconfig)

    def install(self) -> None:
        self.out.step("installing the CRDs and the demo namespace with docrelay's permissions")
        names = install_crds(self.api, REPO_ROOT / "crds")
        self.out.detail(f"CRDs: {', '.join(sorted(n.split('.')[0] for n in names))}")
        self.core.create_namespace({"metadata": {"name": NAMESPACE}})
        wait_for(
            "the namespace's default ServiceAccount",
            lambda: self.core.read_namespaced_service_account("default", NAMESPACE),
        )
        work = self.state_dir / "docrelay"
        self.operator_kubeconfig = rbac.operator_kubeconfig(
            self.api, NAMESPACE, work / "operator.kubeconfig"
        )
        self.gateway_kubeconfig = rbac.gateway_kubeconfig(
            self.api, NAMESPACE, work / "gateway.kubeconfig"
        )
        self.out.detail(
            f"ServiceAccounts docrelay-operator and docrelay-gateway in {NAMESPACE}, each with "
            "its Role (docs/operator.md, docs/broker.md)"
        )
        self.out.detail(
            f"the sealing keys' own namespace {rbac.keys_namespace(NAMESPACE)}: only those two "
            "may read the key Secret there (docs/secrets.md)"
        )

    def start_services(self) -> None:
        work = self.state_dir / "docrelay"
        self.out.step("starting the document platform stand-in and the sink (the downstream API)")
        platform_key = f"demo-platform-{secrets.token_hex(16)}"
        state = PlatformState.from_dir(REPO_ROOT / "examples", platform_key)
        running = standin_server.start(platform_app(state))
        self.servers.append(running.stop)
        self.servers.append(state.close)
        self.platform, self.platform_url, self.platform_key = state, running.base_url, platform_key
        self.out.detail(
            f"platform stand-in: {running.base_url} (organisation "
            f"{state.organization}, {len(state.documents)} sample documents)"
        )
        self.sink = Sink(on_request=self.on_sink).start()
        self.servers.append(self.sink.stop)
        self.out.detail(f"sink: {self.sink.url}")
        # The tenant's platform credentials (the broker fetches documents with them) and the
        # organisation's RESThook signature key (the gateway verifies deliveries with it).
        self.core.create_namespaced_secret(
            NAMESPACE,
            {
                "metadata": {"name": "docrelay-platform"},
                "stringData": {"token": platform_key, "url": running.base_url},
            },
        )
        self.core.create_namespaced_secret(
            NAMESPACE,
            {
                "metadata": {"name": "docrelay-gateway-signing"},
                "stringData": {"resthook-demo": state.signature_key},
            },
        )

        self.out.step(
            "starting the gateway (webhook intake, run broker, egress proxy) and the operator"
        )
        gateway_port, proxy_port = free_port(), free_port()
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        gateway = Process(
            "gateway",
            [
                "gateway",
                "-n",
                NAMESPACE,
                "--port",
                str(gateway_port),
                "--proxy-port",
                str(proxy_port),
                "--egress-resolve",
                f"{SINK_NAME}=127.0.0.1",
                "--kubeconfig",
                str(self.gateway_kubeconfig),
            ],
            {
                "DOCRELAY_GATEWAY_PLATFORM_URL": running.base_url,
                "DOCRELAY_GATEWAY_PLATFORM_TOKEN": platform_key,
                "DOCRELAY_GATEWAY_KEYS_CACHE_SECONDS": "1",
            },
            work,
        )
        self.processes.append(gateway)
        self.gateway = gateway

        def gateway_ready() -> bool:
            gateway.check()
            return bool(httpx.get(f"{self.gateway_url}/healthz", timeout=2).json()["indexSynced"])

        wait_for("the gateway to load its Integration index", gateway_ready)
        self.out.detail(
            f"gateway: {self.gateway_url}/v1/events/{NAMESPACE} (log: {gateway.log_path})"
        )
        self.out.detail(f"egress proxy: {proxy_url} ({SINK_NAME} is the sink, on loopback)")

        health_port, webhook_port = free_port(), free_port()
        operator = Process(
            "operator",
            [
                "operator",
                "-n",
                NAMESPACE,
                "--kubeconfig",
                str(self.operator_kubeconfig),
                "--health-host",
                "127.0.0.1",
                "--health-port",
                str(health_port),
                "--webhook-host",
                "127.0.0.1",
                "--webhook-port",
                str(webhook_port),
                "--broker-url",
                self.gateway_url,
                "--egress-proxy-url",
                proxy_url,
            ],
            {},
            work,
        )
        self.processes.append(operator)
        self.operator = operator

        def operator_healthy() -> bool:
            operator.check()
            return httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=2).is_success

        wait_for("the operator to become healthy", operator_healthy, seconds=90)
        admission = client.AdmissionregistrationV1Api(self.api)

        def webhooks_registered() -> bool:
            operator.check()
            name = f"docrelay-secrets.{NAMESPACE}"
            return all(
                f":{webhook_port}/" in str(read(name).webhooks[0].client_config.url)
                for read in (
                    admission.read_mutating_webhook_configuration,
                    admission.read_validating_webhook_configuration,
                )
            )

        wait_for("the operator's admission webhooks", webhooks_registered, seconds=90)
        wait_for(
            "the operator to publish its sealing certificate",
            lambda: self.core.read_namespaced_config_map("docrelay-sealing-cert", NAMESPACE),
            seconds=90,
        )
        self.out.detail(
            f"operator: tenant mode in {NAMESPACE}, sealing certificate published, private "
            f"keys in {rbac.keys_namespace(NAMESPACE)} (log: {operator.log_path})"
        )

    def subscribe(self) -> None:
        assert self.platform is not None
        target = f"{self.gateway_url}/v1/events/{NAMESPACE}"
        self.out.step(
            f"docrelay subscribe: the platform's {EVENT} events of workspace "
            f"{WORKSPACE} go to the gateway"
        )
        os.environ["DOCRELAY_GATEWAY_PLATFORM_TOKEN"] = self.platform_key
        answer = cli(
            "docrelay",
            "subscribe",
            "--workspace",
            WORKSPACE,
            "--event",
            EVENT,
            "--url",
            target,
            "--platform-url",
            self.platform_url,
            "--organization",
            self.platform.organization,
            what="subscribing the gateway",
        )
        for line in answer.splitlines():
            self.out.detail(f"$ docrelay subscribe ...: {line}")
        platform = self.platform
        wait_for(
            "the gateway to activate the subscription (handshake with X-Hook-Secret)",
            lambda: any(s.active for s in platform.subscriptions.values()),
        )
        self.out.detail(
            "the stand-in sent X-Hook-Secret; the gateway echoed it and activated the subscription"
        )

    def seal_and_apply(self) -> None:
        self.out.step("sealing the sink's API key on this machine: docrelay seal | kubectl apply")
        manifest = cli(
            "docrelay",
            "seal",
            "API_KEY",
            "--integration",
            INTEGRATION,
            "-n",
            NAMESPACE,
            stdin=self.api_key + "\n",
            what="sealing the API key",
        )
        sealed = yaml.safe_load(manifest)
        spec = sealed["spec"]
        self.out.detail(
            f"IntegrationSecret {sealed['metadata']['name']}: key API_KEY, keyId {spec['keyId']}, "
            f"encryptedValue {spec['encryptedValue'][:24]}... ({len(spec['encryptedValue'])} "
            "characters; the value itself is never printed)"
        )
        cli(
            "kubectl",
            "apply",
            "-n",
            NAMESPACE,
            "-f",
            "-",
            stdin=manifest,
            what="applying the sealed secret",
        )
        name = sealed["metadata"]["name"]
        status = wait_for(
            "the operator to check the sealed secret",
            lambda: (self._get("integrationsecrets", name).get("status") or {}).get("state"),
            seconds=60,
        )
        self.out.detail(f"the operator checked it: {status}")

        self.out.step(
            f"applying Integration {INTEGRATION}: inline code that posts the "
            "invoice's fields to the sink"
        )
        assert self.sink is not None
        sink_port = self.sink.url.rsplit(":", 1)[1]
        sink_url = f"http://{SINK_NAME}:{sink_port}"
        integration = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Integration",
            "metadata": {"name": INTEGRATION},
            "spec": {
                "workspace": WORKSPACE,
                "documentType": DOCTYPE,
                "trigger": "DocumentParseCompleted",
                "secrets": ["API_KEY"],
                "timeoutSeconds": 60,
                "retry": {"maxAttempts": 2, "backoffBaseSeconds": 5, "backoffCapSeconds": 5},
                "code": CODE.format(sink=sink_url),
                # Where the code may connect, through the egress proxy; the sink is on
                # loopback, which also needs its cidr.
                "egress": {"hosts": [f"{SINK_NAME}:{sink_port}"], "cidrs": ["127.0.0.1/32"]},
            },
        }
        (self.state_dir / "docrelay" / "integration.yaml").write_text(yaml.safe_dump(integration))
        for line in CODE.format(sink=sink_url).splitlines():
            self.out.detail(f"  | {line}")
        applied = cli(
            "kubectl",
            "apply",
            "-n",
            NAMESPACE,
            "-f",
            "-",
            stdin=yaml.safe_dump(integration),
            what="applying the Integration",
        )
        self.out.detail(f"$ kubectl apply -f integration.yaml: {applied.strip()}")

        def ready() -> dict[str, Any] | None:
            self.operator.check()
            status = self._get("integrations", INTEGRATION).get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            if conditions.get("Ready", {}).get("status") == "True":
                return status
            return None

        status = wait_for("the Integration to be Ready", ready, seconds=90)
        self.out.detail(
            f"Ready: revision {status.get('deployedRevision')} deployed, its secret "
            "and code checked"
        )
        wait_for(
            "the gateway's index to see the Integration",
            lambda: httpx.get(f"{self.gateway_url}/healthz", timeout=2).json()["integrations"],
        )

    def deliver_and_follow(self) -> None:
        assert self.platform is not None
        self.out.step(f"the platform stand-in sends a signed {EVENT} for invoice {DOCUMENT}")
        started = time.monotonic()
        (delivery,) = self.platform.deliver(EVENT, DOCUMENT)
        took = (time.monotonic() - started) * 1000
        self.first_delivery = delivery
        if not delivery.ok:
            raise DemoError(
                f"the gateway refused the delivery: {delivery.status} "
                f"{delivery.error}\n{self.gateway.tail()}"
            )
        self.out.detail(
            f"POST {delivery.target_url} (X-Hook-Signature: <timestamp>.<HMAC>) "
            f"-> {delivery.status} in {took:.0f} ms"
        )
        runs = self._runs()
        if len(runs) != 1:
            raise DemoError(f"expected one IntegrationRun, found {len(runs)}")
        self.run_name = runs[0]["metadata"]["name"]
        self.out.detail(f"the gateway created IntegrationRun {self.run_name}")
        self.summary["gateway"] = (
            f"{delivery.status} in {took:.0f} ms; IntegrationRun {self.run_name}"
        )
        self.out.step(
            "following the run: its phases, its log (from the pod, secrets masked) "
            "and what the sink receives"
        )
        status = self._follow_run()
        if status.get("phase") != "Succeeded":
            raise DemoError(
                f"the run ended {status.get('phase')}: {status.get('errorClass')} "
                f"{status.get('errorMessage')}\n{self.operator.tail()}"
            )
        elapsed = time.monotonic() - started
        self.summary["run"] = (
            f"Succeeded on attempt {status.get('attempt')}, {elapsed:.1f}s "
            f"after the event: {status.get('resultSummary')!r}"
        )

    def _follow_run(self) -> dict[str, Any]:
        last: tuple[Any, ...] = ()
        follower: tuple[subprocess.Popen[str], threading.Thread] | None = None
        deadline = time.monotonic() + 120
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.operator.check()
            status = self._get("integrationruns", self.run_name).get("status") or {}
            phase = status.get("phase")
            if phase in FINISHED:
                break
            now = (phase, status.get("attempt"), status.get("jobName"))
            if now != last and phase:
                self.out.detail(self._phase_line(status))
                last = now
            if follower is None and status.get("jobName"):
                follower = self._follow_log()
            time.sleep(0.2)
        else:
            raise DemoError(f"the run did not finish in 120s; last status: {status}")
        # The log first (the pod wrote it before the run finished), then the final phase.
        process, pump = follower or self._follow_log()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.terminate()
        pump.join(5)
        self.out.detail(self._phase_line(status))
        return status

    @staticmethod
    def _phase_line(status: dict[str, Any]) -> str:
        extra = f", attempt {status['attempt']}" if status.get("attempt") else ""
        job = f", Job {status['jobName']}" if status.get("jobName") else ""
        return f"phase: {status.get('phase')}{extra}{job}"

    def _follow_log(self) -> tuple[subprocess.Popen[str], threading.Thread]:
        """`docrelay logs -f`: the pod's log while it runs, else the stored, masked copy."""
        process = subprocess.Popen(
            [sys.executable, "-m", "docrelay.cli", "logs", "-f", self.run_name, "-n", NAMESPACE],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1"},
        )
        self.followers.append(process)
        stdout = process.stdout
        assert stdout is not None

        def pump(stream: IO[str]) -> None:
            for line in stream:
                self.out.detail(f"log  | {line.rstrip()}", source="the run's log")

        thread = threading.Thread(target=pump, args=(stdout,), daemon=True)
        thread.start()
        return process, thread

    def on_sink(self, item: Received) -> None:
        headers = dict(item.headers)
        key = headers.pop("x-api-key", None)
        try:
            body = json.dumps(item.json(), separators=(", ", ": "))
        except ValueError:
            body = item.body[:200].decode(errors="replace")
        if key is None:
            check = "no X-Api-Key header"
        elif secrets.compare_digest(key.encode(), self.api_key.encode()):
            check = "X-Api-Key: *** (the sealed API key, decrypted only inside the run)"
        else:
            check = "X-Api-Key: *** (NOT the sealed value)"
        self.out.detail(f"sink | {item.method} {item.path} {body}", source="the sink")
        self.out.detail(f"sink | {check}")

    def redeliver(self) -> None:
        assert self.platform is not None
        self.out.step("the platform redelivers the same event (as it does after a timeout)")
        # The same event: the same body (its timestamp is the event's), signed afresh.
        moment = json.loads(self.first_delivery.body)["timestamp"]
        (delivery,) = self.platform.deliver(EVENT, DOCUMENT, timestamp=moment)
        runs = self._runs()
        self.out.detail(
            f"-> {delivery.status}; IntegrationRuns in {NAMESPACE}: {len(runs)} "
            "(the run's name comes from the event, so nothing new was created)"
        )
        if not delivery.ok or len(runs) != 1:
            raise DemoError(
                f"the redelivery was answered {delivery.status} and left "
                f"{len(runs)} runs; expected 2xx and 1"
            )
        self.summary["redelivery"] = f"{delivery.status}, no new run"

    def print_summary(self) -> None:
        assert self.sink is not None
        bills = [r for r in self.sink.received if r.path == "/bills"]
        if len(bills) != 1:
            raise DemoError(f"the sink received {len(bills)} bills; expected 1")
        if not secrets.compare_digest(
            bills[0].headers.get("x-api-key", "").encode(), self.api_key.encode()
        ):
            raise DemoError("the sink did not receive the sealed API key")
        bill = bills[0].json()
        self.out.step("summary")
        rows = {
            "event": f"{EVENT} for {DOCUMENT} (workspace {WORKSPACE}, type {DOCTYPE}), "
            "signed by the platform stand-in",
            **self.summary,
            "sink": f"POST /bills {bill['invoiceNumber']}, {bill['supplier']}, "
            f"{bill['total']} {bill['currency']}, with the API key header",
            "secret": "sealed on this machine, decrypted only in the run's pod, masked in its "
            "log, never printed here",
        }
        for label, text in rows.items():
            self.out.detail(f"{label:<11} {text}")

    def explore(self, keep: bool) -> None:
        venv_bin = Path(sys.executable).parent
        self.out.line("")
        self.out.line(
            "Explore (in another terminal):"
            if keep
            else "To explore, run it again with --keep (make demo DEMO_ARGS=--keep), then:"
        )
        lines = [
            f"export KUBECONFIG={self.cluster_kubeconfig}",
            f'export PATH="{toolchain.bin_dir()}:{venv_bin}:$PATH"   # kubectl, docrelay',
            f"kubectl -n {NAMESPACE} get integrations,integrationruns,integrationsecrets",
            f"kubectl -n {NAMESPACE} describe integrationrun {self.run_name}",
            f"docrelay runs -n {NAMESPACE}",
            f"docrelay logs {self.run_name} -n {NAMESPACE}",
            f"docrelay secret list -n {NAMESPACE}",
            f"kubectl -n {rbac.keys_namespace(NAMESPACE)} get secret docrelay-sealing-keys"
            "   # the private keys: not in the tenant's namespace",
            f"docrelay revisions {INTEGRATION} -n {NAMESPACE}",
            f"kubectl docrelay runs -n {NAMESPACE}    # the same, as a kubectl plugin",
        ]
        for line in lines:
            self.out.line(f"    {line}")
        self.out.line(
            f"    logs: {self.state_dir / 'docrelay'} (operator, gateway), "
            f"{self.state_dir / 'cluster' / 'logs'} (control plane, node)"
        )

    # -- helpers --------------------------------------------------------------------------------

    def _get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
        )

    def _runs(self) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "integrationruns"
        )
        return list(listed["items"])

    def failure_logs(self) -> None:
        for process in self.processes:
            if process.log_path.exists():
                self.out.line(
                    f"--- the end of the {process.name}'s log ({process.log_path}):",
                    source=process.name,
                )
                for line in process.tail().splitlines():
                    self.out.line(line, source=process.name)
        if self.cluster is not None:
            self.out.line(f"control plane and node logs: {self.cluster.log_dir}")

    def teardown(self) -> None:
        """Stop everything this demo started, newest first; the cluster (and its node, which
        kills its pods) last."""
        for follower in self.followers:
            if follower.poll() is None:
                follower.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    follower.wait(5)
        for process in reversed(self.processes):
            process.stop()
        for stop in reversed(self.servers):
            with contextlib.suppress(Exception):
                stop()
        if self.cluster is not None:
            self.cluster.stop()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so teardown runs (SIGINT too, even where a
    shell started the demo with it ignored)."""

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = {
        s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.demo",
        description="The whole docrelay story on this machine: a signed document event in, a "
        "sandboxed run, its log, the export to a local sink. Stops everything at the end.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the cluster, operator, gateway, stand-in and sink running after the story, "
        "until Ctrl-C, to explore with kubectl and docrelay",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("DOCRELAY_DEMO_DIR", DEFAULT_STATE_DIR)),
        help="where the cluster's state and every log go; emptied first "
        "(default: $DOCRELAY_DEMO_DIR, else .devkit/demo)",
    )
    args = parser.parse_args(argv)
    out = Output()
    # The sink's API key: random, or given (tests pass a canary to check it is never printed).
    api_key = os.environ.get("DOCRELAY_DEMO_API_KEY") or f"sk-demo-{secrets.token_hex(16)}"
    out.secret(api_key)  # from here on, every printed line is checked for it
    demo = Demo(args.state_dir, out, api_key)
    code = 0
    with terminate_as_interrupt():
        try:
            demo.run()
            if out.leaks:
                raise DemoError(f"the secret appeared unmasked in: {', '.join(set(out.leaks))}")
            demo.explore(args.keep)
            if args.keep:
                out.line("")
                out.line("Everything keeps running; press Ctrl-C to stop it all.")
                while True:
                    for process in demo.processes:
                        process.check()
                    time.sleep(1)
        except DemoError as exc:
            out.line(f"\ndemo failed: {exc}", source="the failure")
            demo.failure_logs()
            code = 1
        except KeyboardInterrupt:
            out.line("\ninterrupted")
            code = 0 if args.keep and demo.run_name and not out.leaks else 130
        except Exception as exc:  # anything else: say what, then tear down
            out.line(f"\ndemo failed: {type(exc).__name__}: {exc}", source="the failure")
            demo.failure_logs()
            code = 1
        finally:
            out.step("stopping everything the demo started")
            try:
                demo.teardown()
            except KeyboardInterrupt:
                demo.teardown()
    if code == 0:
        out.line("done: the operator, gateway, stand-in, sink and cluster are stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
