"""The local node under the real control plane: Jobs run, fail, time out and get cleaned up
as they would on a kubelet; pods see their Secrets, ConfigMaps and bound tokens; memory
limits hold; logs come back through the API server. And what hostile code in a pod made as
the product makes run pods (uid 65532, read-only root) cannot do: reach etcd, the API
server or any loopback port but its forwarded ones, read another pod's files, the checkout
or the cluster's state and logs, or exhaust the machine's processes or memory."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from devkit import toolchain
from devkit.cluster import Cluster
from devkit.cluster.controlplane import NODE_NAME, REPO_ROOT
from devkit.toolchain import node as node_toolchain
from tests.cluster.harness import WAIT_SECONDS, eventually

pytestmark = pytest.mark.cluster

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS) -> T:
    """Until `check` returns something (harness.eventually polls; errors fail at once)."""
    return eventually(check, bool, what, timeout, not_yet=lambda _: False)


def job(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "python:3.11",
                                    "command": command}],
                }
            },
        },
    }


def job_condition(api: client.ApiClient, namespace: str, name: str) -> dict[str, str] | None:
    """The Job's Complete or Failed condition once it has one."""
    found = client.BatchV1Api(api).read_namespaced_job(name, namespace)
    for condition in (found.status.conditions or []) if found.status else []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return {"type": condition.type, "reason": condition.reason or ""}
    return None


def job_pod(api: client.ApiClient, namespace: str, name: str) -> client.V1Pod | None:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"job-name={name}").items
    return pods[0] if pods else None


def pod_finished(api: client.ApiClient, namespace: str, name: str) -> client.V1Pod | None:
    pod = client.CoreV1Api(api).read_namespaced_pod(name, namespace)
    return pod if pod.status and pod.status.phase in ("Succeeded", "Failed") else None


def test_job_completes_its_log_reads_42_and_deleting_it_removes_the_pod(
    api: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(namespace, job("answer", ["python", "-c", "print(42)"]))

    assert wait_for(lambda: job_condition(api, namespace, "answer"), "the Job to finish") == {
        "type": "Complete", "reason": "CompletionsReached"}
    pod = job_pod(api, namespace, "answer")
    assert pod is not None
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace) == "42\n"
    status = pod.status.container_statuses[0]
    assert status.state.terminated.exit_code == 0
    assert status.state.terminated.reason == "Completed"
    assert status.container_id.startswith("localnode://")
    assert pod.status.pod_ip == "127.0.0.1"

    batch.delete_namespaced_job("answer", namespace, propagation_policy="Background")
    wait_for(lambda: job_pod(api, namespace, "answer") is None, "the Job's pod to be deleted")


def test_log_endpoint_honours_tail_limit_timestamps_and_follow(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "counter"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "python:3.11",
            "command": ["python", "-u", "-c",
                        "import time\nfor i in range(5):\n print(f'line {i}'); time.sleep(0.4)"],
        }]},
    })
    wait_for(lambda: core.read_namespaced_pod("counter", namespace).status.phase == "Running",
             "the pod to run")
    # follow streams until the container ends, so it sees all five lines.
    followed = core.read_namespaced_pod_log("counter", namespace, follow=True)
    assert followed == "".join(f"line {i}\n" for i in range(5))

    assert core.read_namespaced_pod_log("counter", namespace, tail_lines=2) == "line 3\nline 4\n"
    assert core.read_namespaced_pod_log("counter", namespace, limit_bytes=8) == "line 0\nl"
    stamped = core.read_namespaced_pod_log("counter", namespace, timestamps=True, tail_lines=1)
    stamp, text = stamped.split(" ", 1)
    assert text == "line 4\n"
    assert stamp.endswith("Z") and "T" in stamp


