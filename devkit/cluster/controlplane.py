"""The real Kubernetes control plane, and the local node, as processes on loopback.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream binaries
(built by ``devkit.toolchain``); the local node (``devkit.localnode``) runs the pods the
scheduler binds to it. A ``Cluster`` either owns its processes (tests: started and stopped
by one Python process) or is persistent (``make cluster-up``): its processes are detached,
their ids recorded in the state directory, and a later ``down`` stops them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devkit import toolchain
from devkit.cluster import kubeconfig, pki

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
NODE_NAME = "local-node"
BROKER_AUDIENCE = "docrelay-broker"

# The controllers our tests and product rely on; anything not listed stays off so the
# control plane starts fast and logs little. Names are kube-controller-manager's own.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "replicaset-controller",
    "deployment-controller",
    "disruption-controller",
    "endpointslice-controller",
    # Fills the built-in aggregated roles (admin, edit, view) as in every real cluster: tests
    # bind people to them (tests/cluster/test_key_custody.py).
    "clusterrole-aggregation-controller",
)

Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster could not start or stop; the message names the component and its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ports:
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)
    scheduler: int = field(default_factory=free_port)


class Cluster:
    """One local cluster under ``state_dir``: PKI, kubeconfigs, data, logs, process ids."""

    def __init__(
        self,
        state_dir: Path,
        *,
        with_node: bool = True,
        advertise_address: str | None = None,
        audit: bool = False,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.with_node = with_node
        # The API server's audit log (`audit_log`, JSON lines, one per request at Metadata
        # level): what benchmarks count a process's calls from (bench/bench_api_calls.py).
        self.audit = audit
        # A real node's pods reach the API server through the `kubernetes` Service: it must
        # listen beyond loopback and advertise this address (devkit.realnode, inside its own
        # network namespace). None: loopback only, as the local node needs.
        self.advertise_address = advertise_address
        self.pki = pki.Pki(self.state_dir / "pki")
        self.log_dir = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "admin.kubeconfig"
        self.ports = Ports()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._pids: dict[str, int] = {}

    # -- paths other tools need -------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.pki.directory

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def audit_log(self) -> Path:
        """The audit log's file (with `audit=True`); not under logs/, which failures print."""
        return self.state_dir / "audit" / "audit.jsonl"

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        policy = self.audit_log.parent / "policy.yaml"
        # Metadata: who, which verb on what, when; never a body. One event per request at its
        # end (a watch: when it ends, and ResponseStarted when it opens).
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n- level: Metadata\n"
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ]

    @property
    def etcd_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.ports.etcd_client}"

    def etcdctl_env(self) -> dict[str, str]:
        """What etcdctl needs to reach this cluster's etcd (TLS, etcd's admin client
        certificate): merge into its environment."""
        return {
            "ETCDCTL_ENDPOINTS": self.etcd_endpoint,
            "ETCDCTL_CACERT": str(self.pki.etcd_ca_cert),
            "ETCDCTL_CERT": str(self.pki.cert("etcd-admin-client")),
            "ETCDCTL_KEY": str(self.pki.key("etcd-admin-client")),
        }

    @property
    def bin_dir(self) -> Path:
        """Directory of the kubectl this cluster was started with (put it on PATH)."""
        return toolchain.ensure("kubectl").parent

    def logs(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.log_dir.glob("*.log"))}

    def log_tails(self, lines: int = 40) -> str:
        """The end of every component's log, for a failing test's report."""
        chunks = []
        for name, path in self.logs().items():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"----- {name} ({path}) -----\n" + "\n".join(tail))
        return "\n".join(chunks)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, timeout: float = 90, log: Log | None = None, detach: bool = False) -> None:
        """Start every component and wait until each is ready; on failure stop them all."""
        say = log or (lambda m: print(m, file=sys.stderr, flush=True))
        started = time.monotonic()
        binaries = {b: toolchain.ensure(b, log=say) for b in (
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl",
        )}
        toolchain.link_bin_dir(binaries)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        pki.generate(self.pki.directory)
        self._write_kubeconfigs()
        deadline = started + timeout
        try:
            self._spawn("etcd", self._etcd_args(binaries["etcd"]), detach)
            self._wait("etcd", self._etcd_healthy, deadline)
            self._spawn("kube-apiserver", self._apiserver_args(binaries["kube-apiserver"]), detach)
            self._wait("kube-apiserver", lambda: self._https_ok(self.ports.apiserver, "/readyz"),
                       deadline)
            self._spawn("kube-controller-manager",
                        self._controller_manager_args(binaries["kube-controller-manager"]), detach)
            self._spawn("kube-scheduler", self._scheduler_args(binaries["kube-scheduler"]), detach)
            if self.with_node:
                self._spawn("local-node", self._node_args(), detach)
            self._wait("kube-controller-manager",
                       lambda: self._https_ok(self.ports.controller_manager, "/healthz",
                                              verify=False), deadline)
            self._wait("kube-scheduler",
                       lambda: self._https_ok(self.ports.scheduler, "/healthz", verify=False),
                       deadline)
            # The default ServiceAccount appearing proves the controllers are working.
            self._wait("kube-controller-manager",
                       lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
                       deadline)
            if self.with_node:
                self._wait("local-node", self._node_ready, deadline)
        except BaseException:
            self.stop()
            raise
        self._save_state()
        say(f"[cluster] ready in {time.monotonic() - started:.1f}s: {self.server}")

    def stop(self, *, grace: float = 10) -> None:
        """Stop every component, the node first (it kills its pods), etcd last."""
        order = ["local-node", "kube-scheduler", "kube-controller-manager", "kube-apiserver",
                 "etcd"]
        for name in order:
            pid = self._pids.get(name)
            if pid is not None:
                _terminate(pid, self._processes.get(name), grace)
        self._processes.clear()
        self._pids.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "cluster.json").unlink()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- persistent clusters ------------------------------------------------------------------

    def _save_state(self) -> None:
        state = {"ports": self.ports.__dict__, "pids": self._pids, "with_node": self.with_node}
        (self.state_dir / "cluster.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, state_dir: Path) -> Cluster | None:
        """The running cluster recorded in ``state_dir``, or None if there is none."""
        state_file = state_dir / "cluster.json"
        if not state_file.exists():
            return None
        state = json.loads(state_file.read_text())
        cluster = cls(state_dir, with_node=state["with_node"])
        cluster.ports = Ports(**state["ports"])
        cluster._pids = {name: int(pid) for name, pid in state["pids"].items()}
        return cluster

    def pid(self, name: str) -> int | None:
        """The process id of a component ("kube-apiserver", "etcd", ...), if it was started."""
        return self._pids.get(name)

    def alive(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self._pids.items()}

    def healthy(self) -> bool:
        return bool(self._pids) and all(self.alive().values()) and self._https_ok(
            self.ports.apiserver, "/readyz"
        )

    # -- component command lines --------------------------------------------------------------

    def _etcd_args(self, etcd: Path) -> list[str]:
        peer = f"https://127.0.0.1:{self.ports.etcd_peer}"
        p = self.pki
        return [
            str(etcd),
            "--name=docrelay",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_endpoint}",
            f"--advertise-client-urls={self.etcd_endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=docrelay={peer}",
            # TLS with client certificates from etcd's own CA on both ports, as kubeadm
            # sets it up: nothing without one of etcd's client certificates gets in.
            f"--cert-file={p.cert('etcd-server')}",
            f"--key-file={p.key('etcd-server')}",
            f"--trusted-ca-file={p.etcd_ca_cert}",
            "--client-cert-auth=true",
            f"--peer-cert-file={p.cert('etcd-server')}",
            f"--peer-key-file={p.key('etcd-server')}",
            f"--peer-trusted-ca-file={p.etcd_ca_cert}",
            "--peer-client-cert-auth=true",
            # A throwaway cluster: durability across power loss is not worth the fsyncs.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self, apiserver: Path) -> list[str]:
        p = self.pki
        return [
            str(apiserver),
            f"--etcd-servers={self.etcd_endpoint}",
            f"--etcd-cafile={p.etcd_ca_cert}",
            f"--etcd-certfile={p.cert('apiserver-etcd-client')}",
            f"--etcd-keyfile={p.key('apiserver-etcd-client')}",
            f"--bind-address={'0.0.0.0' if self.advertise_address else '127.0.0.1'}",
            # Without an explicit address it looks for a default route and dies without one.
            f"--advertise-address={self.advertise_address or '127.0.0.1'}",
            f"--secure-port={self.ports.apiserver}",
            f"--tls-cert-file={p.cert('apiserver')}",
            f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.service_account_pub}",
            f"--service-account-signing-key-file={p.service_account_key}",
            f"--kubelet-client-certificate={p.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={p.key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--requestheader-client-ca-file={p.path('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.cert('front-proxy-client')}",
            f"--proxy-client-key-file={p.key('front-proxy-client')}",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            # The `kubernetes` Service cannot point at loopback; pods reach the API server
            # through KUBERNETES_SERVICE_HOST/PORT, which the local node sets to it.
            f"--endpoint-reconciler-type={'lease' if self.advertise_address else 'none'}",
            "--profiling=false",
            "--v=1",
            *self._audit_args(),
        ]

    def _controller_manager_args(self, kcm: Path) -> list[str]:
        config = self.state_dir / "kube-controller-manager.kubeconfig"
        return [
            str(kcm),
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            "--leader-elect=false",
            f"--controllers={','.join(CONTROLLERS)}",
            # Each controller acts with its own ServiceAccount's rights, as in kubeadm.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--cert-dir={self.state_dir / 'kcm-certs'}",
            "--profiling=false",
            "--v=1",
        ]

    def _scheduler_args(self, scheduler: Path) -> list[str]:
        config = self.state_dir / "kube-scheduler.kubeconfig"
        return [
            str(scheduler),
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.scheduler}",
            "--leader-elect=false",
            f"--cert-dir={self.state_dir / 'scheduler-certs'}",
            "--profiling=false",
            "--v=1",
        ]

    def _node_args(self) -> list[str]:
        return [
            sys.executable, "-m", "devkit.localnode",
            f"--kubeconfig={self.kubeconfig}",
            f"--ca-cert={self.pki.ca_cert}",
            f"--ca-key={self.pki.ca_key}",
            f"--state-dir={self.state_dir / 'node'}",
            f"--node-name={NODE_NAME}",
            # Pods see none of the cluster's state: PKI, etcd data, kubeconfigs, logs.
            f"--hide-path={self.state_dir}",
            # Nor reach a control-plane port, whatever a pod's env names.
            *(f"--never-forward={port}" for port in (
                self.ports.etcd_client, self.ports.etcd_peer, self.ports.controller_manager,
                self.ports.scheduler)),
        ]

    def _write_kubeconfigs(self) -> None:
        for identity, path in (
            ("admin", self.kubeconfig),
            ("kube-controller-manager", self.state_dir / "kube-controller-manager.kubeconfig"),
            ("kube-scheduler", self.state_dir / "kube-scheduler.kubeconfig"),
        ):
            kubeconfig.write(
                path, server=self.server, ca=self.pki.ca_cert, cert=self.pki.cert(identity),
                key=self.pki.key(identity), user=identity,
            )

    # -- processes and probes -----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], detach: bool) -> None:
        log_path = self.log_dir / f"{name}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), str(REPO_ROOT / "operator"), env.get("PYTHONPATH")) if p
        )
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                # Its own session: Ctrl-C in a terminal reaches us, and we stop it in order.
                start_new_session=True,
            )
        self._pids[name] = process.pid
        if not detach:
            self._processes[name] = process

    def _wait(self, name: str, ready: Callable[[], bool], deadline: float) -> None:
        while time.monotonic() < deadline:
            pid = self._pids.get(name)
            if pid is not None and not _pid_alive(pid, self._processes.get(name)):
                raise ClusterError(f"{name} exited during start-up; its log:\n"
                                   + self._tail(name))
            try:
                if ready():
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        raise ClusterError(f"{name} was not ready in time; its log:\n" + self._tail(name))

    def _tail(self, name: str, lines: int = 60) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"{path}:\n" + "\n".join(text)

    def _etcd_healthy(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki.etcd_ca_cert))
        context.load_cert_chain(self.pki.cert("etcd-admin-client"),
                                self.pki.key("etcd-admin-client"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.ports.etcd_client,
                                           context=context, timeout=2)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            return response.status == 200 and b'"true"' in response.read()
        finally:
            conn.close()

    def _tls(self, verify: bool = True) -> ssl.SSLContext:
        if not verify:  # controller-manager and scheduler serve self-signed health endpoints
            return ssl._create_unverified_context()
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(self.pki.cert("admin"), self.pki.key("admin"))
        return context

    def _https_get(self, port: int, path: str, verify: bool = True) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=self._tls(verify), timeout=3)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _https_ok(self, port: int, path: str, verify: bool = True) -> bool:
        return self._https_get(port, path, verify)[0] == 200

    def _api_ok(self, path: str) -> bool:
        return self._https_ok(self.ports.apiserver, path)

    def _node_ready(self) -> bool:
        status, body = self._https_get(self.ports.apiserver, f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _pid_alive(pid: int, process: subprocess.Popen[bytes] | None = None) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A detached child of a process that exited is reaped by init; a zombie is not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _terminate(pid: int, process: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM the component's whole process group, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid, process):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


@contextlib.contextmanager
def running(state_dir: Path, **kwargs: object) -> Iterator[Cluster]:
    cluster = Cluster(state_dir, **kwargs)  # type: ignore[arg-type]
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
