"""The Node object: registration, heartbeat (status and a Lease), and leaving on shutdown."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from devkit.localnode.kube import Kube, KubeError
from devkit.localnode.objects import NODE_IP, Obj, rfc3339, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
LEASE_SECONDS = 40
LEASE_NAMESPACE = "kube-node-lease"
MAX_PODS = 110
RUNTIME_VERSION = "localnode://0.1.0"
CONDITION_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x"}


@dataclass(frozen=True)
class Machine:
    """Facts about this machine, read once."""

    cpus: int
    memory_kib: int
    storage_bytes: int
    hostname: str
    kernel: str
    os_image: str
    arch: str
    machine_id: str
    boot_id: str

    @classmethod
    def read(cls, state_dir: Path) -> Machine:
        return cls(
            cpus=os.cpu_count() or 1,
            memory_kib=_meminfo_total_kib(),
            storage_bytes=shutil.disk_usage(state_dir).total,
            hostname=_loopback_hostname(),
            kernel=platform.release(),
            os_image=_os_release(),
            arch=_ARCH.get(platform.machine(), platform.machine()),
            machine_id=_read_first(Path("/etc/machine-id")),
            boot_id=_read_first(Path("/proc/sys/kernel/random/boot_id")),
        )

    def allocatable(self) -> dict[str, str]:
        return {
            "cpu": str(self.cpus),
            "memory": f"{self.memory_kib}Ki",
            "pods": str(MAX_PODS),
            "ephemeral-storage": str(self.storage_bytes),
        }


def _meminfo_total_kib() -> int:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def _read_first(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


def _loopback_hostname() -> str:
    """The machine's name if it resolves to loopback only, else ``localhost``: the API
    server may dial the Hostname address, and only loopback may be dialled."""
    name = socket.gethostname()
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        return "localhost"
    if addresses and all(a.startswith("127.") or a == "::1" for a in addresses):
        return name
    return "localhost"


def ready_conditions(now: dt.datetime, previous: list[Obj], ready: bool = True) -> list[Obj]:
    """The kubelet's four pressure conditions and Ready, keeping transition times."""
    before = {c.get("type"): c for c in previous}
    wanted = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory",
         "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        if ready else ("Ready", "False", "KubeletNotReady", "the local node has stopped"),
    ]
    out = []
    for kind, status, reason, message in wanted:
        old = before.get(kind)
        transition = (old["lastTransitionTime"] if old and old.get("status") == status
                      else rfc3339(now))
        out.append({"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": rfc3339(now), "lastTransitionTime": transition})
    return out


def node_object(name: str, machine: Machine, port: int, kubelet_version: str,
                now: dt.datetime, previous_conditions: list[Obj]) -> Obj:
    allocatable = machine.allocatable()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": machine.arch,
                "docrelay.io/local-node": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": allocatable,
            "allocatable": allocatable,
            "conditions": ready_conditions(now, previous_conditions),
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": machine.hostname},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {
                "machineID": machine.machine_id,
                "systemUUID": machine.machine_id,
                "bootID": machine.boot_id,
                "kernelVersion": machine.kernel,
                "osImage": machine.os_image,
                "containerRuntimeVersion": RUNTIME_VERSION,
                # There is no kubelet; this is the API server's version, which it stands in for.
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": machine.arch,
            },
        },
    }


class NodeAgent:
    """Keeps the Node registered and Ready while the local node runs."""

    def __init__(self, kube: Kube, name: str, machine: Machine, port: int) -> None:
        self.kube = kube
        self.name = name
        self.machine = machine
        self.port = port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
        self._version = "v0.0.0"
        self._uid = ""

    @property
    def path(self) -> str:
        return f"/api/v1/nodes/{self.name}"

    def register(self) -> None:
        with contextlib.suppress(KubeError):
            self._version = str(self.kube.get("/version").get("gitVersion", self._version))
        existing = self.kube.get_or_none(self.path)
        previous = ((existing or {}).get("status") or {}).get("conditions") or []
        wanted = node_object(self.name, self.machine, self.port, self._version, utcnow(),
                             previous)
        if existing is None:
            created = self.kube.request("POST", "/api/v1/nodes", body=wanted)
            self._uid = created["metadata"]["uid"]
            log.info("registered node %s", self.name)
        else:
            self._uid = existing["metadata"]["uid"]
            self.kube.request("PATCH", self.path,
                              body={"metadata": {"labels": wanted["metadata"]["labels"]}},
                              content_type="application/strategic-merge-patch+json")
            log.info("node %s already registered; taking it over", self.name)
        # On create the API server may drop status; set it through the subresource too.
        self._patch_status(wanted["status"])
        self._clear_condition_taints()
        self._renew_lease()

    def _clear_condition_taints(self) -> None:
        """Remove the not-ready/unreachable taints admission puts on a new Node.

        The node lifecycle controller lifts them once the Node is Ready; it is not among
        the controllers the local control plane runs, so the node does it itself.
        """
        current = self.kube.get(self.path)
        taints = (current.get("spec") or {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in CONDITION_TAINTS]
        if kept != taints:
            self.kube.request(
                "PATCH", self.path, content_type="application/merge-patch+json",
                body={"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                      "spec": {"taints": kept or None}})

    def start(self) -> None:
        self._thread.start()

    def _patch_status(self, status: Obj) -> None:
        self.kube.request("PATCH", f"{self.path}/status", body={"status": status},
                          content_type="application/strategic-merge-patch+json")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                current = self.kube.get_or_none(self.path)
                if current is None:
                    log.warning("node %s vanished from the API; registering again", self.name)
                    self.register()
                    continue
                previous = (current.get("status") or {}).get("conditions") or []
                self._patch_status({"conditions": ready_conditions(utcnow(), previous)})
                if any(t.get("key") in CONDITION_TAINTS
                       for t in (current.get("spec") or {}).get("taints") or []):
                    self._clear_condition_taints()
                self._renew_lease()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _renew_lease(self) -> None:
        now = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.name}"
        lease: Obj = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name,
                                     "uid": self._uid}],
            },
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                     "renewTime": now},
        }
        try:
            self.kube.request("PATCH", path, body={"spec": lease["spec"]},
                              content_type="application/merge-patch+json")
        except KubeError as exc:
            if exc.status != 404:
                raise
            try:
                self.kube.request(
                    "POST", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                    body=lease)
            except KubeError as create_error:
                if create_error.status != 404:  # no kube-node-lease namespace: no Lease
                    raise

    def leave(self) -> None:
        """Stop beating and mark the node NotReady (it stays registered)."""
        self._stop.set()
        try:
            current = self.kube.request("GET", self.path, timeout=2)
            previous = (current.get("status") or {}).get("conditions") or []
            self.kube.request(
                "PATCH", f"{self.path}/status", timeout=2,
                body={"status": {"conditions": ready_conditions(utcnow(), previous,
                                                                ready=False)}},
                content_type="application/strategic-merge-patch+json")
        except Exception as exc:
            log.info("could not mark node NotReady: %s", exc)