def test_failed_job_reports_exit_code_and_termination_message(
    api: client.ApiClient, namespace: str
) -> None:
    script = ("open('/dev/termination-log', 'w').write('broker refused the document')\n"
              "raise SystemExit(3)")
    client.BatchV1Api(api).create_namespaced_job(namespace, job("refused", ["python", "-c",
                                                                            script]))

    condition = wait_for(lambda: job_condition(api, namespace, "refused"), "the Job to end")
    assert condition["type"] == "Failed"
    pod = job_pod(api, namespace, "refused")
    assert pod is not None and pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (
        3, "Error", "broker refused the document")


def test_a_node_image_runs_the_pinned_node_of_its_line_and_an_unpinned_line_cannot_start(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    for name, image in [("node22", "node:22-bookworm-slim"), ("node18", "node:18")]:
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": image, "command": ["node", "--version"]}]},
        })
    wait_for(lambda: pod_finished(api, namespace, "node22"), "the node:22 pod to end")
    assert core.read_namespaced_pod_log("node22", namespace) == (
        f"v{node_toolchain.pin('22').version}\n")
    pod = wait_for(lambda: pod_finished(api, namespace, "node18"), "the node:18 pod to end")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (
        128, "StartError", "the local node has no Node.js 18 for image node:18: no pinned "
        f"Node.js 18; pinned: {', '.join(node_toolchain.PINS)} (devkit/toolchain/node.py)")


def test_job_deadline_fails_it_and_kills_the_process(
    api: client.ApiClient, namespace: str, cluster: Cluster
) -> None:
    client.BatchV1Api(api).create_namespaced_job(
        namespace, job("slow", ["sleep", "60"], activeDeadlineSeconds=5))  # room to see it run

    # The node records each container's host pid under <node state dir>/pods/<uid>/pids/.
    def host_pid() -> int | None:
        pod = job_pod(api, namespace, "slow")
        if pod is None or not pod.status or pod.status.phase != "Running":
            return None
        pid_file = cluster.state_dir / "node" / "pods" / pod.metadata.uid / "pids" / "main"
        return int(pid_file.read_text()) if pid_file.exists() else None

    pid = wait_for(host_pid, "the container to run")
    assert Path(f"/proc/{pid}").exists()

    assert wait_for(lambda: job_condition(api, namespace, "slow"), "the Job to fail") == {
        "type": "Failed", "reason": "DeadlineExceeded"}
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the container process to be gone",
             timeout=10)


def test_pod_sees_secret_env_configmap_file_and_a_token_bound_to_it(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"api-key": "not-a-real-key"}})
    core.create_namespaced_config_map(namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"mode.txt": "strict"}})
    script = ("import os\n"
              "print(os.environ['API_KEY'])\n"
              "print(open('/etc/docrelay/mode.txt').read())\n"
              "print(open('/var/run/secrets/docrelay/token').read())")
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
            "containers": [{
                "name": "main", "image": "python:3.11", "command": ["python", "-c", script],
                "securityContext": {"readOnlyRootFilesystem": True},
                "env": [{"name": "API_KEY", "valueFrom": {
                    "secretKeyRef": {"name": "creds", "key": "api-key"}}}],
                "volumeMounts": [
                    {"name": "settings", "mountPath": "/etc/docrelay"},
                    {"name": "token", "mountPath": "/var/run/secrets/docrelay",
                     "readOnly": True},
                ],
            }],
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "docrelay-broker", "expirationSeconds": 600,
                    "path": "token"}}]}},
            ],
        },
    })

    pod = wait_for(lambda: pod_finished(api, namespace, "reader"), "the pod to finish")
    output = core.read_namespaced_pod_log("reader", namespace)
    assert pod.status.phase == "Succeeded", output
    secret_line, file_line, token = output.split("\n")[:3]
    assert (secret_line, file_line) == ("not-a-real-key", "strict")

    review = client.AuthenticationV1Api(api).create_token_review({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["docrelay-broker"]}})
    assert review.status.authenticated, review.status.error
    assert review.status.user.username == f"system:serviceaccount:{namespace}:default"
    extra = review.status.user.extra
    assert extra["authentication.kubernetes.io/pod-name"] == ["reader"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [pod.metadata.uid]


def test_container_beyond_its_memory_limit_is_oomkilled(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hungry"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "python:3.11",
            "command": ["python", "-c", "block = bytearray(512 * 1024 * 1024)"],
            "resources": {"limits": {"memory": "64Mi"}},
        }]},
    })

    pod = wait_for(lambda: pod_finished(api, namespace, "hungry"), "the pod to end")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.reason, terminated.exit_code) == (
        "Failed", "OOMKilled", 137)


def test_on_failure_restarts_until_success(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    # First run fails and leaves a mark in the emptyDir; the restart sees it and succeeds.
    script = ("import os, sys\n"
              "if os.path.exists('/scratch/ran'): sys.exit(0)\n"
              "open('/scratch/ran', 'w').close(); sys.exit(1)")
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "retry"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [{"name": "main", "image": "python:3.11",
                            "command": ["python", "-c", script],
                            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    })

    pod = wait_for(lambda: pod_finished(api, namespace, "retry"), "the pod to end")
    status = pod.status.container_statuses[0]
    assert (pod.status.phase, status.restart_count) == ("Succeeded", 1)
    assert status.last_state.terminated.exit_code == 1


def test_deleting_a_namespace_with_running_pods_completes(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = f"t-doomed-{int(time.time() * 1000) % 100000}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": name}})
    wait_for(lambda: _exists(lambda: core.read_namespaced_service_account("default", name)),
             "the default ServiceAccount")
    client.BatchV1Api(api).create_namespaced_job(name, job("sleeper", ["sleep", "300"]))
    wait_for(lambda: (p := job_pod(api, name, "sleeper")) is not None
             and p.status.phase == "Running", "the Job's pod to run")

    core.delete_namespace(name)
    wait_for(lambda: not _exists(lambda: core.read_namespace(name)),
             "the namespace to be gone", timeout=90)


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_etcd_answers_only_clients_with_its_own_certificates(cluster: Cluster) -> None:
    port = cluster.ports.etcd_client
    # Plain HTTP, as etcd used to serve: no answer from etcd.
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        plain.request("GET", "/health")
        answer = plain.getresponse()
        assert (answer.status, b"health" in answer.read()) != (200, True)
    except (OSError, http.client.HTTPException):
        pass  # dropped: the TLS listener does not speak plain HTTP
    finally:
        plain.close()
    # TLS without a client certificate, and with the cluster CA's admin certificate (the
    # local node holds that CA's key): refused in the handshake.
    for cert in (None, "admin"):
        context = ssl.create_default_context(cafile=str(cluster.pki.etcd_ca_cert))
        if cert:
            context.load_cert_chain(cluster.pki.cert(cert), cluster.pki.key(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        with pytest.raises(ssl.SSLError):
            conn.request("GET", "/health")
            conn.getresponse()
        conn.close()
    # etcd's own client certificate: the keyspace (the API server stores through it too).
    result = subprocess.run(
        [str(toolchain.ensure("etcdctl")), "get", "/registry/namespaces/default",
         "--keys-only"], capture_output=True, text=True, timeout=60,
        env={**os.environ, **cluster.etcdctl_env()})
    assert (result.returncode, result.stdout.strip()) == (0, "/registry/namespaces/default")


# -- hostile code -----------------------------------------------------------------------------

RUN_UID = 65532


def hostile_pod(name: str, script: str, *, env: dict[str, str] | None = None,
                args: list[str] | None = None, memory: str | None = None,
                volumes: list[dict[str, Any]] | None = None,
                mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A pod shaped like the product's run pods: uid 65532, non-root, read-only root, no
    service-account token but a projected broker token, /tmp an emptyDir."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsUser": RUN_UID, "runAsGroup": RUN_UID,
                                "runAsNonRoot": True, "fsGroup": RUN_UID},
            "containers": [{
                "name": "main", "image": "python:3.11",
                "command": ["python", "-c", script, *(args or [])],
                "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                "securityContext": {"readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False},
                **({"resources": {"limits": {"memory": memory}}} if memory else {}),
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "token", "mountPath": "/var/run/secrets/docrelay", "readOnly": True},
                    *(mounts or []),
                ],
            }],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "docrelay-broker", "expirationSeconds": 600, "path": "token"}}]}},
                *(volumes or []),
            ],
        },
    }


class Echo:
    """A loopback TCP server on the machine that answers each connection with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.name} answers".encode())

    def close(self) -> None:
        self.server.close()


PROBE = """
import json, socket, sys
found = {}
for port in sys.argv[1:]:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as conn:
            found[port] = "open: " + conn.recv(100).decode()
    except OSError as exc:
        found[port] = type(exc).__name__
print(json.dumps({"ports": found, "interfaces": [n for _, n in socket.if_nameindex()]}))
"""


def run_to_end(api: client.ApiClient, namespace: str, pod: dict[str, Any]) -> str:
    """Create the pod, wait for it to end, return its log (asserting it succeeded)."""
    core = client.CoreV1Api(api)
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(namespace, pod)
    ended = wait_for(lambda: pod_finished(api, namespace, name), f"pod {name} to end")
    output: str = core.read_namespaced_pod_log(name, namespace)
    assert ended.status.phase == "Succeeded", output
    return output


def test_a_pod_reaches_its_broker_and_proxy_and_no_other_port_of_the_machine(
    api: client.ApiClient, namespace: str, cluster: Cluster
) -> None:
    broker, proxy, other = Echo("broker"), Echo("proxy"), Echo("webhook")
    node = client.CoreV1Api(api).read_node(NODE_NAME)
    log_port = node.status.daemon_endpoints.kubelet_endpoint.port
    refused = {
        "etcd": cluster.ports.etcd_client,
        "etcd peer": cluster.ports.etcd_peer,
        "API server": cluster.ports.apiserver,
        "node log endpoint": log_port,
        "another loopback port (the operator's webhook)": other.port,
    }
    try:
        # As the operator writes them, plus two the node must never forward: proxy
        # variables naming the API server and etcd.
        env = {"DOCRELAY_BROKER_URL": f"http://127.0.0.1:{broker.port}",
               "HTTPS_PROXY": f"http://localhost:{proxy.port}",
               "http_proxy": f"http://127.0.0.1:{cluster.ports.apiserver}",
               "https_proxy": f"http://127.0.0.1:{cluster.ports.etcd_client}"}
        ports = [broker.port, proxy.port, *refused.values()]
        report = json.loads(run_to_end(api, namespace, hostile_pod(
            "prober", PROBE, env=env, args=[str(p) for p in ports])))
        # A pod without those variables gets no way out at all.
        bare = json.loads(run_to_end(api, namespace, hostile_pod(
            "bare", PROBE, args=[str(broker.port), str(proxy.port)])))
    finally:
        for server in (broker, proxy, other):
            server.close()

    assert report["interfaces"] == ["lo"]
    assert report["ports"][str(broker.port)] == "open: broker answers"
    assert report["ports"][str(proxy.port)] == "open: proxy answers"
    for what, port in refused.items():
        assert report["ports"][str(port)] == "ConnectionRefusedError", what
    assert bare["ports"] == {str(broker.port): "ConnectionRefusedError",
                             str(proxy.port): "ConnectionRefusedError"}


READER = """
import json, os, sys
found = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            found[path] = "listed: " + ",".join(sorted(os.listdir(path)))
        else:
            with open(path, "rb") as handle:
                found[path] = "read: %d bytes" % len(handle.read())
    except FileNotFoundError:
        found[path] = "absent"
    except PermissionError:
        found[path] = "denied"
import docrelay.runner  # the product's runtime is all a pod gets of the checkout
print(json.dumps(found))
"""


def test_a_pod_sees_no_other_pod_no_checkout_and_no_cluster_state(
    api: client.ApiClient, namespace: str, cluster: Cluster
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "victim-key"},
        "stringData": {"api-key": "not-a-real-key"}})
    core.create_namespaced_pod(namespace, hostile_pod(
        "victim", "import time; time.sleep(300)",
        volumes=[{"name": "key", "secret": {"secretName": "victim-key"}}],
        mounts=[{"name": "key", "mountPath": "/etc/key", "readOnly": True}]))
    victim = wait_for(lambda: (p := core.read_namespaced_pod("victim", namespace)).status.phase
                      == "Running" and p, "the victim pod to run")
    victim_dir = cluster.state_dir / "node" / "pods" / victim.metadata.uid
    token_files = sorted(victim_dir.glob("files/*/token"))
    assert token_files, "the victim's projected token is where the node keeps it"
    paths = [
        *map(str, token_files), str(victim_dir), str(cluster.state_dir / "node" / "pods"),
        str(cluster.state_dir), str(cluster.state_dir / "logs" / "kube-apiserver.log"),
        str(cluster.pki_dir / "etcd-ca.crt"), str(cluster.pki_dir / "apiserver-etcd-client.key"),
        str(REPO_ROOT / "README.md"), str(REPO_ROOT / ".git"), str(REPO_ROOT / "tests"),
        str(REPO_ROOT / "devkit"), str(REPO_ROOT),
    ]
    try:
        found = json.loads(run_to_end(api, namespace, hostile_pod("reader", READER,
                                                                  args=paths)))
    finally:
        core.delete_namespaced_pod("victim", namespace, grace_period_seconds=0)

    # The checkout shows only what the runtime needs of it: the virtualenv, the package.
    runtime = sorted(p.name for p in REPO_ROOT.iterdir() if p.name in (".venv", "operator"))
    assert found.pop(str(REPO_ROOT)) == "listed: " + ",".join(runtime)
    assert {path: answer for path, answer in found.items()
            if answer not in ("absent", "denied")} == {}


FORK_BOMB = """
import os, time
children = 0
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        print("fork refused after", children, "children:", exc.strerror, flush=True)
        break
    if pid == 0:
        try:
            os.execv("/bin/sleep", ["sleep", "300"])  # each child holds one pid
        finally:
            os._exit(1)
    children += 1
time.sleep(300)
"""


def test_a_fork_bomb_stops_at_the_pod_pids_limit_while_other_pods_run(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, hostile_pod("bomb", FORK_BOMB))

    def refused() -> str | None:
        pod = core.read_namespaced_pod("bomb", namespace)
        if pod.status.phase != "Running":
            return None
        text: str = core.read_namespaced_pod_log("bomb", namespace)
        return text if "fork refused" in text else None

    line = wait_for(refused, "the fork bomb to hit its limit", timeout=180)
    children = int(line.split("after ")[1].split()[0])
    # The pod's 1024 pids (the node's default) hold the container's init, the script and
    # its children: the bomb stops there, nowhere near the machine's own limit.
    assert 1000 <= children < 1024, line
    assert "Resource temporarily unavailable" in line

    # The node still runs pods while the bomb holds every pid it may have.
    assert run_to_end(api, namespace, hostile_pod("bystander", "print(42)")) == "42\n"
    assert core.read_namespaced_pod("bomb", namespace).status.phase == "Running"

    core.delete_namespaced_pod("bomb", namespace, grace_period_seconds=1)
    wait_for(lambda: not _exists(lambda: core.read_namespaced_pod("bomb", namespace)),
             "the bomb's pod to be gone", timeout=90)


MEMORY_HOG = """
chunks = []
while True:
    chunks.append(bytearray(8 * 1024 * 1024))  # zero-filled: every page is touched
"""


def test_a_memory_hog_is_oomkilled_at_its_limit_while_other_pods_run(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, hostile_pod("hog", MEMORY_HOG, memory="96Mi"))
    assert run_to_end(api, namespace, hostile_pod("bystander", "print(42)")) == "42\n"

    pod = wait_for(lambda: pod_finished(api, namespace, "hog"), "the hog to end")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.reason, terminated.exit_code) == (
        "Failed", "OOMKilled", 137)
